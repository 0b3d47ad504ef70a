"""Shards: fixed ranges of the image-grouped object order, what a worker computes, how processes share them."""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

from objalign.errors import ObjalignError


class ShardWork(Protocol):
    """What a stage hands an executor. Must pickle (a Ray worker receives a copy).

    ``setup()`` runs once per worker and returns its state (the loaded model; a worker that already holds the
    state of a work with the same ``model_key()`` reuses it); ``run(state, shards, progress)``
    computes the listed shards in order, writes each one atomically (completion marker last) and returns one
    receipt per shard written: ``{"shard": int, "rows": int, "sha256": str, ...}``.
    """

    name: str

    def model_key(self) -> str: ...

    def setup(self) -> Any: ...

    def run(self, state: Any, shards: list[int], progress: bool = False) -> list[dict]: ...


def image_aligned_bounds(image_ids: np.ndarray, shard_size: int) -> list[tuple[int, int]]:
    """Shard ``i`` = the rows from the first image that starts at or after row ``i * shard_size`` to the first
    that starts at or after ``(i + 1) * shard_size``.

    So no image is split between two shards (a per-image model such as SAM encodes each image once, and an
    object's mask does not depend on where the shard boundaries fall), there are ``ceil(n / shard_size)``
    shards (at least one), and a shard may be empty when one image holds more than ``shard_size`` objects.

    Parameters
    ----------
    image_ids : (n,) array, grouped (equal ids consecutive)
    shard_size : int

    Returns
    -------
    list of (start, stop)
    """
    if shard_size < 1:
        raise ObjalignError(f"shard_size = {shard_size}: must be at least 1")
    ids = np.asarray(image_ids)
    n = len(ids)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if n else np.zeros(0, np.int64)
    n_shards = max(1, math.ceil(n / shard_size))
    pos = np.searchsorted(starts, np.arange(n_shards) * shard_size)  # first image starting at or after i * size
    cuts = [int(starts[p]) if p < len(starts) else n for p in pos] + [n]
    cuts[0] = 0
    return [(cuts[i], cuts[i + 1]) for i in range(n_shards)]


def check_partition(num_workers: int, worker_index: int) -> None:
    """One line for a partition that cannot be right (before any model loads)."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ObjalignError(f"--num-workers {num_workers!r} (compute.num_workers): must be a positive integer")
    if isinstance(worker_index, bool) or not isinstance(worker_index, int) or not 0 <= worker_index < num_workers:
        raise ObjalignError(f"--worker-index {worker_index!r} (compute.worker_index) is outside [0, {num_workers}): "
                            f"with --num-workers {num_workers} the indices are 0..{num_workers - 1} "
                            "(Slurm: $SLURM_ARRAY_TASK_ID of an array --array=0-N-1)")


def partition(n_shards: int, num_workers: int, worker_index: int) -> list[int]:
    """Share ``worker_index`` of ``num_workers`` contiguous, near-equal shares of the shards ``0..n_shards-1``.

    The split is of *all* shards, not only the pending ones, so processes that start at different times (a
    Slurm array) always cover every shard exactly once; each process then skips the shards already done.
    """
    check_partition(num_workers, worker_index)
    lo = worker_index * n_shards // num_workers
    hi = (worker_index + 1) * n_shards // num_workers
    return list(range(lo, hi))
