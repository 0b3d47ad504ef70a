"""Permutation tests: how the pairing of objects with their labels is shuffled, and the p-values against the nulls.

How pairings are permuted (the null hypothesis "vision and language are unrelated" keeps each image's labels
together and breaks their pairing with the image):

- :func:`group_permutations`: label permutations that move whole images (blocks) or single rows.
- :func:`block_permutations`: the permutations of one block (split or fold) of a null, seeded by block.
- :func:`selection_permutations`: how many permutations kernel ridge's selection null runs on a large fit.

P-values (the ``+1`` rule of Phipson & Smyth 2010, so a p-value is never 0):

- :func:`permutation_pvalue`: one statistic against its null, ``(1 + #{null >= observed}) / (1 + B)``.
- :func:`pvalues`: every figure of a result row against its null, in the direction where it is better.
- :func:`grid_max_pvalue`: the best cell of a grid, corrected for having been chosen (below).

The nulls themselves (re-fitted maps scored under each permutation) are in :mod:`objalign.stats.nulls`.

The best cell of a grid (layer x layer, model x model) is inflated by the choice: each cell's own permutation
p-value is valid for that cell alone. Under permutation ``b`` every cell of the grid saw the same image-label
shuffle (the nulls of one vision layer and of every layer of one set of objects are aligned by permutation index,
:func:`objalign.stats.nulls.smoother_null`), so the maximum over the grid under that shuffle is one draw of the
null of the maximum. The observed maximum is compared with those B maxima (Westfall & Young's single-step max-T,
the permutation form of a family-wise correction):

    p_max = (1 + #{b : max_k null[k, b] >= max_k observed[k]}) / (B + 1)

For figures where smaller is better (residuals, ranks) the minimum replaces the maximum. Since the grid maximum
under a shuffle is at least that cell's own null value, ``p_max`` is never below the best cell's own p-value, and
for a one-cell grid it equals it.
"""

from __future__ import annotations

import numpy as np

from objalign.errors import ObjalignError
from objalign.stats.labels import check_positive_int, group_codes
from objalign.stats.metrics import ALL_FIGURES, SMALLER_IS_BETTER

__all__ = [
    "block_permutations",
    "grid_max_pvalue",
    "group_permutations",
    "permutation_pvalue",
    "pvalues",
    "selection_permutations",
]

_ALTERNATIVES = ("greater", "less", "two-sided")


# ------------------------------------------------------------------------------------ permutations
def group_permutations(groups, n_permutations: int, seed=0) -> np.ndarray:
    """Random row permutations that move whole groups (images) as blocks.

    Groups of equal size exchange their blocks: for images ``g`` and ``h = sigma(g)`` with the same
    number of instances, the rows of ``g`` (in index order) receive the rows of ``h`` (in index
    order), where ``sigma`` is a uniform random permutation within each size class. Under the null
    of no vision-language relation this keeps each image's set of labels together (co-occurring
    categories stay co-occurring) while breaking its pairing with the image. An image whose size
    is unique keeps its own labels, which makes the test slightly conservative. With every group
    of size 1 (``groups=None``) this is a uniform permutation of all rows.

    Parameters
    ----------
    groups : array-like of shape (n_instances,) or int
        Group label (image id) of each instance, or an int ``n_instances`` for ungrouped rows.
    n_permutations : int
        Number of permutations ``B``.
    seed : int or numpy.random.Generator or None, default 0
        Random seed.

    Returns
    -------
    ndarray of shape (B, n_instances), dtype intp
        Row ``b`` is a permutation ``pi`` of ``0..n_instances-1``; the permuted targets are
        ``Y[pi]`` (instance ``i`` receives the target of instance ``pi[i]``).
    """
    n_permutations = check_positive_int(n_permutations, "n_permutations")
    if isinstance(groups, (int, np.integer)) and not isinstance(groups, bool):
        codes = np.arange(check_positive_int(groups, "n_instances"), dtype=np.intp)
    else:
        codes = group_codes(groups, None)
    rng = np.random.default_rng(seed)
    n = codes.shape[0]
    order = np.argsort(codes, kind="stable")  # instances grouped, index order within a group
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = np.empty((n_permutations, n), dtype=np.intp)
    for size in np.unique(sizes):
        gids = np.flatnonzero(sizes == size)
        members = order[starts[gids][:, None] + np.arange(size)]  # (n_groups_of_size, size)
        if gids.size == 1:
            out[:, members.ravel()] = members.ravel()
            continue
        shuffled = rng.permuted(np.broadcast_to(np.arange(gids.size), (n_permutations, gids.size)), axis=1)
        out[:, members.ravel()] = members[shuffled].reshape(n_permutations, -1)
    return out


def block_permutations(train_groups: np.ndarray, n_permutations: int, seed: int, block: int) -> np.ndarray:
    """The (B, n_train) image-block permutations of block ``block`` of a null (seed ``seed + block``)."""

    return group_permutations(train_groups, int(n_permutations), seed + block)


