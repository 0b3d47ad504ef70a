"""objalign.maps estimators: scikit-learn contract and agreement with scikit-learn / closed forms."""

import warnings

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from sklearn.decomposition import PCA
from sklearn.kernel_ridge import KernelRidge as SkKernelRidge
from sklearn.linear_model import Ridge as SkRidge
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import check_estimator

from objalign.maps import KernelRidge, KernelRidgeCV, PCAMatch, Procrustes, Ridge, RidgeCV


@pytest.mark.parametrize(
    "est",
    [
        PCAMatch(),
        Ridge(),
        RidgeCV(),
        KernelRidge(kernel="rbf"),
        KernelRidgeCV(),
        KernelRidgeCV(kernel="linear"),
        Procrustes(),
        KernelRidge(kernel="rbf", approx="nystroem", n_components=20, random_state=0),
        KernelRidgeCV(approx="nystroem", n_components=20, random_state=0),
    ],
    ids=lambda e: f"{type(e).__name__}-{getattr(e, 'kernel', '')}-{getattr(e, 'approx', '')}",
)
def test_check_estimator(est):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_estimator(est)


def _data(n=60, d=7, dy=5, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) + 2.0
    Y = X @ rng.standard_normal((d, dy)) + 0.3 * rng.standard_normal((n, dy)) - 1.0
    return X.astype(dtype), Y.astype(dtype)


@pytest.mark.parametrize("shape", [(60, 7), (6, 20)])  # primal and dual (wide) normal equations
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_ridge_matches_sklearn(shape, fit_intercept):
    X, Y = _data(*shape)
    ours = Ridge(alpha=0.7, fit_intercept=fit_intercept).fit(X, Y)
    ref = SkRidge(alpha=0.7, fit_intercept=fit_intercept).fit(X, Y)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, rtol=1e-9, atol=1e-10)
    ours1 = Ridge(alpha=0.7, fit_intercept=fit_intercept).fit(X, Y[:, 0])
    assert ours1.coef_.shape == (X.shape[1],) and np.ndim(ours1.intercept_) == 0
    np.testing.assert_allclose(ours1.predict(X), ref.predict(X)[:, 0], rtol=1e-9, atol=1e-10)


