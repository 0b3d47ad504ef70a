"""The GIL-free BLAS/LAPACK calls of :mod:`objalign.maps._blas` against numpy, in float32 and float64."""

import numpy as np
import pytest

from objalign.maps._blas import Blas


@pytest.fixture(params=[np.float64, np.float32])
def dtype(request):
    return request.param


def _spd(rng, n, dtype):
    A = rng.standard_normal((n + 5, n))
    return np.asfortranarray(A.T @ A + n * np.eye(n)).astype(dtype, order="F")


def test_potrf_is_lower_cholesky_and_reports_failure(dtype):
    rng = np.random.default_rng(0)
    S = _spd(rng, 7, dtype)
    L = S.copy(order="F")
    assert Blas(dtype).potrf(L) == 0
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(np.tril(L), np.linalg.cholesky(S.astype(np.float64)), rtol=tol, atol=tol)
    np.testing.assert_array_equal(np.triu(L, 1), np.triu(S, 1))  # the upper triangle is left alone
    bad = np.asfortranarray(-np.eye(3, dtype=dtype))
    assert Blas(dtype).potrf(bad) == 1


@pytest.mark.parametrize("right", [False, True])
@pytest.mark.parametrize("trans", [False, True])
def test_triangular_solve_and_multiply(dtype, right, trans):
    rng = np.random.default_rng(1)
    m, n = 6, 4
    k = n if right else m
    L = np.asfortranarray(np.tril(rng.standard_normal((k, k))) + 3 * np.eye(k)).astype(dtype, order="F")
    B = np.asfortranarray(rng.standard_normal((m, n))).astype(dtype, order="F")
    op = L.T if trans else L
    b = Blas(dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    expect_solve = B @ np.linalg.inv(op) if right else np.linalg.solve(op, B)
    np.testing.assert_allclose(b.trsm(L, B.copy(order="F"), right=right, trans=trans, alpha=2.0), 2 * expect_solve,
                               rtol=tol, atol=tol)
    expect_mul = B @ op if right else op @ B
    np.testing.assert_allclose(b.trmm(L, B.copy(order="F"), right=right, trans=trans), expect_mul, rtol=tol, atol=tol)


@pytest.mark.parametrize("trans", [False, True])
def test_syrk_and_gemm(dtype, trans):
    rng = np.random.default_rng(2)
    A = np.asfortranarray(rng.standard_normal((5, 3))).astype(dtype, order="F")
    C0 = _spd(rng, 3 if trans else 5, dtype)
    b = Blas(dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    got = b.syrk(A, C0.copy(order="F"), trans=trans, alpha=-1.0)
    want = C0 - (A.T @ A if trans else A @ A.T)
    np.testing.assert_allclose(np.tril(got), np.tril(want), rtol=tol, atol=tol)
    Bm = np.asfortranarray(rng.standard_normal((5 if trans else 3, 2))).astype(dtype, order="F")
    C = np.asfortranarray(rng.standard_normal((3 if trans else 5, 2))).astype(dtype, order="F")
    want = 0.5 * C - ((A.T if trans else A) @ Bm)
    np.testing.assert_allclose(b.gemm(A, Bm, C.copy(order="F"), trans_a=trans, alpha=-1.0, beta=0.5), want,
                               rtol=tol, atol=tol)


def test_wrong_layout_dtype_or_shape_is_refused():
    b = Blas(np.float64)
    L = np.eye(3)
    with pytest.raises(ValueError, match="Fortran-ordered"):
        b.trsm(np.asfortranarray(L), np.ones((3, 2)))  # C-ordered right-hand side
    with pytest.raises(ValueError, match=r"column-major\) float64"):
        b.potrf(np.asfortranarray(L, dtype=np.float32))
    with pytest.raises(ValueError, match="incompatible shapes"):
        b.trsm(np.asfortranarray(L), np.asfortranarray(np.ones((4, 2))))
    with pytest.raises(TypeError, match="float32 and float64"):
        Blas(np.int64)


def _longest_stall(call):
    """Run ``call`` in a thread; return (its duration, the longest pause of a Python loop in this thread)."""
    import threading
    import time

    took = {}

    def work():
        t0 = time.perf_counter()
        call()
        took["s"] = time.perf_counter() - t0

    t = threading.Thread(target=work)
    t.start()
    last, gap = time.perf_counter(), 0.0
    while t.is_alive():
        now = time.perf_counter()
        gap, last = max(gap, now - last), now
    t.join()
    return took["s"], gap


def test_calls_release_the_gil():
    """While one thread is inside a long Cholesky, another thread keeps running Python code.

    scipy's ``get_lapack_funcs`` wrappers (scipy 1.17) hold the GIL for the whole call, which serialised
    the "parallel" grid points of KernelRidgeCV; this is why ``_blas`` exists. With such a wrapper in place
    of ``Blas.potrf`` this loop stalls for the whole call (``bench/blas_threads.py`` shows both).
    """
    from threadpoolctl import threadpool_limits

    n = 1500
    A = np.random.default_rng(3).standard_normal((n, n))
    S = np.asfortranarray(A @ A.T + n * np.eye(n))
    with threadpool_limits(limits=1, user_api="blas"):
        took, stall = _longest_stall(lambda: Blas(np.float64).potrf(S.copy(order="F")))
        assert took > 0.01 and stall < took / 2, (took, stall)


def test_sub_block_views_are_used_in_place(dtype):
    """A block ``S[r0:r1, c0:c1]`` of a Fortran-ordered matrix is passed with its leading dimension."""
    rng = np.random.default_rng(4)
    big = np.asfortranarray(rng.standard_normal((9, 9))).astype(dtype, order="F")
    S = _spd(rng, 4, dtype)
    big[2:6, 3:7] = S
    before = big.copy(order="F")
    b = Blas(dtype)
    assert b.potrf(big[2:6, 3:7]) == 0  # in place, inside the big array
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(np.tril(big[2:6, 3:7]), np.linalg.cholesky(S.astype(np.float64)), rtol=tol, atol=tol)
    outside = np.ones(big.shape, dtype=bool)
    outside[2:6, 3:7] = False
    np.testing.assert_array_equal(big[outside], before[outside])
    B = big[6:9, 0:4]  # a 3 x 4 block, leading dimension 9
    want = before[6:9, 0:4] @ np.linalg.inv(np.tril(big[2:6, 3:7]).T)
    b.trsm(big[2:6, 3:7], B, right=True, trans=True)
    np.testing.assert_allclose(big[6:9, 0:4], want, rtol=tol, atol=tol)
