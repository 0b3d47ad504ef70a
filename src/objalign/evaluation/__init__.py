"""Evaluation: one (vision, text) pair -> every protocol, map, null, interval and measure -> a result.

:func:`evaluate_alignment` is the public entry (``objalign.evaluate_alignment``); :class:`AlignmentResult` prints
(``summary``), converts (``to_dict``, ``to_frame``) and writes the report (``write_report``).

Modules
-------
api                 evaluate_alignment and the settings of a call
inputs              checking and shaping the arrays before any work
settings            AlignConfig: every setting with its default (a run's ``align:`` section)
engine              the protocols' folds, rows, intervals and views for one or many text target sets
folds               one fold fitted for every target set (shared PCA, CV engines, smoothers)
pvalues             the rows' permutation p-values
heldout_similarity  similarity measures on held-out features, shuffled floor, calibration
category_level      blind matching, RSA, open-vocabulary retrieval
units, convergence  units of analysis (object / image / prototype) and convergence curves
result              AlignmentResult and report.json's layout
"""

from objalign.evaluation.api import evaluate_alignment
from objalign.evaluation.result import AlignmentResult
from objalign.evaluation.settings import AlignConfig

__all__ = ["evaluate_alignment", "AlignmentResult", "AlignConfig"]
