"""Calibrated similarity scores: a permutation threshold for every measure (Gröger, Wen & Brbić 2026).

Raw CKA-type scores have a chance level of order ``d / n``: two unrelated representations with many features and
few samples already score well above 0. The calibration asks what the measure scores when the pairing is broken and
reports only what exceeds that:

- a permutation null: ``K`` shufflings of the rows of ``Y`` against ``X`` that move the exchangeable unit as a block
  (whole images, so an image's objects keep their labels together; ``groups=None`` shuffles single rows, e.g.
  categories for category-level measures; :func:`objalign.stats.permutation.group_permutations`);
- the threshold ``tau``: the ``ceil((1 - alpha)(K + 1))``-th smallest of the observed score together with the ``K``
  null scores;
- the p-value ``(1 + #{null >= observed}) / (K + 1)``;
- the calibrated score ``max((s - tau) / (s_max - tau), 0)`` (``s_max = 1`` for every measure here), positive only
  when the observed score beats the threshold (which implies ``p <= alpha``);
- across many comparisons (several measures, protocols, a model matrix) Benjamini-Hochberg adjusted p-values
  (:func:`bh_adjust`).

The permutation engines that compute the null of every measure fast (and their equality with the measure recomputed
on the permuted data) are described in :mod:`objalign.measures.permutation`; :data:`MEASURES` and
:func:`permutation_engine` are importable from here too.
"""

from __future__ import annotations

import math

import numpy as np

from objalign.errors import ObjalignError
from objalign.measures._sides import side_of
from objalign.measures.permutation import MEASURES, Engine, permutation_engine
from objalign.stats.permutation import group_permutations

__all__ = ["MEASURES", "bh_adjust", "calibrate_measures", "calibrated", "calibration_summary", "permutation_engine"]


