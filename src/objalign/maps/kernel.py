"""Kernel ridge maps: :class:`KernelRidge` (exact or Nyström) and the cross-validated :class:`KernelRidgeCV`."""

from __future__ import annotations

import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.linalg as sla
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from objalign.errors import ObjalignError
from objalign.maps import _kernels
from objalign.maps import _nystroem as nys
from objalign.maps._blas import Blas
from objalign.maps._kernels import GAMMA_KERNELS, KernelBase, check_kernel, kernel_matrix
from objalign.maps._logo import Workspace, _plan, block_logo_residuals
from objalign.maps._ridge_stats import Moments, cv_r2_scores, ridge_from_moments
from objalign.maps._scoring import held_out_totals
from objalign.maps._search import build_cv_results, fold_scores, param_grid
from objalign.maps._splits import find_partition, resolve_splits
from objalign.maps._targets import factor_targets
from objalign.maps._validation import check_fit_input, check_grid, check_positive
from objalign.maps.threads import single_threaded_blas, small_blas

__all__ = ["KernelRidge", "KernelRidgeCV"]

_APPROX = ("auto", "exact", "nystroem")


def _check_common(est):
    check_kernel(est.kernel)
    if est.approx not in _APPROX:
        raise ObjalignError(f"approx={est.approx!r}; expected one of {', '.join(_APPROX)}")
    check_positive(est.n_components, "n_components", integer=True)
    check_positive(est.max_exact_samples, "max_exact_samples", integer=True)
    check_positive(est.degree, "degree", low=0, low_inclusive=True)
    check_positive(est.coef0, "coef0", low=-np.inf)


def _use_nystroem(est, n):
    return est.approx == "nystroem" or (est.approx == "auto" and n > est.max_exact_samples)


