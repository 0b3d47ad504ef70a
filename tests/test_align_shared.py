"""evaluate_targets: several text target sets against one vision layer give exactly what separate runs give."""

from dataclasses import replace

import numpy as np
import pytest
from sklearn.model_selection import GroupKFold

from objalign.maps import KernelRidgeCV, RidgeCV
from objalign.maps._permuted_cv import kernel_choices, ridge_choices
from objalign.maps._splits import resolve_splits
from objalign.evaluation.engine import evaluate, evaluate_targets
from objalign.config import AlignConfig
from objalign.errors import ObjalignError

CFG = AlignConfig(methods=("ridge", "kernel_ridge"), alphas=(0.1, 1.0, 10.0), gammas=(0.5, 2.0), cv_folds=3,
                  category_folds=3, n_permutations=100, n_bootstrap=30, common_dim=16, similarity_k=5, svcca_dim=4,
                  similarity_permutations=20, match_bootstrap=3, match_restarts=2, null="selection")


def _problem(seed=0, n_img=40, c=9, d=20):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_img), 3)
    lab = rng.integers(0, c, len(groups))
    V = rng.normal(size=(c, d))
    X = V[lab] + 0.7 * rng.normal(size=(len(lab), d))
    # three target sets of different widths: 24 and 20 share the PCA dimension (16), 8 has its own
    A = rng.normal(size=(c, 6))
    targets = {"wide": A @ rng.normal(size=(6, 24)) + 0.3 * rng.normal(size=(c, 24)),
               "mid": rng.normal(size=(c, 20)),
               "narrow": A @ rng.normal(size=(6, 8))}
    return X, groups, lab, targets


def _close(a, b, path=""):
    """Every number of two results equal within 1e-9 (timings aside); returns the first difference or None."""
    if isinstance(a, dict):
        if set(a) != set(b):
            return f"{path}: keys {sorted(set(a) ^ set(b))}"
        for k in a:
            if k != "fit_seconds":
                bad = _close(a[k], b[k], f"{path}.{k}")
                if bad:
                    return bad
        return None
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{path}: lengths {len(a)} vs {len(b)}"
        return next((m for m in (_close(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b))) if m), None)
    a_, b_ = np.asarray(a), np.asarray(b)
    if a_.shape != b_.shape:
        return f"{path}: shapes {a_.shape} vs {b_.shape}"
    if a_.dtype.kind in "fc" or b_.dtype.kind in "fc":
        ok = np.allclose(a_.astype(float), b_.astype(float), rtol=0, atol=1e-9, equal_nan=True)
    else:
        ok = np.array_equal(a_, b_)
    return None if ok else f"{path}: {a_.ravel()[:4]} vs {b_.ravel()[:4]}"


@pytest.mark.parametrize("null", ["selection", "fixed"])
def test_targets_equal_separate_runs(null):
    X, groups, lab, targets = _problem()
    cfg = replace(CFG, null=null)
    names = [f"cat{j}" for j in range(9)]
    rng = np.random.default_rng(1)
    vocab = {k: rng.normal(size=(5, T.shape[1])) for k, T in targets.items()}
    shared = evaluate_targets(X, groups, lab, targets, cfg, names, np.arange(9) + 100, vocab)
    assert list(shared) == list(targets)
    for key, T in targets.items():
        alone = evaluate(X, T[lab], groups, lab, T, cfg, names, np.arange(9) + 100, vocabulary=vocab[key])
        assert _close(shared[key], alone, key) is None, _close(shared[key], alone, key)
        rows = {(r["split"], r["method"]): r for r in alone["rows"]}
        # both protocols, both methods, with p-values, intervals and the selection null's arrays
        for split in ("heldout_images", "heldout_categories"):
            for method in ("ridge", "kernel_ridge"):
                r = rows[(split, method)]
                assert r["pvalue"] and r["ci"] and r["null"]["kind"] == null
                assert len(shared[key]["nulls"][f"{split}__{method}__r2"]) == 100
        assert shared[key]["similarity"]["values"] and shared[key]["category_level"]
    # each key chose its own hyperparameters (the grids are not all resolved the same way)
    pca_dims = {k: shared[k]["pca"]["pca_dim"] for k in targets}
    assert pca_dims == {"wide": 16, "mid": 16, "narrow": 8}


