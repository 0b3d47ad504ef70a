"""The unit of analysis: object crops, whole images, or category prototypes averaged over k objects.

``object``
    The object crops of the run: the align stage's own results (:func:`objalign.evaluation.engine.evaluate`).
``image``
    Each sampled image's whole-image embedding (the same vision encoder on the whole image, at the encoder's own
    preprocessing; ``embed`` writes it as a second vision store) against the **mean of its objects' label
    embeddings** (the run's embedded objects of that image, each object counting once: 3 people and a dog give
    ``0.75 person + 0.25 dog``). The splits are the object level's own, read at the image level, so both levels are
    scored on the same images: ``heldout_images`` tests the images whose objects the object level tests;
    ``heldout_categories`` tests, in fold ``f``, every image that holds an object of one of the fold's unseen
    categories and trains on the images that hold none (the object level's training images). An image whose
    categories fall in several folds is scored once in each of them (its prediction differs: a different map).
    Retrieval ranks the image's own target among the *distinct* targets of the fold's test images (images with the
    same category proportions share one candidate), by cosine similarity to the prediction; chance is
    ``1 / n_candidates``. Maps: PCA to the common dimension and ridge with its alpha chosen by K-fold CV over
    training images (and the training-mean ``mean`` floor); intervals: percentile bootstrap over test images.
    No permutation null at this level.
``prototype``
    Category prototypes: the mean of ``k`` L2-normalised object embeddings of a category (all of them when it has
    fewer than ``k``; ``k = "all"`` is the category mean of :func:`objalign.measures.matching.category_prototypes`),
    ``k`` swept, each drawn ``draws`` times. Per draw: RSA (correlation RDMs, Spearman) and linear CKA between the
    prototypes and the category text embeddings (no fitting), and held-out-category top-1: the categories are dealt
    into ``align.category_folds`` folds, PCA + ridge (alpha by K-fold CV over categories) map the other folds'
    prototypes to their text embeddings, and each held-out prototype's prediction ranks its own name among the
    fold's held-out names. Mean and a percentile interval over the draws.
"""

from __future__ import annotations

import numpy as np

from objalign.errors import ObjalignError
from objalign.maps import PCAMatch, RidgeCV
from objalign.measures.rsa import rsa
from objalign.measures.similarity import cka
from objalign.stats import protocols
from objalign.stats.intervals import bootstrap_figures
from objalign.stats.metrics import UNIT_FIGURES, figures_from_instances, per_instance, r2_uniform

UNITS = ("object", "image", "prototype")


def check_units(units) -> tuple[str, ...]:
    """``align.units`` validated (one line naming an unknown unit); ``object`` is always computed."""
    units = tuple(units)
    bad = [u for u in units if u not in UNITS]
    if bad:
        raise ObjalignError(f"align.units: unknown unit {bad[0]!r}; expected any of {', '.join(UNITS)}")
    return units


def parse_ks(ks) -> list[int | str]:
    """``align.prototype_k`` -> positive ints and ``"all"`` (one line naming a bad value)."""
    out: list[int | str] = []
    for k in ks:
        text = str(k).strip().lower()
        if text == "all":
            out.append("all")
            continue
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < 1 or str(v) != text:
            raise ObjalignError(f"align.prototype_k: {k!r} is not a number of objects; expected integers >= 1 or "
                                "'all', e.g. [1, 2, 5, 10, 20, all]")
        out.append(v)
    if not out:
        raise ObjalignError("align.prototype_k is empty; give the k to sweep, e.g. [1, 2, 5, 10, 20, all]")
    return list(dict.fromkeys(out))


