"""Where the time of RidgeCV and KernelRidgeCV goes on the seed-sized problem of ``bench/align.py``.

Wraps the internal phases of one fit (after a warm-up fit) and prints the seconds spent in each, plus the
arithmetic rate of the kernel block eliminations (17.6 GFLOP per grid point for 5 folds of 600). BLAS runs
one thread per worker, as in ``bench/align.py``.

``--long-grid`` instead times the eigendecomposition engine (40 alphas x 4 gammas, where it is chosen) with
1 and ``--cores`` workers.

Usage::

    python bench/align_breakdown.py [--cores 2] [--long-grid]
"""

from __future__ import annotations

import argparse
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


class Timer:
    """Accumulates wall time of wrapped functions (thread-safe; calls in worker threads add up)."""

    def __init__(self):
        self.t, self.n, self._lock, self._undo = {}, {}, threading.Lock(), []

    def wrap(self, owner, name, label=None):
        label = label or name
        fn = getattr(owner, name)

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                with self._lock:
                    self.t[label] = self.t.get(label, 0.0) + time.perf_counter() - t0
                    self.n[label] = self.n.get(label, 0) + 1

        setattr(owner, name, timed)
        self._undo.append((owner, name, fn))

    def reset(self):
        self.t.clear()
        self.n.clear()

    def restore(self):
        for owner, name, fn in reversed(self._undo):
            setattr(owner, name, fn)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--long-grid", action="store_true", help="time the eigendecomposition engine instead")
    args = ap.parse_args(argv)
    from sklearn.model_selection import GroupKFold
    from threadpoolctl import threadpool_limits

    import objalign.maps._ridge_stats as rs
    import objalign.maps.kernel as km
    import objalign.maps.linear as lin
    from align import seed_problem
    from objalign.maps import KernelRidgeCV, RidgeCV
    from objalign.maps._logo import _plan

    X, Y, groups = seed_problem()
    splits = list(GroupKFold(5).split(X, Y, groups))
    sq = float(((X - X.mean(0)) ** 2).sum(1).mean())
    alphas = np.logspace(-3, 3, 7)
    gammas = np.array([0.1, 0.3, 1.0, 3.0]) / sq

    if args.long_grid:
        from objalign.maps.kernel import _exact_engine

        long_alphas = np.logspace(-3, 3, 40)
        est = KernelRidgeCV(alphas=long_alphas, gammas=gammas, cv=splits)
        with threadpool_limits(limits=1, user_api="blas"):
            for jobs in sorted({1, args.cores}):
                est.set_params(n_jobs=jobs)
                t0 = time.perf_counter()
                est.fit(X, Y)
                print(f"KernelRidgeCV float64, 40 alphas x 4 gammas, {jobs} worker(s): {time.perf_counter() - t0:.2f} s "
                      f"(best {est.best_params_}, score {est.best_score_:.6f})")
        from objalign.maps._splits import find_partition

        print(f"engine: {_exact_engine(find_partition(splits, X.shape[0]), 40, 80, np.float64)}")
        return 0

    timer = Timer()
    for owner, name, label in [
        (lin, "check_fit_input", "validation"), (lin, "factor_targets", "target factorisation"),
        (lin, "held_out_totals", "fold totals"), (lin, "_block_moments", "moments (5 syrk + counts)"),
        (rs, "_cv_r2_scores_chol", "CV engine: per-alpha Cholesky"), (rs, "_cv_r2_scores_eig", "CV engine: eigh"),
        (lin, "ridge_from_moments", "refit"),
    ]:
        timer.wrap(owner, name, label)
    with threadpool_limits(limits=1, user_api="blas"):
        RidgeCV(alphas=alphas, cv=splits).fit(X, Y)
        reps = 10
        timer.reset()
        t0 = time.perf_counter()
        for _ in range(reps):
            RidgeCV(alphas=alphas, cv=splits).fit(X, Y)
        total = (time.perf_counter() - t0) / reps
    timer.restore()
    print(f"RidgeCV (1 core, mean of {reps} fits): {total * 1e3:.1f} ms")
    for k, v in sorted(timer.t.items(), key=lambda kv: -kv[1]):
        print(f"  {k:32s} {v / reps * 1e3:6.1f} ms")
    print(f"  {'other (checks, bookkeeping)':32s} {(total - sum(timer.t.values()) / reps) * 1e3:6.1f} ms")

    gflop = _plan((600,) * 5)[1] / 1e9
    for dtype in (np.float64, np.float32):
        timer = Timer()
        timer.wrap(km, "block_logo_residuals", "block eliminations (sum over workers)")
        timer.wrap(km.KernelBase, "matrix", "kernel matrices (sum over workers)")
        timer.wrap(km, "KernelBase", "squared distances")
        timer.wrap(km.KernelRidgeCV, "_cv_exact", "exact CV, wall")
        timer.wrap(km.KernelRidgeCV, "_store_fit", "refit")
        Xd, Yd = X.astype(dtype), Y.astype(dtype)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
        with threadpool_limits(limits=1, user_api="blas"):
            KernelRidgeCV(alphas=alphas, gammas=gammas, cv=splits, n_jobs=args.cores).fit(Xd, Yd)
            timer.reset()
            t0 = time.perf_counter()
            KernelRidgeCV(alphas=alphas, gammas=gammas, cv=splits, n_jobs=args.cores).fit(Xd, Yd)
            total = time.perf_counter() - t0
        timer.restore()
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
        n_pts = timer.n["block eliminations (sum over workers)"]
        busy = timer.t["block eliminations (sum over workers)"]
        print(f"KernelRidgeCV {np.dtype(dtype).name} ({args.cores} workers, 1 BLAS thread each): {total:.2f} s")
        for k, v in timer.t.items():
            print(f"  {k:40s} {v:6.2f} s")
        print(f"  {n_pts} grid points x {gflop:.1f} GFLOP = {n_pts * gflop:.0f} GFLOP; "
              f"{busy / n_pts:.3f} s per point per worker = {gflop * n_pts / busy:.1f} GFLOP/s per core")
        if dtype == np.float64:  # the first kernel fit sets this process's memory peak
            print(f"  peak RSS rose by {rss1 - rss0:.0f} MiB during the fits (n^2 float64 = "
                  f"{X.shape[0] ** 2 * 8 / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
