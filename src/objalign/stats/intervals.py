"""Bootstrap confidence intervals for every figure of a result row, resampling images.

All figures of a row (R² included, which is not a mean over objects) are computed on the *same* resamples:
each resample draws the test images with replacement (objects of one image stay together) and is
represented by per-object weights ``w`` (how often the object's image was drawn). Each figure is then a
weighted statistic:

- means (cosine, residual, top-k indicators, ranks): ``sum(w v) / sum(w)``;
- R²: per text dimension ``SS_res = sum(w (pred - true)^2)`` and ``SS_tot = sum(w (true - mean_w(true))^2)``
  from weighted sums, then uniform (over the dimensions that vary, see
  :func:`objalign.stats.metrics.r2_uniform`) or variance-weighted averaging;
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

from objalign.errors import ObjalignError
from objalign.maps.threads import single_threaded_blas
from objalign.stats.metrics import ALL_FIGURES, CONSTANT_DIM_RTOL, instance_values

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


def weighted_median(values: np.ndarray, w: np.ndarray, codes: np.ndarray | None = None) -> np.ndarray:
    """Median of each resampled multiset: ``values`` (n,), integer weights ``w`` (B, n) -> (B,); with ``codes``
    (n,), ``w`` holds (B, n_groups) group counts and object ``i`` weighs ``w[:, codes[i]]``.

    The values are sorted once and cut into blocks of about sqrt(n); each resample's weight per block is one
    (B, m) x (m, blocks) product, and cumulative weights are taken only inside the block holding the middle
    position: O(B sqrt(n)) work past the product instead of a (B, n) cumulative sum. The positions found are
    exact (integer sums), so the median is the one of the explicit resample.
    """
    n = len(values)
    order = np.argsort(values, kind="stable")
    v = values[order]
    col = order if codes is None else np.asarray(codes)[order]  # column of w weighing each sorted value
    B, m = w.shape
    size = max(1, int(np.sqrt(n)))
    n_blocks = -(-n // size)
    block = np.arange(n) // size
    if m * n_blocks <= _CHUNK_ELEMENTS:
        members = np.bincount(col * n_blocks + block, minlength=m * n_blocks).reshape(m, n_blocks).astype(np.float64)
        block_w = np.asarray(w, dtype=np.float64) @ members  # (B, blocks): integer sums, exact
    else:
        from scipy import sparse

        members = sparse.csr_matrix((np.ones(n), (block, col)), shape=(n_blocks, m))
        block_w = np.asarray(members @ np.asarray(w, dtype=np.float64).T).T
    cum = np.concatenate([np.zeros((B, 1)), np.cumsum(block_w, axis=1)], axis=1)  # (B, blocks + 1)
    total = cum[:, -1]
    padded = np.concatenate([col, np.zeros(n_blocks * size - n, dtype=col.dtype)]).reshape(n_blocks, size)
    real = (np.arange(n_blocks * size) < n).reshape(n_blocks, size)
    rows = np.arange(B)[:, None]
    picked = []
    for pos in ((total - 1) // 2, total // 2):  # 0-based positions of the middle element(s) in the sorted multiset
        k = np.sum(cum[:, 1:] <= pos[:, None], axis=1)  # whole blocks before the position
        within = np.cumsum(w[rows, padded[k]] * real[k], axis=1) + cum[np.arange(B), k][:, None]
        # the first sorted value whose run covers the position: the count of cumulative weights <= it
        picked.append(v[np.minimum(k * size + np.sum(within <= pos[:, None], axis=1), n - 1)])
    return 0.5 * (picked[0] + picked[1])


def _r2_from_sums(ss_res: np.ndarray, ss_tot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Uniform and variance-weighted R² from per-dimension sums ``(B, q)`` -> two ``(B,)`` arrays.

    Constant dimensions are left out of the uniform average as in
    :func:`objalign.stats.metrics.r2_uniform`.
    """
    return _r2_from_totals(ss_res, _totals(ss_tot))