def _solve_kernel(K, alpha, Y, rebuild=None):
    """``(K + alpha I)^-1 Y`` as scikit-learn's ``_solve_cholesky_kernel`` (least squares if not SPD).

    With ``rebuild`` (a function returning ``K`` again), ``K`` itself is factorised in place -- no copy of
    an n x n matrix -- and rebuilt only for the least-squares fallback.
    """
    if rebuild is not None and K.dtype in (np.float32, np.float64) and (K.flags.c_contiguous or K.flags.f_contiguous):

        blas = Blas(K.dtype)
        A = K.T if K.flags.c_contiguous else K  # symmetric: the transpose of a C-ordered K is column-major
        A.flat[:: A.shape[0] + 1] += alpha
        if blas.potrf(A) == 0:
            Z = np.array(Y, dtype=K.dtype, order="F")  # (n, n_targets)
            blas.trsm(A, Z)
            blas.trsm(A, Z, trans=True)
            return Z
        K = rebuild()
    A = np.array(K, copy=True)
    A.flat[:: A.shape[0] + 1] += alpha
    try:
        return sla.solve(A, Y, assume_a="pos", overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:
        warnings.warn("Singular matrix in kernel ridge solve; using a least-squares solution.", stacklevel=3)
        A = np.array(K, copy=True)
        A.flat[:: A.shape[0] + 1] += alpha
        return sla.lstsq(A, Y, check_finite=False)[0]


def _n_workers(n_jobs, n_tasks):
    """Threads for ``n_jobs`` (scikit-learn convention: None = 1, -1 = all cores)."""

    if n_jobs is None:
        return 1
    cores = os.cpu_count() or 1
    k = cores + 1 + n_jobs if n_jobs < 0 else n_jobs
    return max(1, min(k, n_tasks))


# Time of a symmetric eigendecomposition, in flops of Cholesky-speed work per n^3 (measured on this
# project's 2-core machines: dsyevd(3000) ~ 3.3 s vs dpotrf-class BLAS-3 at ~55 GFLOP/s -> ~6.7).
_EIGH_COST = 6.7


def _exact_engine(part, n_alphas, r, dtype):
    """Pick the exact CV engine with the lower modelled cost for this grid.

    ``"blocks"``: shared block elimination per (alpha, gamma) (:mod:`objalign.maps._logo`).
    ``"eigh"``: one eigendecomposition of the full kernel per gamma, then the exact leave-group-out formula
    ``r_T = H_TT^-1 (H T)_T`` with ``H = (K + alpha I)^-1`` for each alpha at O(n^2 (b + r)) -- it wins for
    long alpha grids. float32 always uses blocks (``H`` of a float32 eigendecomposition is too inexact for
    small alphas).
    """

    sizes = np.diff(part.bounds)
    if sizes.size < 2 or dtype != np.float64:
        return "blocks"
    n = float(part.bounds[-1])
    _, plan = _plan(tuple(int(b) for b in sizes))
    per_alpha_eig = float((sizes.astype(float) ** 2).sum() * n + 2 * n * n * r + (sizes.astype(float) ** 3).sum() / 3)
    eig = _EIGH_COST * n**3 + n_alphas * per_alpha_eig
    return "eigh" if eig < n_alphas * plan else "blocks"


def _eig_prepare(K, T):
    """Eigendecomposition of ``K`` (n, n) and the targets ``T`` (n, r) in its basis.

    numpy's ``eigh`` (LAPACK ``syevd``, as scipy's ``driver="evd"``) releases the GIL, so the gammas of a
    group decompose in parallel threads.
    """
    lam, Q = np.linalg.eigh(K)
    return lam, Q, Q.T @ T


def _eig_logo_residuals(prep, bounds, alpha):
    """Held-out residuals of every fold block from one eigendecomposition (see :func:`_exact_engine`).

    ``r_b = H_bb^-1 (H T)_b`` with ``H = Q diag(1 / (lam + alpha)) Q'``; each ``H_bb = W W'`` with
    ``W = Q_b diag(1 / sqrt(lam + alpha))`` is one symmetric rank-k product. numpy's products and solves
    release the GIL.
    """
    lam, Q, QT = prep
    shifted = lam + alpha
    if not (shifted > 0).all():  # K + alpha I not numerically positive definite: the caller solves per fold
        raise np.linalg.LinAlgError("kernel + alpha I has a non-positive eigenvalue")
    d = 1.0 / shifted
    root = np.sqrt(d)
    HT = Q @ (d[:, None] * QT)
    out = []
    for f in range(len(bounds) - 1):
        W = Q[bounds[f] : bounds[f + 1]] * root
        out.append(np.linalg.solve(W @ W.T, HT[bounds[f] : bounds[f + 1]]))
    return out


def _pick_centres(n, m, random_state):
    rng = check_random_state(random_state)
    return np.sort(rng.choice(n, size=min(m, n), replace=False))


class _NystroemModel:
    """Fitted Nyström map: ``predict(X) = k(X, centres) @ proj`` evaluated in chunks."""

    def __init__(self, centres, proj, kernel, gamma, degree, coef0):
        self.centres, self.proj = centres, proj
        self.kernel, self.gamma, self.degree, self.coef0 = kernel, gamma, degree, coef0

    def predict(self, X):
        out = np.empty((X.shape[0], self.proj.shape[1]), dtype=np.result_type(X.dtype, self.proj.dtype))
        for s in range(0, X.shape[0], nys.CHUNK):
            block = KernelBase(X[s : s + nys.CHUNK], self.kernel, self.degree, self.coef0, Y=self.centres)
            Kc = block.matrix(self.gamma)
            out[s : s + nys.CHUNK] = Kc @ self.proj
        return out


def _fit_nystroem(X, Y, centres, alpha, kernel, gamma, degree, coef0):
    """Nyström kernel ridge fitted on all rows: returns the (m, n_targets) projection ``M w``."""
    Kmm = KernelBase(centres, kernel, degree, coef0).matrix(gamma)
    M = nys.normalization(Kmm)
    mom = nys.block_moments(X, lambda s, e: Y[s:e], centres, kernel, [gamma], degree, coef0, [0, X.shape[0]])[0][0]
    idx = np.arange(centres.shape[0])
    W, _ = ridge_from_moments(nys.project(mom, idx, M), alpha, fit_intercept=False)
    return M @ W


class _KernelBaseEstimator(MultiOutputMixin, RegressorMixin, BaseEstimator):
    def predict(self, X):
        """Map inputs to target space.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        Y : ndarray of shape (n_samples, n_targets) or (n_samples,) if fitted on 1-D ``y``
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        if self.approx_ == "nystroem":
            pred = self._nystroem_.predict(X)
        else:
            # values below u / n_fit change no prediction by more than u max|dual| (see _kernels' notes)
            K = kernel_matrix(X, self.X_fit_, kernel=self.kernel, gamma=self._gamma_used(), degree=self.degree,
                              coef0=self.coef0, kernel_params=getattr(self, "kernel_params", None),
                              floor=_kernels.solve_floor(self.X_fit_.shape[0], X.dtype))
            pred = K @ self.dual_coef_.reshape(self.dual_coef_.shape[0], -1)
        return pred.ravel() if self._ravel_ else pred

    def _store_fit(self, X, y, alpha, gamma, basis=None):
        """Fit on all rows; ``basis`` (a factorisation of the targets) lets the exact solve use ``r`` columns."""
        Y = (y.reshape(-1, 1) if y.ndim == 1 else y).astype(X.dtype, copy=False)
        self._ravel_ = y.ndim == 1
        if _use_nystroem(self, X.shape[0]):
            self.approx_ = "nystroem"
            idx = _pick_centres(X.shape[0], self.n_components, self.random_state)
            self.components_ = X[idx]
            self.component_indices_ = idx
            proj = _fit_nystroem(X, Y, X[idx], alpha, self.kernel, gamma, self.degree, self.coef0).astype(X.dtype)
            self._nystroem_ = _NystroemModel(X[idx], proj, self.kernel, gamma, self.degree, self.coef0)
        else:
            self.approx_ = "exact"
            floor = _kernels.solve_floor(X.shape[0], X.dtype)  # no subnormal number in the factorisation

            def kernel():
                return kernel_matrix(X, kernel=self.kernel, gamma=gamma, degree=self.degree, coef0=self.coef0,
                                     kernel_params=getattr(self, "kernel_params", None), floor=floor)

            if basis is not None and basis.Z is not None:  # (K + aI)^-1 Y = ((K + aI)^-1 T) Z, r << n_targets
                sol = _solve_kernel(kernel(), alpha, basis.T(dtype=X.dtype), rebuild=kernel)
                dual = (sol @ basis.Z).astype(X.dtype, copy=False)
            else:
                dual = _solve_kernel(kernel(), alpha, Y, rebuild=kernel)
            self.dual_coef_ = dual.ravel() if self._ravel_ else dual
            self.X_fit_ = X


class KernelRidge(_KernelBaseEstimator):
    """Kernel ridge regression as ``sklearn.kernel_ridge.KernelRidge``, with a Nyström mode for large ``n``.

    Solves ``(K + alpha I) A = Y`` (no intercept) and predicts ``k(X, X_fit) A``. With ``approx="nystroem"``
    (or ``"auto"`` and more than ``max_exact_samples`` rows) it fits kernel ridge with the Nyström kernel on
    ``n_components`` random training rows instead: memory O(n m), time O(n m^2).

    Parameters
    ----------
    alpha : float, default=1.0
        Penalty, ``> 0``.
    kernel : {"linear", "rbf", "laplacian", "polynomial", "cosine"}, default="linear"
        ``rbf`` is ``exp(-gamma ||x - y||^2)``.
    gamma : float, default=None
        Kernel coefficient for rbf, laplacian and polynomial; ``None`` means ``1 / n_features``.
    degree, coef0 : float
        Polynomial kernel ``(gamma x.y + coef0)^degree``.
    kernel_params : dict, default=None
        Extra keyword arguments for the kernel (exact mode only).
    approx : {"auto", "exact", "nystroem"}, default="auto"
    n_components : int, default=1000
        Number of Nyström centres.
    max_exact_samples : int, default=10000
        Above this many rows ``approx="auto"`` switches to Nyström (the exact kernel needs 8 n^2 bytes).
    random_state : int, RandomState or None
        Seeds the choice of Nyström centres.

    Attributes
    ----------
    approx_ : {"exact", "nystroem"}
    dual_coef_ : ndarray of shape (n_samples, n_targets) or (n_samples,)   (exact)
    X_fit_ : ndarray of shape (n_samples, n_features)                      (exact)
    components_ : ndarray of shape (m, n_features)                         (Nyström centres)
    """

    def __init__(self, alpha=1.0, kernel="linear", gamma=None, degree=3, coef0=1, kernel_params=None,
                 approx="auto", n_components=1000, max_exact_samples=10000, random_state=None):
        self.alpha = alpha
        self.kernel = kernel
        self.gamma = gamma
        self.degree = degree
        self.coef0 = coef0
        self.kernel_params = kernel_params
        self.approx = approx
        self.n_components = n_components
        self.max_exact_samples = max_exact_samples
        self.random_state = random_state

    def _gamma_used(self):
        return self.gamma

    def fit(self, X, y):
        """Fit the map.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)

        Returns
        -------
        self
        """
        _check_common(self)
        check_positive(self.alpha, "alpha")
        check_positive(self.gamma, "gamma", allow_none=True)
        X, y, _ = check_fit_input(self, X, y)
        self._store_fit(X, y, float(self.alpha), self.gamma)
        return self


class KernelRidgeCV(_KernelBaseEstimator):
    """Kernel ridge with ``alpha`` (and ``gamma``) chosen by K-fold cross-validation; exact and fast.

    ``mean_test_score`` equals ``GridSearchCV(sklearn.kernel_ridge.KernelRidge(kernel=kernel),
    {"alpha": alphas, "gamma": gammas}, cv=cv, scoring="r2")``'s up to rounding, the same parameters are
    chosen, and the best model is refitted on all data.

    How: the kernel's distances (or Gram matrix) are computed once for all samples; per gamma one
    elementwise pass gives the kernel; per (alpha, gamma) the held-out residuals of *all* folds come from one
    shared block elimination of ``[K + alpha I | T]`` (:mod:`objalign.maps._logo`), ``O(n^3 log k)`` instead
    of ``k`` Cholesky fits, in the input's precision (float32 LAPACK for float32 input); for long alpha
    grids (float64) one eigendecomposition of the kernel per gamma serves every alpha instead -- the engine
    with the lower modelled cost is used. Targets with few distinct rows are solved for the category
    indicator. In Nyström mode the per-fold statistics of the
    kernel features are accumulated in one streaming pass per data set (centres lying in a fold's test set
    are dropped for that fold, so no fold sees its test rows).

    Parameters
    ----------
    alphas : sequence of float, default=(0.1, 1.0, 10.0)
        Penalties, each ``> 0``.
    gammas : sequence of float, default=None
        Kernel coefficients (rbf, laplacian, polynomial), each ``> 0``; None means ``[1 / n_features]``.
        Not accepted for ``linear``/``cosine``, which have no gamma.
    kernel : {"linear", "rbf", "laplacian", "polynomial", "cosine"}, default="rbf"
    degree, coef0 : float
        Polynomial kernel parameters.
    cv : int, scikit-learn splitter or iterable of (train, test), default=5
    approx, n_components, max_exact_samples, random_state :
        As in :class:`KernelRidge`.
    n_jobs : int or None, default=None
        Exact mode: grid points evaluated concurrently in this many threads, each with one BLAS thread
        (None = 1 worker with the BLAS library's own threading; -1 = all cores). Each worker keeps its own
        elimination workspace for the whole search (up to about 2 n^2 floats, for 5 folds), and
        ``min(n_jobs, len(gammas))`` kernel matrices (n^2 each) are alive at once.

    Attributes
    ----------
    best_params_ : dict
        ``{"alpha": ..., "gamma": ...}`` (no ``gamma`` for linear/cosine).
    best_score_, best_index_, cv_results_, n_splits_ :
        As in ``GridSearchCV``.
    alpha_, gamma_ : float
    approx_ : {"exact", "nystroem"}
    """

    def __init__(self, alphas=(0.1, 1.0, 10.0), gammas=None, kernel="rbf", degree=3, coef0=1, cv=5,
                 approx="auto", n_components=1000, max_exact_samples=10000, random_state=None, n_jobs=None):
        self.alphas = alphas
        self.gammas = gammas
        self.kernel = kernel
        self.degree = degree
        self.coef0 = coef0
        self.cv = cv
        self.approx = approx
        self.n_components = n_components
        self.max_exact_samples = max_exact_samples
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _gamma_used(self):
        return self.gamma_

    def fit(self, X, y, groups=None):
        """Cross-validate the grid, then refit the best on all of ``X, y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        groups : array-like of shape (n_samples,), optional
            Group labels for group-aware splitters (e.g. image ids with ``GroupKFold``).

        Returns
        -------
        self
        """
        _check_common(self)
        alphas = check_grid(self.alphas, "alphas")
        has_gamma = self.kernel in GAMMA_KERNELS
        if not has_gamma and self.gammas is not None:
            raise ObjalignError(
                f"gammas={self.gammas!r} but kernel={self.kernel!r} has no gamma; expected gammas=None "
                "(or use kernel='rbf', 'laplacian' or 'polynomial')"
            )
        gammas = check_grid(self.gammas, "gammas", allow_none=True)
        X, y, groups = check_fit_input(self, X, y, groups, cv=self.cv)
        n = X.shape[0]
        if has_gamma and gammas is None:
            gammas = np.array([1.0 / X.shape[1]])
        splits = resolve_splits(self.cv, X, y, groups, n)
        Y = (y.reshape(-1, 1) if y.ndim == 1 else y).astype(X.dtype, copy=False)
        basis = factor_targets(Y)
        glist = list(gammas) if has_gamma else [None]

        tots, absmax = held_out_totals(Y, splits, basis)
        if _use_nystroem(self, n):
            scores = self._cv_nystroem(X, basis, splits, alphas, glist, tots, absmax)
        else:
            ss = self._cv_exact(X, basis, splits, alphas, glist)  # (n_alphas, n_gammas, n_folds, n_targets)
            scores = np.empty((len(alphas), len(glist), len(splits)))
            for f, (_, test) in enumerate(splits):
                flat = ss[:, :, f].reshape(-1, ss.shape[-1])
                scores[:, :, f] = fold_scores(flat, tots[f], len(test), absmax[f]).reshape(len(alphas), len(glist))
        scores = scores.reshape(len(alphas) * len(glist), len(splits))  # GridSearchCV order: alpha outer
        params = param_grid(alphas, gammas if has_gamma else None)
        self.cv_results_, self.best_index_ = build_cv_results(params, scores)
        self.best_params_ = params[self.best_index_]
        self.best_score_ = float(self.cv_results_["mean_test_score"][self.best_index_])
        self.alpha_ = self.best_params_["alpha"]
        self.gamma_ = self.best_params_.get("gamma")
        self.n_splits_ = len(splits)
        self._store_fit(X, y, self.alpha_, self.gamma_, basis)
        return self

    # -- exact: shared distances, shared block elimination -------------------------------------------------
    def _cv_exact(self, X, basis, splits, alphas, glist):
        n = X.shape[0]
        dtype = X.dtype
        part = find_partition(splits, n)
        order = part.order if part is not None else np.arange(n)
        base = KernelBase(X[order], self.kernel, self.degree, self.coef0)
        # kernel values below u / n are flushed: the solution is unchanged at the working precision and no
        # product of small values underflows into subnormal numbers inside BLAS (see _kernels' notes)
        floor = _kernels.solve_floor(n, dtype)
        T = basis.T(order, dtype=dtype)
        Z = None if basis.Z is None else np.asarray(basis.Z, dtype=np.float64)
        ss = np.empty((len(alphas), len(glist), len(splits), basis.Y.shape[1]))
        workers = _n_workers(self.n_jobs, len(alphas) * len(glist))
        engine = _exact_engine(part, len(alphas), T.shape[1], dtype) if part is not None else "perfold"
        eig_cache = {}
        local = threading.local()  # one elimination workspace per worker thread, for this fit only

        def point(K, alpha):
            res = None
            try:
                if engine == "eigh":
                    res = _eig_logo_residuals(eig_cache[id(K)], part.bounds, float(alpha))
                elif engine == "blocks":
                    if not hasattr(local, "ws"):
                        local.ws = Workspace(dtype)
                    res = block_logo_residuals(K, T, part.bounds, float(alpha), workspace=local.ws)
            except np.linalg.LinAlgError:
                res = None
            if res is None:  # folds that do not partition the data, or a numerically singular block
                pos = np.empty(n, dtype=np.intp)
                pos[order] = np.arange(n)
                res = []
                for train, test in splits:
                    tr, te = pos[train], pos[test]
                    dual = _solve_kernel(K[np.ix_(tr, tr)], float(alpha), T[tr])
                    res.append(T[te] - K[np.ix_(te, tr)] @ dual)
            out = np.empty((len(splits), basis.Y.shape[1]))
            for f, R in enumerate(res):
                R64 = np.asarray(R, dtype=np.float64)
                if Z is None:
                    out[f] = np.einsum("ij,ij->j", R64, R64)
                else:
                    out[f] = np.einsum("aj,aj->j", (R64.T @ R64) @ Z, Z)
            return out

        def prepare(K):
            if engine == "eigh":
                eig_cache[id(K)] = _eig_prepare(K, T)
            return K

        buf = None
        if workers == 1:
            for g, gamma in enumerate(glist):
                K = prepare(base.matrix(gamma, out=buf, floor=floor))
                buf = K if K is not base.base else None
                for a, alpha in enumerate(alphas):
                    ss[a, g] = point(K, alpha)
                eig_cache.clear()
            return ss
        # Grid points run concurrently, one BLAS thread each: no OpenBLAS thread-team synchronisation, which
        # stalls badly on a shared machine, and near-perfect scaling (each point is O(n^3) of BLAS-3 work).


        # The points of `workers` gammas at a time go to one pool: workers x n_alphas tasks, so no worker idles
        # at a group boundary, and only `workers` kernels are alive (each group reuses the last one's
        # buffers: on a VM, first-touching fresh memory costs as much as the arithmetic on it).
        per_k = base.base.nbytes
        group = max(1, min(len(glist), workers, int(2**30 // max(per_k, 1))))
        bufs = [None] * group
        with single_threaded_blas(), ThreadPoolExecutor(workers) as pool:
            for g0 in range(0, len(glist), group):
                gs = list(range(g0, min(g0 + group, len(glist))))

                def build(i):
                    K = base.matrix(glist[gs[i]], out=bufs[i], floor=floor)
                    if K is not base.base:
                        bufs[i] = K
                    return prepare(K)

                Ks = dict(zip(gs, pool.map(build, range(len(gs)))))
                tasks = [(g, a) for g in gs for a in range(len(alphas))]
                for (g, a), out in zip(tasks, pool.map(lambda t: point(Ks[t[0]], alphas[t[1]]), tasks)):
                    ss[a, g] = out
                eig_cache.clear()
        return ss

    # -- Nyström: one streaming pass of per-fold moments per data set ------------------------------------
    def _cv_nystroem(self, X, basis, splits, alphas, glist, tots, absmax):
        n = X.shape[0]
        part = find_partition(splits, n)
        cidx = _pick_centres(n, self.n_components, self.random_state)
        centres = X[cidx]

        def targets(rows):
            return lambda s, e: basis.T(rows[s:e])

        if part is not None:
            order = part.order
            blocks = list(part.bounds)
            if blocks[0] != 0:
                blocks = [0] + blocks
                offset = 1
            else:
                offset = 0
            mom = nys.block_moments(X, targets(order), centres, self.kernel, glist, self.degree, self.coef0, blocks,
                                    rows=order)
            fold_rows = [order[part.bounds[f] : part.bounds[f + 1]] for f in range(len(splits))]
        else:
            mom = None
            fold_rows = [test for _, test in splits]
        scores = np.empty((len(alphas), len(glist), len(splits)))
        in_test = np.zeros(n, dtype=bool)
        with small_blas(cidx.size):
            self._nystroem_scores(X, basis, splits, alphas, glist, tots, absmax, mom, offset if mom is not None else 0,
                                  fold_rows, cidx, centres, in_test, targets, scores)
        return scores

    def _nystroem_scores(self, X, basis, splits, alphas, glist, tots, absmax, mom, offset, fold_rows, cidx, centres,
                         in_test, targets, scores):
        factorised = basis.Z is not None
        for f, (train, test) in enumerate(splits):
            in_test[:] = False
            in_test[fold_rows[f]] = True
            keep = np.flatnonzero(~in_test[cidx])
            if keep.size == 0:
                warnings.warn(
                    f"all {cidx.size} Nyström centres fall in the test set of fold {f}; using them anyway "
                    "(raise n_components to keep the test rows out of the feature map)",
                    stacklevel=2,
                )
                keep = np.arange(cidx.size)
            if mom is None:
                tr_m = nys.block_moments(X, targets(train), centres, self.kernel, glist, self.degree,
                                         self.coef0, [0, train.size], rows=train)
                te_m = nys.block_moments(X, targets(test), centres, self.kernel, glist, self.degree,
                                         self.coef0, [0, test.size], rows=test)
            for g, gamma in enumerate(glist):
                if mom is not None:
                    total = mom[g][0]
                    for m_ in mom[g][1:]:
                        total = total + m_
                    test_m = mom[g][f + offset]
                    train_m = total - test_m
                else:
                    train_m, test_m = tr_m[g][0], te_m[g][0]
                Kmm = KernelBase(centres[keep], self.kernel, self.degree, self.coef0).matrix(gamma)
                M = nys.normalization(Kmm)
                tr_p = nys.project(train_m, keep, M)
                te_p = nys.project(test_m, keep, M)
                if not factorised:
                    tr_p = Moments(tr_p.G, tr_p.E, tr_p.s, tr_p.t, np.diag(tr_p.TT).copy(), tr_p.n)
                    te_p = Moments(te_p.G, te_p.E, te_p.s, te_p.t, np.diag(te_p.TT).copy(), te_p.n)
                scores[:, g, f] = cv_r2_scores([(tr_p, te_p)], alphas, False, basis.Z, [tots[f]], [absmax[f]])[:, 0]
