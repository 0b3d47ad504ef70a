"""Kernels with scikit-learn's exact semantics, and a cache that computes distances once for a gamma grid.

Kernels: ``linear`` (x.y), ``rbf`` exp(-gamma ||x-y||^2), ``laplacian`` exp(-gamma ||x-y||_1),
``polynomial`` (gamma x.y + coef0)^degree, ``cosine`` x.y / (||x|| ||y||). ``gamma=None`` means
``1 / n_features``, as in :func:`sklearn.metrics.pairwise.pairwise_kernels`.

Small kernel values are flushed to zero. When gamma is large next to the distances, ``exp`` underflows
into subnormal numbers (below ``np.finfo(dtype).tiny``: 1.2e-38 in float32, 2.2e-308 in float64), and BLAS
runs many times slower on them on CPUs that trap subnormal arithmetic to microcode (Intel: a 45x slower
``KernelRidgeCV`` grid point was measured in float32). By default every rbf and laplacian kernel made here
(exact, cross-validation and Nyström) sets the values below ``tiny`` to zero in place; a kernel that cannot
underflow (checked from the largest distance) is not scanned at all.

That is not enough for a kernel that is then factorised: products of two small *normal* entries (1e-24 x
1e-24 in float32) underflow again inside the Cholesky factorisation, the triangular solves and the
Schur-complement updates (a float32 grid point at gamma x median squared distance = 55 spent 38 of 41 s
there). So the kernel ridge solvers pass ``floor=solve_floor(n, dtype)`` and every entry below

    tau = u / n        (u = eps / 2, the unit roundoff: 6.0e-8 in float32, 1.1e-16 in float64)

is set to zero. Why that leaves the solution unchanged at the working precision: the flushed entries form
a symmetric matrix ``E`` with ``|E_ij| < tau``, so ``||E||_2 <= ||E||_inf < n tau = u``. The system matrix
``A = K + alpha I`` (rbf/laplacian: ``0 <= K_ij <= 1 = K_ii``, ``alpha > 0``) has ``||A||_2 >= 1 + alpha > 1``,
hence ``||E||_2 < u ||A||_2``: the flush perturbs ``A`` less than storing it in the working precision does
(``|fl(A) - A| <= u A`` elementwise, so ``||fl(A) - A||_2 <= u ||A||_2`` for the non-negative ``A``), and far
less than the Cholesky factorisation's own backward error (``<= c n u ||A||_2``). The same holds for every
training block of every fold (a principal submatrix of ``E`` has no larger norm, and its ``A`` block no smaller
diagonal), for any ``alpha > 0`` of a grid; a prediction ``k(x, X) z`` changes by less than
``n tau max|z_j| = u max|z_j|``. And what it buys: every surviving entry is at least ``tau`` (float32, n = 3,000:
2.0e-11), so a product of two of them, and of three, is a normal number (4e-22, 8e-33); float64's ``tau``
(3.7e-20 at that n) keeps products of up to 15 factors normal. ``bench/align.py --gamma-grid`` counts the
subnormal numbers in the operands and results of every BLAS call (:class:`objalign.maps._blas.SubnormalCount`)
with the old and the new threshold.
"""

from __future__ import annotations

import numpy as np

from objalign.errors import ObjalignError

__all__ = ["KERNELS", "GAMMA_KERNELS", "check_kernel", "kernel_matrix", "KernelBase", "flush_subnormal", "flush_below",
           "solve_floor"]

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


#: ``"resolution"``: the solvers flush below ``u / n`` (see the module notes); ``"subnormal"``: below ``tiny`` only,
#: the behaviour before that bound (kept for ``bench/align.py --gamma-grid``, which counts the difference).
_SOLVE_FLUSH = "resolution"


def solve_floor(n, dtype):
    """Kernel values below which a kernel ridge solve with ``n`` rows may flush to zero: ``u / n``.

    Parameters
    ----------
    n : int
        Rows of the kernel system (the largest one solved with this kernel: all samples).
    dtype : dtype
        Working precision; ``u = np.finfo(dtype).eps / 2``.

    Returns
    -------
    floor : float or None
        ``None`` when only subnormal values are flushed (``_SOLVE_FLUSH = "subnormal"``).

    Notes
    -----
    Flushing every entry below ``u / n`` perturbs ``K + alpha I`` by less than ``u ||K + alpha I||_2``, less
    than rounding it to ``dtype`` does (the bound is derived in the module notes).
    """
    if _SOLVE_FLUSH != "resolution":
        return None
    return float(np.finfo(np.dtype(dtype)).eps) / 2 / max(int(n), 1)