def selection_permutations(n_permutations: int, n_train: int, max_train: int) -> tuple[int, str | None]:
    """How many permutations kernel ridge's selection null runs, and why fewer when fewer.

    Up to ``max_train`` training objects, all of them. Each permutation costs about ``n_train^2`` additions per
    grid point (:func:`objalign.maps._permuted_cv.kernel_choices`), so above it ``B (max_train / n_train)^2``
    (at least 100) keep the cost at the stated size's; the reason is recorded in the report.
    """
    if n_train <= max_train:
        return int(n_permutations), None
    b = int(min(n_permutations, max(100, int(n_permutations * (max_train / n_train) ** 2))))
    return b, (f"{n_train} training objects > align.null_selection_max_train = {max_train}: kernel ridge's "
               f"selection null ran {b} of {n_permutations} permutations (its cost grows as n_train^2 per "
               "permutation and grid point)")


# ---------------------------------------------------------------------------------------- p-values
def permutation_pvalue(observed, null_values, alternative: str = "greater") -> float:
    """Monte Carlo permutation p-value with the ``+1`` rule (Phipson & Smyth 2010).

    ``"greater"``: ``(1 + #{null >= observed}) / (1 + B)``; ``"less"``: the same with ``<=``;
    ``"two-sided"``: ``min(1, 2 * min(p_greater, p_less))``. The ``+1`` counts the observed
    statistic as one member of the null, so the p-value is never 0 and the test is valid
    (its smallest value is ``1 / (B + 1)``).

    Parameters
    ----------
    observed : float
        The statistic on the real pairing.
    null_values : array-like of shape (B,)
        The statistic under ``B`` permutations.
    alternative : {"greater", "less", "two-sided"}, default "greater"
        Which direction counts as extreme.

    Returns
    -------
    float
        The p-value in ``[1 / (B + 1), 1]``.
    """
    if alternative not in _ALTERNATIVES:
        raise ObjalignError(
            f"alternative={alternative!r} is not supported: expected one of {list(_ALTERNATIVES)}"
        )
    try:
        obs = float(observed)
    except (TypeError, ValueError):
        raise ObjalignError(f"observed must be a single number, got {observed!r}") from None
    if not np.isfinite(obs):
        raise ObjalignError(f"observed statistic is {obs}; a p-value needs a finite statistic")
    null = np.asarray(null_values, dtype=np.float64)
    if null.ndim != 1 or null.size == 0:
        raise ObjalignError(
            f"null_values must be a non-empty 1-D array of permutation statistics, got shape {null.shape}"
        )
    if not np.all(np.isfinite(null)):
        raise ObjalignError(
            f"null_values contain {int(np.count_nonzero(~np.isfinite(null)))} NaN or infinite "
            f"entries: check the score function on permuted data"
        )
    b = null.size
    p_greater = (1 + np.count_nonzero(null >= obs)) / (1 + b)
    p_less = (1 + np.count_nonzero(null <= obs)) / (1 + b)
    if alternative == "greater":
        return float(p_greater)
    if alternative == "less":
        return float(p_less)
    return float(min(1.0, 2 * min(p_greater, p_less)))


def pvalues(observed: dict[str, float], null: dict[str, np.ndarray]) -> dict[str, float]:
    """Permutation p-values (``+1`` rule) of each observed figure against its null.

    "greater" for figures where larger is better, "less" for residuals and ranks
    (:data:`objalign.stats.metrics.SMALLER_IS_BETTER`).
    """

    out = {}
    for k in ALL_FIGURES:
        if k in observed and k in null:
            alt = "less" if k in SMALLER_IS_BETTER else "greater"
            out[k] = permutation_pvalue(observed[k], null[k], alternative=alt)
    return out


def grid_max_pvalue(observed, nulls, smaller_is_better: bool = False) -> dict:
    """The best cell of a grid and its selection-corrected permutation p-value.

    Parameters
    ----------
    observed : (K,) array
        The figure of each cell on the real pairing.
    nulls : (K, B) array
        Row ``k``: the figure of cell ``k`` under permutations ``0..B-1`` (the same shuffles for every row).
    smaller_is_better : bool
        True for residuals and ranks (the best cell is the smallest).

    Returns
    -------
    dict with ``best`` (index of the best cell), ``value`` (its figure), ``pvalue_cell`` (its own permutation
    p-value, the ``+1`` rule), ``pvalue_max`` (against the null of the grid's best), ``n_cells``, ``n_permutations``.
    """
    obs = np.asarray(observed, dtype=np.float64)
    null = np.asarray(nulls, dtype=np.float64)
    if obs.ndim != 1 or obs.size == 0 or null.ndim != 2 or null.shape[0] != obs.size or null.shape[1] == 0:
        raise ObjalignError(f"grid_max_pvalue: expected observed (K,) and nulls (K, B) with K, B >= 1, got "
                            f"{obs.shape} and {null.shape}")
    if not (np.all(np.isfinite(obs)) and np.all(np.isfinite(null))):
        raise ObjalignError("grid_max_pvalue: observed figures and nulls must be finite; leave failed cells out")
    sign = -1.0 if smaller_is_better else 1.0
    s_obs, s_null = sign * obs, sign * null
    best = int(np.argmax(s_obs))
    b = null.shape[1]
    top = s_obs[best]
    return {"best": best, "value": float(obs[best]),
            "pvalue_cell": float((1 + np.count_nonzero(s_null[best] >= top)) / (b + 1)),
            "pvalue_max": float((1 + np.count_nonzero(s_null.max(axis=0) >= top)) / (b + 1)),
            "n_cells": int(obs.size), "n_permutations": int(b)}
