"""The hyperparameter choice of :class:`RidgeCV` / :class:`KernelRidgeCV` for many relabellings of one data set.

A selection-inclusive permutation null refits the whole procedure -- the grouped CV search included -- for every
permutation of the training image-label pairing. The features, the groups and therefore the CV folds stay as
they are; only the category of each row moves. Targets are one text embedding per category, ``Y = T Z`` with
``T`` the (n, C) category indicator, so everything that depends on the features is computed once and each
permutation costs products with its indicator:

- **Ridge** (with intercept): per fold, the eigendecomposition ``C = V diag(lam) V'`` of the centred training
  Gram matrix and the rows ``U = (X - mean_train) V`` do not depend on the targets. Per alpha, the held-out
  predictions of centred training targets are ``H' Y_tr`` with ``H = U_tr diag(1 / (lam + alpha)) U_te'``
  (n_train x n_fold, computed once), so a permutation's held-out residuals in category space are its test
  indicator, centred on its training category frequencies, minus per-category sums of rows of ``H`` (one
  sparse product), and the residual Gram ``R' R`` (C x C) is the same object as kernel ridge's below.
- **Kernel ridge**: the held-out residuals of fold ``f`` are ``R_f = A_f T`` with the residual operator
  ``A_f = [I_f | -K_fR (K_RR + alpha I)^-1]`` (rows: fold ``f``; columns: all training rows). ``A_f`` is
  computed once per (alpha, gamma) with one Cholesky per fold; a permutation's residuals are its fold indicator
  minus per-category sums of rows of ``X_f = (K_RR + alpha I)^-1 K_Rf`` (one sparse product, about ``0.8 n^2``
  additions per grid point for 5 folds), then ``R_f' R_f`` (C x C).

Neither Gram depends on the targets: several target sets (``Z`` a list, e.g. every text layer of a layer x
layer matrix) share them, and each contracts them with its own ``M = Z diag(1 / ss_tot) Z'``.

Both score each fold with scikit-learn's ``"r2"`` (uniform over the ``q`` text dimensions):
``1 - sum_j ||R z_j||^2 / ss_tot_j / q`` with ``ss_tot`` of the permuted held-out targets from category counts;
the grid point with the best mean over folds is chosen as ``GridSearchCV`` chooses it (first of the best).

Memory is bounded independently of the number of permutations ``B``: permutations are processed in chunks
(the per-permutation weight matrices of one chunk take at most ``_WEIGHTS_BYTES``), and the kernel path keeps
one kernel matrix and, per worker thread, one residual operator (``n^2`` floats each) alive.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.linalg as sla
from scipy import sparse

from objalign.errors import ObjalignError
from objalign.maps._blas import Blas
from objalign.maps._kernels import KernelBase, solve_floor
from objalign.maps._splits import find_partition
from objalign.maps.kernel import _solve_kernel
from objalign.maps.threads import single_threaded_blas

__all__ = ["ridge_choices", "kernel_choices", "select_best"]

_WEIGHTS_BYTES = 256 * 2**20  # per-chunk (permutation, fold) weight matrices, C x C each
_GATHER_BYTES = 32 * 2**20  # per-category sums of one sparse product
_RIDGE_CHUNK_BYTES = 32 * 2**20  # (chunk, p, p) products of the ridge moments engine
_TILE_BYTES = 512 * 2**10  # columns of a residual operator summed at once: they stay in L2 while a chunk streams


def select_best(scores):
    """Index of the grid point ``GridSearchCV`` picks from per-fold scores.

    Parameters
    ----------
    scores : ndarray of shape (B, n_points, n_folds)
        NaN for folds scikit-learn scores as NaN (fewer than two held-out rows).

    Returns
    -------
    best : ndarray of shape (B,), int
        The first grid point with the highest mean score (NaN means rank last; all NaN gives 0), as
        :func:`objalign.maps._search.build_cv_results`.
    """
    mean = scores.mean(axis=2)
    filled = np.where(np.isnan(mean), -np.inf, mean)
    best = np.argmax(filled, axis=1)
    best[np.isnan(mean).all(axis=1)] = 0
    return best


def _indicator(labels, C):
    """Sparse (Bc * C, n) transposed indicators of a chunk of label vectors ``labels`` (Bc, n)."""
    Bc, n = labels.shape
    rows = (labels + (np.arange(Bc) * C)[:, None]).ravel()
    indptr_sorted = np.argsort(rows, kind="stable")
    counts = np.bincount(rows, minlength=Bc * C)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    cols = np.tile(np.arange(n), Bc)[indptr_sorted]
    return sparse.csr_matrix((np.ones(rows.size), cols, indptr), shape=(Bc * C, n))


class _FoldWeights:
    """Per (permutation, fold): category counts of the held-out rows and, per target set, ``M = Z diag(1 / ss_tot) Z'``.

    Attributes
    ----------
    counts : list (one per fold) of (Bc, C) held-out category counts (they do not depend on the targets)
    M : list (one per target set) of lists (one per fold) of (Bc, C, C)
    ok : list (one per target set) of (Bc,) bool
        False where a held-out output is (nearly) constant: scikit-learn's exact arithmetic decides those
        scores, so the caller refits that permutation from scratch instead.
    """

    def __init__(self, labels, tests, Zs):
        Bc = labels.shape[0]
        C = Zs[0].shape[0]
        self.counts = []
        for test in tests:
            lab = labels[:, test]
            cnt = np.bincount((lab + (np.arange(Bc) * C)[:, None]).ravel(), minlength=Bc * C)
            self.counts.append(cnt.reshape(Bc, C).astype(np.float64))
        self.M, self.ok = [], []
        iu = np.triu_indices(C)
        packed = np.empty((C, C), dtype=np.intp)  # (c, d) -> column of the upper triangle (M is symmetric)
        packed[iu] = np.arange(len(iu[0]))
        packed.T[iu] = packed[iu]
        for Z in Zs:
            # the totals are shift-invariant: centring Z on its category mean first keeps a dimension with a large
            # common offset (outlier dimensions of transformer states) from cancelling in s2 - s1^2 / n
            Zc = Z - Z.mean(axis=0)
            Z2 = Zc * Zc
            P = Z.T[:, iu[0]] * Z.T[:, iu[1]]  # (q, C (C + 1) / 2): M = w @ P for weights w (q,)
            ok = np.ones(Bc, dtype=bool)
            Ms = []
            for test, cnt in zip(tests, self.counts):
                nt = max(len(test), 1)
                s1, s2 = cnt @ Zc, cnt @ Z2  # (Bc, q)
                tot = s2 - s1 * s1 / nt
                near = (tot < 1e-3 * s2).any(axis=1)  # cancellation left: the centred sum, as held_out_totals does
                for b in np.flatnonzero(near):
                    tot[b] = cnt[b] @ (Zc - s1[b] / nt) ** 2
                ok &= (tot > 1e-9 * s2).all(axis=1)
                w = np.where(tot > 0, 1.0 / np.where(tot > 0, tot, 1.0), 0.0)
                Ms.append(np.ascontiguousarray((w @ P)[:, packed]))  # C order, as every caller expects
            self.M.append(Ms)
            self.ok.append(ok)

    def take(self, index) -> "_FoldWeights":
        """The rows ``index`` (a copy)."""
        out = object.__new__(_FoldWeights)
        out.counts = [c[index] for c in self.counts]
        out.M = [[m[index] for m in Ms] for Ms in self.M]
        out.ok = [o[index] for o in self.ok]
        return out

    def append(self, other: "_FoldWeights") -> "_FoldWeights":
        """These rows followed by ``other``'s (same folds and target sets)."""
        out = object.__new__(_FoldWeights)
        out.counts = [np.concatenate([a, b]) for a, b in zip(self.counts, other.counts)]
        out.M = [[np.concatenate([a, b]) for a, b in zip(Ma, Mb)] for Ma, Mb in zip(self.M, other.M)]
        out.ok = [np.concatenate([a, b]) for a, b in zip(self.ok, other.ok)]
        return out

    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.counts) + sum(m.nbytes for Ms in self.M for m in Ms)


