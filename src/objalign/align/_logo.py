"""Exact leave-one-block-out kernel ridge residuals by shared block elimination.

For kernel ridge (no intercept) trained on every fold but ``T`` and tested on ``T``, the held-out residual is
``Y_T - K_TR (K_RR + a I)^-1 Y_R``: the Schur complement, on the ``Y`` columns of the ``T`` rows, of the
augmented matrix ``[K + a I | Y]`` after eliminating the rows/columns of ``R``. Eliminations commute, so the
folds can share them: split the fold blocks into halves ``A | B``; eliminate ``A`` once for all folds in ``B``
and ``B`` once for all folds in ``A``; recurse. With ``k`` folds this costs ``O(n^3 log k)`` per grid point
instead of ``k`` separate ``O(n^3)`` Cholesky fits, uses only Cholesky, triangular solve and symmetric
rank-k updates (float32 LAPACK for float32 input), and needs no prediction matrices. A side that is a single
fold is not eliminated into: its residual needs only a solve with the few target columns. The split points
are chosen by dynamic programming on the flop count (:func:`_plan`); for 5 folds of 600 rows that is
17.6 GFLOP per grid point, against 20.7 for halving splits and ~29 for five separate Cholesky fits.
"""

from __future__ import annotations

import numpy as np

from objalign.align._blas import Blas

__all__ = ["block_logo_residuals"]


class _Ops:
    def __init__(self, dtype):
        self.blas = Blas(dtype)
        self.dtype = dtype

    def chol(self, S):
        """Lower Cholesky factor of a Fortran-ordered block (overwritten)."""
        info = self.blas.potrf(S)
        if info != 0:
            raise np.linalg.LinAlgError(f"kernel block is not positive definite (potrf info={info})")
        return S


def _block(S, r0, r1, c0, c1, diag_add=0.0):
    """Fortran-ordered copy of ``S[r0:r1, c0:c1]`` (plus ``diag_add`` on the diagonal of a diagonal block)."""
    out = np.array(S[r0:r1, c0:c1], order="F")
    if diag_add:
        out.flat[:: out.shape[0] + 1] += diag_add
    return out


def _eliminate(ops, S, C, a, first, diag_add):
    """Eliminate one side of the split ``[0, a) | [a, m)`` of ``S`` (lower triangle valid).

    ``first=True`` eliminates ``[0, a)`` and returns the Schur complement on ``[a, m)``;
    otherwise eliminates ``[a, m)`` and returns the complement on ``[0, a)``.
    """
    m = S.shape[0]
    b = ops.blas
    SBA = _block(S, a, m, 0, a)  # rows B, cols A (lower part)
    if first:
        L = ops.chol(_block(S, 0, a, 0, a, diag_add))
        # Wt = S_BA L^-T  (b, a);  S_B' = S_BB - Wt Wt'
        Wt = b.trsm(L, SBA, right=True, trans=True)
        Snew = b.syrk(Wt, _block(S, a, m, a, m, diag_add), alpha=-1.0)
        cA = b.trsm(L, np.array(C[:a], order="F"))
        Cnew = b.gemm(Wt, cA, np.array(C[a:], order="F"), alpha=-1.0)
    else:
        L = ops.chol(_block(S, a, m, a, m, diag_add))
        # V = L^-1 S_BA  (b, a);  S_A' = S_AA - V'V
        V = b.trsm(L, SBA)
        Snew = b.syrk(V, _block(S, 0, a, 0, a, diag_add), trans=True, alpha=-1.0)
        cB = b.trsm(L, np.array(C[a:], order="F"))
        Cnew = b.gemm(V, cB, np.array(C[:a], order="F"), trans_a=True, alpha=-1.0)
    return Snew, Cnew


def _leaf(ops, S, C, a, first, diag_add):
    """Held-out residual of a single-block side of the split, without forming any Schur complement.

    ``first=True``: the leaf is ``[a, m)``; returns ``C_B - S_BA (S_AA)^-1 C_A``.
    Otherwise the leaf is ``[0, a)``; returns ``C_A - S_AB (S_BB)^-1 C_B``.
    """
    m = S.shape[0]
    if first:
        L = ops.chol(_block(S, 0, a, 0, a, diag_add))
        rhs, keep, off, trans = C[:a], C[a:], S[a:m, 0:a], 0
    else:
        L = ops.chol(_block(S, a, m, a, m, diag_add))
        rhs, keep, off, trans = C[a:], C[:a], S[a:m, 0:a], 1
    z = ops.blas.trsm(L, np.array(rhs, order="F"))
    z = ops.blas.trsm(L, z, trans=True)
    return ops.blas.gemm(np.asfortranarray(off), z, np.array(keep, order="F"), trans_a=bool(trans), alpha=-1.0)


