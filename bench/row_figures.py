"""Benchmark of the per-target-set figures of ``evaluate_targets`` (not a test): before and after, in one run.

In a matrix every text layer is a target set of one ``evaluate_targets`` call per vision layer; what depends only on
the vision side is shared, and each set pays for its own result rows. This times that per-set part, per protocol
(held-out images, held-out categories), method and set, exactly as ``objalign.evaluation.engine._evaluate`` calls it:

- ``per_instance`` per fold (residuals, cosines, ranks among the categories);
- the two R² figures;
- the bootstrap intervals of every figure (``align.n_bootstrap`` resamples of test images).

**before**: the code this change replaced, kept below as the baseline (``_before_*``): per call, the image codes,
resample counts and per-resample object and category weights are recomputed, the weighted median takes a
(B, n) cumulative sum, each R² figure makes its own pass over the (n, q) targets and residuals, ``per_instance``
normalises the predictions twice, and the targets are gathered per fold and per figure.
**after**: the library now (``per_instance``, ``r2_scores`` with the category counts, ``bootstrap_figures``
with one cache per protocol shared by every method and set).

Predictions come from PCA + ridge (two penalties) and the training-mean baseline fitted per fold (three methods, as
the demo matrix's ridge, kernel ridge and mean); how they were fitted does not change what the figures cost. Runs
on one BLAS thread, as ``evaluate_targets`` runs this part. Every figure, interval and per-instance array of the
two versions is compared; the last line is

    per_set_before=<s> per_set_after=<s> speedup=<before / after> max_diff=<largest absolute difference>

Inputs: the demo matrix's layered stores (``--stores VISION TEXT``: one vision layer, every text layer a target
set), or made-up demo-sized data (about 1,300 objects, 30 categories, 384-d, six target sets).

    PYTHONPATH=src python bench/row_figures.py [--stores VISION TEXT] [--vision-layer -1] [--resamples 200]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def made_up(seed=0, n_img=320, c=30, q=384, d=384, n_sets=6):
    """``(X (n, d), groups, labels, {name: (c, q) category embeddings})``, demo-sized."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(c, q))
    sets = {f"set{s}": np.tanh(base @ rng.normal(size=(q, q)) / np.sqrt(q) * (1 + s / 3))
            + 0.2 * rng.normal(size=(c, q)) for s in range(n_sets)}
    groups = np.repeat(np.arange(n_img), rng.integers(1, 8, n_img))
    lab = rng.integers(0, c, len(groups))
    X = base[lab] @ rng.normal(size=(q, d)) / np.sqrt(q) + 0.8 * rng.normal(size=(len(lab), d))
    return X, groups, lab, sets


def from_stores(vision: str, text: str, layer: int):
    from objalign.embed.store import EmbeddingStore

    vm, X = EmbeddingStore(Path(vision)).read()
    tm, T = EmbeddingStore(Path(text)).read()
    X, T = (X[:, None] if X.ndim == 2 else X), (T[:, None] if T.ndim == 2 else T)
    row = {int(c): j for j, c in enumerate(tm["category_id"])}
    lab = np.asarray([row[int(c)] for c in vm["category_id"]])
    sets = {f"text{t}": np.ascontiguousarray(T[:, t], dtype=np.float64) for t in range(T.shape[1])}
    return np.ascontiguousarray(X[:, layer], dtype=np.float64), np.asarray(vm["image_id"]), lab, sets


def predictions(X, groups, lab, sets, folds, dim):
    """``{(method, set): [pred (n_test_f, q) per fold]}``: PCA + ridge (alpha 1 and 100) and the training mean."""
    from objalign.maps import PCAMatch, Ridge

    out = defaultdict(list)
    for f in folds:
        pca = PCAMatch(n_components=min(dim, len(f.train) - 1)).fit(X[f.train])
        Ztr, Zte = pca.transform(X[f.train]), pca.transform(X[f.test])
        for k, E in sets.items():
            Ytr = E[lab[f.train]]
            for name, alpha in (("ridge", 1.0), ("ridge_strong", 100.0)):
                out[(name, k)].append(Ridge(alpha=alpha).fit(Ztr, Ytr).predict(Zte))
            out[("mean", k)].append(np.repeat(Ytr.mean(0, keepdims=True), len(f.test), 0))
    return out


# ---------------------------------------------------------------------------------------------- the baseline
def _before_unit(a):
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def _before_per_instance(pred, true, label_index, class_emb, candidates=None):
    from objalign.stats.metrics import _check_inputs, _ranks

    pred, true, label_index, class_emb, candidates = _check_inputs(pred, true, label_index, class_emb, candidates)
    out = {"residual_l2": np.linalg.norm(pred - true, axis=1),
           "cosine": np.sum(_before_unit(pred) * _before_unit(true), axis=1)}
    sims = _before_unit(pred) @ _before_unit(class_emb).T
    out["rank"] = _ranks(sims, label_index)
    if candidates is not None:
        out["rank_unseen"] = _ranks(sims[:, np.sort(candidates)], np.searchsorted(np.sort(candidates), label_index))
    return out


