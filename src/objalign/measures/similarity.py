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

Layout
------
This module holds the measures; the input checks and dense kernels live in :mod:`objalign.measures._kernels`, one
side's memoised quantities (and the category-row computations) in :mod:`objalign.measures._sides`.
"""

from __future__ import annotations

import numpy as np

from objalign.errors import ObjalignError
from objalign.measures._kernels import (
    TIE_ATOL,
    as_matrix,
    check_k,
    check_self,
    check_ties,
    double_center,
    hsic_biased,
    hsic_biased_centred,
    hsic_unbiased,
    validate_pair,
)
from objalign.measures._sides import CODED_FRACTION, knn_self_alignment, side_of, sides_of, unique_codes
from objalign.stats.labels import unique_rows

__all__ = ["CODED_FRACTION", "TIE_ATOL", "cka", "cknna", "distinct_rows", "hsic", "mutual_knn", "svcca",
           "unique_codes"]


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
    K = as_matrix(K, "K")
    L = as_matrix(L, "L")
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
    return hsic_unbiased(K, L) if unbiased else hsic_biased(K, L)


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
    X, Y = validate_pair(X, Y, 4 if unbiased else 2, "CKA" + (" (unbiased)" if unbiased else ""))
    n = X.shape[0]
    xs, ys = sides_of(X, Y, cache)

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
        check_self(self_x, "X")
        check_self(self_y, "Y")
        return cross / (self_x * self_y)

    gram = "linear" if kernel == "linear" else ("rbf", float(sigma))
    if kernel == "linear":
        K, L = xs.linear(), ys.linear()
    else:
        K, L = xs.rbf(float(sigma)), ys.rbf(float(sigma))
    if unbiased:
        hxx = xs.get(("hsic_unbiased", gram), lambda: hsic_unbiased(K, K))
        hyy = ys.get(("hsic_unbiased", gram), lambda: hsic_unbiased(L, L))
    else:
        Kc = xs.get(("double_centred", gram), lambda: double_center(K))
        hxx = xs.get(("hsic_biased", gram), lambda: hsic_biased_centred(Kc, K))
        hyy = ys.get(("hsic_biased", gram), lambda: hsic_biased(L, L))
    check_self(hxx, "X")
    check_self(hyy, "Y")
    cross = hsic_unbiased(K, L) if unbiased else hsic_biased_centred(Kc, L)
    return cross / np.sqrt(hxx * hyy)


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
    ties = check_ties(ties)
    X, Y = validate_pair(X, Y, 2, "mutual_knn")
    n = X.shape[0]
    k = check_k(k, n)
    xs, ys = sides_of(X, Y, cache)
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
    ties = check_ties(ties)
    X, Y = validate_pair(X, Y, 4, "cknna")
    n = X.shape[0]
    k = check_k(k, n, minimum=2)
    xs, ys = sides_of(X, Y, cache)
    K, L = xs.cosine(), ys.cosine()
    WK, WL = xs.knn(k, ties), ys.knn(k, ties)
    M = WK * WL
    kl = hsic_unbiased(M * K, M * L)
    kk = knn_self_alignment(xs, k, ties)
    ll = knn_self_alignment(ys, k, ties)
    if not kk * ll > 0:
        raise ObjalignError(
            f"CKNNA is undefined here: the k-NN self-alignments of X and Y are {kk:.3g} and {ll:.3g} "
            f"(their product must be positive); use a larger k or check for constant features"
        )
    return float(kl / np.sqrt(kk * ll))


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
    X, Y = validate_pair(X, Y, 2, "svcca")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ObjalignError(f"dim must be a positive integer, got {dim!r}: pass e.g. dim=10")
    dim = int(dim)
    limit = min(X.shape[0] - 1, X.shape[1], Y.shape[1])
    if dim > limit:
        raise ObjalignError(
            f"dim={dim} is too large: expected dim <= min(n_samples - 1, n_features_x, "
            f"n_features_y) = {limit}"
        )
    xs, ys = sides_of(X, Y, cache)
    Ux, Uy = xs.subspace(dim), ys.subspace(dim)
    rho = np.linalg.svd(Ux.T @ Uy, compute_uv=False)
    return float(np.mean(np.clip(rho, 0.0, 1.0)))


def distinct_rows(Y, cache: dict | None = None) -> int:
    """The number of distinct rows of ``Y`` ``(n, d)`` (as ``np.unique(Y, axis=0)``); with ``cache``, found once with
    the rest of what the measures compute from ``Y`` alone."""
    side = side_of(cache, "Y", np.asarray(Y, dtype=np.float64))
    coded = side.coded()
    if coded is not None:
        return len(coded[0])

    return len(unique_rows(side.A)[0])
