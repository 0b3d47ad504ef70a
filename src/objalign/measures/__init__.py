"""Evaluation: metrics, protocols (held-out images / categories), similarity measures, statistics.

Modules
-------
metrics     figures of a result row (R², cosine, residuals, top-k, ranks) and per-category breakdowns
protocols   ``heldout_images`` and ``heldout_categories`` splits
intervals   bootstrap confidence intervals of every figure, resampling images
nulls       permutation nulls of linear-smoother maps (ridge, kernel ridge) and their p-values
similarity  CKA, mutual k-NN, CKNNA, SVCCA, HSIC (no fitting)
calibrate   calibrated similarity scores: permutation thresholds, p-values, Benjamini-Hochberg
stats       grouped bootstrap, permutation p-values, image-block permutations, ridge permutation null

The similarity measures and :func:`calibrated` are importable from here; everything else from its module (light
imports only).
"""

from objalign.measures.calibrate import bh_adjust, calibrated
from objalign.measures.similarity import cka, cknna, hsic, mutual_knn, svcca

__all__ = ["bh_adjust", "calibrated", "cka", "cknna", "hsic", "mutual_knn", "svcca"]
