"""Linear ridge maps: :class:`Ridge` and its exact, fast cross-validated :class:`RidgeCV`."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from objalign.maps._ridge_stats import Moments, _solve_spd, cv_r2_scores, moments, ridge_from_moments
from objalign.maps._scoring import held_out_totals
from objalign.maps._search import build_cv_results, param_grid
from objalign.maps._splits import find_partition, resolve_splits
from objalign.maps._targets import factor_targets
from objalign.maps._validation import check_fit_input, check_grid, check_positive
from objalign.maps.threads import small_blas

__all__ = ["Ridge", "RidgeCV"]


def _as_2d(y):
    return y.reshape(-1, 1) if y.ndim == 1 else y


def _finish_fit(est, X, y, coef, intercept):
    """Store ``coef_``/``intercept_`` with scikit-learn's shapes for 1-D or 2-D ``y``, in ``X``'s dtype."""
    coef = np.asarray(coef, dtype=X.dtype)
    intercept = np.asarray(intercept, dtype=X.dtype)
    if y.ndim == 1:
        est.coef_ = coef.ravel()
        est.intercept_ = intercept.reshape(-1)[0]
    else:
        est.coef_ = coef
        est.intercept_ = intercept


class _LinearPredictMixin:
    def predict(self, X):
        """Map inputs to target space.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        Y : ndarray of shape (n_samples, n_targets) or (n_samples,) if fitted on 1-D ``y``
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return X @ self.coef_.T + self.intercept_


