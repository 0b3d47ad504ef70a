"""Benchmark the alignment engine against scikit-learn's GridSearchCV on identical folds.

Seed-sized problem (default): 3,000 instances, 1,024-d "vision" -> 512-d "text" with 80 distinct text rows
(80 categories), PCA to 256 (fitted once, outside CV, so both sides see identical inputs), 7 alphas x 4 RBF
gammas, GroupKFold(5) by image. Both sides are timed alike (``--seed-repeats`` interleaved runs each, median) and
in the same dtype (ridge float64; kernel ridge float64 and float32). Prints every run, the score agreement, and
as its last line::

    ridge_speedup=<x> krr_speedup=<y> max_score_diff=<z> krr32_speedup=<w>

``--gamma-grid`` times ``KernelRidgeCV`` (rbf, 7 alphas, float32 and float64) at each gamma of a grid spanning
1e-4 to 1e-1 on the seed-sized problem, one gamma per fit, where large gammas drive ``exp()`` and the products
of small kernel values inside the Cholesky factorisation towards the subnormal range; beside each point's time
it prints how many subnormal values reached BLAS, before the fix (flush below ``tiny`` only, no FTZ) and after
(flush below ``u / n``, BLAS with FTZ/DAZ), and per dtype as its last line::

    float64_worst_vs_best=<x> (floor <= 3) float64_subnormal_to_blas=<count>

(the slowest grid point's time over the fastest's, after the fix). Two points past the grid (gamma x median
squared distance = 100 and 200) are timed too and shown beside it.

``--scale`` instead runs the full-COCO-sized synthetic problem (860,000 instances, 256-d -> 256-d, float32)
through RidgeCV and Nyström KernelRidgeCV and reports time and peak memory; ``--nystroem-accuracy``
compares Nyström with the exact solution on the seed-sized problem (where both run).

Usage::

    python bench/align.py [--n 3000] [--seed-repeats 3] [--cores 2] [--scale] [--nystroem-accuracy] [--gamma-grid]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np


def seed_problem(n=3000, dx=1024, dy=512, n_cat=80, d_pca=256, seed=0, noise=3.0):
    """Synthetic vision/text pairs with the structure of the real problem.

    Returns
    -------
    X : ndarray of shape (n, d_pca)      PCA-reduced vision embeddings
    Y : ndarray of shape (n, dy)         text embedding of each instance's category (n_cat distinct rows)
    groups : ndarray of shape (n,)       image id of each instance (~7 objects per image)
    """
    from objalign.maps import PCAMatch

    rng = np.random.default_rng(seed)
    text = rng.standard_normal((n_cat, dy))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    text += 0.2 * rng.standard_normal(dy) / np.sqrt(dy)  # a shared offset, like CLIP's common direction
    labels = rng.integers(0, n_cat, n)
    Y = text[labels]
    # Vision = nonlinear function of the category's text embedding + instance noise.
    A = rng.standard_normal((dy, dx)) / np.sqrt(dy)
    H = np.tanh(3 * Y @ A)
    X = H + noise * rng.standard_normal((n, dx)) / np.sqrt(dx) * 8
    Xp = PCAMatch(n_components=d_pca).fit_transform(X)
    groups = rng.integers(0, max(n // 7, 5), n)
    return Xp, Y, groups


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def run_seed(args):
    from sklearn.kernel_ridge import KernelRidge as SkKernelRidge
    from sklearn.linear_model import Ridge as SkRidge
    from sklearn.model_selection import GridSearchCV, GroupKFold

    from objalign.maps import KernelRidgeCV, RidgeCV

    X, Y, groups = seed_problem(n=args.n)
    sq = float(((X - X.mean(0)) ** 2).sum(1).mean())
    alphas = np.logspace(-3, 3, 7)
    gammas = np.array([0.1, 0.3, 1.0, 3.0]) / sq
    splits = list(GroupKFold(5).split(X, Y, groups))
    print(f"problem: n={X.shape[0]} d_x={X.shape[1]} d_y={Y.shape[1]} distinct_targets={len(np.unique(Y, axis=0))} "
          f"folds={len(splits)} alphas={len(alphas)} gammas={len(gammas)}")

    jobs = args.cores
    reps = args.seed_repeats
    # Both sides are timed the same way: warmed up once (first calls pay for lazy imports and BLAS discovery), then
    # `reps` runs each, interleaved (objalign first in even rounds, scikit-learn first in odd ones), and each side's
    # time is the median of its runs; every run is printed. This machine is shared and its load swings within a
    # minute: interleaving spreads the swings over both sides alike.
    def interleaved(sides: dict) -> tuple[dict, dict]:
        """``name -> fit()``: the last fitted object and the list of run times of each side."""
        last, times = {}, {k: [] for k in sides}
        for r in range(reps):
            for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                last[name], t = _timed(sides[name])
                times[name].append(t)
        return last, times

    def runs(ts):
        return " ".join(f"{t:.3f}" for t in ts)

    # Ridge: both sides on one core, float64 (GridSearchCV's process pool would only add start-up time here).
    RidgeCV(alphas=alphas, cv=splits).fit(X, Y)
    GridSearchCV(SkRidge(), {"alpha": alphas}, cv=splits, scoring="r2").fit(X, Y)
    fits, times = interleaved({
        "objalign": lambda: RidgeCV(alphas=alphas, cv=splits).fit(X, Y),
        "sklearn": lambda: GridSearchCV(SkRidge(), {"alpha": alphas}, cv=splits, scoring="r2").fit(X, Y)})
    oa_r, sk_r = fits["objalign"], fits["sklearn"]
    t_oa_r, t_sk_r = float(np.median(times["objalign"])), float(np.median(times["sklearn"]))
    d_r = float(np.abs(sk_r.cv_results_["mean_test_score"] - oa_r.cv_results_["mean_test_score"]).max())
    same_r = sk_r.best_params_["alpha"] == oa_r.best_params_["alpha"]
    print(f"ridge float64 runs (s): sklearn {runs(times['sklearn'])} | objalign {runs(times['objalign'])}")
    print(f"ridge float64 (1 core each, median of {reps}): sklearn={t_sk_r:.3f}s objalign={t_oa_r:.4f}s "
          f"speedup={t_sk_r / t_oa_r:.1f}x max_score_diff={d_r:.2e} same_best={same_r} best={oa_r.best_params_} "
          f"score={oa_r.best_score_:.4f}")

    # Kernel ridge: both sides use `jobs` cores with one BLAS thread per worker (GridSearchCV n_jobs=jobs,
    # KernelRidgeCV n_jobs=jobs), the whole 7 x 4 grid and a refit at the best point each, in float64 and in float32
    # (scikit-learn's KernelRidge keeps float32 input in float32): each dtype compares like with like.
    def ours(Xa, Ya):
        return KernelRidgeCV(alphas=alphas, gammas=gammas, kernel="rbf", cv=splits, n_jobs=jobs).fit(Xa, Ya)

    def theirs(Xa, Ya):
        return GridSearchCV(SkKernelRidge(kernel="rbf"), {"alpha": alphas, "gamma": gammas}, cv=splits,
                            scoring="r2", n_jobs=jobs).fit(Xa, Ya)

    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    krr = {}
    for dtype, (Xa, Ya) in (("float64", (X, Y)), ("float32", (X32, Y32))):
        # warm-up on 300 rows (scikit-learn's worker processes start, objalign's thread pool and dtype paths load)
        KernelRidgeCV(alphas=alphas, gammas=gammas, kernel="rbf", cv=3, n_jobs=jobs).fit(Xa[:300], Ya[:300])
        GridSearchCV(SkKernelRidge(kernel="rbf"), {"alpha": alphas, "gamma": gammas}, cv=3, scoring="r2",
                     n_jobs=jobs).fit(Xa[:300], Ya[:300])
        fits, times = interleaved({"objalign": lambda: ours(Xa, Ya), "sklearn": lambda: theirs(Xa, Ya)})
        print(f"krr {dtype} runs (s): sklearn {runs(times['sklearn'])} | objalign {runs(times['objalign'])}")
        krr[dtype] = (fits["objalign"], fits["sklearn"], float(np.median(times["objalign"])),
                      float(np.median(times["sklearn"])))
    sk64 = krr["float64"][1].cv_results_["mean_test_score"]  # GridSearchCV order: alpha outer, gamma inner
    for dtype, (oa_k, sk_k, t_oa, t_sk) in krr.items():
        sk_mean = sk_k.cv_results_["mean_test_score"]
        d = float(np.abs(sk_mean - oa_k.cv_results_["mean_test_score"]).max())
        d64 = float(np.abs(sk64 - oa_k.cv_results_["mean_test_score"]).max())
        same = int(np.argmax(sk_mean)) == oa_k.best_index_
        name = "krr_speedup" if dtype == "float64" else "krr32_speedup"
        print(f"krr {dtype} ({jobs} core(s) each, median of {reps}): sklearn({dtype})={t_sk:.2f}s "
              f"objalign({dtype})={t_oa:.2f}s {name}={t_sk / t_oa:.1f}x max_score_diff={d:.2e} "
              f"(vs sklearn float64 {d64:.2e}) same_best={same} best={oa_k.best_params_} "
              f"score={oa_k.best_score_:.4f}")
    (_, _, t_oa_k, t_sk_k), (_, _, t_oa_k32, t_sk_k32) = krr["float64"], krr["float32"]
    d_k = float(np.abs(sk64 - krr["float64"][0].cv_results_["mean_test_score"]).max())
    print(f"ridge_speedup={t_sk_r / t_oa_r:.1f} krr_speedup={t_sk_k / t_oa_k:.1f} max_score_diff={max(d_r, d_k):.2e} "
          f"krr32_speedup={t_sk_k32 / t_oa_k32:.1f}")


def run_gamma_grid(args):
    """Time and subnormal count per grid point of a gamma grid, float32 and float64, before and after the fix.

    "before": kernel values flushed below ``tiny`` only, BLAS without flush-to-zero (objalign until this
    change); "after": flushed below ``u / n`` and BLAS calls with FTZ/DAZ (the default). The count is of
    subnormal numbers in the operands and results of every potrf/trsm/syrk/gemm call
    (:class:`objalign.maps._blas.SubnormalCount`), in one extra, untimed fit per point. Past the grid, two
    more gammas (gamma x median squared distance = 100 and 200) are shown but do not enter its figure.
    """
    from contextlib import contextmanager

    from sklearn.model_selection import GroupKFold

    from objalign.maps import KernelRidgeCV, _blas, _kernels

    X, Y, groups = seed_problem(n=args.n)
    sq = _kernels._sq_distances(X[:1000])
    med = float(np.median(sq[np.triu_indices_from(sq, 1)]))
    alphas = np.logspace(-3, 3, 7)
    grid = np.logspace(-4, -1, args.grid_points)
    gammas = np.concatenate([grid, [100 / med, 200 / med]])
    splits = list(GroupKFold(5).split(X, Y, groups))
    print(f"problem: n={X.shape[0]} d_x={X.shape[1]}, median squared distance {med:.1f}; {len(grid)} gammas from "
          f"1e-4 to 1e-1 (gamma x median up to {grid[-1] * med:.0f}) and 2 past it, {len(alphas)} alphas, "
          f"{len(splits)} folds, n_jobs={args.cores}; best of {args.repeats} interleaved runs per point")

    @contextmanager
    def fixed(on):
        saved = _kernels._SOLVE_FLUSH, _blas.FLUSH_TO_ZERO
        _kernels._SOLVE_FLUSH, _blas.FLUSH_TO_ZERO = ("resolution", True) if on else ("subnormal", False)
        try:
            yield
        finally:
            _kernels._SOLVE_FLUSH, _blas.FLUSH_TO_ZERO = saved

    for dtype in (np.float32, np.float64):
        Xd, Yd = X.astype(dtype), Y.astype(dtype)

        def fit(gamma):
            return KernelRidgeCV(alphas=alphas, gammas=[gamma], kernel="rbf", cv=splits,
                                 n_jobs=args.cores).fit(Xd, Yd)

        fit(gammas[0])  # warm-up
        times = {on: np.full((args.repeats, len(gammas)), np.inf) for on in (True, False)}
        counts = {on: np.zeros(len(gammas), dtype=np.int64) for on in (True, False)}
        for r in range(args.repeats):
            for g, gamma in enumerate(gammas):
                for on in (True, False):
                    with fixed(on):
                        _, times[on][r, g] = _timed(lambda: fit(gamma))
        for g, gamma in enumerate(gammas):
            for on in (True, False):
                with fixed(on), _blas.SubnormalCount() as c:
                    fit(gamma)
                counts[on][g] = c.total
        best = {on: t.min(axis=0) for on, t in times.items()}
        name = np.dtype(dtype).name
        for g, gamma in enumerate(gammas):
            print(f"{name} gamma={gamma:.2e} (x median {gamma * med:6.1f}){' past the grid' if g >= len(grid) else ''}"
                  f": before {best[False][g]:.2f}s, {counts[False][g]} subnormal values reached BLAS; after "
                  f"{best[True][g]:.2f}s, {counts[True][g]}")
        k = len(grid)
        ratio = {on: float(b[:k].max() / b[:k].min()) for on, b in best.items()}
        past = {on: float(b.max() / b.min()) for on, b in best.items()}
        print(f"{name}: grid worst/best before={ratio[False]:.2f} after={ratio[True]:.2f}; with the 2 points past it "
              f"before={past[False]:.2f} after={past[True]:.2f}; subnormal values reaching BLAS over the grid and "
              f"past it: before={int(counts[False].sum())} after={int(counts[True].sum())}")
        print(f"{name}_worst_vs_best={ratio[True]:.2f} (floor <= 3) {name}_subnormal_to_blas={int(counts[True].sum())}")


def nystroem_accuracy():
    """Nyström vs exact kernel ridge on the seed-sized problem (both fit in memory)."""
    from sklearn.model_selection import GroupKFold

    from objalign.maps import KernelRidge, KernelRidgeCV

    X, Y, groups = seed_problem()
    sq = float(((X - X.mean(0)) ** 2).sum(1).mean())
    alphas = np.logspace(-3, 3, 7)
    gammas = np.array([0.1, 0.3, 1.0, 3.0]) / sq
    splits = list(GroupKFold(5).split(X, Y, groups))
    exact = KernelRidgeCV(alphas=alphas, gammas=gammas, cv=splits, approx="exact").fit(X, Y)
    for m in (250, 1000, 2000):
        (nys, t) = _timed(lambda: KernelRidgeCV(alphas=alphas, gammas=gammas, cv=splits, approx="nystroem",
                                                n_components=m, random_state=0).fit(X, Y))
        diff = np.abs(nys.cv_results_["mean_test_score"] - exact.cv_results_["mean_test_score"])
        # Same hyper-parameters (exact CV's best), fitted on fold 0's training rows, predicting its test rows:
        p = exact.best_params_
        tr, te = splits[0]
        e = KernelRidge(alpha=p["alpha"], gamma=p["gamma"], kernel="rbf", approx="exact").fit(X[tr], Y[tr])
        a = KernelRidge(alpha=p["alpha"], gamma=p["gamma"], kernel="rbf", approx="nystroem", n_components=m,
                        random_state=0).fit(X[tr], Y[tr])
        pe, pa = e.predict(X[te]), a.predict(X[te])
        rel = np.linalg.norm(pa - pe) / np.linalg.norm(pe - Y[tr].mean(0))
        print(f"nystroem m={m}: cv_time={t:.2f}s best_cv_r2={nys.best_score_:.4f} (exact {exact.best_score_:.4f}) "
              f"max|cv_r2 - exact| over grid={diff.max():.4f} at exact's best params={diff[exact.best_index_]:.4f} "
              f"held-out pred rel_diff={rel:.3f} (held-out r2 nystroem {a.score(X[te], Y[te]):.4f} vs exact "
              f"{e.score(X[te], Y[te]):.4f}) same_best={nys.best_params_ == exact.best_params_}")


def run_scale(args):
    from sklearn.model_selection import GroupKFold

    from objalign.maps import KernelRidgeCV, RidgeCV

    n, d, n_cat = args.scale_n, 256, 80
    rng = np.random.default_rng(0)
    text = rng.standard_normal((n_cat, d)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    labels = rng.integers(0, n_cat, n)
    A = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
    X = np.tanh(3 * text @ A)[labels]
    X += rng.standard_normal((n, d), dtype=np.float32) * np.float32(0.5)
    Y = text[labels]
    groups = labels * 0 + rng.integers(0, 118_287, n)
    del labels
    print(f"scale problem: n={n} d_x={d} d_y={d} float32; X+Y={2 * X.nbytes / 2**30:.2f} GiB; "
          f"peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    alphas = np.logspace(-3, 3, 7)
    sq = float(((X[:20000] - X[:20000].mean(0)) ** 2).sum(1).mean())
    gammas = np.array([0.3, 1.0, 3.0]) / sq
    cv = GroupKFold(5)
    t0 = time.perf_counter()
    r, t_r = _timed(lambda: RidgeCV(alphas=alphas, cv=cv).fit(X, Y, groups=groups))
    print(f"RidgeCV: {t_r:.1f}s best={r.best_params_} r2={r.best_score_:.4f}")
    k, t_k = _timed(lambda: KernelRidgeCV(alphas=alphas, gammas=gammas, kernel="rbf", cv=cv, approx="nystroem",
                                          n_components=args.n_components, random_state=0).fit(X, Y, groups=groups))
    print(f"KernelRidgeCV nystroem m={args.n_components}: {t_k:.1f}s best={k.best_params_} r2={k.best_score_:.4f}")
    _, t_p = _timed(lambda: k.predict(X))
    total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"predict all {n}: {t_p:.1f}s")
    print(f"scale_total_s={total:.1f} peak_rss_gib={peak:.2f} (limits: 900 s, 8 GiB)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="instances in the seed-sized problem")
    ap.add_argument("--seed-repeats", type=int, default=3,
                    help="interleaved runs of each side per timing in the default (seed) case; median")
    ap.add_argument("--scale", action="store_true", help="run the 860,000-instance Nyström problem instead")
    ap.add_argument("--scale-n", type=int, default=860_000)
    ap.add_argument("--n-components", type=int, default=1000)
    ap.add_argument("--nystroem-accuracy", action="store_true", help="Nyström vs exact on the seed problem")
    ap.add_argument("--gamma-grid", action="store_true",
                    help="KernelRidgeCV time and subnormal count per gamma over 1e-4..1e-1, before and after the fix")
    ap.add_argument("--grid-points", type=int, default=7, help="gammas in the --gamma-grid case")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved runs per point in the --gamma-grid case")
    ap.add_argument("--cores", type=int, default=2,
                    help="cores for the kernel ridge searches, the same for both sides (GridSearchCV n_jobs and "
                         "KernelRidgeCV n_jobs); BLAS runs one thread per worker on both sides, because on a shared, "
                         "oversubscribed machine OpenBLAS thread teams stall (measured 10x slower) and timings lose meaning")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    print(f"cores for kernel ridge: {args.cores} per side; BLAS threads per worker: 1 (both sides)")
    with threadpool_limits(limits=1, user_api="blas"):
        return _run(args)


def _run(args):
    if args.scale:
        run_scale(args)
    elif args.nystroem_accuracy:
        nystroem_accuracy()
    elif args.gamma_grid:
        run_gamma_grid(args)
    else:
        run_seed(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
