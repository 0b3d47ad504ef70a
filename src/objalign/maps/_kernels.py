"""Kernels with scikit-learn's exact semantics, and a cache that computes distances once for a gamma grid.

Kernels: ``linear`` (x.y), ``rbf`` exp(-gamma ||x-y||^2), ``laplacian`` exp(-gamma ||x-y||_1),
``polynomial`` (gamma x.y + coef0)^degree, ``cosine`` x.y / (||x|| ||y||). ``gamma=None`` means
``1 / n_features``, as in :func:`sklearn.metrics.pairwise.pairwise_kernels`.

Subnormal kernel values are flushed to zero. When gamma is large next to the distances, ``exp`` underflows
into subnormal numbers (below ``np.finfo(dtype).tiny``: 1.2e-38 in float32, 2.2e-308 in float64), and BLAS
runs many times slower on them (a 45x slower ``KernelRidgeCV`` grid point was measured in float32). Such values
are below any tolerance the solvers use, so every rbf and laplacian kernel made here (exact, cross-validation
and Nyström) sets them to zero in place; a kernel that cannot underflow (checked from the largest distance) is
not scanned at all.
"""

from __future__ import annotations

import numpy as np

from objalign.errors import ObjalignError

__all__ = ["KERNELS", "GAMMA_KERNELS", "check_kernel", "kernel_matrix", "KernelBase", "flush_subnormal"]

KERNELS = ("linear", "rbf", "laplacian", "polynomial", "poly", "cosine")
GAMMA_KERNELS = ("rbf", "laplacian", "polynomial", "poly")


def check_kernel(kernel):
    """Raise one clear error for an unknown kernel name."""
    if not isinstance(kernel, str) or kernel not in KERNELS:
        raise ObjalignError(f"kernel={kernel!r} is not supported; expected one of {', '.join(KERNELS[:-1])}")
    return kernel


def _params(kernel, gamma, degree, coef0, kernel_params):
    params = dict(kernel_params or {})
    if kernel in GAMMA_KERNELS:
        params.setdefault("gamma", gamma)
    if kernel in ("polynomial", "poly"):
        params.setdefault("degree", degree)
        params.setdefault("coef0", coef0)
    return params


#: Kernels computed as ``exp(-gamma * distance)``: the ones whose values can underflow.
EXP_KERNELS = ("rbf", "laplacian")
_FLUSH_ROWS_ELEMENTS = 1 << 20  # the boolean mask of one chunk of rows: 1 MiB


def flush_subnormal(K):
    """Set the entries of ``K`` (non-negative) below ``np.finfo(K.dtype).tiny`` to zero, in place.

    Parameters
    ----------
    K : ndarray of shape (n, m), float32 or float64
        A kernel matrix with non-negative entries (rbf, laplacian).

    Returns
    -------
    K : the same array
    """
    tiny = np.finfo(K.dtype).tiny
    step = max(1, _FLUSH_ROWS_ELEMENTS // max(K.shape[1], 1))
    mask = None
    for s in range(0, K.shape[0], step):
        rows = K[s:s + step]
        mask = np.less(rows, tiny, out=None if mask is None or mask.shape != rows.shape else mask)
        np.copyto(rows, 0, where=mask)
    return K


def kernel_matrix(X, Y=None, *, kernel="rbf", gamma=None, degree=3, coef0=1, kernel_params=None):
    """Kernel matrix between rows of ``X`` and ``Y``, exactly as scikit-learn's ``KernelRidge`` builds it.

    Parameters
    ----------
    X : ndarray of shape (n_x, n_features)
    Y : ndarray of shape (n_y, n_features), optional
        Defaults to ``X``.

    Returns
    -------
    K : ndarray of shape (n_x, n_y), dtype of the inputs
    """
    from sklearn.metrics.pairwise import pairwise_kernels

    check_kernel(kernel)
    params = _params(kernel, gamma, degree, coef0, kernel_params)
    K = pairwise_kernels(X, Y, metric=kernel, filter_params=True, **params)
    if kernel in EXP_KERNELS and K.size and K.min() < np.finfo(K.dtype).tiny:
        flush_subnormal(K)
    return K


def _sq_distances(X, Y=None):
    """Squared Euclidean distances in float64 with scikit-learn's conventions (clipped at 0, zero diagonal)."""
    X64 = np.asarray(X, dtype=np.float64)
    Y64 = X64 if Y is None else np.asarray(Y, dtype=np.float64)
    xx = np.einsum("ij,ij->i", X64, X64)
    yy = xx if Y is None else np.einsum("ij,ij->i", Y64, Y64)
    D = X64 @ Y64.T
    D *= -2
    D += xx[:, None]
    D += yy[None, :]
    np.maximum(D, 0, out=D)
    if Y is None:
        np.fill_diagonal(D, 0)
    return D


class KernelBase:
    """The gamma-independent part of a kernel on one data set, computed once and reused across a gamma grid.

    Parameters
    ----------
    X : ndarray of shape (n, n_features)
    kernel, degree, coef0 : as in :func:`kernel_matrix`
    Y : ndarray of shape (m, n_features), optional
        Second argument (e.g. Nyström centres); defaults to ``X``.

    Notes
    -----
    rbf keeps squared distances (computed in float64 as scikit-learn does for float32 input), laplacian
    keeps L1 distances, polynomial and linear keep the Gram matrix, cosine the normalised Gram matrix.
    ``matrix(gamma)`` then costs one elementwise pass, and for rbf and laplacian one more when
    ``exp(-gamma * largest distance)`` falls below the dtype's smallest normal number (see the module notes).
    """

    def __init__(self, X, kernel, degree=3, coef0=1, Y=None):
        check_kernel(kernel)
        self.kernel = kernel
        self.degree = degree
        self.coef0 = coef0
        self.dtype = X.dtype
        self.n_features = X.shape[1]
        self._largest = None  # largest distance, computed on first need
        if kernel == "rbf":
            self.base = _sq_distances(X, Y).astype(self.dtype, copy=False)
        elif kernel == "laplacian":
            from sklearn.metrics.pairwise import manhattan_distances

            self.base = manhattan_distances(X, Y).astype(self.dtype, copy=False)
        elif kernel == "cosine":
            from sklearn.metrics.pairwise import cosine_similarity

            self.base = cosine_similarity(X, Y)
        else:
            self.base = X @ (X if Y is None else Y).T

    def matrix(self, gamma=None, out=None):
        """Kernel matrix for one ``gamma`` (``None`` = 1 / n_features), shape like the base."""
        if self.kernel in ("linear", "cosine"):
            return self.base
        g = 1.0 / self.n_features if gamma is None else gamma
        out = np.empty_like(self.base) if out is None else out
        if self.kernel in EXP_KERNELS:
            np.multiply(self.base, self.dtype.type(-g), out=out)
            np.exp(out, out=out)
            if self._may_underflow(g):
                flush_subnormal(out)
        else:
            np.multiply(self.base, self.dtype.type(g), out=out)
            out += self.dtype.type(self.coef0)
            out **= self.degree
        return out

    def _may_underflow(self, gamma) -> bool:
        """Whether ``exp(-gamma * d)`` can fall below the smallest normal number for some distance ``d`` here."""
        if self.base.size == 0:
            return False
        if self._largest is None:
            self._largest = float(self.base.max())
        return -gamma * self._largest < np.log(np.finfo(self.dtype).tiny)
