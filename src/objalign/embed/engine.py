"""The extraction engine: decode each image once, render its objects' crops in background workers, run the
encoder on full batches, write shards to the store.

The unit of work is a shard (a contiguous slice of the instance table, sorted by image), which is what makes
a killed run resumable and what a distributed executor will hand out later. Batches never cross a shard
boundary, so a shard's vectors are computed from exactly the same batches whether the run was interrupted or
not (a batch's composition can change a float's last bits on some backends).

Bad input never stops a run and is never silent: a missing, corrupt or truncated image, a zero-area,
non-finite or out-of-bounds box, a mask of the wrong size, or a non-finite embedding skips that instance and
records ``(annotation_id, reason)`` in the shard's skipped list (gathered into the store's manifest).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Callable

import numpy as np

from objalign.crops.render import groups_by_image, render_rows
from objalign.embed.encoding import quiet_transformers
from objalign.embed.store import EmbeddingStore
from objalign.errors import ObjalignError


def _make_pool(executor: str, num_workers: int):
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor


    if executor == "thread":
        return ThreadPoolExecutor(max(1, num_workers), thread_name_prefix="objalign-render")
    if executor == "process":
        import multiprocessing as mp

        # forkserver: no fork of a process that holds torch's thread pools
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        return ProcessPoolExecutor(max(1, num_workers), mp_context=mp.get_context(method))
    raise ObjalignError(f"embed.vision.executor = {executor!r}: expected 'thread' or 'process'")


def extract_vision(table: dict[str, np.ndarray], images, encoder, store, shard_size: int,
                   batch_size: int, fill, num_workers: int = 2, progress: bool = True, background: str = "fill",
                   on_batch: Callable[[int], None] | None = None, executor: str = "thread",
                   prefetch_batches: int = 4, shards: list[int] | None = None,
                   layers: list[int] | None = None) -> dict:
    """Embed every row of ``table`` (the crop table: one row per object, sorted by image) into ``store``.

    Parameters
    ----------
    table : dict of (n,) arrays
        Needs ``annotation_id``, ``image_id``, ``category_id``, ``file_name``, ``x0 y0 x1 y1`` (crop window) and
        ``mask_rle`` (JSON string or empty); ``x y w h`` (the COCO box), when present, is validated.
    images : image source
        :class:`FolderImages` or :class:`ZipImages` (``load(file_name)``, ``describe(file_name)``).
    encoder : VisionEncoder
        ``encode((B, S, S, 3) uint8) -> (B, dim)``, ``preprocess``, ``dim``, ``name``.
    store : EmbeddingStore
        Shards already done there are skipped (resume).
    shard_size, batch_size : int
        Rows per shard; crops per forward pass (batches never cross a shard boundary).
    num_workers, executor : int, {"thread", "process"}
        Background workers that decode and crop while the model runs.
    prefetch_batches : int
        How many batches of crops may wait ahead of the model: memory is bounded by the batch, not the dataset.
    shards : list of int, optional
        Compute only these shards (a worker's share; see :mod:`objalign.compute`); default all of them.
    layers : list of int, optional
        Model layer numbers: each crop's ``(len(layers), dim)`` vectors come from ``encoder.encode_layers`` (one
        forward pass) into a layered store; default the encoder's usual ``(dim,)`` vector.

    Returns
    -------
    dict
        ``n_embedded``, ``n_skipped``, ``n_shards``, ``shards_reused`` (asked for but already done),
        ``skipped`` (this call's ``{"annotation_id", "reason"}``), ``receipts`` (one per shard written, see
        :meth:`EmbeddingStore.write_shard`), ``seconds``.
    """
    import json
    import time

    from tqdm.auto import tqdm


    if batch_size < 1 or shard_size < 1:
        raise ObjalignError(f"batch_size={batch_size}, shard_size={shard_size}: both must be >= 1")
    t_start = time.perf_counter()
    n = len(table["annotation_id"])
    n_shards = max(1, math.ceil(n / shard_size))
    pre = encoder.preprocess
    size = pre.size
    asked = list(range(n_shards)) if shards is None else sorted(set(int(s) for s in shards))
    if asked and not 0 <= asked[0] <= asked[-1] < n_shards:
        raise ObjalignError(f"shards {asked[0]}..{asked[-1]} asked for, but the table has shards 0..{n_shards - 1}")
    todo = [s for s in asked if not store.shard_done(s)]
    todo_set = set(todo)
    need = np.zeros(n, bool)
    for s in todo:
        need[s * shard_size:(s + 1) * shard_size] = True
    remaining = {s: min(shard_size, n - s * shard_size) for s in todo}
    got: dict[int, dict[int, np.ndarray]] = {s: {} for s in todo}
    skipped_by_shard: dict[int, list[dict]] = {s: [] for s in todo}
    all_skipped: list[dict] = []
    ids = np.asarray(table["annotation_id"])
    windows = np.stack([table["x0"], table["y0"], table["x1"], table["y1"]], 1).astype(np.int64)
    boxes = np.stack([table[c] for c in ("x", "y", "w", "h")], 1).astype(np.float64) \
        if all(c in table for c in ("x", "y", "w", "h")) else None
    rles = [json.loads(s) if s else None for s in table["mask_rle"]]
    bar = tqdm(total=int(need.sum()), unit="obj", disable=not progress, desc=f"embed {encoder.name}",
               smoothing=0.1, dynamic_ncols=True)
    meta_cols = [c for c in ("annotation_id", "image_id", "category_id") if c in table]
    n_embedded = 0
    receipts: list[dict] = []

    row_shape = (encoder.dim,) if layers is None else (len(layers), encoder.dim)

    def write(s: int) -> None:
        rows = sorted(got[s])
        keep = np.asarray(rows, dtype=np.int64)
        arr = np.stack([got[s][r] for r in rows]) if rows else np.zeros((0, *row_shape), np.float32)
        meta = {c: np.asarray(table[c])[keep] for c in meta_cols}
        receipts.append(store.write_shard(s, arr, meta, sorted(skipped_by_shard[s], key=lambda d: d["annotation_id"])))
        del got[s], skipped_by_shard[s], remaining[s]

    def finish_row(row: int) -> None:
        s = row // shard_size
        remaining[s] -= 1
        if remaining[s] == 0:
            write(s)

    def skip(row: int, reason: str) -> None:
        rec = {"annotation_id": int(ids[row]), "reason": reason}
        skipped_by_shard[row // shard_size].append(rec)
        all_skipped.append(rec)
        finish_row(row)

    buf = np.empty((batch_size, size, size, 3), np.uint8)  # the one batch being filled
    buf_rows: list[int] = []

    def flush() -> None:
        nonlocal n_embedded
        if not buf_rows:
            return
        k = len(buf_rows)
        emb = np.asarray(encoder.encode(buf[:k]) if layers is None else encoder.encode_layers(buf[:k], layers),
                         dtype=np.float32)
        finite = np.isfinite(emb.reshape(k, -1)).all(axis=1)
        for row, v, ok in zip(buf_rows, emb, finite):
            if ok:
                got[row // shard_size][row] = v
                n_embedded += 1
                finish_row(row)
            else:
                skip(row, "non-finite embedding")
        bar.update(k)
        if on_batch:
            on_batch(k)
        buf_rows.clear()

    for s in [s for s, left in remaining.items() if left == 0]:  # an empty table still gets its (empty) shard
        write(s)
    # tasks: one per image (rows of todo shards only), in table order
    tasks = []
    for a, b in groups_by_image(np.asarray(table["image_id"])):
        rows = np.arange(a, b, dtype=np.int64)[need[a:b]]
        if len(rows):
            tasks.append(rows)
    max_ahead = max(1, prefetch_batches) * batch_size
    pool = _make_pool(executor, num_workers)
    try:
        inflight: deque = deque()
        ahead = 0
        nxt = 0
        while nxt < len(tasks) or inflight:
            while nxt < len(tasks) and (ahead < max_ahead or not inflight):
                rows = tasks[nxt]
                fut = pool.submit(render_rows, images, str(table["file_name"][rows[0]]), rows, windows[rows],
                                  [rles[r] for r in rows], boxes[rows] if boxes is not None else None, pre, fill,
                                  background)
                inflight.append((fut, len(rows)))
                ahead += len(rows)
                nxt += 1
            fut, k = inflight.popleft()
            ahead -= k
            ok_rows, crops, bad = fut.result()
            # rows come back in order: interleave skipped and rendered rows by row number
            bad_iter = sorted(bad)
            events = sorted([(r, None) for r in ok_rows.tolist()] + [(r, why) for r, why in bad_iter])
            j = 0
            for row, why in events:
                if buf_rows and row // shard_size != buf_rows[-1] // shard_size:
                    flush()  # batches never cross a shard boundary
                if why is not None:
                    bar.update(1)
                    skip(row, why)
                    continue
                buf[len(buf_rows)] = crops[j]
                j += 1
                buf_rows.append(row)
                if len(buf_rows) == batch_size:
                    flush()
        flush()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    if remaining:  # pragma: no cover - a bookkeeping bug, not a user error
        raise RuntimeError(f"objalign internal error: shards {sorted(remaining)} were not written")
    return {"n_embedded": n_embedded, "n_skipped": len(all_skipped), "n_shards": n_shards,
            "shards_reused": len(asked) - len(todo_set), "skipped": all_skipped, "receipts": receipts,
            "seconds": time.perf_counter() - t_start}


class VisionShardWork:
    """The vision embedding of a crop table as shards (a :class:`objalign.compute.ShardWork`): each worker
    builds the encoder from ``encoder_spec`` once, and :func:`extract_vision` writes the shards it is given
    into the store at ``store_path``.

    Parameters
    ----------
    table : dict of (n,) arrays
        The crop table (see :func:`extract_vision`).
    images : image source
    encoder_spec : objalign.registry.Spec
        How a worker builds the encoder (``VISION_ENCODERS.spec(...)``).
    store_path : path
        An :class:`EmbeddingStore` opened by the stage (its manifest is there).
    options : dict
        ``extract_vision`` keyword arguments: ``shard_size``, ``batch_size``, ``fill``, ``background``,
        ``num_workers``, ``executor`` and (optional) ``layers``.
    """

    name = "embed"

    def __init__(self, table: dict, images, encoder_spec, store_path, options: dict):
        self.table, self.images, self.encoder_spec = table, images, encoder_spec
        self.store_path, self.options = str(store_path), dict(options)

    def model_key(self) -> str:
        """Workers that already hold this model keep it for the next work with the same key."""
        return repr(self.encoder_spec)

    def setup(self):

        quiet_transformers()
        return self.encoder_spec.build()

    def run(self, encoder, shards: list[int], progress: bool = False) -> list[dict]:

        o = self.options
        stats = extract_vision(self.table, self.images, encoder, EmbeddingStore(self.store_path), o["shard_size"],
                               o["batch_size"], o["fill"], num_workers=o["num_workers"], progress=progress,
                               background=o["background"], executor=o["executor"], shards=shards,
                               layers=o.get("layers"))
        return stats["receipts"]
