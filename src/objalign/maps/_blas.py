"""BLAS-3 and Cholesky calls that release the GIL, so grid points in threads really run in parallel.

``scipy.linalg.get_blas_funcs`` / ``get_lapack_funcs`` (f2py wrappers) hold the GIL for the whole call:
two threads doing ``potrf``/``trsm``/``syrk``/``gemm`` through them run one after the other (measured:
``bench/blas_threads.py``). The same routines of the same library are reached here through the C function
pointers that ``scipy.linalg.cython_blas`` / ``cython_lapack`` export, called with :mod:`ctypes`, which
drops the GIL for the duration of a foreign call.

Every array handed to these functions must be column-major (Fortran-ordered, or a sub-block view of a
Fortran-ordered array, passed with its leading dimension) with the routine's dtype; this is checked,
because a wrong layout would be read silently as another matrix.

On x86-64 Linux (glibc) every call runs with the SSE flush-to-zero and denormals-are-zero modes set in the
calling thread's MXCSR and restored afterwards (:data:`FLUSH_TO_ZERO`): a subnormal number, which Intel CPUs
handle in microcode at up to 100x the cost, is then never produced or read inside the call. Kernels are
already flushed below ``u / n`` before they are factorised (:mod:`objalign.maps._kernels`), which removes
nearly all of them; this catches the few that products of the small surviving entries still make (fill-in
of the factor at about ``(u / n)^4``). Numerically, both change nothing: a subnormal number is below any
quantity the solvers resolve. Limit: a multi-threaded BLAS call runs partly in the library's own worker
threads, which keep their own MXCSR (OpenBLAS built without ``CONSISTENT_FPCSR``), so there only the ``u / n``
flush applies (measured, float32, n = 1,000, gamma x median squared distance = 22, one CV search: 47 subnormal
numbers reached BLAS with a two-thread BLAS and ``n_jobs=1``, 151 with the ``u / n`` flush alone, 0 with one
BLAS thread per worker).

:class:`SubnormalCount` (a debugging aid, used by ``bench/align.py --gamma-grid`` and the tests) counts the
subnormal numbers in the operands handed to these routines and in the results they write.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib
import platform
import sys
import threading
from collections import Counter

import numpy as np

__all__ = ["Blas", "SubnormalCount"]

_c_int_p = ctypes.POINTER(ctypes.c_int)

_SIGS = {  # argument kinds after the prefix letter: c = char*, i = int*, s = scalar*, a = array
    "gemm": ("lapack_blas", "cciiisaiaisai"),
    "syrk": ("lapack_blas", "cciisaisai"),
    "trsm": ("lapack_blas", "cccciisaiai"),
    "trmm": ("lapack_blas", "cccciisaiai"),
    "potrf": ("lapack", "ciaii"),
}


@functools.lru_cache(maxsize=None)
def _function(prefix, name):
    module, kinds = _SIGS[name]
    mod = importlib.import_module("scipy.linalg.cython_lapack" if module == "lapack" else "scipy.linalg.cython_blas")
    capsule = mod.__pyx_capi__[prefix + name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
    get_ptr.restype, get_ptr.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    address = get_ptr(capsule, get_name(capsule))
    scalar = ctypes.c_double if prefix == "d" else ctypes.c_float
    types = {"c": ctypes.c_char_p, "i": _c_int_p, "s": ctypes.POINTER(scalar), "a": ctypes.c_void_p}
    return ctypes.CFUNCTYPE(None, *[types[k] for k in kinds])(address)


_count = None  # the active SubnormalCount, if any

#: Run the BLAS and LAPACK calls with flush-to-zero / denormals-are-zero set (x86-64 Linux only; see the notes).
FLUSH_TO_ZERO = True

_FENV_BYTES, _MXCSR_AT, _FTZ_DAZ = 32, 28, 0x8040  # glibc x86-64 fenv_t: 32 bytes, MXCSR last; FTZ | DAZ bits


@functools.lru_cache(maxsize=None)
def _libm():
    """glibc's libm where ``fenv_t`` has the x86-64 layout (MXCSR at byte 28), else None."""
    if not sys.platform.startswith("linux") or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    name = ctypes.util.find_library("m")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.fegetenv.argtypes = lib.fesetenv.argtypes = [ctypes.c_void_p]
        saved = ctypes.create_string_buffer(64)
        if lib.fegetenv(saved) != 0:
            return None
        mxcsr = int.from_bytes(saved.raw[_MXCSR_AT:_MXCSR_AT + 4], "little")
        if mxcsr & 0xFFFF0000 or not mxcsr & 0x1F80:  # not a plausible MXCSR (exception masks all clear)
            return None
    except (OSError, AttributeError):
        return None
    return lib


