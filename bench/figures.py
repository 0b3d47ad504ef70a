"""The permutation null's scoring step alone: :meth:`CategoryScorer.figures_batch` before and after.

Every permutation of a smoother null is scored from its category coefficients ``C`` (n_test, c) and the
category Gram matrix (:class:`objalign.stats.nulls.CategoryScorer`). This times that scoring on demo-sized
stacks (32 permutations, c = 30 categories, 384-d text; the held-out-images split's ~260 test objects and the
held-out-categories protocol's ~1,300 pooled ones with per-object unseen candidates), side by side in one run:

- **before**: the previous implementation (kept below as :func:`reference_figures_batch`): three stacked
  ``(n, c) @ (c, c)`` products and every figure from ``(m, n, c)`` elementwise temporaries;
- **after**: :meth:`CategoryScorer.figures_batch_cn` on the coefficients in the layout the null produces
  (``(m, c, n)``), with the R² figures from ``(c, c)`` totals; also timed with ``C^T C`` given, as
  :func:`~objalign.stats.nulls.smoother_nulls` passes it (computed once for every target set, so this is the
  part each extra target set of ``evaluate_targets`` pays).

Both are run on the same inputs, alternating, single-threaded BLAS (as the null runs); every figure is
checked to agree. Last lines: ``per_target_speedup=<before / after with C^T C given>`` and
``figures_batch_speedup=<before / after, summed over the cases> max_rel_diff=<largest relative difference>``.

    PYTHONPATH=src python bench/figures.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def reference_figures_batch(scorer, C: np.ndarray) -> dict[str, np.ndarray]:
    """The previous ``CategoryScorer.figures_batch`` (the baseline): figures of ``C`` (m, n, c)."""
    i, lab = scorer.rows, scorer.labels
    CG = np.matmul(C, scorer.G)
    p2 = np.maximum(np.sum(CG * C, axis=2), 0.0)
    own = CG[:, i, lab]
    res2 = np.maximum(p2 - 2 * own + scorer.G[lab, lab], 0.0)
    CGl = np.matmul(C, scorer.Gl)
    res2_live = np.sum(CGl * C, axis=2) - 2 * CGl[:, i, lab] + scorer.Gl[lab, lab]
    CGd = np.matmul(C, scorer.Gd)
    wres = np.sum(CGd * C, axis=2) - 2 * CGd[:, i, lab] + scorer.Gd[lab, lab]
    pn = np.sqrt(np.maximum(p2, 1e-24))
    sims = CG / scorer.e_norm
    own_s = sims[:, i, lab]
    above = sims > own_s[:, :, None]
    rank = 1 + np.sum(above, axis=2)
    res = np.sqrt(res2)
    out = {
        "r2": 1.0 - wres.sum(axis=1) / scorer.q,
        "r2_variance_weighted": 1.0 - res2_live.sum(axis=1) / scorer.ss_tot,
        "cosine_mean": np.mean(own / (pn * scorer.e_norm[lab]), axis=1),
        "residual_mean": res.mean(axis=1),
        "residual_median": np.median(res, axis=1),
        "top1": np.mean(rank <= 1, axis=1),
        "top5": np.mean(rank <= 5, axis=1),
        "mean_rank": rank.mean(axis=1),
    }
    if scorer.candidates is not None:
        ru = 1 + np.sum(above & scorer.candidates, axis=2)
        out.update(top1_unseen=np.mean(ru <= 1, axis=1), top5_unseen=np.mean(ru <= 5, axis=1),
                   mean_rank_unseen=ru.mean(axis=1))
    return out


def case(n: int, unseen: bool, m: int = 32, c: int = 30, q: int = 384, seed: int = 0):
    """A scorer and a (m, c, n) stack of ridge-like coefficients (rows summing to ~1, the truth favoured)."""
    from objalign.stats.nulls import CategoryScorer

    rng = np.random.default_rng(seed)
    E = rng.normal(size=(c, q))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    lab = rng.integers(0, c, n)
    cand = None
    if unseen:  # five folds of six held-out categories each: an object is ranked among its fold's categories
        fold = rng.permutation(c) % 5
        cand = fold[None, :] == fold[lab][:, None]
    C = rng.dirichlet(np.ones(c), size=(m, n)) + 0.2 * np.eye(c)[lab]
    return CategoryScorer(E, lab, cand), np.ascontiguousarray(C.transpose(0, 2, 1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30, help="timed calls per implementation and case")
    args = ap.parse_args(argv)

    from objalign.maps.threads import single_threaded_blas

    total = {"before": 0.0, "after": 0.0, "after_shared": 0.0}
    worst = 0.0
    with single_threaded_blas():
        for n, unseen in ((260, False), (1300, True)):
            scorer, K = case(n, unseen)
            C = np.ascontiguousarray(K.transpose(0, 2, 1))  # the (m, n, c) stack the baseline was given
            KK = np.matmul(K, K.transpose(0, 2, 1))
            runs = {"before": lambda: reference_figures_batch(scorer, C), "after": lambda: scorer.figures_batch_cn(K),
                    "after_shared": lambda: scorer.figures_batch_cn(K, KK)}
            got = {k: f() for k, f in runs.items()}
            for name, v in got["before"].items():
                scale = np.maximum(np.abs(v), 1e-12)
                for k in ("after", "after_shared"):
                    worst = max(worst, float(np.max(np.abs(got[k][name] - v) / scale)))
            assert got["before"].keys() == got["after"].keys() == got["after_shared"].keys()
            secs = {k: 0.0 for k in runs}
            for _ in range(args.repeats):
                for k, f in runs.items():  # alternating, so both see the same machine load
                    t0 = time.perf_counter()
                    f()
                    secs[k] += time.perf_counter() - t0
            for k in runs:
                total[k] += secs[k]
            ms = {k: f"{v / args.repeats * 1e3:.2f} ms" for k, v in secs.items()}
            print(f"m={K.shape[0]} n_test={n} c={K.shape[1]} unseen={unseen}: before {ms['before']}  "
                  f"after {ms['after']} (ratio {secs['before'] / secs['after']:.2f})  "
                  f"after with C^T C given {ms['after_shared']} (ratio {secs['before'] / secs['after_shared']:.2f})")
    print(f"per_target_speedup={total['before'] / total['after_shared']:.2f}")
    print(f"figures_batch_speedup={total['before'] / total['after']:.2f} max_rel_diff={worst:.2e}")


if __name__ == "__main__":
    main()
