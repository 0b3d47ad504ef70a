"""One fold of the align stage fitted for several target sets at once (``evaluate_targets``'s engine).

Every target set shares the vision features X, the image groups and the labels; only its category text
embeddings ``T_k`` (c, q_k) differ, and its targets are ``Y_k = T_k[labels]``. Everything that does not depend
on ``T_k`` is therefore computed once per fold (for all target sets whose PCA dimension ``min(common_dim, d,
q_k, n_train - 1)`` agrees):

- the PCA of the training features and the projected training/test features;
- the grouped CV folds, ridge's per-fold eigendecompositions and kernel ridge's kernel matrices, Cholesky
  factors and residual operators (:mod:`objalign.maps._permuted_cv`): the choice on the real pairing (the
  identity permutation), on the shuffled-pairing baseline and under every permutation of the selection null
  comes out of one pass, each target set contracting the shared category-space residual Grams with its own
  weights -- the same arithmetic as a target set alone, so every choice (ties included) is what a separate run
  makes, and what :class:`RidgeCV` / :class:`KernelRidgeCV` pick (tested against them);
- the linear-smoother operators ``S`` (n_test, n_train) of the maps at the grid points any set selects
  (:class:`objalign.stats.nulls.FastSmoothers`), cached per (fold, method, grid point): a set's
  predictions are ``S[its choice] @ Y_k_train`` and its null scores the same operators.

Large folds (more than ``align.null_max_train`` training objects, where an (n_test, n_train) operator is too
big) and Nystroem kernel ridge keep the estimators (``RidgeCV``/``KernelRidgeCV`` fitted per target set on the
shared PCA features), as a separate run does.
"""

from __future__ import annotations

import time

import numpy as np

from objalign.evaluation.settings import AlignConfig
from objalign.maps import KernelRidgeCV, PCAMatch, RidgeCV, WeightCache, indicator
from objalign.stats.nulls import FastSmoothers, check_cv_images, search_choices
from objalign.stats.permutation import block_permutations, group_permutations, selection_permutations

#: offset of the seed of the shuffled-pairing baseline's permutation (and of the similarity measures' shuffled floor)
SHUFFLE_SEED = 7919


def median_sq_distance(Z: np.ndarray, max_n: int = 1000, seed: int = 0) -> float:
    """Median squared Euclidean distance between distinct rows of (a subsample of) ``Z`` ``(n, d)``."""
    rng = np.random.default_rng(seed)
    S = Z[rng.choice(len(Z), size=min(max_n, len(Z)), replace=False)]
    sq = np.sum(S ** 2, 1)
    D = sq[:, None] + sq[None] - 2 * S @ S.T
    iu = np.triu_indices(len(S), 1)
    m = float(np.median(D[iu])) if len(iu[0]) else 1.0
    return m if m > 0 else 1.0



def pca_dim(cfg: AlignConfig, d: int, q: int, n_train: int) -> int:
    """PCA dimension of a fit: ``min(common_dim, d_vision, q_text, n_train - 1)``."""
    return int(min(cfg.common_dim, d, q, n_train - 1))


def _kernel_exact(cfg: AlignConfig, n_train: int) -> bool:
    return cfg.kernel_approx == "exact" or (cfg.kernel_approx == "auto" and n_train <= cfg.max_exact_samples)


class _Smoothers:
    """Smoother operators of one fold, per (method, grid index), computed on first use."""

    def __init__(self, Ztr, Zte):

        self.Ztr, self.Zte, self.cache = Ztr, Zte, {}
        self.fast = FastSmoothers(Ztr, Zte)

    def coef(self, method: str, point: dict, labels: np.ndarray, c: int, pairing: str) -> np.ndarray:
        """(n_test, c) category coefficients ``S onehot(labels)``: predictions for targets ``T[labels]`` are
        ``coef @ T`` for every target set ``T`` (cached per pairing name)."""
        key = (method, tuple(sorted(point.items())), pairing)
        if key not in self.cache:

            self.cache[key] = np.ascontiguousarray((indicator(labels[None], c) @ self.get(method, point).T).T)
        return self.cache[key]

    def get(self, method: str, point: dict) -> np.ndarray:
        key = (method, tuple(sorted(point.items())))
        if key not in self.cache:
            self.cache[key] = (self.fast.ridge(point["alpha"]) if method == "ridge" else
                               self.fast.kernel_ridge(point["alpha"], point["gamma"]))
        return self.cache[key]


