"""The ``align`` stage: embeddings -> fitted maps, held-out figures, intervals and nulls (``align/``).

For every protocol (:mod:`objalign.evaluate.protocols`) and every fold of it, PCA to the common dimension,
the hyperparameter search (grouped K-fold CV over images) and the maps are fitted on the fold's training
objects only, then the fold's test objects are scored (:mod:`objalign.evaluate.metrics`). Folds of one
protocol are pooled: every test object is scored once. Then, per method and protocol:

- ``ci``: percentile bootstrap intervals of every figure over test **images** (``align.n_bootstrap``
  resamples, :mod:`objalign.evaluate.intervals`);
- ``pvalue``: permutation p-values of every figure (``align.n_permutations`` shufflings of the training
  image-label pairing; ``align.null: selection`` repeats the CV search in every permutation, ``fixed`` refits
  with the hyperparameters chosen on the real pairing; :mod:`objalign.evaluate.nulls`), for
  ridge and kernel ridge. The baselines get none: the mean predictor does not depend on the pairing, and the
  shuffled map *is* a draw from the null;
- per-category breakdowns; similarity measures (CKA, mutual k-NN, CKNNA, SVCCA) between the PCA'd held-out
  vision features and their text targets (held-out-image split), each with its calibrated score;
- with a distractor vocabulary, open-vocabulary precision@k per row; blind matching and RSA of the categories
  (:mod:`objalign.evaluate.category_level`).

A protocol with several folds (``heldout_categories``) reports, at the top of its row, the most frequent
hyperparameters and PCA dimension over folds and the mean number of training objects per fold; each fold's
own values are in the row's ``folds`` list.

Files written (read by the report stage, which never sees a model): ``results.json`` (rows),
``per_category.json``, ``similarity.json``, ``pca.json``, ``category_level.json``, ``per_instance.npz``,
``nulls.npz``, ``projection.npz``.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from ..config import AlignConfig, RunConfig
from ..errors import ObjalignError
from ..runs import ensure_out, is_current, stage_key, stage_record, write_stage

METHODS = ("ridge", "kernel_ridge")
BASELINES = ("mean", "shuffled")
_SHUFFLE_SEED = 7919  # offset of the seed of the shuffled-pairing baseline's permutation


def median_sq_distance(Z: np.ndarray, max_n: int = 1000, seed: int = 0) -> float:
    """Median squared Euclidean distance between distinct rows of (a subsample of) ``Z`` ``(n, d)``."""
    rng = np.random.default_rng(seed)
    S = Z[rng.choice(len(Z), size=min(max_n, len(Z)), replace=False)]
    sq = np.sum(S ** 2, 1)
    D = sq[:, None] + sq[None] - 2 * S @ S.T
    iu = np.triu_indices(len(S), 1)
    m = float(np.median(D[iu])) if len(iu[0]) else 1.0
    return m if m > 0 else 1.0


def heldout_image_split(groups: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` with whole images on one side (``GroupShuffleSplit``)."""
    from ..evaluate.protocols import heldout_images

    fold = heldout_images(groups, test_size, seed)[0]
    return fold.train, fold.test


