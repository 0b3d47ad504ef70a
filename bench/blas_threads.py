"""Do BLAS/LAPACK calls run in parallel from two Python threads? scipy's wrappers vs objalign's ``_blas``.

KernelRidgeCV evaluates grid points in threads. Each point is a chain of Cholesky / triangular-solve /
rank-k-update calls; if those calls hold the GIL, two threads take as long as one. For each routine this
prints the time of two calls one after the other and of the same two calls in two threads (one BLAS thread
each), and the ratio; ~2x means the call releases the GIL.

Usage::

    python bench/blas_threads.py [--n 1500]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def _pair(fn):
    fn()
    t = time.perf_counter()
    fn()
    fn()
    serial = time.perf_counter() - t
    with ThreadPoolExecutor(2) as pool:
        t = time.perf_counter()
        list(pool.map(lambda _: fn(), range(2)))
        threaded = time.perf_counter() - t
    return serial, threaded


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1500)
    args = ap.parse_args(argv)
    from scipy.linalg import get_blas_funcs, get_lapack_funcs
    from threadpoolctl import threadpool_limits

    from objalign.maps._blas import Blas

    n = args.n
    rng = np.random.default_rng(0)
    A = np.asfortranarray(rng.standard_normal((n, n)))
    S = np.asfortranarray(A @ A.T + n * np.eye(n))
    L = np.asfortranarray(np.linalg.cholesky(S))
    b = Blas(np.float64)
    potrf, = get_lapack_funcs(("potrf",), (S,))
    trsm, syrk = get_blas_funcs(("trsm", "syrk"), (S,))
    cases = [
        ("scipy potrf (f2py)", lambda: potrf(S.copy(order="F"), overwrite_a=1)),
        ("objalign potrf", lambda: b.potrf(S.copy(order="F"))),
        ("scipy trsm (f2py)", lambda: trsm(1.0, L, A)),
        ("objalign trsm", lambda: b.trsm(L, A.copy(order="F"))),
        ("scipy syrk (f2py)", lambda: syrk(1.0, A)),
        ("objalign syrk", lambda: b.syrk(A, np.zeros((n, n), order="F"))),
        ("numpy matmul", lambda: A @ A),
    ]
    print(f"n={n}, one BLAS thread per Python thread; two calls in series vs in two threads")
    ratios = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for name, fn in cases:
            serial, threaded = _pair(fn)
            ratios[name] = serial / threaded
            print(f"  {name:20s} series {serial:.3f}s  threads {threaded:.3f}s  parallel_speedup={serial / threaded:.2f}x")
    ours = min(v for k, v in ratios.items() if k.startswith("objalign"))
    theirs = max(v for k, v in ratios.items() if k.startswith("scipy"))
    print(f"objalign_min_parallel_speedup={ours:.2f} scipy_max_parallel_speedup={theirs:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
