"""Calibrated similarity scores: a permutation threshold for every measure (Gröger, Wen & Brbić 2026).

Raw CKA-type scores have a chance level of order ``d / n``: two unrelated representations with many features and
few samples already score well above 0. The calibration asks what the measure scores when the pairing is broken and
reports only what exceeds that:

- a permutation null: ``K`` shufflings of the rows of ``Y`` against ``X`` that move the exchangeable unit as a block
  (whole images, so an image's objects keep their labels together; ``groups=None`` shuffles single rows, e.g.
  categories for category-level measures; :func:`objalign.stats.resampling.group_permutations`);
- the threshold ``tau``: the ``ceil((1 - alpha)(K + 1))``-th smallest of the observed score together with the ``K``
  null scores;
- the p-value ``(1 + #{null >= observed}) / (K + 1)``;
- the calibrated score ``max((s - tau) / (s_max - tau), 0)`` (``s_max = 1`` for every measure here), positive only
  when the observed score beats the threshold (which implies ``p <= alpha``);
- across many comparisons (several measures, protocols, a model matrix) Benjamini-Hochberg adjusted p-values
  (:func:`bh_adjust`).

Fast permutations
-----------------
A permutation ``pi`` of the rows of ``Y`` only reorders what was computed from ``Y`` alone: Gram matrices become
``L[pi][:, pi]``, neighbour graphs ``W[pi][:, pi]``, principal subspaces ``U[pi]``. Each measure's engine computes
those once and evaluates a permutation by indexing into them:

``cka_linear`` / ``cka_linear_unbiased`` / ``cka_rbf``
    The only permutation-dependent term is ``sum(A * L[pi][:, pi])`` (``A`` the fixed, possibly centred, Gram of
    ``X``); the unbiased estimator adds ``O(n)`` diagonal and row-sum terms. When ``Y`` has few distinct rows (text
    targets repeat per category) ``L = M Lu M^T`` with ``M`` the one-hot code matrix, and the term is
    ``sum(Lu * (M_pi^T A M_pi))``: the ``(u, u)`` pair sums of ``A`` (from its factor ``F``, ``A = F F^T``, for the
    linear kernel) under the permuted codes, which depend on ``X`` and the partition only; the diagonal and
    row-sum terms are sums of ``X``'s by code as well. Otherwise the linear kernel uses ``||G[pi]^T F||_F^2`` with
    the centred features as factors, and the RBF kernel a gather of ``L``.
``mutual_knn``
    ``sum(W_X * W_Y[pi][:, pi]) / (n k)`` over the nonzeros of the sparser neighbour-weight matrix; when that is
    ``X``'s and ``W_Y`` a ``(u, u)`` table, ``X``'s weights summed by the code pair each entry falls on.
``cknna``
    The self-alignments do not change; the cross term is an unbiased HSIC of two matrices supported on ``X``'s
    neighbour graph, evaluated from the ``O(n k)`` entries looked up at ``(pi[i], pi[j])`` (with ``(u, u)`` tables
    for ``Y``: its totals and trace from ``X``'s weights summed by code pair, the rest through one code-pair index).
``svcca``
    Singular values of ``U_Y[pi]^T U_X`` with the top singular subspaces computed once (``U_Y = M W`` for repeated
    rows: ``W^T (M_pi^T U_X)``).

What these engines take from ``X`` and the permuted partition alone (the pair sums, the sums by code, the code-pair
index and weights of its neighbour graph) is kept with ``X`` under the partition relabelled canonically (codes
numbered by first occurrence), so every target set that repeats by the same categories -- the text layers of one
model, other text models -- reuses it; each set's ``(u, u)`` tables are put in that canonical order, so its numbers
are computed the same way alone or after any other set.

A callable ``f(X, Y) -> float`` is simply re-evaluated on each ``Y[pi]``. Every fast engine's null equals the
measure recomputed from scratch on the permuted data (``tests/test_calibrate.py``); ``bench/calibrate.py`` times
1,000 permutations of every measure on 3,000 objects against the recomputation.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from objalign.errors import ObjalignError, did_you_mean
from objalign.measures import similarity as sim
from objalign.stats.resampling import group_permutations

__all__ = ["MEASURES", "bh_adjust", "calibrate_measures", "calibrated", "calibration_summary", "permutation_engine"]



# ------------------------------------------------------------------------------------------ validation
def check_alpha(alpha) -> float:
    """``alpha`` as a float in ``(0, 1)``, or one clear error naming the value."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ObjalignError(f"alpha={alpha!r} must be a number in (0, 1), e.g. 0.05") from None
    if not 0 < a < 1:
        raise ObjalignError(f"alpha={alpha!r} is outside (0, 1): pass a significance level such as 0.05")
    return a


def _check_count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ObjalignError(f"{name}={value!r} must be a positive integer, e.g. 1000")
    return int(value)