class Ridge(_LinearPredictMixin, MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Linear least squares with L2 penalty, as ``sklearn.linear_model.Ridge`` (Cholesky solver).

    Minimises ``||Y - X W - b||^2 + alpha ||W||^2``; with ``fit_intercept`` the columns of ``X`` and ``Y`` are
    centred first (the intercept is not penalised).

    Parameters
    ----------
    alpha : float, default=1.0
        Penalty strength, ``>= 0``.
    fit_intercept : bool, default=True
        Fit an intercept (scikit-learn's default).

    Attributes
    ----------
    coef_ : ndarray of shape (n_targets, n_features) or (n_features,)
    intercept_ : ndarray of shape (n_targets,) or float
    n_features_in_ : int
    """

    def __init__(self, alpha=1.0, fit_intercept=True):
        self.alpha = alpha
        self.fit_intercept = fit_intercept

    def fit(self, X, y):
        """Fit the map.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)

        Returns
        -------
        self
        """
        check_positive(self.alpha, "alpha", low_inclusive=True)
        X, y, _ = check_fit_input(self, X, y)
        Y = _as_2d(np.asarray(y, dtype=X.dtype))
        W, b = solve_ridge(X, Y, float(self.alpha), self.fit_intercept)
        _finish_fit(self, X, y, W.T, b)
        return self


def solve_ridge(X, Y, alpha, fit_intercept=True):
    """Ridge coefficients by Cholesky on the primal or dual normal equations (scikit-learn's choice).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    Y : ndarray of shape (n_samples, n_targets)
    alpha : float
    fit_intercept : bool

    Returns
    -------
    W : ndarray of shape (n_features, n_targets)
    b : ndarray of shape (n_targets,)
    """

    if fit_intercept:
        mx = X.mean(axis=0)
        my = Y.mean(axis=0)
        Xc = X - mx
        Yc = Y - my
    else:
        Xc, Yc = X, Y
    n, p = Xc.shape
    if p <= n:
        W = _solve_spd(Xc.T @ Xc, alpha, Xc.T @ Yc)
    else:
        W = Xc.T @ _solve_spd(Xc @ Xc.T, alpha, Yc)
    b = (my - mx @ W) if fit_intercept else np.zeros(Y.shape[1], dtype=W.dtype)
    return W, b


_CHUNK = 32768


def _column_mean(A):
    """Column means in float64, streamed in chunks. Returns shape (n_columns,)."""
    acc = np.zeros(A.shape[1])
    for s in range(0, A.shape[0], _CHUNK):
        acc += np.asarray(A[s : s + _CHUNK], dtype=np.float64).sum(axis=0)
    return acc / A.shape[0]


def _block_moments(X, basis, shift, idx_blocks, full_tt):
    """Moments (float64) of rows ``idx`` of ``X - shift[0]`` and of the targets, for each index block.

    The targets are the category indicator when ``basis`` is factorised, else ``Y - shift[1]``.
    """
    out = []
    mx, my = shift
    # One reused float64 buffer for the gathered rows: a fresh array per block costs more in page faults
    # than the gather itself.
    buf = np.empty((min(_CHUNK, max((idx.size for idx in idx_blocks), default=0)), X.shape[1]))
    for idx in idx_blocks:
        acc = None
        for s in range(0, max(idx.size, 1), _CHUNK):
            rows = idx[s : s + _CHUNK]
            if my is None:  # factorised targets: rows sorted by category, indicator moments by counting
                rows = rows[np.argsort(basis.codes[rows], kind="stable")]
            F = buf[: rows.size]
            if X.dtype == np.float64:
                np.take(X, rows, axis=0, out=F)
            else:
                F[...] = X[rows]
            F -= mx
            if my is None:
                m_ = _indicator_moments(F, basis.codes[rows], basis.r)
            else:
                m_ = moments(F, np.asarray(basis.Y[rows], dtype=np.float64) - my, full_tt)
            acc = m_ if acc is None else acc + m_
        out.append(acc)
    return out


def _indicator_moments(F, codes, r):
    """:func:`moments` of ``F`` with the one-hot targets of ``codes`` (sorted), without forming them.

    ``F'T`` is the per-category sum of rows, ``T'1`` the category counts and ``T'T`` their diagonal.
    """
    counts = np.bincount(codes, minlength=r)
    E = np.zeros((F.shape[1], r))
    if codes.size:
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        E[:, codes[starts]] = np.add.reduceat(F, starts, axis=0).T
    t = counts.astype(np.float64)
    return Moments(G=F.T @ F, E=E, s=F.sum(axis=0), t=t, TT=np.diag(t), n=F.shape[0])


class RidgeCV(_LinearPredictMixin, MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Ridge with the penalty chosen by K-fold cross-validation; exact and fast.

    ``mean_test_score`` equals ``GridSearchCV(sklearn.linear_model.Ridge(), {"alpha": alphas}, cv=cv,
    scoring="r2")``'s (up to rounding), the same ``alpha`` is chosen, and the model is refitted on all data.

    Each fold costs one pass to accumulate second moments (for folds that partition the data, training
    moments are "total minus test"); then, per fold, one (p, p) eigendecomposition serves every alpha at
    O(p^2) each, or for short alpha grids one Cholesky fit per alpha is cheaper (a cost model picks). No
    prediction is formed: held-out R² follows from the test-fold moments. Targets with few distinct rows
    (one text embedding per category) are solved for the category indicator and mapped back exactly.

    Parameters
    ----------
    alphas : sequence of float, default=(0.1, 1.0, 10.0)
        Penalties to try, each ``> 0``.
    cv : int, scikit-learn splitter or iterable of (train, test), default=5
        An int ``k`` means ``KFold(k)`` (as ``GridSearchCV`` does for regressors); pass ``GroupKFold`` with
        ``groups`` in ``fit`` to keep all objects of one image in one fold. (scikit-learn's own ``RidgeCV``
        uses leave-one-out for ``cv=None``; this class always uses K folds.)
    fit_intercept : bool, default=True

    Attributes
    ----------
    best_params_ : dict
        ``{"alpha": best}``.
    best_score_ : float
        Mean held-out R² of the best alpha.
    best_index_ : int
    alpha_ : float
    cv_results_ : dict
        ``params``, ``param_alpha``, ``split<k>_test_score``, ``mean_test_score``, ``std_test_score``,
        ``rank_test_score``.
    n_splits_ : int
    coef_ : ndarray of shape (n_targets, n_features) or (n_features,)
    intercept_ : ndarray of shape (n_targets,) or float
    """

    def __init__(self, alphas=(0.1, 1.0, 10.0), cv=5, fit_intercept=True):
        self.alphas = alphas
        self.cv = cv
        self.fit_intercept = fit_intercept

    def fit(self, X, y, groups=None):
        """Cross-validate every alpha, then refit the best on all of ``X, y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        groups : array-like of shape (n_samples,), optional
            Group labels for group-aware splitters (e.g. image ids with ``GroupKFold``).

        Returns
        -------
        self
        """
        alphas = check_grid(self.alphas, "alphas")
        X, y, groups = check_fit_input(self, X, y, groups, cv=self.cv)
        n = X.shape[0]
        splits = resolve_splits(self.cv, X, y, groups, n)
        with small_blas(X.shape[1]):
            return self._fit(X, y, splits, alphas)

    def _fit(self, X, y, splits, alphas):
        n = X.shape[0]
        Y = _as_2d(y)
        # Shifting X (and unfactorised Y) by global means changes nothing with an intercept, and keeps the
        # moment algebra free of cancellation. Rows are streamed in chunks: no float64 copy of X or Y.
        mx = _column_mean(X) if self.fit_intercept else np.zeros(X.shape[1])
        basis = factor_targets(Y)
        factorised = basis.Z is not None
        my = _column_mean(Y) if (self.fit_intercept and not factorised) else np.zeros(Y.shape[1])
        shift = (mx, None if factorised else my)

        part = find_partition(splits, n)
        if part is not None:
            bounds = part.bounds
            blocks = [part.order[: bounds[0]]] + [part.order[bounds[f] : bounds[f + 1]] for f in range(len(splits))]
            mom = _block_moments(X, basis, shift, blocks, factorised)
            total = mom[0]
            for m_ in mom[1:]:
                total = total + m_
            folds = [(total - mom[f + 1], mom[f + 1]) for f in range(len(splits))]
        else:
            folds = []
            for train, test in splits:
                tr, te = _block_moments(X, basis, shift, [train, test], factorised)
                folds.append((tr, te))
            total = _block_moments(X, basis, shift, [np.arange(n)], factorised)[0]

        tots, absmax = held_out_totals(Y, splits, basis)
        scores = cv_r2_scores(folds, alphas, self.fit_intercept, basis.Z, tots, absmax)
        params = param_grid(alphas)
        self.cv_results_, self.best_index_ = build_cv_results(params, scores)
        self.best_params_ = params[self.best_index_]
        self.best_score_ = float(self.cv_results_["mean_test_score"][self.best_index_])
        self.alpha_ = self.best_params_["alpha"]
        self.n_splits_ = len(splits)

        W, b = ridge_from_moments(total, self.alpha_, self.fit_intercept)
        if factorised:
            W, b = W @ basis.Z, b @ basis.Z
        b = b - mx @ W + my
        _finish_fit(self, X, y, W.T, b)
        return self


