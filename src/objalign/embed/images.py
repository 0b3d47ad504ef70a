"""Whole-image embeddings for the image unit of analysis (``align.units`` with ``image``).

With ``image`` among ``align.units`` the embed stage also embeds every sampled image whole: the run's vision encoder
on the window ``(0, 0, width, height)`` of each image, rendered at the encoder's own preprocessing (its resize
policy, ``crop_pct``, size and interpolation), one row per image in crop-table (image) order, at the layer the
object level aligns (the last of ``embed.vision.layers``). The rows go into their own content-addressed store
``embeddings/image-<key>`` (the key: the dataset, the sampled images, their windows, the encoder and its
preprocessing, the layer, the shard size); ``embeddings/image.json`` names it. The rows are computed in the
process that finishes the embed stage (a few hundred to a few thousand images: one per sampled image) with the
extraction engine the object crops use, on ``embed.vision.device`` (on the CPU when ``compute.executor`` is remote,
as the driver may have no accelerator); an image that cannot be read is skipped and recorded in the store's
manifest, like an object.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from objalign.crops.render import groups_by_image
from objalign.data import open_dataset
from objalign.data.fetched import unavailable_key
from objalign.embed.encoding import build_vision_encoder, model_layers, vision_key_fields
from objalign.embed.engine import extract_vision
from objalign.embed.store import EmbeddingStore
from objalign.evaluation.units import check_units
from objalign.runs import atomic_write_json, store_home
from objalign.stores import store_key
from objalign.tables import read_table

__all__ = ["embed_image_store", "image_table", "image_key_extra", "load_image_embeddings"]


def wants_images(cfg) -> bool:
    """Whether ``align.units`` asks for the image level (an unknown unit fails here, before any model loads)."""

    return "image" in check_units(cfg.align.units)


def image_key_extra(cfg) -> dict:
    """What the embed stage's key adds when the whole-image store is asked for (nothing otherwise, so earlier runs
    keep their key)."""
    return {"whole_images": True} if wants_images(cfg) else {}


def image_table(table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One row per image of a crop table (sorted by image): the window ``(0, 0, width, height)``, no mask.

    ``annotation_id`` holds the image id (the store's row id, which its skipped list names) and ``category_id`` -1.
    """

    first = np.asarray([a for a, _ in groups_by_image(np.asarray(table["image_id"]))], dtype=np.int64)
    ids = np.asarray(table["image_id"])[first]
    w = np.asarray(table["width"])[first].astype(np.int64)
    h = np.asarray(table["height"])[first].astype(np.int64)
    return {"annotation_id": ids.astype(np.int64), "image_id": ids, "category_id": np.full(len(ids), -1),
            "file_name": np.asarray(table["file_name"])[first], "width": w, "height": h,
            "x0": np.zeros(len(ids), np.int64), "y0": np.zeros(len(ids), np.int64), "x1": w, "y1": h,
            "mask_rle": np.asarray([""] * len(ids), dtype=object)}


def embed_image_store(cfg, out: str | Path, progress: bool = True, encoder=None, ds=None) -> dict | None:
    """Embed every sampled image whole into its store (see the module docstring); returns what
    ``embeddings/image.json`` records, or None (and removes that record) when ``align.units`` has no ``image``.

    ``encoder`` and ``ds``: the vision encoder and dataset the embed stage already holds (built and opened here
    when not given)."""

    out = Path(out)
    record = out / "embeddings" / "image.json"
    if not wants_images(cfg):
        record.unlink(missing_ok=True)
        return None
    ds = ds if ds is not None else open_dataset(cfg.data)
    table = image_table(read_table(out / "crop" / "crops.parquet"))
    # this process embeds the images; with a remote executor (Ray) it may have no accelerator: its CPU then
    enc = encoder if encoder is not None else build_vision_encoder(
        cfg, device="cpu" if cfg.compute.executor != "local" else None)
    fill = tuple(int(v) for v in cfg.crop.fill)
    fields = {**vision_key_fields(ds.fingerprint, table, fill, "fill", enc.key(), cfg.embed.shard_size,
                                  unavailable_key(out)), "unit": "whole image"}
    # the layer the object level aligns (the last requested one), so both levels compare the same features
    layers = model_layers(enc, cfg.embed.vision.layers, "vision")
    layers = None if layers is None else layers[-1:]
    if layers is not None:
        fields["layers"] = layers
    home, shared = store_home(cfg.cache.dir, out, "embeddings")
    name = f"image-{store_key(fields)}"
    n = len(table["image_id"])
    store = EmbeddingStore.open(home / name, fields, cfg.embed.shard_size, n, layers=layers)
    n_shards = max(1, -(-n // cfg.embed.shard_size))
    v = cfg.embed.vision
    stats = extract_vision(table, ds.image_source(), enc, store, cfg.embed.shard_size, v.batch_size, fill,
                           num_workers=v.num_workers, progress=progress, background="fill", executor=v.executor,
                           layers=layers)
    man = store.finalize(n_shards, enc.dim, {"seconds": round(stats["seconds"], 3)})
    info = {"store": str(store.path.resolve()) if shared else name, "n_images": int(man["n_vectors"]),
            "n_skipped": len(man["skipped"]), "seconds": round(stats["seconds"], 3),
            "shards_reused": int(n_shards - len(stats["receipts"]))}
    atomic_write_json(record, info)
    return info


def load_image_embeddings(out: str | Path) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """``(image ids (m,), (m, dim) whole-image embeddings, image.json record)`` of a run, or None."""
    record = Path(out) / "embeddings" / "image.json"
    if not record.is_file():
        return None
    info = json.loads(record.read_text())
    meta, arr = EmbeddingStore(record.parent / info["store"]).read()
    if arr.ndim == 3:  # one layer (the one the object level aligns) on a layer axis
        arr = arr[:, -1]
    return np.asarray(meta["image_id"]), arr, info