def flush_below(K, threshold):
    """Set the entries of ``K`` (non-negative) below ``threshold`` to zero, in place, in chunks of rows.

    Parameters
    ----------
    K : ndarray of shape (n, m), float32 or float64
        A kernel matrix with non-negative entries (rbf, laplacian).
    threshold : float
        Entries ``< threshold`` become 0.

    Returns
    -------
    K : the same array
    """
    thr = K.dtype.type(threshold)
    step = max(1, _FLUSH_ROWS_ELEMENTS // max(K.shape[1], 1))
    mask = None
    for s in range(0, K.shape[0], step):
        rows = K[s:s + step]
        mask = np.less(rows, thr, out=None if mask is None or mask.shape != rows.shape else mask)
        np.copyto(rows, 0, where=mask)
    return K


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
    return flush_below(K, np.finfo(K.dtype).tiny)


def _flush(K, floor):
    """Flush ``K`` below ``floor`` (``None`` or at most ``tiny``: the subnormal values only)."""
    if floor is None or floor <= np.finfo(K.dtype).tiny:
        return flush_subnormal(K)
    return flush_below(K, floor)


def kernel_matrix(X, Y=None, *, kernel="rbf", gamma=None, degree=3, coef0=1, kernel_params=None, floor=None):
    """Kernel matrix between rows of ``X`` and ``Y``, exactly as scikit-learn's ``KernelRidge`` builds it.

    Parameters
    ----------
    X : ndarray of shape (n_x, n_features)
    Y : ndarray of shape (n_y, n_features), optional
        Defaults to ``X``.
    floor : float, optional
        rbf and laplacian values below it are set to zero (:func:`solve_floor` for a kernel that is solved
        with); by default only subnormal values are.

    Returns
    -------
    K : ndarray of shape (n_x, n_y), dtype of the inputs
    """
    from sklearn.metrics.pairwise import pairwise_kernels

    check_kernel(kernel)
    params = _params(kernel, gamma, degree, coef0, kernel_params)
    K = pairwise_kernels(X, Y, metric=kernel, filter_params=True, **params)
    if kernel in EXP_KERNELS and K.size and K.min() < max(np.finfo(K.dtype).tiny, floor or 0.0):
        _flush(K, floor)
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

    def matrix(self, gamma=None, out=None, floor=None):
        """Kernel matrix for one ``gamma`` (``None`` = 1 / n_features), shape like the base.

        ``floor``: rbf and laplacian values below it are set to zero (:func:`solve_floor`); by default (and
        for a floor below ``tiny``) the subnormal values only.
        """
        if self.kernel in ("linear", "cosine"):
            return self.base
        g = 1.0 / self.n_features if gamma is None else gamma
        out = np.empty_like(self.base) if out is None else out
        if self.kernel in EXP_KERNELS:
            np.multiply(self.base, self.dtype.type(-g), out=out)
            np.exp(out, out=out)
            if floor is None or floor <= np.finfo(self.dtype).tiny:
                if self._may_underflow(g):
                    flush_subnormal(out)
            elif self._may_fall_below(g, floor):
                flush_below(out, floor)
        else:
            np.multiply(self.base, self.dtype.type(g), out=out)
            out += self.dtype.type(self.coef0)
            out **= self.degree
        return out

    def _may_underflow(self, gamma) -> bool:
        """Whether ``exp(-gamma * d)`` can fall below the smallest normal number for some distance ``d`` here."""
        return self._may_fall_below(gamma, np.finfo(self.dtype).tiny)

    def _may_fall_below(self, gamma, floor) -> bool:
        """Whether ``exp(-gamma * d)`` can fall below ``floor`` for some distance ``d`` here."""
        if self.base.size == 0:
            return False
        if self._largest is None:
            self._largest = float(self.base.max())
        return -gamma * self._largest < np.log(floor)