def _methods(cfg: AlignConfig) -> list[str]:
    names = list(dict.fromkeys(list(cfg.methods) + list(cfg.baselines)))
    known = METHODS + BASELINES
    unknown = [m for m in names if m not in known]
    if unknown:
        raise ObjalignError(f"align.methods/baselines: unknown {unknown}; expected any of {', '.join(known)}")
    bad = [p for p in cfg.protocols if p not in ("heldout_images", "heldout_categories")]
    if bad or not cfg.protocols:
        raise ObjalignError(f"align.protocols = {list(cfg.protocols)}: expected one or both of "
                            "heldout_images, heldout_categories")
    for name in ("n_permutations", "n_bootstrap"):
        if getattr(cfg, name) < 0:
            raise ObjalignError(f"align.{name} = {getattr(cfg, name)}: expected 0 (off) or a positive count")
    from ..evaluate.nulls import check_null

    check_null(cfg.null)
    if 0 < cfg.n_permutations < 100:
        raise ObjalignError(f"align.n_permutations = {cfg.n_permutations}: use at least 100 (or 0 to turn nulls off)")
    if cfg.similarity_permutations < 0:
        raise ObjalignError(f"align.similarity_permutations = {cfg.similarity_permutations}: expected 0 (off) or a "
                            "positive count, e.g. 1000")
    from ..evaluate.matching import METHODS as MATCH_METHODS

    if any(m not in MATCH_METHODS for m in cfg.match_methods):
        raise ObjalignError(f"align.match_methods = {list(cfg.match_methods)}: expected any of "
                            f"{', '.join(MATCH_METHODS)} (or [] to turn blind matching off)")
    if cfg.retrieval_k < 1 or cfg.match_restarts < 1 or cfg.match_bootstrap < 0:
        raise ObjalignError(f"align.retrieval_k = {cfg.retrieval_k}, match_restarts = {cfg.match_restarts}, "
                            f"match_bootstrap = {cfg.match_bootstrap}: expected k >= 1, restarts >= 1, bootstrap >= 0")
    if not 0 < cfg.similarity_alpha < 1:
        raise ObjalignError(f"align.similarity_alpha = {cfg.similarity_alpha}: expected a level in (0, 1), e.g. 0.05")
    if not 0 < cfg.confidence < 1:
        raise ObjalignError(f"align.confidence = {cfg.confidence}: expected a coverage in (0, 1), e.g. 0.95")
    return names


def _folds(protocol: str, groups, label_index, cfg: AlignConfig):
    from ..evaluate import protocols

    if protocol == "heldout_images":
        return protocols.heldout_images(groups, cfg.test_size, cfg.seed)
    return protocols.heldout_categories(label_index, groups, cfg.category_folds, cfg.seed)


def _mode(values: list[float]) -> float:
    counts = Counter(values)
    top = max(counts.values())
    return min(v for v, c in counts.items() if c == top)


