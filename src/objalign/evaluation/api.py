"""``evaluate_alignment``: the one function that evaluates a (vision, text) pair from arrays.

``objalign run``, ``sweep``, ``matrix`` and ``objalign evaluate`` all end here; a researcher with features from any
source calls it directly.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from objalign.errors import ObjalignError, did_you_mean
from objalign.evaluation.engine import compute_dtype, evaluate, evaluate_targets, methods_of
from objalign.evaluation.heldout_similarity import SIMILARITY_MEASURES
from objalign.evaluation.inputs import Inputs, prepare_inputs
from objalign.evaluation.result import AlignmentResult
from objalign.evaluation.settings import AlignConfig
from objalign.tables import content_hash

_EXPLICIT = ("methods", "baselines", "protocols", "n_permutations", "n_bootstrap", "seed", "similarity_measures")


def make_settings(*, methods=("ridge", "kernel_ridge"), baselines=("mean", "shuffled"),
                  protocols=("heldout_images", "heldout_categories"), n_permutations: int = 1000,
                  n_bootstrap: int = 1000, measures=SIMILARITY_MEASURES, seed: int = 0, **options) -> AlignConfig:
    """The checked :class:`AlignConfig` of :func:`evaluate_alignment`'s keyword arguments (the same defaults;
    ``options``: any other AlignConfig field). One line for an unknown or bad setting."""
    fields = {f.name: f for f in dataclasses.fields(AlignConfig)}
    for key in options:
        if key not in fields or key in _EXPLICIT:
            hint = did_you_mean(key, [k for k in fields if k not in _EXPLICIT] + ["measures"])
            raise ObjalignError(f"evaluate_alignment: unknown setting {key!r}{hint} (settings: "
                                "objalign.evaluation.settings.AlignConfig)")
    given = {"methods": methods, "baselines": baselines, "protocols": protocols, "n_permutations": n_permutations,
             "n_bootstrap": n_bootstrap, "similarity_measures": measures, "seed": seed, **options}
    for key, value in given.items():  # lists from a caller (or YAML) -> the dataclass's tuples
        if isinstance(fields[key].default, tuple) and not isinstance(value, str):
            given[key] = tuple(value)
    cfg = AlignConfig(**given)
    methods_of(cfg)  # every setting checked before any work
    return cfg


def call_options(cfg: AlignConfig) -> dict:
    """Keyword arguments of :func:`evaluate_alignment` that reproduce the settings ``cfg`` (a run's ``align:``)."""
    kw = dataclasses.asdict(cfg)
    kw["measures"] = kw.pop("similarity_measures")
    return kw


def _header(inputs: Inputs, key: str, dataset: str, vision_name: str, text_name: str, fingerprint: str) -> dict:
    c = len(inputs.names)
    return {"dataset": dataset, "dataset_fingerprint": fingerprint, "n_instances": int(len(inputs.X)),
            "n_instances_sampled": int(len(inputs.X)), "n_images": int(len(np.unique(inputs.groups))),
            "n_categories": c, "crop": {"mode": "given", "sources": "embeddings given", "n_fallback": 0},
            "vision_encoder": {"name": vision_name, "dim": int(inputs.X.shape[1])},
            "text_encoder": {"name": f"{text_name}{'/' + key if key else ''}",
                             "dim": int(inputs.targets[key].shape[1]), "template": f"given per {inputs.per}"},
            "n_skipped": 0, "n_excluded": 0}


def evaluate_alignment(vision, text, labels, groups=None, *, names=None, category_ids=None,
                       methods=("ridge", "kernel_ridge"), baselines=("mean", "shuffled"),
                       protocols=("heldout_images", "heldout_categories"), n_permutations: int = 1000,
                       n_bootstrap: int = 1000, measures=SIMILARITY_MEASURES, seed: int = 0, vocabulary=None,
                       text_per: str = "auto", vision_name: str = "vision", text_name: str = "text",
                       dataset: str = "arrays", **options) -> AlignmentResult | dict[str, AlignmentResult]:
    """How well, and how significantly, do vision features align with text features, object by object?

    Fits maps from vision to text space (PCA to a common dimension, then ridge and RBF kernel ridge with their
    hyperparameters chosen by grouped cross-validation on the training split only) and scores them on held-out
    **images** (train and test never share an image) and held-out **categories** (the map never sees the test
    categories; each object's true name is ranked among all names and among the unseen ones), beside two floors
    (the training-mean predictor, a map fitted on shuffled pairs). Every figure gets a percentile bootstrap
    interval over test images and, for the maps, a permutation p-value whose null repeats the whole
    hyperparameter search on every shuffle of the image-label pairing ("selection" null). The similarity measures
    (CKA, mutual k-NN, CKNNA, SVCCA) are computed on the held-out features with calibrated scores; blind matching
    of category prototypes to names and RSA of the categories complete the result.

    Parameters
    ----------
    vision : (n, d) array
        One vision feature vector per object.
    text : (n, q) or (c, q) array, or dict key -> such arrays
        Text features per object (rows of one category equal) or per category (``labels`` index the rows). A dict
        evaluates several text target sets (text layers, text models) against the same vision features, sharing
        every computation that does not depend on the text; each set still selects its own hyperparameters.
    labels : (n,) array
        Each object's category: row indices into per-category text, or any values with per-object text.
    groups : (n,) array, optional
        Image ids: objects of one image are always on the same side of a split and resampled together. Default:
        every object its own image.
    names, category_ids : optional
        Category names and ids for the report (c of each).
    methods : sequence of {"ridge", "kernel_ridge"}
    baselines : sequence of {"mean", "shuffled"}
    protocols : sequence of {"heldout_images", "heldout_categories"}
    n_permutations : int
        Permutations of the null (0: no p-values; else at least 100). Default 1,000.
    n_bootstrap : int
        Bootstrap resamples of test images for the intervals (0: none). Default 1,000.
    measures : sequence of str
        Similarity measure IDs (``objalign.measures``): cka_linear, cka_linear_unbiased, cka_rbf, mutual_knn,
        cknna, svcca ([] for none).
    seed : int
        Every split, permutation and resample derives from it: the same call gives the same numbers.
    vocabulary : (m, q) array, optional
        Distractor name embeddings: adds open-vocabulary retrieval among the c + m names (a dict of them, keyed as
        ``text``, for several target sets).
    text_per : {"auto", "object", "category"}
        How to read ``text`` (auto: as many rows as objects means per object).
    vision_name, text_name, dataset : str
        What the report calls the inputs.
    **options
        Any other setting of :class:`objalign.evaluation.settings.AlignConfig` (``common_dim=256``,
        ``alphas=(...)``, ``gammas=(...)``, ``cv_folds=5``, ``test_size=0.2``, ``category_folds=5``,
        ``null="selection"``, ``confidence=0.95``, ``similarity_permutations=1000``, ``match_methods``, ...).

    Returns
    -------
    AlignmentResult, or dict key -> AlignmentResult for a dict ``text`` (a set that cannot be evaluated has its
    ``error`` set; the others complete)

    Raises
    ------
    ObjalignError
        A bad input or setting, before any work (one line naming it, the value and the fix).

    Examples
    --------
    >>> import numpy as np, objalign
    >>> rng = np.random.default_rng(0)
    >>> names = rng.normal(size=(8, 16))                       # one text embedding per category
    >>> labels = np.repeat(np.arange(8), 12)                    # 96 objects, 12 per category
    >>> vision = names[labels] @ rng.normal(size=(16, 32)) + 0.3 * rng.normal(size=(96, 32))
    >>> res = objalign.evaluate_alignment(vision, names, labels, groups=np.arange(96) // 2, methods=["ridge"],
    ...                                   n_permutations=0, n_bootstrap=0, similarity_permutations=0,
    ...                                   match_methods=[], protocols=["heldout_images"])
    >>> row = res.rows[0]
    >>> row["method"], row["split"], row["top1"] > 0.9
    ('ridge', 'heldout_images', True)
    """
    cfg = make_settings(methods=methods, baselines=baselines, protocols=protocols, n_permutations=n_permutations,
                        n_bootstrap=n_bootstrap, measures=measures, seed=seed, **options)
    inputs = prepare_inputs(vision, text, labels, groups, names=names, category_ids=category_ids, text_per=text_per)
    return run_inputs(inputs, cfg, vocabulary, keys=list(text) if isinstance(text, dict) else None,
                      vision_name=vision_name, text_name=text_name, dataset=dataset)


def run_inputs(inputs: Inputs, cfg: AlignConfig, vocabulary=None, keys: list | None = None, vision_name: str = "vision",
               text_name: str = "text", dataset: str = "arrays") -> AlignmentResult | dict[str, AlignmentResult]:
    """:func:`evaluate_alignment` on checked inputs (:func:`objalign.evaluation.inputs.prepare_inputs`) and settings
    (:func:`make_settings`); the command line checks both before it reads anything else. ``keys``: the target
    sets of a dict ``text``, in its order (``None``: one set)."""
    many = keys is not None
    dtype = compute_dtype(cfg, len(inputs.X))
    X = inputs.X.astype(dtype, copy=False)
    targets = {k: T.astype(dtype) for k, T in inputs.targets.items()}
    vocabs = vocabulary if isinstance(vocabulary, dict) else {k: vocabulary for k in targets}
    vocabs = {k: None if v is None else np.asarray(v).astype(dtype) for k, v in vocabs.items()}
    fingerprint = content_hash(inputs.X, inputs.label_index, inputs.groups)
    if many:
        raw = evaluate_targets(X, inputs.groups, inputs.label_index, targets, cfg, inputs.names, inputs.category_ids,
                               vocabs)
    else:
        T = targets[""]
        raw = {"": evaluate(X, T[inputs.label_index], inputs.groups, inputs.label_index, T, cfg, inputs.names,
                            inputs.category_ids, vocabulary=vocabs.get(""))}
    raw.update({k: {"error": e} for k, e in (inputs.errors or {}).items()})
    out = {k: AlignmentResult(r, cfg, {} if "error" in r else _header(inputs, k, dataset, vision_name, text_name,
                                                                      fingerprint)) for k, r in raw.items()}
    return {k: out[k] for k in keys} if many else out[""]