def _totals(ss_tot: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What :func:`_r2_from_sums` takes from the total sums ``(B, q)`` alone (the same for every prediction of the
    targets): ``(ss_tot, live (B, q) mask of the dimensions that vary, their count (B,), their total (B,))``."""
    scale = np.maximum(ss_tot.max(axis=1, keepdims=True), 1e-300)
    live = ss_tot > CONSTANT_DIM_RTOL * scale
    return ss_tot, live, live.sum(axis=1), np.sum(np.where(live, ss_tot, 0.0), axis=1)


def _r2_from_totals(ss_res: np.ndarray, totals: tuple) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_r2_from_sums` with the targets' side from :func:`_totals`."""
    ss_tot, live, n_live, tot = totals
    res = np.sum(np.where(live, ss_res, 0.0), axis=1)
    exact = np.where(ss_res.sum(axis=1) <= 0, 1.0, 0.0)  # all dimensions constant: 1 for an exact prediction, else 0
    with np.errstate(divide="ignore", invalid="ignore"):
        uniform = np.where(n_live > 0, np.sum(np.where(live, 1.0 - ss_res / ss_tot, 0.0), axis=1) / n_live, exact)
        weighted = np.where(n_live > 0, 1.0 - res / tot, exact)
    return uniform, weighted


class _Draws:
    """One block of resamples and the weighted sums over it that depend on neither predictions nor targets.

    Parameters
    ----------
    counts : (B, m) non-negative integers
        Draw counts: of objects (``codes`` None, m = n) or of groups (object ``i`` weighs ``counts[:, codes[i]]``;
        per-object values are then summed per group first, so every weighted sum is a (B, m) product).
    codes : (n,) int or None
    n : number of objects
    labels : (n,) int, optional
        Category row of each object: adds the per-category resample weights ``wc`` (B, n_categories) and the
        test set's category counts ``label_counts`` (n_categories,).
    n_categories : int
    per_group : (m, n) sparse group-sum matrix of ``codes`` (built when not given)
    """

    def __init__(self, counts: np.ndarray, codes: np.ndarray | None, n: int, labels: np.ndarray | None = None,
                 n_categories: int = 0, per_group=None):
        self.counts, self.codes = counts, codes
        self.w = np.asarray(counts, dtype=np.float64)
        if codes is not None and per_group is None:
            per_group = _group_sum_matrix(codes, self.w.shape[1])
        self.per_group = per_group
        self.W = self.wsum(np.ones((n, 1)))[:, 0]  # objects in each resample
        self.wc = self.label_counts = None
        self.totals: list[tuple[np.ndarray, tuple]] = []  # (E, its total_squares)
        if labels is not None:
            self.label_counts = np.bincount(labels, minlength=n_categories).astype(np.float64)
            onehot = np.zeros((n, n_categories))
            onehot[np.arange(n), labels] = 1.0
            self.wc = self.wsum(onehot)  # integer sums, exact

    def total_squares(self, E: np.ndarray) -> tuple:
        """Per resample and text dimension, the total sums of squares of the targets ``E[labels]`` (B, q), from
        the per-category weights, as :func:`_totals`; kept for the next call with the same ``E`` (compared bit for
        bit: every method of a target set)."""
        for held, totals in self.totals:
            if held.shape == E.shape and np.array_equal(held[0], E[0]) and np.array_equal(held, E):
                return totals
        cnt = self.label_counts
        Ec = E - cnt @ E / max(cnt.sum(), 1.0)  # shift-invariant; keeps the weighted sums well conditioned
        s_y, s_y2 = self.wc @ Ec, self.wc @ (Ec ** 2)
        totals = _totals(s_y2 - s_y ** 2 / self.W[:, None])
        if totals[0].size * (len(self.totals) + 1) <= 4 * _CHUNK_ELEMENTS:  # kept up to 64 MB
            self.totals.append((E.copy(), totals))
        return totals

    def wsum(self, a: np.ndarray) -> np.ndarray:
        """Sum over objects of each resample's weights times ``a`` (n, k) -> (B, k)."""
        return self.w @ a if self.per_group is None else self.w @ (self.per_group @ a)


def _group_sum_matrix(codes: np.ndarray, n_groups: int):
    """Sparse (n_groups, n) matrix summing per-object rows per group."""
    from scipy import sparse

    return sparse.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(n_groups, len(codes)))


