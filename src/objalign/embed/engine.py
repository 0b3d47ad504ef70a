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

import json
import math
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Callable

import numpy as np

from objalign.crops.render import groups_by_image, render_rows
from objalign.embed.encoding import quiet_transformers
from objalign.embed.store import EmbeddingStore
from objalign.errors import ObjalignError


def _make_pool(executor: str, num_workers: int):


    if executor == "thread":
        return ThreadPoolExecutor(max(1, num_workers), thread_name_prefix="objalign-render")
    if executor == "process":
        import multiprocessing as mp

        # forkserver: no fork of a process that holds torch's thread pools
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        return ProcessPoolExecutor(max(1, num_workers), mp_context=mp.get_context(method))
    raise ObjalignError(f"embed.vision.executor = {executor!r}: expected 'thread' or 'process'")


class _ShardSink:
    """The shards being computed: each one's vectors and skipped rows, written to the store once its last row is
    done (a row is done when it is embedded or skipped).

    Parameters
    ----------
    table : dict of (n,) arrays
        The crop table (see :func:`extract_vision`).
    store : EmbeddingStore
    shard_size : int
    todo : list of int
        The shards to compute.
    row_shape : tuple of int
        One row's vector shape (``(dim,)``, or ``(n_layers, dim)`` for a layered store).
    """

    def __init__(self, table: dict[str, np.ndarray], store, shard_size: int, todo: list[int],
                 row_shape: tuple[int, ...]):
        n = len(table["annotation_id"])
        self.table, self.store, self.shard_size, self.row_shape = table, store, shard_size, row_shape
        self.remaining = {s: min(shard_size, n - s * shard_size) for s in todo}
        self.got: dict[int, dict[int, np.ndarray]] = {s: {} for s in todo}
        self.skipped_by_shard: dict[int, list[dict]] = {s: [] for s in todo}
        self.all_skipped: list[dict] = []
        self.ids = np.asarray(table["annotation_id"])
        self.meta_cols = [c for c in ("annotation_id", "image_id", "category_id") if c in table]
        self.receipts: list[dict] = []

    def write_empty(self) -> None:
        """Write the shards that have no rows at all (an empty table still gets its one, empty, shard)."""
        for s in [s for s, left in self.remaining.items() if left == 0]:
            self.write(s)

    def write(self, s: int) -> None:
        """Write shard ``s`` (its rows in row order, its skipped rows by annotation id) and forget it."""
        got = self.got[s]
        rows = sorted(got)
        keep = np.asarray(rows, dtype=np.int64)
        arr = np.stack([got[r] for r in rows]) if rows else np.zeros((0, *self.row_shape), np.float32)
        meta = {c: np.asarray(self.table[c])[keep] for c in self.meta_cols}
        skipped = sorted(self.skipped_by_shard[s], key=lambda d: d["annotation_id"])
        self.receipts.append(self.store.write_shard(s, arr, meta, skipped))
        del self.got[s], self.skipped_by_shard[s], self.remaining[s]

    def finish_row(self, row: int) -> None:
        s = row // self.shard_size
        self.remaining[s] -= 1
        if self.remaining[s] == 0:
            self.write(s)

    def add(self, row: int, vector: np.ndarray) -> None:
        """Row ``row`` was embedded."""
        self.got[row // self.shard_size][row] = vector
        self.finish_row(row)

    def skip(self, row: int, reason: str) -> None:
        """Row ``row`` cannot be embedded: record ``(annotation_id, reason)``."""
        rec = {"annotation_id": int(self.ids[row]), "reason": reason}
        self.skipped_by_shard[row // self.shard_size].append(rec)
        self.all_skipped.append(rec)
        self.finish_row(row)


class _Batcher:
    """The one batch of crops being filled; :meth:`flush` runs the encoder on it. Batches never cross a shard
    boundary."""

    def __init__(self, encoder, layers: list[int] | None, batch_size: int, sink: _ShardSink, bar,
                 on_batch: Callable[[int], None] | None):
        size = encoder.preprocess.size
        self.encoder, self.layers, self.batch_size, self.sink, self.bar = encoder, layers, batch_size, sink, bar
        self.on_batch = on_batch
        self.buf = np.empty((batch_size, size, size, 3), np.uint8)
        self.rows: list[int] = []
        self.n_embedded = 0

    def take(self, ok_rows: np.ndarray, crops, bad) -> None:
        """One image's rendered rows (``ok_rows``, ``crops``) and skipped ones (``bad``: ``(row, reason)``)."""
        shard_size = self.sink.shard_size
        # rows come back in order: interleave skipped and rendered rows by row number
        events = sorted([(r, None) for r in ok_rows.tolist()] + [(r, why) for r, why in sorted(bad)])
        j = 0
        for row, why in events:
            if self.rows and row // shard_size != self.rows[-1] // shard_size:
                self.flush()  # batches never cross a shard boundary
            if why is not None:
                self.bar.update(1)
                self.sink.skip(row, why)
                continue
            self.buf[len(self.rows)] = crops[j]
            j += 1
            self.rows.append(row)
            if len(self.rows) == self.batch_size:
                self.flush()

    def flush(self) -> None:
        """Embed the batch; a row whose vector is not finite is skipped."""
        if not self.rows:
            return
        k = len(self.rows)
        batch = self.buf[:k]
        emb = np.asarray(self.encoder.encode(batch) if self.layers is None
                         else self.encoder.encode_layers(batch, self.layers), dtype=np.float32)
        finite = np.isfinite(emb.reshape(k, -1)).all(axis=1)
        for row, v, ok in zip(self.rows, emb, finite):
            if ok:
                self.n_embedded += 1
                self.sink.add(row, v)
            else:
                self.sink.skip(row, "non-finite embedding")
        self.bar.update(k)
        if self.on_batch:
            self.on_batch(k)
        self.rows.clear()


class _Renderer:
    """Submits one image's rows to the render workers (:func:`objalign.crops.render.render_rows`)."""

    def __init__(self, table: dict[str, np.ndarray], images, pre, fill, background: str):

        self.table, self.images, self.pre, self.fill, self.background = table, images, pre, fill, background
        self.windows = np.stack([table["x0"], table["y0"], table["x1"], table["y1"]], 1).astype(np.int64)
        self.boxes = np.stack([table[c] for c in ("x", "y", "w", "h")], 1).astype(np.float64) \
            if all(c in table for c in ("x", "y", "w", "h")) else None
        self.rles = [json.loads(s) if s else None for s in table["mask_rle"]]

    def submit(self, pool, rows: np.ndarray):
        return pool.submit(render_rows, self.images, str(self.table["file_name"][rows[0]]), rows, self.windows[rows],
                           [self.rles[r] for r in rows], self.boxes[rows] if self.boxes is not None else None,
                           self.pre, self.fill, self.background)


def _shards_todo(store, shards: list[int] | None, n_shards: int) -> tuple[list[int], list[int]]:
    """``(asked, todo)``: the shards asked for (all by default), and those of them the store has not done."""
    asked = list(range(n_shards)) if shards is None else sorted(set(int(s) for s in shards))
    if asked and not 0 <= asked[0] <= asked[-1] < n_shards:
        raise ObjalignError(f"shards {asked[0]}..{asked[-1]} asked for, but the table has shards 0..{n_shards - 1}")
    return asked, [s for s in asked if not store.shard_done(s)]


def _image_tasks(image_ids: np.ndarray, need: np.ndarray) -> list[np.ndarray]:
    """One task per image: its rows that ``need`` marks (rows of shards to compute), in table order."""
    tasks = []
    for a, b in groups_by_image(image_ids):
        rows = np.arange(a, b, dtype=np.int64)[need[a:b]]
        if len(rows):
            tasks.append(rows)
    return tasks


def _render_and_encode(pool, tasks: list[np.ndarray], renderer: _Renderer, batcher: _Batcher,
                       max_ahead: int) -> None:
    """Render the tasks' crops in ``pool`` (at most ``max_ahead`` rows waiting ahead of the model, and always at
    least one task) and feed them, in task order, to the batcher."""
    inflight: deque = deque()
    ahead = 0
    nxt = 0
    while nxt < len(tasks) or inflight:
        while nxt < len(tasks) and (ahead < max_ahead or not inflight):
            rows = tasks[nxt]
            inflight.append((renderer.submit(pool, rows), len(rows)))
            ahead += len(rows)
            nxt += 1
        fut, k = inflight.popleft()
        ahead -= k
        batcher.take(*fut.result())
    batcher.flush()


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

    from tqdm.auto import tqdm

    if batch_size < 1 or shard_size < 1:
        raise ObjalignError(f"batch_size={batch_size}, shard_size={shard_size}: both must be >= 1")
    t_start = time.perf_counter()
    n = len(table["annotation_id"])
    n_shards = max(1, math.ceil(n / shard_size))
    pre = encoder.preprocess
    asked, todo = _shards_todo(store, shards, n_shards)
    need = np.zeros(n, bool)
    for s in todo:
        need[s * shard_size:(s + 1) * shard_size] = True
    row_shape = (encoder.dim,) if layers is None else (len(layers), encoder.dim)
    sink = _ShardSink(table, store, shard_size, todo, row_shape)
    renderer = _Renderer(table, images, pre, fill, background)
    bar = tqdm(total=int(need.sum()), unit="obj", disable=not progress, desc=f"embed {encoder.name}",
               smoothing=0.1, dynamic_ncols=True)
    batcher = _Batcher(encoder, layers, batch_size, sink, bar, on_batch)
    sink.write_empty()
    tasks = _image_tasks(np.asarray(table["image_id"]), need)
    pool = _make_pool(executor, num_workers)
    try:
        _render_and_encode(pool, tasks, renderer, batcher, max(1, prefetch_batches) * batch_size)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    if sink.remaining:  # pragma: no cover - a bookkeeping bug, not a user error
        raise RuntimeError(f"objalign internal error: shards {sorted(sink.remaining)} were not written")
    return {"n_embedded": batcher.n_embedded, "n_skipped": len(sink.all_skipped), "n_shards": n_shards,
            "shards_reused": len(asked) - len(set(todo)), "skipped": sink.all_skipped, "receipts": sink.receipts,
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
