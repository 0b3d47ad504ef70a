"""The best cell of a grid (layer x layer, model x model) with a p-value corrected for having been chosen.

Picking the best of K cells inflates it: each cell's own permutation p-value is valid for that cell alone. Under
permutation ``b`` every cell of the grid saw the same image-label shuffle (the nulls of one vision layer and of
every layer of one set of objects are aligned by permutation index, :func:`objalign.stats.nulls.smoother_null`),
so the maximum over the grid under that shuffle is one draw of the null of the maximum. The observed maximum is
compared with those B maxima (Westfall & Young's single-step max-T, the permutation form of a family-wise
correction):

    p_max = (1 + #{b : max_k null[k, b] >= max_k observed[k]}) / (B + 1)

For figures where smaller is better (residuals, ranks) the minimum replaces the maximum. Since the grid maximum
under a shuffle is at least that cell's own null value, ``p_max`` is never below the best cell's own p-value, and
for a one-cell grid it equals it.
"""

from __future__ import annotations

import numpy as np

from objalign.errors import ObjalignError
from objalign.stats.metrics import SMALLER_IS_BETTER


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


def is_smaller_better(measure: str) -> bool:
    """Whether smaller values of ``measure`` are better (:data:`objalign.stats.metrics.SMALLER_IS_BETTER`)."""
    return measure in SMALLER_IS_BETTER