def test_multi_target_choices_match_the_estimators():
    X, groups, lab, targets = _problem(seed=3)
    present, codes = np.unique(lab, return_inverse=True)
    Zs = [T[present] for T in targets.values()]
    cv = GroupKFold(n_splits=3)
    splits = resolve_splits(cv, X, None, groups, len(X))
    rng = np.random.default_rng(0)
    perms = np.stack([np.arange(len(X))] + [rng.permutation(len(X)) for _ in range(3)])
    alphas, gammas = np.array([0.01, 0.3, 3.0, 30.0]), np.array([0.01, 0.05, 0.2])
    ridge = ridge_choices(X, codes, Zs, splits, alphas, perms)
    kern = kernel_choices(X, codes, Zs, splits, alphas, gammas, perms)
    assert len(ridge) == len(kern) == 3
    for k, T in enumerate(targets.values()):
        alone = ridge_choices(X, codes, Zs[k], splits, alphas, perms)
        np.testing.assert_array_equal(ridge[k], alone)  # a set's choice does not depend on its companions
        for b, p in enumerate(perms):
            Y = T[lab[p]]
            assert ridge[k][b] == RidgeCV(alphas=alphas, cv=cv).fit(X, Y, groups=groups).best_index_
            est = KernelRidgeCV(alphas=alphas, gammas=gammas, kernel="rbf", cv=cv, approx="exact")
            assert kern[k][b] == est.fit(X, Y, groups=groups).best_index_
    assert len({tuple(r) for r in ridge}) > 1 or len({tuple(r) for r in kern}) > 1  # the sets differ somewhere


def test_bad_target_is_recorded_and_the_others_complete():
    X, groups, lab, targets = _problem()
    cfg = replace(CFG, n_permutations=0, n_bootstrap=0, similarity_permutations=0, match_methods=(),
                  protocols=("heldout_images",))
    bad_nan = targets["mid"].copy()
    bad_nan[2, 3] = np.nan
    res = evaluate_targets(X, groups, lab, {"ok": targets["wide"], "nan": bad_nan, "rows": targets["mid"][:4]}, cfg)
    assert set(res) == {"ok", "nan", "rows"}
    assert set(res["nan"]) == {"error"} and "nan" in res["nan"]["error"].lower()
    assert set(res["rows"]) == {"error"} and "4 rows" in res["rows"]["error"]
    alone = evaluate(X, targets["wide"][lab], groups, lab, targets["wide"], cfg)
    assert _close(res["ok"], alone) is None
    # an error of X itself (too few images for the folds) raises, as evaluate does
    with pytest.raises(ObjalignError, match="cv_folds"):
        evaluate_targets(X, groups, lab, targets, replace(cfg, cv_folds=50))
    # evaluate insists on targets that are the category rows of class_emb
    with pytest.raises(ObjalignError, match="class_emb"):
        evaluate(X, targets["wide"][lab] + 1.0, groups, lab, targets["wide"], cfg)


def test_bootstrap_from_category_sums_equals_the_plain_sums():
    from objalign.stats.intervals import bootstrap_figures
    from objalign.stats.metrics import per_instance

    rng = np.random.default_rng(4)
    E = rng.normal(size=(6, 7))
    lab = rng.integers(0, 6, 80)
    groups = np.repeat(np.arange(40), 2)
    pred = E[lab] + rng.normal(size=(80, 7))
    inst = per_instance(pred, E[lab], lab, E)
    plain = bootstrap_figures(pred, E[lab], inst, groups, 50, 0.9, 3)
    fast = bootstrap_figures(pred, E[lab], inst, groups, 50, 0.9, 3, categories=(lab, E))
    assert plain.keys() == fast.keys()
    for k in plain:
        np.testing.assert_allclose(fast[k], plain[k], rtol=0, atol=1e-12)


def test_ridge_engines_agree():
    """The moments and residual-Gram ridge engines score every permutation alike (and choose alike)."""
    X, groups, lab, targets = _problem(seed=5)
    present, codes = np.unique(lab, return_inverse=True)
    Zs = [T[present] for T in targets.values()]
    splits = resolve_splits(GroupKFold(n_splits=3), X, None, groups, len(X))
    rng = np.random.default_rng(2)
    perms = np.stack([np.arange(len(X))] + [rng.permutation(len(X)) for _ in range(5)])
    alphas = np.array([0.01, 0.3, 3.0, 30.0])
    a = ridge_choices(X, codes, Zs, splits, alphas, perms, return_scores=True, engine="moments")
    b = ridge_choices(X, codes, Zs, splits, alphas, perms, return_scores=True, engine="residuals")
    for k in range(len(Zs)):
        np.testing.assert_array_equal(a[0][k], b[0][k])
        np.testing.assert_allclose(a[1][k], b[1][k], rtol=0, atol=1e-10)
