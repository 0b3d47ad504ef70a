"""Convergence-curve draws with BLAS's default threads vs one thread, side by side on the same subsamples.

The curves refit the whole evaluation (PCA, grouped CV ridge, both protocols) on many whole-image subsamples of a
demo-sized run (1,300 objects of 384-d, 30 categories, 320 images); ``objalign.evaluation.convergence`` runs these
small fits with one BLAS thread. This prints both timings and their ratio; the last line is
``seconds_default=<x> seconds_single=<y> ratio=<x/y>``.

    python bench/convergence.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> None:
    from objalign.evaluation.engine import evaluate
    from objalign.config import load_config
    from objalign.evaluation.convergence import check_sizes, curve_config, subsample_images
    from objalign.maps.threads import single_threaded_blas

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    c, q, d, n_img = 30, 384, 384, 320
    C = rng.normal(size=(c, q))
    sizes = rng.integers(1, 8, size=n_img)
    groups = np.repeat(np.arange(n_img), sizes)
    lab = rng.integers(0, c, size=len(groups))
    X = C[lab] @ rng.normal(size=(q, d)) / np.sqrt(q) + rng.normal(size=(len(groups), d))
    cfg = load_config("configs/demo.yaml").align
    sub = curve_config(cfg)
    draws = []
    for j, size in enumerate(check_sizes(cfg.convergence_sizes, len(groups))):
        r = np.random.default_rng([cfg.seed, j, size])
        draws += [subsample_images(groups, size, r) for _ in range(args.repeats)]
    print(f"{len(groups)} objects, {len(draws)} draws of sizes {check_sizes(cfg.convergence_sizes, len(groups))}")
    evaluate(X[draws[0]], C[lab][draws[0]], groups[draws[0]], lab[draws[0]], C, sub)  # imports, warm caches

    def run_all() -> float:
        t0 = time.perf_counter()
        for idx in draws:
            evaluate(X[idx], C[lab][idx], groups[idx], lab[idx], C, sub)
        return time.perf_counter() - t0

    default = run_all()
    with single_threaded_blas():
        single = run_all()
    print(f"seconds_default={default:.2f} seconds_single={single:.2f} ratio={default / single:.2f}")


if __name__ == "__main__":
    main()
