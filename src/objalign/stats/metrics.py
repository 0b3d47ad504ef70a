"""Per-instance and aggregate alignment metrics between predicted and true text embeddings.

Every figure objalign reports for a map comes from here, so the observed row, its bootstrap interval and
its permutation null are computed by one definition:

``r2``                    R² averaged uniformly over the text dimensions that vary (see :func:`r2_uniform`)
``r2_variance_weighted``  R² with text dimensions weighted by their variance (see :func:`r2_variance_weighted`)
``cosine_mean``           mean cosine similarity between prediction and the true category's text embedding
``residual_mean``         mean L2 residual ``||prediction - true||``
``residual_median``       median L2 residual
``top1`` / ``top5``       fraction of objects whose true category ranks first / in the first five among the
                          candidate category embeddings, by cosine similarity to the prediction
``mean_rank``             mean 1-based rank of the true category (ties counted against the truth)

With a subset of candidates (``unseen``: the categories a held-out-category map never saw), ``top1_unseen``,
``top5_unseen`` and ``mean_rank_unseen`` rank the true category among that subset only.
"""

from __future__ import annotations

import numpy as np

from objalign.errors import ObjalignError

#: Figures of a result row, in report order.
FIGURES = ("r2", "r2_variance_weighted", "cosine_mean", "residual_mean", "residual_median", "top1", "top5",
           "mean_rank")
#: Retrieval figures among the unseen categories only (held-out-category protocol).
UNSEEN_FIGURES = ("top1_unseen", "top5_unseen", "mean_rank_unseen")
#: Every figure a result row can hold, in report order (:data:`FIGURES`, then :data:`UNSEEN_FIGURES`).
ALL_FIGURES = FIGURES + UNSEEN_FIGURES
#: Figures that are means of per-object values (:func:`instance_values`; their bootstrap reweights the objects).
MEAN_FIGURES = ("cosine_mean", "residual_mean", "top1", "top5", "mean_rank") + UNSEEN_FIGURES
#: Figures of the unit-of-analysis comparison (objects against images).
UNIT_FIGURES = ("r2", "cosine_mean", "top1", "top5", "mean_rank")
#: Figures followed along a convergence curve and drawn against their nulls (``top1_unseen`` where present).
CURVE_FIGURES = ("r2", "cosine_mean", "top1", "top1_unseen")
#: Figures of the table comparing runs (``objalign compare``).
COMPARE_FIGURES = ("r2", "cosine_mean", "residual_median", "top1", "top5", "mean_rank", "top1_unseen")
#: Figures of the text report's result table (the variance-weighted R² is printed beside ``r2``).
TABLE_FIGURES = tuple(f for f in FIGURES if f != "r2_variance_weighted")
#: Figures where smaller is better (a permutation test asks for "less" there).
SMALLER_IS_BETTER = frozenset({"residual_mean", "residual_median", "mean_rank", "mean_rank_unseen"})


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def _ranks(sims: np.ndarray, label_col: np.ndarray) -> np.ndarray:
    """1-based rank of column ``label_col[i]`` in row ``i`` of ``sims`` ``(n, c)``; ties count against it."""
    own = sims[np.arange(len(sims)), label_col]
    return 1 + np.sum(sims > own[:, None], axis=1)


def _check_inputs(pred, true, label_index, class_emb, candidates=None):
    pred = np.asarray(pred, dtype=np.float64)
    true = None if true is None else np.asarray(true, dtype=np.float64)
    class_emb = np.asarray(class_emb, dtype=np.float64)
    label_index = np.asarray(label_index)
    if pred.ndim != 2 or (true is not None and pred.shape != true.shape):
        raise ObjalignError(f"predictions have shape {pred.shape} but true targets {getattr(true, 'shape', None)}; "
                            "expected equal (n_objects, text_dim) arrays")
    if class_emb.ndim != 2 or class_emb.shape[1] != pred.shape[1]:
        raise ObjalignError(f"class_emb has shape {class_emb.shape}; expected (n_categories, {pred.shape[1]})")
    if label_index.shape != (len(pred),) or label_index.dtype.kind not in "iu":
        raise ObjalignError(f"label_index must be ({len(pred)},) integer rows of class_emb, got shape "
                            f"{label_index.shape} and dtype {label_index.dtype}")
    if len(label_index) and (label_index.min() < 0 or label_index.max() >= len(class_emb)):
        raise ObjalignError(f"label_index holds rows outside 0..{len(class_emb) - 1}: pass rows of class_emb")
    if candidates is not None:
        candidates = np.asarray(candidates)
        if candidates.ndim != 1 or candidates.size == 0 or candidates.dtype.kind not in "iu":
            raise ObjalignError("unseen candidates must be a non-empty 1-D integer array of class_emb rows")
        if not np.all(np.isin(label_index, candidates)):
            raise ObjalignError("every object's true category must be among the unseen candidates it is ranked in")
    return pred, true, label_index, class_emb, candidates


