"""Input validation for the alignment engine: one clear error, raised before any heavy computation.

Every check raises :class:`objalign.errors.ObjalignError` (a ``ValueError``) whose single-line message
names the bad array or parameter, what was expected, and the fix.
"""

from __future__ import annotations

import numbers

import numpy as np

from objalign.errors import ObjalignError

__all__ = ["check_xy", "check_matrix", "check_grid", "check_groups", "check_positive"]


def check_matrix(A, name="X", *, dtype=(np.float64, np.float32), ensure_2d=True, min_samples=1):
    """Return ``A`` as a finite float array, or raise one clear error naming ``name``.

    Parameters
    ----------
    A : array-like of shape (n_samples, n_features) or (n_samples,)
        The array to check.
    name : str
        How the array is called in error messages ("X", "vision embeddings", ...).
    dtype : tuple of numpy dtypes
        Accepted floating dtypes; other inputs are converted to the first one.
    ensure_2d : bool
        If true a 1-D array is an error; otherwise 1-D and 2-D are accepted.
    min_samples : int
        The fewest rows accepted.

    Returns
    -------
    A : ndarray of shape (n_samples, n_features) or (n_samples,)
    """
    if A is None:
        raise ObjalignError(
            f"{name} is None; this estimator requires y to be passed, but the target y is None: pass {name}"
        )
    if hasattr(A, "tocsr") or type(A).__module__.startswith("scipy.sparse"):
        raise ObjalignError(f"{name} is a scipy sparse matrix; sparse input is not supported: pass {name}.toarray()")
    try:
        arr = np.asarray(A)
    except Exception as exc:  # ragged lists and the like
        raise ObjalignError(f"{name} could not be read as a numeric array ({exc}); pass a 2-D numpy array") from exc
    if arr.dtype.kind == "O":
        arr = arr.astype(np.float64)  # a TypeError names the offending element
    if arr.dtype.kind == "c":
        raise ObjalignError(f"{name} is complex; Complex data not supported: pass the real part ({name}.real)")
    if arr.dtype.kind not in "biuf":
        raise ObjalignError(
            f"{name} has dtype {arr.dtype}; expected real numbers (float32/float64): convert it with "
            f"np.asarray({name}, dtype=float)"
        )
    if arr.dtype not in dtype:
        arr = arr.astype(dtype[0])
    if arr.ndim == 0 or arr.ndim > 2 or (ensure_2d and arr.ndim != 2):
        want = "2-D (n_samples, n_features)" if ensure_2d else "1-D or 2-D"
        fix = " (use X.reshape(-1, 1) for a single feature)" if arr.ndim == 1 else ""
        raise ObjalignError(f"{name} has shape {arr.shape}; expected a {want} array{fix}")
    if arr.shape[0] < min_samples:
        raise ObjalignError(
            f"{name} has n_samples={arr.shape[0]} rows; expected at least {min_samples}: pass more samples"
        )
    if arr.ndim == 2 and arr.shape[1] == 0:
        raise ObjalignError(
            f"{name} has 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required; "
            "expected at least one column"
        )
    if not np.isfinite(arr.sum(dtype=np.float64)) and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        where = f"row {bad[0]}" + (f", column {bad[1]}" if arr.ndim == 2 else "")
        raise ObjalignError(
            f"{name} contains NaN or infinite values (first at {where}); expected finite numbers: "
            "drop or impute those rows before fitting"
        )
    return arr


def check_fit_input(est, X, y, groups=None, cv=None):
    """Validate the input of an estimator's ``fit``: :func:`check_xy`, then scikit-learn's bookkeeping.

    ``check_xy`` converts and checks both arrays (NaN/inf, row counts, enough samples for an integer
    ``cv``) with one clear error; scikit-learn's ``validate_data`` then only records ``n_features_in_``
    without scanning the arrays a second time.

    Returns
    -------
    X, y, groups
    """
    from sklearn.utils.validation import validate_data

    n_splits = cv if isinstance(cv, (numbers.Integral, np.integer)) and not isinstance(cv, bool) else None
    X, y, groups = check_xy(X, y, groups, n_splits=n_splits, name_y="y")
    X, y = validate_data(est, X, y, skip_check_array=True)
    return X, y, groups


def check_groups(groups, n_samples, name="groups"):
    """Return ``groups`` as a 1-D array of length ``n_samples`` or raise one clear error."""
    if groups is None:
        return None
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != n_samples:
        raise ObjalignError(
            f"{name} has shape {g.shape}; expected one group label per sample, shape ({n_samples},)"
        )
    if g.dtype.kind == "f" and not np.isfinite(g).all():
        raise ObjalignError(f"{name} contains NaN or infinite labels; expected one finite label per sample")
    return g


