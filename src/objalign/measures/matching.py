"""Blind matching: which name belongs to which vision category, found with no paired data at all.

Each side is summarised by a within-modality kernel over categories: on the vision side the cosine kernel of the
category prototypes (the mean of an category's L2-normalised object embeddings), on the language side the cosine
kernel of the category text embeddings. If the two spaces share their geometry, the permutation that best aligns
the two kernels pairs each vision category with its own name (Maniparambil et al., CVPR 2024; Schnaus et al.,
"It's a (Blind) Match!", CVPR 2025). Methods:

``"faq"``
    Seeded Fast Approximate QAP (Vogelstein et al. 2015; :func:`scipy.optimize.quadratic_assignment`) maximising
    ``sum_ij Kx[i, j] Ky[perm[i], perm[j]]``: one start at the barycentre, then ``restarts - 1`` random doubly
    stochastic starts; each solution is polished by improving pairwise swaps (2-opt) when both kernels are
    symmetric, and the assignment with the largest objective is kept.
``"local_cka"``
    Retrieval then assignment: a score for every (category, name) pair, then the Hungarian assignment
    (:func:`scipy.optimize.linear_sum_assignment`) maximising the total score. With ``s >= 2`` seed pairs the score
    of ``(i, j)`` is the linear CKA of the kernels restricted to the seeds plus ``i`` (vision) and the seeds plus
    ``j`` (language) (Maniparambil et al.'s local CKA). Without seeds there is no shared frame, and the score is
    the Pearson correlation of the two sorted kernel rows (each category's distribution of similarities to all
    others, which needs no correspondence).
``"exact"``
    Brute force over all ``n!`` assignments (``n <= 9``): the reference for the approximate methods.

Seeds are known pairs ``(vision i, name j)`` kept fixed. Accuracy is the fraction of the other categories matched to
their own names; a uniformly random assignment scores ``1 / (n - s)`` on average (one fixed point expected).
"""

from __future__ import annotations

import itertools

import numpy as np

from objalign.errors import ObjalignError

__all__ = ["METHODS", "blind_match", "category_prototypes", "cosine_kernel", "match_accuracy", "match_study",
           "qap_objective"]

METHODS = ("faq", "local_cka", "exact")
_EXACT_MAX = 9


