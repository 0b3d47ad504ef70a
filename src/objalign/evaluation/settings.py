"""The settings of an evaluation: every protocol, map, null, interval and measure, with its default.

:class:`AlignConfig` is the frozen dataclass that :func:`objalign.evaluate_alignment` fills from its keyword
arguments and that a run's ``align:`` section of the YAML config becomes (``objalign.config.RunConfig.align``): one
definition, so the library and the pipeline cannot drift apart. It knows nothing of run folders or files.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AlignConfig:
    methods: tuple[str, ...] = ("ridge", "kernel_ridge")
    common_dim: int = 256  #: PCA dimension for vision features (capped at the text dim and n)
    test_size: float = 0.2  #: fraction of *images* held out
    cv_folds: int = 5  #: K in the grouped K-fold used to choose hyperparameters on the training split
    alphas: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
    gammas: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)  #: RBF gammas, in units of 1 / (median squared distance)
    seed: int = 0
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
    similarity_measures: tuple[str, ...] = ("cka_linear", "cka_linear_unbiased", "cka_rbf", "mutual_knn", "cknna",
                                            "svcca")
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
