"""Representation similarity measures between two feature sets, computed with no fitting.

Every function takes two arrays ``X`` of shape ``(n_samples, n_features_x)`` and ``Y`` of shape
``(n_samples, n_features_y)`` whose rows are paired (row ``i`` of both describes object ``i``); the
widths may differ. All computations run in float64 on NumPy arrays.

Measures
--------
- :func:`cka`: centred kernel alignment, linear or RBF, biased or unbiased HSIC.
- :func:`mutual_knn`: mutual k-nearest-neighbour overlap (Huh et al. 2024).
- :func:`cknna`: centred kernel nearest-neighbour alignment (Huh et al. 2024).
- :func:`svcca`: singular-vector canonical correlation analysis (Raghu et al. 2017).
- :func:`hsic`: the Hilbert-Schmidt independence criterion on two Gram matrices (biased or unbiased).

Ties in nearest-neighbour measures
----------------------------------
Language targets repeat: every object of a category has the *same* text embedding, so ``Y`` holds
identical rows and a sample's k nearest neighbours in ``Y`` are mostly ties. The k-NN measures take a
``ties`` argument:

``"average"`` (default)
    The score is the exact **expected value under uniformly random tie-breaking**, drawn independently
    in ``X`` and in ``Y``. For sample ``i`` with k-th largest similarity ``s_k``, a candidate ``j`` whose
    similarity exceeds ``s_k`` is a neighbour with weight 1; the ``t`` candidates tied with ``s_k``
    share the ``k - a`` remaining places (``a`` = number strictly above) with weight ``(k - a) / t``
    each; all others have weight 0. Every row of weights sums to ``k``. The result does not depend on
    the order of the samples and needs no random numbers. Without ties it equals the plain k-NN rule.
``"index"``
    Tied candidates are taken in increasing sample index (a stable sort), like a reference
    implementation run on data in the given order. Deterministic, but it depends on sample order.

Two similarities count as tied when they differ by at most ``TIE_ATOL`` (``1e-10``; similarities are
cosines in ``[-1, 1]`` computed in float64, so identical rows always tie). The sample itself is never
its own neighbour, but an identical copy of it is a (tied) candidate like any other sample.

Sharing work across calls
-------------------------
Every measure takes ``cache`` (a dict, default None). What a measure computes from ``X`` alone (its Gram
matrices, RBF kernel, double-centred kernel, self-HSIC, neighbour weights, top singular subspace) is kept in
``cache`` and reused by the next call with the same ``X`` -- e.g. one vision feature set scored against several
text target sets, or a permutation engine of :mod:`objalign.measures.calibrate` after the measure itself; what
it computes from ``Y`` alone is kept for the next call with the same ``Y``. The cache is checked against the
arrays' contents (a call with a different ``X`` or ``Y`` replaces that side's entries), and every value is
computed by the same code with or without it, so results are bit-identical.

Repeated rows
-------------
A matrix with at most ``CODED_FRACTION`` (half) as many distinct rows as rows -- text targets, one embedding per
category -- is computed from its ``u`` distinct rows: its column mean ``counts @ U / n``, centred Gram, RBF kernel
(the median distance over the ``n (n - 1) / 2`` pairs from the ``u (u + 1) / 2`` distinct ones, weighted by their
counts), cosine similarities and k-NN weights (ties ``"average"``) are ``(u, u)`` tables read at the codes, and its
top singular subspace comes from a ``(u, u)`` eigenproblem. The results equal the computation on all ``n`` rows up
to rounding (``tests/test_similarity_rows.py``); a cache keeps the tables for any order of the same rows (the
shuffled pairing).
"""

from __future__ import annotations

import numpy as np

from objalign.errors import ObjalignError
from objalign.stats.intervals import weighted_median as per_row
from objalign.stats.resampling import unique_rows

__all__ = ["TIE_ATOL", "cka", "cknna", "hsic", "mutual_knn", "svcca"]

TIE_ATOL = 1e-10
"""Absolute tolerance under which two cosine similarities count as tied in k-NN measures."""

_TIES = ("average", "index")