class _FlushToZero:
    """Set FTZ and DAZ in this thread's MXCSR for a ``with`` block and restore the environment after it."""

    __slots__ = ("_lib", "_saved")

    def __init__(self):
        self._lib = _libm() if FLUSH_TO_ZERO else None

    def __enter__(self):
        lib = self._lib
        if lib is not None:
            self._saved = ctypes.create_string_buffer(64)
            lib.fegetenv(self._saved)
            env = bytearray(self._saved.raw)
            mxcsr = int.from_bytes(env[_MXCSR_AT:_MXCSR_AT + 4], "little") | _FTZ_DAZ
            env[_MXCSR_AT:_MXCSR_AT + 4] = mxcsr.to_bytes(4, "little")
            lib.fesetenv(ctypes.create_string_buffer(bytes(env), 64))
        return self

    def __exit__(self, *exc):
        if self._lib is not None:
            self._lib.fesetenv(self._saved)
        return False


class SubnormalCount:
    """Count the subnormal numbers that reach :class:`Blas` routines while active (a context manager).

    For every ``potrf``, ``trsm``, ``trmm``, ``syrk`` and ``gemm`` call made inside the ``with`` block (any
    thread), the entries ``0 < |x| < np.finfo(dtype).tiny`` are counted in each operand on entry (``inputs``)
    and in the array the routine wrote, on exit (``outputs``); triangular operands (the factor, ``syrk``'s
    result) are counted on their referenced lower triangle only. Products formed and consumed inside one call
    are not visible; a subnormal among them would nearly always surface in a result or a later operand.
    Costs one pass over every operand per call: for checks and benchmarks only.

    Attributes
    ----------
    inputs, outputs : int
    by_routine : collections.Counter
        ``{routine: inputs + outputs}``.
    calls : int
    """

    def __init__(self):
        self.inputs = self.outputs = self.calls = 0
        self.by_routine = Counter()
        self._lock = threading.Lock()
        self._prev = None

    @property
    def total(self) -> int:
        """``inputs + outputs``."""
        return self.inputs + self.outputs

    def __enter__(self):
        global _count
        self._prev, _count = _count, self
        return self

    def __exit__(self, *exc):
        global _count
        _count = self._prev
        return False

    @staticmethod
    def _n(a, lower):
        a = np.tril(a) if lower else a
        return int(np.count_nonzero((a != 0) & (np.abs(a) < np.finfo(a.dtype).tiny)))

    def _add(self, routine, arrays, output):
        n = sum(self._n(a, lower) for a, lower in arrays)
        with self._lock:
            if output:
                self.outputs += n
            else:
                self.inputs += n
                self.calls += 1
            self.by_routine[routine] += n


def _need(ok, name, *shapes):
    if not ok:
        raise ValueError(f"{name}: incompatible shapes {', '.join(map(str, shapes))}")


def _i(v):
    return ctypes.byref(ctypes.c_int(int(v)))


