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
from pathlib import Path
from typing import Callable

import numpy as np

from ..crops.masks import rle_to_mask
from ..crops.render import render_crop

#: Modes PIL decodes to that are not 8-bit RGB and need more than ``convert("RGB")``.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def to_rgb(im) -> np.ndarray:
    """A decoded PIL image -> ``(H, W, 3)`` uint8 RGB.

    8-bit modes (L, LA, P, RGBA, CMYK, YCbCr, ...) go through ``convert("RGB")`` (alpha dropped, CMYK
    converted); 16-bit and 32-bit grayscale are scaled by their maximum to 0..255 (not clipped, which would
    make most 16-bit images white).
    """
    if im.mode in _WIDE_MODES:
        arr = np.asarray(im, dtype=np.float64)
        if arr.ndim == 3:
            arr = arr[..., 0]
        finite = np.isfinite(arr)
        arr = np.where(finite, arr, 0.0)
        lo = min(float(arr.min()), 0.0)
        top = max(float(arr.max()) - lo, 1.0)
        arr = np.round(255.0 * (arr - lo) / top).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3)`` uint8 RGB (grayscale, CMYK, palette, 16-bit all converted).

    A truncated file raises (``OSError``) instead of being padded with grey.
    """
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return to_rgb(im)


def _groups_by_image(image_ids: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop)]`` runs of equal consecutive image ids."""
    if len(image_ids) == 0:
        return []
    cut = np.flatnonzero(np.diff(image_ids)) + 1
    starts = np.concatenate([[0], cut])
    stops = np.concatenate([cut, [len(image_ids)]])
    return list(zip(starts.tolist(), stops.tolist()))


