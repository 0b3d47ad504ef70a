"""Input checks and the dense kernel computations shared by the similarity measures and their permutation engines.

Everything here works on plain ``(n, d)`` feature matrices or ``(n, n)`` Gram matrices, in float64:

- checks: :func:`as_matrix`, :func:`validate_pair`, :func:`check_k`, :func:`check_ties`, :func:`check_self`,
  :func:`check_nonzero` (one clear :class:`~objalign.errors.ObjalignError` each);
- kernels: column centring, cosine Gram, k-NN neighbour weights with the tie rule of
  :mod:`objalign.measures.similarity` (``TIE_ATOL``), double centring, the biased and unbiased HSIC, the RBF kernel
  with its median bandwidth, the top singular subspace, and the exact weighted median of the RBF bandwidth on
  repeated rows.
"""

from __future__ import annotations

import numpy as np

from objalign.errors import ObjalignError
from objalign.stats.intervals import weighted_median as per_row

__all__ = ["TIE_ATOL", "as_matrix", "center", "check_k", "check_nonzero", "check_self", "check_ties", "cosine_gram",
           "double_center", "hsic_biased", "hsic_biased_centred", "hsic_unbiased", "neighbour_weights", "rbf_gram",
           "top_subspace", "validate_pair", "weighted_median"]


# ----------------------------------------------------------------------------------------- validation
TIE_ATOL = 1e-10
"""Absolute tolerance under which two cosine similarities count as tied in k-NN measures."""


_TIES = ("average", "index")


def as_matrix(a, name: str) -> np.ndarray:
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


def validate_pair(X, Y, min_samples: int, measure: str) -> tuple[np.ndarray, np.ndarray]:
    X = as_matrix(X, "X")
    Y = as_matrix(Y, "Y")
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


def check_k(k, n: int, minimum: int = 1) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ObjalignError(f"k must be an integer, got {k!r}: pass e.g. k=10")
    k = int(k)
    if not minimum <= k <= n - 1:
        raise ObjalignError(
            f"k={k} is out of range for {n} samples: expected {minimum} <= k <= n_samples - 1 = {n - 1}"
        )
    return k


def check_ties(ties) -> str:
    if ties not in _TIES:
        raise ObjalignError(f"ties={ties!r} is not supported: expected one of {list(_TIES)}")
    return ties


def check_self(value: float, name: str) -> None:
    if not value > 0:
        raise ObjalignError(
            f"{name} has no usable variation (its self-HSIC is {value:.3g}, e.g. all rows equal), so "
            f"the measure is undefined: check that {name} is not constant"
        )


def check_nonzero(norms: np.ndarray, name: str) -> None:
    """One error naming the all-zero rows of ``name`` (``norms`` ``(n,)`` its row norms), for cosine similarity."""
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ObjalignError(
            f"{name} has {zero.size} all-zero rows (first at row {int(zero[0])}); cosine similarity "
            f"is undefined for them: drop those rows"
        )


# -------------------------------------------------------------------------------------------- kernels
def center(X: np.ndarray) -> np.ndarray:
    return X - X.mean(axis=0, keepdims=True)


def cosine_gram(X: np.ndarray, name: str) -> np.ndarray:
    """Cosine similarity matrix ``(n, n)`` of the rows of ``X`` ``(n, d)``."""
    norms = np.linalg.norm(X, axis=1)
    check_nonzero(norms, name)
    Z = X / norms[:, None]
    return Z @ Z.T


def neighbour_weights(S: np.ndarray, k: int, ties: str) -> np.ndarray:
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


def double_center(K: np.ndarray) -> np.ndarray:
    """``H K H`` with ``H = I - 11^T / n`` for a square ``K`` ``(n, n)``."""
    return K - K.mean(axis=0, keepdims=True) - K.mean(axis=1, keepdims=True) + K.mean()


def hsic_biased(K: np.ndarray, L: np.ndarray) -> float:
    return hsic_biased_centred(double_center(K), L)


def hsic_biased_centred(Kc: np.ndarray, L: np.ndarray) -> float:
    """The biased HSIC from the double-centred ``Kc = H K H`` (what :func:`hsic_biased` computes first)."""
    n = Kc.shape[0]
    return float(np.sum(Kc * L.T)) / (n - 1) ** 2


def hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    n = K.shape[0]
    Kt = K.copy()
    Lt = L.copy()
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    trace_term = np.sum(Kt * Lt.T)  # tr(Kt Lt)
    sums_term = Kt.sum() * Lt.sum() / ((n - 1) * (n - 2))
    cross_term = 2.0 * (Kt.sum(axis=0) @ Lt.sum(axis=1)) / (n - 2)  # 2/(n-2) 1^T Kt Lt 1
    return float((trace_term + sums_term - cross_term) / (n * (n - 3)))


def rbf_gram(X: np.ndarray, fraction: float, name: str, gram: np.ndarray | None = None) -> np.ndarray:
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


def top_subspace(Xc: np.ndarray, dim: int, name: str, gram: np.ndarray | None = None) -> np.ndarray:
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


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """``np.median(np.repeat(values, weights))`` without the repetition (integer ``weights``, total > 0): the
    bootstrap's exact weighted median (:func:`objalign.stats.intervals.weighted_median`) on one row."""

    return float(per_row(np.asarray(values), np.asarray(weights)[None, :])[0])
