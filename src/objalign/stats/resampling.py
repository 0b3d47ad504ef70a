"""Statistics for evaluation: grouped bootstrap intervals and permutation nulls.

- :func:`bootstrap_ci`: percentile bootstrap confidence interval that resamples **groups** (images)
  with replacement, vectorised through per-group sums and a resample-count matrix.
- :func:`permutation_pvalue`: the ``(1 + #{null >= observed}) / (1 + B)`` p-value.
- :func:`group_permutations`: label permutations that move whole images (blocks) or single rows.
- :func:`unique_rows`: the distinct rows of a matrix (text targets repeat one row per category).
- :func:`ridge_permutation_null`: a permutation null for a closed-form ridge map, re-fitted for each
  permutation of the training pairing at the cost of one matrix product (the ridge hat matrix does
  not depend on the targets).

Objects from the same image are not independent (shared background, co-occurring categories), so
resampling and permuting act on images as units when ``groups`` (image ids) are given.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from objalign.errors import ObjalignError
from objalign.maps.threads import single_threaded_blas

__all__ = [
    "BootstrapResult",
    "PermutationNullResult",
    "bootstrap_ci",
    "group_permutations",
    "permutation_pvalue",
    "ridge_permutation_null",
    "unique_rows",
]

_ALTERNATIVES = ("greater", "less", "two-sided")
_CHUNK_ELEMENTS = 4_000_000  # resample-matrix entries generated at once (bounds memory, ~32 MB)


# ----------------------------------------------------------------------------------------- helpers
def _check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ObjalignError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _group_codes(groups, n: int | None, name: str = "groups") -> np.ndarray:
    """Integer codes ``(n,)`` in ``0..n_groups-1`` for arbitrary group labels ``(n,)``."""
    g = np.asarray(groups)
    if g.ndim != 1:
        raise ObjalignError(
            f"{name} must be 1-D with one label (e.g. image id) per instance, got shape {g.shape}"
        )
    if n is not None and g.shape[0] != n:
        raise ObjalignError(
            f"{name} has {g.shape[0]} labels but there are {n} instances: pass one label per instance"
        )
    if g.shape[0] == 0:
        raise ObjalignError(f"{name} is empty: pass at least one instance")
    if g.dtype.kind == "f" and not np.all(np.isfinite(g)):
        raise ObjalignError(f"{name} contains NaN or infinite labels: use integer or string image ids")
    try:
        _, codes = np.unique(g, return_inverse=True)
    except TypeError as exc:
        raise ObjalignError(
            f"{name} labels must be mutually comparable (all integers or all strings): {exc}"
        ) from None
    return codes.ravel().astype(np.intp)


def unique_rows(A) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a finite matrix ``A`` ``(n, d)``: ``(first (u,), codes (n,))``, exactly what
    ``np.unique(A, axis=0, return_index=True, return_inverse=True)`` returns after the unique rows (rows in
    lexicographic numerical order, ``first`` the index of each one's first occurrence, ``A[first][codes] == A``).

    Faster for wide rows: rows are told apart by hashing their bytes (``-0.0`` made ``+0.0`` first, so equal numbers
    have equal bytes) and only the ``u`` distinct rows are sorted as numbers.
    """
    A = np.asarray(A)
    if A.ndim != 2 or A.shape[1] == 0 or A.dtype.kind not in "fiub":
        _, first, codes = np.unique(A, axis=0, return_index=True, return_inverse=True)
        return first, codes.ravel().astype(np.intp)
    B = np.ascontiguousarray(A + np.zeros((), A.dtype))  # -0.0 + 0.0 = +0.0
    buf, width = B.tobytes(), B.dtype.itemsize * B.shape[1]
    seen: dict[bytes, int] = {}
    occurrence = np.fromiter((seen.setdefault(buf[i * width:(i + 1) * width], i) for i in range(len(B))),
                             dtype=np.intp, count=len(B))  # each row's first occurrence
    first, codes = np.unique(occurrence, return_inverse=True)
    D = B[first]
    order = np.argsort(D[:, 0], kind="stable")
    if len(D) > 1 and np.any(D[order[1:], 0] == D[order[:-1], 0]):  # ties in column 0: sort by every column
        order = np.lexsort(D.T[::-1])
    label = np.empty(len(first), dtype=np.intp)
    label[order] = np.arange(len(first))
    return first[order], label[codes]


