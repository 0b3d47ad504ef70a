"""The ``align`` stage: embeddings -> fitted maps and held-out figures (``align/results.json``).

Protocol (``heldout_images``): images are split into train and test (grouped, so no image is on both sides);
PCA to the common dimension, hyperparameters (by grouped K-fold CV) and maps are fitted on the training
split only; the test split is scored against the true category's text embedding and ranked against all
category embeddings.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..config import AlignConfig, RunConfig
from ..errors import ObjalignError
from ..runs import ensure_out, is_current, stage_key, stage_record, write_stage

METHODS = ("ridge", "kernel_ridge", "mean")


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
    from sklearn.model_selection import GroupShuffleSplit

    if not 0 < test_size < 1:
        raise ObjalignError(f"align.test_size = {test_size}: expected a fraction between 0 and 1")
    if len(np.unique(groups)) < 2:
        raise ObjalignError("align: the embeddings come from a single image; a held-out-image split needs at least 2")
    return next(GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed).split(groups, groups=groups))


def fit_and_score(X: np.ndarray, Y: np.ndarray, groups: np.ndarray, label_index: np.ndarray,
                  class_emb: np.ndarray, cfg: AlignConfig) -> tuple[list[dict], dict]:
    """Fit every method on a held-out-image split and score it.

    Parameters
    ----------
    X : (n, d_vision) vision embeddings
    Y : (n, d_text) text embedding of each instance's category
    groups : (n,) image ids
    label_index : (n,) row of ``class_emb`` holding each instance's category
    class_emb : (c, d_text) all category embeddings (retrieval candidates)

    Returns
    -------
    rows : list of dict, one per method (``method``, ``split``, figures, ``hyperparameters``)
    per_instance : dict method -> dict of per-instance arrays on the test split (plus ``test_index``)
    """
    from sklearn.model_selection import GroupKFold

    from ..evaluate.metrics import summarize
    from . import KernelRidgeCV, PCAMatch, RidgeCV, check_xy

    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ObjalignError(f"align.methods: unknown {unknown}; expected any of {', '.join(METHODS)}")
    check_xy(X, Y, groups, name_x="vision embeddings", name_y="text targets")
    train, test = heldout_image_split(groups, cfg.test_size, cfg.seed)
    n_train_groups = len(np.unique(groups[train]))
    if n_train_groups < cfg.cv_folds:
        raise ObjalignError(f"align.cv_folds = {cfg.cv_folds} but the training split has only {n_train_groups} "
                            "images; lower align.cv_folds or sample more instances")
    d = int(min(cfg.common_dim, X.shape[1], Y.shape[1], len(train) - 1))
    pca = PCAMatch(n_components=d).fit(X[train])
    Ztr, Zte = pca.transform(X[train]), pca.transform(X[test])
    cv = GroupKFold(n_splits=cfg.cv_folds)
    rows, per = [], {"test_index": test}
    for method in cfg.methods:
        t0 = time.time()
        if method == "ridge":
            model = RidgeCV(alphas=list(cfg.alphas), cv=cv).fit(Ztr, Y[train], groups=groups[train])
            pred, hp = model.predict(Zte), dict(model.best_params_)
        elif method == "kernel_ridge":
            scale = median_sq_distance(Ztr, seed=cfg.seed)
            gammas = [g / scale for g in cfg.gammas]
            model = KernelRidgeCV(alphas=list(cfg.alphas), gammas=gammas, kernel="rbf", cv=cv)
            model.fit(Ztr, Y[train], groups=groups[train])
            pred, hp = model.predict(Zte), dict(model.best_params_)
            hp["gamma_times_median_sqdist"] = float(hp["gamma"] * scale)
        else:  # mean: predicts the training mean text embedding for everything (a floor)
            pred, hp = np.repeat(Y[train].mean(0, keepdims=True), len(test), 0), {}
        agg, inst = summarize(pred, Y[test], label_index[test], class_emb)
        rows.append({"method": method, "split": "heldout_images", **agg,
                     "hyperparameters": {k: float(v) for k, v in hp.items()},
                     "pca_dim": d, "n_train": int(len(train)), "fit_seconds": round(time.time() - t0, 3)})
        per[method] = inst
    return rows, per


def run_align(cfg: RunConfig, out: str | Path, force: bool = False) -> dict:
    from ..embed.stage import load_run_embeddings
    from ..embed.store import atomic_write_json

    out = ensure_out(out)
    started = time.time()
    key = cfg.section_key("align", extra={"embed": stage_key(out, "embed")})
    if not force and is_current(out, "align", key) and (out / "align" / "results.json").is_file():
        return {**stage_record(out, "align"), "reused": True}
    vm, X, tm, T = load_run_embeddings(out)
    cat_row = {int(c): j for j, c in enumerate(tm["category_id"])}
    label_index = np.asarray([cat_row[int(c)] for c in vm["category_id"]])
    Y = T[label_index]
    rows, per = fit_and_score(X.astype(np.float64), Y.astype(np.float64), vm["image_id"], label_index,
                              T.astype(np.float64), cfg.align)
    (out / "align").mkdir(exist_ok=True)
    test = per.pop("test_index")
    arrays = {"test_annotation_id": vm["annotation_id"][test], "test_category_id": vm["category_id"][test]}
    for m, inst in per.items():
        for k, v in inst.items():
            arrays[f"{m}__{k}"] = v
    np.savez(out / "align" / "per_instance.npz", **arrays)
    atomic_write_json(out / "align" / "results.json", rows)
    summary = {"n_instances": int(len(X)), "n_test": int(len(test)), "methods": list(cfg.align.methods)}
    return {**write_stage(out, "align", key, summary, started), "reused": False}