def _full_cost(a, b):
    """Flops to eliminate ``a`` rows for ``b`` others (Cholesky, triangular solve, symmetric update)."""
    return a**3 / 3 + a * a * b + a * b * b


def _leaf_cost(a, b, r=64):
    return a**3 / 3 + 2 * a * a * r + 2 * a * b * r


def _plan(sizes):
    """Cheapest split of every contiguous run of blocks (dynamic programming over the elimination tree).

    Returns
    -------
    split : dict mapping (i, j) -> h, the block index at which the run ``i..j-1`` is split.
    cost : float, total flops of the plan.
    """
    import functools

    pre = np.concatenate([[0], np.cumsum(sizes)]).astype(float)

    @functools.lru_cache(maxsize=None)
    def best(i, j):
        if j - i == 1:
            return 0.0, None
        out = (np.inf, None)
        for h in range(i + 1, j):
            a, b = pre[h] - pre[i], pre[j] - pre[h]
            c = (_leaf_cost(a, b) if j - h == 1 else _full_cost(a, b) + best(h, j)[0])
            c += _leaf_cost(b, a) if h - i == 1 else _full_cost(b, a) + best(i, h)[0]
            out = min(out, (c, h))
        return out

    split = {}

    def walk(i, j):
        if j - i > 1:
            h = best(i, j)[1]
            split[(i, j)] = h
            walk(i, h)
            walk(h, j)

    walk(0, len(sizes))
    return split, best(0, len(sizes))[0]


def _recurse(ops, S, C, bounds, lo, hi, split, diag_add, out):
    """Residuals of folds ``lo..hi-1``; ``S``/``C`` hold their current Schur complement, ``bounds`` local."""
    h = split[(lo, hi)]
    a = int(bounds[h - lo])
    if hi - h == 1:
        out[h] = _leaf(ops, S, C, a, True, diag_add)
    else:
        SB, CB = _eliminate(ops, S, C, a, True, diag_add)
        _recurse(ops, SB, CB, [b - a for b in bounds[h - lo :]], h, hi, split, 0.0, out)
        del SB, CB
    if h - lo == 1:
        out[lo] = _leaf(ops, S, C, a, False, diag_add)
    else:
        SA, CA = _eliminate(ops, S, C, a, False, diag_add)
        _recurse(ops, SA, CA, list(bounds[: h - lo + 1]), lo, h, split, 0.0, out)


def block_logo_residuals(K, T, bounds, alpha):
    """Held-out kernel ridge residuals for folds that are contiguous blocks of ``K``.

    Parameters
    ----------
    K : ndarray of shape (n, n)
        Symmetric kernel matrix in fold order (only its lower triangle is read); float32 or float64.
    T : ndarray of shape (n, r)
        Targets (or a target basis) in the same order and dtype.
    bounds : sequence of int, length n_folds + 1
        ``bounds[0]`` rows are never held out (always trained on); fold ``f`` is rows
        ``bounds[f]:bounds[f + 1]``; ``bounds[-1] == n``.
    alpha : float
        Ridge penalty added to the kernel diagonal.

    Returns
    -------
    residuals : list of ndarray, fold ``f`` of shape (bounds[f+1] - bounds[f], r)
        ``T_f - K_{f,R} (K_{R,R} + alpha I)^-1 T_R`` with ``R`` = all rows outside fold ``f``.

    Raises
    ------
    numpy.linalg.LinAlgError
        If a block is not numerically positive definite (the caller falls back to a per-fold solve).
    """
    ops = _Ops(K.dtype)
    S = K.T if K.flags.c_contiguous else K  # symmetric: the transpose view is Fortran-ordered, no copy
    C = np.asarray(T, dtype=K.dtype)
    bounds = [int(b) for b in bounds]
    diag_add = alpha
    if bounds[0] > 0:  # samples that are never held out: eliminate them once for every fold
        S, C = _eliminate(ops, S, C, bounds[0], True, diag_add)
        bounds = [b - bounds[0] for b in bounds]
        diag_add = 0.0
    k = len(bounds) - 1
    out = [None] * k
    if k == 1:  # a single fold: its residual is what is left after eliminating the never-held-out rows
        out[0] = np.array(C)
        return out
    split, _ = _plan(tuple(np.diff(bounds)))
    _recurse(ops, S, C, bounds, 0, k, split, diag_add, out)
    return out
