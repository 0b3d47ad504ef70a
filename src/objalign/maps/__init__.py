"""Alignment engine: scikit-learn-compatible maps from vision to language space, with exact fast CV.

Estimators
----------
PCAMatch        PCA to a common dimension (fit on training data only).
Ridge           linear ridge (intercept by default), as ``sklearn.linear_model.Ridge``.
RidgeCV         ridge with alpha chosen by K-fold CV (exact ``GridSearchCV`` scores, shared statistics).
KernelRidge     kernel ridge (linear, rbf, laplacian, polynomial, cosine), exact or Nyström.
KernelRidgeCV   kernel ridge with (alpha, gamma) chosen by K-fold CV (shared distances and eliminations).
Procrustes      orthogonal map after matching dimensions.

``check_xy`` validates a vision/text pair, ``check_matrix`` one array, with one clear error before any heavy work.

Engines
-------
The exact cross-validation engines under the estimators, public for the permutation nulls of
:mod:`objalign.stats.nulls` and the shared fold fits of :mod:`objalign.evaluation.folds` (which refit the same
searches under many relabellings of the training pairing):

ridge_choices, kernel_choices   the grid index the CV search picks under each relabelling
WeightCache                     the relabellings' target weights, shared by ridge's and kernel ridge's searches
param_grid, resolve_splits      the hyperparameter grid and the grouped CV folds, as the estimators build them
kernel_matrix                   the kernel matrix of a kernel name and gamma
solve_spd, solve_kernel         ridge's and kernel ridge's regularised solves
indicator                       (B, n) label rows -> sparse (B * c, n) transposed one-hot indicators
"""

from objalign.maps._kernels import kernel_matrix
from objalign.maps._permuted_cv import WeightCache, kernel_choices, ridge_choices
from objalign.maps._permuted_cv import _indicator as indicator
from objalign.maps._ridge_stats import _solve_spd as solve_spd
from objalign.maps._search import param_grid
from objalign.maps._splits import resolve_splits
from objalign.maps._validation import check_grid, check_matrix, check_xy
from objalign.maps.kernel import KernelRidge, KernelRidgeCV
from objalign.maps.kernel import _solve_kernel as solve_kernel
from objalign.maps.linear import Ridge, RidgeCV
from objalign.maps.pca import PCAMatch
from objalign.maps.procrustes import Procrustes

__all__ = [
    "PCAMatch",
    "Ridge",
    "RidgeCV",
    "KernelRidge",
    "KernelRidgeCV",
    "Procrustes",
    "check_xy",
    "check_matrix",
    "check_grid",
    "ridge_choices",
    "kernel_choices",
    "WeightCache",
    "param_grid",
    "resolve_splits",
    "kernel_matrix",
    "solve_spd",
    "solve_kernel",
    "indicator",
]
