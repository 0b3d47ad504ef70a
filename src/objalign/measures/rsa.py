"""Representational similarity analysis (Kriegeskorte et al. 2008; rsatoolbox; Klabunde et al. 2025).

A representational dissimilarity matrix (RDM) holds the dissimilarity of every pair of items (here: categories, or
objects) in one space; two spaces are compared by correlating the upper triangles of their RDMs, which needs no map
between them and no shared dimension.

RDMs
    ``"correlation"``: ``1 - Pearson r`` between the two rows; ``"euclidean"``: Euclidean distance;
    :func:`crossval_rdm`: the cross-validated squared Euclidean distance of category means
    ``(m_a^A - m_b^A) . (m_a^B - m_b^B)`` between two disjoint halves ``A``, ``B`` of the objects (averaged over both
    orders of several splits), unbiased by the noise that inflates plain distances between noisy means (it can be
    negative).
Comparisons
    ``"spearman"``: Spearman's rho (:func:`scipy.stats.spearmanr`, ties averaged); ``"kendall"``: Kendall's tau-a,
    ``(concordant - discordant) / (m (m - 1) / 2)`` over the ``m`` RDM entries (tied pairs count as neither, as
    rsatoolbox recommends when one RDM has ties that the other lacks); ``"pearson"``.
"""

from __future__ import annotations

import numpy as np

from objalign.errors import ObjalignError

__all__ = ["COMPARISONS", "RDMS", "compare_rdms", "crossval_rdm", "kendall_tau_a", "rdm", "rsa"]

RDMS = ("correlation", "euclidean")
COMPARISONS = ("spearman", "kendall", "pearson")


