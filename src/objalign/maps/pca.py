"""PCA to a common dimension, fitted on training data only: :class:`PCAMatch`."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from objalign.errors import ObjalignError
from objalign.maps._validation import check_matrix, check_positive

__all__ = ["PCAMatch", "pca_fit"]


_CHUNK_ROWS = 65536


def pca_fit(X, n_components):
    """Principal axes of ``X`` (exact, via the smaller of the covariance and Gram eigenproblems).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    n_components : int

    Returns
    -------
    mean : ndarray of shape (n_features,)
    components : ndarray of shape (n_components, n_features)
        Orthonormal rows, largest variance first; signs fixed so the largest-magnitude entry of each row is
        positive (deterministic across runs and solvers).
    explained_variance : ndarray of shape (n_components,)
        Variance along each axis (``ddof=1``, as scikit-learn).
    total_variance : float
    """
    n, p = X.shape
    if p <= n:
        # the (p, p) scatter matrix in float64, accumulated over row chunks: no (n, p) float64 or centred copy
        # of X, which at full-COCO scale (860k x 256) would cost 3.5 GB
        mean = np.asarray(X).mean(axis=0, dtype=np.float64)
        scatter = np.zeros((p, p))
        for lo in range(0, n, _CHUNK_ROWS):
            Xc = np.asarray(X[lo:lo + _CHUNK_ROWS], dtype=np.float64) - mean
            scatter += Xc.T @ Xc
        total_ss = float(np.trace(scatter))
        evals, evecs = np.linalg.eigh(scatter)
        evals, evecs = evals[::-1][:n_components], evecs[:, ::-1][:, :n_components]
        comps = evecs.T
    else:
        X64 = np.asarray(X, dtype=np.float64)
        mean = X64.mean(axis=0)
        Xc = X64 - mean
        evals, U = np.linalg.eigh(Xc @ Xc.T)
        evals, U = evals[::-1][:n_components], U[:, ::-1][:, :n_components]
        comps = (Xc.T @ U / np.sqrt(np.maximum(evals, np.finfo(float).tiny))).T
        total_ss = float((Xc * Xc).sum())
    evals = np.maximum(evals, 0.0)
    big = np.argmax(np.abs(comps), axis=1)
    comps *= np.sign(comps[np.arange(comps.shape[0]), big])[:, None]
    denom = max(n - 1, 1)
    total = total_ss / denom
    return mean, comps, evals / denom, total


class PCAMatch(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Project onto the top ``n_components`` principal axes of the training data.

    Used to bring vision (e.g. 1024-d) and text (512-d) embeddings to one common dimension before a map is
    fitted. Fit it on the training split only; ``transform`` then applies the training mean and axes.

    Parameters
    ----------
    n_components : int or None, default=None
        Target dimension; ``None`` keeps ``min(n_samples, n_features)``. Must not exceed that.
    whiten : bool, default=False
        Divide each projected axis by its standard deviation.

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,)
    components_ : ndarray of shape (n_components, n_features)
    explained_variance_ : ndarray of shape (n_components,)
    explained_variance_ratio_ : ndarray of shape (n_components,)
    n_components_ : int
    """

    def __init__(self, n_components=None, whiten=False):
        self.n_components = n_components
        self.whiten = whiten

    def fit(self, X, y=None):
        """Fit the axes on ``X`` of shape (n_samples, n_features); ``y`` is ignored. Returns self."""
        check_positive(self.n_components, "n_components", integer=True, allow_none=True)
        X = check_matrix(X, "X", min_samples=1)
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        n, p = X.shape
        k = min(n, p) if self.n_components is None else int(self.n_components)
        if k > min(n, p):
            raise ObjalignError(
                f"n_components={k} but X has shape {X.shape}; expected n_components <= min(n_samples, n_features)"
                f"={min(n, p)}: lower n_components or pass more samples"
            )
        mean, comps, ev, total = pca_fit(X, k)
        self.mean_ = mean.astype(X.dtype)
        self.components_ = comps.astype(X.dtype)
        self.explained_variance_ = ev.astype(X.dtype)
        self.explained_variance_ratio_ = (ev / total if total > 0 else np.zeros_like(ev)).astype(X.dtype)
        self.n_components_ = k
        self._n_features_out = k
        return self

    def transform(self, X):
        """Project ``X`` (n_samples, n_features) to shape (n_samples, n_components_)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        # X @ C.T - mean @ C.T: the same projection without an (n, d) centred copy of X (memory at full-COCO scale)
        Z = X @ self.components_.T.astype(X.dtype, copy=False)
        Z -= (self.mean_ @ self.components_.T).astype(X.dtype, copy=False)
        if self.whiten:
            Z /= np.sqrt(np.maximum(self.explained_variance_, np.finfo(X.dtype).tiny))
        return Z

    def inverse_transform(self, Z):
        """Map projections (n_samples, n_components_) back to (n_samples, n_features)."""
        check_is_fitted(self)
        Z = np.asarray(Z, dtype=self.components_.dtype)
        if self.whiten:
            Z = Z * np.sqrt(self.explained_variance_)
        return Z @ self.components_ + self.mean_