def check_xy(
    X, Y, groups=None, n_splits=None, name_x="X", name_y="Y", min_samples=1, categories=None, category_ids=None
):
    """Validate a vision/text pair before fitting or cross-validating a map.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
        Inputs of the map (vision embeddings).
    Y : array-like of shape (n_samples, n_features_y) or (n_samples,)
        Targets of the map (text embeddings of each instance's category).
    groups : array-like of shape (n_samples,), optional
        Group label per sample (e.g. image id); with ``n_splits`` the number of distinct groups is checked.
    n_splits : int, optional
        Number of cross-validation folds that will be used; requires ``n_samples >= n_splits``.
    name_x, name_y : str
        Names used in error messages.
    min_samples : int
        The fewest samples accepted.
    categories : array-like of shape (n_samples,), optional
        Category label of each sample.
    category_ids : sequence, optional
        The categories that must be present; one with no sample in ``categories`` is an error
        ("empty category").

    Returns
    -------
    X : ndarray of shape (n_samples, n_features_x), float32 or float64
    Y : ndarray of shape (n_samples, n_features_y) or (n_samples,)
    groups : ndarray of shape (n_samples,) or None

    Raises
    ------
    objalign.errors.ObjalignError
        NaN/inf values, mismatched row counts, too few samples for the folds, or bad group labels.
    """
    Xa = check_matrix(X, name_x, min_samples=min_samples)
    Ya = check_matrix(Y, name_y, ensure_2d=False, min_samples=min_samples)
    if Xa.shape[0] != Ya.shape[0]:
        raise ObjalignError(
            f"{name_x} has {Xa.shape[0]} rows but {name_y} has {Ya.shape[0]}; expected one {name_y} row per "
            f"{name_x} row (same instances in the same order)"
        )
    g = check_groups(groups, Xa.shape[0])
    if categories is not None:
        cats = check_groups(categories, Xa.shape[0], name="categories")
        if category_ids is not None:
            present = set(np.unique(cats).tolist())
            empty = [c for c in category_ids if c not in present]
            if empty:
                raise ObjalignError(
                    f"category {empty[0]!r} has no instances ({len(empty)} empty categor"
                    f"{'y' if len(empty) == 1 else 'ies'} in all); expected at least one sample per category: "
                    "drop empty categories from the category list or sample more instances"
                )
    if n_splits is not None:
        n_splits = int(n_splits)
        if Xa.shape[0] < n_splits:
            raise ObjalignError(
                f"cannot make {n_splits} folds from n_samples={Xa.shape[0]}; expected at least as many samples "
                "as folds: lower cv or pass more samples"
            )
        if g is not None:
            n_groups = np.unique(g).shape[0]
            if n_groups < n_splits:
                raise ObjalignError(
                    f"groups has {n_groups} distinct labels but cv asks for {n_splits} folds; expected at least "
                    "one group per fold: lower cv or pass finer groups"
                )
    return Xa, Ya, g


def check_grid(values, name, *, low=0.0, low_inclusive=False, allow_none=False):
    """Return a grid of hyper-parameter values as a 1-D float array, or raise one clear error.

    Parameters
    ----------
    values : float or sequence of float
        The grid (a scalar is a grid of one).
    name : str
        Parameter name for messages ("alphas", "gammas").
    low : float
        Values must be above ``low`` (or at least ``low`` when ``low_inclusive``).
    allow_none : bool
        If true ``None`` is returned unchanged.

    Returns
    -------
    grid : ndarray of shape (n_values,)
    """
    if values is None:
        if allow_none:
            return None
        raise ObjalignError(f"{name} is None; expected a non-empty list of positive numbers")
    if isinstance(values, numbers.Real):
        values = [values]
    try:
        arr = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise ObjalignError(f"{name}={values!r} is not a list of numbers; expected e.g. [0.1, 1.0, 10.0]") from exc
    if arr.size == 0:
        raise ObjalignError(f"{name} is empty; expected at least one value, e.g. [0.1, 1.0, 10.0]")
    ok = np.isfinite(arr) & ((arr >= low) if low_inclusive else (arr > low))
    if not ok.all():
        bad = float(arr[~ok][0])
        rel = ">=" if low_inclusive else ">"
        raise ObjalignError(f"{name} contains {bad!r}; expected finite values {rel} {low:g}")
    return arr


def check_positive(value, name, *, low=0.0, low_inclusive=False, integer=False, allow_none=False):
    """Check one scalar hyper-parameter; return it unchanged or raise one clear error."""
    if value is None and allow_none:
        return None
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not np.isfinite(value):
        what = "an integer" if integer else "a finite number"
        raise ObjalignError(f"{name}={value!r}; expected {what}")
    if (value < low) if low_inclusive else (value <= low):
        rel = ">=" if low_inclusive else ">"
        raise ObjalignError(f"{name}={value!r}; expected a value {rel} {low:g}")
    return value
