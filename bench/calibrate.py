"""Benchmark of calibrated similarity scores (not a test): 1,000 permutations of every measure on 3,000 objects.

Made-up data shaped like the thesis configuration after PCA: 3,000 objects in images of 1-13 objects (COCO
averages ~7), 256-d vision features, 80 categories with 512-d text embeddings (so the text targets repeat per
category), and a weak vision-text relation. For every measure of :data:`objalign.measures.calibrate.MEASURES`,
:func:`objalign.measures.calibrated` runs 1,000 image-block permutations (engines: fixed Gram matrices, neighbour
graphs and subspaces, permutations applied as indices). Side by side, the baseline recomputes the measure from
scratch (:mod:`objalign.measures.similarity`) on as many of the same permutations as ``--check-seconds`` allows
per measure (at least ``--check``, at most ``--perms``): the values are checked to agree and the mean time is
extrapolated to ``--perms`` permutations for the ratio; each row says from how many permutations.

    python bench/calibrate.py [--n 3000] [--perms 1000] [--check 10] [--check-seconds 15]

Last line: ``seconds=<total for all measures> measures=<count>`` (floor: seconds <= 60 on the 2-core machine).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def thesis_like(n=3000, d=256, c=80, q=512, seed=0):
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(c, q))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(1, 14)))
    groups = np.repeat(np.arange(len(sizes)), sizes)[:n]
    lab = rng.integers(0, c, n)
    X = 0.3 * E[lab] @ rng.normal(size=(q, d)) / np.sqrt(q) + rng.normal(size=(n, d)) / np.sqrt(d)
    return X, E[lab], groups


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--perms", type=int, default=1000)
    ap.add_argument("--check", type=int, default=10,
                    help="permutations recomputed from scratch at least (the baseline)")
    ap.add_argument("--check-seconds", type=float, default=15.0,
                    help="past those, recompute more while a measure's baseline time is under this (at most --perms)")
    args = ap.parse_args(argv)

    from objalign.maps.threads import single_threaded_blas
    from objalign.measures import similarity as sim
    from objalign.measures.calibrate import MEASURES, calibrated
    from objalign.stats.permutation import group_permutations

    X, Y, groups = thesis_like(args.n)
    print(f"data: {X.shape[0]} objects, {len(np.unique(groups))} images, vision {X.shape[1]}-d, "
          f"text {Y.shape[1]}-d with {len(np.unique(Y, axis=0))} distinct rows; {args.perms} permutations")
    options = {"mutual_knn": {"k": 10}, "cknna": {"k": 10}, "svcca": {"dim": 10}}
    naive = {"cka_linear": lambda a, b: sim.cka(a, b), "cka_linear_unbiased": lambda a, b: sim.cka(a, b, unbiased=True),
             "cka_rbf": lambda a, b: sim.cka(a, b, kernel="rbf"),
             "mutual_knn": lambda a, b: sim.mutual_knn(a, b, k=10), "cknna": lambda a, b: sim.cknna(a, b, k=10),
             "svcca": lambda a, b: sim.svcca(a, b, dim=10)}
    perms = group_permutations(groups, args.perms, seed=0)
    least = min(args.check, args.perms)
    total = 0.0
    print(f"{'measure':<22}{'seconds':>9}{'recompute':>11}{'ratio':>9}{'score':>9}{'tau':>9}{'p':>8}"
          f"{'max |diff|':>12}  recompute: the baseline's time for {args.perms}")
    with single_threaded_blas():
        for name in MEASURES:
            t0 = time.perf_counter()
            r = calibrated(name, X, Y, groups=groups, n_permutations=args.perms, seed=0, **options.get(name, {}))
            dt = time.perf_counter() - t0
            total += dt
            ref, spent = [], 0.0
            for p in perms:
                if len(ref) >= least and spent >= args.check_seconds:
                    break
                t0 = time.perf_counter()
                ref.append(naive[name](X, Y[p]))
                spent += time.perf_counter() - t0
            diff = max(abs(a - b) for a, b in zip(ref, r["null"][: len(ref)]))
            est = spent / len(ref) * args.perms
            how = f"all {args.perms} measured" if len(ref) == args.perms else f"extrapolated from {len(ref)} measured"
            print(f"{name:<22}{dt:>9.2f}{est:>11.1f}{est / dt:>9.1f}{r['score']:>9.4f}{r['threshold']:>9.4f}"
                  f"{r['pvalue']:>8.3f}{diff:>12.1e}  ({how})")
    print(f"seconds={total:.1f} measures={len(MEASURES)}")


if __name__ == "__main__":
    main()
