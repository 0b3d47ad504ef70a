"""Kernels with scikit-learn's exact semantics, and a cache that computes distances once for a gamma grid.

Kernels: ``linear`` (x.y), ``rbf`` exp(-gamma ||x-y||^2), ``laplacian`` exp(-gamma ||x-y||_1),
``polynomial`` (gamma x.y + coef0)^degree, ``cosine`` x.y / (||x|| ||y||). ``gamma=None`` means
``1 / n_features``, as in :func:`sklearn.metrics.pairwise.pairwise_kernels`.
"""

from __future__ import annotations

import numpy as np

from objalign.errors import ObjalignError

__all__ = ["KERNELS", "GAMMA_KERNELS", "check_kernel", "kernel_matrix", "KernelBase"]

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
    return pairwise_kernels(X, Y, metric=kernel, filter_params=True, **_params(kernel, gamma, degree, coef0, kernel_params))


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
    ``matrix(gamma)`` then costs one elementwise pass.
    """

    def __init__(self, X, kernel, degree=3, coef0=1, Y=None):
        check_kernel(kernel)
        self.kernel = kernel
        self.degree = degree
        self.coef0 = coef0
        self.dtype = X.dtype
        self.n_features = X.shape[1]
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
        if self.kernel in ("rbf", "laplacian"):
            np.multiply(self.base, self.dtype.type(-g), out=out)
            np.exp(out, out=out)
        else:
            np.multiply(self.base, self.dtype.type(g), out=out)
            out += self.dtype.type(self.coef0)
            out **= self.degree
        return out
