"""The ``align`` stage: embeddings -> fitted maps, held-out figures, intervals and nulls (``align/``).

For every protocol (:mod:`objalign.stats.protocols`) and every fold of it, PCA to the common dimension,
the hyperparameter search (grouped K-fold CV over images) and the maps are fitted on the fold's training
objects only, then the fold's test objects are scored (:mod:`objalign.stats.metrics`). Folds of one
protocol are pooled: every test object is scored once. Then, per method and protocol:

- ``ci``: percentile bootstrap intervals of every figure over test **images** (``align.n_bootstrap``
  resamples, :mod:`objalign.stats.intervals`);
- ``pvalue``: permutation p-values of every figure (``align.n_permutations`` shufflings of the training
  image-label pairing; ``align.null: selection`` repeats the CV search in every permutation, ``fixed`` refits
  with the hyperparameters chosen on the real pairing; :mod:`objalign.stats.nulls`), for
  ridge and kernel ridge. The baselines get none: the mean predictor does not depend on the pairing, and the
  shuffled map *is* a draw from the null;
- per-category breakdowns; similarity measures (CKA, mutual k-NN, CKNNA, SVCCA) between the PCA'd held-out
  vision features and their text targets (held-out-image split), each with its calibrated score;
- with a distractor vocabulary, open-vocabulary precision@k per row; blind matching and RSA of the categories
  (:mod:`objalign.evaluation.category_level`).

A protocol with several folds (``heldout_categories``) reports, at the top of its row, the most frequent
hyperparameters and PCA dimension over folds and the mean number of training objects per fold; each fold's
own values are in the row's ``folds`` list.

Files written (read by the report stage, which never sees a model): ``results.json`` (rows),
``per_category.json``, ``similarity.json``, ``pca.json``, ``category_level.json``, ``per_instance.npz``,
``nulls.npz``, ``projection.npz``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from objalign.errors import ObjalignError
from objalign.evaluation.category_level import category_level, open_vocabulary
from objalign.evaluation.folds import fit_fold, median_sq_distance  # noqa: F401  (re-exported)
from objalign.evaluation.heldout_similarity import heldout_similarity
from objalign.evaluation.pvalues import null_rows
from objalign.evaluation.settings import BASELINE_METHODS, MAP_METHODS, AlignConfig, check_align
from objalign.maps import PCAMatch, check_xy
from objalign.maps.threads import single_threaded_blas
from objalign.stats import protocols
from objalign.stats.intervals import bootstrap_figures
from objalign.stats.metrics import (
    category_order,
    figures_from_instances,
    per_category,
    per_instance,
    r2_scores,
    top_predicted,
)
from objalign.stats.protocols import heldout_images

METHODS, BASELINES = MAP_METHODS, BASELINE_METHODS  # align.methods, align.baselines


def heldout_image_split(groups: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` with whole images on one side (``GroupShuffleSplit``)."""

    fold = heldout_images(groups, test_size, seed)[0]
    return fold.train, fold.test


def methods_of(cfg: AlignConfig) -> list[str]:
    """The maps then the baselines to fit, after :func:`objalign.evaluation.settings.check_align` has checked every
    ``align`` setting (one line naming ``align.KEY`` for a bad one)."""
    check_align(cfg)
    return list(dict.fromkeys(list(cfg.methods) + list(cfg.baselines)))


def _folds(protocol: str, groups, label_index, cfg: AlignConfig):

    if protocol == "heldout_images":
        return protocols.heldout_images(groups, cfg.test_size, cfg.seed)
    return protocols.heldout_categories(label_index, groups, cfg.category_folds, cfg.seed)


def _mode(values: list[float]) -> float:
    counts = Counter(values)
    top = max(counts.values())
    return min(v for v, c in counts.items() if c == top)


