"""Kernel values below the dtype's smallest normal number are flushed to zero (BLAS can run many times slower on
subnormal numbers), in every rbf and laplacian path, float32 and float64; nothing else changes."""

import numpy as np
import pytest
from sklearn.metrics.pairwise import laplacian_kernel, rbf_kernel

from objalign.maps import KernelRidge, KernelRidgeCV
from objalign.maps import _kernels
from objalign.maps._kernels import KernelBase, flush_subnormal, kernel_matrix


def _data(dtype, n=60, d=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    Y = rng.standard_normal((n, 3)).astype(dtype)
    return X, Y


def _subnormal(K):
    return int(np.count_nonzero((K != 0) & (np.abs(K) < np.finfo(K.dtype).tiny)))


def _gamma_for_underflow(X, kernel, dtype):
    """A gamma that puts the median distance's kernel value deep in the subnormal range of ``dtype``."""
    D = KernelBase(X.astype(np.float64), kernel).base
    med = float(np.median(D[np.triu_indices_from(D, 1)]))
    return -np.log(np.finfo(dtype).tiny) * 1.1 / med


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel, sk", [("rbf", rbf_kernel), ("laplacian", laplacian_kernel)])
def test_every_kernel_path_flushes_and_changes_nothing_else(dtype, kernel, sk):
    X, _ = _data(dtype)
    gamma = _gamma_for_underflow(X, kernel, dtype)
    exact = sk(X.astype(np.float64), gamma=gamma)  # scikit-learn's kernel in float64
    assert _subnormal(exact.astype(dtype)) > 0  # the case is real: rounded to the dtype, it has subnormal entries
    paths = {"cross-validation engine": (KernelBase(X, kernel).matrix(gamma), exact),
             "exact fit and predict": (kernel_matrix(X, kernel=kernel, gamma=gamma), exact),
             "Nystroem features": (KernelBase(X[:40], kernel, Y=X[40:]).matrix(gamma), exact[:40, 40:])}
    for name, (K, ref) in paths.items():
        assert _subnormal(K) == 0, name  # (scikit-learn's laplacian is float64 even for float32 input)
        tiny = np.finfo(K.dtype).tiny
        ref = ref.astype(K.dtype)
        want = np.where(ref < tiny, 0, ref)
        # float32 kernels take exp of a float32 argument near -90: about 1e-5 relative; a value at the flush
        # threshold may be flushed on one side and not the other, a difference of about tiny
        np.testing.assert_allclose(K, want, rtol=1e-4 if K.dtype == np.float32 else 1e-10, atol=2 * tiny,
                                   err_msg=name)
    assert KernelBase(X, kernel).matrix(gamma).dtype == dtype


def test_flush_is_in_place_and_chunked(monkeypatch):
    monkeypatch.setattr(_kernels, "_FLUSH_ROWS_ELEMENTS", 7)  # several chunks, the last one shorter
    K = np.full((10, 3), 1e-40, np.float32)
    K[::3] = 0.5
    same = flush_subnormal(K)
    assert same is K and K[::3].min() == 0.5 and np.count_nonzero(K) == 4 * 3
    K64 = np.array([[1e-310, 2.3e-308, 0.0]])
    flush_subnormal(K64)
    assert K64.tolist() == [[0.0, 2.3e-308, 0.0]]


def test_no_scan_when_the_largest_distance_cannot_underflow(monkeypatch):
    X, _ = _data(np.float32)
    calls = []
    monkeypatch.setattr(_kernels, "flush_subnormal", lambda K: calls.append(K.shape) or K)
    base = KernelBase(X, "rbf")
    base.matrix(1e-3)
    assert calls == []
    base.matrix(_gamma_for_underflow(X, "rbf", np.float32))
    assert calls == [(60, 60)]


@pytest.mark.parametrize("approx", ["exact", "nystroem"])
def test_estimators_at_an_underflowing_gamma_match_float64(approx):
    X, Y = _data(np.float64, n=80)
    gamma = _gamma_for_underflow(X, "rbf", np.float32) * 0.8  # some neighbours normal, most subnormal in float32
    kw = dict(alpha=0.1, gamma=gamma, kernel="rbf", approx=approx, n_components=50, random_state=0)
    p64 = KernelRidge(**kw).fit(X, Y).predict(X)
    p32 = KernelRidge(**kw).fit(X.astype(np.float32), Y.astype(np.float32)).predict(X.astype(np.float32))
    np.testing.assert_allclose(p32, p64, atol=1e-4)
    cv = KernelRidgeCV(alphas=[0.1, 1.0], gammas=[gamma], kernel="rbf", cv=3, approx=approx, n_components=50,
                       random_state=0).fit(X.astype(np.float32), Y.astype(np.float32))
    assert np.isfinite(cv.cv_results_["mean_test_score"]).all()
