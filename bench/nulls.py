"""Benchmark the selection-inclusive permutation null against refitting the estimators per permutation.

Seed-sized problem (``bench/align.py``'s): 3,000 objects, PCA to 256, 512-d text with 80 categories, ~7 objects
per image; a held-out-image split (2,400-ish training objects), ``GroupKFold(5)`` inside it, 7 alphas x 4 RBF
gammas. For ridge and kernel ridge it times the whole selection null of ``B`` permutations as the align stage
runs it (:func:`objalign.stats.nulls.selection_smoothers`: the CV search of every permutation and the
smoothers of the maps selected, then :func:`~objalign.stats.nulls.smoother_null`: every figure of every
permutation), and, side by side, the naive way: ``RidgeCV`` / ``KernelRidgeCV`` refitted from scratch on a few
permutations, predicted and scored, extrapolated to ``B``. It checks on those few that both ways select the
same grid point. Last line::

    ridge_s=<x> krr_s=<y> naive_ratio=<z>

``naive_ratio`` is the naive time of both methods over the fast path's time of both (the issue's definition: the
time of refitting RidgeCV/KernelRidgeCV from scratch per permutation over the fast path's); the line above it
gives each method's own ratio (ridge's is the smaller: ``RidgeCV`` itself is a ~40 ms fit on one core).

Usage::

    python bench/nulls.py [--permutations 1000] [--naive-ridge 20] [--naive-krr 2] [--jobs 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--naive-ridge", type=int, default=20, help="permutations refitted from scratch (ridge)")
    ap.add_argument("--naive-krr", type=int, default=2, help="permutations refitted from scratch (kernel ridge)")
    ap.add_argument("--jobs", type=int, default=2, help="kernel ridge threads (align.n_jobs)")
    args = ap.parse_args(argv)

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from align import seed_problem
    from sklearn.model_selection import GroupKFold
    from threadpoolctl import threadpool_limits

    from objalign.maps import KernelRidgeCV, RidgeCV
    from objalign.maps._targets import factor_targets
    from objalign.evaluation.engine import heldout_image_split, median_sq_distance
    from objalign.stats.metrics import summarize
    from objalign.stats.nulls import selection_smoothers, smoother_null
    from objalign.stats.permutation import block_permutations

    X, Y, groups = seed_problem(n=args.n)
    basis = factor_targets(Y)
    labels, E = basis.codes, basis.Z
    train, test = heldout_image_split(groups, 0.2, 0)
    Ztr, Zte, g = X[train], X[test], groups[train]
    alphas = [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0]
    gammas = [x / median_sq_distance(Ztr) for x in (0.25, 0.5, 1.0, 2.0)]
    B = args.permutations
    print(f"seed problem: {len(train)} training / {len(test)} test objects, PCA {X.shape[1]}, {E.shape[0]} categories "
          f"x {E.shape[1]}-d text, GroupKFold(5), {len(alphas)} alphas x {len(gammas)} gammas; B = {B}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    cv = GroupKFold(5)
    out = {}
    for method in ("ridge", "kernel_ridge"):
        t0 = time.perf_counter()
        sel = selection_smoothers(method, Ztr, Zte, labels[train], g, E, cv_folds=5, alphas=alphas,
                                  gammas=gammas if method == "kernel_ridge" else None, n_permutations=B,
                                  n_jobs=args.jobs)
        t_sel = time.perf_counter() - t0
        block = {"S": sel["S"], "choice": sel["choice"], "train_labels": labels[train], "train_groups": g,
                 "test_labels": labels[test]}
        smoother_null([block], E, B)
        fast = time.perf_counter() - t0
        counts = np.bincount(sel["choice"], minlength=len(sel["grid"]))
        picked = ", ".join(f"{sel['grid'][i]} x{c}" for i, c in enumerate(counts) if c)
        print(f"{method}: selection null, {B} permutations: {fast:.1f} s ({t_sel:.1f} s CV searches and smoothers, "
              f"{fast - t_sel:.1f} s scoring); selected: {picked}", flush=True)

        few = args.naive_ridge if method == "ridge" else args.naive_krr
        perms = block_permutations(g, B, 0, 0)[:few]
        t0 = time.perf_counter()
        for b, pi in enumerate(perms):
            est = (RidgeCV(alphas=alphas, cv=cv) if method == "ridge"
                   else KernelRidgeCV(alphas=alphas, gammas=gammas, cv=cv, n_jobs=args.jobs, approx="exact"))
            with threadpool_limits(limits=1, user_api="blas") if method == "ridge" else contextlib.nullcontext():
                est.fit(Ztr, E[labels[train][pi]], groups=g)
            summarize(est.predict(Zte), E[labels[test]], labels[test], E)
            if est.best_index_ != sel["choice"][b]:
                raise SystemExit(f"{method}: permutation {b} selects {est.best_index_} refitted, "
                                 f"{sel['choice'][b]} fast")
        naive = (time.perf_counter() - t0) / few * B
        print(f"{method}: refit from scratch per permutation: {naive / B:.3f} s each ({few} measured, same "
              f"selections) -> {naive:.0f} s for {B}; ratio {naive / fast:.1f}", flush=True)
        out[method] = (fast, naive)
    (fr, nr), (fk, nk) = out["ridge"], out["kernel_ridge"]
    print(f"per method: ridge {nr / fr:.1f}x, kernel ridge {nk / fk:.1f}x; load average now "
          f"{os.getloadavg()[0]:.1f}")
    print(f"ridge_s={fr:.1f} krr_s={fk:.1f} naive_ratio={(nr + nk) / (fr + fk):.1f}")


if __name__ == "__main__":
    main()
