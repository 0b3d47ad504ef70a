"""The grouped bootstrap of a statistic: resample groups (images) with replacement.

- :func:`bootstrap_ci`: percentile bootstrap confidence interval that resamples **groups** (images)
  with replacement, vectorised through per-group sums and a resample-count matrix.

Objects from the same image are not independent (shared background, co-occurring categories), so
resampling acts on images as units when ``groups`` (image ids) are given. The intervals of every figure of a
result row on shared resamples are :mod:`objalign.stats.intervals`; permutations and p-values are
:mod:`objalign.stats.permutation`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from objalign.errors import ObjalignError
from objalign.stats.labels import check_positive_int, group_codes

__all__ = ["BootstrapResult", "bootstrap_ci"]

_CHUNK_ELEMENTS = 4_000_000  # resample-matrix entries generated at once (bounds memory, ~32 MB)


# ----------------------------------------------------------------------------------------- helpers
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
    n_resamples = check_positive_int(n_resamples, "n_resamples")
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
        codes = group_codes(groups, None)
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
        codes = group_codes(groups, n) if groups is not None else np.arange(n, dtype=np.intp)
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
