"""The extraction engine: decode each image once, render its objects' crops in background threads, run the
encoder on full batches, write shards to the store.

The unit of work is a shard (a contiguous slice of the instance table, sorted by image), which is what makes
a killed run resumable and what a distributed executor will hand out later.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from ..crops.masks import rle_to_mask
from ..crops.render import render_crop


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3)`` uint8 RGB (grayscale, CMYK, palette, 16-bit all converted)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            arr = (255.0 * arr / max(float(arr.max()), 1.0)).astype(np.uint8)
            return np.repeat(arr[..., None], 3, axis=2)
        return np.asarray(im.convert("RGB"))


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
    """Images read straight from a zip archive (``images_from_zip: true``), thread-safe."""

    def __init__(self, zip_path: str | Path):
        from ..data.zipimages import ZipImageReader

        self.path = Path(zip_path)
        self.reader = ZipImageReader(zip_path)

    def describe(self, file_name: str) -> str:
        return f"{self.path}:{file_name}"

    def load(self, file_name: str) -> np.ndarray:
        with self.reader.open(file_name) as im:
            return np.asarray(im.convert("RGB"))


def render_image_group(images, file_name: str, windows: np.ndarray, rles: list, size: int, fill, resample: str,
                       background: str = "fill"):
    """Decode one image (``images.load(file_name)``) and render all of its crops.

    Returns ``(crops (k, size, size, 3) uint8 or None, reason or None)``.
    """
    where = images.describe(file_name)
    try:
        image = images.load(file_name)
    except FileNotFoundError:
        return None, f"image file not found: {where}"
    except Exception as exc:  # PIL raises many types for corrupt files
        return None, f"unreadable image {where}: {type(exc).__name__}: {exc}"
    out = np.empty((len(windows), size, size, 3), np.uint8)
    for j, (win, rle) in enumerate(zip(windows, rles)):
        mask = rle_to_mask(rle) if rle else None
        if mask is not None and mask.shape != image.shape[:2]:
            return None, f"mask size {mask.shape} != image size {image.shape[:2]} for {where}"
        out[j] = render_crop(image, tuple(int(v) for v in win), size, mask=mask, fill=fill, resample=resample,
                             background=background)
    return out, None


def extract_vision(table: dict[str, np.ndarray], images, encoder, store, shard_size: int,
                   batch_size: int, fill, num_workers: int = 2, progress: bool = True, background: str = "fill",
                   on_batch: Callable[[int], None] | None = None) -> dict:
    """Embed every row of ``table`` (the crop table: one row per object, sorted by image) into ``store``.

    ``table`` needs ``annotation_id``, ``image_id``, ``category_id``, ``file_name``, ``x0 y0 x1 y1`` (crop
    window) and ``mask_rle`` (JSON string or empty); ``images`` is an image source (:class:`FolderImages`,
    :class:`ZipImages`: ``load(file_name)``, ``describe(file_name)``). Shards already done are skipped. Instances whose image
    cannot be read, or whose embedding is not finite, are recorded in the shard's skipped list.

    Returns a summary: ``{"n_embedded", "n_skipped", "n_shards", "shards_reused"}``.
    """
    import json

    from tqdm.auto import tqdm

    n = len(table["annotation_id"])
    n_shards = max(1, math.ceil(n / shard_size))
    pre = encoder.preprocess
    todo = [i for i in range(n_shards) if not store.shard_done(i)]
    bar = tqdm(total=sum(min(shard_size, n - i * shard_size) for i in todo), unit="obj", disable=not progress,
               desc=f"embed {encoder.name}", smoothing=0.1)
    windows = np.stack([table["x0"], table["y0"], table["x1"], table["y1"]], 1)
    rles = [json.loads(s) if s else None for s in table["mask_rle"]]
    n_embedded = n_skipped = 0
    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        for shard in todo:
            lo, hi = shard * shard_size, min(n, (shard + 1) * shard_size)
            groups = [(lo + a, lo + b) for a, b in _groups_by_image(table["image_id"][lo:hi])]
            futures = [pool.submit(render_image_group, images, table["file_name"][a], windows[a:b], rles[a:b],
                                   pre.size, fill, pre.resample, background) for a, b in groups]
            vecs, keep, skipped = [], [], []
            pending_rows: list[int] = []
            pending_crops: list[np.ndarray] = []

            def flush():
                if not pending_rows:
                    return
                batch = np.concatenate(pending_crops)
                emb = encoder.encode(batch)
                for row, v in zip(pending_rows, emb):
                    if np.all(np.isfinite(v)):
                        vecs.append(v)
                        keep.append(row)
                    else:
                        skipped.append({"annotation_id": int(table["annotation_id"][row]),
                                        "reason": "non-finite embedding"})
                bar.update(len(pending_rows))
                if on_batch:
                    on_batch(len(pending_rows))
                pending_rows.clear()
                pending_crops.clear()

            for (a, b), fut in zip(groups, futures):
                crops, reason = fut.result()
                if crops is None:
                    skipped.extend({"annotation_id": int(table["annotation_id"][r]), "reason": reason}
                                   for r in range(a, b))
                    bar.update(b - a)
                    continue
                rows = list(range(a, b))
                while rows:
                    room = batch_size - len(pending_rows)
                    pending_rows.extend(rows[:room])
                    pending_crops.append(crops[:room])
                    rows, crops = rows[room:], crops[room:]
                    if len(pending_rows) >= batch_size:
                        flush()
            flush()
            keep_idx = np.asarray(keep, dtype=np.int64)
            meta = {c: np.asarray(table[c])[keep_idx] for c in ("annotation_id", "image_id", "category_id")}
            arr = np.stack(vecs) if vecs else np.zeros((0, encoder.dim), np.float32)
            store.write_shard(shard, arr, meta, skipped)
            n_embedded += len(keep)
            n_skipped += len(skipped)
    bar.close()
    return {"n_embedded": n_embedded, "n_skipped": n_skipped, "n_shards": n_shards,
            "shards_reused": n_shards - len(todo)}
