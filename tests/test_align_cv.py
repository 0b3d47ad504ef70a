"""Exact cross-validation: RidgeCV / KernelRidgeCV against GridSearchCV on identical folds, and the engines."""

import warnings

import numpy as np
import pytest
from sklearn.kernel_ridge import KernelRidge as SkKernelRidge
from sklearn.linear_model import Ridge as SkRidge
from sklearn.metrics import r2_score
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold, PredefinedSplit, ShuffleSplit

from objalign.maps import KernelRidgeCV, RidgeCV
from objalign.maps._logo import block_logo_residuals
from objalign.maps._scoring import r2_from_ss, total_sum_of_squares
from objalign.maps._targets import factor_targets


def _problem(n=120, d=6, dy=12, n_cat=7, seed=0, repeated=True):
    """Category-structured data: Y has n_cat distinct rows when ``repeated``."""
    rng = np.random.default_rng(seed)
    text = rng.standard_normal((n_cat, dy))
    labels = rng.integers(0, n_cat, n)
    Y = text[labels] if repeated else text[labels] + 0.2 * rng.standard_normal((n, dy))
    X = np.tanh(Y @ rng.standard_normal((dy, d)) / 2) + 0.5 * rng.standard_normal((n, d))
    groups = rng.integers(0, n // 4, n)
    return X, Y, groups


def _splits(kind, X, Y, groups):
    if kind == "kfold":
        return KFold(5), list(KFold(5).split(X))
    if kind == "group":
        return GroupKFold(4), list(GroupKFold(4).split(X, Y, groups))
    if kind == "shuffle":  # overlapping test sets: no partition, per-fold path
        cv = ShuffleSplit(3, test_size=0.25, random_state=0)
        return cv, list(cv.split(X))
    if kind == "predefined":  # rows never tested (fold -1): always trained on
        fold = np.arange(X.shape[0]) % 4 - 1
        return PredefinedSplit(fold), list(PredefinedSplit(fold).split())
    raise AssertionError(kind)


@pytest.fixture(params=["eig", "chol"])
def ridge_engine(request, monkeypatch):
    """Run a RidgeCV test once with each exact engine (per-fold eigendecomposition, per-alpha Cholesky)."""
    import objalign.maps._ridge_stats as rs

    monkeypatch.setattr(rs, "_use_cholesky", lambda p, r, n_alphas: request.param == "chol")
    return request.param


@pytest.mark.parametrize("kind", ["kfold", "group", "shuffle", "predefined"])
@pytest.mark.parametrize("repeated", [True, False])
@pytest.mark.parametrize("one_d", [False, True])
def test_ridge_cv_equals_grid_search(kind, repeated, one_d, ridge_engine):
    X, Y, groups = _problem(repeated=repeated)
    if one_d:
        Y = Y[:, 0]
    cv, splits = _splits(kind, X, Y, groups)
    alphas = [1e-3, 0.1, 3.0, 100.0]
    ref = GridSearchCV(SkRidge(), {"alpha": alphas}, cv=splits, scoring="r2").fit(X, Y)
    ours = RidgeCV(alphas=alphas, cv=cv).fit(X, Y, groups=groups if kind == "group" else None)
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"], atol=1e-10)
    for k in range(len(splits)):
        np.testing.assert_allclose(ours.cv_results_[f"split{k}_test_score"], ref.cv_results_[f"split{k}_test_score"],
                                   atol=1e-10)
    np.testing.assert_array_equal(ours.cv_results_["rank_test_score"], ref.cv_results_["rank_test_score"])
    assert ours.best_params_ == ref.best_params_ and ours.best_index_ == ref.best_index_
    assert [p["alpha"] for p in ours.cv_results_["params"]] == alphas
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("kind", ["kfold", "group", "shuffle", "predefined"])
@pytest.mark.parametrize("kernel", ["rbf", "laplacian", "polynomial", "linear", "cosine"])
def test_kernel_ridge_cv_equals_grid_search(kind, kernel):
    X, Y, groups = _problem(seed=1)
    cv, splits = _splits(kind, X, Y, groups)
    alphas = [1e-2, 0.3, 10.0]
    grid = {"alpha": alphas}
    gammas = None
    if kernel in ("rbf", "laplacian", "polynomial"):
        gammas = [0.05, 0.5]
        grid["gamma"] = gammas
    ref = GridSearchCV(SkKernelRidge(kernel=kernel), grid, cv=splits, scoring="r2").fit(X, Y)
    ours = KernelRidgeCV(alphas=alphas, gammas=gammas, kernel=kernel, cv=cv).fit(
        X, Y, groups=groups if kind == "group" else None)
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"], atol=1e-9)
    assert ours.cv_results_["params"] == ref.cv_results_["params"]  # same order: alpha outer, gamma inner
    assert ours.best_params_ == ref.best_params_
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-7, atol=1e-9)


