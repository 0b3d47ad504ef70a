"""Grid bookkeeping shared by the cross-validated estimators: ``cv_results_`` as ``GridSearchCV`` lays it out."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from objalign.maps._scoring import r2_from_ss

__all__ = ["param_grid", "build_cv_results", "fold_scores"]


def param_grid(alphas, gammas=None):
    """Grid points in ``GridSearchCV`` order (keys sorted, last key fastest): alpha outer, gamma inner.

    Returns
    -------
    params : list of dict
    """
    if gammas is None:
        return [{"alpha": float(a)} for a in alphas]
    return [{"alpha": float(a), "gamma": float(g)} for a in alphas for g in gammas]


def fold_scores(ss_res, ss_tot, n_test, Y_test_absmax):
    """R² of each grid point on one fold.

    Parameters
    ----------
    ss_res : ndarray of shape (n_points, n_targets)
    ss_tot : ndarray of shape (n_targets,)
    n_test : int
    Y_test_absmax : float
        Largest absolute held-out target (scale for "exactly zero" residuals of constant outputs).

    Returns
    -------
    scores : ndarray of shape (n_points,)
    """

    if n_test < 2:  # scikit-learn returns NaN (with a warning) for R² on fewer than two samples
        return np.full(ss_res.shape[0], np.nan)
    tiny = n_test * (64 * np.finfo(np.float64).eps * (1.0 + Y_test_absmax)) ** 2
    return r2_from_ss(ss_res, ss_tot, exact_zero=ss_res <= tiny)


def build_cv_results(params, scores):
    """``cv_results_`` dict and best index from a (n_points, n_folds) score table.

    Returns
    -------
    cv_results : dict
        ``params``, ``param_<name>``, ``split<k>_test_score``, ``mean_test_score``, ``std_test_score``,
        ``rank_test_score``.
    best_index : int
        First grid point of rank 1, as ``GridSearchCV`` picks it.
    """
    scores = np.asarray(scores, dtype=np.float64)
    results = {"params": list(params)}
    for key in params[0]:
        results[f"param_{key}"] = np.array([p[key] for p in params], dtype=object)
    for k in range(scores.shape[1]):
        results[f"split{k}_test_score"] = scores[:, k]
    mean = scores.mean(axis=1)
    results["mean_test_score"] = mean
    results["std_test_score"] = scores.std(axis=1)
    if np.isnan(mean).all():
        rank = np.ones(mean.shape[0], dtype=np.int32)
    else:
        filled = np.where(np.isnan(mean), np.nanmin(mean) - 1, mean)
        rank = rankdata(-filled, method="min").astype(np.int32)
    results["rank_test_score"] = rank
    return results, int(np.argmin(rank))
