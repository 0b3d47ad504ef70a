"""What the permutation engines compute once and read per permutation: sums of ``X``'s side by the permuted codes of a
``Y`` that repeats rows, factors and kernel terms, lookups of ``(n, n)`` matrices at permuted positions.

A permutation ``pi`` of the rows of ``Y`` only reorders what was computed from ``Y`` alone. When ``Y`` repeats rows
(``codes`` ``(n,)``, ``u`` distinct rows) its kernels are ``(u, u)`` tables (:class:`CodedKernel`, :class:`Lookup`)
and the permutation-dependent terms are sums of ``X``'s side by the permuted codes (:func:`canonical_sums`,
:func:`pair_weights`, :func:`pair_index`), kept with ``X`` under the partition relabelled canonically
(:func:`canonical`) so that every target set that repeats by the same categories reuses them
(:mod:`objalign.measures.permutation`).
"""

from __future__ import annotations

import numpy as np

from objalign.measures._sides import Side

__all__ = ["KNN_CHUNK", "CodedKernel", "Lookup", "canonical", "canonical_sums", "cknna_graph", "factor", "factor_terms",
           "kernel_terms", "knn_lookup", "knn_nonzeros", "memo_kept", "pair_index", "pair_weights", "quad",
           "sparse_entries", "stacked_codes", "to_canonical"]


class CodedKernel:
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


def stacked_codes(codes: np.ndarray, P: np.ndarray, u: int, dtype=np.float64):
    """Sparse one-hot ``(B * u, n)`` (CSC) of permuted codes: block ``b``, row ``a`` sums ``{i: codes[P[b, i]] = a}``.

    ``stacked @ A`` reads each row of ``A`` once for all ``B`` permutations of the chunk.
    """
    from scipy.sparse import csc_matrix

    B, n = P.shape
    rows = (np.arange(B)[:, None] * u + codes[P]).ravel()
    cols = np.broadcast_to(np.arange(n), (B, n)).ravel()
    return csc_matrix((np.ones(B * n, dtype=dtype), (rows, cols)), shape=(B * u, n))


def factor(Xc: np.ndarray) -> np.ndarray:
    """``F`` with ``F F^T = Xc Xc^T`` and at most ``min(n, d)`` columns (``U S`` of a thin SVD when ``d > n``)."""
    n, d = Xc.shape
    if d <= n:
        return np.ascontiguousarray(Xc)
    U, s, _ = np.linalg.svd(Xc, full_matrices=False)
    return U * s


