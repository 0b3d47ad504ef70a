"""Bootstrap confidence intervals for every figure of a result row, resampling images.

All figures of a row (R² included, which is not a mean over objects) are computed on the *same* resamples:
each resample draws the test images with replacement (objects of one image stay together) and is
represented by per-object weights ``w`` (how often the object's image was drawn). Each figure is then a
weighted statistic:

- means (cosine, residual, top-k indicators, ranks): ``sum(w v) / sum(w)``;
- R²: per text dimension ``SS_res = sum(w (pred - true)^2)`` and ``SS_tot = sum(w (true - mean_w(true))^2)``
  from weighted sums, then uniform (over the dimensions that vary, see
  :func:`objalign.evaluate.metrics.r2_uniform`) or variance-weighted averaging;
- the median residual: the median of the resampled multiset (the mean of the two middle values for an
  even count), from one sort and cumulative weights.

The interval is the percentile interval (Efron & Tibshirani 1993, ch. 13). It need not contain the estimate
when the statistic is biased under resampling: the mean predictor's R² is ``-n (mean(true) - c)^2 / SS_tot``
per dimension, and a resample's mean moves away from ``c`` on average, so its interval lies below the estimate.
The resample-count matrix is drawn in chunks, so memory stays bounded for large test sets.
"""

from __future__ import annotations

import functools

import numpy as np

from ..errors import ObjalignError
from .metrics import CONSTANT_DIM_RTOL, FIGURES, UNSEEN_FIGURES

_CHUNK_ELEMENTS = 2_000_000


def resample_counts(n_groups: int, n_resamples: int, seed=0) -> np.ndarray:
    """Group draw counts of ``n_resamples`` bootstrap resamples.

    Returns
    -------
    ndarray of shape (n_resamples, n_groups), int
        Row ``b``: how often each group is drawn when ``n_groups`` groups are drawn uniformly with
        replacement (each row sums to ``n_groups``).
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ObjalignError(f"n_resamples must be a positive integer (e.g. 1000), got {n_resamples!r}")
    if n_groups < 1:
        raise ObjalignError("a bootstrap needs at least one group (image)")
    return np.concatenate(list(_iter_counts(n_groups, int(n_resamples), seed, int(n_resamples))))


def _iter_counts(n_groups: int, n_resamples: int, seed, chunk: int):
    """:func:`resample_counts` in consecutive blocks of at most ``chunk`` rows (the same numbers)."""
    rng = np.random.default_rng(seed)
    p = np.full(n_groups, 1.0 / n_groups)
    for start in range(0, n_resamples, chunk):
        yield rng.multinomial(n_groups, p, size=min(chunk, n_resamples - start))


def _counts(n_groups: int, n_resamples: int, seed, chunk: int):
    """:func:`_iter_counts`' blocks; small ones (up to ``_CHUNK_ELEMENTS`` integers) are kept for the next rows
    on the same test images (every method and target set of a protocol draws the same resamples)."""
    if n_resamples * n_groups > _CHUNK_ELEMENTS or not isinstance(seed, (int, np.integer)):
        return _iter_counts(n_groups, n_resamples, seed, chunk)
    return _kept_counts(n_groups, n_resamples, int(seed), chunk)


@functools.lru_cache(maxsize=4)
def _kept_counts(n_groups: int, n_resamples: int, seed: int, chunk: int) -> tuple[np.ndarray, ...]:
    blocks = tuple(_iter_counts(n_groups, n_resamples, seed, chunk))
    for b in blocks:
        b.setflags(write=False)  # shared between calls
    return blocks


def _weighted_median(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Median of each resampled multiset: ``values`` (n,), integer weights ``w`` (B, n) -> (B,)."""
    order = np.argsort(values, kind="stable")
    v = values[order]
    cw = np.cumsum(w[:, order], axis=1)  # (B, n)
    total = cw[:, -1]
    lo_pos = (total - 1) // 2  # 0-based positions of the middle element(s) in the sorted multiset
    hi_pos = total // 2
    lo = np.sum(cw <= lo_pos[:, None], axis=1)  # index of the first sorted value whose run covers lo_pos
    hi = np.sum(cw <= hi_pos[:, None], axis=1)
    return 0.5 * (v[lo] + v[hi])