# ------------------------------------------------------------------------------------------ validation
def check_alpha(alpha) -> float:
    """``alpha`` as a float in ``(0, 1)``, or one clear error naming the value."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ObjalignError(f"alpha={alpha!r} must be a number in (0, 1), e.g. 0.05") from None
    if not 0 < a < 1:
        raise ObjalignError(f"alpha={alpha!r} is outside (0, 1): pass a significance level such as 0.05")
    return a


def _check_count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ObjalignError(f"{name}={value!r} must be a positive integer, e.g. 1000")
    return int(value)


def calibration_summary(score: float, null: np.ndarray, alpha: float, s_max: float = 1.0) -> dict:
    """Threshold, p-value and calibrated score of an observed ``score`` against its permutation ``null`` ``(K,)``."""
    alpha = check_alpha(alpha)
    null = np.asarray(null, dtype=np.float64)
    K = null.size
    pooled = np.sort(np.concatenate([[score], null]))
    rank = min(max(math.ceil((1 - alpha) * (K + 1) - 1e-9), 1), K + 1)  # 1-based order statistic
    tau = float(pooled[rank - 1])
    p = (1 + int(np.count_nonzero(null >= score))) / (K + 1)
    cal = max((score - tau) / (s_max - tau), 0.0) if s_max > tau else 0.0
    return {"score": float(score), "threshold": tau, "pvalue": float(p), "calibrated": float(cal),
            "null_mean": float(null.mean()) if K else float("nan"), "n_permutations": int(K), "alpha": alpha}


def calibrated(measure, X, Y, groups=None, n_permutations: int = 1000, alpha: float = 0.05, seed=0,
               cache: dict | None = None, **options) -> dict:
    """A similarity measure with its permutation threshold, p-value and calibrated score.

    Parameters
    ----------
    measure : str or callable
        A measure ID of :func:`objalign.measures.list` (looked up in :mod:`objalign.measures.registry`) with its
        keyword ``options``: the IDs of :data:`MEASURES` (``"cka_linear"``, ``"cka_linear_unbiased"``,
        ``"cka_rbf"``, ``"mutual_knn"``, ``"cknna"``, ``"svcca"``) use their fast permutation engine (options ``k``,
        ``dim``, ``sigma``), any other ID (``"cka_rbf_unbiased"``) re-evaluates its registered callable per
        permutation (options: its ``options``). Or a callable ``f(X, Y, **options) -> float`` (re-evaluated per
        permutation; pass ``s_max=`` if its maximum is not 1).
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
        Paired features (row ``i`` of both describes sample ``i``).
    groups : array-like of shape (n_samples,), optional
        Exchangeable units (image ids): permutations move whole groups as blocks. None: single rows are exchanged
        (e.g. categories, for category-level measures).
    n_permutations : int, default 1000
        ``K``, the number of permutations.
    alpha : float in (0, 1), default 0.05
        Level of the threshold.
    seed : int, default 0
    cache : dict, optional
        Shared by calls on the same ``X`` (:func:`permutation_engine`): the engine's precomputations of ``X`` and
        the permutations are reused; the result is the same with or without it.

    Returns
    -------
    dict
        ``score`` (observed), ``threshold`` (tau), ``pvalue``, ``calibrated``, ``null`` (ndarray ``(K,)``),
        ``null_mean``, ``n_permutations``, ``alpha``, ``measure`` (its name) and ``scheme``
        (``"image-blocks"`` or ``"rows"``).

    Raises
    ------
    ObjalignError
        An unknown ID (with the closest one), bad options, inputs, ``groups``, ``n_permutations`` or ``alpha``.

    Examples
    --------
    >>> import numpy as np
    >>> from objalign import measures
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 8))
    >>> Y = X[:, :4] + 0.5 * rng.normal(size=(60, 4))
    >>> r = measures.calibrated("mutual_knn", X, Y, n_permutations=99, k=5)
    >>> round(r["score"], 3), round(r["threshold"], 3), r["pvalue"], round(r["calibrated"], 3)
    (0.267, 0.113, 0.01, 0.173)
    >>> r["measure"], r["scheme"]
    ('mutual_knn', 'rows')
    """
    alpha = check_alpha(alpha)
    K = _check_count(n_permutations, "n_permutations")
    return _calibrated(permutation_engine(measure, X, Y, cache, **options), groups, K, alpha, seed, cache)


def _calibrated(engine: Engine, groups, K: int, alpha: float, seed, cache: dict | None) -> dict:
    """:func:`calibrated` of a built engine."""

    n = engine.n
    if groups is not None and len(np.asarray(groups)) != n:
        raise ObjalignError(f"groups has {len(np.asarray(groups))} labels for {n} samples: pass one image id per row")
    def draw():
        return group_permutations(n if groups is None else groups, K, seed=seed)

    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):  # a fixed seed: the same permutations
        units = np.arange(n) if groups is None else np.asarray(groups)
        perms = side_of(cache, "groups", units).get(("permutations", groups is None, K, int(seed)), draw)
    else:  # a Generator (or None) draws new ones on every call
        perms = draw()
    score = engine.score()
    null = engine.scores(perms)
    out = calibration_summary(score, null, alpha, engine.s_max)
    return {**out, "null": null, "measure": engine.name, "scheme": "rows" if groups is None else "image-blocks"}


def bh_adjust(pvalues) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values ``(m,)``: ``min_{j: p_j >= p_i} min(1, m p_j / rank_j)``."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ObjalignError(f"pvalues must be 1-D, got shape {p.shape}")
    if p.size and (not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1):
        raise ObjalignError("pvalues must be finite numbers in [0, 1]")
    m = p.size
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def calibrate_measures(measures: dict[str, tuple], X, Y, groups=None, n_permutations: int = 1000,
                       alpha: float = 0.05, seed=0, cache: dict | None = None,
                       engines: dict | None = None) -> dict[str, dict]:
    """:func:`calibrated` for several measures on one pairing (one set of permutations), BH-adjusted together.

    Parameters
    ----------
    measures : dict
        Result name -> ``(measure, options)``, e.g. ``{"mutual_knn": ("mutual_knn", {"k": 10})}``.
    X, Y, groups, n_permutations, alpha, seed
        As in :func:`calibrated`.
    cache : dict, optional
        As in :func:`calibrated`; without one, the measures still share one cache (what they compute from ``X``
        or ``Y`` alone, and the permutations) within this call.
    engines : dict, optional
        Result name -> that measure's engine on ``(X, Y)``, already built by the caller with ``cache``
        (:func:`permutation_engine`): used instead of building it again (the same result).

    Returns
    -------
    dict
        Result name -> :func:`calibrated`'s dict without ``null``, plus ``pvalue_bh`` (adjusted over the measures
        that could be computed) or ``error`` (the measure's message) for a measure that could not be computed.
    """
    out: dict[str, dict] = {}
    cache = {} if cache is None else cache
    for name, (measure, options) in measures.items():
        try:
            if engines is not None and name in engines:
                r = _calibrated(engines[name], groups, _check_count(n_permutations, "n_permutations"),
                                check_alpha(alpha), seed, cache)
            else:
                r = calibrated(measure, X, Y, groups, n_permutations, alpha, seed, cache, **options)
        except ObjalignError as exc:
            out[name] = {"error": str(exc)}
            continue
        r.pop("null")
        out[name] = r
    done = [k for k, v in out.items() if "pvalue" in v]
    for k, q in zip(done, bh_adjust([out[k]["pvalue"] for k in done])):
        out[k]["pvalue_bh"] = float(q)
    return out