def factor_terms(F: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Diagonal ``(n,)``, row sums ``(n,)``, total and squared Frobenius norm of ``K = F F^T``."""
    FtF = F.T @ F
    return np.einsum("ij,ij->i", F, F), F @ F.sum(0), float(np.sum(F.sum(0) ** 2)), float(np.sum(FtF ** 2))


def kernel_terms(K: np.ndarray, Kc: np.ndarray, unbiased: bool) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Diagonal, row sums and total of a dense kernel ``K``, and the squared norm of ``K`` (unbiased) or of ``Kc``."""
    kk = float(np.sum(K * K)) if unbiased else float(np.sum(Kc * Kc))
    return np.diag(K).copy(), K.sum(1), float(K.sum()), kk


_DENSE_CHUNK = 4  # permutations per stacked product against a dense (n, n) matrix (its rows stay in cache)


_FACTOR_CHUNK = 64  # the same against an (n, r) factor


def canonical(codes: np.ndarray, u: int) -> tuple[np.ndarray, np.ndarray]:
    """The partition ``codes`` ``(n,)`` relabelled by first occurrence ``(n,)``, and each code's new label ``(u,)``:
    target sets whose rows repeat by the same categories get the same canonical codes, whatever their own labels."""
    first = np.full(u, len(codes))
    np.minimum.at(first, codes, np.arange(len(codes)))
    rank = np.empty(u, dtype=np.intp)
    rank[np.argsort(first)] = np.arange(u)
    return rank[codes], rank


_GROUP_SUMS_BYTES = 64 * 2 ** 20  # the largest array of sums by code (permutations x codes x width) kept for reuse


_KEPT_BYTES = 256 * 2 ** 20  # at most this much of them kept per side (beyond: computed again per target set)


def memo_kept(side: Side, key, nbytes: int, compute):
    """``compute()`` memoised in ``side`` under ``key`` while it is at most ``_GROUP_SUMS_BYTES`` and the side keeps at
    most ``_KEPT_BYTES`` of such arrays; otherwise computed again on every call (the same values either way)."""
    if key in side.memo:
        return side.memo[key]
    kept = side.memo.get("kept_bytes", 0)
    if nbytes > _GROUP_SUMS_BYTES or kept + nbytes > _KEPT_BYTES:
        return compute()
    side.memo["kept_bytes"] = kept + nbytes
    return side.get(key, compute)


def canonical_sums(side: Side, key, A: np.ndarray, codes: np.ndarray, u: int, P: np.ndarray,
                    pairs: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``A`` over the groups of the permuted canonical codes, for every row ``pi`` of ``P`` ``(B, n)``, and
    the canonical label of each code ``(u,)`` (:func:`canonical`).

    ``pairs=None``: the rows of ``A`` ``(n, w)`` summed by code, ``(B, u, w)`` (``M_pi^T A``); ``"factor"``: the
    ``(B, u, u)`` sums ``M_pi^T A A^T M_pi`` of the kernel ``A A^T``; ``"dense"``: ``M_pi^T A M_pi`` of an ``(n, n)``
    kernel ``A``. ``M_pi`` is the one-hot ``(n, u)`` matrix of the canonical codes ``canon[pi]``.

    They depend only on ``A`` (a matrix of ``side``, named by ``key``), the partition and ``P``: kept in ``side``'s
    memo (when at most ``_GROUP_SUMS_BYTES``), another target set that repeats by the same categories reuses them.
    Callers put their ``(u, ...)`` tables in canonical order (``table_c[rank] = table``), so a target set's numbers
    are computed the same way whatever its labels and whichever target sets came before.
    """
    canon, rank = canonical(codes, u)

    def compute():
        B = len(P)
        out = np.empty((B, u, u if pairs else A.shape[1]))
        chunk = _FACTOR_CHUNK if pairs != "dense" else _DENSE_CHUNK
        counts = np.bincount(canon, minlength=u)
        starts = np.cumsum(counts) - counts  # every code occurs in every permutation: no group is empty
        for s in range(0, B, chunk):
            Pc = P[s:s + chunk]
            G = (stacked_codes(canon, Pc, u) @ A).reshape(len(Pc), u, -1)
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
    return memo_kept(side, ("group_sums", key, pairs, canon.tobytes(), P.tobytes()), size, compute), rank


def to_canonical(table: np.ndarray, rank: np.ndarray, axes: int = 1) -> np.ndarray:
    """``table`` ``(u, ...)`` with its first ``axes`` axes relabelled: ``out[rank[a], rank[b]] = table[a, b]``."""
    out = np.empty_like(table)
    out[np.ix_(rank, rank) if axes == 2 else rank] = table
    return out


def quad(A_factor, A_dense, Y_factor, Y_dense, P: np.ndarray) -> np.ndarray:
    """``sum(A * L[pi][:, pi])`` ``(B,)`` for each row ``pi`` of ``P`` ``(B, n)``.

    ``A`` is fixed (``F F^T`` given by its factor, or dense); ``L`` is factored or dense (a coded ``L`` goes through
    :func:`canonical_sums`).
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


KNN_CHUNK = 32  # permutations evaluated together on a neighbour graph


class Lookup:
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
        """A coded lookup read at the canonical code pairs ``index`` of :func:`pair_index` (``rank``: its canonical
        labels): what :meth:`at` returns, with the code-pair index shared by every target set."""
        return to_canonical(self.table, rank, 2).ravel()[index]


def pair_index(side: Side, key, r: np.ndarray, c: np.ndarray, codes: np.ndarray, u: int, P: np.ndarray):
    """``(index (B, m), rank (u,))``: the canonical code pair ``u canon[pi[r]] + canon[pi[c]]`` of each entry of a graph
    ``(r, c)`` ``(m,)`` of ``side`` under each permutation ``pi`` of ``P`` ``(B, n)`` (memoised like
    :func:`canonical_sums`; ``index`` None when too big to keep)."""
    canon, rank = canonical(codes, u)
    key = ("pair_index", key, canon.tobytes(), P.tobytes())
    size = len(P) * len(r) * 8
    if key not in side.memo and (size > _GROUP_SUMS_BYTES or side.memo.get("kept_bytes", 0) + size > _KEPT_BYTES):
        return None, rank  # the caller reads its tables per chunk of permutations

    def compute():
        C = canon[P]
        return C[:, r] * u + C[:, c]
    return memo_kept(side, key, size, compute), rank


def pair_weights(side: Side, key, r: np.ndarray, c: np.ndarray, w: np.ndarray, codes: np.ndarray, u: int,
                  P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(H (B, u * u), rank (u,))``: the weights ``w`` ``(m,)`` of a graph ``(r, c)`` of ``side`` summed by canonical
    code pair under each permutation of ``P`` (:func:`pair_index`), so that ``sum_e w_e T[pi[r_e], pi[c_e]]`` of a
    coded ``(u, u)`` table ``T`` is ``H @ T_canonical.ravel()`` (memoised like :func:`canonical_sums`)."""
    canon, rank = canonical(codes, u)

    def compute():
        H = np.empty((len(P), u * u))
        for s in range(0, len(P), KNN_CHUNK):
            C = canon[P[s:s + KNN_CHUNK]]
            index = C[:, r] * u + C[:, c] + (np.arange(len(C)) * u * u)[:, None]
            H[s:s + len(C)] = np.bincount(index.ravel(), np.tile(w, len(C)), len(C) * u * u).reshape(len(C), -1)
        return H

    return memo_kept(side, ("pair_weights", key, canon.tobytes(), P.tobytes()), len(P) * u * u * 8, compute), rank


def knn_lookup(side: Side, k: int) -> Lookup:
    """:class:`Lookup` of one side's neighbour weights (memoised with it)."""
    def compute():
        if side.rows() is not None:
            return Lookup(None, side.coded(), side.knn_table(k))
        return Lookup(side.knn(k, "average"), None)
    return side.get(("knn_lookup", k), compute)


def knn_nonzeros(side: Side, k: int) -> int:
    """The number of nonzero neighbour weights of one side (counted on its ``(u, u)`` table when it repeats rows)."""
    def compute():
        if side.rows() is not None:
            c = side.rows().counts
            return int(np.sum((side.knn_table(k) != 0) * (np.outer(c, c) - np.diag(c))))
        return int(np.count_nonzero(side.knn(k, "average")))
    return side.get(("knn_nonzeros", k), compute)


def sparse_entries(W: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, c = np.nonzero(W)
    return r, c, W[r, c]


def cknna_graph(K: np.ndarray, WK: np.ndarray) -> tuple:
    """X's side of CKNNA's cross term: the nonzeros ``(r, c)`` of its neighbour weights ``WK`` with their weights and
    ``WK o K`` values, where each entry's transpose sits among them (``has_t``, ``t``), and the sparse ``(n, m)``
    operators that sum the entries by column and by row (kept transposed: built once with X's graph)."""
    from scipy.sparse import csr_matrix

    n = len(K)
    r, c, wk = sparse_entries(WK)
    kw = wk * K[r, c]
    key, tkey = r * n + c, c * n + r  # each entry (i, j) and its transpose (j, i)
    pos = np.minimum(np.searchsorted(key, tkey), len(key) - 1)  # np.nonzero's keys are sorted (row-major)
    has_t = key[pos] == tkey
    m = len(r)
    col_sum = csr_matrix((np.ones(m), (np.arange(m), c)), shape=(m, n))
    row_sum = csr_matrix((np.ones(m), (np.arange(m), r)), shape=(m, n))
    return r, c, wk, kw, has_t, pos[has_t], col_sum.T, row_sum.T