def _r2_from_sums(ss_res: np.ndarray, ss_tot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Uniform and variance-weighted R² from per-dimension sums ``(B, q)`` -> two ``(B,)`` arrays.

    Constant dimensions are left out of the uniform average as in
    :func:`objalign.evaluate.metrics.r2_uniform`.
    """
    scale = np.maximum(ss_tot.max(axis=1, keepdims=True), 1e-300)
    live = ss_tot > CONSTANT_DIM_RTOL * scale
    n_live = live.sum(axis=1)
    tot, res = np.sum(np.where(live, ss_tot, 0.0), axis=1), np.sum(np.where(live, ss_res, 0.0), axis=1)
    exact = np.where(ss_res.sum(axis=1) <= 0, 1.0, 0.0)  # all dimensions constant: 1 for an exact prediction, else 0
    with np.errstate(divide="ignore", invalid="ignore"):
        uniform = np.where(n_live > 0, np.sum(np.where(live, 1.0 - ss_res / ss_tot, 0.0), axis=1) / n_live, exact)
        weighted = np.where(n_live > 0, 1.0 - res / tot, exact)
    return uniform, weighted


def figures_for_weights(pred: np.ndarray, true: np.ndarray, inst: dict[str, np.ndarray],
                        weights: np.ndarray, categories: tuple | None = None,
                        group_codes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every figure of a row on weighted resamples.

    Parameters
    ----------
    pred, true : (n, q)
        Predicted and true text embeddings of the test objects.
    inst : dict of (n,) arrays
        :func:`objalign.evaluate.metrics.per_instance` output for them.
    weights : (B, n) non-negative integers
        How often each object occurs in each resample.
    categories : (labels (n,), class_emb (c, q)), optional
        When ``true`` is ``class_emb[labels]``: its weighted sums then come from per-category weights
        (``(B, c)`` times ``(c, q)`` instead of ``(B, n)`` times ``(n, q)``).
    group_codes : (n,) int, optional
        With it ``weights`` are (B, n_groups) group draw counts and object ``i`` weighs
        ``weights[:, group_codes[i]]``: per-object values are summed per group first, so every weighted sum is a
        (B, n_groups) product.

    Returns
    -------
    dict figure -> (B,) array
        :data:`~objalign.evaluate.metrics.FIGURES` (and the ``*_unseen`` ones when ``inst`` has ``rank_unseen``).
    """
    w = np.asarray(weights, dtype=np.float64)
    if group_codes is None:
        def wsum(a):  # sum over objects of each resample's weights times a (n, k)
            return w @ a
    else:
        from scipy import sparse

        codes = np.asarray(group_codes)
        per_group = sparse.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))),
                                      shape=(w.shape[1], len(codes)))

        def wsum(a):
            return w @ (per_group @ a)

        weights = weights[:, codes]
    W = wsum(np.ones((len(pred), 1)))[:, 0]
    if categories is None:
        yc = true - true.mean(axis=0)  # shift-invariant; keeps the weighted sums well conditioned
        s_y, s_y2 = wsum(yc), wsum(yc ** 2)
    else:
        labels, E = np.asarray(categories[0]), np.asarray(categories[1], dtype=np.float64)
        cnt = np.bincount(labels, minlength=len(E)).astype(np.float64)
        Ec = E - cnt @ E / max(cnt.sum(), 1.0)
        onehot = np.zeros((len(labels), len(E)))
        onehot[np.arange(len(labels)), labels] = 1.0
        wc = wsum(onehot)  # per-category resample weights (B, c): integer sums, exact
        s_y, s_y2 = wc @ Ec, wc @ (Ec ** 2)
    ss_tot = s_y2 - s_y ** 2 / W[:, None]
    ss_res = wsum((pred - true) ** 2)
    r2, r2w = _r2_from_sums(ss_res, ss_tot)
    cols = [inst["cosine"], inst["residual_l2"], inst["rank"] <= 1, inst["rank"] <= 5, inst["rank"]]
    names = ["cosine_mean", "residual_mean", "top1", "top5", "mean_rank"]
    if "rank_unseen" in inst:
        cols += [inst["rank_unseen"] <= 1, inst["rank_unseen"] <= 5, inst["rank_unseen"]]
        names += ["top1_unseen", "top5_unseen", "mean_rank_unseen"]
    means = wsum(np.column_stack(cols).astype(np.float64)) / W[:, None]
    out = {"r2": r2, "r2_variance_weighted": r2w}
    out.update({k: means[:, j] for j, k in enumerate(names)})
    out["residual_median"] = _weighted_median(inst["residual_l2"], weights)
    return out


def bootstrap_figures(pred: np.ndarray, true: np.ndarray, inst: dict[str, np.ndarray], groups: np.ndarray,
                      n_resamples: int = 1000, confidence: float = 0.95, seed=0,
                      categories: tuple | None = None) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of every figure, resampling groups (images) with replacement.

    Parameters
    ----------
    pred, true : (n, q)
        Predicted and true text embeddings of the test objects.
    inst : dict of (n,) arrays
        :func:`objalign.evaluate.metrics.per_instance` output.
    groups : (n,)
        Image id of each object; an image's objects are drawn together.
    n_resamples : int, default 1000
    confidence : float, default 0.95
    seed : int
    categories : (labels, class_emb), optional
        ``true`` is ``class_emb[labels]`` (:func:`figures_for_weights`).

    Returns
    -------
    dict figure -> [low, high]
    """
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise ObjalignError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence!r}")
    groups = np.asarray(groups)
    if groups.shape != (len(pred),):
        raise ObjalignError(f"groups has shape {groups.shape}; expected one image id per test object ({len(pred)},)")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ObjalignError(f"n_resamples must be a positive integer (e.g. 1000), got {n_resamples!r}")
    _, codes = np.unique(groups, return_inverse=True)
    codes = codes.ravel()
    n_groups = int(codes.max()) + 1
    chunk = max(1, _CHUNK_ELEMENTS // max(len(pred), n_groups, 1))  # bounds the (chunk, n) weight matrix
    parts: dict[str, list[np.ndarray]] = {}
    from .nulls import single_threaded_blas

    with single_threaded_blas():  # (B, n_groups) products: a thread team only adds synchronisation
        for counts in _counts(n_groups, int(n_resamples), seed, chunk):
            for k, v in figures_for_weights(pred, true, inst, counts, categories, group_codes=codes).items():
                parts.setdefault(k, []).append(v)
    q = [(1 - confidence) / 2, (1 + confidence) / 2]
    order = [f for f in FIGURES + UNSEEN_FIGURES if f in parts]
    bounds = np.quantile(np.stack([np.concatenate(parts[k]) for k in order]), q, axis=1)  # (2, figures): one call
    return {k: [float(bounds[0, j]), float(bounds[1, j])] for j, k in enumerate(order)}