def _figures(draws: _Draws, pred: np.ndarray, true: np.ndarray, inst: dict[str, np.ndarray],
             E: np.ndarray | None) -> dict[str, np.ndarray]:
    """:func:`figures_for_weights` on one block of draws; ``E`` (c, q) float64 when ``true`` is ``E[labels]``
    (``draws`` then carries the labels' sums)."""
    W, wsum = draws.W, draws.wsum
    if E is None:
        yc = true - true.mean(axis=0)  # shift-invariant; keeps the weighted sums well conditioned
        s_y, s_y2 = wsum(yc), wsum(yc ** 2)
        totals = _totals(s_y2 - s_y ** 2 / W[:, None])
    else:
        totals = draws.total_squares(E)
    sq = pred - true
    r2, r2w = _r2_from_totals(wsum(np.square(sq, out=sq)), totals)
    out = {"r2": r2, "r2_variance_weighted": r2w, **_weighted_means(inst, wsum, W)}
    out["residual_median"] = weighted_median(inst["residual_l2"], draws.counts, draws.codes)
    return out


def _weighted_means(inst: dict[str, np.ndarray], wsum, W: np.ndarray) -> dict[str, np.ndarray]:
    """The per-object means of a row (cosine, residual, top-k, ranks) on every resample: ``wsum`` sums (n, k)
    columns with each resample's weights, ``W`` (B,) the objects per resample -> figure -> (B,)."""
    cols = instance_values(inst)  # MEAN_FIGURES (those inst has), in order
    names = list(cols)
    means = wsum(np.column_stack(list(cols.values())).astype(np.float64)) / W[:, None]
    return {k: means[:, j] for j, k in enumerate(names)}


