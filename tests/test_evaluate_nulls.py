"""Permutation nulls of linear-smoother maps, against maps refitted per permutation with scikit-learn."""

import numpy as np
import pytest
from sklearn.kernel_ridge import KernelRidge as SkKernelRidge
from sklearn.linear_model import Ridge as SkRidge

from objalign.maps import KernelRidge, Ridge
from objalign.errors import ObjalignError
from objalign.stats.metrics import summarize
from objalign.stats.nulls import CategoryScorer, smoother_null, smoother_operator
from objalign.stats.permutation import group_permutations, pvalues


def _problem(n=90, m=40, d=6, q=10, c=5, seed=0, signal=1.0):
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(c, q))
    centres = rng.normal(size=(c, d))
    lab_tr, lab_te = rng.integers(0, c, n), rng.integers(0, c, m)
    Xtr = signal * centres[lab_tr] + rng.normal(size=(n, d))
    Xte = signal * centres[lab_te] + rng.normal(size=(m, d))
    g_tr = rng.integers(0, n // 3, n)
    return Xtr, Xte, lab_tr, lab_te, E, g_tr


def test_ridge_smoother_reproduces_sklearn_ridge_for_any_targets():
    Xtr, Xte, lab_tr, _, E, _ = _problem()
    S = smoother_operator(Ridge(alpha=3.0), Xtr, Xte)
    Y = np.random.default_rng(1).normal(size=(len(Xtr), 4))
    np.testing.assert_allclose(S @ Y, SkRidge(alpha=3.0).fit(Xtr, Y).predict(Xte), atol=1e-9)
    np.testing.assert_allclose(S.sum(1), 1.0, atol=1e-9)  # intercept: constant targets are reproduced


def test_kernel_ridge_smoother_reproduces_sklearn_kernel_ridge():
    Xtr, Xte, lab_tr, _, E, _ = _problem()
    S = smoother_operator(KernelRidge(alpha=0.5, kernel="rbf", gamma=0.2, approx="exact"), Xtr, Xte)
    Y = E[lab_tr]
    ref = SkKernelRidge(alpha=0.5, kernel="rbf", gamma=0.2).fit(Xtr, Y).predict(Xte)
    np.testing.assert_allclose(S @ Y, ref, atol=1e-8)


@pytest.mark.parametrize("d", [10, 60])  # primal (d <= n_train) and dual (d > n_train) ridge
def test_fast_smoothers_equal_the_estimators_operators(d):
    from objalign.stats.nulls import FastSmoothers

    rng = np.random.default_rng(3)
    Xtr, Xte = rng.normal(size=(40, d)), rng.normal(size=(13, d))
    fast = FastSmoothers(Xtr, Xte)
    Y = rng.normal(size=(40, 5))
    for alpha in (1e-3, 0.5, 100.0):
        S = fast.ridge(alpha)
        np.testing.assert_allclose(S, smoother_operator(Ridge(alpha=alpha), Xtr, Xte), atol=1e-10)
        np.testing.assert_allclose(S @ Y, SkRidge(alpha=alpha).fit(Xtr, Y).predict(Xte), atol=1e-9)
    for gamma in (0.01, 0.2):
        for alpha in (0.1, 3.0):  # two alphas per gamma: the kept kernel matrices are reused, not modified
            S = fast.kernel_ridge(alpha, gamma)
            est = KernelRidge(alpha=alpha, kernel="rbf", gamma=gamma, approx="exact")
            np.testing.assert_allclose(S, smoother_operator(est, Xtr, Xte), atol=1e-10)
            ref = SkKernelRidge(alpha=alpha, kernel="rbf", gamma=gamma).fit(Xtr, Y).predict(Xte)
            np.testing.assert_allclose(S @ Y, ref, atol=1e-9)


@pytest.mark.parametrize("with_unseen", [False, True])
def test_category_scorer_equals_summarize_on_the_predictions(with_unseen):
    rng = np.random.default_rng(2)
    c, q, n = 6, 9, 50
    E = rng.normal(size=(c, q))
    lab = rng.integers(0, 3, n)
    C = rng.normal(size=(n, c)) + np.eye(c)[lab] * 1.5
    mask = np.zeros((n, c), dtype=bool)
    mask[:, :3] = True
    scorer = CategoryScorer(E, lab, mask if with_unseen else None)
    got = scorer.figures(C)
    want, _ = summarize(C @ E, E[lab], lab, E, np.arange(3) if with_unseen else None)
    for k, v in got.items():
        assert v == pytest.approx(want[k], rel=1e-9, abs=1e-12), k


def test_null_equals_sklearn_refits_on_the_same_permutations_pooled_over_two_folds():
    B, alpha = 5, 2.0
    folds = [_problem(seed=s) for s in (3, 4)]
    E = folds[0][4]
    blocks, preds = [], [[] for _ in range(B)]
    for f, (Xtr, Xte, lab_tr, lab_te, _, g_tr) in enumerate(folds):
        blocks.append({"S": smoother_operator(Ridge(alpha=alpha), Xtr, Xte), "train_labels": lab_tr,
                       "train_groups": g_tr, "test_labels": lab_te})
        perms = group_permutations(g_tr, B, seed=11 + f)  # smoother_null seeds block f with seed + f
        for b in range(B):
            preds[b].append(SkRidge(alpha=alpha).fit(Xtr, E[lab_tr][perms[b]]).predict(Xte))
    null = smoother_null(blocks, E, B, seed=11)
    lab_te = np.concatenate([f[3] for f in folds])
    for b in range(B):
        want, _ = summarize(np.vstack(preds[b]), E[lab_te], lab_te, E)
        for k in ("r2", "r2_variance_weighted", "cosine_mean", "residual_median", "top1", "mean_rank"):
            assert null[k][b] == pytest.approx(want[k], rel=1e-7, abs=1e-9), k


def test_pvalues_small_with_signal_and_not_without():
    res = {}
    for signal in (3.0, 0.0):
        Xtr, Xte, lab_tr, lab_te, E, g_tr = _problem(n=150, m=80, signal=signal, seed=5)
        S = smoother_operator(Ridge(alpha=1.0), Xtr, Xte)
        block = {"S": S, "train_labels": lab_tr, "train_groups": g_tr, "test_labels": lab_te}
        null = smoother_null([block], E, 199, seed=0)
        obs, _ = summarize(S @ E[lab_tr], E[lab_te], lab_te, E)
        res[signal] = pvalues(obs, null)
    assert res[3.0]["top1"] == pytest.approx(1 / 200) and res[3.0]["r2"] == pytest.approx(1 / 200)
    assert res[3.0]["mean_rank"] == pytest.approx(1 / 200)  # "less" is the extreme direction for ranks
    assert res[0.0]["top1"] > 0.05 and res[0.0]["r2"] > 0.05


def test_null_rejects_a_bad_count():
    Xtr, Xte, lab_tr, lab_te, E, g_tr = _problem()
    block = {"S": np.zeros((len(Xte), len(Xtr))), "train_labels": lab_tr, "train_groups": g_tr, "test_labels": lab_te}
    with pytest.raises(ObjalignError, match="n_permutations"):
        smoother_null([block], E, 0)


def _direct_figures(C, E, lab, fold_of=None):
    """Every figure of the predictions ``C @ E`` from objalign.stats.metrics (per fold of unseen candidates)."""
    from objalign.stats.metrics import figures_from_instances, per_instance, r2_uniform, r2_variance_weighted

    P, T = C @ E, E[lab]
    if fold_of is None:
        inst = per_instance(P, T, lab, E)
    else:  # each object ranked among its own fold's categories: per_instance per fold, pooled in object order
        parts = []
        for g in np.unique(fold_of[lab]):
            rows = np.flatnonzero(fold_of[lab] == g)
            parts.append((rows, per_instance(P[rows], T[rows], lab[rows], E, np.flatnonzero(fold_of == g))))
        order = np.argsort(np.concatenate([idx for idx, _ in parts]), kind="stable")
        inst = {k: np.concatenate([p[k] for _, p in parts])[order] for k in parts[0][1]}
    return {"r2": r2_uniform(T, P), "r2_variance_weighted": r2_variance_weighted(T, P), **figures_from_instances(inst)}


@pytest.mark.parametrize("constant_dim", [False, True])
@pytest.mark.parametrize("with_unseen", [False, True])
def test_figures_batch_equals_the_metrics_of_each_prediction(constant_dim, with_unseen):
    rng = np.random.default_rng(7)
    m, n, c, q = 6, 70, 8, 12
    E = rng.normal(size=(c, q))
    E[5] = E[2]  # two categories with the same text: a tie, counted against the truth by both
    if constant_dim:  # a text dimension that is the same for every category is left out of both R²
        E[:, 3] = 0.25
    lab = rng.integers(0, c, n)
    fold_of = np.arange(c) % 3  # three held-out folds of categories
    cand = fold_of[None, :] == fold_of[lab][:, None] if with_unseen else None
    C = rng.dirichlet(np.ones(c), size=(m, n)) * 1.3 + np.eye(c)[lab] * rng.uniform(0, 1, (m, 1, 1))
    C[0, :5] = np.eye(c)[lab[:5]]  # some exact predictions (zero residuals)
    got = CategoryScorer(E, lab, cand).figures_batch(C)
    assert set(got) == set(_direct_figures(C[0], E, lab, fold_of if with_unseen else None))
    for j in range(m):
        want = _direct_figures(C[j], E, lab, fold_of if with_unseen else None)
        for k, v in want.items():
            assert got[k][j] == pytest.approx(v, rel=1e-10, abs=1e-12), (j, k)


def test_a_permutation_scores_the_same_alone_or_in_any_batch():
    # evaluate with one target set and evaluate_targets with several must give identical nulls to the last bit
    rng = np.random.default_rng(8)
    for n, live in ((53, True), (300, False)):
        m, c = 11, 9
        E = rng.normal(size=(c, 16))
        if not live:
            E[:, 0] = 1.0
        lab = rng.integers(0, c, n)
        scorer = CategoryScorer(E, lab, rng.random((n, c)) < 0.5)
        K = np.ascontiguousarray(rng.dirichlet(np.ones(c), size=(m, n)).transpose(0, 2, 1))
        full = scorer.figures_batch_cn(K)
        for size in (1, 2, 3, 4, 7):
            for j in range(0, m, size):
                part = scorer.figures_batch_cn(K[j:j + size].copy())
                for k, v in part.items():
                    assert np.array_equal(v, full[k][j:j + size]), (n, size, j, k)


def test_nulls_of_several_target_sets_equal_each_set_alone_and_the_refits():
    # two blocks (pooled held-out-category folds), two grid points chosen per permutation (selection null):
    # two sets with the same choices (sharing coefficients) and one with its own
    from objalign.stats.nulls import smoother_nulls
    from objalign.stats.permutation import block_permutations

    rng = np.random.default_rng(9)
    B, c = 7, 5
    folds = [_problem(n=60, m=25, c=c, seed=s) for s in (12, 13)]
    embs = {"a": rng.normal(size=(c, 10)), "b": rng.normal(size=(c, 7)), "c": rng.normal(size=(c, 4))}
    embs["c"][:, 1] = 2.0
    blocks = [{"S": {g: smoother_operator(Ridge(alpha=a), f[0], f[1]) for g, a in ((0, 0.5), (3, 20.0))},
               "train_labels": f[2], "train_groups": f[5], "test_labels": f[3]} for f in folds]
    shared = [rng.choice([0, 3], B) for _ in folds]
    choices = {"a": shared, "b": [s.copy() for s in shared], "c": [rng.choice([0, 3], B) for _ in folds]}
    lab = np.concatenate([f[3] for f in folds])
    fold_of = np.array([0, 0, 1, 1, 1])
    cand = fold_of[None, :] == fold_of[lab][:, None]
    together = smoother_nulls(blocks, embs, choices, B, seed=4, candidates=cand)
    perms = [block_permutations(b["train_groups"], B, 4, f) for f, b in enumerate(blocks)]
    for k in embs:
        alone = smoother_nulls(blocks, {k: embs[k]}, {k: choices[k]}, B, seed=4, candidates=cand)[k]
        assert alone.keys() == together[k].keys()
        for name, v in alone.items():
            assert np.array_equal(v, together[k][name]), (k, name)
        for b in range(B):  # the coefficients of the map refitted on the permuted labels with the chosen alpha
            C = np.vstack([blk["S"][choices[k][f][b]] @ np.eye(c)[blk["train_labels"][perms[f][b]]]
                           for f, blk in enumerate(blocks)])
            for name, want in _direct_figures(C, embs[k], lab, fold_of).items():
                assert alone[name][b] == pytest.approx(want, rel=1e-9, abs=1e-12), (k, b, name)