# --------------------------------------------------------------------------------------- Y-side kernel
class _CodedKernel:
    """A kernel ``L`` ``(n, n)`` of rows that repeat: ``L[i, j] = Lu[codes[i], codes[j]]``."""

    def __init__(self, codes: np.ndarray, Lu: np.ndarray):
        self.codes, self.Lu = codes, Lu
        self.counts = np.bincount(codes, minlength=len(Lu)).astype(np.float64)
        self.quads: dict[bytes, tuple] = {}  # permutations -> (A, sum(A * L[pi][:, pi])) for engines sharing L

    def diag(self) -> np.ndarray:
        return np.diag(self.Lu)[self.codes]

    def rowsums(self) -> np.ndarray:
        return (self.Lu @ self.counts)[self.codes]

    def total(self) -> float:
        return float(self.counts @ self.Lu @ self.counts)

    def sq_norm(self) -> float:
        return float(np.sum(np.outer(self.counts, self.counts) * self.Lu ** 2))

    def sq_norm_centred(self) -> float:
        """``||H L H||_F^2`` (``H = I - 11^T / n``): ``H L H`` is the table ``Lu - m_a - m_b + g`` read at the codes,
        ``m = Lu counts / n`` its row means and ``g`` the grand mean."""
        n = self.counts.sum()
        m = self.Lu @ self.counts / n
        D = self.Lu - m[:, None] - m[None, :] + (self.counts @ m) / n
        return float(np.sum(np.outer(self.counts, self.counts) * D ** 2))


def _stacked_codes(codes: np.ndarray, P: np.ndarray, u: int, dtype=np.float64):
    """Sparse one-hot ``(B * u, n)`` (CSC) of permuted codes: block ``b``, row ``a`` sums ``{i: codes[P[b, i]] = a}``.

    ``stacked @ A`` reads each row of ``A`` once for all ``B`` permutations of the chunk.
    """
    from scipy.sparse import csc_matrix

    B, n = P.shape
    rows = (np.arange(B)[:, None] * u + codes[P]).ravel()
    cols = np.broadcast_to(np.arange(n), (B, n)).ravel()
    return csc_matrix((np.ones(B * n, dtype=dtype), (rows, cols)), shape=(B * u, n))


def _factor(Xc: np.ndarray) -> np.ndarray:
    """``F`` with ``F F^T = Xc Xc^T`` and at most ``min(n, d)`` columns (``U S`` of a thin SVD when ``d > n``)."""
    n, d = Xc.shape
    if d <= n:
        return np.ascontiguousarray(Xc)
    U, s, _ = np.linalg.svd(Xc, full_matrices=False)
    return U * s


