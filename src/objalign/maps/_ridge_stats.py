"""Ridge regression and its exact cross-validation from sufficient statistics (second moments).

For features ``F`` (n, p) and targets ``T`` (n, r), every ridge fit on a subset of rows, and the residual
sum of squares of its predictions on another subset, depend on the data only through
``F'F``, ``F'T``, ``F'1``, ``T'1``, ``T'T`` and the row count of each subset. With folds that partition the
data, the statistics of all folds cost one pass over the data (training statistics are "total minus test").
Per fold, either one (p, p) eigendecomposition serves every alpha at O(p^2) each (long alpha grids), or one
Cholesky fit per alpha is cheaper (short grids; :func:`_use_cholesky` decides): no prediction is ever
formed. This is the engine of
:class:`~objalign.maps.RidgeCV` (features = X, with intercept) and of the Nyström
:class:`~objalign.maps.KernelRidgeCV` (features = Nyström map, no intercept).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from objalign.maps._blas import Blas

__all__ = ["Moments", "moments", "ridge_from_moments", "cv_r2_scores"]


@dataclass
class Moments:
    """Second-moment statistics of a set of rows (all float64).

    Attributes
    ----------
    G : ndarray of shape (p, p)      ``F'F``
    E : ndarray of shape (p, r)      ``F'T``
    s : ndarray of shape (p,)        ``F'1``
    t : ndarray of shape (r,)        ``T'1``
    TT : ndarray of shape (r, r) or (r,)
        ``T'T``, or only its diagonal when ``full_tt`` was false.
    n : int                          number of rows
    """

    G: np.ndarray
    E: np.ndarray
    s: np.ndarray
    t: np.ndarray
    TT: np.ndarray
    n: int

    def __add__(self, o):
        return Moments(self.G + o.G, self.E + o.E, self.s + o.s, self.t + o.t, self.TT + o.TT, self.n + o.n)

    def __sub__(self, o):
        return Moments(self.G - o.G, self.E - o.E, self.s - o.s, self.t - o.t, self.TT - o.TT, self.n - o.n)

    @staticmethod
    def zeros(p, r, full_tt):
        return Moments(
            np.zeros((p, p)), np.zeros((p, r)), np.zeros(p), np.zeros(r), np.zeros((r, r) if full_tt else r), 0
        )


def moments(F, T, full_tt):
    """Second moments of one block of rows.

    Parameters
    ----------
    F : ndarray of shape (m, p)
        Features of the rows (any float dtype; accumulated in float64).
    T : ndarray of shape (m, r)
        Targets of the rows.
    full_tt : bool
        Keep the full ``T'T`` (needed when targets are factorised) or only its diagonal.

    Returns
    -------
    Moments
    """
    F = np.asarray(F, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    G = F.T @ F
    return Moments(
        G=G,
        E=F.T @ T,
        s=F.sum(axis=0),
        t=T.sum(axis=0),
        TT=(T.T @ T) if full_tt else np.einsum("ij,ij->j", T, T),
        n=F.shape[0],
    )


def _centre(train, fit_intercept):
    """Centred training statistics and means (zeros without intercept)."""
    if fit_intercept and train.n > 0:
        mx = train.s / train.n
        mt = train.t / train.n
        C = train.G - np.outer(train.s, mx)
        B = train.E - np.outer(train.s, mt)
    else:
        mx = np.zeros_like(train.s)
        mt = np.zeros_like(train.t)
        C, B = train.G, train.E
    return C, B, mx, mt


def _solve_spd(C, alpha, B):
    """Solve ``(C + alpha I) W = B`` by Cholesky (least squares if that fails, as scikit-learn does)."""
    A = C.copy()
    A.flat[:: A.shape[0] + 1] += alpha
    try:
        c = sla.cho_factor(A, lower=True, check_finite=False)
        return sla.cho_solve(c, B, check_finite=False)
    except np.linalg.LinAlgError:
        warnings.warn("Singular matrix in ridge solve; using a least-squares solution instead.", stacklevel=3)
        return sla.lstsq(A, B, check_finite=False)[0]


def ridge_from_moments(train, alpha, fit_intercept):
    """Ridge solution from training moments.

    Returns
    -------
    W : ndarray of shape (p, r)
        Coefficients mapping features to targets.
    b : ndarray of shape (r,)
        Intercept (zeros without intercept).
    """
    C, B, mx, mt = _centre(train, fit_intercept)
    W = _solve_spd(C, alpha, B)
    return W, mt - mx @ W


def cv_r2_scores(folds, alphas, fit_intercept, Z, ss_tot, y_absmax):
    """Held-out R² (scikit-learn's ``"r2"`` scorer) of ridge fits for every fold and alpha.

    Per fold, either one eigendecomposition ``C = V diag(lam) V'`` of the centred training moments serves
    every alpha (with ``f = 1 / (lam + alpha)``, the R²-weighted residual sum of squares
    ``sum_j ss_j / ss_tot_j`` is ``t0 - 2 f.h + f' H f`` for a vector ``h`` and matrix ``H`` built once per
    fold, so each alpha costs O(p^2)), or, for short alpha grids, one Cholesky fit per alpha
    (:func:`_cv_r2_scores_chol`). No prediction is formed.

    Parameters
    ----------
    folds : list of (Moments, Moments)
        (training, test) statistics per fold; ``TT`` full (r, r) when ``Z`` is given, else a diagonal (r,).
    alphas : ndarray of shape (n_alphas,)
    fit_intercept : bool
        Centre features and targets on each training fold (scikit-learn's ``Ridge``) or not.
    Z : ndarray of shape (r, n_targets) or None
        Target basis: the real targets are ``T @ Z``. None means ``Z = I``.
    ss_tot : list of ndarray of shape (n_targets,)
        Total sum of squares of each fold's held-out targets (:func:`~objalign.maps._scoring.total_sum_of_squares`).
    y_absmax : list of float
        Largest absolute held-out target per fold (scale of "exactly zero" residuals of constant outputs).

    Returns
    -------
    scores : ndarray of shape (n_alphas, n_folds)
    """
    return _cv_r2_scores(folds, np.asarray(alphas, dtype=float), fit_intercept, Z, ss_tot, y_absmax)


def _use_cholesky(p, r, n_alphas):
    """Per-alpha Cholesky fits beat one eigendecomposition per fold for short alpha grids.

    Cost model fitted to single-core timings of both engines (``bench/ridge_engines.py``): per fold, a
    (p, p) ``dsyevd`` plus the eigenbasis products costs about ``14 p^3 + 2 p^2 r`` flop-equivalents; a
    Cholesky fit plus its scoring products about ``p^3 / 3 + 4 p^2 r`` per alpha.
    """
    return n_alphas * (p**3 / 3 + 4 * p * p * r) < 14 * p**3 + 2 * p * p * r


def _cv_r2_scores(folds, alphas, fit_intercept, Z, ss_tot, y_absmax):
    p, r = folds[0][0].E.shape
    engine = _cv_r2_scores_chol if _use_cholesky(p, r, len(alphas)) else _cv_r2_scores_eig
    return engine(folds, alphas, fit_intercept, Z, ss_tot, y_absmax)


def _fold_setup(train, test, fit_intercept, Z64, ss_tot):
    """Centred training moments, test moments centred on the training means, and the R² weights."""
    n = test.n
    C, B, mx, mt = _centre(train, fit_intercept)
    # Test statistics centred on the *training* means: rows x - mx, targets t - mt, as two rank-one updates
    # each (G - s mx' - mx s' + n mx mx' = G - (s - n mx) mx' - mx s').
    u, v = test.s - n * mx, test.t - n * mt
    Gc = test.G - np.outer(u, mx) - np.outer(mx, test.s)
    Ec = test.E - np.outer(u, mt) - np.outer(mx, test.t)
    if Z64 is not None:
        TTc = test.TT - np.outer(v, mt) - np.outer(mt, test.t)
    else:
        TTc = test.TT - v * mt - mt * test.t
    tot = np.asarray(ss_tot, dtype=np.float64)
    nz = tot != 0
    w = np.zeros(tot.shape[0])
    w[nz] = 1.0 / tot[nz]
    return C, B, Gc, Ec, TTc, w, nz


def _over_folds(fold_fn, folds, alphas, fit_intercept, Z, ss_tot, y_absmax):
    """Scores (n_alphas, n_folds) from ``fold_fn(setup, alphas, Z64, tiny)``, which returns, per alpha,
    the sum over outputs of R² (so dividing by the number of outputs gives scikit-learn's uniform average)."""
    Z64 = None if Z is None else np.asarray(Z, dtype=np.float64)
    n_targets = folds[0][0].E.shape[1] if Z is None else Z.shape[1]
    scores = np.empty((len(alphas), len(folds)))
    eps = np.finfo(np.float64).eps
    for f, (train, test) in enumerate(folds):
        if test.n < 2:  # scikit-learn returns NaN (with a warning) for R² on fewer than two samples
            scores[:, f] = np.nan
            continue
        setup = _fold_setup(train, test, fit_intercept, Z64, ss_tot[f])
        tiny = test.n * (64 * eps * (1.0 + y_absmax[f])) ** 2  # "exactly zero" residual of a constant output
        scores[:, f] = fold_fn(setup, alphas, Z64, tiny) / n_targets
    return scores


def _gram_factor(blas, G):
    """Lower ``R`` with ``R R' = G`` for a positive semi-definite ``G``: Cholesky, or ``Q sqrt(lam)`` if singular."""
    R = np.asfortranarray(G).copy(order="F")
    if blas.potrf(R) == 0:
        return R, True  # lower triangle (trmm reads only that)
    lam, Q = sla.eigh(G, check_finite=False)
    return np.asfortranarray(Q * np.sqrt(np.clip(lam, 0.0, None))), False


def _fold_chol(setup, alphas, Z64, tiny):
    """Per alpha: Cholesky of ``C + alpha I`` and coefficients ``W``. The held-out weighted residual sum of
    squares is ``tr((T'T - 2 W'E + W'GW) M)`` with test moments centred on the training means and
    ``M = Z diag(1/ss_tot) Z'`` (diagonal without a target basis); with ``G = R R'`` (one factorisation per
    fold) ``tr(W'GW M) = sum((P M) * P)`` for ``P = R'W``, one triangular product for all alphas, and
    ``tr(W'E M) = sum(W * (E M))``: no (p, p) x (p, r) product per alpha."""

    blas = Blas(np.float64)
    C, B, Gc, Ec, TTc, w, nz = setup
    zero = np.flatnonzero(~nz)
    p, r = B.shape
    if Z64 is not None:
        M = (Z64 * w) @ Z64.T
        EM = Ec @ M
        t0 = float(np.sum(TTc * M))
    else:
        EM = Ec * w
        t0 = float(TTc @ w)
    Cf = np.asfortranarray(C)
    Ws = np.empty((p, len(alphas) * r), order="F")
    for a, alpha in enumerate(alphas):
        W = Ws[:, a * r : (a + 1) * r]  # a Fortran-contiguous column block
        A = Cf.copy(order="F")
        A.flat[:: p + 1] += alpha
        if blas.potrf(A) != 0:
            W[...] = _solve_spd(C, alpha, B)
            continue
        W[...] = B
        blas.trsm(A, W)
        blas.trsm(A, W, trans=True)
    R, triangular = _gram_factor(blas, Gc)
    Ps = blas.trmm(R, Ws.copy(order="F"), trans=True) if triangular else R.T @ Ws
    total = np.empty(len(alphas))
    for a in range(len(alphas)):
        W, P = Ws[:, a * r : (a + 1) * r], Ps[:, a * r : (a + 1) * r]
        quad = float(np.sum((P @ M) * P)) if Z64 is not None else float(np.einsum("ij,ij->j", P, P) @ w)
        total[a] = nz.sum() - (t0 - 2 * float(np.sum(W * EM)) + quad)
        for j in zero:  # constant held-out outputs: scikit-learn scores 1 if predicted exactly, else 0
            if Z64 is not None:
                z = Z64[:, j]
                ss = float(z @ TTc @ z) - 2 * float((W @ z) @ (Ec @ z)) + float(np.sum((P @ z) ** 2))
            else:
                ss = float(TTc[j]) - 2 * float(W[:, j] @ Ec[:, j]) + float(P[:, j] @ P[:, j])
            total[a] += ss <= tiny
    return total


def _fold_eig(setup, alphas, Z64, tiny):
    """One eigendecomposition ``C = V diag(lam) V'`` for every alpha: with ``f = 1 / (lam + alpha)`` the
    weighted residual sum of squares is ``t0 - 2 f.h + f' H f``, O(p^2) per alpha."""
    C, B, Gc, Ec, TTc, w, nz = setup
    lam, V = sla.eigh(C, check_finite=False, driver="evd")
    Bp, Ecp = V.T @ B, V.T @ Ec
    Gcp = V.T @ Gc @ V
    if Z64 is not None:
        M = (Z64 * w) @ Z64.T
        t0 = float(np.sum(TTc * M))
        BM = Bp @ M
    else:
        t0 = float(TTc @ w)
        BM = Bp * w
    h = np.einsum("ka,ka->k", Ecp, BM)
    H = Gcp * (BM @ Bp.T)
    F = 1.0 / (lam[None, :] + alphas[:, None])  # (n_alphas, p)
    total = nz.sum() - (t0 - 2 * F @ h + ((F @ H) * F).sum(axis=1))
    for j in np.flatnonzero(~nz):  # constant held-out outputs: scikit-learn scores 1 if predicted exactly, else 0
        z = Z64[:, j] if Z64 is not None else np.eye(w.shape[0])[:, j]
        b, e = Bp @ z, Ecp @ z
        tt = float(z @ TTc @ z) if Z64 is not None else float(TTc[j])
        Fb = F * b
        ss_j = tt - 2 * Fb @ e + ((Fb @ Gcp) * Fb).sum(axis=1)
        total = total + (ss_j <= tiny)
    return total


def _cv_r2_scores_chol(folds, alphas, fit_intercept, Z, ss_tot, y_absmax):
    """The per-alpha Cholesky engine over all folds (see :func:`_fold_chol`)."""
    return _over_folds(_fold_chol, folds, alphas, fit_intercept, Z, ss_tot, y_absmax)


def _cv_r2_scores_eig(folds, alphas, fit_intercept, Z, ss_tot, y_absmax):
    """The eigendecomposition engine over all folds (see :func:`_fold_eig`)."""
    return _over_folds(_fold_eig, folds, alphas, fit_intercept, Z, ss_tot, y_absmax)
