"""Benchmark of the evaluation statistics (not a test): permutation nulls and bootstrap intervals.

Measured side by side in one run on demo-sized data (about 1,300 objects, 384-d vision and text, 30 categories,
images of 1-7 objects), or on a finished run's embeddings with ``--run DIR``:

1. permutation null of a ridge map: objalign's linear-smoother null (one sparse category sum per permutation,
   figures from the category Gram matrix) vs refitting ``sklearn.linear_model.Ridge`` on every permuted pairing
   and scoring its predictions; the null figures are checked to agree;
2. bootstrap intervals of every figure (R² included): objalign's weighted sums on one count matrix vs recomputing
   the figures on each explicit resample; the intervals are checked to agree;
3. the whole evaluation (both protocols, ridge + kernel ridge + baselines, 1,000 permutations and resamples)
   with the time per part.

    python bench/eval.py [--run runs/demo] [--perms 200] [--resamples 200]

Prints each timing and the ratio it is judged by. Timings on a shared machine are noisy; the ratios are measured
back to back on the same data.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def demo_like(seed=0, n_img=320, c=30, q=384, d=384):
    rng = np.random.default_rng(seed)
    col, shape = rng.normal(size=(6, q)), rng.normal(size=(5, q))
    E = np.array([col[i % 6] + shape[i // 6] for i in range(c)]) + 0.3 * rng.normal(size=(c, q))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    sizes = rng.integers(1, 8, n_img)
    groups = np.repeat(np.arange(n_img), sizes)
    lab = rng.integers(0, c, len(groups))
    M = rng.normal(size=(q, d)) / np.sqrt(q)
    X = E[lab] @ M + 0.05 * rng.normal(size=(len(lab), d))
    return X, E[lab], groups, lab, E


def from_run(run_dir):
    from pathlib import Path

    from objalign.embed.stage import load_run_embeddings

    vm, X, tm, T = load_run_embeddings(Path(run_dir))
    row = {int(c): j for j, c in enumerate(tm["category_id"])}
    lab = np.asarray([row[int(c)] for c in vm["category_id"]])
    return X.astype(np.float64), T[lab].astype(np.float64), np.asarray(vm["image_id"]), lab, T.astype(np.float64)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="use this finished run's embeddings instead of made-up demo-sized data")
    ap.add_argument("--perms", type=int, default=200, help="permutations timed for both null implementations")
    ap.add_argument("--resamples", type=int, default=200, help="bootstrap resamples timed for both implementations")
    args = ap.parse_args(argv)

    from sklearn.linear_model import Ridge as SkRidge

    from objalign.maps import PCAMatch, Ridge
    from objalign.evaluation.engine import evaluate, heldout_image_split
    from objalign.config import AlignConfig
    from objalign.stats.intervals import bootstrap_figures, resample_counts
    from objalign.stats.metrics import summarize
    from objalign.maps.threads import single_threaded_blas
    from objalign.stats.nulls import smoother_null, smoother_operator
    from objalign.stats.permutation import group_permutations

    X, Y, groups, lab, E = from_run(args.run) if args.run else demo_like()
    print(f"data: {len(X)} objects, {X.shape[1]}-d vision, {E.shape[1]}-d text, {len(E)} categories, "
          f"{len(np.unique(groups))} images" + (f" (from {args.run})" if args.run else " (made-up, demo-sized)"))
    train, test = heldout_image_split(groups, 0.2, 0)
    pca = PCAMatch(n_components=min(256, X.shape[1])).fit(X[train])
    Ztr, Zte = pca.transform(X[train]), pca.transform(X[test])
    alpha, B = 100.0, args.perms

    # 1. permutation null ----------------------------------------------------------------------------------
    t0 = time.perf_counter()
    S = smoother_operator(Ridge(alpha=alpha), Ztr, Zte)
    block = {"S": S, "train_labels": lab[train], "train_groups": groups[train], "test_labels": lab[test]}
    fast = smoother_null([block], E, B, seed=0)
    t_fast = time.perf_counter() - t0
    perms = group_permutations(groups[train], B, seed=0)
    t0 = time.perf_counter()
    with single_threaded_blas():  # the fairest setting for small per-permutation work on a shared machine
        slow = {"r2": [], "top1": []}
        for pi in perms:
            pred = SkRidge(alpha=alpha).fit(Ztr, Y[train][pi]).predict(Zte)
            agg, _ = summarize(pred, Y[test], lab[test], E)
            slow["r2"].append(agg["r2"])
            slow["top1"].append(agg["top1"])
    t_slow = time.perf_counter() - t0
    err = max(np.max(np.abs(np.asarray(slow[k]) - fast[k])) for k in slow)
    print(f"null, {B} permutations: smoother {t_fast:.2f} s ({1e3 * t_fast / B:.2f} ms/perm), "
          f"sklearn refit per permutation {t_slow:.2f} s ({1e3 * t_slow / B:.2f} ms/perm); "
          f"ratio {t_slow / t_fast:.1f}x; max |difference| of r2/top1 {err:.1e}")

    # 2. bootstrap -----------------------------------------------------------------------------------------
    pred = S @ Y[train]
    agg, inst = summarize(pred, Y[test], lab[test], E)
    R = args.resamples
    t0 = time.perf_counter()
    with single_threaded_blas():
        ci = bootstrap_figures(pred, Y[test], inst, groups[test], R, 0.95, seed=0)
    t_fast = time.perf_counter() - t0
    _, codes = np.unique(groups[test], return_inverse=True)
    counts = resample_counts(codes.max() + 1, R, seed=0)
    t0 = time.perf_counter()
    vals = {"r2": [], "top1": [], "residual_median": []}
    for w in counts:
        idx = np.repeat(np.arange(len(test)), w[codes])
        a, _ = summarize(pred[idx], Y[test][idx], lab[test][idx], E)
        for k in vals:
            vals[k].append(a[k])
    t_slow = time.perf_counter() - t0
    err = max(np.max(np.abs(np.quantile(vals[k], [0.025, 0.975]) - ci[k])) for k in vals)
    print(f"bootstrap, {R} resamples, {len(ci)} figures: weighted sums {t_fast:.2f} s, explicit resamples "
          f"{t_slow:.2f} s; ratio {t_slow / t_fast:.1f}x; max |difference| of r2/top1/median CIs {err:.1e}")

    # 3. whole evaluation ----------------------------------------------------------------------------------
    cfg = AlignConfig(methods=("ridge", "kernel_ridge"))
    t0 = time.perf_counter()
    res = evaluate(X, Y, groups, lab, E, cfg)
    total = time.perf_counter() - t0
    fits = sum(r["fit_seconds"] for r in res["rows"])
    print(f"evaluate (both protocols, 4 methods, {cfg.n_permutations} permutations, {cfg.n_bootstrap} resamples): "
          f"{total:.1f} s, of which model fits {fits:.1f} s and statistics/similarity {total - fits:.1f} s "
          f"({(total - fits) / total:.0%})")
    for r in res["rows"]:
        extra = f"  top1_unseen {r['top1_unseen']:.3f}" if "top1_unseen" in r else ""
        p = r.get("pvalue", {}).get("top1")
        print(f"  {r['split']:<19}{r['method']:<13} top1 {r['top1']:.3f} [{r['ci']['top1'][0]:.3f}, "
              f"{r['ci']['top1'][1]:.3f}]" + (f" p={p:.3g}" if p is not None else "") + extra
              + f"  fit {r['fit_seconds']:.1f} s")


if __name__ == "__main__":
    main()