def fit_fold(X, groups, label_index, fold, methods, cfg: AlignConfig, fold_no: int, protocol: str,
             targets: dict[str, np.ndarray], null_n_train: int = 0) -> dict:
    """Fit every method on one fold for every target set.

    Parameters
    ----------
    X : (n, d) vision features; groups : (n,) image ids; label_index : (n,) category rows
    fold : a :class:`objalign.stats.protocols.Fold` (``train``, ``test``)
    methods : method and baseline names
    cfg : AlignConfig
    fold_no, protocol : which fit this is (seeds of the shuffled baseline and of the null's permutations)
    targets : key -> (c, q_k) category text embeddings
    null_n_train : the protocol's largest training set (how many permutations kernel ridge's null runs)

    Returns
    -------
    dict with ``n_train``, ``keys`` (key -> ``{"pca", "Zte", "pca_dim", "methods": {method: {"pred", "hp",
    "S", "n_permutations", "null_reason", "seconds"}}}``) where ``S`` is None (no null), or
    ``{"S": {grid index: (n_test, n_train)}, "choice": (B,) grid index per permutation}``.

    Raises
    ------
    ObjalignError
        If the training images are fewer than the CV folds (a property of X's split, not of a target set).
    """

    train, test = fold.train, fold.test
    where = "the training split" if protocol == "heldout_images" else f"{protocol} fold {fold_no}'s training set"
    check_cv_images(groups[train], cfg.cv_folds, where)
    by_dim: dict[int, list[str]] = {}
    for key, T in targets.items():
        by_dim.setdefault(pca_dim(cfg, X.shape[1], T.shape[1], len(train)), []).append(key)
    out = {"n_train": int(len(train)), "keys": {}}
    for d, keys in by_dim.items():
        Xtr = X[train]
        pca = PCAMatch(n_components=d).fit(Xtr)
        Ztr, Zte = pca.transform(Xtr), pca.transform(X[test])
        del Xtr
        group = {k: targets[k] for k in keys}
        fits = _fit_methods(Ztr, Zte, groups[train], label_index[train], methods, cfg, fold_no, group, null_n_train)
        for k in keys:
            out["keys"][k] = {"pca": pca, "Zte": Zte, "pca_dim": d, "methods": fits[k]}
    return out


def _fit_methods(Ztr, Zte, gtr, ltr, methods, cfg: AlignConfig, fold_no: int, targets: dict,
                 null_n_train: int) -> dict:
    """key -> method -> fit (see :func:`fit_fold`) on one fold's PCA'd features."""

    keys = list(targets)
    out = {k: {} for k in keys}
    n_train = len(Ztr)
    null_ok = cfg.n_permutations > 0 and n_train <= cfg.null_max_train
    select = null_ok and cfg.null == "selection"
    shared = n_train <= cfg.null_max_train  # (n_test, n_train) operators are affordable
    pi = group_permutations(gtr, 1, seed=cfg.seed + SHUFFLE_SEED + fold_no)[0]
    c = len(next(iter(targets.values())))
    smoothers = _Smoothers(Ztr, Zte) if shared else None
    weights = WeightCache()  # ridge's and kernel ridge's searches share their relabellings' target weights
    ridge_rows = {}
    if shared and any(m in methods for m in ("ridge", "shuffled")):
        t0 = time.time()
        n_perm = cfg.n_permutations if (select and "ridge" in methods) else 0
        ridge_rows = _choices("ridge", Ztr, gtr, ltr, targets, cfg, fold_no, n_perm, extra=[pi], cache=weights)
        ridge_rows["seconds"] = time.time() - t0
    for method in methods:
        t0 = time.time()
        n_perm, reason = cfg.n_permutations, None
        if method in ("ridge", "shuffled") and shared:
            grid = ridge_rows["grid"]
            for k in keys:
                ch = ridge_rows["choice"][k]
                i = int(ch[0] if method == "ridge" else ch[1])
                pairing = ltr if method == "ridge" else ltr[pi]
                pred = smoothers.coef("ridge", grid[i], pairing, c, method) @ targets[k]
                null = None
                if method == "ridge" and null_ok:
                    null = _null_entry(smoothers, "ridge", grid, ch[2:] if select else np.full(n_perm, i))
                out[k][method] = {"pred": pred, "hp": dict(grid[i]), "S": null, "n_permutations": n_perm,
                                  "null_reason": None, "seconds": ridge_rows["seconds"] + time.time() - t0}
            continue
        if method == "kernel_ridge" and shared and _kernel_exact(cfg, n_train):

            if select:
                n_perm, reason = selection_permutations(cfg.n_permutations, null_n_train or n_train,
                                                        cfg.null_selection_max_train)
            rows = _choices("kernel_ridge", Ztr, gtr, ltr, targets, cfg, fold_no, n_perm if select else 0,
                            cache=weights)
            grid, scale = rows["grid"], rows["scale"]
            needed = np.unique(np.concatenate([np.asarray(rows["choice"][k]) for k in keys]))
            for i in sorted(needed.tolist(), key=lambda i: (grid[i]["gamma"], grid[i]["alpha"])):
                smoothers.get("kernel_ridge", grid[i])  # a gamma's alphas in a row share its kernel matrices
            for k in keys:
                ch = rows["choice"][k]
                i = int(ch[0])
                pred = smoothers.coef("kernel_ridge", grid[i], ltr, c, method) @ targets[k]
                null = None
                if null_ok:
                    null = _null_entry(smoothers, "kernel_ridge", grid, ch[1:] if select else np.full(n_perm, i))
                hp = {**grid[i], "gamma_times_median_sqdist": float(grid[i]["gamma"] * scale)}
                out[k][method] = {"pred": pred, "hp": hp, "S": null, "n_permutations": n_perm,
                                  "null_reason": reason, "seconds": time.time() - t0}
            continue
        for k in keys:  # estimators per target set: large folds, Nystroem kernel ridge, the mean baseline
            t1 = time.time()
            pred, hp = _fit_estimator(method, Ztr, Zte, gtr, np.asarray(targets[k])[ltr], pi, cfg)
            out[k][method] = {"pred": pred, "hp": hp, "S": None, "n_permutations": n_perm, "null_reason": None,
                              "seconds": time.time() - t1}
    return out