def test_kernel_ridge_cv_float32_runs_in_float32_and_agrees():
    X, Y, groups = _problem(n=150, seed=2)
    alphas, gammas = [0.03, 0.3, 3.0], [0.05, 0.2]
    ref = GridSearchCV(SkKernelRidge(kernel="rbf"), {"alpha": alphas, "gamma": gammas}, cv=KFold(5),
                       scoring="r2").fit(X, Y)
    ours = KernelRidgeCV(alphas=alphas, gammas=gammas, cv=5).fit(X.astype(np.float32), Y.astype(np.float32))
    assert ours.dual_coef_.dtype == np.float32 and ours.predict(X.astype(np.float32)).dtype == np.float32
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"], atol=1e-4)
    assert ours.best_params_ == ref.best_params_


def test_block_elimination_equals_direct_solves():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    K = rbf_kernel(X, gamma=0.4)
    T = rng.standard_normal((40, 3))
    for bounds in ([0, 8, 16, 24, 32, 40], [6, 20, 40], [0, 13, 14, 40]):
        res = block_logo_residuals(K, T, bounds, 0.05)
        for f in range(len(bounds) - 1):
            te = np.arange(bounds[f], bounds[f + 1])
            tr = np.setdiff1d(np.arange(40), te)
            ref = T[te] - K[np.ix_(te, tr)] @ np.linalg.solve(K[np.ix_(tr, tr)] + 0.05 * np.eye(tr.size), T[tr])
            np.testing.assert_allclose(res[f], ref, atol=1e-11)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_block_elimination_reuses_one_workspace_and_never_writes_the_kernel(dtype):
    """Deeper elimination trees (up to 10 folds, uneven sizes, never-held-out rows), one workspace reused
    across calls with other layouts and alphas; the kernel and targets are read, never written."""
    from objalign.maps._logo import Workspace

    rng = np.random.default_rng(1)
    n = 90
    X = rng.standard_normal((n, 4))
    K = rbf_kernel(X, gamma=0.3).astype(dtype)
    T = rng.standard_normal((n, 5)).astype(dtype)
    K0, T0 = K.copy(), T.copy()
    ws = Workspace(dtype)
    layouts = [list(range(0, 91, 9)), [0, 30, 31, 60, 90], [12, 20, 33, 47, 52, 70, 90], [0, 45, 90],
               [5, 6, 7, 8, 9, 90], list(range(0, 91, 9))]
    tol = 2e-3 if dtype == np.float32 else 1e-10
    for i, bounds in enumerate(layouts):
        alpha = [0.05, 0.5, 2.0][i % 3]
        res = block_logo_residuals(K, T, bounds, alpha, workspace=ws)
        K64, T64 = K.astype(np.float64), T.astype(np.float64)
        for f in range(len(bounds) - 1):
            te = np.arange(bounds[f], bounds[f + 1])
            tr = np.setdiff1d(np.arange(n), te)
            ref = T64[te] - K64[np.ix_(te, tr)] @ np.linalg.solve(K64[np.ix_(tr, tr)] + alpha * np.eye(tr.size),
                                                                  T64[tr])
            assert res[f].dtype == dtype
            np.testing.assert_allclose(res[f], ref, atol=tol, rtol=tol)
    np.testing.assert_array_equal(K, K0)
    np.testing.assert_array_equal(T, T0)


def test_factor_targets_is_exact_and_declines_unique_rows():
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((5, 16))
    codes = rng.integers(0, 5, 200)
    basis = factor_targets(Z[codes])
    assert basis.Z is not None and basis.r == len(np.unique(codes))
    np.testing.assert_array_equal(basis.T() @ basis.Z, Z[codes])
    assert factor_targets(rng.standard_normal((200, 16))).Z is None  # all rows distinct: not worth it