def _similarity(Z: np.ndarray, Y: np.ndarray, groups: np.ndarray, cfg: AlignConfig, cache: dict | None = None) -> dict:
    """Similarity measures between held-out vision features and their text targets, and a shuffled floor.

    Parameters
    ----------
    Z : (n, d) PCA'd vision features of the test objects
    Y : (n, q) their categories' text embeddings
    groups : (n,) image ids
    cfg : AlignConfig (``similarity_k``, ``svcca_dim``, ``similarity_max_n``, ``seed``)
    cache : dict shared by the calls on the same ``Z`` and ``groups`` (several target sets): what the measures and
        their permutation engines compute from ``Z`` alone, and the permutations, are computed once
        (:mod:`objalign.evaluate.similarity`); the results are identical with or without it

    Run it with BLAS limited to one thread (``single_threaded_blas``, as :func:`evaluate` does): its (n, n)
    products on a few hundred objects gain nothing from threads.

    Returns
    -------
    dict with ``values`` (measure -> float or None), ``values_shuffled`` (the same measures after one
    image-block shuffle of the pairing: what unrelated spaces with these marginals score; both evaluated by the
    measures' permutation engines, :func:`objalign.evaluate.calibrate.permutation_engine`), ``n``, ``k``,
    ``svcca_dim``, ``chance_mutual_knn``, ``calibrated`` (measure -> threshold, p-value, BH-adjusted p-value and
    calibrated score against ``align.similarity_permutations`` image-block permutations,
    :func:`objalign.evaluate.calibrate.calibrate_measures`) and, for measures that could not be computed, ``errors``.
    """
    from ..evaluate.calibrate import calibrate_measures, permutation_engine
    from ..evaluate.similarity import distinct_rows
    from ..evaluate.stats import group_permutations

    n_all = len(Z)
    if n_all > cfg.similarity_max_n:  # the measures build (n, n) matrices: a seeded subsample of objects
        keep = np.sort(np.random.default_rng(cfg.seed).choice(n_all, cfg.similarity_max_n, replace=False))
        Z, Y, groups = Z[keep], Y[keep], groups[keep]
    n = len(Z)
    out = {"n": int(n), "n_test": int(n_all),
           "features": "PCA'd vision test features vs their categories' text embeddings (held-out images)",
           "ties": "average (expected value under random tie-breaking; text targets repeat per category)"}
    if n < 5:
        return {**out, "skipped": f"only {n} test objects"}
    k = int(min(cfg.similarity_k, n - 1))
    cache = {} if cache is None else cache  # also shared by the measures and their engines within this call
    # centred targets with u distinct rows (categories) have rank <= u - 1 (= u - 1 for affinely independent
    # category embeddings); svcca raises, and the error is recorded, if it is lower still
    dim = int(min(cfg.svcca_dim, distinct_rows(Y, cache) - 1, Z.shape[1], n - 1))

    spec = {"cka_linear": ("cka_linear", {}), "cka_linear_unbiased": ("cka_linear_unbiased", {}),
            "cka_rbf": ("cka_rbf", {}), "mutual_knn": ("mutual_knn", {"k": k}),
            "cknna": ("cknna", {"k": max(k, 2)}), **({"svcca": ("svcca", {"dim": dim})} if dim >= 1 else {})}
    engines: dict = {}

    def values(pi=None):
        """Every measure on ``(Z, Y[pi])`` (``pi=None``: the observed pairing), by its permutation engine: the
        measure itself, with what it computes from ``Y`` alone computed once and reordered for ``pi``."""
        got = {}
        for name in ("cka_linear", "cka_linear_unbiased", "cka_rbf", "mutual_knn", "cknna", "svcca"):
            if name not in spec:
                got[name] = None
                continue
            try:
                if name not in engines:
                    engines[name] = permutation_engine(spec[name][0], Z, Y, cache, **spec[name][1])
                got[name] = float(engines[name].score(pi))
            except ObjalignError as exc:  # e.g. a degenerate tiny test set: record why, keep the report
                got[name] = None
                out.setdefault("errors", {})[name] = str(exc)
        return got

    result = {"values": values()}
    calibrated = None
    if cfg.similarity_permutations > 0:  # each measure against its image-block permutation threshold
        calibrated = calibrate_measures(spec, Z, Y, groups, cfg.similarity_permutations, cfg.similarity_alpha,
                                        cfg.seed, cache=cache, engines=engines)
    result["values_shuffled"] = values(group_permutations(groups, 1, seed=cfg.seed + _SHUFFLE_SEED)[0])
    if calibrated is not None:
        result["calibrated"] = calibrated
    return {**out, "k": k, "svcca_dim": dim, **result, "chance_mutual_knn": float(k / (n - 1))}


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
        c + m names, :func:`objalign.evaluate.category_level.open_vocabulary`)

    Returns
    -------
    dict with ``rows`` (list of result rows), ``per_category`` (list), ``similarity`` (dict), ``pca`` (dict),
    ``per_instance`` (dict of arrays), ``nulls`` (dict of arrays), ``projection`` (dict of arrays), ``skipped``
    (protocol -> reason, for ``heldout_categories`` when the data are too few for its folds), ``category_level``
    (blind matching and RSA, :func:`objalign.evaluate.category_level.category_level`)
    """
    from . import check_xy

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
    selected maps and the permutations' category coefficients (:mod:`objalign.align.shared`,
    :func:`objalign.evaluate.nulls.smoother_nulls`). ``nulls`` use the same permutations for every key.

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
    from . import check_xy

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
    from . import check_xy

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


def _evaluate(X, groups, label_index, targets: dict, cfg: AlignConfig, category_names, category_ids,
              vocabularies: dict, strict: bool) -> dict:
    """The engine of :func:`evaluate` and :func:`evaluate_targets` (``strict``: a bad target set raises)."""
    from ..evaluate.intervals import bootstrap_figures
    from ..evaluate.metrics import figures_from_instances, per_category, per_instance, r2_scores
    from ..evaluate.nulls import NULL_DESCRIPTIONS, pvalues, single_threaded_blas, smoother_nulls
    from . import PCAMatch
    from .shared import fit_fold

    methods = _methods(cfg)
    live, errors = _check_targets(X, groups, label_index, targets, strict)
    if not live:
        return errors
    keys = list(live)
    c = len(live[keys[0]])
    names = list(category_names) if category_names is not None else [str(i) for i in range(c)]
    cids = np.asarray(category_ids) if category_ids is not None else np.arange(c)
    results = {k: {"rows": [], "per_category": [], "similarity": {}, "pca": {}, "per_instance": {}, "nulls": {},
                   "projection": {}, "skipped": {}} for k in keys}
    for protocol in cfg.protocols:
        try:
            folds = _folds(protocol, groups, label_index, cfg)
            n_big = max(len(f.train) for f in folds)
            fold_fits = [fit_fold(X, groups, label_index, f, methods, cfg, i, protocol, live, n_big)
                         for i, f in enumerate(folds)]
        except ObjalignError as exc:
            # Too little data for held-out categories (e.g. a 40-object smoke run) must not hide the other
            # protocol's results: record why it was skipped (report.json "skipped", report.txt), fail otherwise.
            if protocol == "heldout_categories" and len(cfg.protocols) > 1:
                for k in keys:
                    results[k]["skipped"][protocol] = str(exc)
                continue
            raise
        test = np.concatenate([f.test for f in folds])
        lab, g = label_index[test], groups[test]
        unseen = protocol == "heldout_categories"
        cand_mask = None
        if unseen:
            cand_mask = np.zeros((len(test), c), dtype=bool)
            start = 0
            for f in folds:
                cand_mask[start:start + len(f.test), f.unseen] = True
                start += len(f.test)
        for k in keys:
            results[k]["per_instance"][f"{protocol}__index"] = test
        n_images_test = int(len(np.unique(g)))
        bounds = np.cumsum([0] + [len(f.test) for f in folds])  # fold i's objects: test[bounds[i]:bounds[i + 1]]
        # the resamples of this protocol's test images and what is summed from them alone: drawn once for every
        # method and target set (bootstrap_figures checks them against its arguments)
        boot_cache: dict = {}
        # the per-target-set figures, intervals and nulls: many small products, where a BLAS thread team only
        # adds synchronisation (and, in a matrix, is paid once per target set)
        with single_threaded_blas():
            for method in methods:
                rows = {}
                for k in keys:
                    class_emb = live[k]
                    Yt = class_emb[lab]  # the test objects' targets, in the order of test (fold by fold)
                    res = results[k]
                    fits = [{"pca_dim": ff["keys"][k]["pca_dim"], "n_train": ff["n_train"],
                             **ff["keys"][k]["methods"][method]} for ff in fold_fits]
                    pred = np.vstack([fit["pred"] for fit in fits])
                    inst_parts = [per_instance(fit["pred"], None, lab[a:b], class_emb, f.unseen if unseen else None)
                                  for f, fit, a, b in zip(folds, fits, bounds[:-1], bounds[1:])]  # true: class rows
                    inst = {n: np.concatenate([p[n] for p in inst_parts]) for n in inst_parts[0]}
                    figs = {**r2_scores(Yt, pred, categories=(lab, class_emb)), **figures_from_instances(inst)}
                    hps = [fit["hp"] for fit in fits]
                    row = {"method": method, "split": protocol, **figs, "n_test": int(len(test)),
                           "n_candidates": int(c), "chance_top1": 1.0 / c,
                           "hyperparameters": {h: _mode([x[h] for x in hps]) for h in hps[0]},
                           "pca_dim": int(_mode([fit["pca_dim"] for fit in fits])),
                           "n_train": int(round(np.mean([fit["n_train"] for fit in fits]))),
                           "n_images_test": n_images_test,
                           "fit_seconds": round(sum(fit["seconds"] for fit in fits), 3)}
                    if unseen:
                        row["n_candidates_unseen"] = float(np.mean([len(f.unseen) for f in folds]))
                        row["chance_top1_unseen"] = float(np.mean(1.0 / cand_mask.sum(1)))
                        row["folds"] = [{"unseen": [names[u] for u in f.unseen], "n_train": fit["n_train"],
                                         "n_test": int(len(f.test)), "pca_dim": fit["pca_dim"],
                                         "hyperparameters": fit["hp"]} for f, fit in zip(folds, fits)]
                    vocabulary = vocabularies.get(k)
                    if vocabulary is not None and len(vocabulary):
                        from ..evaluate.category_level import open_vocabulary

                        row["open_vocabulary"] = open_vocabulary(pred, lab, class_emb, vocabulary, cfg.retrieval_k)
                    if cfg.n_bootstrap > 0:
                        row["ci"] = bootstrap_figures(pred, Yt, inst, g, cfg.n_bootstrap, cfg.confidence, cfg.seed,
                                                      categories=(lab, class_emb), cache=boot_cache)
                        row["ci_level"] = cfg.confidence
                    rows[k] = (row, figs, fits)
                    for r in per_category(inst, lab, names, cids):
                        res["per_category"].append({"split": protocol, "method": method, **r})
                    for n, v in inst.items():
                        res["per_instance"][f"{protocol}__{method}__{n}"] = v
                if method in METHODS and cfg.n_permutations > 0:
                    _null_rows(rows, folds, fold_fits, live, label_index, groups, cand_mask, protocol, method, cfg,
                               results, smoother_nulls, pvalues, NULL_DESCRIPTIONS)
                for k in keys:
                    results[k]["rows"].append(rows[k][0])
        if protocol == "heldout_images":
            fold = folds[0]
            sim_caches: dict[int, dict] = {}  # per PCA dimension: what the similarity measures compute from Zte
            with single_threaded_blas():  # (n, n) products on a few hundred objects: threads only add overhead
                for k in keys:
                    fit = fold_fits[0]["keys"][k]
                    results[k]["similarity"] = _similarity(fit["Zte"], live[k][label_index[fold.test]],
                                                           groups[fold.test], cfg,
                                                           cache=sim_caches.setdefault(fit["pca_dim"], {}))
            for k in keys:
                class_emb, res = live[k], results[k]
                Y = class_emb[label_index]
                fit = fold_fits[0]["keys"][k]
                res["pca"] = {"vision_explained_variance_ratio": fit["pca"].explained_variance_ratio_.tolist(),
                              "pca_dim": fit["pca_dim"], "fitted_on": "heldout_images training objects"}
                res["pca"]["text_explained_variance_ratio"] = category_variance_ratio(
                    class_emb, label_index[fold.train], int(min(len(fold.train), Y.shape[1], c)))
                # 2-D views: vision test features on their top two principal axes; category embeddings and the
                # ridge-mapped test objects on the top two axes of the category embeddings.
                cp = PCAMatch(n_components=2).fit(class_emb)
                proj = {"vision_2d": fit["Zte"][:, :2], "label": label_index[fold.test],
                        "class_2d": cp.transform(class_emb)}
                best = "ridge" if "ridge" in methods else methods[0]
                proj["mapped_2d"] = cp.transform(fit["methods"][best]["pred"])
                proj["mapped_method"] = np.asarray(best)
                proj["class_name"] = np.asarray(names)
                res["projection"] = proj
    from ..evaluate.category_level import category_level

    vision_side: dict = {}  # prototypes, kernels and RDMs of X: computed once for every target set
    for k in keys:
        results[k]["category_level"] = category_level(X, label_index, live[k], groups, cfg, cache=vision_side)
    return {k: results.get(k, errors.get(k)) for k in targets}


def _null_rows(rows, folds, fold_fits, live, label_index, groups, cand_mask, protocol, method, cfg, results,
               smoother_nulls, pvalues, descriptions) -> None:
    """Permutation p-values of one method and protocol for every target set (one shared pass over the
    permutations: the category coefficients of a smoother serve every set that selected it)."""
    keys = list(rows)
    ready = [k for k in keys if all(fit["S"] is not None for fit in rows[k][2])]
    for k in keys:
        if k not in ready:
            rows[k][0]["pvalue"] = {}
            rows[k][0]["null"] = {"skipped": f"a fit has more than align.null_max_train = {cfg.null_max_train} "
                                             "training objects (or kernel ridge ran in Nystroem mode)"}
    by_fit: dict[tuple, list[str]] = {}  # sets fitted on the same PCA features share smoothers
    for k in ready:
        fits = rows[k][2]
        by_fit.setdefault((int(fits[0]["n_permutations"]), tuple(f["pca_dim"] for f in fits)), []).append(k)
    for (n_perm, _), ks in by_fit.items():
        blocks = []
        for i, f in enumerate(folds):
            S = {}
            for k in ks:
                S.update(rows[k][2][i]["S"]["S"])
            blocks.append({"S": S, "train_labels": label_index[f.train], "train_groups": groups[f.train],
                           "test_labels": label_index[f.test]})
        choices = {k: [fit["S"]["choice"] for fit in rows[k][2]] for k in ks}
        nulls = smoother_nulls(blocks, {k: live[k] for k in ks}, choices, n_perm, cfg.seed, cand_mask)
        for k in ks:
            row, figs, fits = rows[k]
            null = nulls[k]
            row["pvalue"] = pvalues(figs, null)
            row["null_mean"] = {n: float(v.mean()) for n, v in null.items()}
            row["null"] = {"kind": cfg.null, "n_permutations": int(n_perm), "scheme": "image-blocks",
                           "hyperparameters": descriptions[cfg.null]}
            reason = fits[0]["null_reason"]
            if reason:
                row["null"]["reduced"] = reason
            for n, v in null.items():
                results[k]["nulls"][f"{protocol}__{method}__{n}"] = v


def fit_and_score(X: np.ndarray, Y: np.ndarray, groups: np.ndarray, label_index: np.ndarray,
                  class_emb: np.ndarray, cfg: AlignConfig) -> tuple[list[dict], dict]:
    """Result rows and per-instance arrays (see :func:`evaluate`, which returns everything)."""
    res = evaluate(X, Y, groups, label_index, class_emb, cfg)
    return res["rows"], res["per_instance"]


def write_results(d: Path, res: dict, meta: dict[str, np.ndarray] | None = None) -> None:
    """Write :func:`evaluate`'s output into folder ``d`` (the files the report stage reads).

    ``meta`` maps column names (e.g. ``annotation_id``, ``image_id``) to per-object arrays (n,); each is stored
    for every protocol's test objects in ``per_instance.npz`` as ``{protocol}__{column}``.
    """
    from ..runs import atomic_write_json

    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    arrays = dict(res["per_instance"])
    for key in [k for k in arrays if k.endswith("__index")]:
        protocol = key[: -len("__index")]
        for col, values in (meta or {}).items():
            arrays[f"{protocol}__{col}"] = np.asarray(values)[arrays[key]]
    np.savez(d / "per_instance.npz", **arrays)
    np.savez(d / "nulls.npz", **res["nulls"])
    np.savez(d / "projection.npz", **res["projection"])
    atomic_write_json(d / "per_category.json", res["per_category"])
    atomic_write_json(d / "similarity.json", res["similarity"])
    atomic_write_json(d / "pca.json", res["pca"])
    atomic_write_json(d / "skipped.json", res.get("skipped", {}))
    atomic_write_json(d / "category_level.json", res.get("category_level", {}))
    atomic_write_json(d / "results.json", res["rows"])


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


def run_align(cfg: RunConfig, out: str | Path, force: bool = False) -> dict:
    from ..embed.stage import load_run_embeddings

    out = ensure_out(out)
    started = time.time()
    key = cfg.section_key("align", extra={"embed": stage_key(out, "embed")})
    if not force and is_current(out, "align", key) and (out / "align" / "results.json").is_file():
        return {**stage_record(out, "align"), "reused": True}
    vm, X, tm, T = load_run_embeddings(out)
    cat_row = {int(c): j for j, c in enumerate(tm["category_id"])}
    label_index = np.asarray([cat_row[int(c)] for c in vm["category_id"]])
    Y = T[label_index]
    names = [str(x) for x in tm["category"]] if "category" in tm else None
    dtype = compute_dtype(cfg.align, len(X))
    from .units_stage import check_unit_studies, unit_studies

    check_unit_studies(cfg.align, len(X))  # align.units, prototype_k, convergence_sizes: before any fit
    from ..embed.vocab import load_vocabulary_embeddings

    vocab = load_vocabulary_embeddings(out)
    X, Y, T = X.astype(dtype, copy=False), Y.astype(dtype, copy=False), T.astype(dtype)  # one cast for both uses
    res = evaluate(X, Y, vm["image_id"], label_index, T, cfg.align, names, np.asarray(tm["category_id"]),
                   vocabulary=None if vocab is None else vocab[1].astype(dtype))
    write_results(out / "align", res, {k: vm[k] for k in ("annotation_id", "category_id", "image_id")})
    studies = unit_studies(out, X, Y, vm["image_id"], label_index, T, cfg.align, res["rows"],
                           evaluate)  # align/units.json, convergence.json
    summary = {"n_instances": int(len(X)), "protocols": list(cfg.align.protocols), "methods": _methods(cfg.align),
               "n_test": {r["split"]: r["n_test"] for r in res["rows"]},
               "units": list(studies["units"].get("units", ["object"])),
               "convergence_seconds": studies["convergence"].get("seconds")}
    return {**write_stage(out, "align", key, summary, started), "reused": False}