def _before_r2(true, pred):
    """r2_uniform and r2_variance_weighted, each with its own sums of squares."""
    from objalign.stats.metrics import CONSTANT_DIM_RTOL

    out = []
    for uniform in (True, False):
        t, p = np.asarray(true, dtype=np.float64), np.asarray(pred, dtype=np.float64)
        ss_tot = np.sum((t - t.mean(axis=0)) ** 2, axis=0)
        ss_res = np.sum((t - p) ** 2, axis=0)
        live = ss_tot > CONSTANT_DIM_RTOL * max(float(ss_tot.max()), 1e-300)
        if not live.any():
            out.append(1.0 if not np.any(ss_res) else 0.0)
        elif uniform:
            out.append(float(np.mean(1.0 - ss_res[live] / ss_tot[live])))
        else:
            out.append(float(1.0 - ss_res[live].sum() / ss_tot[live].sum()))
    return {"r2": out[0], "r2_variance_weighted": out[1]}


def _before_median(values, w):
    order = np.argsort(values, kind="stable")
    v = values[order]
    cw = np.cumsum(w[:, order], axis=1)
    total = cw[:, -1]
    lo = np.sum(cw <= ((total - 1) // 2)[:, None], axis=1)
    hi = np.sum(cw <= (total // 2)[:, None], axis=1)
    return 0.5 * (v[lo] + v[hi])


def _before_figures(pred, true, inst, counts, labels, E, codes):
    from scipy import sparse

    from objalign.stats.intervals import _r2_from_sums, _weighted_means

    w = np.asarray(counts, dtype=np.float64)
    per_group = sparse.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))),
                                  shape=(w.shape[1], len(codes)))

    def wsum(a):
        return w @ (per_group @ a)

    weights = counts[:, codes]
    W = wsum(np.ones((len(pred), 1)))[:, 0]
    cnt = np.bincount(labels, minlength=len(E)).astype(np.float64)
    Ec = E - cnt @ E / max(cnt.sum(), 1.0)
    onehot = np.zeros((len(labels), len(E)))
    onehot[np.arange(len(labels)), labels] = 1.0
    wc = wsum(onehot)
    s_y, s_y2 = wc @ Ec, wc @ (Ec ** 2)
    r2, r2w = _r2_from_sums(wsum((pred - true) ** 2), s_y2 - s_y ** 2 / W[:, None])
    out = {"r2": r2, "r2_variance_weighted": r2w, **_weighted_means(inst, wsum, W)}  # (unchanged)
    out["residual_median"] = _before_median(inst["residual_l2"], weights)
    return out