def evaluate(X: np.ndarray, Y: np.ndarray, groups: np.ndarray, label_index: np.ndarray, class_emb: np.ndarray,
             cfg: AlignConfig, category_names: list[str] | None = None,
             category_ids: np.ndarray | None = None, vocabulary: np.ndarray | None = None) -> dict:
    """Run every protocol, method and statistic on one set of embeddings (:func:`evaluate_targets` for one
    target set: ``objalign run``, ``sweep`` and ``matrix`` share that engine).

    Parameters
    ----------
    X : (n, d_vision) vision embeddings
    Y : (n, d_text) text embedding of each object's category; must be ``class_emb[label_index]``
    groups : (n,) image ids
    label_index : (n,) row of ``class_emb`` holding each object's category
    class_emb : (c, d_text) all category embeddings (retrieval candidates)
    cfg : AlignConfig
    category_names, category_ids : length-c names and dataset ids (default: row numbers)
    vocabulary : (m, d_text) distractor name embeddings: each row adds ``open_vocabulary`` (precision@k among the
        c + m names, :func:`objalign.evaluation.category_level.open_vocabulary`)

    Returns
    -------
    dict with ``rows`` (list of result rows), ``per_category`` (list), ``similarity`` (dict), ``pca`` (dict),
    ``per_instance`` (dict of arrays: per protocol ``{p}__index`` and ``{p}__label`` (test objects' rows of X and
    of ``class_emb``), per method ``{p}__{m}__residual_l2`` / ``cosine`` / ``rank`` (/ ``rank_unseen``) and
    ``{p}__{m}__top3`` (n, 3), the nearest category rows to the prediction; ``category_name`` (c,) and
    ``category_order`` (c,), a clustering order of the text embeddings), ``nulls`` (dict of arrays),
    ``projection`` (dict of arrays), ``skipped``
    (protocol -> reason, for ``heldout_categories`` when the data are too few for its folds), ``category_level``
    (blind matching and RSA, :func:`objalign.evaluation.category_level.category_level`)
    """

    check_xy(X, Y, groups, name_x="vision embeddings", name_y="text targets")
    label_index = np.asarray(label_index)
    class_emb = np.asarray(class_emb)
    if class_emb.ndim != 2 or len(label_index) != len(Y) or not np.array_equal(class_emb[label_index], Y):
        raise ObjalignError("text targets: each object's row must be its category's embedding "
                            "(Y = class_emb[label_index]); pass the category embeddings and the labels that index them")
    return _evaluate(X, groups, label_index, {"": class_emb}, cfg, category_names, category_ids,
                     {"": vocabulary}, strict=True)[""]


def evaluate_targets(X: np.ndarray, groups: np.ndarray, label_index: np.ndarray, targets: dict[str, np.ndarray],
                     cfg: AlignConfig, category_names: list[str] | None = None, category_ids: np.ndarray | None = None,
                     vocabularies: dict[str, np.ndarray | None] | None = None) -> dict[str, dict]:
    """:func:`evaluate` for several text target sets against the same vision features, sharing the work.

    Every key's result is what ``evaluate(X, T[label_index], groups, label_index, T, cfg, ...)`` returns for
    ``T = targets[key]`` (the same numbers; ``fit_seconds`` is the shared fit time). What does not depend on the
    targets is done once per fold: the folds, PCA (per PCA dimension), the CV factorisations of ridge and kernel
    ridge, the choices on the real pairing, the shuffled baseline and every permutation of the selection null
    (each target set still chooses its own hyperparameters, exactly as alone), the smoother operators of the
    selected maps and the permutations' category coefficients (:mod:`objalign.evaluation.folds`,
    :func:`objalign.stats.nulls.smoother_nulls`). ``nulls`` use the same permutations for every key.

    Parameters
    ----------
    X : (n, d) vision features of one vision layer
    groups : (n,) image ids
    label_index : (n,) row of every target matrix holding each object's category
    targets : dict key -> (c, q_key) category text embeddings (one per text model x text layer; q may differ)
    cfg : AlignConfig
    category_names, category_ids : length-c names and dataset ids (default: row numbers)
    vocabularies : dict key -> (m, q_key) distractor embeddings or None (open-vocabulary retrieval)

    Returns
    -------
    dict key -> :func:`evaluate`'s dict, or ``{"error": "<one line>"}`` for a key that cannot be computed (bad
    targets). An error that concerns X itself (bad features, too few images for the folds) raises
    ObjalignError, as :func:`evaluate` does.
    """

    check_xy(X, np.zeros((len(X), 1)), groups, name_x="vision embeddings", name_y="text targets")
    return _evaluate(X, groups, np.asarray(label_index), dict(targets), cfg, category_names, category_ids,
                     dict(vocabularies or {}), strict=False)


