"""Running the model stages on one device, many GPUs or many machines.

The unit of work is the **shard**: a fixed, contiguous range of the image-grouped object order. A stage
describes its work as a :class:`~objalign.compute.shards.ShardWork` (picklable: it builds its model once per
worker with ``setup()`` and computes whole shards with ``run()``, writing each one atomically and returning a
small receipt) and hands the pending shards to an executor from :data:`EXECUTORS` (:mod:`.executors`). The
stage never knows which executor ran them: ``local`` computes them in this process, ``ray`` on Ray actors
(one per GPU, on this node or a cluster). Because a shard's bytes depend only on the shard, the store is the
same whichever executor, worker count, completion order or retries produced it, and a rerun computes only
the shards that are missing. :func:`~objalign.compute.shards.partition` splits the shards between processes
started by something else (a Slurm array, torchrun) for the same result without Ray.
"""

from objalign.compute.executors import EXECUTORS, check_compute, make_executor, release_workers
from objalign.compute.shards import ShardWork, image_aligned_bounds, partition

__all__ = ["EXECUTORS", "ShardWork", "check_compute", "image_aligned_bounds", "make_executor", "partition",
           "release_workers"]