def test_held_out_totals_match_direct_computation():
    """Fold totals from category counts agree with scikit-learn's arithmetic; the direct path is bit-exact."""
    from objalign.maps._scoring import held_out_totals

    X, Y, groups = _problem(n=300, dy=40, n_cat=9, seed=4)
    splits = list(GroupKFold(4).split(X, Y, groups))
    basis = factor_targets(Y)
    assert basis.Z is not None
    fast, fast_max = held_out_totals(Y, splits, basis)
    direct, direct_max = held_out_totals(Y, splits)
    for f, (_, test) in enumerate(splits):
        exact = total_sum_of_squares(Y[test])
        np.testing.assert_array_equal(direct[f], exact)
        np.testing.assert_allclose(fast[f], exact, rtol=1e-12)
        assert fast_max[f] == direct_max[f] == np.abs(Y[test]).max()
    Y[:, 3] = 0.1  # a constant output: the fast path must hand this fold to scikit-learn's arithmetic
    basis = factor_targets(Y)
    const, _ = held_out_totals(Y, splits, basis)
    for f, (_, test) in enumerate(splits):
        np.testing.assert_array_equal(const[f], total_sum_of_squares(Y[test]))


def test_r2_from_ss_matches_sklearn_including_constant_outputs():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((10, 4))
    y[:, 1] = 3.0  # constant output
    for pred in (y + 0.1 * rng.standard_normal(y.shape), np.where(np.arange(4) == 1, 3.0, y + 0.1)):
        ss_res = ((y - pred) ** 2).sum(axis=0)
        assert r2_from_ss(ss_res, total_sum_of_squares(y)) == pytest.approx(r2_score(y, pred), abs=1e-12)


def test_nystroem_cv_equals_per_fold_nystroem_fits():
    """Nyström CV scores == fitting Nyström KRR on each training fold with the centres outside its test set."""
    from objalign.maps._nystroem import normalization

    X, Y, _ = _problem(n=100, seed=3)
    alphas, gammas = [0.1, 1.0], [0.1, 0.3]
    cv = list(KFold(4).split(X))
    ours = KernelRidgeCV(alphas=alphas, gammas=gammas, cv=cv, approx="nystroem", n_components=30,
                         random_state=0).fit(X, Y)
    rng = np.random.RandomState(0)
    cidx = np.sort(rng.choice(100, size=30, replace=False))
    expected = []
    for alpha in alphas:
        for gamma in gammas:
            scores = []
            for train, test in cv:
                c = cidx[~np.isin(cidx, test)]
                M = normalization(rbf_kernel(X[c], gamma=gamma))
                F_tr, F_te = rbf_kernel(X[train], X[c], gamma=gamma) @ M, rbf_kernel(X[test], X[c], gamma=gamma) @ M
                w = np.linalg.solve(F_tr.T @ F_tr + alpha * np.eye(F_tr.shape[1]), F_tr.T @ Y[train])
                scores.append(r2_score(Y[test], F_te @ w))
            expected.append(np.mean(scores))
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], expected, atol=1e-9)
    assert ours.approx_ == "nystroem"


