"""One home for BLAS thread limits (threadpoolctl, a scikit-learn dependency).

Many small products and solves run faster on one BLAS thread than on a team, and on a shared, oversubscribed
machine OpenBLAS teams can be tens of times slower (measured: a 256 x 256 Cholesky 1.3 ms vs 450 ms). The loaded
BLAS libraries are looked up once per process: ``threadpool_limits`` scans every loaded library on each call
(~7 ms), and the evaluation enters these contexts for each of its many small products.
"""

from __future__ import annotations

import contextlib
import importlib

__all__ = ["single_threaded_blas", "small_blas"]

_CONTROLLER: list = []


def _controller():
    if not _CONTROLLER:
        from threadpoolctl import ThreadpoolController

        importlib.import_module("scipy.linalg")  # scipy's own BLAS is loaded before the scan
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


def single_threaded_blas():
    """Context limiting BLAS to one thread.

    Examples
    --------
    >>> import numpy as np
    >>> with single_threaded_blas():
    ...     float(np.ones((3, 3)) @ np.ones(3) @ np.ones(3))
    9.0
    """
    return _controller().limit(limits=1, user_api="blas")


def small_blas(p: int, limit: int = 1024):
    """Context: one BLAS thread when the matrices are at most (``limit``, ``limit``), else unchanged."""
    if p > limit:
        return contextlib.nullcontext()
    return single_threaded_blas()