# ----------------------------------------------------------------------------------------- validation
def _as_matrix(a, name: str) -> np.ndarray:
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ObjalignError(
            f"{name} must be a numeric array of shape (n_samples, n_features); "
            f"could not convert it to float ({exc}): pass a NumPy array of numbers"
        ) from None
    if arr.ndim != 2:
        raise ObjalignError(
            f"{name} must be 2-D with shape (n_samples, n_features), got shape {arr.shape}: "
            f"reshape it, e.g. {name}.reshape(len({name}), -1)"
        )
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ObjalignError(
            f"{name} contains {bad} NaN or infinite values; similarity measures need finite "
            f"features: drop or repair those rows first"
        )
    return arr


def _validate_pair(X, Y, min_samples: int, measure: str) -> tuple[np.ndarray, np.ndarray]:
    X = _as_matrix(X, "X")
    Y = _as_matrix(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise ObjalignError(
            f"X and Y must have the same number of rows (paired samples), got X with "
            f"{X.shape[0]} and Y with {Y.shape[0]}: pass one row per object in both"
        )
    if X.shape[0] < min_samples:
        raise ObjalignError(
            f"{measure} needs at least {min_samples} samples, got {X.shape[0]}: pass more objects"
        )
    if X.shape[1] == 0 or Y.shape[1] == 0:
        raise ObjalignError(
            f"X and Y need at least one feature, got widths {X.shape[1]} and {Y.shape[1]}"
        )
    return X, Y


def _check_k(k, n: int, minimum: int = 1) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ObjalignError(f"k must be an integer, got {k!r}: pass e.g. k=10")
    k = int(k)
    if not minimum <= k <= n - 1:
        raise ObjalignError(
            f"k={k} is out of range for {n} samples: expected {minimum} <= k <= n_samples - 1 = {n - 1}"
        )
    return k


def _check_ties(ties) -> str:
    if ties not in _TIES:
        raise ObjalignError(f"ties={ties!r} is not supported: expected one of {list(_TIES)}")
    return ties


# ------------------------------------------------------------------------------------------ one side
class _Side:
    """One feature matrix ``A`` ``(n, d)`` (``X`` or ``Y``) and what is computed from it alone, memoised in ``memo``.

    Every quantity is computed by the same code whether it comes from the memo or not (bit-identical results). An
    ``ObjalignError`` raised while computing one is memoised too and raised again on the next request.

    When ``A`` repeats rows (at most ``CODED_FRACTION * n`` distinct rows, e.g. text targets: one row per category)
    its centred rows, Grams, kernels, neighbour weights and top subspace are computed from the ``u`` distinct rows
    and expanded by indexing (:class:`_Rows`); ``cache`` (the dict the side lives in, or None) keeps those
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

    def rows(self) -> _Rows | None:
        """The :class:`_Rows` of a side that repeats rows (None otherwise)."""
        def compute():
            coded = self.coded()
            if coded is None:
                return None
            first, codes = coded
            counts = np.bincount(codes, minlength=len(first))
            U = self.A[first]
            holder = _side(self.cache, self.name + " rows", U) if self.cache is not None else self
            return _Rows(U, counts, self.name, holder.get(("rows", counts.tobytes()), dict))
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
        return self.get("centered", lambda: _center(self.A))

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
        return self.get(("rbf", fraction), lambda: _rbf_gram(self.centered(), fraction, self.name, self.linear()))

    def cosine(self) -> np.ndarray:
        rows = self.rows()
        if rows is not None:
            return self.get("cosine", lambda: self.expand(self.cosine_table()))
        return self.get("cosine", lambda: _cosine_gram(self.A, self.name))

    def cosine_table(self) -> np.ndarray:
        """The ``(u, u)`` cosine similarities of the distinct rows (a side that repeats rows)."""
        def compute():
            first, codes = self.coded()
            _check_nonzero(np.linalg.norm(self.rows().U, axis=1)[codes], self.name)
            return self.rows().cosine()
        return self.get("cosine_table", compute)

    def knn(self, k: int, ties: str) -> np.ndarray:
        if ties == "average" and self.rows() is not None:
            return self.get(("knn", k, ties), lambda: self.expand(self.knn_table(k), 0.0))
        return self.get(("knn", k, ties), lambda: _neighbour_weights(self.cosine(), k, ties))

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
            return _top_subspace(self.centered(), dim, self.name, self.scatter() if d <= n else self.linear())
        return self.get(("subspace", dim), compute)

    def subspace_rows(self, dim: int) -> np.ndarray:
        """``(u, dim)``: row ``codes[i]`` is row ``i`` of :meth:`subspace` (a side that repeats rows)."""
        return self.rows().subspace(dim, self.A.shape)


class _Rows:
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

    get = _Side.get

    def centered(self) -> np.ndarray:
        """``(u, d)``: the distinct rows minus the column mean of the repeated matrix."""
        return self.get("centered", lambda: self.U - (self.counts @ self.U) / self.n)

    def linear(self) -> np.ndarray:
        return self.get("linear", lambda: self.centered() @ self.centered().T)

    def rbf(self, fraction: float) -> np.ndarray:
        """``(u, u)`` RBF kernel with the bandwidth ``fraction`` times the median distance over the ``n (n - 1) / 2``
        pairs of repeated rows (as :func:`_rbf_gram` on them; pairs of equal rows are at distance 0)."""
        def compute():
            Uc, G, c = self.centered(), self.linear(), self.counts
            sq = np.einsum("ij,ij->i", Uc, Uc)
            d2 = sq[:, None] + sq[None, :] - 2.0 * G
            np.maximum(d2, 0.0, out=d2)
            np.fill_diagonal(d2, 0.0)
            iu = np.triu_indices(len(c), k=1)
            median = _weighted_median(np.append(np.sqrt(d2[iu]), 0.0),
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
        """``(u, u)`` neighbour weights from the cosine table ``S``: :func:`_neighbour_weights` (ties ``"average"``)
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
        """:func:`_hsic_unbiased` ``(A, A)`` of the ``(n, n)`` matrix ``A[i, j] = T[codes[i], codes[j]]`` for ``i != j``
        and 0 on its diagonal, from the ``(u, u)`` table ``T``."""
        c, n = self.counts.astype(np.float64), self.n
        pairs = np.outer(c, c) - np.diag(c)  # ordered pairs i != j of each code pair
        total = float(np.sum(T * pairs))
        col, row = c @ T - np.diag(T), T @ c - np.diag(T)  # A's column and row sums at a sample of each code
        cross = 2.0 * float(np.sum(c * col * row)) / (n - 2)
        trace = float(np.sum(T * T.T * pairs))
        return float((trace + total * total / ((n - 1) * (n - 2)) - cross) / (n * (n - 3)))

    def subspace(self, dim: int, shape: tuple[int, int]) -> np.ndarray:
        """``(u, dim)``: :func:`_top_subspace` of the centred repeated matrix (of ``shape`` ``(n, d)``), one row per
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
"""A matrix with at most this fraction of distinct rows is computed from them (:class:`_Rows`)."""


def unique_codes(A: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(first (u,), codes (n,))`` of :func:`objalign.stats.resampling.unique_rows` when ``A`` ``(n, d)`` has at most
    ``CODED_FRACTION * n`` distinct rows, else None."""

    first, codes = unique_rows(A)
    if len(first) > CODED_FRACTION * len(A):
        return None
    return first, codes


def distinct_rows(Y, cache: dict | None = None) -> int:
    """The number of distinct rows of ``Y`` ``(n, d)`` (as ``np.unique(Y, axis=0)``); with ``cache``, found once with
    the rest of what the measures compute from ``Y`` alone."""
    side = _side(cache, "Y", np.asarray(Y, dtype=np.float64))
    coded = side.coded()
    if coded is not None:
        return len(coded[0])

    return len(unique_rows(side.A)[0])


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """``np.median(np.repeat(values, weights))`` without the repetition (integer ``weights``, total > 0): the
    bootstrap's exact weighted median (:func:`objalign.stats.intervals.weighted_median`) on one row."""

    return float(per_row(np.asarray(values), np.asarray(weights)[None, :])[0])


def _side(cache: dict | None, slot: str, A: np.ndarray) -> _Side:
    """:class:`_Side` of ``A`` (named ``slot`` in messages) memoised in ``cache[slot]``: its entries are replaced
    when ``A`` differs, bit for bit, from the array they were computed from; ``cache=None``: a memo for this call
    only."""
    if cache is None:
        return _Side(A, slot, {})
    held = cache.get(slot)
    if held is None or not _identical(held[0], A):
        held = cache[slot] = (A.copy(), {})
    return _Side(A, slot, held[1], cache)


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` and ``b`` hold the same bits (``-0.0`` differs from ``0.0``)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fiub" and a.dtype.itemsize in (1, 2, 4, 8):  # compare as unsigned integers
        u = np.dtype(f"u{a.dtype.itemsize}")
        return bool(np.array_equal(np.ascontiguousarray(a).view(u), np.ascontiguousarray(b).view(u)))
    return a.tobytes() == b.tobytes()


def _sides(X: np.ndarray, Y: np.ndarray, cache: dict | None) -> tuple[_Side, _Side]:
    """The :class:`_Side` of ``X`` and of ``Y`` in ``cache``."""
    return _side(cache, "X", X), _side(cache, "Y", Y)


# ------------------------------------------------------------------------------------------- helpers
def _center(X: np.ndarray) -> np.ndarray:
    return X - X.mean(axis=0, keepdims=True)


def _cosine_gram(X: np.ndarray, name: str) -> np.ndarray:
    """Cosine similarity matrix ``(n, n)`` of the rows of ``X`` ``(n, d)``."""
    norms = np.linalg.norm(X, axis=1)
    _check_nonzero(norms, name)
    Z = X / norms[:, None]
    return Z @ Z.T


def _check_nonzero(norms: np.ndarray, name: str) -> None:
    """One error naming the all-zero rows of ``name`` (``norms`` ``(n,)`` its row norms), for cosine similarity."""
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ObjalignError(
            f"{name} has {zero.size} all-zero rows (first at row {int(zero[0])}); cosine similarity "
            f"is undefined for them: drop those rows"
        )


def _neighbour_weights(S: np.ndarray, k: int, ties: str) -> np.ndarray:
    """k-NN membership weights ``(n, n)`` from a similarity matrix ``S`` ``(n, n)``.

    Row ``i`` gives, for each ``j``, the (expected) indicator that ``j`` is among the ``k`` most
    similar samples to ``i`` (self excluded), with the module's tie rule. Rows sum to ``k``.
    """
    n = S.shape[0]
    S = S.copy()
    np.fill_diagonal(S, -np.inf)
    kth = np.partition(S, n - k, axis=1)[:, n - k][:, None]  # k-th largest per row (finite)
    above = S > kth + TIE_ATOL
    tied = (S >= kth - TIE_ATOL) & ~above
    need = k - above.sum(axis=1)  # >= 1 places left for the tied block
    if ties == "average":
        share = need / tied.sum(axis=1)
        return above + tied * share[:, None]
    rank = np.cumsum(tied, axis=1)  # 1-based rank of each tied candidate in index order
    return (above | (tied & (rank <= need[:, None]))).astype(np.float64)


def _double_center(K: np.ndarray) -> np.ndarray:
    """``H K H`` with ``H = I - 11^T / n`` for a square ``K`` ``(n, n)``."""
    return K - K.mean(axis=0, keepdims=True) - K.mean(axis=1, keepdims=True) + K.mean()


def _hsic_biased(K: np.ndarray, L: np.ndarray) -> float:
    return _hsic_biased_centred(_double_center(K), L)


def _hsic_biased_centred(Kc: np.ndarray, L: np.ndarray) -> float:
    """The biased HSIC from the double-centred ``Kc = H K H`` (what :func:`_hsic_biased` computes first)."""
    n = Kc.shape[0]
    return float(np.sum(Kc * L.T)) / (n - 1) ** 2


def _hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    n = K.shape[0]
    Kt = K.copy()
    Lt = L.copy()
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    trace_term = np.sum(Kt * Lt.T)  # tr(Kt Lt)
    sums_term = Kt.sum() * Lt.sum() / ((n - 1) * (n - 2))
    cross_term = 2.0 * (Kt.sum(axis=0) @ Lt.sum(axis=1)) / (n - 2)  # 2/(n-2) 1^T Kt Lt 1
    return float((trace_term + sums_term - cross_term) / (n * (n - 3)))


def hsic(K, L, unbiased: bool = False) -> float:
    """Hilbert-Schmidt independence criterion of two Gram matrices.

    Parameters
    ----------
    K, L : array-like of shape (n_samples, n_samples)
        Kernel (Gram) matrices of the same samples in two spaces.
    unbiased : bool, default False
        False: the biased estimator ``tr(K H L H) / (n - 1)^2`` with ``H = I - 11^T / n``
        (Gretton et al. 2005). True: the unbiased U-statistic of Song et al. 2012 ("Feature
        Selection via Dependence Maximization", JMLR 13, eq. 5), with ``K~``, ``L~`` the matrices
        with zeroed diagonals::

            [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n (n-3))

        It needs ``n >= 4``.

    Returns
    -------
    float
        The HSIC estimate (the unbiased one can be slightly negative).
    """
    K = _as_matrix(K, "K")
    L = _as_matrix(L, "L")
    if K.shape[0] != K.shape[1] or K.shape != L.shape:
        raise ObjalignError(
            f"K and L must be square Gram matrices of the same shape (n, n), got {K.shape} and "
            f"{L.shape}: build them as X @ X.T on the same samples"
        )
    n = K.shape[0]
    minimum = 4 if unbiased else 2
    if n < minimum:
        kind = "unbiased" if unbiased else "biased"
        raise ObjalignError(f"{kind} HSIC needs at least {minimum} samples, got {n}")
    return _hsic_unbiased(K, L) if unbiased else _hsic_biased(K, L)


# ----------------------------------------------------------------------------------------------- CKA
def _rbf_gram(X: np.ndarray, fraction: float, name: str, gram: np.ndarray | None = None) -> np.ndarray:
    """RBF kernel ``(n, n)`` of the rows of ``X`` ``(n, d)`` (``gram``: ``X @ X.T`` when already computed)."""
    sq = np.einsum("ij,ij->i", X, X)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (X @ X.T if gram is None else gram)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    iu = np.triu_indices(X.shape[0], k=1)
    median = float(np.median(np.sqrt(d2[iu])))
    if median == 0.0:
        raise ObjalignError(
            f"the median pairwise distance of {name} is 0 (more than half of its row pairs are "
            f"identical), so the RBF bandwidth is undefined: use kernel='linear'"
        )
    sigma = fraction * median
    return np.exp(-d2 / (2.0 * sigma**2))


def cka(X, Y, kernel: str = "linear", unbiased: bool = False, sigma: float | None = None,
        cache: dict | None = None) -> float:
    """Centred kernel alignment between two representations of the same samples.

    ``CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` (Kornblith et al. 2019, "Similarity of
    Neural Network Representations Revisited", ICML), with ``K``, ``L`` the Gram matrices of ``X``
    and ``Y``. With the linear kernel and the biased HSIC this equals the feature-space formula on
    column-centred data ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``, which is used when it is
    cheaper. CKA is invariant to orthogonal transforms and isotropic scaling of either space; it is
    1 for identical representations up to those, and lies in ``[0, 1]`` for the biased estimator.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
        Paired features; widths may differ.
    kernel : {"linear", "rbf"}, default "linear"
        ``"linear"``: ``K = Xc Xc^T`` on column-centred ``X``. ``"rbf"``:
        ``K_ij = exp(-||x_i - x_j||^2 / (2 sigma_X^2))`` with a bandwidth set per space as in
        Kornblith et al.: ``sigma_X = sigma * median_{i<j} ||x_i - x_j||`` (likewise for ``Y``).
        The median is taken over distinct pairs ``i < j`` (Kornblith et al.'s code takes the
        median of squared distances including the zero diagonal; the difference vanishes as
        ``n`` grows).
    unbiased : bool, default False
        Use the unbiased HSIC estimator of Song et al. 2012 (see :func:`hsic`) instead of the
        biased one; needs ``n_samples >= 4``. Unbiased CKA of independent data is close to 0
        (and can be slightly negative), whereas biased CKA is inflated for small ``n``.
    sigma : float, optional
        RBF only: bandwidth as a **fraction of the median pairwise distance** (Kornblith et al.'s
        ``threshold``; the paper reports 0.2, 0.4 and 0.8). Default 0.8.
    cache : dict, optional
        Shared by calls on the same ``X`` (see "Sharing work across calls" in the module docstring): what is
        computed from ``X`` (or ``Y``) alone is reused; the result is the same with or without it.

    Returns
    -------
    float
        The CKA value.

    Raises
    ------
    ObjalignError
        Bad shapes, non-finite values, a constant representation (zero self-HSIC), or an unknown
        kernel.
    """
    if kernel not in ("linear", "rbf"):
        raise ObjalignError(f"kernel={kernel!r} is not supported: expected 'linear' or 'rbf'")
    if sigma is not None and kernel != "rbf":
        raise ObjalignError("sigma only applies to kernel='rbf': drop sigma or set kernel='rbf'")
    if sigma is None:
        sigma = 0.8
    elif not (isinstance(sigma, (int, float, np.floating)) and np.isfinite(sigma) and sigma > 0):
        raise ObjalignError(
            f"sigma={sigma!r} must be a positive number (a fraction of the median distance), e.g. 0.8"
        )
    X, Y = _validate_pair(X, Y, 4 if unbiased else 2, "CKA" + (" (unbiased)" if unbiased else ""))
    n = X.shape[0]
    xs, ys = _sides(X, Y, cache)

    if kernel == "linear" and not unbiased:
        dx, dy = X.shape[1], Y.shape[1]
        if dx * dy + dx * dx + dy * dy <= n * (dx + dy):  # feature space is cheaper than Grams
            Xc, Yc = xs.centered(), ys.centered()
            cross = float(np.sum((Yc.T @ Xc) ** 2))
            self_x = xs.get("norm_scatter", lambda: float(np.linalg.norm(xs.scatter())))
            self_y = ys.get("norm_scatter", lambda: float(np.linalg.norm(ys.scatter())))
        else:
            K, L = xs.linear(), ys.linear()
            cross = float(np.sum(K * L))
            self_x = xs.get("norm_linear", lambda: float(np.linalg.norm(K)))
            self_y = ys.get("norm_linear", lambda: float(np.linalg.norm(L)))
        _check_self(self_x, "X")
        _check_self(self_y, "Y")
        return cross / (self_x * self_y)

    gram = "linear" if kernel == "linear" else ("rbf", float(sigma))
    if kernel == "linear":
        K, L = xs.linear(), ys.linear()
    else:
        K, L = xs.rbf(float(sigma)), ys.rbf(float(sigma))
    if unbiased:
        hxx = xs.get(("hsic_unbiased", gram), lambda: _hsic_unbiased(K, K))
        hyy = ys.get(("hsic_unbiased", gram), lambda: _hsic_unbiased(L, L))
    else:
        Kc = xs.get(("double_centred", gram), lambda: _double_center(K))
        hxx = xs.get(("hsic_biased", gram), lambda: _hsic_biased_centred(Kc, K))
        hyy = ys.get(("hsic_biased", gram), lambda: _hsic_biased(L, L))
    _check_self(hxx, "X")
    _check_self(hyy, "Y")
    cross = _hsic_unbiased(K, L) if unbiased else _hsic_biased_centred(Kc, L)
    return cross / np.sqrt(hxx * hyy)


def _check_self(value: float, name: str) -> None:
    if not value > 0:
        raise ObjalignError(
            f"{name} has no usable variation (its self-HSIC is {value:.3g}, e.g. all rows equal), so "
            f"the measure is undefined: check that {name} is not constant"
        )


# ------------------------------------------------------------------------------------ k-NN measures
def mutual_knn(X, Y, k: int = 10, ties: str = "average", cache: dict | None = None) -> float:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024, "The Platonic Representation Hypothesis").

    For each sample ``i`` let ``N_X(i)`` be its ``k`` nearest neighbours by cosine similarity among
    the rows of ``X`` (itself excluded) and ``N_Y(i)`` the same in ``Y``. The score is
    ``mean_i |N_X(i) ∩ N_Y(i)| / k``, in ``[0, 1]``; it is 1 when both spaces have the same
    neighbourhoods, and about ``k / (n - 1)`` for independent spaces.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
        Paired features; widths may differ; no row may be all zeros.
    k : int, default 10
        Neighbourhood size, ``1 <= k <= n_samples - 1``.
    ties : {"average", "index"}, default "average"
        Tie rule (see the module docstring). ``"average"`` returns the exact expectation of the
        score when ties at the k-th neighbour are broken uniformly at random, independently in
        each space: ``mean_i sum_j w_X(i, j) w_Y(i, j) / k`` with the fractional neighbour weights
        ``w``. ``"index"`` keeps the lowest-index tied candidates.
    cache : dict, optional
        Shared by calls on the same ``X`` (see "Sharing work across calls" in the module docstring): what is
        computed from ``X`` (or ``Y``) alone is reused; the result is the same with or without it.

    Returns
    -------
    float
        The mutual k-NN score.
    """
    ties = _check_ties(ties)
    X, Y = _validate_pair(X, Y, 2, "mutual_knn")
    n = X.shape[0]
    k = _check_k(k, n)
    xs, ys = _sides(X, Y, cache)
    WX, WY = xs.knn(k, ties), ys.knn(k, ties)
    return float(np.sum(WX * WY) / (n * k))


def cknna(X, Y, k: int = 10, ties: str = "average", cache: dict | None = None) -> float:
    """Centred kernel nearest-neighbour alignment (CKNNA; Huh et al. 2024).

    CKA restricted to pairs that are nearest neighbours in both spaces, following the authors'
    reference code (``platonic-rep``, ``metrics.AlignmentMetrics.cknna`` with its defaults
    ``unbiased=True``, ``distance_agnostic=False``, on L2-normalised features):

    - ``K = Xn Xn^T`` and ``L = Yn Yn^T`` are cosine-similarity kernels (rows of ``X``, ``Y``
      scaled to unit norm; no centring beyond the HSIC's own).
    - ``M_KL(i, j) = 1`` when ``j != i`` is among the ``k`` nearest neighbours of ``i`` in both
      ``K`` and ``L`` (row-wise, so ``M`` need not be symmetric); ``M_KK`` uses ``K`` alone.
    - ``CKNNA = A(K, L) / sqrt(A(K, K) A(L, L))`` with ``A(K, L) = HSIC_u(M_KL ∘ K, M_KL ∘ L)``,
      ``HSIC_u`` the unbiased estimator of Song et al. 2012 (:func:`hsic`).

    Because the mask is row-wise (``M`` is not symmetric), the reference formula is **not
    symmetric** in its arguments: ``cknna(X, Y)`` and ``cknna(Y, X)`` differ slightly (they agree
    for ``k = n - 1``). Pass vision features as ``X`` and language features as ``Y`` consistently.
    Differences from the reference code: no ``+1e-6`` in the denominator (the exact ratio is
    returned, and a zero or negative denominator raises), and ties follow ``ties``. With
    ``ties="average"`` each mask entry is replaced by its expectation under uniform random
    tie-breaking (``w_K(i, j) w_L(i, j)`` for ``A(K, L)``, ``w_K(i, j)`` for ``A(K, K)``);
    without ties both rules equal the reference definition. With ``k = n - 1`` every pair is
    kept and CKNNA equals unbiased linear CKA of the row-normalised features.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
        Paired features; widths may differ; no row may be all zeros; ``n_samples >= 4``.
    k : int, default 10
        Neighbourhood size, ``2 <= k <= n_samples - 1`` (the reference code requires ``k >= 2``).
    ties : {"average", "index"}, default "average"
        Tie rule (see the module docstring).
    cache : dict, optional
        Shared by calls on the same ``X`` (see "Sharing work across calls" in the module docstring): what is
        computed from ``X`` (or ``Y``) alone is reused; the result is the same with or without it.

    Returns
    -------
    float
        The CKNNA value (1 for identical neighbourhood structure, near 0 for independent spaces).
    """
    ties = _check_ties(ties)
    X, Y = _validate_pair(X, Y, 4, "cknna")
    n = X.shape[0]
    k = _check_k(k, n, minimum=2)
    xs, ys = _sides(X, Y, cache)
    K, L = xs.cosine(), ys.cosine()
    WK, WL = xs.knn(k, ties), ys.knn(k, ties)
    M = WK * WL
    kl = _hsic_unbiased(M * K, M * L)
    kk = _knn_self_alignment(xs, k, ties)
    ll = _knn_self_alignment(ys, k, ties)
    if not kk * ll > 0:
        raise ObjalignError(
            f"CKNNA is undefined here: the k-NN self-alignments of X and Y are {kk:.3g} and {ll:.3g} "
            f"(their product must be positive); use a larger k or check for constant features"
        )
    return float(kl / np.sqrt(kk * ll))


def _knn_self_alignment(side: _Side, k: int, ties: str) -> float:
    """``HSIC_u(W o K, W o K)`` of one space's cosine kernel ``K`` on its own neighbour weights ``W`` (CKNNA)."""
    def compute():
        if ties == "average" and side.rows() is not None:
            return side.rows().hsic_unbiased_self(side.knn_table(k) * side.cosine_table())
        WK = side.knn(k, ties) * side.cosine()
        return _hsic_unbiased(WK, WK)
    return side.get(("knn_self_alignment", k, ties), compute)


# --------------------------------------------------------------------------------------------- SVCCA
def _top_subspace(Xc: np.ndarray, dim: int, name: str, gram: np.ndarray | None = None) -> np.ndarray:
    """Orthonormal basis ``(n, dim)`` of the span of the top ``dim`` left singular vectors of ``Xc``.

    Uses the symmetric eigendecomposition of the smaller of ``Xc^T Xc`` and ``Xc Xc^T`` (only the
    top ``dim`` eigenpairs; ``gram``: that matrix when already computed), which is much faster than a
    full SVD for ``dim << min(n, d)``.
    """
    from scipy.linalg import eigh

    n, d = Xc.shape
    m = min(n, d)
    if gram is None:
        gram = Xc.T @ Xc if d <= n else Xc @ Xc.T
    evals, evecs = eigh(gram, subset_by_index=[m - dim, m - 1])
    top = float(np.max(np.abs(evals)))
    tol = top * max(n, d) * np.finfo(np.float64).eps * 10
    rank_ok = int(np.count_nonzero(evals > tol))
    if rank_ok < dim:
        rank = int(np.linalg.matrix_rank(Xc))
        raise ObjalignError(
            f"centred {name} has rank {rank}, fewer than dim={dim} directions: pass dim <= {rank}"
        )
    if d <= n:
        basis, _ = np.linalg.qr(Xc @ evecs)  # Xc V spans the top left singular subspace
        return basis
    return evecs


def svcca(X, Y, dim: int = 10, cache: dict | None = None) -> float:
    """Singular vector canonical correlation analysis (Raghu et al. 2017, "SVCCA", NeurIPS).

    Each representation is column-centred and reduced by SVD to its top ``dim`` singular
    directions (``Xc ≈ U_X S_X V_X^T``, keeping ``U_X S_X`` of shape ``(n_samples, dim)``); CCA
    between the two reduced sets gives ``dim`` canonical correlations ``rho_1 >= ... >= rho_dim``,
    and the score is their mean. Because the reduced sets span the column spaces of ``U_X`` and
    ``U_Y``, the canonical correlations are the singular values of ``U_X^T U_Y`` (the cosines of
    the principal angles between the two subspaces), which is how they are computed here.
    Unlike the Huh et al. reference code, features are only centred, not scaled to unit variance
    (Raghu et al. centre only), and the top singular directions are computed exactly (from the
    eigendecomposition of the smaller Gram matrix, not a randomised low-rank SVD).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
        Paired features; widths may differ.
    dim : int, default 10
        Number of singular directions kept in each space; ``1 <= dim`` and both centred
        matrices must have rank at least ``dim`` (so ``dim <= n_samples - 1``).
    cache : dict, optional
        Shared by calls on the same ``X`` (see "Sharing work across calls" in the module docstring): what is
        computed from ``X`` (or ``Y``) alone is reused; the result is the same with or without it.

    Returns
    -------
    float
        Mean canonical correlation, in ``[0, 1]``.
    """
    X, Y = _validate_pair(X, Y, 2, "svcca")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ObjalignError(f"dim must be a positive integer, got {dim!r}: pass e.g. dim=10")
    dim = int(dim)
    limit = min(X.shape[0] - 1, X.shape[1], Y.shape[1])
    if dim > limit:
        raise ObjalignError(
            f"dim={dim} is too large: expected dim <= min(n_samples - 1, n_features_x, "
            f"n_features_y) = {limit}"
        )
    xs, ys = _sides(X, Y, cache)
    Ux, Uy = xs.subspace(dim), ys.subspace(dim)
    rho = np.linalg.svd(Ux.T @ Uy, compute_uv=False)
    return float(np.mean(np.clip(rho, 0.0, 1.0)))
