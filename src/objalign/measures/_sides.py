"""One side of a comparison (``X`` or ``Y``) and what is computed from it alone, memoised across calls.

:class:`Side` holds a feature matrix and its memo (centred rows, Grams, kernels, neighbour weights, subspaces);
:class:`Rows` the same quantities of a matrix that repeats rows (text targets: one row per category) computed from
its ``u`` distinct rows; :func:`side_of` / :func:`sides_of` find a side in a ``cache`` dict, checked bit for bit
against the array it was computed from (:func:`identical`). See "Sharing work across calls" and "Repeated rows" in
:mod:`objalign.measures.similarity`.
"""

from __future__ import annotations

import numpy as np

from objalign.errors import ObjalignError
from objalign.measures._kernels import (
    TIE_ATOL,
    center,
    check_nonzero,
    cosine_gram,
    hsic_unbiased,
    neighbour_weights,
    rbf_gram,
    top_subspace,
    weighted_median,
)
from objalign.stats.labels import unique_rows

__all__ = ["CODED_FRACTION", "Rows", "Side", "identical", "knn_self_alignment", "side_of", "sides_of", "unique_codes"]


class Side:
    """One feature matrix ``A`` ``(n, d)`` (``X`` or ``Y``) and what is computed from it alone, memoised in ``memo``.

    Every quantity is computed by the same code whether it comes from the memo or not (bit-identical results). An
    ``ObjalignError`` raised while computing one is memoised too and raised again on the next request.

    When ``A`` repeats rows (at most ``CODED_FRACTION * n`` distinct rows, e.g. text targets: one row per category)
    its centred rows, Grams, kernels, neighbour weights and top subspace are computed from the ``u`` distinct rows
    and expanded by indexing (:class:`Rows`); ``cache`` (the dict the side lives in, or None) keeps those
    category-level quantities, so ``A`` and a row permutation of it (the shuffled floor) compute them once.
    """

    def __init__(self, A: np.ndarray, name: str, memo: dict, cache: dict | None = None):
        self.A, self.name, self.memo, self.cache = A, name, memo, cache

    def get(self, key, compute):
        if key not in self.memo:
            try:
                self.memo[key] = compute()
            except ObjalignError as exc:
                self.memo[key] = exc
        value = self.memo[key]
        if isinstance(value, ObjalignError):
            raise value
        return value

    def coded(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(first (u,), codes (n,))`` of :func:`unique_codes`: None when ``A`` does not repeat rows enough."""
        return self.get("codes", lambda: unique_codes(self.A))

    def rows(self) -> Rows | None:
        """The :class:`Rows` of a side that repeats rows (None otherwise)."""
        def compute():
            coded = self.coded()
            if coded is None:
                return None
            first, codes = coded
            counts = np.bincount(codes, minlength=len(first))
            U = self.A[first]
            holder = side_of(self.cache, self.name + " rows", U) if self.cache is not None else self
            return Rows(U, counts, self.name, holder.get(("rows", counts.tobytes()), dict))
        return self.get("rows", compute)

    def expand(self, table: np.ndarray, diagonal: float | None = None) -> np.ndarray:
        """``(n, n)`` matrix ``table[codes[i], codes[j]]`` of a ``(u, u)`` table (``diagonal``: then set on it)."""
        codes = self.coded()[1]
        out = table[np.ix_(codes, codes)]
        if diagonal is not None:
            np.fill_diagonal(out, diagonal)
        return out

    def centered(self) -> np.ndarray:
        rows = self.rows()
        if rows is not None:
            return self.get("centered", lambda: rows.centered()[self.coded()[1]])
        return self.get("centered", lambda: center(self.A))

    def linear(self) -> np.ndarray:
        """``Ac Ac^T`` ``(n, n)`` of the column-centred rows."""
        rows = self.rows()
        if rows is not None:
            return self.get("linear", lambda: self.expand(rows.linear()))
        return self.get("linear", lambda: self.centered() @ self.centered().T)

    def scatter(self) -> np.ndarray:
        """``Ac^T Ac`` ``(d, d)``."""
        return self.get("scatter", lambda: self.centered().T @ self.centered())

    def rbf(self, fraction: float) -> np.ndarray:
        rows = self.rows()
        if rows is not None:
            return self.get(("rbf", fraction), lambda: self.expand(rows.rbf(fraction)))
        return self.get(("rbf", fraction), lambda: rbf_gram(self.centered(), fraction, self.name, self.linear()))

    def cosine(self) -> np.ndarray:
        rows = self.rows()
        if rows is not None:
            return self.get("cosine", lambda: self.expand(self.cosine_table()))
        return self.get("cosine", lambda: cosine_gram(self.A, self.name))

    def cosine_table(self) -> np.ndarray:
        """The ``(u, u)`` cosine similarities of the distinct rows (a side that repeats rows)."""
        def compute():
            first, codes = self.coded()
            check_nonzero(np.linalg.norm(self.rows().U, axis=1)[codes], self.name)
            return self.rows().cosine()
        return self.get("cosine_table", compute)

    def knn(self, k: int, ties: str) -> np.ndarray:
        if ties == "average" and self.rows() is not None:
            return self.get(("knn", k, ties), lambda: self.expand(self.knn_table(k), 0.0))
        return self.get(("knn", k, ties), lambda: neighbour_weights(self.cosine(), k, ties))

    def knn_table(self, k: int) -> np.ndarray:
        """``(u, u)``: the neighbour weight (ties ``"average"``) of any candidate ``j != i`` of code ``b`` for a sample
        ``i`` of code ``a`` (a side that repeats rows)."""
        return self.get(("knn_table", k), lambda: self.rows().knn(self.cosine_table(), k))

    def subspace(self, dim: int) -> np.ndarray:
        rows = self.rows()
        if rows is not None:
            return self.get(("subspace", dim), lambda: self.subspace_rows(dim)[self.coded()[1]])

        def compute():
            n, d = self.A.shape
            return top_subspace(self.centered(), dim, self.name, self.scatter() if d <= n else self.linear())
        return self.get(("subspace", dim), compute)

    def subspace_rows(self, dim: int) -> np.ndarray:
        """``(u, dim)``: row ``codes[i]`` is row ``i`` of :meth:`subspace` (a side that repeats rows)."""
        return self.rows().subspace(dim, self.A.shape)


class Rows:
    """The ``u`` distinct rows ``U`` ``(u, d)`` of a matrix that repeats them ``counts`` ``(u,)`` times, and what is
    computed from them alone (memoised in ``memo``): the same for any order of the repeated rows.

    With ``M`` the ``(n, u)`` one-hot code matrix the matrix is ``M U``; its column mean is ``counts @ U / n``, its
    centred Gram ``M (Uc Uc^T) M^T``, its RBF kernel and cosine similarities ``(u, u)`` tables read at the codes,
    and the top left singular vectors of ``M Uc`` are ``M D^{-1/2} W`` with ``W`` those of ``D^{1/2} Uc``
    (``D = diag(counts)``).
    """

    def __init__(self, U: np.ndarray, counts: np.ndarray, name: str, memo: dict):
        self.U, self.counts, self.name, self.memo = U, counts, name, memo
        self.n = int(counts.sum())

    get = Side.get

    def centered(self) -> np.ndarray:
        """``(u, d)``: the distinct rows minus the column mean of the repeated matrix."""
        return self.get("centered", lambda: self.U - (self.counts @ self.U) / self.n)

    def linear(self) -> np.ndarray:
        return self.get("linear", lambda: self.centered() @ self.centered().T)

    def rbf(self, fraction: float) -> np.ndarray:
        """``(u, u)`` RBF kernel with the bandwidth ``fraction`` times the median distance over the ``n (n - 1) / 2``
        pairs of repeated rows (as :func:`rbf_gram` on them; pairs of equal rows are at distance 0)."""
        def compute():
            Uc, G, c = self.centered(), self.linear(), self.counts
            sq = np.einsum("ij,ij->i", Uc, Uc)
            d2 = sq[:, None] + sq[None, :] - 2.0 * G
            np.maximum(d2, 0.0, out=d2)
            np.fill_diagonal(d2, 0.0)
            iu = np.triu_indices(len(c), k=1)
            median = weighted_median(np.append(np.sqrt(d2[iu]), 0.0),
                                      np.append(c[iu[0]] * c[iu[1]], np.sum(c * (c - 1) // 2)))
            if median == 0.0:
                raise ObjalignError(
                    f"the median pairwise distance of {self.name} is 0 (more than half of its row pairs are "
                    f"identical), so the RBF bandwidth is undefined: use kernel='linear'")
            sigma = fraction * median
            return np.exp(-d2 / (2.0 * sigma**2))
        return self.get(("rbf", fraction), compute)

    def cosine(self) -> np.ndarray:
        def compute():
            Un = self.U / np.linalg.norm(self.U, axis=1)[:, None]
            return Un @ Un.T
        return self.get("cosine", compute)

    def knn(self, S: np.ndarray, k: int) -> np.ndarray:
        """``(u, u)`` neighbour weights from the cosine table ``S``: :func:`neighbour_weights` (ties ``"average"``)
        with row ``a``'s candidates the ``counts[b] - (a == b)`` samples of each code ``b``."""
        def compute():
            mult = self.counts[None, :] - np.eye(len(S), dtype=self.counts.dtype)  # candidates per code pair
            order = np.argsort(-S, axis=1, kind="stable")
            seen = np.cumsum(np.take_along_axis(mult, order, axis=1), axis=1)
            at = (seen < k).sum(axis=1)  # position of the k-th largest candidate in each row's order
            kth = S[np.arange(len(S)), order[np.arange(len(S)), at]][:, None]
            real = mult > 0
            above = (S > kth + TIE_ATOL) & real
            tied = (S >= kth - TIE_ATOL) & ~above & real
            need = k - (above * mult).sum(axis=1)
            share = need / (tied * mult).sum(axis=1)
            return above + tied * share[:, None]
        return self.get(("knn", k), compute)

    def hsic_unbiased_self(self, T: np.ndarray) -> float:
        """:func:`hsic_unbiased` ``(A, A)`` of the ``(n, n)`` matrix ``A[i, j] = T[codes[i], codes[j]]`` for ``i != j``
        and 0 on its diagonal, from the ``(u, u)`` table ``T``."""
        c, n = self.counts.astype(np.float64), self.n
        pairs = np.outer(c, c) - np.diag(c)  # ordered pairs i != j of each code pair
        total = float(np.sum(T * pairs))
        col, row = c @ T - np.diag(T), T @ c - np.diag(T)  # A's column and row sums at a sample of each code
        cross = 2.0 * float(np.sum(c * col * row)) / (n - 2)
        trace = float(np.sum(T * T.T * pairs))
        return float((trace + total * total / ((n - 1) * (n - 2)) - cross) / (n * (n - 3)))

    def subspace(self, dim: int, shape: tuple[int, int]) -> np.ndarray:
        """``(u, dim)``: :func:`top_subspace` of the centred repeated matrix (of ``shape`` ``(n, d)``), one row per
        code (the same top singular subspace; its basis may differ by a rotation, which SVCCA ignores)."""
        def compute():
            from scipy.linalg import eigh

            n, d = shape
            root = np.sqrt(self.counts.astype(np.float64))
            Bc = root[:, None] * self.centered()
            u = len(Bc)
            if dim <= u:
                evals, evecs = eigh(Bc @ Bc.T, subset_by_index=[u - dim, u - 1])
                tol = float(np.max(np.abs(evals))) * max(n, d) * np.finfo(np.float64).eps * 10
            if dim > u or int(np.count_nonzero(evals > tol)) < dim:
                rank = int(np.linalg.matrix_rank(Bc))
                raise ObjalignError(
                    f"centred {self.name} has rank {rank}, fewer than dim={dim} directions: pass dim <= {rank}")
            return evecs / root[:, None]
        return self.get(("subspace", dim), compute)


CODED_FRACTION = 0.5
"""A matrix with at most this fraction of distinct rows is computed from them (:class:`Rows`)."""


def unique_codes(A: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(first (u,), codes (n,))`` of :func:`objalign.stats.labels.unique_rows` when ``A`` ``(n, d)`` has at most
    ``CODED_FRACTION * n`` distinct rows, else None."""

    first, codes = unique_rows(A)
    if len(first) > CODED_FRACTION * len(A):
        return None
    return first, codes


def side_of(cache: dict | None, slot: str, A: np.ndarray) -> Side:
    """:class:`Side` of ``A`` (named ``slot`` in messages) memoised in ``cache[slot]``: its entries are replaced
    when ``A`` differs, bit for bit, from the array they were computed from; ``cache=None``: a memo for this call
    only."""
    if cache is None:
        return Side(A, slot, {})
    held = cache.get(slot)
    if held is None or not identical(held[0], A):
        held = cache[slot] = (A.copy(), {})
    return Side(A, slot, held[1], cache)


def identical(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` and ``b`` hold the same bits (``-0.0`` differs from ``0.0``)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fiub" and a.dtype.itemsize in (1, 2, 4, 8):  # compare as unsigned integers
        u = np.dtype(f"u{a.dtype.itemsize}")
        return bool(np.array_equal(np.ascontiguousarray(a).view(u), np.ascontiguousarray(b).view(u)))
    return a.tobytes() == b.tobytes()


def sides_of(X: np.ndarray, Y: np.ndarray, cache: dict | None) -> tuple[Side, Side]:
    """The :class:`Side` of ``X`` and of ``Y`` in ``cache``."""
    return side_of(cache, "X", X), side_of(cache, "Y", Y)


def knn_self_alignment(side: Side, k: int, ties: str) -> float:
    """``HSIC_u(W o K, W o K)`` of one space's cosine kernel ``K`` on its own neighbour weights ``W`` (CKNNA)."""
    def compute():
        if ties == "average" and side.rows() is not None:
            return side.rows().hsic_unbiased_self(side.knn_table(k) * side.cosine_table())
        WK = side.knn(k, ties) * side.cosine()
        return hsic_unbiased(WK, WK)
    return side.get(("knn_self_alignment", k, ties), compute)
