"""Cross-validation splits: resolve ``cv`` like scikit-learn and detect fold structure worth exploiting."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from objalign.errors import ObjalignError

__all__ = ["resolve_splits", "Partition", "find_partition"]


def resolve_splits(cv, X, y, groups, n_samples):
    """Turn ``cv`` into an explicit list of (train, test) index arrays, as ``GridSearchCV`` would.

    Parameters
    ----------
    cv : int, cross-validation splitter, iterable of (train, test) or None
        ``None`` means 5-fold; an int ``k`` means ``KFold(k)`` (no shuffling), as scikit-learn's
        ``check_cv`` does for regressors.
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples, ...) or None
    groups : ndarray of shape (n_samples,) or None
    n_samples : int

    Returns
    -------
    splits : list of (ndarray, ndarray)
        Integer index arrays, one pair per fold.
    """
    from sklearn.model_selection import check_cv

    if isinstance(cv, bool):
        raise ObjalignError(f"cv={cv!r}; expected an int >= 2, a scikit-learn splitter or a list of (train, test)")
    if isinstance(cv, (int, np.integer)) and cv < 2:
        raise ObjalignError(f"cv={cv!r}; expected at least 2 folds (an int >= 2) or a scikit-learn splitter")
    if isinstance(cv, (int, np.integer)) and n_samples < cv:
        raise ObjalignError(
            f"cannot make {int(cv)} folds from n_samples={n_samples}; expected at least as many samples as folds: "
            "lower cv or pass more samples"
        )
    splitter = check_cv(5 if cv is None else cv, y, classifier=False)
    splits = []
    for k, (train, test) in enumerate(splitter.split(X, y, groups)):
        train = np.asarray(train)
        test = np.asarray(test)
        if train.dtype == bool:
            train = np.flatnonzero(train)
        if test.dtype == bool:
            test = np.flatnonzero(test)
        if train.size == 0 or test.size == 0:
            raise ObjalignError(
                f"cv fold {k} has {train.size} training and {test.size} test samples; expected both non-empty"
            )
        splits.append((train.astype(np.intp), test.astype(np.intp)))
    if not splits:
        raise ObjalignError("cv produced no folds; expected at least one (train, test) split")
    return splits


@dataclass
class Partition:
    """Folds whose test sets are disjoint and whose training sets are the complements of their test sets.

    Attributes
    ----------
    order : ndarray of shape (n_samples,)
        Sample order that puts the never-tested samples first, then fold 0's test set, fold 1's, ...
    bounds : ndarray of shape (n_folds + 1,)
        Block boundaries in ``order`` of the test sets (``bounds[0]`` = number of never-tested samples).
    """

    order: np.ndarray
    bounds: np.ndarray


def find_partition(splits, n_samples):
    """Return a :class:`Partition` if the splits allow exact shared elimination, else None."""
    seen = np.zeros(n_samples, dtype=np.int64)
    for train, test in splits:
        if train.size + test.size != n_samples:
            return None
        # Train and test together cover every sample exactly once (no repeats, no overlap, no gap).
        if (np.bincount(train, minlength=n_samples) + np.bincount(test, minlength=n_samples) != 1).any():
            return None
        seen[test] += 1
    if (seen > 1).any():
        return None
    base = np.flatnonzero(seen == 0)
    order = np.concatenate([base] + [np.sort(test) for _, test in splits])
    sizes = [base.size] + [test.size for _, test in splits]
    bounds = np.cumsum(sizes)
    return Partition(order=order.astype(np.intp), bounds=bounds.astype(np.intp))