def _before_bootstrap(pred, true, inst, groups, n_resamples, confidence, seed, categories):
    from objalign.stats.intervals import _CHUNK_ELEMENTS, _counts
    from objalign.stats.metrics import FIGURES, UNSEEN_FIGURES

    _, codes = np.unique(groups, return_inverse=True)
    codes = codes.ravel()
    n_groups = int(codes.max()) + 1
    chunk = max(1, _CHUNK_ELEMENTS // max(len(pred), n_groups, 1))
    labels, E = np.asarray(categories[0]), np.asarray(categories[1], dtype=np.float64)
    parts = defaultdict(list)
    for counts in _counts(n_groups, n_resamples, seed, chunk):
        for k, v in _before_figures(pred, true, inst, counts, labels, E, codes).items():
            parts[k].append(v)
    order = [f for f in FIGURES + UNSEEN_FIGURES if f in parts]
    bounds = np.quantile(np.stack([np.concatenate(parts[k]) for k in order]),
                         [(1 - confidence) / 2, (1 + confidence) / 2], axis=1)
    return {k: [float(bounds[0, j]), float(bounds[1, j])] for j, k in enumerate(order)}


# ------------------------------------------------------------------------------------------------ the two runs
def per_set_part(version, protocols, preds, sets, lab, groups, cfg, clock):
    """Every set's figures, per-instance arrays and intervals, as ``_evaluate`` computes them; ``clock[part]``
    accumulates the seconds of each part. Returns ``{(protocol, method, set): {name: value}}``."""
    from objalign.stats.intervals import bootstrap_figures
    from objalign.stats.metrics import figures_from_instances, per_instance, r2_scores

    out = {}
    for protocol, folds in protocols.items():
        test = np.concatenate([f.test for f in folds])
        lab_t, g = lab[test], groups[test]
        bounds = np.cumsum([0] + [len(f.test) for f in folds])
        unseen = protocol == "heldout_categories"
        boot_cache: dict = {}
        for method in ("ridge", "ridge_strong", "mean"):
            for k, E in sets.items():
                fold_preds = preds[protocol][(method, k)]
                t0 = time.perf_counter()
                pred = np.vstack(fold_preds)
                if version == "before":
                    Y = E[lab]
                    parts = [_before_per_instance(p, Y[f.test], lab[f.test], E, f.unseen if unseen else None)
                             for f, p in zip(folds, fold_preds)]
                else:
                    Yt = E[lab_t]
                    parts = [per_instance(p, None, lab_t[a:b], E, f.unseen if unseen else None)
                             for f, p, a, b in zip(folds, fold_preds, bounds[:-1], bounds[1:])]
                inst = {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}
                t1 = time.perf_counter()
                r2 = _before_r2(Y[test], pred) if version == "before" else r2_scores(Yt, pred, categories=(lab_t, E))
                figs = {**r2, **figures_from_instances(inst)}
                t2 = time.perf_counter()
                if version == "before":
                    ci = _before_bootstrap(pred, Y[test], inst, g, cfg.n_bootstrap, cfg.confidence, cfg.seed,
                                           (lab_t, E))
                else:
                    ci = bootstrap_figures(pred, Yt, inst, g, cfg.n_bootstrap, cfg.confidence, cfg.seed,
                                           categories=(lab_t, E), cache=boot_cache)
                t3 = time.perf_counter()
                clock["per_instance"] += t1 - t0
                clock["r2"] += t2 - t1
                clock["bootstrap"] += t3 - t2
                out[(protocol, method, k)] = {**{f"fig.{n}": v for n, v in figs.items()},
                                              **{f"ci.{n}": v for n, v in ci.items()},
                                              **{f"inst.{n}": v for n, v in inst.items()}}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", nargs=2, metavar=("VISION", "TEXT"),
                    help="layered embedding stores (the demo matrix's)")
    ap.add_argument("--vision-layer", type=int, default=-1)
    ap.add_argument("--resamples", type=int, default=200, help="bootstrap resamples (the demo matrix's 200)")
    ap.add_argument("--repeats", type=int, default=7, help="each version is timed this often; the fastest counts")
    args = ap.parse_args(argv)

    from dataclasses import replace

    from objalign.config import AlignConfig
    from objalign.stats import protocols as P
    from objalign.maps.threads import single_threaded_blas

    X, groups, lab, sets = from_stores(*args.stores, args.vision_layer) if args.stores else made_up()
    cfg = replace(AlignConfig(), n_bootstrap=args.resamples)
    print(f"data: {len(X)} objects, {X.shape[1]}-d vision, {len(sets)} target sets of {len(next(iter(sets.values())))} "
          f"categories x {next(iter(sets.values())).shape[1]}-d, {len(np.unique(groups))} images, "
          f"{cfg.n_bootstrap} resamples" + (f" (stores, vision layer {args.vision_layer})" if args.stores else
                                             " (made-up, demo-sized)"))
    protocols = {"heldout_images": P.heldout_images(groups, cfg.test_size, cfg.seed),
                 "heldout_categories": P.heldout_categories(lab, groups, cfg.category_folds, cfg.seed)}
    preds = {p: predictions(X, groups, lab, sets, folds, 64) for p, folds in protocols.items()}
    best = {}
    results = {}
    with single_threaded_blas():
        for _ in range(args.repeats):
            for version in ("before", "after"):
                clock = defaultdict(float)
                results[version] = per_set_part(version, protocols, preds, sets, lab, groups, cfg, clock)
                total = sum(clock.values())
                if version not in best or total < sum(best[version].values()):
                    best[version] = dict(clock)
    diff = 0.0
    for key, before in results["before"].items():
        after = results["after"][key]
        assert before.keys() == after.keys(), key
        for n, v in before.items():
            gap = np.abs(np.asarray(v, dtype=np.float64) - np.asarray(after[n], dtype=np.float64))
            diff = max(diff, float(np.max(gap)))
    n_sets = len(sets)
    print(f"{'seconds per target set':24s} {'before':>8s} {'after':>8s} {'ratio':>6s}   "
          f"(2 protocols x 3 methods, one BLAS thread, fastest of {args.repeats})")
    for part in ("per_instance", "r2", "bootstrap"):
        b, a = best["before"][part] / n_sets, best["after"][part] / n_sets
        print(f"{part:24s} {b:8.4f} {a:8.4f} {b / a:6.2f}")
    before, after = sum(best["before"].values()) / n_sets, sum(best["after"].values()) / n_sets
    print(f"{'total':24s} {before:8.4f} {after:8.4f} {before / after:6.2f}")
    print(f"per_set_before={before:.4f} per_set_after={after:.4f} speedup={before / after:.2f} max_diff={diff:.2e}")


if __name__ == "__main__":
    main()
