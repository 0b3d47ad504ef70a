"""Integer codes for labels that repeat: the image of each object, the distinct rows of a target matrix.

- :func:`group_codes`: codes ``0..n_groups-1`` for arbitrary group labels (image ids), the units that the bootstrap
  (:mod:`objalign.stats.resampling`) resamples and the permutations (:mod:`objalign.stats.permutation`) move.
- :func:`unique_rows`: the distinct rows of a matrix (text targets repeat one row per category).
- :func:`check_positive_int`: the error for a count (resamples, permutations) that is not a positive integer.
"""

from __future__ import annotations

import numpy as np

from objalign.errors import ObjalignError

__all__ = ["check_positive_int", "group_codes", "unique_rows"]


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer ``>= minimum`` (bools are not), else an :class:`ObjalignError`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ObjalignError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def group_codes(groups, n: int | None, name: str = "groups") -> np.ndarray:
    """Integer codes ``(n,)`` in ``0..n_groups-1`` for arbitrary group labels ``(n,)``.

    Parameters
    ----------
    groups : array-like of shape (n,)
        One label (e.g. image id) per instance: integers or strings, mutually comparable.
    n : int or None
        The number of instances the labels must match (None: any).
    name : str, default "groups"
        How the errors name ``groups``.

    Returns
    -------
    ndarray of shape (n,), dtype intp
        The rank of each label among the sorted distinct labels.
    """
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