class WeightCache:
    """:class:`_FoldWeights` of label rows already computed, for the searches of one fit.

    Ridge's and kernel ridge's searches on the same training rows share their CV folds, the target sets and all
    but a few of their relabellings (the real pairing and every permutation of the selection null): a row's
    weights depend on its labels, the folds and the targets only, so each is computed once. Used only while the
    folds and targets are those of the first call (checked), and up to ``max_bytes`` of stored weights.
    """

    def __init__(self, max_bytes: int = _WEIGHTS_BYTES):
        self.max_bytes = max_bytes
        self.tests = self.Zs = None
        self.store, self.rows = None, {}  # the rows computed so far; row labels (bytes) -> row of store

    def _same(self, tests, Zs) -> bool:
        if self.tests is None:
            self.tests, self.Zs = [np.asarray(t) for t in tests], [np.asarray(z) for z in Zs]
            return True
        return (len(tests) == len(self.tests) and all(np.array_equal(a, b) for a, b in zip(tests, self.tests))
                and len(Zs) == len(self.Zs) and all(a.shape == b.shape and np.array_equal(a, b)
                                                     for a, b in zip(Zs, self.Zs)))

    def get(self, labels, tests, Zs) -> _FoldWeights:
        """The weights of the label rows ``labels`` (Bc, n)."""
        if not self._same(tests, Zs):
            return _FoldWeights(labels, tests, Zs)
        keys = [row.tobytes() for row in labels]
        first: dict[bytes, int] = {}  # rows not yet computed, a repeated row once
        for b, k in enumerate(keys):
            if k not in self.rows:
                first.setdefault(k, b)
        missing = list(first.values())
        if missing:
            fresh = _FoldWeights(labels[missing], tests, Zs)
            held = 0 if self.store is None else self.store.nbytes()
            if held + fresh.nbytes() > self.max_bytes:
                return fresh if len(missing) == len(keys) else _FoldWeights(labels, tests, Zs)
            offset = 0 if self.store is None else len(self.store.ok[0])
            for i, b in enumerate(missing):
                self.rows[keys[b]] = offset + i
            self.store = fresh if self.store is None else self.store.append(fresh)
        return self.store.take(np.asarray([self.rows[k] for k in keys]))