def category_variance_ratio(class_emb: np.ndarray, labels: np.ndarray, n_components: int) -> list[float]:
    """Explained-variance ratios of the PCA of the targets ``class_emb[labels]`` (what ``PCAMatch`` reports on
    them), from the (c, c) category Gram: targets repeat one row per category, so their scatter is
    ``A' A`` with ``A = sqrt(counts) (class_emb - mean)`` and shares its nonzero eigenvalues with ``A A'``."""
    E = np.asarray(class_emb, dtype=np.float64)
    cnt = np.bincount(np.asarray(labels), minlength=len(E)).astype(np.float64)
    A = np.sqrt(cnt)[:, None] * (E - cnt @ E / cnt.sum())
    total = float(np.sum(A * A))
    ev = np.maximum(np.linalg.eigvalsh(A @ A.T)[::-1], 0.0)
    ev = np.concatenate([ev, np.zeros(max(0, n_components - len(ev)))])[:n_components]
    return (ev / total if total > 0 else np.zeros_like(ev)).tolist()


def _check_targets(X, groups, label_index, targets: dict, strict: bool) -> tuple[dict, dict]:
    """``(usable targets, key -> {"error": ...})``; with ``strict`` the first error raises."""

    live, errors = {}, {}
    c = None
    for key, T in targets.items():
        try:
            T = np.asarray(T)
            if T.ndim != 2 or not np.issubdtype(T.dtype, np.number):
                raise ObjalignError(f"targets[{key!r}]: expected a (categories, dim) numeric matrix, got shape "
                                    f"{T.shape}")
            if len(label_index) and (label_index.min() < 0 or label_index.max() >= len(T)):
                raise ObjalignError(f"targets[{key!r}] has {len(T)} rows but labels index up to "
                                    f"{label_index.max()}: one row per category expected")
            if c is not None and len(T) != c:
                raise ObjalignError(f"targets[{key!r}] has {len(T)} rows, the others {c}: every target set needs "
                                    "one row per category, in the same order")
            check_xy(X, T[label_index], groups, name_x="vision embeddings", name_y=f"text targets {key!r}".strip())
            c = len(T) if c is None else c
            live[key] = T
        except ObjalignError as exc:
            if strict:
                raise
            errors[key] = {"error": str(exc)}
    return live, errors


@dataclass
class _ProtocolFit:
    """What one protocol's folds share across methods and target sets."""

    name: str
    folds: list
    fits: list  # per fold: :func:`objalign.evaluation.folds.fit_fold`'s dict
    test: np.ndarray  # every fold's test objects, fold by fold
    cand_mask: np.ndarray | None  # heldout_categories: (n_test, c) the fold's unseen categories
    bounds: np.ndarray  # fold i's objects: test[bounds[i]:bounds[i + 1]]
    # the resamples of the test images and what is summed from them alone: drawn once for every method and
    # target set (bootstrap_figures checks them against its arguments)
    boot_cache: dict = field(default_factory=dict)

    @property
    def unseen(self) -> bool:
        return self.name == "heldout_categories"


def _fit_protocol(protocol: str, X, groups, label_index, methods, cfg: AlignConfig, live: dict) -> _ProtocolFit | str:
    """Every fold of ``protocol`` fitted for every target set, or (held-out categories beside another protocol)
    the reason it was skipped."""
    try:
        folds = _folds(protocol, groups, label_index, cfg)
        n_big = max(len(f.train) for f in folds)
        fits = [fit_fold(X, groups, label_index, f, methods, cfg, i, protocol, live, n_big)
                for i, f in enumerate(folds)]
    except ObjalignError as exc:
        # Too little data for held-out categories (e.g. a 40-object smoke run) must not hide the other
        # protocol's results: record why it was skipped (report.json "skipped", report.txt), fail otherwise.
        if protocol == "heldout_categories" and len(cfg.protocols) > 1:
            return str(exc)
        raise
    test = np.concatenate([f.test for f in folds])
    cand_mask = None
    if protocol == "heldout_categories":
        cand_mask = np.zeros((len(test), len(next(iter(live.values())))), dtype=bool)
        start = 0
        for f in folds:
            cand_mask[start:start + len(f.test), f.unseen] = True
            start += len(f.test)
    bounds = np.cumsum([0] + [len(f.test) for f in folds])
    return _ProtocolFit(protocol, folds, fits, test, cand_mask, bounds)