def test_ridge_float32_stays_float32():
    X, Y = _data(dtype=np.float32)
    m = Ridge(alpha=1.0).fit(X, Y)
    assert m.coef_.dtype == np.float32 and m.predict(X).dtype == np.float32
    np.testing.assert_allclose(m.coef_, SkRidge(alpha=1.0).fit(X.astype(float), Y.astype(float)).coef_, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("kernel,gamma", [("linear", None), ("rbf", 0.2), ("rbf", None), ("laplacian", 0.1),
                                          ("polynomial", 0.05), ("cosine", None)])
def test_kernel_ridge_matches_sklearn(kernel, gamma):
    X, Y = _data()
    ours = KernelRidge(alpha=0.3, kernel=kernel, gamma=gamma).fit(X, Y)
    ref = SkKernelRidge(alpha=0.3, kernel=kernel, gamma=gamma).fit(X, Y)
    Xt, _ = _data(seed=1)
    assert ours.approx_ == "exact"
    np.testing.assert_allclose(ours.dual_coef_, ref.dual_coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.predict(Xt), ref.predict(Xt), rtol=1e-8, atol=1e-10)


def test_kernel_ridge_nystroem_closed_form():
    """Nyström KRR == K_tm (K_mn K_nm + alpha K_mm)^-1 K_mn Y (independent closed form)."""
    X, Y = _data(n=80)
    m = KernelRidge(alpha=0.5, kernel="rbf", gamma=0.1, approx="nystroem", n_components=25, random_state=3).fit(X, Y)
    assert m.approx_ == "nystroem" and m.components_.shape == (25, X.shape[1])
    C = X[m.component_indices_]
    Knm, Kmm = rbf_kernel(X, C, gamma=0.1), rbf_kernel(C, gamma=0.1)
    beta = np.linalg.solve(Knm.T @ Knm + 0.5 * Kmm, Knm.T @ Y)
    Xt, _ = _data(n=10, seed=4)
    np.testing.assert_allclose(m.predict(Xt), rbf_kernel(Xt, C, gamma=0.1) @ beta, rtol=1e-6, atol=1e-8)
    # All rows as centres: Nyström is exact kernel ridge.
    full = KernelRidge(alpha=0.5, kernel="rbf", gamma=0.1, approx="nystroem", n_components=80).fit(X, Y)
    exact = SkKernelRidge(alpha=0.5, kernel="rbf", gamma=0.1).fit(X, Y)
    np.testing.assert_allclose(full.predict(Xt), exact.predict(Xt), rtol=1e-6, atol=1e-8)


def test_kernel_ridge_auto_switches_to_nystroem():
    X, Y = _data(n=50)
    m = KernelRidge(kernel="rbf", max_exact_samples=40, n_components=10, random_state=0).fit(X, Y)
    assert m.approx_ == "nystroem"
    assert KernelRidge(kernel="rbf", max_exact_samples=50).fit(X, Y).approx_ == "exact"


def test_pca_match_matches_sklearn():
    X, _ = _data(n=50, d=9)
    ours = PCAMatch(n_components=4).fit(X[:40])
    ref = PCA(n_components=4, svd_solver="full").fit(X[:40])
    signs = np.sign((ours.components_ * ref.components_).sum(axis=1))
    np.testing.assert_allclose(ours.components_, ref.components_ * signs[:, None], atol=1e-10)
    np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(ours.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-10)
    np.testing.assert_allclose(ours.transform(X[40:]), ref.transform(X[40:]) * signs, atol=1e-10)
    # Fitted on the training rows only: the test rows do not move the mean.
    np.testing.assert_allclose(ours.mean_, X[:40].mean(axis=0))
    wide = PCAMatch(n_components=3).fit(X[:5].T)  # n < p path (Gram eigenproblem)
    refw = PCA(n_components=3, svd_solver="full").fit(X[:5].T)
    np.testing.assert_allclose(np.abs(wide.transform(X[:5].T)), np.abs(refw.transform(X[:5].T)), atol=1e-9)
    np.testing.assert_allclose(ours.inverse_transform(ours.transform(X)), ref.inverse_transform(ref.transform(X)),
                               atol=1e-10)


def test_procrustes_recovers_rotation_and_matches_scipy():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 6))
    Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    Y = 2.5 * X @ Q + 1.0
    m = Procrustes(scale=True).fit(X, Y)
    np.testing.assert_allclose(m.predict(X), Y, atol=1e-10)
    np.testing.assert_allclose(m.scale_, 2.5)
    Yn = Y + 0.1 * rng.standard_normal(Y.shape)
    ours = Procrustes().fit(X, Yn)
    R, _ = orthogonal_procrustes(X - X.mean(0), Yn - Yn.mean(0))
    np.testing.assert_allclose(ours.rotation_, R, atol=1e-10)
    # Different dimensions: both sides go to k = min(dx, dy) principal axes.
    wide = Procrustes().fit(np.hstack([X, rng.standard_normal((100, 3))]), Yn)
    assert wide.n_components_ == 6 and wide.predict(np.zeros((2, 9))).shape == (2, 6)
    R = wide.rotation_
    np.testing.assert_allclose(R @ R.T, np.eye(6), atol=1e-10)


def test_composes_with_pipeline():
    X, Y = _data(n=80, d=12)
    pipe = make_pipeline(PCAMatch(n_components=5), RidgeCV(alphas=[0.1, 1.0], cv=4)).fit(X, Y)
    alpha = pipe[-1].alpha_
    ref = make_pipeline(PCA(n_components=5, svd_solver="full"), SkRidge(alpha=alpha)).fit(X, Y)
    np.testing.assert_allclose(pipe.predict(X), ref.predict(X), rtol=1e-8, atol=1e-9)


def test_pcamatch_streams_the_scatter_in_chunks(monkeypatch):
    """Many chunks (as at full-COCO scale) give the same axes and variances as scikit-learn's PCA."""
    from sklearn.decomposition import PCA

    import objalign.maps.pca as pca_mod
    from objalign.maps import PCAMatch

    monkeypatch.setattr(pca_mod, "_CHUNK_ROWS", 7)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 12)) @ rng.standard_normal((12, 12)) + 5.0
    ours, ref = PCAMatch(n_components=6).fit(X), PCA(n_components=6).fit(X)
    np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(ours.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-10)
    np.testing.assert_allclose(np.abs(ours.transform(X)), np.abs(ref.transform(X)), atol=1e-9)
