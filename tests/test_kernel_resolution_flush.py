"""Before a kernel is factorised, its values below u / n are flushed (a perturbation smaller than rounding the
system to the working precision), and BLAS runs with flush-to-zero: at a large gamma no subnormal number reaches
the factorisation, and predictions and CV scores equal the unflushed ones within the working precision."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from objalign.maps import KernelRidge, KernelRidgeCV, _blas, _kernels
from objalign.maps._blas import SubnormalCount


def _data(n=300, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, d)) * 3
    X = centres[rng.integers(0, 12, n)] + 0.6 * rng.standard_normal((n, d))  # clusters: near and far pairs
    Y = np.tanh(X[:, :3]) + 0.1 * rng.standard_normal((n, 3))
    return X, Y


def _gamma(X, times_median):
    D = _kernels.KernelBase(X, "rbf").base
    return times_median / float(np.median(D[np.triu_indices_from(D, 1)]))


@pytest.fixture
def unflushed(monkeypatch):
    """Switch both defences off: only subnormal kernel values are flushed (the behaviour before)."""

    def off():
        monkeypatch.setattr(_kernels, "_SOLVE_FLUSH", "subnormal")
        monkeypatch.setattr(_blas, "FLUSH_TO_ZERO", False)

    return off


def test_solve_floor_is_the_unit_roundoff_over_n(monkeypatch):
    assert _kernels.solve_floor(3000, np.float32) == pytest.approx(2.0 ** -24 / 3000)
    assert _kernels.solve_floor(100, np.float64) == pytest.approx(2.0 ** -53 / 100)
    monkeypatch.setattr(_kernels, "_SOLVE_FLUSH", "subnormal")
    assert _kernels.solve_floor(3000, np.float32) is None


def test_flush_below_the_floor_perturbs_less_than_one_rounding():
    X, _ = _data()
    for dtype in (np.float32, np.float64):
        base = _kernels.KernelBase(X.astype(dtype), "rbf")
        gamma = _gamma(X, 30.0)
        floor = _kernels.solve_floor(X.shape[0], dtype)
        K0 = base.matrix(gamma)
        K = base.matrix(gamma, floor=floor)
        E = (K0 - K).astype(np.float64)
        assert np.count_nonzero(E) > 0 and np.abs(E).max() < floor and (K[K != 0] >= np.float32(floor)).all()
        # the bound of _kernels' notes: ||E||_2 < u <= u ||K + alpha I||_2 for every alpha > 0
        assert np.linalg.norm(E, 2) < np.finfo(dtype).eps / 2
        assert K.dtype == dtype and (np.diag(K) == 1).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scores_and_predictions_equal_the_unflushed_ones(dtype, unflushed):
    X, Y = _data()
    X, Y = X.astype(dtype), Y.astype(dtype)
    gammas = [_gamma(X, t) for t in (20.0, 40.0, 60.0)]
    alphas = [1e-3, 0.1, 10.0]

    def fit():
        cv = KernelRidgeCV(alphas=alphas, gammas=gammas, cv=5).fit(X, Y)
        kr = KernelRidge(alpha=1e-3, gamma=gammas[1], kernel="rbf").fit(X[:200], Y[:200])
        return cv.cv_results_["mean_test_score"], cv.predict(X), kr.predict(X[200:]), kr.dual_coef_

    new = fit()
    unflushed()
    old = fit()
    eps = np.finfo(dtype).eps
    # same choice, same scores and predictions up to rounding: float32 CV residuals of a 240-row system with
    # alpha = 1e-3 are good to ~1e-4 at best, float64 ones to ~1e-12
    tol = 2e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(new[0], old[0], rtol=0, atol=tol)
    for a, b in zip(new[1:], old[1:]):
        scale = np.abs(b).max()
        np.testing.assert_allclose(a, b, rtol=0, atol=max(tol, 1e3 * eps) * scale)


def test_no_subnormal_reaches_the_factorisation_at_large_gamma(unflushed):
    X, Y = _data()
    X, Y = X.astype(np.float32), Y.astype(np.float32)
    gammas = [_gamma(X, t) for t in (40.0, 60.0, 80.0)]  # most kernel values between 1e-35 and 1e-18

    def counted(n_jobs):
        # one BLAS thread (as bench/align.py runs): every call in a thread with flush-to-zero set (BLAS's own
        # thread teams keep their own MXCSR: there only the u / n flush applies; see _blas' notes)
        with threadpool_limits(limits=1, user_api="blas"), SubnormalCount() as c:
            KernelRidgeCV(alphas=[1e-3, 1.0], gammas=gammas, cv=5, n_jobs=n_jobs).fit(X, Y)
        return c

    c = counted(2)
    assert c.calls > 0 and c.total == 0, dict(c.by_routine)
    unflushed()
    before = counted(2)
    assert before.total > 0  # the case is real: without the defences subnormal numbers reach BLAS
