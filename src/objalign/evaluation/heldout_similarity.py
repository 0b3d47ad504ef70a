"""Similarity measures between a protocol's held-out vision features and their text targets, beside a shuffled
floor and their calibrated scores (the ``similarity`` entry of a result)."""

from __future__ import annotations

import numpy as np

from objalign.errors import ObjalignError
from objalign.evaluation.folds import SHUFFLE_SEED
from objalign.evaluation.settings import SIMILARITY_IDS, AlignConfig
from objalign.measures.calibrate import calibrate_measures, permutation_engine
from objalign.measures.similarity import distinct_rows
from objalign.stats.permutation import group_permutations

#: the measures a result reports, in its order (``AlignConfig.similarity_measures`` picks among them)
SIMILARITY_MEASURES = SIMILARITY_IDS


def heldout_similarity(Z: np.ndarray, Y: np.ndarray, groups: np.ndarray, cfg: AlignConfig,
                       cache: dict | None = None) -> dict:
    """Similarity measures between held-out vision features and their text targets, and a shuffled floor.

    Parameters
    ----------
    Z : (n, d) PCA'd vision features of the test objects
    Y : (n, q) their categories' text embeddings
    groups : (n,) image ids
    cfg : AlignConfig (``similarity_k``, ``svcca_dim``, ``similarity_max_n``, ``seed``)
    cache : dict shared by the calls on the same ``Z`` and ``groups`` (several target sets): what the measures and
        their permutation engines compute from ``Z`` alone, and the permutations, are computed once
        (:mod:`objalign.measures.similarity`); the results are identical with or without it

    Run it with BLAS limited to one thread (``single_threaded_blas``, as :func:`evaluate` does): its (n, n)
    products on a few hundred objects gain nothing from threads.

    Returns
    -------
    dict with ``values`` (measure -> float or None), ``values_shuffled`` (the same measures after one
    image-block shuffle of the pairing: what unrelated spaces with these marginals score; both evaluated by the
    measures' permutation engines, :func:`objalign.measures.calibrate.permutation_engine`), ``n``, ``k``,
    ``svcca_dim``, ``chance_mutual_knn``, ``calibrated`` (measure -> threshold, p-value, BH-adjusted p-value and
    calibrated score against ``align.similarity_permutations`` image-block permutations,
    :func:`objalign.measures.calibrate.calibrate_measures`) and, for measures that could not be computed, ``errors``.
    """

    n_all = len(Z)
    if n_all > cfg.similarity_max_n:  # the measures build (n, n) matrices: a seeded subsample of objects
        keep = np.sort(np.random.default_rng(cfg.seed).choice(n_all, cfg.similarity_max_n, replace=False))
        Z, Y, groups = Z[keep], Y[keep], groups[keep]
    n = len(Z)
    out = {"n": int(n), "n_test": int(n_all),
           "features": "PCA'd vision test features vs their categories' text embeddings (held-out images)",
           "ties": "average (expected value under random tie-breaking; text targets repeat per category)"}
    if n < 5:
        return {**out, "skipped": f"only {n} test objects"}
    k = int(min(cfg.similarity_k, n - 1))
    cache = {} if cache is None else cache  # also shared by the measures and their engines within this call
    # centred targets with u distinct rows (categories) have rank <= u - 1 (= u - 1 for affinely independent
    # category embeddings); svcca raises, and the error is recorded, if it is lower still
    dim = int(min(cfg.svcca_dim, distinct_rows(Y, cache) - 1, Z.shape[1], n - 1))

    options = {"mutual_knn": {"k": k}, "cknna": {"k": max(k, 2)}, "svcca": {"dim": dim}}
    wanted = [m for m in SIMILARITY_MEASURES if m in cfg.similarity_measures]
    spec = {m: (m, options.get(m, {})) for m in wanted if m != "svcca" or dim >= 1}
    engines: dict = {}

    def values(pi=None):
        """Every measure on ``(Z, Y[pi])`` (``pi=None``: the observed pairing), by its permutation engine: the
        measure itself, with what it computes from ``Y`` alone computed once and reordered for ``pi``."""
        got = {}
        for name in wanted:
            if name not in spec:
                got[name] = None
                continue
            try:
                if name not in engines:
                    engines[name] = permutation_engine(spec[name][0], Z, Y, cache, **spec[name][1])
                got[name] = float(engines[name].score(pi))
            except ObjalignError as exc:  # e.g. a degenerate tiny test set: record why, keep the report
                got[name] = None
                out.setdefault("errors", {})[name] = str(exc)
        return got

    result = {"values": values()}
    calibrated = None
    if cfg.similarity_permutations > 0:  # each measure against its image-block permutation threshold
        calibrated = calibrate_measures(spec, Z, Y, groups, cfg.similarity_permutations, cfg.similarity_alpha,
                                        cfg.seed, cache=cache, engines=engines)
    result["values_shuffled"] = values(group_permutations(groups, 1, seed=cfg.seed + SHUFFLE_SEED)[0])
    if calibrated is not None:
        result["calibrated"] = calibrated
    return {**out, "k": k, "svcca_dim": dim, **result, "chance_mutual_knn": float(k / (n - 1))}