class Blas:
    """``potrf``, ``trsm``, ``trmm``, ``syrk`` and ``gemm`` for one dtype (float32 or float64), GIL released.

    Arrays are column-major: Fortran-contiguous, or a view of one (a sub-block ``S[r0:r1, c0:c1]`` of a
    Fortran-ordered ``S``), passed with its leading dimension, so blocks are worked on in place.
    """

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        if self.dtype == np.float64:
            prefix, self._scalar = "d", ctypes.c_double
        elif self.dtype == np.float32:
            prefix, self._scalar = "s", ctypes.c_float
        else:
            raise TypeError(f"Blas supports float32 and float64, not {self.dtype}")
        self._f = {name: _function(prefix, name) for name in _SIGS}

    def _arr(self, a, name):
        """(pointer, leading dimension) of a column-major 2-D array or view; anything else is refused."""
        item = self.dtype.itemsize
        ok = a.dtype == self.dtype and a.ndim == 2
        if ok and a.size:
            s0, s1 = a.strides
            ok = (s0 == item or a.shape[0] == 1) and (s1 % item == 0 and s1 // item >= a.shape[0] or a.shape[1] == 1)
        if not ok:
            raise ValueError(f"{name}: expected a Fortran-ordered (column-major) {self.dtype} 2-D array, got "
                             f"{a.dtype} with shape {a.shape} and strides {a.strides}")
        ld = a.strides[1] // item if a.shape[1] > 1 else a.shape[0]
        return a.ctypes.data, _i(max(ld, 1))

    def _s(self, v):
        return ctypes.byref(self._scalar(v))

    def _call(self, name, inputs, outputs, *args):
        """Routine ``name`` on ``args`` with flush-to-zero set, its ``(array, lower)`` operands counted on entry and
        the arrays it writes on exit while a :class:`SubnormalCount` is active."""
        count = _count
        if count is not None:
            count._add(name, inputs, False)
        with _FlushToZero():
            self._f[name](*args)
        if count is not None:
            count._add(name, outputs, True)

    def potrf(self, A):
        """Lower Cholesky factor of ``A`` in place (upper triangle left as it was); returns ``info``."""
        n = A.shape[0]
        _need(A.shape == (n, n), "potrf", A.shape)
        info = ctypes.c_int(0)
        self._call("potrf", [(A, True)], [(A, True)], b"L", _i(n), *self._arr(A, "potrf"), ctypes.byref(info))
        return info.value

    def trsm(self, L, B, right=False, trans=False, alpha=1.0):
        """``B <- alpha op(L)^-1 B`` (left) or ``B <- alpha B op(L)^-1`` (right), ``L`` lower triangular."""
        return self._triangular("trsm", L, B, right, trans, alpha)

    def trmm(self, L, B, right=False, trans=False, alpha=1.0):
        """``B <- alpha op(L) B`` (left) or ``B <- alpha B op(L)`` (right), ``L`` lower triangular."""
        return self._triangular("trmm", L, B, right, trans, alpha)

    def _triangular(self, name, L, B, right, trans, alpha):
        m, n = B.shape
        _need(L.shape == ((n, n) if right else (m, m)), name, L.shape, B.shape)
        self._call(name, [(L, True), (B, False)], [(B, False)], b"R" if right else b"L", b"L", b"T" if trans else b"N",
                   b"N", _i(m), _i(n), self._s(alpha), *self._arr(L, name), *self._arr(B, name))
        return B

    def syrk(self, A, C, trans=False, alpha=1.0, beta=1.0):
        """Lower triangle of ``C <- alpha A A' + beta C`` (``A' A`` if ``trans``)."""
        n = C.shape[0]
        k = A.shape[0] if trans else A.shape[1]
        _need(C.shape == (n, n) and (A.shape[1] if trans else A.shape[0]) == n, "syrk", A.shape, C.shape)
        self._call("syrk", [(A, False), (C, True)], [(C, True)], b"L", b"T" if trans else b"N", _i(n), _i(k),
                   self._s(alpha), *self._arr(A, "syrk"), self._s(beta), *self._arr(C, "syrk"))
        return C

    def gemm(self, A, B, C, trans_a=False, alpha=1.0, beta=1.0):
        """``C <- alpha op(A) B + beta C``."""
        m, n = C.shape
        k = A.shape[0] if trans_a else A.shape[1]
        _need((A.shape[1] if trans_a else A.shape[0]) == m and B.shape == (k, n), "gemm", A.shape, B.shape, C.shape)
        self._call("gemm", [(A, False), (B, False), (C, False)], [(C, False)], b"T" if trans_a else b"N", b"N", _i(m),
                   _i(n), _i(k), self._s(alpha), *self._arr(A, "gemm"), *self._arr(B, "gemm"), self._s(beta),
                   *self._arr(C, "gemm"))
        return C