class FolderImages:
    """Images as files under a folder: ``load(file_name) -> (H, W, 3) uint8``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def describe(self, file_name: str) -> str:
        return str(self.root / file_name)

    def load(self, file_name: str) -> np.ndarray:
        return load_rgb(self.root / file_name)


class ZipImages:
    """Images read straight from a zip archive (``images_from_zip: true``), thread- and process-safe."""

    def __init__(self, zip_path: str | Path):
        from ..data.zipimages import ZipImageReader

        self.path = Path(zip_path)
        self.reader = ZipImageReader(zip_path)

    def describe(self, file_name: str) -> str:
        return f"{self.path}:{file_name}"

    def load(self, file_name: str) -> np.ndarray:
        with self.reader.open(file_name) as im:
            return to_rgb(im)


def box_problem(box, height: int, width: int) -> str | None:
    """Why a COCO box ``[x, y, w, h]`` cannot be cropped from an ``height x width`` image, or ``None``."""
    x, y, w, h = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return f"non-finite box [{x}, {y}, {w}, {h}]"
    if w <= 0 or h <= 0:
        return f"zero-area box [{x:g}, {y:g}, {w:g}, {h:g}]"
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return f"box [{x:g}, {y:g}, {w:g}, {h:g}] lies outside the {width}x{height} image"
    return None


def render_rows(images, file_name: str, rows: np.ndarray, windows: np.ndarray, rles: list, boxes: np.ndarray | None,
                preprocess, fill, background: str = "fill"):
    """Decode one image once and render the crops of its instances ``rows``.

    Parameters
    ----------
    images : image source with ``load(file_name)`` and ``describe(file_name)``
    rows : (k,) int64
        Row numbers of the instances (returned back, to keep the bookkeeping in the caller).
    windows : (k, 4) int
        Crop windows ``x0 y0 x1 y1`` decided by the crop stage.
    rles : list of k dict or None
        Masks (COCO compressed RLE) or ``None`` for a box crop.
    boxes : (k, 4) float or None
        COCO boxes ``x y w h``, checked against the image (zero-area / outside -> skipped).
    preprocess : Preprocess
        The encoder's input contract (size, resize policy, ``crop_pct``, interpolation).

    Returns
    -------
    ok_rows : (m,) int64
    crops : (m, size, size, 3) uint8
    skipped : list of (row, reason)
    """
    size = preprocess.size
    where = images.describe(file_name)
    try:
        image = images.load(file_name)
    except FileNotFoundError:
        return rows[:0], np.empty((0, size, size, 3), np.uint8), [(int(r), f"image file not found: {where}")
                                                                   for r in rows]
    except Exception as exc:  # PIL raises many types for corrupt or truncated files
        reason = f"unreadable image {where}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return rows[:0], np.empty((0, size, size, 3), np.uint8), [(int(r), reason) for r in rows]
    H, W = image.shape[:2]
    out = np.empty((len(rows), size, size, 3), np.uint8)
    ok, skipped = [], []
    for j, row in enumerate(rows):
        problem = box_problem(boxes[j], H, W) if boxes is not None else None
        x0, y0, x1, y1 = (int(v) for v in windows[j])
        if problem is None and (x1 <= x0 or y1 <= y0):
            problem = f"empty crop window ({x0}, {y0}, {x1}, {y1})"
        mask = None
        if problem is None and rles[j]:
            mask = rle_to_mask(rles[j])
            if mask.shape != (H, W):
                problem = f"mask size {mask.shape} != image size {(H, W)} for {where}"
        if problem is not None:
            skipped.append((int(row), problem))
            continue
        win = preprocess.window(x0, y0, x1, y1)
        out[len(ok)] = render_crop(image, win, size, mask=mask, fill=fill, resample=preprocess.resample,
                                   background=background)
        ok.append(int(row))
    return np.asarray(ok, np.int64), out[:len(ok)], skipped


def render_image_group(images, file_name: str, windows: np.ndarray, rles: list, size: int, fill, resample: str,
                       background: str = "fill"):
    """Decode one image and render all of its crops at ``size`` (squash, no ``crop_pct``), e.g. for previews.

    Returns ``(crops (k, size, size, 3) uint8 or None, reason or None)``: ``None`` and the first reason when any
    instance cannot be rendered.
    """
    from ..encoders.base import Preprocess

    rows = np.arange(len(windows), dtype=np.int64)
    ok, crops, skipped = render_rows(images, file_name, rows, np.asarray(windows), list(rles), None,
                                     Preprocess(size=int(size), resample=resample), fill, background)
    if skipped:
        return None, skipped[0][1]
    return crops, None


def _make_pool(executor: str, num_workers: int):
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    from ..errors import ObjalignError

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
                   prefetch_batches: int = 4) -> dict:
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

    Returns
    -------
    dict
        ``n_embedded``, ``n_skipped``, ``n_shards``, ``shards_reused``, ``skipped`` (this call's
        ``{"annotation_id", "reason"}``), ``seconds``.
    """
    import json
    import time

    from tqdm.auto import tqdm

    from ..errors import ObjalignError

    if batch_size < 1 or shard_size < 1:
        raise ObjalignError(f"batch_size={batch_size}, shard_size={shard_size}: both must be >= 1")
    t_start = time.perf_counter()
    n = len(table["annotation_id"])
    n_shards = max(1, math.ceil(n / shard_size))
    pre = encoder.preprocess
    size = pre.size
    todo = [s for s in range(n_shards) if not store.shard_done(s)]
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

    def write(s: int) -> None:
        rows = sorted(got[s])
        keep = np.asarray(rows, dtype=np.int64)
        arr = np.stack([got[s][r] for r in rows]) if rows else np.zeros((0, encoder.dim), np.float32)
        meta = {c: np.asarray(table[c])[keep] for c in meta_cols}
        store.write_shard(s, arr, meta, sorted(skipped_by_shard[s], key=lambda d: d["annotation_id"]))
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
        emb = np.asarray(encoder.encode(buf[:k]), dtype=np.float32)
        finite = np.isfinite(emb).all(axis=1)
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
    for a, b in _groups_by_image(np.asarray(table["image_id"])):
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
            "shards_reused": n_shards - len(todo_set), "skipped": all_skipped,
            "seconds": time.perf_counter() - t_start}
