"""R² exactly as scikit-learn's ``"r2"`` scorer computes it, from residual sums of squares.

The fast cross-validation engines never form predictions; they produce the per-output residual sum of
squares of each held-out fold. This module turns those into scikit-learn's R² (uniform average over outputs,
``force_finite=True``: a constant held-out output scores 1 if predicted exactly, else 0).
"""

from __future__ import annotations

import numpy as np

__all__ = ["total_sum_of_squares", "held_out_totals", "r2_from_ss"]


def total_sum_of_squares(Y_test):
    """Per-output total sum of squares of a held-out fold, computed the way scikit-learn does.

    Parameters
    ----------
    Y_test : ndarray of shape (n_test, n_targets)

    Returns
    -------
    ss_tot : ndarray of shape (n_targets,), float64
    """
    Y = np.asarray(Y_test, dtype=np.float64)
    return ((Y - np.average(Y, axis=0)) ** 2).sum(axis=0)


def held_out_totals(Y, splits, basis=None):
    """:func:`total_sum_of_squares` and the largest absolute value of every fold's held-out targets.

    With ``basis`` factorised (``Y = Z[codes]``, :mod:`objalign.maps._targets`) both come from the category
    counts of each fold and the distinct rows ``Z``, without touching the (n_test, n_targets) rows; a fold
    with a (nearly) constant output, where scikit-learn's exact arithmetic decides whether R² is 0, 1 or
    huge, takes the direct path. The direct path does ``total_sum_of_squares(Y[test])``'s arithmetic bit for
    bit, in one reused float64 buffer.

    Parameters
    ----------
    Y : ndarray of shape (n_samples, n_targets)
    splits : list of (train, test) index arrays
    basis : TargetBasis, optional

    Returns
    -------
    ss_tot : list of ndarray of shape (n_targets,)
    absmax : list of float
    """
    tots, absmax = [], []
    buf = None
    Z = None if basis is None or basis.Z is None else np.asarray(basis.Z, dtype=np.float64)
    for _, test in splits:
        if Z is not None and len(test):
            counts = np.bincount(basis.codes[test], minlength=Z.shape[0])
            present = counts > 0
            c, Zp = counts[present].astype(np.float64), Z[present]
            D = Zp - (c @ Zp) / len(test)
            tot = c @ (D * D)
            if (tot > 1e-9 * (c @ (Zp * Zp))).all():
                tots.append(tot)
                absmax.append(float(np.abs(Zp).max()))
                continue
        if buf is None:
            buf = np.empty((max(len(t) for _, t in splits), Y.shape[1]))
        Yt = buf[: len(test)]
        if Y.dtype == np.float64:
            np.take(Y, test, axis=0, out=Yt)
        else:
            Yt[...] = Y[test]
        absmax.append(max(float(Yt.max()), -float(Yt.min())) if Yt.size else 0.0)
        Yt -= np.average(Yt, axis=0)
        np.square(Yt, out=Yt)
        tots.append(Yt.sum(axis=0))
    return tots, absmax


def r2_from_ss(ss_res, ss_tot, exact_zero=None):
    """scikit-learn's R² (uniform average over outputs) from residual and total sums of squares.

    Parameters
    ----------
    ss_res : ndarray of shape (..., n_targets)
        Residual sum of squares per output (any leading axes, e.g. one per grid point).
    ss_tot : ndarray of shape (n_targets,)
        Total sum of squares of the held-out targets.
    exact_zero : ndarray of bool, shape like ``ss_res``, optional
        Where the residual is known to be exactly zero (only consulted for constant outputs).

    Returns
    -------
    r2 : ndarray of shape (...)
    """
    ss_res = np.asarray(ss_res, dtype=np.float64)
    ss_tot = np.asarray(ss_tot, dtype=np.float64)
    nonzero_den = ss_tot != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(nonzero_den, 1.0 - ss_res / np.where(nonzero_den, ss_tot, 1.0), 0.0)
    if not nonzero_den.all():
        zero_num = (ss_res == 0) if exact_zero is None else exact_zero
        scores = np.where(~nonzero_den & zero_num, 1.0, scores)
    return scores.mean(axis=-1)
