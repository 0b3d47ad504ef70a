"""Permutation engines: every calibrated measure evaluated on many permuted pairings ``(X, Y[pi])`` at once.

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

The shared precomputations (sums by code, lookups, factors) live in :mod:`objalign.measures._grouping`; the
calibration itself (threshold, p-value, calibrated score, Benjamini-Hochberg) in :mod:`objalign.measures.calibrate`.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from objalign.errors import ObjalignError
from objalign.measures._grouping import (
    KNN_CHUNK,
    CodedKernel,
    Lookup,
    canonical,
    canonical_sums,
    cknna_graph,
    factor,
    factor_terms,
    kernel_terms,
    knn_lookup,
    knn_nonzeros,
    pair_index,
    pair_weights,
    quad,
    sparse_entries,
    to_canonical,
)
from objalign.measures._kernels import check_k, check_self, double_center, validate_pair
from objalign.measures._sides import knn_self_alignment, sides_of
from objalign.measures.registry import get

__all__ = ["MEASURES", "Engine", "permutation_engine"]


MEASURES: dict[str, type] = {}
"""Measure ID -> fast permutation engine class (options are the class's keyword arguments); every key is an ID of
the registry (:mod:`objalign.measures.registry`)."""


def _register(name: str):
    def deco(cls):
        cls.name = name
        MEASURES[name] = cls
        return cls
    return deco


class Engine:
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


class _CKA(Engine):
    kernel = "linear"
    unbiased = False

    def __init__(self, X, Y, sigma: float | None = None, cache: dict | None = None):
        if sigma is not None and self.kernel != "rbf":
            raise ObjalignError(f"{self.name}: sigma only applies to the RBF kernel; drop it")
        sig = 0.8 if sigma is None else sigma
        if not (isinstance(sig, (int, float, np.floating)) and np.isfinite(sig) and sig > 0):
            raise ObjalignError(f"sigma={sigma!r} must be a positive number (a fraction of the median distance)")
        X, Y = validate_pair(X, Y, 4 if self.unbiased else 2, self.name)
        xs, ys = sides_of(X, Y, cache)
        self.n = len(X)
        coded = ys.coded()
        self.F = self.A = self.G = self.L = self.coded = None
        if self.kernel == "linear":
            self.F = F = xs.get("factor", lambda: factor(xs.centered()))  # K = F F^T is already centred
            a_key = "factor"
            dK, rK, sK, kk = xs.get("factor_terms", lambda: factor_terms(F))
            if coded is not None:
                self.coded = ys.get("coded_linear", lambda: CodedKernel(coded[1], ys.rows().linear()))
            else:
                self.G = ys.get("factor", lambda: factor(ys.centered()))
        else:
            gram = ("rbf", float(sig))
            K = xs.rbf(float(sig))
            if coded is not None:  # (u, u) table of the category rows
                self.coded = ys.get(("coded", gram), lambda: CodedKernel(coded[1], ys.rows().rbf(float(sig))))
                ll_biased = ys.get(("sq_norm_centred", gram), self.coded.sq_norm_centred)
            else:
                self.L = L = ys.rbf(float(sig))
                ll_biased = ys.get(("sq_norm_centred", gram), lambda: float(np.sum(double_center(L) ** 2)))
            Kc = xs.get(("double_centred", gram), lambda: double_center(K))
            self.A = K if self.unbiased else Kc
            a_key = gram if self.unbiased else ("double_centred", gram)
            dK, rK, sK, kk = xs.get(("kernel_terms", gram, self.unbiased), lambda: kernel_terms(K, Kc, self.unbiased))
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
        check_self(hxx, "X")
        check_self(hyy, "Y")
        self.denominator = math.sqrt(hxx * hyy)
        A = self.F if self.F is not None else self.A
        self.sums = lambda key, M, P, pairs=None: canonical_sums(xs, key, M, self.coded.codes, len(self.coded.Lu), P,
                                                                   pairs)
        self.pairs = lambda P: self.sums(a_key, A, P, "factor" if self.F is not None else "dense")

    def _hsic_u(self, q, diag, rows, sums):
        """Song et al.'s unbiased HSIC from ``sum(K * L)``, ``diag(K) . diag(L)``, zero-diagonal row sums and totals."""
        n = self.n
        return (q - diag + sums / ((n - 1) * (n - 2)) - 2.0 * rows / (n - 2)) / (n * (n - 3))

    def scores(self, P):
        if self.coded is None:
            q = quad(self.F, self.A, self.G, self.L, P)
            if self.unbiased:
                q = self._hsic_u(q, self.dL[P] @ self.dK, self.rL[P] @ self.rK, self.sK * self.sL)
            return q / self.denominator
        # L = M Lu M^T: sum(A * L[pi][:, pi]) = sum(Lu * M_pi^T A M_pi), the (u, u) pair sums of X's side
        A, key = (self.F if self.F is not None else self.A), P.tobytes()
        hit = self.coded.quads.get(key)  # the biased and unbiased engines on the same X and Y share A and L
        if hit is None or hit[0] is not A:  # (the entry holds its A, so ``is`` cannot mistake a new one for it)
            H, rank = self.pairs(P)
            hit = self.coded.quads[key] = (A, np.einsum("bac,ac->b", H, to_canonical(self.coded.Lu, rank, 2)))
        q = hit[1]
        if self.unbiased:  # dL[pi] . dK and rL[pi] . rK from the sums of dK and rK by the permuted codes
            T, rank = self.sums(self.terms_key, self.terms, P)
            Lu, counts = self.coded.Lu, self.coded.counts
            dLu = np.diag(Lu).copy()
            tables = to_canonical(np.column_stack([dLu, Lu @ counts - dLu]), rank)
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


@_register("mutual_knn")
class _MutualKNN(Engine):
    def __init__(self, X, Y, k: int = 10, cache: dict | None = None):
        X, Y = validate_pair(X, Y, 2, "mutual_knn")
        xs, ys = sides_of(X, Y, cache)
        self.n = n = len(X)
        self.k = k = check_k(k, n)
        # the sum runs over the sparser matrix's nonzeros; the other is looked up at the permuted positions
        self.x_sparse = knn_nonzeros(xs, k) <= knn_nonzeros(ys, k)
        sparse, dense = (xs, ys) if self.x_sparse else (ys, xs)
        self.r, self.c, self.w = sparse.get(("knn_entries", k), lambda: sparse_entries(sparse.knn(k, "average")))
        self.D = knn_lookup(dense, k)
        self.x = xs

    def scores(self, P):
        if self.x_sparse and self.D.codes is not None:  # sum over code pairs of X's weights, shared by target sets
            D = self.D
            H, rank = pair_weights(self.x, ("knn", self.k), self.r, self.c, self.w, D.codes, D.u, P)
            return H @ to_canonical(D.table, rank, 2).ravel() / (self.n * self.k)
        if not self.x_sparse:  # sum_ij W_X[i, j] W_Y[pi i, pi j] = sum_ab W_X[pinv a, pinv b] W_Y[a, b]
            P = np.argsort(P, axis=1)
        out = np.empty(len(P))
        for s in range(0, len(P), KNN_CHUNK):
            out[s:s + KNN_CHUNK] = self.D.at(P[s:s + KNN_CHUNK], self.r, self.c) @ self.w
        return out / (self.n * self.k)


@_register("cknna")
class _CKNNA(Engine):
    def __init__(self, X, Y, k: int = 10, cache: dict | None = None):
        X, Y = validate_pair(X, Y, 4, "cknna")
        xs, ys = sides_of(X, Y, cache)
        self.n = n = len(X)
        self.k = k = check_k(k, n, minimum=2)
        xs.cosine(), (ys.cosine_table() if ys.rows() is not None else ys.cosine())  # X's zero rows reported first
        kk = knn_self_alignment(xs, k, "average")  # neither self-alignment depends on the pairing
        ll = knn_self_alignment(ys, k, "average")
        if not kk * ll > 0:
            raise ObjalignError(
                f"CKNNA is undefined here: the k-NN self-alignments of X and Y are {kk:.3g} and {ll:.3g} "
                f"(their product must be positive); use a larger k or check for constant features")
        self.denominator = math.sqrt(kk * ll)
        self.WL = knn_lookup(ys, k)
        self.L = ys.get("cosine_lookup", lambda: Lookup(None, ys.coded(), ys.cosine_table()) if ys.rows() is not None
                        else Lookup(ys.cosine(), None))
        self.x = xs
        # the cross term lives on X's neighbour graph
        self.r, self.c, self.wk, self.kw, self.has_t, self.t, self.col_sum, self.row_sum = xs.get(
            ("cknna_graph", k), lambda: cknna_graph(xs.cosine(), xs.knn(k, "average")))

    def scores(self, P):
        if self.WL.codes is not None and self.L.codes is not None:
            return self._coded_scores(P)
        out = np.empty(len(P))
        for s in range(0, len(P), KNN_CHUNK):
            Pc = P[s:s + KNN_CHUNK]
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
        weights summed by code pair (:func:`pair_weights`) against the tables; ``1^T A B 1`` reads the tables at
        X's graph entries through one code-pair index (:func:`pair_index`). Both are shared by every target set."""
        WL, L = self.WL, self.L
        codes, u, key = WL.codes, WL.u, ("cknna", self.k)
        canon, rank = canonical(codes, u)
        wl = to_canonical(WL.table, rank, 2)
        wll = wl * to_canonical(L.table, rank, 2)  # an entry of M o L[pi][:, pi] is w_K wl l

        def weights(name, r, c, w):
            return pair_weights(self.x, key + (name,), r, c, w, codes, u, P)[0]
        sum_a = weights("kw", self.r, self.c, self.kw) @ wl.ravel()
        sum_b = weights("wk", self.r, self.c, self.wk) @ wll.ravel()
        # trace: entry e times its transpose t(e), read at (pi r_e, pi c_e) from wl and the transpose of wll
        t = self.has_t
        trace = weights("trace", self.r[t], self.c[t], self.kw[t] * self.wk[self.t]) @ (wl * wll.T).ravel()
        index, _ = pair_index(self.x, key, self.r, self.c, codes, u, P)
        cross = np.empty(len(P))
        for s in range(0, len(P), KNN_CHUNK):  # (in chunks either way: the same arithmetic with or without index)
            Pc = P[s:s + KNN_CHUNK]
            if index is not None:
                at = index[s:s + len(Pc)]
            else:
                C = canon[Pc]
                at = C[:, self.r] * u + C[:, self.c]
            a, b = self.kw * wl.ravel()[at], self.wk * wll.ravel()[at]
            cross[s:s + len(Pc)] = np.einsum("bj,bj->b", (self.col_sum @ a.T).T, (self.row_sum @ b.T).T)
        return self._hsic(trace, sum_a, sum_b, cross) / self.denominator


@_register("svcca")
class _SVCCA(Engine):
    def __init__(self, X, Y, dim: int = 10, cache: dict | None = None):
        X, Y = validate_pair(X, Y, 2, "svcca")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ObjalignError(f"dim must be a positive integer, got {dim!r}: pass e.g. dim=10")
        limit = min(X.shape[0] - 1, X.shape[1], Y.shape[1])
        if dim > limit:
            raise ObjalignError(f"dim={dim} is too large: expected dim <= min(n_samples - 1, n_features_x, "
                                f"n_features_y) = {limit}")
        xs, ys = sides_of(X, Y, cache)
        self.n, self.dim, self.x, self.y = len(X), int(dim), xs, ys
        self.Ux, self.Uy = xs.subspace(int(dim)), ys.subspace(int(dim))

    def scores(self, P):
        out = np.empty(len(P))
        if self.y.rows() is not None:  # U_Y = M W: U_Y[pi]^T U_X = W^T (M_pi^T U_X), X's group sums
            codes, W = self.y.coded()[1], self.y.subspace_rows(self.dim)
            G, rank = canonical_sums(self.x, ("subspace", self.dim), self.Ux, codes, len(W), P)
            C = np.matmul(to_canonical(W, rank).T, G)  # (B, dim, dim)
            return np.mean(np.clip(np.linalg.svd(C, compute_uv=False), 0.0, 1.0), axis=1)
        for s in range(0, len(P), KNN_CHUNK):
            C = np.matmul(self.Uy[P[s:s + KNN_CHUNK]].transpose(0, 2, 1), self.Ux)  # (B, dim, dim)
            out[s:s + len(C)] = np.mean(np.clip(np.linalg.svd(C, compute_uv=False), 0.0, 1.0), axis=1)
        return out


class _Callable(Engine):
    """Any ``f(X, Y) -> float``, recomputed on each permuted ``Y``."""

    def __init__(self, f: Callable, X, Y, **options):
        self.name = getattr(f, "__name__", "callable")
        self.s_max = float(options.pop("s_max", 1.0))
        self.f, self.options = f, options
        self.X, self.Y = validate_pair(X, Y, 2, self.name)
        self.n = len(self.X)

    def scores(self, P):
        out = np.array([float(self.f(self.X, self.Y[pi], **self.options)) for pi in P])
        if not np.all(np.isfinite(out)):
            raise ObjalignError(f"measure {self.name} returned a non-finite value on a permuted pairing: it must "
                                "return a finite number for any pairing")
        return out


def permutation_engine(measure, X, Y, cache: dict | None = None, **options) -> Engine:
    """The engine of ``measure`` (an ID of :func:`objalign.measures.list` or a callable ``f(X, Y) -> float``) on
    ``(X, Y)``.

    An ID is looked up in the registry (:mod:`objalign.measures.registry`): one with a fast engine (a name in
    :data:`MEASURES`) gets it, with the engine's options (``k``, ``dim``, ``sigma``); any other (e.g.
    ``cka_rbf_unbiased``) re-evaluates its registered callable on each permuted ``Y``, with that callable's options.
    ``engine.score(pi)`` returns the measure on ``(X, Y[pi])`` (``pi=None``: the observed pairing). ``cache`` (a
    dict, as in :mod:`objalign.measures.similarity`): the precomputations of ``X`` alone (Grams, factors, neighbour
    graphs, subspaces) are kept in it and reused by engines built on the same ``X`` -- against another ``Y``, or
    for another measure -- and those of ``Y`` alone by the next engine on the same ``Y``; the engine's scores are
    identical with or without it. A callable measure, or an ID without a fast engine, ignores it.
    """
    if callable(measure):
        return _Callable(measure, X, Y, **options)
    try:
        record = get(measure)
    except ObjalignError as exc:
        raise ObjalignError(f"{exc} or a callable f(X, Y) -> float") from None
    if measure not in MEASURES:  # no fast engine: the registered callable, recomputed per permutation
        if set(options) - set(record.options):
            raise ObjalignError(f"bad options {sorted(options)} for measure {measure!r}: it takes "
                                f"{', '.join(record.options) or 'none'}")
        engine = _Callable(record.function, X, Y, **options)
        engine.name = measure
        return engine
    try:
        return MEASURES[measure](X, Y, cache=cache, **options)
    except TypeError as exc:
        raise ObjalignError(f"bad options {sorted(options)} for measure {measure!r}: {exc}") from None