def _method_row(pf: _ProtocolFit, method: str, key: str, class_emb: np.ndarray, res: dict, label_index, groups,
                names: list[str], cids: np.ndarray, vocabulary, cfg: AlignConfig) -> tuple[dict, dict, list]:
    """One result row (figures, intervals, open vocabulary) of ``method`` for target set ``key``; adds the
    per-category rows and per-instance arrays to ``res``. Returns ``(row, figures, per-fold fits)``."""
    folds, unseen, c = pf.folds, pf.unseen, len(class_emb)
    lab, g = label_index[pf.test], groups[pf.test]
    Yt = class_emb[lab]  # the test objects' targets, in the order of test (fold by fold)
    fits = [{"pca_dim": ff["keys"][key]["pca_dim"], "n_train": ff["n_train"], **ff["keys"][key]["methods"][method]}
            for ff in pf.fits]
    pred = np.vstack([fit["pred"] for fit in fits])
    inst_parts = [per_instance(fit["pred"], None, lab[a:b], class_emb, f.unseen if unseen else None)
                  for f, fit, a, b in zip(folds, fits, pf.bounds[:-1], pf.bounds[1:])]  # true: class rows
    inst = {n: np.concatenate([p[n] for p in inst_parts]) for n in inst_parts[0]}
    figs = {**r2_scores(Yt, pred, categories=(lab, class_emb)), **figures_from_instances(inst)}
    hps = [fit["hp"] for fit in fits]
    row = {"method": method, "split": pf.name, **figs, "n_test": int(len(pf.test)),
           "n_candidates": int(c), "chance_top1": 1.0 / c,
           "hyperparameters": {h: _mode([x[h] for x in hps]) for h in hps[0]},
           "pca_dim": int(_mode([fit["pca_dim"] for fit in fits])),
           "n_train": int(round(np.mean([fit["n_train"] for fit in fits]))),
           "n_images_test": int(len(np.unique(g))),
           "fit_seconds": round(sum(fit["seconds"] for fit in fits), 3)}
    if unseen:
        row["n_candidates_unseen"] = float(np.mean([len(f.unseen) for f in folds]))
        row["chance_top1_unseen"] = float(np.mean(1.0 / pf.cand_mask.sum(1)))
        row["folds"] = [{"unseen": [names[u] for u in f.unseen], "n_train": fit["n_train"],
                         "n_test": int(len(f.test)), "pca_dim": fit["pca_dim"],
                         "hyperparameters": fit["hp"]} for f, fit in zip(folds, fits)]
    if vocabulary is not None and len(vocabulary):
        row["open_vocabulary"] = open_vocabulary(pred, lab, class_emb, vocabulary, cfg.retrieval_k)
    if cfg.n_bootstrap > 0:
        row["ci"] = bootstrap_figures(pred, Yt, inst, g, cfg.n_bootstrap, cfg.confidence, cfg.seed,
                                      categories=(lab, class_emb), cache=pf.boot_cache)
        row["ci_level"] = cfg.confidence
    for r in per_category(inst, lab, names, cids):
        res["per_category"].append({"split": pf.name, "method": method, **r})
    for n, v in inst.items():
        res["per_instance"][f"{pf.name}__{method}__{n}"] = v
    res["per_instance"][f"{pf.name}__{method}__top3"] = top_predicted(pred, class_emb, 3)  # the report's gallery
    return row, figs, fits


def _heldout_images_views(pf: _ProtocolFit, live: dict, label_index, groups, methods, names, cfg: AlignConfig,
                          results: dict) -> None:
    """The held-out-image split's similarity measures, PCA spectra and 2-D views, per target set."""
    fold = pf.folds[0]
    sim_caches: dict[int, dict] = {}  # per PCA dimension: what the similarity measures compute from Zte
    with single_threaded_blas():  # (n, n) products on a few hundred objects: threads only add overhead
        for k, class_emb in live.items():
            fit = pf.fits[0]["keys"][k]
            results[k]["similarity"] = heldout_similarity(fit["Zte"], class_emb[label_index[fold.test]],
                                                          groups[fold.test], cfg,
                                                          cache=sim_caches.setdefault(fit["pca_dim"], {}))
    for k, class_emb in live.items():
        res, fit = results[k], pf.fits[0]["keys"][k]
        res["pca"] = {"vision_explained_variance_ratio": fit["pca"].explained_variance_ratio_.tolist(),
                      "pca_dim": fit["pca_dim"], "fitted_on": "heldout_images training objects",
                      "text_explained_variance_ratio": category_variance_ratio(
                          class_emb, label_index[fold.train],
                          int(min(len(fold.train), class_emb.shape[1], len(class_emb))))}
        # 2-D views: vision test features on their top two principal axes; category embeddings and the
        # ridge-mapped test objects on the top two axes of the category embeddings.
        cp = PCAMatch(n_components=2).fit(class_emb)
        best = "ridge" if "ridge" in methods else methods[0]
        res["projection"] = {"vision_2d": fit["Zte"][:, :2], "label": label_index[fold.test],
                             "class_2d": cp.transform(class_emb),
                             "mapped_2d": cp.transform(fit["methods"][best]["pred"]),
                             "mapped_method": np.asarray(best), "class_name": np.asarray(names)}