def _weights(labels, tests, Zs, cache: WeightCache | None) -> _FoldWeights:
    return _FoldWeights(labels, tests, Zs) if cache is None else cache.get(labels, tests, Zs)


def _tiles(A, tile):
    """Contiguous column tiles of ``A`` (n, k), ``tile`` columns each."""
    return [np.ascontiguousarray(A[:, c0 : c0 + tile]) for c0 in range(0, A.shape[1], tile)]


def _category_sums(Tt, tiles):
    """``Tt @ A`` (sparse (m, n) times dense (n, k) given as :func:`_tiles`): one tile at a time stays in cache."""
    out = np.empty((Tt.shape[0], sum(t.shape[1] for t in tiles)))
    c0 = 0
    for t in tiles:
        out[:, c0 : c0 + t.shape[1]] = Tt @ t
        c0 += t.shape[1]
    return out


def _tile(n):
    """Columns per tile: ``n`` rows of float64 within ``_TILE_BYTES``, a power of two in [8, 512]."""
    return int(np.clip(2 ** int(np.log2(max(_TILE_BYTES // (8 * n), 1))), 8, 512))


def _chunks(B, per_perm_bytes, limit):
    step = max(1, min(B, int(limit // max(per_perm_bytes, 1))))
    return [(s, min(B, s + step)) for s in range(0, B, step)]


def _contract(Q, M):
    """``<Q[b], M[b]>`` for every row of two (Bc, C, C) C-contiguous stacks: one BLAS dot per row (about 2.5x the
    speed of the equivalent einsum at C = 30); each row's value depends on its own two matrices only."""
    Bc, C = Q.shape[0], Q.shape[1]
    return np.matmul(Q.reshape(Bc, 1, C * C), M.reshape(Bc, C * C, 1))[:, 0, 0]


def _fold_r2(s, q, n_test):
    """scikit-learn's uniform R² from the weighted residual sum ``s`` (NaN for fewer than two held-out rows)."""
    return np.full_like(s, np.nan) if n_test < 2 else 1.0 - s / q


def _target_list(Z):
    """``(list of (C, q_k) float64 arrays, whether one array was given)``."""
    single = isinstance(Z, np.ndarray) or (len(Z) and np.ndim(Z[0]) == 1)
    Zs = [Z] if single else list(Z)
    return [np.asarray(z, dtype=np.float64) for z in Zs], single


def _finish(scores, refit, single, return_scores):
    """Per target set: the chosen grid index (-1 to refit) and, optionally, the scores."""
    best = [np.where(r, -1, select_best(s)) for s, r in zip(scores, refit)]
    if single:
        best, scores = best[0], scores[0]
    return (best, scores) if return_scores else best


def ridge_choices(X, codes, Z, splits, alphas, perms, return_scores=False, engine="auto", cache=None):
    """Alpha index :class:`RidgeCV` (with intercept) picks for every relabelling ``codes[perms[b]]``.

    Parameters
    ----------
    X : ndarray of shape (n, p)
    codes : ndarray of shape (n,), int
        Category (row of ``Z``) of each training row.
    Z : ndarray of shape (C, q), or a list of such arrays (q may differ)
        Category text embeddings (targets are ``Z[codes]``). With a list, every target set is scored on the
        same permutations and the feature-side work (eigendecompositions, per-category sums of the rows) is
        done once; each set only contracts it with its own weights, in the same arithmetic as alone.
    splits : list of (train, test) index arrays
        The CV folds (they depend on the groups only, so every permutation shares them).
    alphas : ndarray of shape (n_alphas,)
    perms : ndarray of shape (B, n), int
        Permutation ``b`` gives row ``i`` the category of row ``perms[b, i]`` (the identity gives the choice
        on the real pairing).
    engine : {"auto", "moments", "residuals"}
        ``moments`` contracts each target set's weights with per-category sums of the rows of ``U`` in the
        (p x p) eigenbasis (``O(p^2 C)`` per permutation, fold and target set); ``residuals`` builds the
        category-space residual Gram of every alpha (``O(alpha n_train n_fold + alpha C^2 n_fold)`` per
        permutation and fold, shared by every target set, plus ``H`` once per alpha). ``auto`` takes the one
        with fewer operations for this problem; both give the same scores up to rounding.

    Returns
    -------
    best : ndarray of shape (B,), int (a list of them, one per target set, when ``Z`` is a list)
        Index into ``alphas``; -1 where a held-out output is constant (refit those from scratch).
    scores : ndarray of shape (B, n_alphas, n_folds) (a list when ``Z`` is a list)
        Only with ``return_scores``: every fold's R² (those of the -1 rows are not meaningful).
    """
    X = np.asarray(X, dtype=np.float64)
    Zs, single = _target_list(Z)
    alphas = np.asarray(alphas, dtype=np.float64)
    C = Zs[0].shape[0]
    B = perms.shape[0]
    folds = []
    for train, test in splits:
        mx = X[train].mean(axis=0)
        Xc = X[train] - mx
        lam, V = sla.eigh(Xc.T @ Xc, check_finite=False, driver="evd")
        folds.append((train, test, lam, Xc @ V, (X[test] - mx) @ V))
    if engine == "auto":
        p, A = X.shape[1], len(alphas)
        moments = len(Zs) * len(splits) * B * (p * p * (C + A) + C * C * p)
        # a sparse per-category addition costs about five BLAS flops: measured on the demo's held-out-image and
        # held-out-category folds with 1, 2 and 6 target sets (bench/matrix.py), this picks the faster engine in all
        residuals = sum(A * (len(tr) * len(te) * (5 * B + p) + B * C * C * len(te)) for tr, te in splits)
        engine = "moments" if moments < residuals else "residuals"
    score = _ridge_moment_scores if engine == "moments" else _ridge_residual_scores
    scores, refit = score(folds, codes, Zs, alphas, perms, _tile(X.shape[0]), cache)
    return _finish(scores, refit, single, return_scores)


def _ridge_moment_scores(folds, codes, Zs, alphas, perms, tile, cache=None):
    """Per target set: (B, n_alphas, n_folds) scores and the (B,) permutations to refit, from per-category sums
    of the rows of ``U`` (see :func:`ridge_choices`)."""
    C, B, p = Zs[0].shape[0], perms.shape[0], folds[0][3].shape[1]
    total = np.bincount(codes, minlength=C)[None, :]
    prepared = []
    for train, test, lam, Utr, Ute in folds:
        F = 1.0 / (lam[None, :] + alphas[:, None])  # (n_alphas, p)
        G = Ute.T @ Ute
        # f' (G o K) f = <(f f') o G, K>: one (p^2, n_alphas) product per chunk serves every alpha
        W = (F[:, :, None] * F[:, None, :] * G[None]).reshape(len(alphas), p * p)
        prepared.append(dict(train=train, test=test, Utr=_tiles(Utr, tile), Ute=_tiles(Ute, tile), W=W,
                             u=Ute.sum(axis=0), F=F))
    scores = [np.empty((B, len(alphas), len(folds))) for _ in Zs]
    refit = [np.zeros(B, dtype=bool) for _ in Zs]
    for w0, w1 in _chunks(B, len(folds) * C * C * 8 * (1 + len(Zs)), _WEIGHTS_BYTES):
        weights = _weights(codes[perms[w0:w1]], [fd["test"] for fd in prepared], Zs, cache)
        for s0, s1 in _chunks(w1 - w0, p * p * 8 * 3, _RIDGE_CHUNK_BYTES):  # (chunk, p, p) products stay small
            labels = codes[perms[w0 + s0 : w0 + s1]]
            Bc = s1 - s0
            for f, fd in enumerate(prepared):
                train, test = fd["train"], fd["test"]
                nR, nT = len(train), len(test)
                # per-category sums of the rows of U = (X - mean_train) V: training rows (= V'B, transposed: the
                # training rows of U sum to zero, so the targets need no centring) and test rows
                Bpt = _category_sums(_indicator(labels[:, train], C), fd["Utr"]).reshape(Bc, C, p)
                E_te = _category_sums(_indicator(labels[:, test], C), fd["Ute"]).reshape(Bc, C, p)
                cnt_te = weights.counts[f][s0:s1]
                mt = (total - cnt_te) / nR
                Ecpt = E_te - mt[:, :, None] * fd["u"][None, None, :]
                for k, z in enumerate(Zs):  # the target-dependent contraction
                    M = weights.M[k][f][s0:s1]
                    Mm = np.einsum("bcd,bd->bc", M, mt)
                    # tr(TTc M) for the test targets centred on the training means
                    t0 = (np.einsum("bc,bcc->b", cnt_te, M) - 2 * np.einsum("bc,bc->b", cnt_te, Mm)
                          + nT * np.einsum("bc,bc->b", mt, Mm))
                    BMt = np.matmul(M, Bpt)  # (Bc, C, p)
                    h = np.einsum("bck,bck->bk", Ecpt, BMt)
                    K2 = np.matmul(np.ascontiguousarray(BMt.transpose(0, 2, 1)), Bpt)  # (Bc, p, p)
                    s = t0[:, None] - 2 * h @ fd["F"].T + K2.reshape(Bc, p * p) @ fd["W"].T
                    scores[k][w0 + s0 : w0 + s1, :, f] = _fold_r2(s, z.shape[1], nT)
        for k in range(len(Zs)):
            refit[k][w0:w1] = ~weights.ok[k]
    return scores, refit


def _ridge_residual_scores(folds, codes, Zs, alphas, perms, tile, cache=None):
    """Per target set: (B, n_alphas, n_folds) scores and the (B,) permutations to refit, from category-space
    residual Grams shared by every target set (see :func:`ridge_choices`)."""
    C, B = Zs[0].shape[0], perms.shape[0]
    scores = [np.empty((B, len(alphas), len(folds))) for _ in Zs]
    refit = [np.zeros(B, dtype=bool) for _ in Zs]
    total = np.bincount(codes, minlength=C)[None, :]
    for w0, w1 in _chunks(B, len(folds) * C * C * 8 * (1 + len(Zs)), _WEIGHTS_BYTES):
        labels = codes[perms[w0:w1]]
        weights = _weights(labels, [f[1] for f in folds], Zs, cache)
        for f, (train, test, lam, Utr, Ute) in enumerate(folds):
            nR, nT = len(train), len(test)
            mt = (total - weights.counts[f]) / nR  # (Bc, C) training category frequencies
            gather = _chunks(w1 - w0, C * max(nT, 1) * 8 * 2, _GATHER_BYTES)
            indicators = [_indicator(labels[g0:g1][:, train], C) for g0, g1 in gather]
            own = np.arange(nT)
            for a, alpha in enumerate(alphas):
                # H = U_tr diag(1 / (lam + alpha)) U_te': held-out predictions are H' (centred training targets)
                tiles = _tiles(Utr @ (Ute / (lam + alpha)).T, tile)
                for (g0, g1), Tt in zip(gather, indicators):
                    Rt = _category_sums(Tt, tiles).reshape(g1 - g0, C, nT)  # P = T_tr' H (per-category sums)
                    np.negative(Rt, out=Rt)
                    Rt -= mt[g0:g1, :, None]  # residuals^T: (T_te - 1 m')' - P, m the training means
                    Rt[np.arange(g1 - g0)[:, None], labels[g0:g1][:, test], own] += 1.0
                    Q = np.matmul(Rt, Rt.transpose(0, 2, 1))  # (chunk, C, C): the only per-permutation Gram
                    for j, z in enumerate(Zs):
                        s = _contract(Q, weights.M[j][f][g0:g1])
                        scores[j][w0 + g0 : w0 + g1, a, f] = _fold_r2(s, z.shape[1], nT)
        for j in range(len(Zs)):
            refit[j][w0:w1] = ~weights.ok[j]
    return scores, refit


def _residual_operators(K, bounds, alpha, blas):
    """Held-out residual operators of every fold, for kernel ridge with penalty ``alpha``.

    Parameters
    ----------
    K : ndarray of shape (n, n)
        Kernel matrix in fold order (float64).
    bounds : sequence of int
        Fold ``f`` is rows ``bounds[f]:bounds[f + 1]``; rows before ``bounds[0]`` are never held out.

    Returns
    -------
    ops : list of ndarray, fold ``f`` of shape (n - n_f, n_f), column-major
        ``X_f = (K_RR + alpha I)^-1 K_Rf`` over the rows ``R`` outside fold ``f`` (in order): the residuals of
        fold ``f`` for targets ``T`` are ``T_f - X_f' T_R``.
    """

    n = K.shape[0]
    ops = []
    for f in range(len(bounds) - 1):
        s, e = int(bounds[f]), int(bounds[f + 1])
        rest = np.r_[0:s, e:n]
        block = np.arange(s, e)
        A = np.asfortranarray(K[np.ix_(rest, rest)])
        A[np.diag_indices(rest.size)] += alpha
        rhs = np.asfortranarray(K[np.ix_(rest, block)])
        if blas.potrf(A) == 0:
            blas.trsm(A, rhs)
            blas.trsm(A, rhs, trans=True)
        else:  # not numerically positive definite: the same least-squares fallback as the estimator
            rhs = _solve_kernel(K[np.ix_(rest, rest)], alpha, K[np.ix_(rest, block)])
        ops.append(rhs)
    return ops


def kernel_choices(X, codes, Z, splits, alphas, gammas, perms, kernel="rbf", degree=3, coef0=1, n_jobs=1,
                   return_scores=False, cache=None):
    """Grid index :class:`KernelRidgeCV` (exact mode) picks for every relabelling ``codes[perms[b]]``.

    Parameters
    ----------
    X : ndarray of shape (n, p)
    codes, Z, splits, perms :
        As in :func:`ridge_choices` (``Z`` one array or a list of them: the kernel matrices, Cholesky factors,
        residual operators and per-permutation residual Grams are then computed once for every target set);
        ``splits`` must partition the rows (as ``GroupKFold`` does).
    alphas, gammas : ndarray
        The grid; index ``a * len(gammas) + g`` as ``GridSearchCV`` orders it (alpha outer).
    kernel, degree, coef0 :
        As in :class:`KernelRidgeCV` (gammas must be given, one or more).
    n_jobs : int
        Alphas of one gamma handled in this many threads (one BLAS thread each); each keeps one residual
        operator (``n^2`` floats) alive.

    Returns
    -------
    best : ndarray of shape (B,), int (a list of them when ``Z`` is a list)
        Grid index; -1 where a held-out output is constant (refit those from scratch).
    scores : ndarray of shape (B, n_points, n_folds) (a list when ``Z`` is a list)
        Only with ``return_scores``.
    """


    X = np.asarray(X, dtype=np.float64)
    Zs, single = _target_list(Z)
    alphas = np.asarray(alphas, dtype=np.float64)
    n = X.shape[0]
    part = find_partition(splits, n)
    if part is None:
        raise ObjalignError("the selection null of kernel ridge needs CV folds that partition the training rows "
                            "(e.g. GroupKFold); use align.null: fixed with other splitters")
    order, bounds = part.order, [int(b) for b in part.bounds]
    base = KernelBase(X[order], kernel, degree, coef0)
    workers = max(1, min(int(n_jobs or 1), len(alphas)))
    tile = _tile(n)
    with single_threaded_blas(), ThreadPoolExecutor(workers) as pool:
        scores, refit = _kernel_scores(base, order, bounds, codes, Zs, splits, alphas, gammas, perms, tile, pool,
                                       cache)
    return _finish(scores, refit, single, return_scores)


def _kernel_scores(base, order, bounds, codes, Zs, splits, alphas, gammas, perms, tile, pool, cache=None):
    """Per target set: (B, n_points, n_folds) scores and the (B,) permutations to refit (see
    :func:`kernel_choices`). The residual Grams ``Q`` (C x C per permutation and fold) do not depend on the
    targets: each is computed once and contracted with every set's weights."""

    B, k, ng = perms.shape[0], len(splits), len(gammas)
    C = Zs[0].shape[0]
    floor = solve_floor(base.base.shape[0], np.float64)
    sizes = np.diff(bounds)
    scores = [np.empty((B, len(alphas) * ng, k)) for _ in Zs]
    refit = [np.zeros(B, dtype=bool) for _ in Zs]
    for s0, s1 in _chunks(B, k * C * C * 8 * (1 + len(Zs)), _WEIGHTS_BYTES):
        labels = codes[perms[s0:s1]]
        weights = _weights(labels, [t for _, t in splits], Zs, cache)
        lab_ord = labels[:, order]
        gather = _chunks(s1 - s0, C * int(sizes.max()) * 8, _GATHER_BYTES)
        n = lab_ord.shape[1]
        # per fold and gather chunk: the indicator of the rows outside the fold, and the fold's own labels
        rest = [np.r_[0 : bounds[f], bounds[f + 1] : n] for f in range(k)]
        indicators = [[_indicator(lab_ord[g0:g1][:, rest[f]], C) for g0, g1 in gather] for f in range(k)]

        def point(K, a):
            ops = _residual_operators(K, bounds, float(alphas[a]), Blas(np.float64))
            res = np.empty((len(Zs), s1 - s0, k))
            for f in range(k):
                Q = np.empty((s1 - s0, C, C))
                tiles = _tiles(ops[f], tile)
                ops[f] = None
                own = np.arange(sizes[f])
                for (g0, g1), Tt in zip(gather, indicators[f]):
                    Rt = _category_sums(Tt, tiles).reshape(g1 - g0, C, -1)  # residuals^T: T_f' - T_R' X_f
                    np.negative(Rt, out=Rt)
                    Rt[np.arange(g1 - g0)[:, None], lab_ord[g0:g1, bounds[f] : bounds[f + 1]], own] += 1.0
                    Q[g0:g1] = np.matmul(Rt, Rt.transpose(0, 2, 1))
                for j, z in enumerate(Zs):
                    res[j, :, f] = _fold_r2(_contract(Q, weights.M[j][f]), z.shape[1], sizes[f])
            return res

        for g, gamma in enumerate(gammas):
            K = base.matrix(float(gamma), floor=floor)  # as KernelRidgeCV's (see _kernels' notes)
            for a, res in enumerate(pool.map(lambda a: point(K, a), range(len(alphas)))):
                for j in range(len(Zs)):
                    scores[j][s0:s1, a * ng + g] = res[j]
        for j in range(len(Zs)):
            refit[j][s0:s1] = ~weights.ok[j]
    return scores, refit