def image_targets(label_index: np.ndarray, groups: np.ndarray, class_emb: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image's target: the mean of its objects' label (text) embeddings.

    Parameters
    ----------
    label_index : (n,) category row of each object
    groups : (n,) image id of each object
    class_emb : (c, q) category text embeddings

    Returns
    -------
    image_ids : (m,) sorted distinct image ids
    targets : (m, q) ``mean_{objects o of image i} class_emb[label_index[o]]``
    proportions : (m, c) fraction of each image's objects in each category (``targets = proportions @ class_emb``)
    """
    label_index = np.asarray(label_index)
    ids, inv = np.unique(np.asarray(groups), return_inverse=True)
    counts = np.zeros((len(ids), len(class_emb)))
    np.add.at(counts, (inv.ravel(), label_index), 1.0)
    W = counts / counts.sum(1, keepdims=True)
    return ids, W @ np.asarray(class_emb, dtype=np.float64), W


def _ridge_map(Xtr, Ytr, Xte, cfg, cv_folds: int):
    """PCA to the common dimension and ridge with alpha chosen by K-fold CV; predictions ``(n_test, q)`` and alpha."""

    d = int(min(cfg.common_dim, Xtr.shape[1], Ytr.shape[1], len(Xtr) - 1))
    pca = PCAMatch(n_components=d).fit(Xtr)
    model = RidgeCV(alphas=list(cfg.alphas), cv=int(cv_folds)).fit(pca.transform(Xtr), Ytr)
    return model.predict(pca.transform(Xte)), float(model.alpha_), d


def image_level(X_img: np.ndarray, image_ids: np.ndarray, label_index: np.ndarray, groups: np.ndarray,
                class_emb: np.ndarray, cfg) -> dict:
    """Whole images against the mean of their objects' label embeddings, on the object level's splits.

    Parameters
    ----------
    X_img : (m', d) whole-image embeddings
    image_ids : (m',) their image ids
    label_index, groups : (n,) category row and image id of each embedded object (the object level's data)
    class_emb : (c, q) category text embeddings
    cfg : AlignConfig (``protocols``, ``test_size``, ``category_folds``, ``seed``, ``common_dim``, ``alphas``,
        ``cv_folds``, ``methods``/``baselines`` (ridge and mean apply here), ``n_bootstrap``, ``confidence``)

    Returns
    -------
    dict with ``rows`` (one per method and protocol: :data:`~objalign.stats.metrics.UNIT_FIGURES`, ``n_test`` images,
    ``n_train``, ``n_candidates`` (mean per fold), ``chance_top1``, ``ci``), ``n_images``,
    ``n_images_without_embedding``, ``skipped_protocols`` (protocol -> reason) and the definitions in words
    """

    X_img = np.asarray(X_img, dtype=np.float64)
    if X_img.ndim != 2 or len(X_img) != len(image_ids):
        raise ObjalignError(f"whole-image embeddings have shape {X_img.shape}; expected one row per image id "
                            f"({len(image_ids)})")
    if not np.isfinite(X_img).all():
        raise ObjalignError("whole-image embeddings hold non-finite values; re-run `objalign embed --force`")
    groups = np.asarray(groups)
    ids, T, W = image_targets(label_index, groups, class_emb)
    store_row = {int(i): r for r, i in enumerate(np.asarray(image_ids).tolist())}
    have = np.asarray([int(i) in store_row for i in ids.tolist()])
    ids, T, W = ids[have], T[have], W[have]
    X = X_img[[store_row[int(i)] for i in ids.tolist()]]
    methods = [m for m in ("ridge", "mean") if m in tuple(cfg.methods) + tuple(cfg.baselines)]
    out = {"n_images": int(len(ids)), "n_images_without_embedding": int((~have).sum()),
           "target": "mean of the image's embedded objects' label embeddings (each object once)",
           "retrieval": "the image's target among the distinct targets of the fold's test images (cosine)",
           "heldout_categories": "fold f tests every image holding an object of an unseen category and trains on "
                                 "images holding none; an image with unseen categories in several folds is scored "
                                 "in each",
           "methods": methods, "rows": [], "skipped_protocols": {}}
    for protocol in cfg.protocols:
        try:
            if protocol == "heldout_images":
                folds = protocols.heldout_images(groups, cfg.test_size, cfg.seed)
            else:
                folds = protocols.heldout_categories(label_index, groups, cfg.category_folds, cfg.seed)
            parts = []
            for f in folds:
                tr = np.flatnonzero(np.isin(ids, groups[f.train]))
                te = np.flatnonzero(np.isin(ids, groups[f.test]))
                if len(tr) < max(cfg.cv_folds, 3) or len(te) < 1:
                    raise ObjalignError(f"{protocol}: a fold has {len(tr)} training and {len(te)} test images with "
                                        f"whole-image embeddings (need at least {max(cfg.cv_folds, 3)} and 1)")
                cand, col = np.unique(W[te], axis=0, return_inverse=True)
                parts.append((tr, te, cand @ np.asarray(class_emb, dtype=np.float64), col.ravel()))
        except ObjalignError as exc:
            out["skipped_protocols"][protocol] = str(exc)
            continue
        for method in methods:
            preds, insts, alphas = [], [], []
            for tr, te, cand_emb, col in parts:
                if method == "ridge":
                    pred, alpha, _ = _ridge_map(X[tr], T[tr], X[te], cfg, cv_folds=cfg.cv_folds)
                    alphas.append(alpha)
                else:
                    pred = np.repeat(T[tr].mean(0, keepdims=True), len(te), 0)
                preds.append(pred)
                insts.append(per_instance(pred, T[te], col, cand_emb))
            te_all = np.concatenate([p[1] for p in parts])
            pred = np.vstack(preds)
            inst = {k: np.concatenate([i[k] for i in insts]) for k in insts[0]}
            figs = {"r2": r2_uniform(T[te_all], pred), **figures_from_instances(inst)}
            row = {"unit": "image", "method": method, "split": protocol,
                   **{k: figs[k] for k in UNIT_FIGURES}, "n_test": int(len(te_all)),
                   "n_images_test": int(len(np.unique(ids[te_all]))),
                   "n_train": int(round(np.mean([len(p[0]) for p in parts]))),
                   "n_candidates": float(np.mean([len(p[2]) for p in parts])),
                   "chance_top1": float(np.mean(np.concatenate([np.full(len(p[1]), 1.0 / len(p[2])) for p in parts])))}
            if alphas:
                row["alpha"] = float(alphas[0]) if len(set(alphas)) == 1 else [float(a) for a in alphas]
            if cfg.n_bootstrap > 0:
                ci = bootstrap_figures(pred, T[te_all], inst, ids[te_all], cfg.n_bootstrap, cfg.confidence, cfg.seed)
                row["ci"] = {k: v for k, v in ci.items() if k in UNIT_FIGURES}
                row["ci_level"] = cfg.confidence
            out["rows"].append(row)
    return out


def object_rows(rows: list[dict]) -> list[dict]:
    """The object level's figures of the align stage's result rows, in the unit-of-analysis row shape."""
    keep = ("method", "split", "n_test", "n_images_test", "n_train", "n_candidates", "chance_top1", "ci_level")
    out = []
    for r in rows:
        if r["method"] not in ("ridge", "mean"):
            continue
        row = {"unit": "object", **{k: r[k] for k in keep if k in r}, **{k: r.get(k) for k in UNIT_FIGURES}}
        if r.get("ci"):
            row["ci"] = {k: v for k, v in r["ci"].items() if k in UNIT_FIGURES}
        out.append(row)
    return out


def _unit_rows(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def prototypes(X: np.ndarray, label_index: np.ndarray, n_categories: int, k: int | str,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """Category prototypes from ``k`` objects each: the mean of ``k`` L2-normalised embeddings.

    Parameters
    ----------
    X : (n, d) object embeddings
    label_index : (n,) category row of each object
    n_categories : c
    k : int >= 1 or ``"all"``; a category with fewer objects uses all of them
    rng : the draw of the ``k`` objects (without replacement, per category); default seed 0

    Returns
    -------
    (c, d) prototypes; a category with no object gets NaN
    """
    if k != "all" and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
        raise ObjalignError(f"prototype k = {k!r}: expected an integer >= 1 or 'all'")
    rng = np.random.default_rng(0) if rng is None else rng
    Z = _unit_rows(np.asarray(X, dtype=np.float64))
    label_index = np.asarray(label_index)
    P = np.full((n_categories, Z.shape[1]), np.nan)
    for c in range(n_categories):
        idx = np.flatnonzero(label_index == c)
        if not len(idx):
            continue
        if k != "all" and k < len(idx):
            idx = rng.choice(idx, int(k), replace=False)
        P[c] = Z[idx].mean(0)
    return P


def _interval(values, confidence: float) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if not len(v):
        return {"mean": None, "low": None, "high": None}
    lo, hi = np.quantile(v, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"mean": float(v.mean()), "low": float(lo), "high": float(hi)}


def _heldout_category_top1(P: np.ndarray, T: np.ndarray, folds: list[np.ndarray], cfg) -> float:
    """Held-out-category top-1 of prototypes ``P`` (c, d) against names ``T`` (c, q) over category ``folds``."""

    hits = []
    for unseen in folds:
        train = np.setdiff1d(np.arange(len(P)), unseen)
        pred, _, _ = _ridge_map(P[train], T[train], P[unseen], cfg, cv_folds=min(cfg.cv_folds, len(train)))
        inst = per_instance(pred, T[unseen], np.arange(len(unseen)), T[unseen])
        hits.append(inst["rank"] <= 1)
    return float(np.concatenate(hits).mean())


def prototype_curve(X: np.ndarray, label_index: np.ndarray, class_emb: np.ndarray, ks, draws: int, cfg) -> dict:
    """Prototypes of ``k`` objects vs the category text embeddings, ``k`` swept (see the module docstring).

    Parameters
    ----------
    X : (n, d) object embeddings; label_index : (n,) category rows; class_emb : (c, q)
    ks : sequence of int or ``"all"`` (:func:`parse_ks`)
    draws : int >= 1, draws per ``k`` (``"all"``, and ``k`` at least every category's size, need only one)
    cfg : AlignConfig (``category_folds``, ``cv_folds``, ``common_dim``, ``alphas``, ``confidence``, ``seed``)

    Returns
    -------
    dict with ``points`` (per ``k``: ``n_draws``, ``n_categories_below_k``, and ``rsa_spearman``, ``cka_linear``,
    ``heldout_top1`` each as ``{"mean", "low", "high"}``), ``n_categories``, ``chance_heldout_top1``, ``folds``
    """

    ks = parse_ks(ks)
    if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or draws < 1:
        raise ObjalignError(f"align.prototype_draws = {draws!r}: expected an integer >= 1, e.g. 20")
    label_index = np.asarray(label_index)
    present, sizes = np.unique(label_index, return_counts=True)
    if len(present) < 3:
        raise ObjalignError(f"prototypes need at least 3 categories with objects, got {len(present)}")
    remap = np.full(len(class_emb), -1)
    remap[present] = np.arange(len(present))
    lab = remap[label_index]
    T = np.asarray(class_emb, dtype=np.float64)[present]
    n_folds = int(min(max(cfg.category_folds, 2), len(present)))
    folds = [np.sort(f) for f in np.array_split(np.random.default_rng(cfg.seed).permutation(len(present)), n_folds)]
    out = {"n_categories": int(len(present)), "n_folds": n_folds,
           "chance_heldout_top1": float(np.mean(np.concatenate([np.full(len(f), 1.0 / len(f)) for f in folds]))),
           "definition": "prototype = mean of k L2-normalised object embeddings of a category (all when fewer)",
           "points": []}
    for j, k in enumerate(ks):
        full = k == "all" or k >= sizes.max()
        n_draws = 1 if full else int(draws)
        rng = np.random.default_rng([cfg.seed, j])
        vals = {"rsa_spearman": [], "cka_linear": [], "heldout_top1": []}
        for _ in range(n_draws):
            P = prototypes(X, lab, len(present), k, rng)
            vals["rsa_spearman"].append(rsa(P, T, rdm="correlation", compare="spearman"))
            vals["cka_linear"].append(float(cka(P, T, kernel="linear")))
            vals["heldout_top1"].append(_heldout_category_top1(P, T, folds, cfg))
        out["points"].append({"k": k, "n_draws": n_draws,
                              "n_categories_below_k": 0 if k == "all" else int((sizes < k).sum()),
                              **{name: _interval(v, cfg.confidence) for name, v in vals.items()}})
    return out
