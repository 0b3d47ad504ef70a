"""Measures: similarity of two representations (no fitting), their calibration, and category-level comparisons.

Modules
-------
similarity   CKA, mutual k-NN, CKNNA, SVCCA, HSIC (no fitting)
registry     measure IDs (``list()``, ``get(id)``): each ID's callable, reference, options and description
calibrate    calibrated similarity scores: permutation thresholds, p-values, Benjamini-Hochberg
permutation  the measures' fast permutation engines (``MEASURES``, ``permutation_engine``)
matching     blind matching of category prototypes
retrieval    retrieval precision at k
rsa          representational similarity analysis

Private modules hold what these share: ``_kernels`` (input checks, dense kernels), ``_sides`` (one side's memoised
quantities, category rows), ``_grouping`` (the engines' sums by permuted codes).

The similarity measures, the registry (:func:`list`, :func:`get`), :func:`calibrated` and :func:`bh_adjust` are
importable from here; everything else from its module (light imports only).

Examples
--------
>>> import numpy as np
>>> from objalign import measures
>>> "cknna" in measures.list()
True
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(50, 6))
>>> round(measures.get("cka_linear")(X, 2.0 * X), 3)  # CKA ignores isotropic scaling
1.0
"""

from objalign.measures.calibrate import bh_adjust, calibrated
from objalign.measures.registry import Measure, get, list_measures
from objalign.measures.similarity import cka, cknna, hsic, mutual_knn, svcca

list = list_measures  # objalign.measures.list(): the measure IDs (shadows the builtin in this module only)

__all__ = ["Measure", "bh_adjust", "calibrated", "cka", "cknna", "get", "hsic", "list", "list_measures", "mutual_knn",
           "svcca"]