def figures_for_weights(pred: np.ndarray, true: np.ndarray, inst: dict[str, np.ndarray],
                        weights: np.ndarray, categories: tuple | None = None,
                        group_codes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every figure of a row on weighted resamples.

    Parameters
    ----------
    pred, true : (n, q)
        Predicted and true text embeddings of the test objects.
    inst : dict of (n,) arrays
        :func:`objalign.stats.metrics.per_instance` output for them.
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
        :data:`~objalign.stats.metrics.FIGURES` (and the ``*_unseen`` ones when ``inst`` has ``rank_unseen``).
    """
    codes = None if group_codes is None else np.asarray(group_codes)
    if categories is None:
        return _figures(_Draws(weights, codes, len(pred)), pred, true, inst, None)
    labels, E = np.asarray(categories[0]), np.asarray(categories[1], dtype=np.float64)
    return _figures(_Draws(weights, codes, len(pred), labels, len(E)), pred, true, inst, E)


class _Resamples:
    """The draws of one bootstrap (test images, labels, resample count, seed), block by block, with the sums
    :class:`_Draws` keeps; kept for the next call on the same inputs when small (:func:`bootstrap_figures`'
    ``cache``)."""

    def __init__(self, groups: np.ndarray, labels: np.ndarray | None, n_categories: int, n_resamples: int, seed):
        self.groups, self.labels, self.n_categories = groups, labels, n_categories
        self.n_resamples, self.seed = n_resamples, seed
        _, codes = np.unique(groups, return_inverse=True)
        self.codes = codes.ravel()
        self.n_groups = int(self.codes.max()) + 1
        self.chunk = max(1, _CHUNK_ELEMENTS // max(len(groups), self.n_groups, 1))  # bounds (chunk, n) arrays
        self.per_group = _group_sum_matrix(self.codes, self.n_groups)
        # blocks are kept only when their count matrix is: at most _CHUNK_ELEMENTS draws and category weights
        small = n_resamples * (self.n_groups + n_categories) <= _CHUNK_ELEMENTS and isinstance(seed, (int, np.integer))
        self.kept = [] if small else None
        self.complete = False

    def matches(self, groups, labels, n_categories, n_resamples, seed) -> bool:
        """Whether these are the draws of a call with these arguments (compared bit for bit)."""
        return (self.kept is not None and isinstance(seed, (int, np.integer)) and int(seed) == int(self.seed)
                and n_resamples == self.n_resamples and n_categories == self.n_categories
                and np.array_equal(groups, self.groups)
                and (labels is None) == (self.labels is None)
                and (labels is None or np.array_equal(labels, self.labels)))

    def blocks(self):
        """:class:`_Draws` of every block of resamples, in order."""
        if self.complete:
            yield from self.kept
            return
        made = []
        for counts in _counts(self.n_groups, self.n_resamples, self.seed, self.chunk):
            draws = _Draws(counts, self.codes, len(self.codes), self.labels, self.n_categories, self.per_group)
            if self.kept is not None:
                made.append(draws)
            yield draws
        if self.kept is not None:  # every block drawn: the next call reads them
            self.kept, self.complete = made, True


def _resamples(cache: dict | None, groups, labels, n_categories: int, n_resamples: int, seed) -> _Resamples:
    """The :class:`_Resamples` for these arguments: ``cache["bootstrap"]`` when it matches, else a new one (kept
    there when it will keep its blocks)."""
    held = None if cache is None else cache.get("bootstrap")
    if held is not None and held.matches(groups, labels, n_categories, n_resamples, seed):
        return held
    fresh = _Resamples(np.array(groups), None if labels is None else np.array(labels), n_categories,
                       n_resamples, seed)
    if cache is not None and fresh.kept is not None:
        cache["bootstrap"] = fresh
    return fresh


def bootstrap_figures(pred: np.ndarray, true: np.ndarray, inst: dict[str, np.ndarray], groups: np.ndarray,
                      n_resamples: int = 1000, confidence: float = 0.95, seed=0,
                      categories: tuple | None = None, cache: dict | None = None) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of every figure, resampling groups (images) with replacement.

    Parameters
    ----------
    pred, true : (n, q)
        Predicted and true text embeddings of the test objects.
    inst : dict of (n,) arrays
        :func:`objalign.stats.metrics.per_instance` output.
    groups : (n,)
        Image id of each object; an image's objects are drawn together.
    n_resamples : int, default 1000
    confidence : float, default 0.95
    seed : int
    categories : (labels, class_emb), optional
        ``true`` is ``class_emb[labels]`` (:func:`figures_for_weights`).
    cache : dict, optional
        Shared by the calls on the same test objects (``groups``, the labels of ``categories``, ``n_resamples``,
        ``seed``): every method and target set of a protocol. The image codes, the resample counts and what is
        summed from them alone (objects and categories per resample) are computed once; it is checked against
        the arguments, bit for bit, and the intervals are identical with or without it. Kept only while the count
        matrix is small (``n_resamples * (images + categories) <= 2,000,000``).

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
    labels = E = None
    if categories is not None:
        labels, E = np.asarray(categories[0]), np.asarray(categories[1], dtype=np.float64)
    draws = _resamples(cache, groups, labels, 0 if E is None else len(E), int(n_resamples), seed)
    parts: dict[str, list[np.ndarray]] = {}

    with single_threaded_blas():  # (B, n_groups) products: a thread team only adds synchronisation
        for block in draws.blocks():
            for k, v in _figures(block, pred, true, inst, E).items():
                parts.setdefault(k, []).append(v)
    q = [(1 - confidence) / 2, (1 + confidence) / 2]
    order = [f for f in ALL_FIGURES if f in parts]
    bounds = np.quantile(np.stack([np.concatenate(parts[k]) for k in order]), q, axis=1)  # (2, figures): one call
    return {k: [float(bounds[0, j]), float(bounds[1, j])] for j, k in enumerate(order)}
