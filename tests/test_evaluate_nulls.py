"""Permutation nulls of linear-smoother maps, against maps refitted per permutation with scikit-learn."""

import numpy as np
import pytest
from sklearn.kernel_ridge import KernelRidge as SkKernelRidge
from sklearn.linear_model import Ridge as SkRidge

from objalign.align import KernelRidge, Ridge
from objalign.errors import ObjalignError
from objalign.evaluate.metrics import summarize
from objalign.evaluate.nulls import CategoryScorer, pvalues, smoother_null, smoother_operator
from objalign.evaluate.stats import group_permutations


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
    from objalign.evaluate.nulls import FastSmoothers

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
