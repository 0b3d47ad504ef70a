"""The settings of an evaluation: every protocol, map, null, interval and measure, with its default.

:class:`AlignConfig` is the frozen dataclass that :func:`objalign.evaluate_alignment` fills from its keyword
arguments and that a run's ``align:`` section of the YAML config becomes (``objalign.config.RunConfig.align``): one
definition, so the library and the pipeline cannot drift apart. It knows nothing of run folders or files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from objalign.errors import ObjalignError, did_you_mean
from objalign.evaluation.units import UNITS
from objalign.measures.matching import METHODS as MATCHING_METHODS
from objalign.stats.nulls import NULLS

#: ``align.similarity_measures``: the measures a result reports, in its order (IDs of objalign.measures)
SIMILARITY_IDS = ("cka_linear", "cka_linear_unbiased", "cka_rbf", "mutual_knn", "cknna", "svcca")


@dataclass(frozen=True)
class AlignConfig:
    #: maps fitted after PCA: ``ridge``, ``kernel_ridge`` (RBF kernel ridge)
    methods: tuple[str, ...] = ("ridge", "kernel_ridge")
    common_dim: int = 256  #: PCA dimension for vision features (capped at the text dim and n)
    test_size: float = 0.2  #: fraction of *images* held out
    cv_folds: int = 5  #: K in the grouped K-fold used to choose hyperparameters on the training split
    #: ridge and kernel-ridge penalties searched by the grouped CV
    alphas: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
    gammas: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)  #: RBF gammas, in units of 1 / (median squared distance)
    seed: int = 0  #: every split, permutation and resample derives from it
    #: evaluation protocols (``heldout_images``, ``heldout_categories``; see objalign.stats.protocols)
    protocols: tuple[str, ...] = ("heldout_images", "heldout_categories")
    category_folds: int = 5  #: heldout_categories: K category folds, each category unseen in exactly one
    baselines: tuple[str, ...] = ("mean", "shuffled")  #: floors: training-mean predictor, ridge on shuffled pairs
    n_permutations: int = 1000  #: permutation-null size B (image-label pairings shuffled); 0 turns nulls off
    n_bootstrap: int = 1000  #: bootstrap resamples of test images for confidence intervals; 0 turns CIs off
    confidence: float = 0.95  #: coverage of the bootstrap intervals
    null_max_train: int = 10000  #: skip (and record) a permutation null when a fit has more training objects
    #: ``selection``: every permutation repeats the grouped CV search (hyperparameters re-selected, a valid test);
    #: ``fixed``: permutations refit with the hyperparameters chosen on the real pairing (cheaper, leans small)
    null: str = "selection"
    #: kernel ridge's selection null runs all ``n_permutations`` up to this many training objects per fit, fewer
    #: above (``B (max / n_train)^2``, at least 100; the reason is recorded in the report)
    null_selection_max_train: int = 4000
    #: similarity measures on held-out features, by ID (``objalign.measures.list()``; [] turns them off)
    similarity_measures: tuple[str, ...] = SIMILARITY_IDS
    similarity_k: int = 10  #: k of mutual_knn and cknna on held-out features
    svcca_dim: int = 10  #: SVCCA dimension (capped at the rank of the held-out text targets)
    similarity_max_n: int = 2000  #: similarity measures use (n, n) matrices: at most this many test objects (seeded)
    #: calibrated similarity scores: image-block permutations of each measure (0 turns calibration off) and the
    #: level of the threshold (Gröger et al. 2026; objalign.measures.calibrate)
    similarity_permutations: int = 1000
    similarity_alpha: float = 0.05
    #: blind matching of category prototypes to names (objalign.measures.matching): methods (``faq``,
    #: ``local_cka``, ``exact``; [] turns it off), FAQ restarts, image resamples for its interval
    match_methods: tuple[str, ...] = ("faq", "local_cka")
    match_restarts: int = 5
    match_bootstrap: int = 50
    retrieval_k: int = 10  #: CSLS neighbourhood of open-vocabulary retrieval (objalign.measures.retrieval)
    #: units of analysis (objalign.evaluation.units): ``object`` (the object crops: always computed), ``image`` (whole
    #: images against the mean of their objects' label embeddings, on the same splits; ``embed`` then also embeds
    #: every sampled image whole) and ``prototype`` (category prototypes of k objects vs the category names)
    units: tuple[str, ...] = ("object",)
    #: ``prototype``: objects per prototype, swept (integers >= 1 and ``all``), and draws per k for the intervals
    prototype_k: tuple[str, ...] = ("1", "2", "5", "10", "20", "all")
    prototype_draws: int = 20
    #: convergence curves (objalign.evaluation.convergence): numbers of objects (whole-image subsamples, each at most
    #: the run's n; values in (0, 1) are fractions of n; the curve ends at n by itself; [] turns the curves off),
    #: draws per size, methods refitted
    convergence_sizes: tuple[float, ...] = ()
    convergence_repeats: int = 5
    convergence_methods: tuple[str, ...] = ("ridge",)
    #: kernel ridge: ``auto`` (exact up to ``max_exact_samples`` training objects, then Nystroem), ``exact``
    #: or ``nystroem`` (with ``nystroem_components`` centres)
    kernel_approx: str = "auto"
    max_exact_samples: int = 10000
    nystroem_components: int = 1000
    n_jobs: int = 2  #: kernel-ridge grid points fitted in parallel (each with one BLAS thread)
    #: arithmetic of the align stage: ``auto`` = float64 up to ``float64_max_n`` objects, float32 above
    dtype: str = "auto"
    float64_max_n: int = 200000


# ------------------------------------------------------------------------------------------------- validation
# The names each setting may take: defined here where the evaluation owns them, imported from the module that
# implements them otherwise (one definition each).
MAP_METHODS = ("ridge", "kernel_ridge")  #: ``align.methods``
BASELINE_METHODS = ("mean", "shuffled")  #: ``align.baselines``
PROTOCOLS = ("heldout_images", "heldout_categories")  #: ``align.protocols`` (objalign.stats.protocols)
NULL_KINDS = NULLS  #: ``align.null``
MATCH_IDS = MATCHING_METHODS  #: ``align.match_methods``
UNIT_IDS = UNITS  #: ``align.units``
KERNEL_APPROX = ("auto", "exact", "nystroem")  #: ``align.kernel_approx``
ALIGN_DTYPES = ("auto", "float64", "float32")  #: ``align.dtype``


def _is_int(v) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or type(v).__name__.startswith(("int", "uint"))


def _is_number(v) -> bool:

    if isinstance(v, bool):
        return False
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def check_int(key: str, value, low: int, fix: str, zero_ok: bool = False) -> None:
    """Refuse ``value`` unless it is an integer ``>= low`` (or 0 with ``zero_ok``): one line naming ``key``."""

    if not _is_int(value) or (value < low and not (zero_ok and value == 0)):
        what = f"0 or an integer >= {low}" if zero_ok else f"an integer >= {low}"
        raise ObjalignError(f"{key} = {value!r}: expected {what}; {fix}")


def check_number(key: str, value, fix: str, low: float | None = None, high: float | None = None,
                 open_low: bool = False, open_high: bool = False) -> None:
    """Refuse ``value`` unless it is a finite number in the interval given (ends open or closed): one line."""

    ok = _is_number(value)
    if ok and low is not None:
        ok = value > low if open_low else value >= low
    if ok and high is not None:
        ok = value < high if open_high else value <= high
    if not ok:
        lo = "" if low is None else f"{'(' if open_low else '['}{low:g}"
        hi = "" if high is None else f"{high:g}{')' if open_high else ']'}"
        span = f"a number in {lo or '(-inf'}, {hi or 'inf)'}"
        raise ObjalignError(f"{key} = {value!r}: expected {span}; {fix}")


def check_choice(key: str, value, choices, fix: str = "") -> None:
    """Refuse ``value`` unless it is one of ``choices``: one line with a did-you-mean."""

    if not isinstance(value, str) or value not in choices:
        hint = did_you_mean(value, choices, cutoff=0.4)
        raise ObjalignError(f"{key} = {value!r}: expected one of {', '.join(choices)}{hint}"
                            + (f"; {fix}" if fix else ""))


def check_names(key: str, values, choices, empty: str | None = None) -> None:
    """Refuse a list with a name not in ``choices`` (did-you-mean), a repeated name, or (unless ``empty`` says what
    an empty list means, e.g. "turns them off") an empty list: one line naming ``key``."""

    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise ObjalignError(f"{key} = {values!r}: expected a list of names from {', '.join(choices)}")
    if not values and empty is None:
        raise ObjalignError(f"{key} = []: expected at least one of {', '.join(choices)}")
    for v in values:
        if v not in choices:
            hint = did_you_mean(v, choices, cutoff=0.4)
            raise ObjalignError(f"{key}: unknown name {v!r}{hint} (expected any of {', '.join(choices)}"
                                + (f"; [] {empty})" if empty else ")"))
    twice = sorted({v for v in values if list(values).count(v) > 1})
    if twice:
        raise ObjalignError(f"{key} = {list(values)}: {', '.join(map(repr, twice))} listed more than once; "
                            "list each name once")


def _check_grid(key: str, values, fix: str) -> None:

    shown = list(values) if isinstance(values, (list, tuple)) else values
    if isinstance(values, str) or not isinstance(values, (list, tuple)) or not values \
            or not all(_is_number(v) and v > 0 for v in values):
        raise ObjalignError(f"{key} = {shown!r}: expected a non-empty list of positive numbers; {fix}")


def check_align(cfg: AlignConfig) -> AlignConfig:
    """Check every ``align`` setting's type, range and relation to the others; return ``cfg`` unchanged.

    Runs when a run's config is loaded (:func:`objalign.config.load_config`) and when the library evaluates
    (:func:`objalign.evaluation.engine.methods_of`), so a bare :class:`AlignConfig` is checked too. Imports no
    numerical library: it answers in milliseconds.

    Parameters
    ----------
    cfg : AlignConfig

    Returns
    -------
    AlignConfig
        ``cfg`` itself.

    Raises
    ------
    ObjalignError
        One line naming ``align.KEY``, the value and the fix, for the first bad setting.
    """

    a = "align."
    # either list may name a map or a baseline (fitted once, maps first)
    check_names(a + "methods", cfg.methods, MAP_METHODS + BASELINE_METHODS, empty="fits no map (the baselines only)")
    check_names(a + "baselines", cfg.baselines, MAP_METHODS + BASELINE_METHODS, empty="turns the baselines off")
    if not cfg.methods and not cfg.baselines:
        raise ObjalignError("align.methods = [] and align.baselines = []: nothing to fit; list ridge and/or "
                            "kernel_ridge in align.methods")
    check_names(a + "protocols", cfg.protocols, PROTOCOLS)
    check_int(a + "common_dim", cfg.common_dim, 1, "it is the PCA dimension of the vision features, e.g. 256")
    check_number(a + "test_size", cfg.test_size, "the fraction of images held out, e.g. 0.2", low=0, high=1,
                 open_low=True, open_high=True)
    check_int(a + "cv_folds", cfg.cv_folds, 2, "the grouped K-fold of the hyperparameter search needs K >= 2, e.g. 5")
    _check_grid(a + "alphas", cfg.alphas, "give the ridge penalties to search, e.g. [0.01, 0.1, 1, 10, 100]")
    if "kernel_ridge" in cfg.methods:
        _check_grid(a + "gammas", cfg.gammas, "give the RBF gammas to search, e.g. [0.25, 0.5, 1, 2]")
    check_int(a + "seed", cfg.seed, 0, "use a non-negative seed, e.g. 0")
    check_int(a + "category_folds", cfg.category_folds, 2, "held-out categories need K >= 2 folds, e.g. 5")
    check_int(a + "n_permutations", cfg.n_permutations, 100, "use at least 100 (or 0 to turn nulls off), e.g. 1000",
              zero_ok=True)
    check_int(a + "n_bootstrap", cfg.n_bootstrap, 1, "0 turns the intervals off; use e.g. 1000", zero_ok=True)
    check_number(a + "confidence", cfg.confidence, "the coverage of the bootstrap intervals, e.g. 0.95", low=0,
                 high=1, open_low=True, open_high=True)
    check_int(a + "null_max_train", cfg.null_max_train, 1, "the largest fit that gets a null, e.g. 10000")
    check_choice(a + "null", cfg.null, NULL_KINDS)
    check_int(a + "null_selection_max_train", cfg.null_selection_max_train, 1, "e.g. 4000")
    check_names(a + "similarity_measures", cfg.similarity_measures, SIMILARITY_IDS, empty="turns them off")
    check_int(a + "similarity_k", cfg.similarity_k, 1, "the neighbourhood of mutual_knn and cknna, e.g. 10")
    check_int(a + "svcca_dim", cfg.svcca_dim, 1, "the SVCCA dimension, e.g. 10")
    check_int(a + "similarity_max_n", cfg.similarity_max_n, 2, "the most test objects the measures use, e.g. 2000")
    check_int(a + "similarity_permutations", cfg.similarity_permutations, 1, "0 turns calibration off; use e.g. 1000",
              zero_ok=True)
    check_number(a + "similarity_alpha", cfg.similarity_alpha, "the level of the calibration threshold, e.g. 0.05",
                 low=0, high=1, open_low=True, open_high=True)
    check_names(a + "match_methods", cfg.match_methods, MATCH_IDS, empty="turns blind matching off")
    check_int(a + "match_restarts", cfg.match_restarts, 1, "FAQ restarts, e.g. 5")
    check_int(a + "match_bootstrap", cfg.match_bootstrap, 0, "image resamples of the matching interval, e.g. 50")
    check_int(a + "retrieval_k", cfg.retrieval_k, 1, "the CSLS neighbourhood, e.g. 10")
    check_names(a + "units", cfg.units, UNIT_IDS, empty="means object only")
    if "prototype" in cfg.units:
        for k in cfg.prototype_k:
            text = str(k).strip().lower()
            if text != "all" and not (text.isdigit() and int(text) >= 1 and str(int(text)) == text):
                raise ObjalignError(f"align.prototype_k: {k!r} is not a number of objects; expected integers >= 1 "
                                    "or 'all', e.g. [1, 2, 5, 10, 20, all]")
        if not cfg.prototype_k:
            raise ObjalignError("align.prototype_k = []: give the k to sweep, e.g. [1, 2, 5, 10, 20, all]")
        check_int(a + "prototype_draws", cfg.prototype_draws, 1, "draws per k, e.g. 20")
    for s in cfg.convergence_sizes:
        check_number(a + "convergence_sizes value", s, "numbers of objects (>= 1) or fractions of n in (0, 1)",
                     low=0, open_low=True)
        if s >= 1 and not float(s).is_integer():
            raise ObjalignError(f"align.convergence_sizes: {s!r} is not a number of objects; expected integers >= 1 "
                                "or fractions in (0, 1)")
    if cfg.convergence_sizes:
        check_int(a + "convergence_repeats", cfg.convergence_repeats, 1, "draws per size, e.g. 5")
        check_names(a + "convergence_methods", cfg.convergence_methods, MAP_METHODS)
    check_choice(a + "kernel_approx", cfg.kernel_approx, KERNEL_APPROX)
    check_int(a + "max_exact_samples", cfg.max_exact_samples, 1, "e.g. 10000")
    check_int(a + "nystroem_components", cfg.nystroem_components, 1, "Nystroem centres, e.g. 1000")
    if not _is_int(cfg.n_jobs) or not (cfg.n_jobs >= 1 or cfg.n_jobs == -1):
        raise ObjalignError(f"align.n_jobs = {cfg.n_jobs!r}: expected a positive number of workers (or -1: all "
                            "cores), e.g. 2")
    check_choice(a + "dtype", cfg.dtype, ALIGN_DTYPES)
    check_int(a + "float64_max_n", cfg.float64_max_n, 0, "objects up to which float64 is used, e.g. 200000")
    return cfg