def _factor_terms(F: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Diagonal ``(n,)``, row sums ``(n,)``, total and squared Frobenius norm of ``K = F F^T``."""
    FtF = F.T @ F
    return np.einsum("ij,ij->i", F, F), F @ F.sum(0), float(np.sum(F.sum(0) ** 2)), float(np.sum(FtF ** 2))


def _kernel_terms(K: np.ndarray, Kc: np.ndarray, unbiased: bool) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Diagonal, row sums and total of a dense kernel ``K``, and the squared norm of ``K`` (unbiased) or of ``Kc``."""
    kk = float(np.sum(K * K)) if unbiased else float(np.sum(Kc * Kc))
    return np.diag(K).copy(), K.sum(1), float(K.sum()), kk


_DENSE_CHUNK = 4  # permutations per stacked product against a dense (n, n) matrix (its rows stay in cache)
_FACTOR_CHUNK = 64  # the same against an (n, r) factor


def _canonical(codes: np.ndarray, u: int) -> tuple[np.ndarray, np.ndarray]:
    """The partition ``codes`` ``(n,)`` relabelled by first occurrence ``(n,)``, and each code's new label ``(u,)``:
    target sets whose rows repeat by the same categories get the same canonical codes, whatever their own labels."""
    first = np.full(u, len(codes))
    np.minimum.at(first, codes, np.arange(len(codes)))
    rank = np.empty(u, dtype=np.intp)
    rank[np.argsort(first)] = np.arange(u)
    return rank[codes], rank


_GROUP_SUMS_BYTES = 64 * 2 ** 20  # the largest array of sums by code (permutations x codes x width) kept for reuse
_KEPT_BYTES = 256 * 2 ** 20  # at most this much of them kept per side (beyond: computed again per target set)


def _kept(side: sim._Side, key, nbytes: int, compute):
    """``compute()`` memoised in ``side`` under ``key`` while it is at most ``_GROUP_SUMS_BYTES`` and the side keeps at
    most ``_KEPT_BYTES`` of such arrays; otherwise computed again on every call (the same values either way)."""
    if key in side.memo:
        return side.memo[key]
    kept = side.memo.get("kept_bytes", 0)
    if nbytes > _GROUP_SUMS_BYTES or kept + nbytes > _KEPT_BYTES:
        return compute()
    side.memo["kept_bytes"] = kept + nbytes
    return side.get(key, compute)


def _canonical_sums(side: sim._Side, key, A: np.ndarray, codes: np.ndarray, u: int, P: np.ndarray,
                    pairs: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``A`` over the groups of the permuted canonical codes, for every row ``pi`` of ``P`` ``(B, n)``, and
    the canonical label of each code ``(u,)`` (:func:`_canonical`).

    ``pairs=None``: the rows of ``A`` ``(n, w)`` summed by code, ``(B, u, w)`` (``M_pi^T A``); ``"factor"``: the
    ``(B, u, u)`` sums ``M_pi^T A A^T M_pi`` of the kernel ``A A^T``; ``"dense"``: ``M_pi^T A M_pi`` of an ``(n, n)``
    kernel ``A``. ``M_pi`` is the one-hot ``(n, u)`` matrix of the canonical codes ``canon[pi]``.

    They depend only on ``A`` (a matrix of ``side``, named by ``key``), the partition and ``P``: kept in ``side``'s
    memo (when at most ``_GROUP_SUMS_BYTES``), another target set that repeats by the same categories reuses them.
    Callers put their ``(u, ...)`` tables in canonical order (``table_c[rank] = table``), so a target set's numbers
    are computed the same way whatever its labels and whichever target sets came before.
    """
    canon, rank = _canonical(codes, u)

    def compute():
        B = len(P)
        out = np.empty((B, u, u if pairs else A.shape[1]))
        chunk = _FACTOR_CHUNK if pairs != "dense" else _DENSE_CHUNK
        counts = np.bincount(canon, minlength=u)
        starts = np.cumsum(counts) - counts  # every code occurs in every permutation: no group is empty
        for s in range(0, B, chunk):
            Pc = P[s:s + chunk]
            G = (_stacked_codes(canon, Pc, u) @ A).reshape(len(Pc), u, -1)
            if pairs is None:
                out[s:s + len(Pc)] = G
            elif pairs == "factor":
                out[s:s + len(Pc)] = np.matmul(G, G.transpose(0, 2, 1))
            else:  # sum the columns of each row's group sums by the permuted codes too
                C = canon[Pc]
                for b in range(len(Pc)):
                    out[s + b] = np.add.reduceat(G[b][:, np.argsort(C[b], kind="stable")], starts, axis=1)
        return out

    size = len(P) * u * (u if pairs else A.shape[1]) * 8
    return _kept(side, ("group_sums", key, pairs, canon.tobytes(), P.tobytes()), size, compute), rank


def _to_canonical(table: np.ndarray, rank: np.ndarray, axes: int = 1) -> np.ndarray:
    """``table`` ``(u, ...)`` with its first ``axes`` axes relabelled: ``out[rank[a], rank[b]] = table[a, b]``."""
    out = np.empty_like(table)
    out[np.ix_(rank, rank) if axes == 2 else rank] = table
    return out


def _quad(A_factor, A_dense, Y_factor, Y_dense, P: np.ndarray) -> np.ndarray:
    """``sum(A * L[pi][:, pi])`` ``(B,)`` for each row ``pi`` of ``P`` ``(B, n)``.

    ``A`` is fixed (``F F^T`` given by its factor, or dense); ``L`` is factored or dense (a coded ``L`` goes through
    :func:`_canonical_sums`).
    """
    out = np.empty(len(P))
    if A_factor is not None and Y_factor is not None:
        for b, pi in enumerate(P):
            C = Y_factor[pi].T @ A_factor
            out[b] = np.sum(C * C)
        return out
    A = A_dense if A_dense is not None else A_factor @ A_factor.T
    for b, pi in enumerate(P):
        out[b] = np.sum(A * Y_dense[np.ix_(pi, pi)])
    return out


# ----------------------------------------------------------------------------------------- engines
MEASURES: dict[str, type] = {}
"""Measure name -> permutation engine class (options are the class's keyword arguments)."""


def _register(name: str):
    def deco(cls):
        cls.name = name
        MEASURES[name] = cls
        return cls
    return deco


class _Engine:
    """Fixed precomputations of one measure on ``(X, Y)``.

    :meth:`scores` gives the measure on ``(X, Y[pi])`` for every row ``pi`` of ``P`` ``(B, n)``; :meth:`score` on
    one permutation (``None``: the observed pairing).
    """

    name = "?"
    s_max = 1.0
    n = 0

    def scores(self, P: np.ndarray) -> np.ndarray:  # pragma: no cover - every engine overrides it
        raise NotImplementedError

    def score(self, pi: np.ndarray | None = None) -> float:
        pi = np.arange(self.n) if pi is None else np.asarray(pi)
        return float(self.scores(pi[None, :])[0])


class _CKA(_Engine):
    kernel = "linear"
    unbiased = False

    def __init__(self, X, Y, sigma: float | None = None, cache: dict | None = None):
        if sigma is not None and self.kernel != "rbf":
            raise ObjalignError(f"{self.name}: sigma only applies to the RBF kernel; drop it")
        sig = 0.8 if sigma is None else sigma
        if not (isinstance(sig, (int, float, np.floating)) and np.isfinite(sig) and sig > 0):
            raise ObjalignError(f"sigma={sigma!r} must be a positive number (a fraction of the median distance)")
        X, Y = sim._validate_pair(X, Y, 4 if self.unbiased else 2, self.name)
        xs, ys = sim._sides(X, Y, cache)
        self.n = len(X)
        coded = ys.coded()
        self.F = self.A = self.G = self.L = self.coded = None
        if self.kernel == "linear":
            self.F = F = xs.get("factor", lambda: _factor(xs.centered()))  # K = F F^T is already centred
            a_key = "factor"
            dK, rK, sK, kk = xs.get("factor_terms", lambda: _factor_terms(F))
            if coded is not None:
                self.coded = ys.get("coded_linear", lambda: _CodedKernel(coded[1], ys.rows().linear()))
            else:
                self.G = ys.get("factor", lambda: _factor(ys.centered()))
        else:
            gram = ("rbf", float(sig))
            K = xs.rbf(float(sig))
            if coded is not None:  # (u, u) table of the category rows
                self.coded = ys.get(("coded", gram), lambda: _CodedKernel(coded[1], ys.rows().rbf(float(sig))))
                ll_biased = ys.get(("sq_norm_centred", gram), self.coded.sq_norm_centred)
            else:
                self.L = L = ys.rbf(float(sig))
                ll_biased = ys.get(("sq_norm_centred", gram), lambda: float(np.sum(sim._double_center(L) ** 2)))
            Kc = xs.get(("double_centred", gram), lambda: sim._double_center(K))
            self.A = K if self.unbiased else Kc
            a_key = gram if self.unbiased else ("double_centred", gram)
            dK, rK, sK, kk = xs.get(("kernel_terms", gram, self.unbiased), lambda: _kernel_terms(K, Kc, self.unbiased))
        if self.coded is not None:
            c = self.coded
            dL, rL, sL, ll = c.diag(), c.rowsums(), c.total(), c.sq_norm()
        elif self.G is not None:
            G = self.G
            dL, rL, sL = np.einsum("ij,ij->i", G, G), G @ G.sum(0), float(np.sum(G.sum(0) ** 2))
            ll = float(np.sum((G.T @ G) ** 2))
        else:
            dL, rL, sL, ll = np.diag(self.L).copy(), self.L.sum(1), float(self.L.sum()), float(np.sum(self.L ** 2))
        if self.kernel == "rbf" and not self.unbiased:
            ll = ll_biased
        if self.unbiased:  # zero-diagonal row sums and totals of the unbiased estimator
            self.dK, self.dL = dK, dL
            self.rK, self.rL = rK - dK, rL - dL
            self.terms_key = ("unbiased_terms", a_key)
            self.terms = xs.get(self.terms_key, lambda: np.column_stack([self.dK, self.rK]))
            self.sK, self.sL = sK - dK.sum(), sL - dL.sum()
            hxx = self._hsic_u(kk, dK @ dK, self.rK @ self.rK, self.sK * self.sK)
            hyy = self._hsic_u(ll, dL @ dL, self.rL @ self.rL, self.sL * self.sL)
        else:
            hxx, hyy = kk, ll
        sim._check_self(hxx, "X")
        sim._check_self(hyy, "Y")
        self.denominator = math.sqrt(hxx * hyy)
        A = self.F if self.F is not None else self.A
        self.sums = lambda key, M, P, pairs=None: _canonical_sums(xs, key, M, self.coded.codes, len(self.coded.Lu), P,
                                                                   pairs)
        self.pairs = lambda P: self.sums(a_key, A, P, "factor" if self.F is not None else "dense")

    def _hsic_u(self, q, diag, rows, sums):
        """Song et al.'s unbiased HSIC from ``sum(K * L)``, ``diag(K) . diag(L)``, zero-diagonal row sums and totals."""
        n = self.n
        return (q - diag + sums / ((n - 1) * (n - 2)) - 2.0 * rows / (n - 2)) / (n * (n - 3))

    def scores(self, P):
        if self.coded is None:
            q = _quad(self.F, self.A, self.G, self.L, P)
            if self.unbiased:
                q = self._hsic_u(q, self.dL[P] @ self.dK, self.rL[P] @ self.rK, self.sK * self.sL)
            return q / self.denominator
        # L = M Lu M^T: sum(A * L[pi][:, pi]) = sum(Lu * M_pi^T A M_pi), the (u, u) pair sums of X's side
        A, key = (self.F if self.F is not None else self.A), P.tobytes()
        hit = self.coded.quads.get(key)  # the biased and unbiased engines on the same X and Y share A and L
        if hit is None or hit[0] is not A:  # (the entry holds its A, so ``is`` cannot mistake a new one for it)
            H, rank = self.pairs(P)
            hit = self.coded.quads[key] = (A, np.einsum("bac,ac->b", H, _to_canonical(self.coded.Lu, rank, 2)))
        q = hit[1]
        if self.unbiased:  # dL[pi] . dK and rL[pi] . rK from the sums of dK and rK by the permuted codes
            T, rank = self.sums(self.terms_key, self.terms, P)
            Lu, counts = self.coded.Lu, self.coded.counts
            dLu = np.diag(Lu).copy()
            tables = _to_canonical(np.column_stack([dLu, Lu @ counts - dLu]), rank)
            q = self._hsic_u(q, T[:, :, 0] @ tables[:, 0], T[:, :, 1] @ tables[:, 1], self.sK * self.sL)
        return q / self.denominator


@_register("cka_linear")
class _CKALinear(_CKA):
    pass


@_register("cka_linear_unbiased")
class _CKALinearUnbiased(_CKA):
    unbiased = True


@_register("cka_rbf")
class _CKARBF(_CKA):
    kernel = "rbf"


class _Lookup:
    """An ``(n, n)`` matrix read at ``(P[:, r], P[:, c])`` for off-diagonal positions ``r != c``.

    When ``Y`` repeats rows (``codes`` ``(n,)``) and the matrix is a function of the two codes off the diagonal, it is
    kept as a ``(u, u)`` table (cache-resident): ``table`` when known (``W`` may then be None), else taken from ``W``
    when it reproduces it; otherwise dense.
    """

    def __init__(self, W: np.ndarray | None, coded: tuple[np.ndarray, np.ndarray] | None,
                 table: np.ndarray | None = None):
        self.W, self.codes = W, None
        if coded is None:
            return
        first, codes = coded
        u = len(first)
        if table is None:
            counts = np.bincount(codes, minlength=u)
            order = np.argsort(codes, kind="stable")
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            second = np.where(counts > 1, order[np.minimum(starts + 1, len(codes) - 1)], first)
            table = W[np.ix_(first, first)].copy()
            table[np.diag_indices(u)] = W[first, second] * (counts > 1)
            full = table[np.ix_(codes, codes)]
            np.fill_diagonal(full, np.diag(W))
            if not np.allclose(full, W, rtol=0.0, atol=1e-12):  # the table does not reproduce W: keep W
                return
        self.W, self.codes, self.table, self.u = None, codes, table, u

    def at(self, P: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        if self.codes is None:
            return self.W[P[:, r], P[:, c]]
        C = self.codes[P]
        return self.table.ravel()[C[:, r] * self.u + C[:, c]]

    def pairs(self, index: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """A coded lookup read at the canonical code pairs ``index`` of :func:`_pair_index` (``rank``: its canonical
        labels): what :meth:`at` returns, with the code-pair index shared by every target set."""
        return _to_canonical(self.table, rank, 2).ravel()[index]


def _pair_index(side: sim._Side, key, r: np.ndarray, c: np.ndarray, codes: np.ndarray, u: int, P: np.ndarray):
    """``(index (B, m), rank (u,))``: the canonical code pair ``u canon[pi[r]] + canon[pi[c]]`` of each entry of a graph
    ``(r, c)`` ``(m,)`` of ``side`` under each permutation ``pi`` of ``P`` ``(B, n)`` (memoised like
    :func:`_canonical_sums`; ``index`` None when too big to keep)."""
    canon, rank = _canonical(codes, u)
    key = ("pair_index", key, canon.tobytes(), P.tobytes())
    size = len(P) * len(r) * 8
    if key not in side.memo and (size > _GROUP_SUMS_BYTES or side.memo.get("kept_bytes", 0) + size > _KEPT_BYTES):
        return None, rank  # the caller reads its tables per chunk of permutations

    def compute():
        C = canon[P]
        return C[:, r] * u + C[:, c]
    return _kept(side, key, size, compute), rank


def _pair_weights(side: sim._Side, key, r: np.ndarray, c: np.ndarray, w: np.ndarray, codes: np.ndarray, u: int,
                  P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(H (B, u * u), rank (u,))``: the weights ``w`` ``(m,)`` of a graph ``(r, c)`` of ``side`` summed by canonical
    code pair under each permutation of ``P`` (:func:`_pair_index`), so that ``sum_e w_e T[pi[r_e], pi[c_e]]`` of a
    coded ``(u, u)`` table ``T`` is ``H @ T_canonical.ravel()`` (memoised like :func:`_canonical_sums`)."""
    canon, rank = _canonical(codes, u)

    def compute():
        H = np.empty((len(P), u * u))
        for s in range(0, len(P), _KNN_CHUNK):
            C = canon[P[s:s + _KNN_CHUNK]]
            index = C[:, r] * u + C[:, c] + (np.arange(len(C)) * u * u)[:, None]
            H[s:s + len(C)] = np.bincount(index.ravel(), np.tile(w, len(C)), len(C) * u * u).reshape(len(C), -1)
        return H

    return _kept(side, ("pair_weights", key, canon.tobytes(), P.tobytes()), len(P) * u * u * 8, compute), rank


def _knn_lookup(side: sim._Side, k: int) -> _Lookup:
    """:class:`_Lookup` of one side's neighbour weights (memoised with it)."""
    def compute():
        if side.rows() is not None:
            return _Lookup(None, side.coded(), side.knn_table(k))
        return _Lookup(side.knn(k, "average"), None)
    return side.get(("knn_lookup", k), compute)


def _knn_nonzeros(side: sim._Side, k: int) -> int:
    """The number of nonzero neighbour weights of one side (counted on its ``(u, u)`` table when it repeats rows)."""
    def compute():
        if side.rows() is not None:
            c = side.rows().counts
            return int(np.sum((side.knn_table(k) != 0) * (np.outer(c, c) - np.diag(c))))
        return int(np.count_nonzero(side.knn(k, "average")))
    return side.get(("knn_nonzeros", k), compute)


def _sparse_entries(W: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, c = np.nonzero(W)
    return r, c, W[r, c]


_KNN_CHUNK = 32  # permutations evaluated together on a neighbour graph


@_register("mutual_knn")
class _MutualKNN(_Engine):
    def __init__(self, X, Y, k: int = 10, cache: dict | None = None):
        X, Y = sim._validate_pair(X, Y, 2, "mutual_knn")
        xs, ys = sim._sides(X, Y, cache)
        self.n = n = len(X)
        self.k = k = sim._check_k(k, n)
        # the sum runs over the sparser matrix's nonzeros; the other is looked up at the permuted positions
        self.x_sparse = _knn_nonzeros(xs, k) <= _knn_nonzeros(ys, k)
        sparse, dense = (xs, ys) if self.x_sparse else (ys, xs)
        self.r, self.c, self.w = sparse.get(("knn_entries", k), lambda: _sparse_entries(sparse.knn(k, "average")))
        self.D = _knn_lookup(dense, k)
        self.x = xs

    def scores(self, P):
        if self.x_sparse and self.D.codes is not None:  # sum over code pairs of X's weights, shared by target sets
            D = self.D
            H, rank = _pair_weights(self.x, ("knn", self.k), self.r, self.c, self.w, D.codes, D.u, P)
            return H @ _to_canonical(D.table, rank, 2).ravel() / (self.n * self.k)
        if not self.x_sparse:  # sum_ij W_X[i, j] W_Y[pi i, pi j] = sum_ab W_X[pinv a, pinv b] W_Y[a, b]
            P = np.argsort(P, axis=1)
        out = np.empty(len(P))
        for s in range(0, len(P), _KNN_CHUNK):
            out[s:s + _KNN_CHUNK] = self.D.at(P[s:s + _KNN_CHUNK], self.r, self.c) @ self.w
        return out / (self.n * self.k)


def _cknna_graph(K: np.ndarray, WK: np.ndarray) -> tuple:
    """X's side of CKNNA's cross term: the nonzeros ``(r, c)`` of its neighbour weights ``WK`` with their weights and
    ``WK o K`` values, where each entry's transpose sits among them (``has_t``, ``t``), and the sparse ``(n, m)``
    operators that sum the entries by column and by row (kept transposed: built once with X's graph)."""
    from scipy.sparse import csr_matrix

    n = len(K)
    r, c, wk = _sparse_entries(WK)
    kw = wk * K[r, c]
    key, tkey = r * n + c, c * n + r  # each entry (i, j) and its transpose (j, i)
    pos = np.minimum(np.searchsorted(key, tkey), len(key) - 1)  # np.nonzero's keys are sorted (row-major)
    has_t = key[pos] == tkey
    m = len(r)
    col_sum = csr_matrix((np.ones(m), (np.arange(m), c)), shape=(m, n))
    row_sum = csr_matrix((np.ones(m), (np.arange(m), r)), shape=(m, n))
    return r, c, wk, kw, has_t, pos[has_t], col_sum.T, row_sum.T


@_register("cknna")
class _CKNNA(_Engine):
    def __init__(self, X, Y, k: int = 10, cache: dict | None = None):
        X, Y = sim._validate_pair(X, Y, 4, "cknna")
        xs, ys = sim._sides(X, Y, cache)
        self.n = n = len(X)
        self.k = k = sim._check_k(k, n, minimum=2)
        xs.cosine(), (ys.cosine_table() if ys.rows() is not None else ys.cosine())  # X's zero rows reported first
        kk = sim._knn_self_alignment(xs, k, "average")  # neither self-alignment depends on the pairing
        ll = sim._knn_self_alignment(ys, k, "average")
        if not kk * ll > 0:
            raise ObjalignError(
                f"CKNNA is undefined here: the k-NN self-alignments of X and Y are {kk:.3g} and {ll:.3g} "
                f"(their product must be positive); use a larger k or check for constant features")
        self.denominator = math.sqrt(kk * ll)
        self.WL = _knn_lookup(ys, k)
        self.L = ys.get("cosine_lookup", lambda: _Lookup(None, ys.coded(), ys.cosine_table()) if ys.rows() is not None
                        else _Lookup(ys.cosine(), None))
        self.x = xs
        # the cross term lives on X's neighbour graph
        self.r, self.c, self.wk, self.kw, self.has_t, self.t, self.col_sum, self.row_sum = xs.get(
            ("cknna_graph", k), lambda: _cknna_graph(xs.cosine(), xs.knn(k, "average")))

    def scores(self, P):
        if self.WL.codes is not None and self.L.codes is not None:
            return self._coded_scores(P)
        out = np.empty(len(P))
        for s in range(0, len(P), _KNN_CHUNK):
            Pc = P[s:s + _KNN_CHUNK]
            wl = self.WL.at(Pc, self.r, self.c)
            a = self.kw * wl  # (M o K) on the graph, M = W_K o W_L[pi][:, pi]
            b = self.wk * wl * self.L.at(Pc, self.r, self.c)  # M o L[pi][:, pi]
            trace = np.einsum("bm,bm->b", a[:, self.has_t], b[:, self.t])
            cross = np.einsum("bj,bj->b", (self.col_sum @ a.T).T, (self.row_sum @ b.T).T)
            out[s:s + len(Pc)] = self._hsic(trace, a.sum(1), b.sum(1), cross)
        return out / self.denominator

    def _hsic(self, trace, sum_a, sum_b, cross):
        """The unbiased HSIC of the cross term from its trace, totals and ``1^T A B 1`` ``(B,)``."""
        n = self.n
        return (trace + sum_a * sum_b / ((n - 1) * (n - 2)) - 2.0 * cross / (n - 2)) / (n * (n - 3))

    def _coded_scores(self, P):
        """:meth:`scores` when ``W_L`` and ``L`` are ``(u, u)`` tables: the totals and the trace are X's graph
        weights summed by code pair (:func:`_pair_weights`) against the tables; ``1^T A B 1`` reads the tables at
        X's graph entries through one code-pair index (:func:`_pair_index`). Both are shared by every target set."""
        WL, L = self.WL, self.L
        codes, u, key = WL.codes, WL.u, ("cknna", self.k)
        canon, rank = _canonical(codes, u)
        wl = _to_canonical(WL.table, rank, 2)
        wll = wl * _to_canonical(L.table, rank, 2)  # an entry of M o L[pi][:, pi] is w_K wl l

        def weights(name, r, c, w):
            return _pair_weights(self.x, key + (name,), r, c, w, codes, u, P)[0]
        sum_a = weights("kw", self.r, self.c, self.kw) @ wl.ravel()
        sum_b = weights("wk", self.r, self.c, self.wk) @ wll.ravel()
        # trace: entry e times its transpose t(e), read at (pi r_e, pi c_e) from wl and the transpose of wll
        t = self.has_t
        trace = weights("trace", self.r[t], self.c[t], self.kw[t] * self.wk[self.t]) @ (wl * wll.T).ravel()
        index, _ = _pair_index(self.x, key, self.r, self.c, codes, u, P)
        cross = np.empty(len(P))
        for s in range(0, len(P), _KNN_CHUNK):  # (in chunks either way: the same arithmetic with or without index)
            Pc = P[s:s + _KNN_CHUNK]
            if index is not None:
                at = index[s:s + len(Pc)]
            else:
                C = canon[Pc]
                at = C[:, self.r] * u + C[:, self.c]
            a, b = self.kw * wl.ravel()[at], self.wk * wll.ravel()[at]
            cross[s:s + len(Pc)] = np.einsum("bj,bj->b", (self.col_sum @ a.T).T, (self.row_sum @ b.T).T)
        return self._hsic(trace, sum_a, sum_b, cross) / self.denominator


@_register("svcca")
class _SVCCA(_Engine):
    def __init__(self, X, Y, dim: int = 10, cache: dict | None = None):
        X, Y = sim._validate_pair(X, Y, 2, "svcca")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ObjalignError(f"dim must be a positive integer, got {dim!r}: pass e.g. dim=10")
        limit = min(X.shape[0] - 1, X.shape[1], Y.shape[1])
        if dim > limit:
            raise ObjalignError(f"dim={dim} is too large: expected dim <= min(n_samples - 1, n_features_x, "
                                f"n_features_y) = {limit}")
        xs, ys = sim._sides(X, Y, cache)
        self.n, self.dim, self.x, self.y = len(X), int(dim), xs, ys
        self.Ux, self.Uy = xs.subspace(int(dim)), ys.subspace(int(dim))

    def scores(self, P):
        out = np.empty(len(P))
        if self.y.rows() is not None:  # U_Y = M W: U_Y[pi]^T U_X = W^T (M_pi^T U_X), X's group sums
            codes, W = self.y.coded()[1], self.y.subspace_rows(self.dim)
            G, rank = _canonical_sums(self.x, ("subspace", self.dim), self.Ux, codes, len(W), P)
            C = np.matmul(_to_canonical(W, rank).T, G)  # (B, dim, dim)
            return np.mean(np.clip(np.linalg.svd(C, compute_uv=False), 0.0, 1.0), axis=1)
        for s in range(0, len(P), _KNN_CHUNK):
            C = np.matmul(self.Uy[P[s:s + _KNN_CHUNK]].transpose(0, 2, 1), self.Ux)  # (B, dim, dim)
            out[s:s + len(C)] = np.mean(np.clip(np.linalg.svd(C, compute_uv=False), 0.0, 1.0), axis=1)
        return out


class _Callable(_Engine):
    """Any ``f(X, Y) -> float``, recomputed on each permuted ``Y``."""

    def __init__(self, f: Callable, X, Y, **options):
        self.name = getattr(f, "__name__", "callable")
        self.s_max = float(options.pop("s_max", 1.0))
        self.f, self.options = f, options
        self.X, self.Y = sim._validate_pair(X, Y, 2, self.name)
        self.n = len(self.X)

    def scores(self, P):
        out = np.array([float(self.f(self.X, self.Y[pi], **self.options)) for pi in P])
        if not np.all(np.isfinite(out)):
            raise ObjalignError(f"measure {self.name} returned a non-finite value on a permuted pairing: it must "
                                "return a finite number for any pairing")
        return out


def permutation_engine(measure, X, Y, cache: dict | None = None, **options) -> _Engine:
    """The engine of ``measure`` (a name in :data:`MEASURES` or a callable ``f(X, Y) -> float``) on ``(X, Y)``.

    ``engine.score(pi)`` returns the measure on ``(X, Y[pi])`` (``pi=None``: the observed pairing). ``cache`` (a
    dict, as in :mod:`objalign.measures.similarity`): the precomputations of ``X`` alone (Grams, factors, neighbour
    graphs, subspaces) are kept in it and reused by engines built on the same ``X`` -- against another ``Y``, or
    for another measure -- and those of ``Y`` alone by the next engine on the same ``Y``; the engine's scores are
    identical with or without it. A callable measure ignores it.
    """
    if callable(measure):
        return _Callable(measure, X, Y, **options)
    if measure not in MEASURES:

        raise ObjalignError(f"unknown similarity measure {measure!r}{did_you_mean(measure, MEASURES)}; expected one of "
                            f"{', '.join(sorted(MEASURES))} or a callable f(X, Y) -> float")
    try:
        return MEASURES[measure](X, Y, cache=cache, **options)
    except TypeError as exc:
        raise ObjalignError(f"bad options {sorted(options)} for measure {measure!r}: {exc}") from None


# ------------------------------------------------------------------------------------------- results
def calibration_summary(score: float, null: np.ndarray, alpha: float, s_max: float = 1.0) -> dict:
    """Threshold, p-value and calibrated score of an observed ``score`` against its permutation ``null`` ``(K,)``."""
    alpha = check_alpha(alpha)
    null = np.asarray(null, dtype=np.float64)
    K = null.size
    pooled = np.sort(np.concatenate([[score], null]))
    rank = min(max(math.ceil((1 - alpha) * (K + 1) - 1e-9), 1), K + 1)  # 1-based order statistic
    tau = float(pooled[rank - 1])
    p = (1 + int(np.count_nonzero(null >= score))) / (K + 1)
    cal = max((score - tau) / (s_max - tau), 0.0) if s_max > tau else 0.0
    return {"score": float(score), "threshold": tau, "pvalue": float(p), "calibrated": float(cal),
            "null_mean": float(null.mean()) if K else float("nan"), "n_permutations": int(K), "alpha": alpha}


def calibrated(measure, X, Y, groups=None, n_permutations: int = 1000, alpha: float = 0.05, seed=0,
               cache: dict | None = None, **options) -> dict:
    """A similarity measure with its permutation threshold, p-value and calibrated score.

    Parameters
    ----------
    measure : str or callable
        A name in :data:`MEASURES` (``"cka_linear"``, ``"cka_linear_unbiased"``, ``"cka_rbf"``,
        ``"mutual_knn"``, ``"cknna"``, ``"svcca"``) with its keyword ``options`` (``k``,
        ``dim``, ``sigma``), or a callable ``f(X, Y, **options) -> float`` (re-evaluated per permutation; pass
        ``s_max=`` if its maximum is not 1).
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
        Paired features (row ``i`` of both describes sample ``i``).
    groups : array-like of shape (n_samples,), optional
        Exchangeable units (image ids): permutations move whole groups as blocks. None: single rows are exchanged
        (e.g. categories, for category-level measures).
    n_permutations : int, default 1000
        ``K``, the number of permutations.
    alpha : float in (0, 1), default 0.05
        Level of the threshold.
    seed : int, default 0
    cache : dict, optional
        Shared by calls on the same ``X`` (:func:`permutation_engine`): the engine's precomputations of ``X`` and
        the permutations are reused; the result is the same with or without it.

    Returns
    -------
    dict
        ``score`` (observed), ``threshold`` (tau), ``pvalue``, ``calibrated``, ``null`` (ndarray ``(K,)``),
        ``null_mean``, ``n_permutations``, ``alpha``, ``measure`` (its name) and ``scheme``
        (``"image-blocks"`` or ``"rows"``).
    """
    alpha = check_alpha(alpha)
    K = _check_count(n_permutations, "n_permutations")
    return _calibrated(permutation_engine(measure, X, Y, cache, **options), groups, K, alpha, seed, cache)


def _calibrated(engine: _Engine, groups, K: int, alpha: float, seed, cache: dict | None) -> dict:
    """:func:`calibrated` of a built engine."""

    n = engine.n
    if groups is not None and len(np.asarray(groups)) != n:
        raise ObjalignError(f"groups has {len(np.asarray(groups))} labels for {n} samples: pass one image id per row")
    def draw():
        return group_permutations(n if groups is None else groups, K, seed=seed)

    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):  # a fixed seed: the same permutations
        units = np.arange(n) if groups is None else np.asarray(groups)
        perms = sim._side(cache, "groups", units).get(("permutations", groups is None, K, int(seed)), draw)
    else:  # a Generator (or None) draws new ones on every call
        perms = draw()
    score = engine.score()
    null = engine.scores(perms)
    out = calibration_summary(score, null, alpha, engine.s_max)
    return {**out, "null": null, "measure": engine.name, "scheme": "rows" if groups is None else "image-blocks"}


def bh_adjust(pvalues) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values ``(m,)``: ``min_{j: p_j >= p_i} min(1, m p_j / rank_j)``."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ObjalignError(f"pvalues must be 1-D, got shape {p.shape}")
    if p.size and (not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1):
        raise ObjalignError("pvalues must be finite numbers in [0, 1]")
    m = p.size
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def calibrate_measures(measures: dict[str, tuple], X, Y, groups=None, n_permutations: int = 1000,
                       alpha: float = 0.05, seed=0, cache: dict | None = None,
                       engines: dict | None = None) -> dict[str, dict]:
    """:func:`calibrated` for several measures on one pairing (one set of permutations), BH-adjusted together.

    Parameters
    ----------
    measures : dict
        Result name -> ``(measure, options)``, e.g. ``{"mutual_knn": ("mutual_knn", {"k": 10})}``.
    X, Y, groups, n_permutations, alpha, seed
        As in :func:`calibrated`.
    cache : dict, optional
        As in :func:`calibrated`; without one, the measures still share one cache (what they compute from ``X``
        or ``Y`` alone, and the permutations) within this call.
    engines : dict, optional
        Result name -> that measure's engine on ``(X, Y)``, already built by the caller with ``cache``
        (:func:`permutation_engine`): used instead of building it again (the same result).

    Returns
    -------
    dict
        Result name -> :func:`calibrated`'s dict without ``null``, plus ``pvalue_bh`` (adjusted over the measures
        that could be computed) or ``error`` (the measure's message) for a measure that could not be computed.
    """
    out: dict[str, dict] = {}
    cache = {} if cache is None else cache
    for name, (measure, options) in measures.items():
        try:
            if engines is not None and name in engines:
                r = _calibrated(engines[name], groups, _check_count(n_permutations, "n_permutations"),
                                check_alpha(alpha), seed, cache)
            else:
                r = calibrated(measure, X, Y, groups, n_permutations, alpha, seed, cache, **options)
        except ObjalignError as exc:
            out[name] = {"error": str(exc)}
            continue
        r.pop("null")
        out[name] = r
    done = [k for k, v in out.items() if "pvalue" in v]
    for k, q in zip(done, bh_adjust([out[k]["pvalue"] for k in done])):
        out[k]["pvalue_bh"] = float(q)
    return out
