"""Statistics of alignment results: the figures of a result row, their bootstrap intervals and permutation nulls.

Library code: arrays in, numbers out (no configs, run folders or CLI). Each concept has one home; import the names
from their module (this package imports none of them itself):

:mod:`objalign.stats.metrics`
    The figures of a result row and their one definition: ``FIGURES``, ``UNSEEN_FIGURES``, ``ALL_FIGURES``,
    ``SMALLER_IS_BETTER``, the named subsets (``MEAN_FIGURES``, ``UNIT_FIGURES``, ``CURVE_FIGURES``,
    ``COMPARE_FIGURES``, ``TABLE_FIGURES``), ``is_smaller_better``, ``per_instance``, ``instance_values``,
    ``figures_from_instances``, ``r2_scores``, ``r2_uniform``, ``r2_variance_weighted``, ``summarize``,
    ``per_category``, ``CONSTANT_DIM_RTOL``.
:mod:`objalign.stats.protocols`
    Evaluation protocols and their folds: ``PROTOCOLS``, ``heldout_images``, ``heldout_categories``, ``Fold``.
:mod:`objalign.stats.intervals`
    Bootstrap intervals of every figure of a row on shared image resamples: ``bootstrap_figures``,
    ``figures_for_weights``, ``resample_counts``, ``weighted_median``.
:mod:`objalign.stats.resampling`
    The grouped bootstrap of one statistic: ``bootstrap_ci``, ``BootstrapResult``.
:mod:`objalign.stats.permutation`
    How pairings are permuted (``group_permutations``, ``block_permutations``, ``selection_permutations``) and
    the p-values (``permutation_pvalue``, ``pvalues``, ``grid_max_pvalue`` for the best cell of a grid).
:mod:`objalign.stats.nulls`
    The permutation nulls of fitted linear-smoother maps: ``smoother_operator``, ``FastSmoothers``,
    ``CategoryScorer``, ``smoother_null``, ``smoother_nulls``, ``selection_smoothers``, ``search_choices``,
    ``NULLS``, ``NULL_DESCRIPTIONS``, ``check_null``, ``check_cv_images``, ``describe_null``.
:mod:`objalign.stats.labels`
    Integer codes of repeated labels: ``group_codes`` (image ids), ``unique_rows`` (distinct target rows),
    ``check_positive_int``.

Within the library, ``stats`` imports only :mod:`objalign.maps` (and :mod:`objalign.errors`).
"""