def _evaluate(X, groups, label_index, targets: dict, cfg: AlignConfig, category_names, category_ids,
              vocabularies: dict, strict: bool) -> dict:
    """The engine of :func:`evaluate` and :func:`evaluate_targets` (``strict``: a bad target set raises)."""
    methods = methods_of(cfg)
    live, errors = _check_targets(X, groups, label_index, targets, strict)
    if not live:
        return errors
    keys = list(live)
    c = len(live[keys[0]])
    names = list(category_names) if category_names is not None else [str(i) for i in range(c)]
    cids = np.asarray(category_ids) if category_ids is not None else np.arange(c)
    results = {k: {"rows": [], "per_category": [], "similarity": {}, "pca": {}, "nulls": {}, "projection": {},
                   "skipped": {}, "per_instance": {"category_name": np.asarray(names, dtype=str),
                                                   "category_order": category_order(live[k])}} for k in keys}
    for protocol in cfg.protocols:
        pf = _fit_protocol(protocol, X, groups, label_index, methods, cfg, live)
        if isinstance(pf, str):
            for k in keys:
                results[k]["skipped"][protocol] = pf
            continue
        for k in keys:
            results[k]["per_instance"][f"{protocol}__index"] = pf.test
            results[k]["per_instance"][f"{protocol}__label"] = label_index[pf.test]
        # the per-target-set figures, intervals and nulls: many small products, where a BLAS thread team only
        # adds synchronisation (and, in a matrix, is paid once per target set)
        with single_threaded_blas():
            for method in methods:
                rows = {k: _method_row(pf, method, k, live[k], results[k], label_index, groups, names, cids,
                                       vocabularies.get(k), cfg) for k in keys}
                if method in METHODS and cfg.n_permutations > 0:
                    null_rows(rows, pf.folds, live, label_index, groups, pf.cand_mask, protocol, method, cfg, results)
                for k in keys:
                    results[k]["rows"].append(rows[k][0])
        if protocol == "heldout_images":
            _heldout_images_views(pf, live, label_index, groups, methods, names, cfg, results)
    vision_side: dict = {}  # prototypes, kernels and RDMs of X: computed once for every target set
    for k in keys:
        results[k]["category_level"] = category_level(X, label_index, live[k], groups, cfg, cache=vision_side)
    return {k: results.get(k, errors.get(k)) for k in targets}


def fit_and_score(X: np.ndarray, Y: np.ndarray, groups: np.ndarray, label_index: np.ndarray,
                  class_emb: np.ndarray, cfg: AlignConfig) -> tuple[list[dict], dict]:
    """Result rows and per-instance arrays (see :func:`evaluate`, which returns everything)."""
    res = evaluate(X, Y, groups, label_index, class_emb, cfg)
    return res["rows"], res["per_instance"]


def compute_dtype(cfg: AlignConfig, n: int):
    """float64 (exact agreement with scikit-learn) unless asked otherwise or ``n`` exceeds
    ``cfg.float64_max_n``; float32 halves memory at full-COCO scale and runs float32 LAPACK."""
    if cfg.dtype == "float64":
        return np.float64
    if cfg.dtype == "float32":
        return np.float32
    if cfg.dtype != "auto":
        raise ObjalignError(f"align.dtype = {cfg.dtype!r}: expected auto, float64 or float32")
    return np.float64 if n <= cfg.float64_max_n else np.float32
