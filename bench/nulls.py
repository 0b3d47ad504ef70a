"""Benchmark the selection-inclusive permutation null against refitting the estimators per permutation.

Seed-sized problem (``bench/align.py``'s): 3,000 objects, PCA to 256, 512-d text with 80 categories, ~7 objects
per image; a held-out-image split (2,400-ish training objects), ``GroupKFold(5)`` inside it, 7 alphas x 4 RBF
gammas. For ridge and kernel ridge it times the whole selection null of ``B`` permutations as the align stage
runs it (:func:`objalign.stats.nulls.selection_smoothers`: the CV search of every permutation and the
smoothers of the maps selected, then :func:`~objalign.stats.nulls.smoother_null`: every figure of every
permutation), and, side by side, the naive way: ``RidgeCV`` / ``KernelRidgeCV`` refitted from scratch,
predicted and scored, on as many of the same permutations as ``--naive-seconds`` allows per method (at least
``--naive-ridge`` / ``--naive-krr``, at most ``B``), and extrapolated to ``B`` from their mean; the printed line
says from how many, with the spread of the measured refits. It checks on those that both ways select the same
grid point. Last line::

    ridge_s=<x> krr_s=<y> naive_ratio=<z> (extrapolated from <m> ridge and <k> kernel ridge refits measured ...)

``naive_ratio`` is the naive time of both methods over the fast path's time of both (the issue's definition: the
time of refitting RidgeCV/KernelRidgeCV from scratch per permutation over the fast path's); the line above it
gives each method's own ratio (ridge's is the smaller: ``RidgeCV`` itself is a ~40 ms fit on one core).

Usage::

    python bench/nulls.py [--permutations 1000] [--naive-ridge 20] [--naive-krr 5] [--naive-seconds 60]
                          [--jobs 2]
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
    ap.add_argument("--naive-ridge", type=int, default=20,
                    help="permutations refitted from scratch at least (ridge)")
    ap.add_argument("--naive-krr", type=int, default=5,
                    help="permutations refitted from scratch at least (kernel ridge)")
    ap.add_argument("--naive-seconds", type=float, default=60.0,
                    help="past those, refit more permutations while a method's naive time is under this (at most B)")
    ap.add_argument("--jobs", type=int, default=2, help="kernel ridge threads (align.n_jobs)")
    args = ap.parse_args(argv)

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from align import seed_problem
    from sklearn.model_selection import GroupKFold
    from threadpoolctl import threadpool_limits

    from objalign.evaluation.engine import heldout_image_split, median_sq_distance
    from objalign.maps import KernelRidgeCV, RidgeCV
    from objalign.maps._targets import factor_targets
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

        few = min(args.naive_ridge if method == "ridge" else args.naive_krr, B)
        perms = block_permutations(g, B, 0, 0)
        each = []
        for b, pi in enumerate(perms):
            if b >= few and sum(each) >= args.naive_seconds:
                break
            t0 = time.perf_counter()
            est = (RidgeCV(alphas=alphas, cv=cv) if method == "ridge"
                   else KernelRidgeCV(alphas=alphas, gammas=gammas, cv=cv, n_jobs=args.jobs, approx="exact"))
            with threadpool_limits(limits=1, user_api="blas") if method == "ridge" else contextlib.nullcontext():
                est.fit(Ztr, E[labels[train][pi]], groups=g)
            summarize(est.predict(Zte), E[labels[test]], labels[test], E)
            if est.best_index_ != sel["choice"][b]:
                raise SystemExit(f"{method}: permutation {b} selects {est.best_index_} refitted, "
                                 f"{sel['choice'][b]} fast")
            each.append(time.perf_counter() - t0)
        m = len(each)
        naive = float(np.mean(each)) * B
        how = f"all {B} measured" if m == B else f"extrapolated from {m} measured"
        print(f"{method}: refit from scratch per permutation: {np.mean(each):.3f} s each (median "
              f"{np.median(each):.3f}, range {min(each):.3f}-{max(each):.3f}; {m} measured, same selections) -> "
              f"{naive:.0f} s for {B} ({how}); ratio {naive / fast:.1f}", flush=True)
        out[method] = (fast, naive, m)
    (fr, nr, mr), (fk, nk, mk) = out["ridge"], out["kernel_ridge"]
    print(f"per method: ridge {nr / fr:.1f}x, kernel ridge {nk / fk:.1f}x (naive times extrapolated from {mr} and "
          f"{mk} measured of {B}); load average now {os.getloadavg()[0]:.1f}")
    label = ("all measured" if mr == mk == B else
             f"extrapolated from {mr} ridge and {mk} kernel ridge refits measured of {B} each")
    print(f"ridge_s={fr:.1f} krr_s={fk:.1f} naive_ratio={(nr + nk) / (fr + fk):.1f} ({label})")


if __name__ == "__main__":
    main()