def _null_entry(smoothers: _Smoothers, method: str, grid: list[dict], choice: np.ndarray) -> dict:
    choice = np.asarray(choice, dtype=int)
    return {"S": {int(i): smoothers.get(method, grid[int(i)]) for i in np.unique(choice)}, "choice": choice}


def _fit_estimator(method, Ztr, Zte, gtr, Ytr, pi, cfg: AlignConfig):
    """Predictions and hyperparameters of one method fitted by its estimator (no shared choice)."""
    from sklearn.model_selection import GroupKFold


    cv = GroupKFold(n_splits=cfg.cv_folds)
    if method in ("ridge", "shuffled"):
        model = RidgeCV(alphas=list(cfg.alphas), cv=cv).fit(Ztr, Ytr if method == "ridge" else Ytr[pi], groups=gtr)
        return model.predict(Zte), {k: float(v) for k, v in model.best_params_.items()}
    if method == "kernel_ridge":
        scale = median_sq_distance(Ztr, seed=cfg.seed)
        model = KernelRidgeCV(alphas=list(cfg.alphas), gammas=[g / scale for g in cfg.gammas], kernel="rbf", cv=cv,
                              approx=cfg.kernel_approx, n_components=cfg.nystroem_components,
                              max_exact_samples=cfg.max_exact_samples, random_state=cfg.seed, n_jobs=cfg.n_jobs)
        model.fit(Ztr, Ytr, groups=gtr)
        hp = {k: float(v) for k, v in model.best_params_.items()}
        hp["gamma_times_median_sqdist"] = float(hp["gamma"] * scale)
        return model.predict(Zte), hp
    return np.repeat(Ytr.mean(0, keepdims=True), len(Zte), 0), {}  # mean: the training mean text embedding


def _choices(method, Ztr, gtr, ltr, targets: dict, cfg: AlignConfig, fold_no: int, n_perm: int, extra=(),
             cache=None) -> dict:
    """The grid index the CV search picks, per target set, on the real pairing (row 0), on each pairing of
    ``extra`` (rows 1..) and under each of the ``n_perm`` null permutations of block ``fold_no`` (the rest).

    Rows the permuted engine cannot decide (a held-out output constant) are refitted from scratch with the
    estimator, as :func:`objalign.stats.nulls.selection_smoothers` does.
    """

    rows = [np.arange(len(Ztr))] + [np.asarray(p) for p in extra]
    if n_perm:
        rows += list(block_permutations(gtr, n_perm, cfg.seed, fold_no))
    keys = list(targets)
    out, gammas = {}, None
    if method == "kernel_ridge":
        out["scale"] = median_sq_distance(Ztr, seed=cfg.seed)
        gammas = [g / out["scale"] for g in cfg.gammas]
    grid, choices, _ = search_choices(method, Ztr, ltr, gtr, [targets[k] for k in keys], np.stack(rows),
                                      cv_folds=cfg.cv_folds, alphas=cfg.alphas, gammas=gammas, n_jobs=cfg.n_jobs,
                                      cache=cache)
    return {**out, "grid": grid, "choice": dict(zip(keys, choices))}