def _square(K, name: str) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ObjalignError(f"{name} must be a square (n, n) kernel over categories, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ObjalignError(f"{name} contains NaN or infinite values: check the embeddings it was built from")
    return K


def _seeds(seeds, n: int) -> np.ndarray:
    if seeds is None:
        return np.empty((0, 2), dtype=np.intp)
    s = np.asarray(seeds)
    if s.size == 0:
        return np.empty((0, 2), dtype=np.intp)
    if s.ndim != 2 or s.shape[1] != 2 or s.dtype.kind not in "iu":
        raise ObjalignError(f"seeds must be an integer array of (vision, name) pairs with shape (s, 2), got {s.shape}")
    if s.min() < 0 or s.max() >= n:
        raise ObjalignError(f"seeds must index categories 0..{n - 1}, got values {s.min()}..{s.max()}")
    if len(np.unique(s[:, 0])) != len(s) or len(np.unique(s[:, 1])) != len(s):
        raise ObjalignError("seeds must pair each vision category and each name at most once")
    return s.astype(np.intp)


def qap_objective(Kx, Ky, perm) -> float:
    """``sum_ij Kx[i, j] Ky[perm[i], perm[j]]``: how well ``perm`` aligns the two kernels."""
    perm = np.asarray(perm)
    return float(np.sum(np.asarray(Kx) * np.asarray(Ky)[np.ix_(perm, perm)]))


def _two_opt(Kx: np.ndarray, Ky: np.ndarray, perm: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """Polish ``perm`` by the best improving swap of two assignments until none improves (symmetric kernels).

    Swapping the names of ``a`` and ``b`` changes the objective by
    ``2 sum_{j != a, b} (Kx[a, j] - Kx[b, j]) (B[b, j] - B[a, j]) + (Kx[a, a] - Kx[b, b]) (B[b, b] - B[a, a])``
    with ``B = Ky[perm][:, perm]``; all pairs at once from ``M = Kx B``.
    """
    perm = perm.copy()
    n = len(perm)
    movable = np.ones((n, n), dtype=bool)
    movable[fixed, :] = movable[:, fixed] = False
    np.fill_diagonal(movable, False)
    dx = np.diag(Kx)
    for _ in range(10 * n):
        B = Ky[np.ix_(perm, perm)]
        M = Kx @ B
        dm, db = np.diag(M), np.diag(B)
        full = M + M.T - dm[:, None] - dm[None, :]
        at_a = (dx[:, None] - Kx) * (B - db[:, None])  # j = a term, (a, b) entry
        at_b = (Kx - dx[None, :]) * (db[None, :] - B)  # j = b term
        D = 2 * (full - at_a - at_b) + (dx[:, None] - dx[None, :]) * (db[None, :] - db[:, None])
        D[~movable] = -np.inf
        a, b = np.unravel_index(np.argmax(D), D.shape)
        if not D[a, b] > 1e-10 * max(1.0, abs(float(np.sum(Kx * B)))):
            break
        perm[[a, b]] = perm[[b, a]]
    return perm


def _faq(Kx, Ky, seeds, restarts, rng) -> np.ndarray:
    from scipy.optimize import quadratic_assignment

    symmetric = np.allclose(Kx, Kx.T) and np.allclose(Ky, Ky.T)
    best, best_f = None, -np.inf
    for r in range(restarts):
        opts = {"maximize": True, "partial_match": seeds if len(seeds) else None,
                "P0": "barycenter" if r == 0 else "randomized", "rng": rng}
        res = quadratic_assignment(Kx, Ky, method="faq", options=opts)
        perm = np.asarray(res.col_ind, dtype=np.intp)
        if symmetric:
            perm = _two_opt(Kx, Ky, perm, seeds[:, 0])
        f = qap_objective(Kx, Ky, perm)
        if f > best_f + 1e-12:
            best, best_f = perm, f
    return best


def _centred(K: np.ndarray) -> np.ndarray:
    """Double-centred kernels ``H K H`` over the last two axes of ``K`` ``(..., m, m)``."""
    return K - K.mean(-1, keepdims=True) - K.mean(-2, keepdims=True) + K.mean((-2, -1), keepdims=True)


def _local_scores(Kx: np.ndarray, Ky: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """``(n, n)`` score of pairing vision category ``i`` with name ``j`` (see the module docstring)."""
    n = len(Kx)
    if len(seeds) >= 2:
        def subs(K, anchor):
            m = len(anchor)
            S = np.empty((n, m + 1, m + 1))
            S[:, :m, :m] = K[np.ix_(anchor, anchor)]
            S[:, :m, m] = S[:, m, :m] = K[:, anchor]
            S[:, m, m] = np.diag(K)
            C = _centred(S)
            return C / np.maximum(np.linalg.norm(C, axis=(1, 2), keepdims=True), 1e-300)
        return np.einsum("iab,jab->ij", subs(Kx, seeds[:, 0]), subs(Ky, seeds[:, 1]))

    def sorted_rows(K):
        off = ~np.eye(n, dtype=bool)
        R = np.sort(K[off].reshape(n, n - 1), axis=1)
        R -= R.mean(1, keepdims=True)
        return R / np.maximum(np.linalg.norm(R, axis=1, keepdims=True), 1e-300)
    return sorted_rows(Kx) @ sorted_rows(Ky).T


def _hungarian(S: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment

    n = len(S)
    perm = np.empty(n, dtype=np.intp)
    perm[seeds[:, 0]] = seeds[:, 1]
    rows = np.setdiff1d(np.arange(n), seeds[:, 0])
    cols = np.setdiff1d(np.arange(n), seeds[:, 1])
    r, c = linear_sum_assignment(S[np.ix_(rows, cols)], maximize=True)
    perm[rows[r]] = cols[c]
    return perm


def _exact(Kx: np.ndarray, Ky: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    n = len(Kx)
    if n > _EXACT_MAX:
        raise ObjalignError(f"method='exact' enumerates n! assignments: n={n} is above {_EXACT_MAX}; use 'faq'")
    rows = np.setdiff1d(np.arange(n), seeds[:, 0])
    cols = np.setdiff1d(np.arange(n), seeds[:, 1])
    all_free = np.array(list(itertools.permutations(cols)), dtype=np.intp).reshape(-1, len(cols))
    best, best_f = None, -np.inf
    for s in range(0, len(all_free), 5040):  # objectives of a block of assignments at once
        P = np.empty((len(all_free[s:s + 5040]), n), dtype=np.intp)
        P[:, seeds[:, 0]] = seeds[:, 1]
        P[:, rows] = all_free[s:s + 5040]
        f = np.einsum("ij,pij->p", Kx, Ky[P[:, :, None], P[:, None, :]])
        i = int(np.argmax(f))
        if f[i] > best_f + 1e-12:
            best, best_f = P[i].copy(), float(f[i])
    return best


def blind_match(Kx, Ky, seeds=None, method: str = "faq", restarts: int = 10, random_state=0) -> np.ndarray:
    """Match vision categories to names from the two within-modality kernels alone.

    Parameters
    ----------
    Kx : array-like of shape (n, n)
        Kernel over vision categories (e.g. :func:`cosine_kernel` of :func:`category_prototypes`).
    Ky : array-like of shape (n, n)
        Kernel over the names (e.g. the cosine kernel of the category text embeddings).
    seeds : array-like of shape (s, 2), optional
        Known pairs ``(vision i, name j)``, kept fixed.
    method : {"faq", "local_cka", "exact"}, default "faq"
        See the module docstring.
    restarts : int, default 10
        FAQ starts (the first at the barycentre, the others random); ignored by the other methods.
    random_state : int or numpy.random.Generator, default 0

    Returns
    -------
    ndarray of shape (n,), dtype intp
        ``perm``: vision category ``i`` is matched to name ``perm[i]``.
    """
    Kx, Ky = _square(Kx, "Kx"), _square(Ky, "Ky")
    n = len(Kx)
    if Ky.shape != Kx.shape:
        raise ObjalignError(f"Kx and Ky must cover the same number of categories, got {Kx.shape} and {Ky.shape}")
    if n < 3:
        raise ObjalignError(f"blind matching needs at least 3 categories, got {n}: add categories")
    if method not in METHODS:
        raise ObjalignError(f"method={method!r} is not supported: expected one of {list(METHODS)}")
    if isinstance(restarts, bool) or not isinstance(restarts, (int, np.integer)) or restarts < 1:
        raise ObjalignError(f"restarts={restarts!r} must be a positive integer, e.g. 10")
    seeds = _seeds(seeds, n)
    if method == "faq":
        return _faq(Kx, Ky, seeds, int(restarts), np.random.default_rng(random_state))
    if method == "exact":
        return _exact(Kx, Ky, seeds)
    return _hungarian(_local_scores(Kx, Ky, seeds), seeds)


def match_accuracy(perm, seeds=None) -> float:
    """Fraction of the non-seed categories matched to their own name (the truth is ``perm[i] == i``)."""
    perm = np.asarray(perm)
    seeds = _seeds(seeds, len(perm))
    free = np.setdiff1d(np.arange(len(perm)), seeds[:, 0])
    return float(np.mean(perm[free] == free)) if len(free) else float("nan")


# --------------------------------------------------------------------------------- from objects to kernels
def _unit_rows(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


def cosine_kernel(E) -> np.ndarray:
    """Cosine similarity ``(c, c)`` between the rows of ``E`` ``(c, d)``."""
    Z = _unit_rows(np.asarray(E, dtype=np.float64))
    return Z @ Z.T


def category_prototypes(X, label_index, n_categories: int, weights=None) -> np.ndarray:
    """Mean L2-normalised embedding per category ``(c, d)``; objects weighted by ``weights`` ``(n,)``.

    A category with no (weighted) object gets a row of NaN.
    """
    from scipy.sparse import csr_matrix

    Z = _unit_rows(np.asarray(X, dtype=np.float64))
    w = np.ones(len(Z)) if weights is None else np.asarray(weights, dtype=np.float64)
    M = csr_matrix((w, (np.asarray(label_index), np.arange(len(Z)))), shape=(n_categories, len(Z)))
    total = np.asarray(M.sum(1)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        return (M @ Z) / total[:, None]


def match_study(X, label_index, class_emb, groups, methods=("faq", "local_cka"), restarts: int = 10,
                n_bootstrap: int = 100, confidence: float = 0.95,
                shuffle_fractions=(0.0, 0.25, 0.5, 0.75, 1.0), shuffle_repeats: int = 3, seed: int = 0,
                cache: dict | None = None) -> dict:
    """Blind matching of a run's categories: accuracy, chance, a bootstrap interval and the shuffle curve.

    Parameters
    ----------
    X : (n, d) object embeddings (vision)
    label_index : (n,) category row of each object
    class_emb : (c, q) category text embeddings
    groups : (n,) image ids (the bootstrap resamples images)
    methods : matching methods (:data:`METHODS`)
    restarts : FAQ starts
    n_bootstrap : image resamples for the interval (0: none); a category absent from a resample keeps its
        full-data prototype
    confidence : coverage of the percentile interval
    shuffle_fractions : fractions of object-label pairs shuffled for the degradation curve
    shuffle_repeats : random shuffles per fraction (the curve reports their mean and standard deviation)
    seed : random seed
    cache : dict, optional
        Vision prototype kernels by resample, filled on first use: pass the same dict to the studies of several
        text embeddings of the same ``X``, labels, groups and seed (the resamples and shuffles do not depend on
        the text side) and each kernel is computed once.

    Returns
    -------
    dict with ``n_categories``, ``chance`` (``1 / c``), ``kernel`` (what was matched), per method ``accuracy``,
    ``ci`` and ``assignment`` (method -> list of name indices), and ``shuffle_curve`` (method -> list of
    ``{"fraction", "accuracy_mean", "accuracy_sd"}``)
    """
    label_index = np.asarray(label_index)
    c = len(class_emb)
    present = np.unique(label_index)
    if len(present) < 3:
        raise ObjalignError(f"blind matching needs at least 3 categories with objects, got {len(present)}")
    rng = np.random.default_rng(seed)
    Ky = cosine_kernel(np.asarray(class_emb)[present])
    remap = np.full(c, -1)
    remap[present] = np.arange(len(present))
    lab = remap[label_index]
    m = len(present)

    cache = {} if cache is None else cache

    def kx(weights=None, labels=lab, fallback=None, tag=("all",)):
        if tag in cache:
            return cache[tag]
        P = category_prototypes(X, labels, m, weights)
        if fallback is not None:
            missing = ~np.all(np.isfinite(P), axis=1)
            P[missing] = fallback[missing]
        cache[tag] = cosine_kernel(P), P
        return cache[tag]

    K0, P0 = kx()
    out = {"n_categories": int(m), "chance": 1.0 / m, "confidence": confidence,
           "kernel": "cosine kernels of category prototypes (mean of L2-normalised object embeddings) and of the "
                     "category text embeddings", "methods": {}}
    _, gcodes = np.unique(np.asarray(groups), return_inverse=True)
    n_img = int(gcodes.max()) + 1
    boot_w = [np.bincount(rng.integers(0, n_img, n_img), minlength=n_img)[gcodes] for _ in range(n_bootstrap)]
    curves = {}
    for frac in shuffle_fractions:
        ks = []
        for r in range(shuffle_repeats if frac > 0 else 1):
            idx = rng.choice(len(lab), int(round(frac * len(lab))), replace=False)
            shuffled = lab.copy()
            shuffled[idx] = lab[rng.permutation(idx)]
            ks.append(kx(labels=shuffled, fallback=P0, tag=("shuffle", float(frac), r))[0])
        curves[float(frac)] = ks
    for method in methods:
        perm = blind_match(K0, Ky, method=method, restarts=restarts, random_state=seed)
        acc = match_accuracy(perm)
        row = {"accuracy": acc, "assignment": present[perm].tolist()}
        if n_bootstrap > 0:
            accs = [match_accuracy(blind_match(kx(w, fallback=P0, tag=("boot", b))[0], Ky, method=method,
                                               restarts=restarts, random_state=seed)) for b, w in enumerate(boot_w)]
            a = (1 - confidence) / 2
            row["ci"] = [float(np.quantile(accs, a)), float(np.quantile(accs, 1 - a))]
        row["shuffle_curve"] = []
        for frac, ks in curves.items():
            accs = [match_accuracy(blind_match(K, Ky, method=method, restarts=restarts, random_state=seed)) for K in ks]
            row["shuffle_curve"].append({"fraction": frac, "accuracy_mean": float(np.mean(accs)),
                                         "accuracy_sd": float(np.std(accs))})
        out["methods"][method] = row
    return out