def _resample_counts(n_groups: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``(size, n_groups)`` counts: how often each group is drawn in ``n_groups`` draws with replacement."""
    draws = rng.integers(0, n_groups, size=(size, n_groups))
    draws += (np.arange(size) * n_groups)[:, None]
    return np.bincount(draws.ravel(), minlength=size * n_groups).reshape(size, n_groups)


def _iter_resample_counts(n_groups: int, n_resamples: int, seed):
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_resamples, _CHUNK_ELEMENTS // n_groups))
    done = 0
    while done < n_resamples:
        size = min(chunk, n_resamples - done)
        yield _resample_counts(n_groups, size, rng)
        done += size


# --------------------------------------------------------------------------------------- bootstrap
@dataclass(frozen=True)
class BootstrapResult:
    """A percentile bootstrap confidence interval.

    Attributes
    ----------
    estimate : float or ndarray of shape (n_metrics,)
        The statistic on the original data (the mean of the per-instance values).
    low, high : float or ndarray of shape (n_metrics,)
        The ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the bootstrap
        distribution.
    n_resamples : int
        Number of bootstrap resamples.
    confidence : float
        Nominal coverage, e.g. 0.95.
    n_groups : int
        Number of groups (images) that were resampled.
    """

    estimate: float | np.ndarray
    low: float | np.ndarray
    high: float | np.ndarray
    n_resamples: int
    confidence: float
    n_groups: int

    def as_dict(self) -> dict:
        """Plain-Python dictionary (lists for array fields), ready for JSON."""
        out = asdict(self)
        for key in ("estimate", "low", "high"):
            if isinstance(out[key], np.ndarray):
                out[key] = out[key].tolist()
        return out


def _as_scalar_or_array(a: np.ndarray, scalar: bool):
    return float(a[0]) if scalar else a


def bootstrap_ci(
    values_or_fn,
    groups=None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed=0,
) -> BootstrapResult:
    """Percentile bootstrap confidence interval that resamples groups (images) with replacement.

    Each resample draws ``n_groups`` groups with replacement, keeping every instance of a drawn
    group (as often as the group was drawn). For per-instance values the statistic is their mean,
    so a resample's value is ``sum_g w_g S_g / sum_g w_g c_g`` with per-group sums ``S_g``, counts
    ``c_g`` and draw counts ``w_g``: the whole bootstrap is one ``(n_resamples, n_groups)`` count
    matrix times the group sums (generated in chunks to bound memory), with no Python loop over
    resamples. The interval is the percentile interval (Efron & Tibshirani 1993, ch. 13).

    Parameters
    ----------
    values_or_fn : array-like of shape (n_instances,) or (n_instances, n_metrics), or callable
        Per-instance values of a metric whose value on a set is the mean (e.g. per-object top-1
        correctness, per-object cosine). Several metrics can be given as columns; they share the
        resamples. Or a callable ``fn(indices) -> float | ndarray`` evaluated on the instance
        indices of each resample (``indices`` is sorted, each instance repeated as often as its
        group was drawn; ``fn(np.arange(n_instances))`` is the estimate). Use it for statistics that
        are not means (e.g. CKA of the resampled set); it is called once per resample, so it is as
        slow as ``fn``.
    groups : array-like of shape (n_instances,), optional
        Group label (image id) of each instance; instances of one image are resampled together.
        None treats every instance as its own group (required for a callable).
    n_resamples : int, default 1000
        Number of bootstrap resamples.
    confidence : float, default 0.95
        Coverage of the interval, in ``(0, 1)``.
    seed : int or numpy.random.Generator or None, default 0
        Seed for the resampling; the same seed gives the same interval.

    Returns
    -------
    BootstrapResult
        ``estimate``, ``low``, ``high`` (floats for 1-D values or a scalar-valued ``fn``, arrays of
        shape ``(n_metrics,)`` otherwise), ``n_resamples``, ``confidence``, ``n_groups``.
    """
    n_resamples = _check_positive_int(n_resamples, "n_resamples")
    if isinstance(confidence, bool) or not (
        isinstance(confidence, (int, float, np.floating)) and 0 < confidence < 1
    ):
        raise ObjalignError(f"confidence must be a number in (0, 1), got {confidence!r}, e.g. 0.95")
    q = [(1 - confidence) / 2, (1 + confidence) / 2]

    if callable(values_or_fn):
        if groups is None:
            raise ObjalignError(
                "bootstrap_ci with a callable needs groups (one label per instance, e.g. image ids; "
                "np.arange(n) for independent instances) to know the instances"
            )
        codes = _group_codes(groups, None)
        n_groups = int(codes.max()) + 1
        n = codes.shape[0]
        raw = np.asarray(values_or_fn(np.arange(n)), dtype=np.float64)
        if raw.ndim > 1 or not np.all(np.isfinite(raw)):
            raise ObjalignError(
                f"fn(indices) must return a finite number or 1-D array, got {raw!r} on all instances"
            )
        scalar = raw.ndim == 0
        estimate = np.atleast_1d(raw)
        boots = np.empty((n_resamples, estimate.size))
        row = 0
        for counts in _iter_resample_counts(n_groups, n_resamples, seed):
            for w in counts:
                idx = np.repeat(np.arange(n), w[codes])
                boots[row] = np.atleast_1d(np.asarray(values_or_fn(idx), dtype=np.float64))
                row += 1
    else:
        try:
            v = np.asarray(values_or_fn, dtype=np.float64)
        except (TypeError, ValueError):
            raise ObjalignError(
                "values_or_fn must be numeric per-instance values (n_instances,) or "
                "(n_instances, n_metrics), or a callable fn(indices)"
            ) from None
        if v.ndim not in (1, 2) or v.shape[0] == 0:
            raise ObjalignError(
                f"values must have shape (n_instances,) or (n_instances, n_metrics) with "
                f"n_instances >= 1, got shape {v.shape}"
            )
        if not np.all(np.isfinite(v)):
            raise ObjalignError(
                f"values contain {int(np.count_nonzero(~np.isfinite(v)))} NaN or infinite entries: "
                f"drop or repair those instances first"
            )
        scalar = v.ndim == 1
        v2 = v.reshape(v.shape[0], -1)
        n = v2.shape[0]
        codes = _group_codes(groups, n) if groups is not None else np.arange(n, dtype=np.intp)
        n_groups = int(codes.max()) + 1
        totals = np.zeros((n_groups, v2.shape[1] + 1))  # per-group sums of each metric, then count
        np.add.at(totals, codes, np.column_stack([v2, np.ones(n)]))
        estimate = v2.mean(axis=0)
        parts = []
        for w in _iter_resample_counts(n_groups, n_resamples, seed):
            resampled = w.astype(np.float64) @ totals  # (chunk, n_metrics + 1)
            parts.append(resampled[:, :-1] / resampled[:, -1:])
        boots = np.concatenate(parts)

    if not np.all(np.isfinite(boots)):
        bad = int(np.count_nonzero(~np.all(np.isfinite(boots), axis=1)))
        raise ObjalignError(
            f"the statistic was NaN or infinite on {bad} of {n_resamples} resamples: make fn "
            f"defined on any resample (e.g. guard against a single distinct instance)"
        )
    low, high = np.quantile(boots, q, axis=0)
    return BootstrapResult(
        estimate=_as_scalar_or_array(estimate, scalar),
        low=_as_scalar_or_array(low, scalar),
        high=_as_scalar_or_array(high, scalar),
        n_resamples=n_resamples,
        confidence=float(confidence),
        n_groups=n_groups,
    )


# ------------------------------------------------------------------------------------- permutation
def permutation_pvalue(observed, null_values, alternative: str = "greater") -> float:
    """Monte Carlo permutation p-value with the ``+1`` rule (Phipson & Smyth 2010).

    ``"greater"``: ``(1 + #{null >= observed}) / (1 + B)``; ``"less"``: the same with ``<=``;
    ``"two-sided"``: ``min(1, 2 * min(p_greater, p_less))``. The ``+1`` counts the observed
    statistic as one member of the null, so the p-value is never 0 and the test is valid
    (its smallest value is ``1 / (B + 1)``).

    Parameters
    ----------
    observed : float
        The statistic on the real pairing.
    null_values : array-like of shape (B,)
        The statistic under ``B`` permutations.
    alternative : {"greater", "less", "two-sided"}, default "greater"
        Which direction counts as extreme.

    Returns
    -------
    float
        The p-value in ``[1 / (B + 1), 1]``.
    """
    if alternative not in _ALTERNATIVES:
        raise ObjalignError(
            f"alternative={alternative!r} is not supported: expected one of {list(_ALTERNATIVES)}"
        )
    try:
        obs = float(observed)
    except (TypeError, ValueError):
        raise ObjalignError(f"observed must be a single number, got {observed!r}") from None
    if not np.isfinite(obs):
        raise ObjalignError(f"observed statistic is {obs}; a p-value needs a finite statistic")
    null = np.asarray(null_values, dtype=np.float64)
    if null.ndim != 1 or null.size == 0:
        raise ObjalignError(
            f"null_values must be a non-empty 1-D array of permutation statistics, got shape {null.shape}"
        )
    if not np.all(np.isfinite(null)):
        raise ObjalignError(
            f"null_values contain {int(np.count_nonzero(~np.isfinite(null)))} NaN or infinite "
            f"entries: check the score function on permuted data"
        )
    b = null.size
    p_greater = (1 + np.count_nonzero(null >= obs)) / (1 + b)
    p_less = (1 + np.count_nonzero(null <= obs)) / (1 + b)
    if alternative == "greater":
        return float(p_greater)
    if alternative == "less":
        return float(p_less)
    return float(min(1.0, 2 * min(p_greater, p_less)))


def group_permutations(groups, n_permutations: int, seed=0) -> np.ndarray:
    """Random row permutations that move whole groups (images) as blocks.

    Groups of equal size exchange their blocks: for images ``g`` and ``h = sigma(g)`` with the same
    number of instances, the rows of ``g`` (in index order) receive the rows of ``h`` (in index
    order), where ``sigma`` is a uniform random permutation within each size class. Under the null
    of no vision-language relation this keeps each image's set of labels together (co-occurring
    categories stay co-occurring) while breaking its pairing with the image. An image whose size
    is unique keeps its own labels, which makes the test slightly conservative. With every group
    of size 1 (``groups=None``) this is a uniform permutation of all rows.

    Parameters
    ----------
    groups : array-like of shape (n_instances,) or int
        Group label (image id) of each instance, or an int ``n_instances`` for ungrouped rows.
    n_permutations : int
        Number of permutations ``B``.
    seed : int or numpy.random.Generator or None, default 0
        Random seed.

    Returns
    -------
    ndarray of shape (B, n_instances), dtype intp
        Row ``b`` is a permutation ``pi`` of ``0..n_instances-1``; the permuted targets are
        ``Y[pi]`` (instance ``i`` receives the target of instance ``pi[i]``).
    """
    n_permutations = _check_positive_int(n_permutations, "n_permutations")
    if isinstance(groups, (int, np.integer)) and not isinstance(groups, bool):
        codes = np.arange(_check_positive_int(groups, "n_instances"), dtype=np.intp)
    else:
        codes = _group_codes(groups, None)
    rng = np.random.default_rng(seed)
    n = codes.shape[0]
    order = np.argsort(codes, kind="stable")  # instances grouped, index order within a group
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = np.empty((n_permutations, n), dtype=np.intp)
    for size in np.unique(sizes):
        gids = np.flatnonzero(sizes == size)
        members = order[starts[gids][:, None] + np.arange(size)]  # (n_groups_of_size, size)
        if gids.size == 1:
            out[:, members.ravel()] = members.ravel()
            continue
        shuffled = rng.permuted(np.broadcast_to(np.arange(gids.size), (n_permutations, gids.size)), axis=1)
        out[:, members.ravel()] = members[shuffled].reshape(n_permutations, -1)
    return out


@dataclass(frozen=True)
class PermutationNullResult:
    """A permutation test of a fitted map's held-out score.

    Attributes
    ----------
    observed : float
        Score of the map fitted on the real training pairing.
    null : ndarray of shape (n_permutations,)
        Scores of maps fitted on permuted training pairings.
    pvalue : float
        :func:`permutation_pvalue` of ``observed`` against ``null``.
    n_permutations : int
        Number of permutations.
    alternative : str
        Direction of the test.
    scheme : str
        ``"rows"`` (instances permuted freely), ``"image-blocks"`` (see :func:`group_permutations`)
        or ``"given"`` (explicit permutations were passed).
    """

    observed: float
    null: np.ndarray
    pvalue: float
    n_permutations: int
    alternative: str
    scheme: str

    def as_dict(self) -> dict:
        """Plain-Python dictionary (the null as a list), ready for JSON."""
        out = asdict(self)
        out["null"] = self.null.tolist()
        return out


def _r2_variance_weighted(Y_true: np.ndarray, Y_pred: np.ndarray) -> float:
    """``1 - sum(residual^2) / sum((Y_true - mean)^2)`` over all outputs (sklearn's variance_weighted)."""
    ss_res = np.sum((Y_true - Y_pred) ** 2)
    ss_tot = np.sum((Y_true - Y_true.mean(axis=0)) ** 2)
    return float(1.0 - ss_res / ss_tot)




def _matrix(a, name: str, ndim: int = 2) -> np.ndarray:
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise ObjalignError(f"{name} must be a numeric array") from None
    if arr.ndim != ndim:
        raise ObjalignError(f"{name} must be 2-D (n_samples, n_features), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ObjalignError(f"{name} contains NaN or infinite values: drop or repair those rows")
    return arr


def ridge_permutation_null(
    X_train,
    Y_train,
    X_test,
    Y_test,
    alpha: float = 1.0,
    n_permutations: int = 1000,
    seed=0,
    score_fn: Callable[[np.ndarray, np.ndarray], float] | None = None,
    groups=None,
    alternative: str = "greater",
    permutations=None,
) -> PermutationNullResult:
    """Permutation null for a ridge map's held-out score, one matrix product per permutation.

    The map is ridge regression with an intercept, as ``sklearn.linear_model.Ridge(alpha)``:
    ``W = (Xc^T Xc + alpha I)^-1 Xc^T Yc`` on training data centred by the training means, and
    test predictions ``(X_test - mean_X) W + mean_Y``. These are ``A @ Y_train + mean_Y`` with the
    ``(n_test, n_train)`` operator ``A = (X_test - mean_X) (Xc^T Xc + alpha I)^-1 Xc^T``, which does
    not depend on the targets, and a permutation leaves ``mean_Y`` unchanged. So ``A`` is computed
    once (in the primal or dual form, whichever is smaller) and each permutation ``pi`` re-fits the
    map exactly as ``A @ Y_train[pi] + mean_Y``. When ``Y_train`` holds few distinct rows (one text
    embedding per category), ``Y_train = onehot(c) U`` and the product is taken as
    ``(A @ onehot(c[pi])) @ U``: per-category column sums of ``A``, far cheaper; the default R^2
    is then computed from those sums without forming the predictions.

    Training **rows** are permuted and the test pairing is untouched: the null is "the map learned
    nothing transferable". With ``groups`` (image ids), whole images exchange their label blocks
    (see :func:`group_permutations`), so within-image dependence survives under the null; without
    them rows are permuted freely.

    Parameters
    ----------
    X_train : array-like of shape (n_train, n_features)
    Y_train : array-like of shape (n_train, n_targets)
    X_test : array-like of shape (n_test, n_features)
    Y_test : array-like of shape (n_test, n_targets)
    alpha : float, default 1.0
        Ridge penalty, ``> 0``.
    n_permutations : int, default 1000
        Number of permutations ``B`` (ignored when ``permutations`` is given).
    seed : int or numpy.random.Generator or None, default 0
        Seed for the permutations.
    score_fn : callable ``(Y_true, Y_pred) -> float``, optional
        Score of test predictions ``(n_test, n_targets)``; larger is better for
        ``alternative="greater"``. Default: variance-weighted R^2 (as
        ``sklearn.metrics.r2_score(..., multioutput="variance_weighted")``). On the few-distinct-
        targets path it is called with BLAS limited to one thread (its products are small).
    groups : array-like of shape (n_train,), optional
        Image id of each training row; permute whole images (see :func:`group_permutations`).
    alternative : {"greater", "less", "two-sided"}, default "greater"
        Passed to :func:`permutation_pvalue`.
    permutations : array-like of shape (B, n_train), optional
        Explicit permutations to use instead of random ones (each row a permutation of
        ``0..n_train-1``; the permuted targets are ``Y_train[row]``).

    Returns
    -------
    PermutationNullResult
        ``observed``, ``null`` (B,), ``pvalue``, ``n_permutations``, ``alternative``, ``scheme``.
    """
    X_train = _matrix(X_train, "X_train")
    Y_train = _matrix(Y_train, "Y_train")
    X_test = _matrix(X_test, "X_test")
    Y_test = _matrix(Y_test, "Y_test")
    n, d = X_train.shape
    if Y_train.shape[0] != n:
        raise ObjalignError(
            f"X_train has {n} rows but Y_train has {Y_train.shape[0]}: pass one target row per training row"
        )
    if X_test.shape[1] != d:
        raise ObjalignError(
            f"X_test has {X_test.shape[1]} features but X_train has {d}: use the same feature space"
        )
    if Y_test.shape != (X_test.shape[0], Y_train.shape[1]):
        raise ObjalignError(
            f"Y_test must have shape (n_test, n_targets) = ({X_test.shape[0]}, {Y_train.shape[1]}), "
            f"got {Y_test.shape}"
        )
    if n < 2:
        raise ObjalignError(f"ridge_permutation_null needs at least 2 training rows, got {n}")
    if isinstance(alpha, bool) or not (
        isinstance(alpha, (int, float, np.floating)) and np.isfinite(alpha) and alpha > 0
    ):
        raise ObjalignError(f"alpha must be a positive number (the ridge penalty), got {alpha!r}")
    if alternative not in _ALTERNATIVES:
        raise ObjalignError(
            f"alternative={alternative!r} is not supported: expected one of {list(_ALTERNATIVES)}"
        )
    default_score = score_fn is None
    if default_score:
        score_fn = _r2_variance_weighted
        if not np.any(Y_test != Y_test[:1]):
            raise ObjalignError(
                "Y_test has no variance (all rows equal), so R^2 is undefined: pass a score_fn"
            )
    elif not callable(score_fn):
        raise ObjalignError(f"score_fn must be a callable (Y_true, Y_pred) -> float, got {score_fn!r}")

    if permutations is not None:
        perms = np.asarray(permutations)
        if perms.ndim != 2 or perms.shape[1] != n or perms.shape[0] == 0 or perms.dtype.kind not in "iu":
            raise ObjalignError(
                f"permutations must be an integer array of shape (B, n_train={n}), got shape "
                f"{perms.shape} and dtype {perms.dtype}"
            )
        if not np.array_equal(np.sort(perms, axis=1), np.broadcast_to(np.arange(n), perms.shape)):
            raise ObjalignError(f"every row of permutations must be a permutation of 0..{n - 1}")
        scheme = "given"
    else:
        if groups is not None:
            _group_codes(groups, n, "groups")
        perms = group_permutations(groups if groups is not None else n, n_permutations, seed)
        scheme = "image-blocks" if groups is not None else "rows"

    # Hat operator: test predictions = A @ Y_train + mean_Y, A of shape (n_test, n_train).
    x_mean = X_train.mean(axis=0)
    Xc = X_train - x_mean
    Xt = X_test - x_mean
    if d <= n:
        gram = Xc.T @ Xc
        gram[np.diag_indices(d)] += alpha
        A = np.linalg.solve(gram, Xt.T).T @ Xc.T
    else:
        gram = Xc @ Xc.T
        gram[np.diag_indices(n)] += alpha
        A = np.linalg.solve(gram, Xc @ Xt.T).T
    y_mean = Y_train.mean(axis=0)

    observed = float(score_fn(Y_test, A @ Y_train + y_mean))
    null = np.empty(perms.shape[0])
    U, labels = np.unique(Y_train, axis=0, return_inverse=True)
    labels = labels.ravel()
    r, q = U.shape
    if r * q + 4 * n < n * q:  # few distinct targets: sum the columns of A per category
        from scipy import sparse

        AT = np.ascontiguousarray(A.T)
        rows, ones = np.arange(n), np.ones(n)
        if default_score:  # R^2 from C alone: ||D - C U||^2 = ||D||^2 - 2 <C, D U^T> + <C U U^T, C>
            D = Y_test - y_mean
            DUt, UUt = D @ U.T, U @ U.T
            ss_d = float(np.sum(D**2))
            ss_tot = float(np.sum((Y_test - Y_test.mean(axis=0)) ** 2))
        # The per-permutation products are small: threaded BLAS only adds synchronisation there
        # (measured 8-20x slower per permutation with threads on a shared 2-core machine).
        with single_threaded_blas():
            for b, pi in enumerate(perms):
                # onehot(c[pi])^T of shape (r, n); C^T = onehot^T @ A^T holds per-category column sums
                onehot_T = sparse.csr_matrix((ones, (labels[pi], rows)), shape=(r, n))
                C = (onehot_T @ AT).T
                if default_score:
                    ss_res = ss_d - 2.0 * np.sum(C * DUt) + np.sum((C @ UUt) * C)
                    null[b] = 1.0 - ss_res / ss_tot
                else:
                    null[b] = score_fn(Y_test, C @ U + y_mean)
    else:
        for b, pi in enumerate(perms):
            null[b] = score_fn(Y_test, A @ Y_train[pi] + y_mean)
    pvalue = permutation_pvalue(observed, null, alternative)
    return PermutationNullResult(
        observed=observed,
        null=null,
        pvalue=pvalue,
        n_permutations=int(perms.shape[0]),
        alternative=alternative,
        scheme=scheme,
    )
