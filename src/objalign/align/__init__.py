"""Alignment engine: scikit-learn-compatible maps from vision to language space, with exact fast CV.

Estimators
----------
PCAMatch        PCA to a common dimension (fit on training data only).
Ridge           linear ridge (intercept by default), as ``sklearn.linear_model.Ridge``.
RidgeCV         ridge with alpha chosen by K-fold CV (exact ``GridSearchCV`` scores, shared statistics).
KernelRidge     kernel ridge (linear, rbf, laplacian, polynomial, cosine), exact or Nyström.
KernelRidgeCV   kernel ridge with (alpha, gamma) chosen by K-fold CV (shared distances and eliminations).
Procrustes      orthogonal map after matching dimensions.

``check_xy`` validates a vision/text pair with one clear error before any heavy work.
"""

from objalign.align._validation import check_grid, check_xy
from objalign.align.kernel import KernelRidge, KernelRidgeCV
from objalign.align.linear import Ridge, RidgeCV
from objalign.align.pca import PCAMatch
from objalign.align.procrustes import Procrustes

__all__ = [
    "PCAMatch",
    "Ridge",
    "RidgeCV",
    "KernelRidge",
    "KernelRidgeCV",
    "Procrustes",
    "check_xy",
    "check_grid",
]