def per_instance(pred: np.ndarray, true: np.ndarray | None, label_index: np.ndarray, class_emb: np.ndarray,
                 candidates: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-instance residuals and retrieval ranks.

    Parameters
    ----------
    pred, true : (n, d)
        Predicted and true text embeddings. ``true=None``: each object's category row ``class_emb[label_index]``
        (the same numbers; the unit vectors then come from the c category rows instead of the n objects).
    label_index : (n,) int
        Row of ``class_emb`` that holds each instance's true category.
    class_emb : (c, d)
        One text embedding per candidate category.
    candidates : (u,) int, optional
        Rows of ``class_emb`` forming a second, smaller candidate set (the unseen categories); every
        ``label_index`` must be among them.

    Returns
    -------
    dict with ``residual_l2`` (n,), ``cosine`` (n,) and ``rank`` (n,) — the 1-based rank of the true
    category among the candidates by cosine similarity to the prediction (ties counted against the truth:
    rank = 1 + number of candidates scoring strictly higher) — and, with ``candidates``, ``rank_unseen`` (n,).
    """
    pred, true, label_index, class_emb, candidates = _check_inputs(pred, true, label_index, class_emb, candidates)
    # the (n, d) arrays are written in place where they can be: at demo size each new one costs its page faults
    unit_emb = _unit(class_emb)
    if true is None:  # the category rows: a row's unit vector does not depend on the rows around it
        rows = class_emb[label_index]
        diff = np.subtract(pred, rows, out=rows)
        unit_true = unit_emb[label_index]
    else:
        diff, unit_true = pred - true, _unit(true)
    residual = np.sqrt(np.add.reduce(np.square(diff, out=diff), axis=1))  # np.linalg.norm(diff, axis=1)
    norm = np.sqrt(np.add.reduce(np.multiply(pred, pred, out=diff), axis=1, keepdims=True))  # as in _unit(pred)
    unit_pred = pred / np.maximum(norm, 1e-12)
    cosine = np.add.reduce(np.multiply(unit_pred, unit_true, out=diff), axis=1)
    sims = unit_pred @ unit_emb.T
    out = {"residual_l2": residual, "cosine": cosine, "rank": _ranks(sims, label_index)}
    if candidates is not None:
        col = np.searchsorted(np.sort(candidates), label_index)
        out["rank_unseen"] = _ranks(sims[:, np.sort(candidates)], col)
    return out


def top_predicted(pred: np.ndarray, class_emb: np.ndarray, k: int = 3) -> np.ndarray:
    """The ``k`` categories each prediction is closest to by cosine similarity, best first.

    Parameters
    ----------
    pred : (n, d)
        Predicted text embeddings.
    class_emb : (c, d)
        One text embedding per candidate category.
    k : int
        How many (at most ``c``).

    Returns
    -------
    (n, min(k, c)) int64
        Rows of ``class_emb``; ties broken towards the lower row (``np.argsort``, stable).
    """
    sims = _unit(np.asarray(pred, dtype=np.float64)) @ _unit(np.asarray(class_emb, dtype=np.float64)).T
    return np.argsort(-sims, axis=1, kind="stable")[:, :min(k, sims.shape[1])].astype(np.int64)


def category_order(class_emb: np.ndarray) -> np.ndarray:
    """The categories in the leaf order of an average-linkage clustering of their embeddings (cosine distance),
    so that near names sit together (e.g. the rows and columns of a confusion matrix).

    Parameters
    ----------
    class_emb : (c, d)

    Returns
    -------
    (c,) int64
        A permutation of ``0 .. c-1``.
    """
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import pdist

    c = len(class_emb)
    if c < 3:
        return np.arange(c, dtype=np.int64)
    d = np.clip(pdist(_unit(np.asarray(class_emb, dtype=np.float64)), "cosine"), 0.0, None)
    return leaves_list(linkage(np.nan_to_num(d), "average")).astype(np.int64)


#: A text dimension whose variance over the test objects is at most this fraction of the largest one is constant.
CONSTANT_DIM_RTOL = 1e-12


def r2_scores(true: np.ndarray, pred: np.ndarray, categories: tuple | None = None) -> dict[str, float]:
    """Both R² figures of a row, ``{"r2": r2_uniform, "r2_variance_weighted": r2_variance_weighted}``, from one
    pass over the residuals.

    Parameters
    ----------
    true, pred : (n, q)
    categories : (labels (n,), class_emb (c, q)), optional
        When ``true`` is ``class_emb[labels]``: the total sums of squares then come from the (c, q) category
        embeddings weighted by their counts instead of the (n, q) targets (equal up to float rounding; only the
        residuals need the n rows).

    Returns
    -------
    dict with ``r2`` and ``r2_variance_weighted`` (floats)
    """
    true = np.asarray(true, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if categories is None:
        ss_tot = _total_squares(true)
    else:
        E = np.asarray(categories[1], dtype=np.float64)
        cnt = np.bincount(np.asarray(categories[0]), minlength=len(E)).astype(np.float64)
        Ec = E - cnt @ E / max(cnt.sum(), 1.0)
        ss_tot = cnt @ (Ec * Ec)
    diff = true - pred
    ss_res = np.sum(np.square(diff, out=diff), axis=0)
    live = _varying(ss_tot)
    if not live.any():
        exact = 1.0 if not np.any(ss_res) else 0.0
        return {"r2": exact, "r2_variance_weighted": exact}
    return {"r2": float(np.mean(1.0 - ss_res[live] / ss_tot[live])),
            "r2_variance_weighted": float(1.0 - ss_res[live].sum() / ss_tot[live].sum())}


def r2_uniform(true: np.ndarray, pred: np.ndarray) -> float:
    """R² averaged uniformly over the text dimensions that vary over the test objects.

    ``mean_j (1 - SS_res_j / SS_tot_j)`` over dimensions with ``SS_tot_j > CONSTANT_DIM_RTOL * max_j SS_tot_j``;
    it equals ``sklearn.metrics.r2_score(true, pred)`` when no dimension is constant. Text encoders can have
    dimensions that are constant over all category embeddings (all-MiniLM-L6-v2 has some); scikit-learn scores
    those 1 or 0 when their variance is exactly 0 and an arbitrary number when float rounding of the mean leaves
    a variance of ~1e-60, so they are left out here. If every dimension is constant the score is 1 for an exact
    prediction and 0 otherwise.

    Parameters
    ----------
    true, pred : (n, q)

    Returns
    -------
    float
    """
    return r2_scores(true, pred)["r2"]


def _total_squares(true: np.ndarray) -> np.ndarray:
    """Per text dimension, the sum of squared deviations from the mean ``(q,)``."""
    return np.sum((true - true.mean(axis=0)) ** 2, axis=0)


def _varying(ss_tot: np.ndarray) -> np.ndarray:
    """The text dimensions that vary: total sum of squares above ``CONSTANT_DIM_RTOL`` times the largest."""
    return ss_tot > CONSTANT_DIM_RTOL * max(float(ss_tot.max()), 1e-300)


def r2_variance_weighted(true: np.ndarray, pred: np.ndarray) -> float:
    """R² with text dimensions weighted by their variance: ``1 - sum_j SS_res_j / sum_j SS_tot_j`` over the
    dimensions that vary (as :func:`r2_uniform`); scikit-learn's ``multioutput="variance_weighted"`` gives
    constant dimensions a weight of ~0 too, so the two agree.

    Parameters
    ----------
    true, pred : (n, q)

    Returns
    -------
    float
    """
    return r2_scores(true, pred)["r2_variance_weighted"]


def instance_values(inst: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-object values whose means are the :data:`MEAN_FIGURES` of a set of objects.

    Parameters
    ----------
    inst : dict of (n,) arrays
        From :func:`per_instance`.

    Returns
    -------
    dict figure -> (n,) array
        In :data:`MEAN_FIGURES` order: cosine, residual, top-1 and top-5 indicators, rank (and the unseen
        indicators and rank when ``inst`` has ``rank_unseen``).
    """
    out = {"cosine_mean": inst["cosine"], "residual_mean": inst["residual_l2"], "top1": inst["rank"] <= 1,
           "top5": inst["rank"] <= 5, "mean_rank": inst["rank"]}
    if "rank_unseen" in inst:
        out.update(top1_unseen=inst["rank_unseen"] <= 1, top5_unseen=inst["rank_unseen"] <= 5,
                   mean_rank_unseen=inst["rank_unseen"])
    return out


def figures_from_instances(inst: dict[str, np.ndarray]) -> dict[str, float]:
    """The mean/median figures of a set of objects from their :func:`per_instance` arrays (no R²)."""
    out = {
        "cosine_mean": float(inst["cosine"].mean()),
        "residual_mean": float(inst["residual_l2"].mean()),
        "residual_median": float(np.median(inst["residual_l2"])),
        "top1": float(np.mean(inst["rank"] <= 1)),
        "top5": float(np.mean(inst["rank"] <= 5)),
        "mean_rank": float(inst["rank"].mean()),
    }
    if "rank_unseen" in inst:
        out.update(top1_unseen=float(np.mean(inst["rank_unseen"] <= 1)),
                   top5_unseen=float(np.mean(inst["rank_unseen"] <= 5)),
                   mean_rank_unseen=float(inst["rank_unseen"].mean()))
    return out


def summarize(pred: np.ndarray, true: np.ndarray, label_index: np.ndarray, class_emb: np.ndarray,
              candidates: np.ndarray | None = None) -> tuple[dict, dict]:
    """Aggregate figures and the per-instance arrays they come from.

    Parameters
    ----------
    pred, true : (n, d)
        Predicted and true text embeddings.
    label_index : (n,) int
        Row of ``class_emb`` holding each instance's category.
    class_emb : (c, d)
        Candidate category embeddings.
    candidates : (u,) int, optional
        The unseen categories (rows of ``class_emb``), adding ``top1_unseen``, ``top5_unseen`` and
        ``mean_rank_unseen``.

    Returns
    -------
    figures : dict
        :data:`FIGURES` (and :data:`UNSEEN_FIGURES`), ``n_test``, ``n_candidates`` (and ``n_candidates_unseen``).
    per : dict
        :func:`per_instance` arrays.
    """
    per = per_instance(pred, true, label_index, class_emb, candidates)
    agg = {**r2_scores(true, pred),
           **figures_from_instances(per), "n_test": int(len(pred)), "n_candidates": int(len(class_emb))}
    if candidates is not None:
        agg["n_candidates_unseen"] = int(len(candidates))
    return agg, per


def per_category(inst: dict[str, np.ndarray], label_index: np.ndarray, names: list[str],
                 category_ids: np.ndarray) -> list[dict]:
    """Per-category breakdown of :func:`per_instance` arrays.

    Parameters
    ----------
    inst : dict of (n,) arrays
        From :func:`per_instance`.
    label_index : (n,) int
        Category row of each object.
    names : list of str, length c
        Category names, indexed by row.
    category_ids : (c,)
        Dataset category ids, indexed by row.

    Returns
    -------
    list of dict
        One entry per category present: ``category``, ``category_id``, ``n``, ``top1``, ``top5``, ``mean_rank``,
        ``cosine_mean``, ``residual_mean`` (and the ``*_unseen`` figures when ``inst`` has them).
    """
    present, codes = np.unique(np.asarray(label_index), return_inverse=True)
    codes = codes.ravel()
    n = np.bincount(codes, minlength=len(present))
    cols = instance_values(inst)
    # per-category means in one pass each (the matrix computes this for every cell, method and protocol)
    means = {k: np.bincount(codes, weights=np.asarray(v, dtype=np.float64), minlength=len(present)) / n
             for k, v in cols.items()}
    return [{"category": str(names[c]), "category_id": int(category_ids[c]), "n": int(n[j]),
             **{k: float(v[j]) for k, v in means.items()}} for j, c in enumerate(present)]


def is_smaller_better(measure: str) -> bool:
    """Whether smaller values of ``measure`` are better (:data:`SMALLER_IS_BETTER`).

    Parameters
    ----------
    measure : str
        A figure name (:data:`ALL_FIGURES`).

    Returns
    -------
    bool
    """
    return measure in SMALLER_IS_BETTER
