"""Nyström approximation of kernel ridge: ridge regression (no intercept) on an explicit feature map.

With centres ``C`` (m rows of the training data) and ``K_mm = U S U'``, the feature map
``phi(x) = k(x, C) U S^-1/2`` (directions with negligible ``S`` dropped) satisfies
``phi(x) . phi(y) = k(x, C) K_mm^+ k(C, y)``, the Nyström kernel. Kernel ridge with that kernel and penalty
``alpha`` is ridge without intercept on ``phi`` with the same ``alpha`` (same predictions), so the (m, m)
normal equations replace the (n, n) kernel system: memory O(n m + m^2), time O(n m^2).
Everything here streams the rows in chunks, so ``n`` can be the ~860,000 objects of COCO train.
"""

from __future__ import annotations

import numpy as np

from objalign.maps._kernels import KernelBase
from objalign.maps._ridge_stats import Moments

__all__ = ["normalization", "block_moments", "CHUNK"]

CHUNK = 8192


def normalization(Kmm, rtol=None):
    """Map ``M`` (m, k) with ``M M' = K_mm^+`` restricted to its numerically non-zero spectrum.

    Parameters
    ----------
    Kmm : ndarray of shape (m, m)
        Kernel among the centres.
    rtol : float, optional
        Eigenvalues below ``rtol * max eigenvalue`` are dropped (default ``m * 1e-12``).

    Returns
    -------
    M : ndarray of shape (m, k), float64
    """
    S, U = np.linalg.eigh(np.asarray(Kmm, dtype=np.float64))
    m = S.shape[0]
    tol = (m * 1e-12 if rtol is None else rtol) * max(S.max(), 0.0)
    keep = S > tol
    if not keep.any():
        keep = S >= S.max()
    return U[:, keep] / np.sqrt(S[keep])


def block_moments(X, T, centres, kernel, gammas, degree, coef0, blocks, chunk=CHUNK, rows=None):
    """Moments of the raw Nyström kernel features ``k(x, centres)`` for contiguous row blocks.

    Parameters
    ----------
    X : ndarray of shape (n, n_features)
        Rows in block order.
    T : callable
        ``T(start, stop)`` returns the (stop - start, r) targets of those rows.
    centres : ndarray of shape (m, n_features)
    kernel : str
    gammas : list of float or None
        One set of moments per gamma (the distances to the centres are computed once per chunk).
    blocks : sequence of int
        Block boundaries ``[b0=0, b1, ..., n]``.
    rows : ndarray of shape (n,), optional
        Row ``i`` of the block order is ``X[rows[i]]`` (no reordered copy of ``X`` is made).

    Returns
    -------
    moments : list (per gamma) of list (per block) of Moments
        Statistics of ``F = k(X_block, centres)`` (m columns) and ``T``; ``TT`` is the full (r, r) matrix.
    """
    out = [[None] * (len(blocks) - 1) for _ in gammas]
    for b in range(len(blocks) - 1):
        lo, hi = int(blocks[b]), int(blocks[b + 1])
        acc = [None] * len(gammas)
        for s in range(lo, hi, chunk):
            e = min(s + chunk, hi)
            base = KernelBase(X[s:e] if rows is None else X[rows[s:e]], kernel, degree, coef0, Y=centres)
            Tc = np.asarray(T(s, e), dtype=np.float64)
            tsum = Tc.sum(axis=0)
            tt = Tc.T @ Tc
            buf = None
            for g, gamma in enumerate(gammas):
                F = base.matrix(gamma, out=buf)
                if F is not base.base:
                    buf = F
                F64 = np.asarray(F, dtype=np.float64)
                mom = Moments(F64.T @ F64, F64.T @ Tc, F64.sum(axis=0), tsum, tt, e - s)
                acc[g] = mom if acc[g] is None else acc[g] + mom
        for g in range(len(gammas)):
            if acc[g] is None:
                m = centres.shape[0]
                r = np.asarray(T(lo, lo)).shape[1]
                acc[g] = Moments.zeros(m, r, True)
            out[g][b] = acc[g]
    return out


def project(mom, idx, M):
    """Moments of the normalised features ``k(x, centres[idx]) @ M`` from raw-kernel moments."""
    G = mom.G[np.ix_(idx, idx)]
    return Moments(M.T @ G @ M, M.T @ mom.E[idx], mom.s[idx] @ M, mom.t, mom.TT, mom.n)
