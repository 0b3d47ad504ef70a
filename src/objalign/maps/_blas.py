"""BLAS-3 and Cholesky calls that release the GIL, so grid points in threads really run in parallel.

``scipy.linalg.get_blas_funcs`` / ``get_lapack_funcs`` (f2py wrappers) hold the GIL for the whole call:
two threads doing ``potrf``/``trsm``/``syrk``/``gemm`` through them run one after the other (measured:
``bench/blas_threads.py``). The same routines of the same library are reached here through the C function
pointers that ``scipy.linalg.cython_blas`` / ``cython_lapack`` export, called with :mod:`ctypes`, which
drops the GIL for the duration of a foreign call.

Every array handed to these functions must be column-major (Fortran-ordered, or a sub-block view of a
Fortran-ordered array, passed with its leading dimension) with the routine's dtype; this is checked,
because a wrong layout would be read silently as another matrix.
"""

from __future__ import annotations

import ctypes
import functools
import importlib

import numpy as np

__all__ = ["Blas"]

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

    def potrf(self, A):
        """Lower Cholesky factor of ``A`` in place (upper triangle left as it was); returns ``info``."""
        n = A.shape[0]
        _need(A.shape == (n, n), "potrf", A.shape)
        info = ctypes.c_int(0)
        self._f["potrf"](b"L", _i(n), *self._arr(A, "potrf"), ctypes.byref(info))
        return info.value

    def trsm(self, L, B, right=False, trans=False, alpha=1.0):
        """``B <- alpha op(L)^-1 B`` (left) or ``B <- alpha B op(L)^-1`` (right), ``L`` lower triangular."""
        m, n = B.shape
        _need(L.shape == ((n, n) if right else (m, m)), "trsm", L.shape, B.shape)
        self._f["trsm"](b"R" if right else b"L", b"L", b"T" if trans else b"N", b"N", _i(m), _i(n), self._s(alpha),
                        *self._arr(L, "trsm"), *self._arr(B, "trsm"))
        return B

    def trmm(self, L, B, right=False, trans=False, alpha=1.0):
        """``B <- alpha op(L) B`` (left) or ``B <- alpha B op(L)`` (right), ``L`` lower triangular."""
        m, n = B.shape
        _need(L.shape == ((n, n) if right else (m, m)), "trmm", L.shape, B.shape)
        self._f["trmm"](b"R" if right else b"L", b"L", b"T" if trans else b"N", b"N", _i(m), _i(n), self._s(alpha),
                        *self._arr(L, "trmm"), *self._arr(B, "trmm"))
        return B

    def syrk(self, A, C, trans=False, alpha=1.0, beta=1.0):
        """Lower triangle of ``C <- alpha A A' + beta C`` (``A' A`` if ``trans``)."""
        n = C.shape[0]
        k = A.shape[0] if trans else A.shape[1]
        _need(C.shape == (n, n) and (A.shape[1] if trans else A.shape[0]) == n, "syrk", A.shape, C.shape)
        self._f["syrk"](b"L", b"T" if trans else b"N", _i(n), _i(k), self._s(alpha), *self._arr(A, "syrk"),
                        self._s(beta), *self._arr(C, "syrk"))
        return C

    def gemm(self, A, B, C, trans_a=False, alpha=1.0, beta=1.0):
        """``C <- alpha op(A) B + beta C``."""
        m, n = C.shape
        k = A.shape[0] if trans_a else A.shape[1]
        _need((A.shape[1] if trans_a else A.shape[0]) == m and B.shape == (k, n), "gemm", A.shape, B.shape, C.shape)
        self._f["gemm"](b"T" if trans_a else b"N", b"N", _i(m), _i(n), _i(k), self._s(alpha), *self._arr(A, "gemm"),
                        *self._arr(B, "gemm"), self._s(beta), *self._arr(C, "gemm"))
        return C