def _items(X, name: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ObjalignError(f"{name} must be 2-D (n_items, n_features), got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ObjalignError(f"{name} contains {int(np.count_nonzero(~np.isfinite(X)))} NaN or infinite values: "
                            "drop or repair those rows first")
    if len(X) < 3:
        raise ObjalignError(f"RSA needs at least 3 items (categories), got {len(X)} in {name}: add categories")
    return X


def rdm(X, kind: str = "correlation") -> np.ndarray:
    """Upper triangle ``(n (n - 1) / 2,)`` (row-major, ``i < j``) of the RDM of the rows of ``X`` ``(n, d)``."""
    from scipy.spatial.distance import pdist

    X = _items(X, "X")
    if kind not in RDMS:
        raise ObjalignError(f"rdm={kind!r} is not supported: expected one of {list(RDMS)}")
    if kind == "correlation" and np.any(np.ptp(X, axis=1) == 0):
        raise ObjalignError("correlation distance is undefined for a constant row: use rdm='euclidean'")
    return pdist(X, metric=kind)


_rdm = rdm  # rsa() takes an argument named ``rdm``


def kendall_tau_a(a, b) -> float:
    """Kendall's tau-a of two equal-length vectors: ``(concordant - discordant) / (m (m - 1) / 2)``.

    The pair count ``concordant - discordant`` is an integer: it is recovered exactly from scipy's O(m log m)
    tau-b, ``(concordant - discordant) / sqrt((pairs - ties_a) (pairs - ties_b))``, by multiplying back and
    rounding (the rounding error is far below 1/2 for any m that fits in memory), so the value is the one of the
    (m, m) sign table, bit for bit, without building it.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    m = len(a)
    if m < 2 or len(b) != m:
        raise ObjalignError(f"Kendall's tau-a needs two vectors of the same length >= 2, got {len(a)} and {len(b)}")
    if m < 64 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return _kendall_sign_table(a, b)  # small, or NaN (which propagates, as in the table)
    from scipy import stats

    pairs = m * (m - 1) // 2
    free_a, free_b = pairs - _tied_pairs(a), pairs - _tied_pairs(b)
    if free_a == 0 or free_b == 0:  # one vector constant: every pair is tied in it
        return 0.0
    tau_b = stats.kendalltau(a, b, method="asymptotic").statistic
    counted = round(float(tau_b) * np.sqrt(free_a) * np.sqrt(free_b))  # concordant - discordant
    return float(2 * counted) / float(m * (m - 1))  # the sign table's sum (every pair twice) over m (m - 1)


def _tied_pairs(a: np.ndarray) -> int:
    """Pairs of equal values in ``a``."""
    _, counts = np.unique(a, return_counts=True)
    return int(np.sum(counts * (counts - 1) // 2))


def _kendall_sign_table(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-a from the (m, m) sign table, in row blocks (bounded memory)."""
    m = len(a)
    total = 0.0
    for start in range(0, m, 512):
        sa = np.sign(a[start:start + 512, None] - a[None, :])
        sb = np.sign(b[start:start + 512, None] - b[None, :])
        total += float(np.sum(sa * sb))
    return total / (m * (m - 1))  # the table counts every pair twice


def compare_rdms(rx, ry, compare: str = "spearman") -> float:
    """Similarity of two RDM upper triangles ``(m,)`` by ``compare`` (see the module docstring)."""
    from scipy import stats

    rx, ry = np.asarray(rx, dtype=np.float64), np.asarray(ry, dtype=np.float64)
    if rx.shape != ry.shape or rx.ndim != 1:
        raise ObjalignError(f"the two RDMs must be upper triangles of the same length, got {rx.shape}, {ry.shape}")
    if compare not in COMPARISONS:
        raise ObjalignError(f"compare={compare!r} is not supported: expected one of {list(COMPARISONS)}")
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        raise ObjalignError("an RDM is constant (all items equally dissimilar), so its correlation is undefined")
    if compare == "spearman":
        return float(stats.spearmanr(rx, ry).statistic)
    if compare == "kendall":
        return kendall_tau_a(rx, ry)
    return float(np.corrcoef(rx, ry)[0, 1])


def rsa(X, Y, rdm: str = "correlation", compare: str = "spearman") -> float:
    """RSA score of two row-aligned representations (row ``i`` of ``X`` and of ``Y`` describe item ``i``).

    Parameters
    ----------
    X : array-like of shape (n_items, d_x)
    Y : array-like of shape (n_items, d_y)
    rdm : {"correlation", "euclidean"}, default "correlation"
    compare : {"spearman", "kendall", "pearson"}, default "spearman"

    Returns
    -------
    float
        The correlation of the two RDMs' upper triangles.
    """
    X, Y = _items(X, "X"), _items(Y, "Y")
    if len(X) != len(Y):
        raise ObjalignError(f"X and Y must describe the same items (rows), got {len(X)} and {len(Y)} rows")
    return compare_rdms(_rdm(X, rdm), _rdm(Y, rdm), compare)


def crossval_rdm(X, labels, groups, n_splits: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cross-validated squared Euclidean RDM of category means, splitting objects into two halves by group (image).

    Parameters
    ----------
    X : (n, d) object embeddings
    labels : (n,) category of each object
    groups : (n,) image ids; each split assigns whole images to half A or half B at random
    n_splits : random half-splits averaged
    seed : random seed

    Returns
    -------
    (rdm, categories)
        ``rdm`` ``(m (m - 1) / 2,)``: upper triangle over ``categories`` (sorted labels that had objects in both
        halves of every split, at least 3); ``(m_a^A - m_b^A) . (m_a^B - m_b^B)`` averaged over splits and both
        orders.
    """
    X = np.asarray(X, dtype=np.float64)
    labels, groups = np.asarray(labels), np.asarray(groups)
    cats = np.unique(labels)
    _, gcodes = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    keep = np.ones(len(cats), dtype=bool)
    halves = []
    for _ in range(n_splits):
        side = rng.integers(0, 2, gcodes.max() + 1)[gcodes].astype(bool)
        means = []
        for s in (side, ~side):
            sums = np.zeros((len(cats), X.shape[1]))
            idx = np.searchsorted(cats, labels[s])
            np.add.at(sums, idx, X[s])
            cnt = np.bincount(idx, minlength=len(cats))
            keep &= cnt > 0
            means.append(sums / np.maximum(cnt, 1)[:, None])
        halves.append(means)
    if keep.sum() < 3:
        raise ObjalignError(f"a cross-validated RDM needs at least 3 categories with objects on both sides of the "
                            f"splits, got {int(keep.sum())}: sample more objects per category")
    iu = np.triu_indices(int(keep.sum()), 1)
    total = np.zeros(len(iu[0]))
    for A, B in halves:
        A, B = A[keep], B[keep]
        dA = A[iu[0]] - A[iu[1]]
        dB = B[iu[0]] - B[iu[1]]
        total += np.einsum("ij,ij->i", dA, dB)  # symmetric in A, B: both orders give the same value
    return total / n_splits, cats[keep]