def test_nystroem_cv_approaches_exact_with_more_centres():
    X, Y, _ = _problem(n=150, seed=4)
    kw = dict(alphas=[0.1, 1.0], gammas=[0.1], cv=5)
    exact = KernelRidgeCV(**kw, approx="exact").fit(X, Y).cv_results_["mean_test_score"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        errs = [np.abs(KernelRidgeCV(**kw, approx="nystroem", n_components=m, random_state=0).fit(X, Y)
                       .cv_results_["mean_test_score"] - exact).max() for m in (10, 150)]
    assert errs[1] < 1e-8 < errs[0]  # all rows as centres (minus each test fold) is exact kernel ridge


def test_parallel_grid_equals_sequential():
    X, Y, _ = _problem(n=90, seed=5)
    kw = dict(alphas=[0.05, 0.5, 5.0], gammas=[0.1, 0.4], cv=3)
    seq = KernelRidgeCV(**kw).fit(X, Y).cv_results_["split1_test_score"]
    par = KernelRidgeCV(**kw, n_jobs=2).fit(X, Y).cv_results_["split1_test_score"]
    np.testing.assert_allclose(seq, par, atol=1e-12)  # BLAS thread counts differ: rounding may too


def test_elimination_plan_is_cheaper_than_separate_fits():
    from objalign.maps._logo import _full_cost, _plan

    split, cost = _plan((600,) * 5)
    assert set(split) == {(0, 5), (1, 5), (2, 5), (3, 5)}
    assert cost < 5 * _full_cost(2400, 0) < 5 * (2400**3 / 3 + 2 * 2400**2 * 80)


@pytest.mark.parametrize("repeated", [True, False])
def test_ridge_cv_with_more_features_than_test_rows(repeated, ridge_engine):
    """Test folds smaller than the feature count: the test-fold Gram is singular (no Cholesky of it)."""
    X, Y, _ = _problem(n=60, d=30, repeated=repeated, seed=3)
    alphas = [1e-2, 1.0, 30.0]
    ref = GridSearchCV(SkRidge(), {"alpha": alphas}, cv=KFold(4), scoring="r2").fit(X, Y)
    ours = RidgeCV(alphas=alphas, cv=4).fit(X, Y)
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"], atol=1e-10)
    assert ours.best_params_ == ref.best_params_


@pytest.mark.parametrize("Est,ref,grid", [
    (RidgeCV, SkRidge(), {"alpha": [0.1, 1.0]}),
    (KernelRidgeCV, SkKernelRidge(kernel="rbf"), {"alpha": [0.1, 1.0], "gamma": [0.5]}),
])
def test_constant_outputs_score_like_sklearn(Est, ref, grid, ridge_engine):
    """A constant held-out output scores 1 if predicted exactly, else 0 (scikit-learn's force_finite)."""
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((60, 4)), rng.standard_normal((60, 3))
    Y[:, 1] = 0.5  # constant everywhere: ridge with intercept predicts it exactly, kernel ridge does not
    Y[:30, 2] = 1.0  # constant inside some test folds only
    expected = GridSearchCV(ref, grid, cv=KFold(4), scoring="r2").fit(X, Y).cv_results_["mean_test_score"]
    params = {k + "s": v for k, v in grid.items()}
    got = Est(**params, cv=4).fit(X, Y).cv_results_["mean_test_score"]
    np.testing.assert_allclose(got, expected, atol=1e-10)


def test_eigendecomposition_engine_equals_grid_search(monkeypatch):
    """The one-eigh-per-gamma engine (chosen for long alpha grids) gives GridSearchCV's scores too."""
    import objalign.maps.kernel as kernel_mod

    monkeypatch.setattr(kernel_mod, "_exact_engine", lambda *a, **k: "eigh")
    X, Y, groups = _problem(seed=6)
    cv, splits = _splits("predefined", X, Y, groups)
    grid = {"alpha": [1e-2, 0.3, 10.0], "gamma": [0.05, 0.5]}
    ref = GridSearchCV(SkKernelRidge(kernel="rbf"), grid, cv=splits, scoring="r2").fit(X, Y)
    ours = KernelRidgeCV(alphas=grid["alpha"], gammas=grid["gamma"], cv=cv, n_jobs=2).fit(X, Y)
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"], atol=1e-9)


def test_engine_choice_follows_grid_length():
    from objalign.maps._splits import Partition
    from objalign.maps.kernel import _exact_engine

    part = Partition(order=np.arange(3000), bounds=np.arange(0, 3001, 600))
    assert _exact_engine(part, 7, 80, np.float64) == "blocks"
    assert _exact_engine(part, 40, 80, np.float64) == "eigh"
    assert _exact_engine(part, 40, 80, np.float32) == "blocks"


def test_kernel_refit_falls_back_when_in_place_cholesky_fails(monkeypatch):
    """The refit factorises the kernel in place; if that Cholesky fails the kernel is rebuilt and solved
    the way scikit-learn does (so the fallback sees the original matrix, not the half-factorised one)."""
    from objalign.maps import KernelRidge
    from objalign.maps._blas import Blas

    X, Y, _ = _problem(seed=8)
    ref = SkKernelRidge(alpha=0.3, kernel="rbf", gamma=0.2).fit(X, Y)
    monkeypatch.setattr(Blas, "potrf", lambda self, A: A.fill(np.nan) or 1)  # fail, leaving garbage behind
    ours = KernelRidge(alpha=0.3, kernel="rbf", gamma=0.2).fit(X, Y)
    np.testing.assert_allclose(ours.dual_coef_, ref.dual_coef_, rtol=1e-8, atol=1e-10)
