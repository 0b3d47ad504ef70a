"""Orthogonal Procrustes map between two embedding spaces after matching their dimensions."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from objalign.errors import ObjalignError
from objalign.maps._validation import check_fit_input, check_positive
from objalign.maps.pca import pca_fit

__all__ = ["Procrustes"]


class Procrustes(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Rotation (optionally with one global scale) from ``X``-space to ``Y``-space.

    Both spaces are centred and, if their dimensions differ (or ``n_components`` is set), projected onto
    their top ``k`` principal axes fitted on the training data. The map is the orthogonal ``R`` (k, k)
    minimising ``||X_k s R - Y_k||_F`` (``R = U V'`` from the SVD of ``X_k' Y_k``), then mapped back to
    ``Y``-space with the ``Y`` axes. Predictions are linear: ``X @ coef_.T + intercept_``.

    Parameters
    ----------
    n_components : int or None, default=None
        Common dimension ``k``; ``None`` means ``min(n_features_x, n_targets, n_samples)``, with no PCA for
        a side already of that dimension.
    scale : bool, default=False
        Also fit one global scale ``s`` (similarity transform); otherwise ``s = 1`` (pure rotation).

    Attributes
    ----------
    rotation_ : ndarray of shape (k, k)
    scale_ : float
    coef_ : ndarray of shape (n_targets, n_features) or (n_features,)
    intercept_ : ndarray of shape (n_targets,) or float
    n_components_ : int
    """

    def __init__(self, n_components=None, scale=False):
        self.n_components = n_components
        self.scale = scale

    def fit(self, X, y):
        """Fit the map on ``X`` (n_samples, n_features) and ``y`` (n_samples, n_targets) or (n_samples,)."""
        check_positive(self.n_components, "n_components", integer=True, allow_none=True)
        X, y, _ = check_fit_input(self, X, y)
        Y = np.asarray(y.reshape(-1, 1) if y.ndim == 1 else y, dtype=np.float64)
        X64 = np.asarray(X, dtype=np.float64)
        n, dx = X64.shape
        dy = Y.shape[1]
        k = min(dx, dy, n) if self.n_components is None else int(self.n_components)
        if k > min(dx, dy, n):
            raise ObjalignError(
                f"n_components={k}; expected at most min(n_features={dx}, n_targets={dy}, n_samples={n})="
                f"{min(dx, dy, n)}: lower n_components"
            )

        def axes(A):
            if A.shape[1] == k and self.n_components is None:
                return A.mean(axis=0), np.eye(k)
            mean, comps, _, _ = pca_fit(A, k)
            return mean, comps

        mx, Px = axes(X64)
        my, Py = axes(Y)
        Xk = (X64 - mx) @ Px.T
        Yk = (Y - my) @ Py.T
        U, S, Vt = np.linalg.svd(Xk.T @ Yk)
        R = U @ Vt
        norm = float((Xk * Xk).sum())
        s = float(S.sum() / norm) if (self.scale and norm > 0) else 1.0
        W = Px.T @ (s * R) @ Py  # (dx, dy)
        self.rotation_ = R
        self.scale_ = s
        self.n_components_ = k
        coef = W.T.astype(X.dtype)
        intercept = (my - mx @ W).astype(X.dtype)
        if y.ndim == 1:
            self.coef_, self.intercept_ = coef.ravel(), intercept[0]
        else:
            self.coef_, self.intercept_ = coef, intercept
        return self

    def predict(self, X):
        """Map ``X`` (n_samples, n_features) to (n_samples, n_targets) (or (n_samples,) for 1-D ``y``)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return X @ self.coef_.T + self.intercept_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()  # MultiOutputMixin marks multi-output targets
        # A rotation cannot fit arbitrary regression targets (one 1-D target leaves a sign flip of one PCA
        # axis), so scikit-learn's "score > 0.5 on the training data" regressor check does not apply.
        tags.regressor_tags.poor_score = True
        return tags
