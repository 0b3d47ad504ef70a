"""Open-vocabulary retrieval: rank the true name among many candidate names, by nearest neighbour or CSLS.

A map that only tells 80 categories apart looks perfect when it ranks the truth among those 80; among a large
vocabulary (the dataset's names plus a shipped list of distractor object names, e.g. LVIS's 1,203 categories, see
:mod:`objalign.data.vocab`) it has to land near the right name, not just nearer to it than to 79 others (Li et al.,
TACL 2024). High-dimensional nearest-neighbour retrieval suffers from hubs (candidates that are near everything);
CSLS (Conneau et al. 2018, MUSE) discounts them::

    CSLS(x, y) = 2 cos(x, y) - r_T(x) - r_S(y)

with ``r_T(x)`` the mean cosine of query ``x`` to its ``k`` nearest candidates and ``r_S(y)`` the mean cosine of
candidate ``y`` to its ``k`` nearest queries (all queries of the call; ``min(k, n_queries)`` when there are fewer).
Ranks are 1-based; ties count against the truth (rank = 1 + number of candidates scoring strictly higher), as in
:mod:`objalign.stats.metrics`.
"""

from __future__ import annotations

import numpy as np

from objalign.errors import ObjalignError

__all__ = ["KS", "METHODS", "candidate_index", "csls_scores", "precision_at_k", "retrieval"]

METHODS = ("nn", "csls")
KS = (1, 5, 10, 30, 100)


def _matrix(a, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ObjalignError(f"{name} must be a non-empty 2-D array (rows, dim), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ObjalignError(f"{name} contains {int(np.count_nonzero(~np.isfinite(a)))} NaN or infinite values: "
                            "repair or drop those rows first")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ObjalignError(f"{name} has an all-zero row (row {int(np.flatnonzero(norms.ravel() == 0)[0])}); "
                            "cosine similarity is undefined for it")
    return a / norms


def _mean_top(S: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Mean of the ``k`` largest entries of ``S`` along ``axis``."""
    size = S.shape[axis]
    k = min(k, size)
    return np.mean(np.partition(S, size - k, axis=axis).take(range(size - k, size), axis=axis), axis=axis)


def csls_scores(pred, candidates, k: int = 10) -> np.ndarray:
    """``CSLS(x_i, y_j)`` ``(n, m)`` for queries ``pred`` ``(n, d)`` and ``candidates`` ``(m, d)``."""
    S = _matrix(pred, "pred") @ _matrix(candidates, "candidates").T
    return 2 * S - _mean_top(S, k, axis=1)[:, None] - _mean_top(S, k, axis=0)[None, :]


def retrieval(pred, candidates, true_index, method: str = "csls", k: int = 10) -> np.ndarray:
    """Rank of the true candidate for each query.

    Parameters
    ----------
    pred : array-like of shape (n, d)
        Queries in the candidates' space (e.g. vision embeddings mapped to text space).
    candidates : array-like of shape (m, d)
        Candidate embeddings (e.g. text embeddings of the dataset's names plus distractor names).
    true_index : array-like of int, shape (n,)
        Row of ``candidates`` holding each query's true name.
    method : {"csls", "nn"}, default "csls"
        CSLS (hubness-corrected) or plain nearest neighbour by cosine similarity.
    k : int, default 10
        CSLS neighbourhood size, ``1 <= k <= m``.

    Returns
    -------
    ndarray of shape (n,), int
        1-based rank of the true candidate (1 = first).
    """
    if method not in METHODS:
        raise ObjalignError(f"method={method!r} is not supported: expected one of {list(METHODS)}")
    P, C = _matrix(pred, "pred"), _matrix(candidates, "candidates")
    if P.shape[1] != C.shape[1]:
        raise ObjalignError(f"pred has dimension {P.shape[1]} but candidates have {C.shape[1]}: map the queries into "
                            "the candidates' space first")
    m = len(C)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ObjalignError(f"k={k!r} must be a positive integer, e.g. 10")
    if k > m:
        raise ObjalignError(f"k={k} is larger than the number of candidates ({m}): pass k <= {m}")
    t = np.asarray(true_index)
    if t.shape != (len(P),) or t.dtype.kind not in "iu":
        raise ObjalignError(f"true_index must hold one integer per query ({len(P)}), got shape {t.shape}")
    if t.size and (t.min() < 0 or t.max() >= m):
        raise ObjalignError(f"true_index must lie in 0..{m - 1} (rows of candidates), got {t.min()}..{t.max()}")
    S = P @ C.T
    if method == "csls":
        S = 2 * S - _mean_top(S, k, axis=1)[:, None] - _mean_top(S, k, axis=0)[None, :]
    true = S[np.arange(len(S)), t]
    return 1 + np.sum(S > true[:, None], axis=1)


def precision_at_k(ranks, ks=KS) -> dict[str, float]:
    """``{"p@k": fraction of queries whose true candidate ranks within the first k}`` for each ``k`` in ``ks``."""
    ranks = np.asarray(ranks)
    return {f"p@{k}": float(np.mean(ranks <= k)) for k in ks}


def candidate_index(true_names, candidate_names) -> np.ndarray:
    """Row of ``candidate_names`` holding each of ``true_names``; one error listing the names that are missing."""
    pos = {n: i for i, n in enumerate(candidate_names)}
    missing = sorted({n for n in true_names if n not in pos})
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ObjalignError(f"the candidate vocabulary is missing {len(missing)} true name(s): {shown}; "
                            "include every dataset category name among the candidates")
    return np.asarray([pos[n] for n in true_names], dtype=np.intp)
