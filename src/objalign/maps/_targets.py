"""Exact factorisation of a target matrix with repeated rows: ``Y = onehot(codes) @ Y_unique``.

Object-level alignment has one text embedding per *category*, so the (n, dy) target matrix has only as many
distinct rows as there are categories (80 for COCO). Every linear smoother (ridge, kernel ridge, Nyström
ridge) is linear in ``Y``, so it can be solved for the (n, r) indicator matrix instead of the (n, dy) targets
and mapped back by ``Y_unique``: exact, and ``dy / r`` times fewer right-hand sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TargetBasis", "factor_targets"]


@dataclass
class TargetBasis:
    """``Y`` written as ``T @ Z``.

    Attributes
    ----------
    codes : ndarray of shape (n_samples,) or None
        Row ``i`` of ``Y`` equals ``Z[codes[i]]``; None when ``Y`` was not factorised (``T = Y``, ``Z = I``).
    Z : ndarray of shape (r, n_targets) or None
        The distinct rows of ``Y`` (None when not factorised).
    Y : ndarray of shape (n_samples, n_targets)
        The original targets (2-D).
    """

    codes: np.ndarray | None
    Z: np.ndarray | None
    Y: np.ndarray

    @property
    def r(self):
        """Number of columns of ``T``."""
        return self.Y.shape[1] if self.Z is None else self.Z.shape[0]

    def T(self, idx=None, dtype=np.float64):
        """The (n_rows, r) matrix ``T`` for rows ``idx`` (all rows if None)."""
        if self.Z is None:
            rows = self.Y if idx is None else self.Y[idx]
            return np.asarray(rows, dtype=dtype)
        codes = self.codes if idx is None else self.codes[idx]
        out = np.zeros((codes.shape[0], self.r), dtype=dtype)
        out[np.arange(codes.shape[0]), codes] = 1.0
        return out


_VERIFY = 1024  # rows compared per step: the comparison stays in cache


def factor_targets(Y, max_ratio=0.5, chunk=65536):
    """Find the distinct rows of ``Y`` exactly, if there are few of them.

    Parameters
    ----------
    Y : ndarray of shape (n_samples, n_targets)
        Targets.
    max_ratio : float
        Factorise only if the number of distinct rows is at most ``max_ratio * n_targets``
        (otherwise solving for the indicator would not save work).

    Returns
    -------
    TargetBasis
    """
    n, dy = Y.shape
    limit = int(max_ratio * dy)
    if limit < 1 or n <= limit:
        return TargetBasis(None, None, Y)
    # Hash each row to a float with a random projection, then verify exactly: collisions, or equal rows that
    # happen to get different keys, only cost speed (the verification below is what makes the result exact).
    rng = np.random.default_rng(12345)
    w = rng.standard_normal(dy).astype(Y.dtype)
    keys = np.empty(n, dtype=Y.dtype)
    for s in range(0, n, chunk):
        np.matmul(Y[s : s + chunk], w, out=keys[s : s + chunk])
    _, first, codes = np.unique(keys, return_index=True, return_inverse=True)
    if first.shape[0] > limit:
        return TargetBasis(None, None, Y)
    Z = Y[first]
    for s in range(0, n, _VERIFY):
        if not np.array_equal(Y[s : s + _VERIFY], Z[codes[s : s + _VERIFY]]):
            return TargetBasis(None, None, Y)
    return TargetBasis(codes.astype(np.intp, copy=False), Z, Y)
