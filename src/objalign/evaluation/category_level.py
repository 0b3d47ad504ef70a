"""Category-level studies of one (vision, text) pair that need no fitted map: blind matching and RSA.

Both summarise the vision side per category (prototypes: the mean of a category's L2-normalised object embeddings;
for the cross-validated RDM, category means on two disjoint halves of the images) and compare it with the category
text embeddings. Significance comes from permuting categories (the exchangeable unit at this level) with
:func:`objalign.measures.calibrate.calibrated`. Open-vocabulary retrieval, which needs a fitted map, lives in
:func:`open_vocabulary` and is called per result row.
"""

from __future__ import annotations

import numpy as np

from objalign.errors import ObjalignError
from objalign.measures.calibrate import calibration_summary
from objalign.measures.matching import category_prototypes, match_study
from objalign.measures.retrieval import KS, precision_at_k, retrieval
from objalign.measures.rsa import compare_rdms, crossval_rdm, rdm, rsa
from objalign.stats.permutation import group_permutations

__all__ = ["category_level", "open_vocabulary", "rsa_study"]


def rsa_study(X, label_index, class_emb, groups, n_permutations: int = 1000, alpha: float = 0.05,
              seed: int = 0, cache: dict | None = None) -> dict:
    """RSA between vision category prototypes and text embeddings, every RDM and comparison, with a calibration.

    Returns
    -------
    dict with ``n_categories``, ``values`` (``"<rdm>/<compare>"`` -> score; ``crossval_euclidean`` compares the
    cross-validated vision RDM with the text embeddings' squared Euclidean RDM) and ``calibrated`` (correlation RDM,
    Spearman, categories permuted; :func:`~objalign.measures.calibrate.calibrated`'s summary). ``cache`` (a dict
    shared by the studies of several text embeddings of the same ``X``) keeps the vision prototypes and the
    cross-validated vision RDM.
    """

    label_index = np.asarray(label_index)
    present = np.unique(label_index)
    if len(present) < 3:
        raise ObjalignError(f"RSA needs at least 3 categories with objects, got {len(present)}")
    remap = np.full(len(class_emb), -1)
    remap[present] = np.arange(len(present))
    cache = {} if cache is None else cache
    if "prototypes" not in cache:
        cache["prototypes"] = category_prototypes(X, remap[label_index], len(present))
    P = cache["prototypes"]
    T = np.asarray(class_emb, dtype=np.float64)[present]
    values = {f"{kind}/{cmp}": rsa(P, T, rdm=kind, compare=cmp)
              for kind in ("correlation", "euclidean") for cmp in ("spearman", "kendall")}
    out = {"n_categories": int(len(present)), "values": values,
           "rdm_vision": "category prototypes (mean of L2-normalised object embeddings)"}
    try:
        if "crossval" not in cache:
            try:
                cache["crossval"] = crossval_rdm(X, label_index, groups, seed=seed)
            except ObjalignError as exc:
                cache["crossval"] = exc
        if isinstance(cache["crossval"], ObjalignError):
            raise cache["crossval"]
        cv, cats = cache["crossval"]
        text_sq = rdm(np.asarray(class_emb, dtype=np.float64)[cats], "euclidean") ** 2
        for cmp in ("spearman", "kendall"):
            values[f"crossval_euclidean/{cmp}"] = compare_rdms(cv, text_sq, cmp)
        out["n_categories_crossval"] = int(len(cats))
    except ObjalignError as exc:
        out["crossval_skipped"] = str(exc)
    if n_permutations > 0:
        out["calibrated"] = _rsa_calibrated(P, T, n_permutations, alpha, seed)
    return out


def _rsa_calibrated(P: np.ndarray, T: np.ndarray, n_permutations: int, alpha: float, seed: int) -> dict:
    """Correlation-RDM Spearman RSA against its permutation null (categories of ``T`` permuted).

    Permuting items permutes the RDM's rows and columns together, so the ranks of its entries move with them: the
    null is the Pearson correlation of the fixed ranks of one RDM with the permuted rank matrix of the other.
    """
    from scipy.spatial.distance import squareform
    from scipy.stats import rankdata


    c = len(P)
    iu = np.triu_indices(c, 1)
    rx = rankdata(rdm(P, "correlation"))
    rx = (rx - rx.mean()) / np.linalg.norm(rx - rx.mean())
    Ry = squareform(rankdata(rdm(T, "correlation")))  # ranks as a square matrix (diagonal unused)
    perms = group_permutations(c, n_permutations, seed=seed)
    every = np.vstack([np.arange(c), perms])  # the observed pairing first
    vals = Ry[every[:, iu[0]], every[:, iu[1]]]  # (K + 1, c (c - 1) / 2) permuted upper triangles
    vals -= vals.mean(1, keepdims=True)
    scores = vals @ rx / np.linalg.norm(vals, axis=1)
    out = calibration_summary(float(scores[0]), scores[1:], alpha)
    return {**out, "measure": "correlation/spearman", "scheme": "categories"}


def open_vocabulary(pred, label_index, class_emb, vocab_emb, k: int = 10) -> dict:
    """Precision@k of the true category among the dataset's names plus distractors, by NN and by CSLS.

    Parameters
    ----------
    pred : (n, q) predicted text embeddings
    label_index : (n,) true category rows of ``class_emb``
    class_emb : (c, q) dataset category embeddings (candidates ``0..c-1``)
    vocab_emb : (m, q) distractor embeddings (candidates ``c..c+m-1``)
    k : CSLS neighbourhood size

    Returns
    -------
    dict with ``n_candidates``, ``k`` and per method (``nn``, ``csls``) ``p@1`` ... ``p@100`` and ``mean_rank``
    """

    cand = np.vstack([np.asarray(class_emb, dtype=np.float64), np.asarray(vocab_emb, dtype=np.float64)])
    out = {"n_candidates": int(len(cand)), "k": int(k)}
    for method in ("nn", "csls"):
        ranks = retrieval(pred, cand, np.asarray(label_index), method=method, k=k)
        out[method] = {**precision_at_k(ranks, KS), "mean_rank": float(ranks.mean())}
    return out


def category_level(X, label_index, class_emb, groups, cfg, cache: dict | None = None) -> dict:
    """Blind matching (:func:`objalign.measures.matching.match_study`) and RSA (:func:`rsa_study`) of one pair.

    ``cfg`` is the :class:`~objalign.config.AlignConfig` (``match_methods``, ``match_restarts``, ``match_bootstrap``,
    ``similarity_permutations``, ``similarity_alpha``, ``confidence``, ``seed``). A study the data are too small for
    records why (``{"skipped": reason}``) instead of failing the run. ``cache`` (a dict shared by the calls for
    several text embeddings of the same ``X``, labels and groups) keeps the vision-side prototypes, kernels and
    RDMs, which do not depend on ``class_emb``.
    """
    cache = {} if cache is None else cache

    out = {}
    if cfg.match_methods:
        try:
            out["matching"] = match_study(X, label_index, class_emb, groups, methods=tuple(cfg.match_methods),
                                          restarts=cfg.match_restarts, n_bootstrap=cfg.match_bootstrap,
                                          confidence=cfg.confidence, seed=cfg.seed,
                                          cache=cache.setdefault("matching", {}))
        except ObjalignError as exc:
            out["matching"] = {"skipped": str(exc)}
    try:
        out["rsa"] = rsa_study(X, label_index, class_emb, groups, cfg.similarity_permutations, cfg.similarity_alpha,
                               cfg.seed, cache=cache.setdefault("rsa", {}))
    except ObjalignError as exc:
        out["rsa"] = {"skipped": str(exc)}
    return out
