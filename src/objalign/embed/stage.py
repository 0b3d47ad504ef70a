"""The ``embed`` stage: crops -> vision store; category names -> text store.

Stores live in ``<out>/embeddings/<kind>-<key>/`` (content-addressed: a changed request makes a new store and
never overwrites an old one); ``<out>/embeddings/<kind>.json`` points at the store this run uses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..data import open_dataset
from ..embed.store import EmbeddingStore, atomic_write_json, store_key
from ..encoders.prompts import fill_templates
from ..runs import ensure_out, is_current, stage_key, stage_record, write_stage
from ..tables import read_table
from .engine import extract_vision


def _quiet_transformers() -> None:
    """transformers prints a per-tensor "Loading weights" bar for every model; our own bar is enough."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - the encoder itself will report the missing extra
        pass


def check_encoder_names(cfg: RunConfig) -> None:
    """Fail on an unknown encoder name before any model is loaded."""
    from ..encoders import TEXT_ENCODERS, VISION_ENCODERS

    VISION_ENCODERS.entry(cfg.embed.vision.name)
    TEXT_ENCODERS.entry(cfg.embed.text.name)
    text_templates(cfg)  # a bad template or template file fails before any model loads
    if cfg.embed.vision.executor not in ("thread", "process"):
        from ..errors import ObjalignError

        raise ObjalignError(f"embed.vision.executor = {cfg.embed.vision.executor!r}: expected 'thread' or 'process'")
    if cfg.embed.vision.batch_size < 1 or cfg.embed.shard_size < 1:
        from ..errors import ObjalignError

        raise ObjalignError(f"embed.vision.batch_size = {cfg.embed.vision.batch_size}, embed.shard_size = "
                            f"{cfg.embed.shard_size}: both must be at least 1")


def build_vision_encoder(cfg: RunConfig):
    from ..encoders import VISION_ENCODERS

    _quiet_transformers()
    v = cfg.embed.vision
    extra = {"image_size": v.image_size} if v.image_size else {}
    return VISION_ENCODERS.get(v.name, pooling=v.pooling, model_path=v.model_path, device=v.device, dtype=v.dtype,
                               **extra)


def build_text_encoder(cfg: RunConfig):
    from ..encoders import TEXT_ENCODERS

    _quiet_transformers()
    t = cfg.embed.text
    return TEXT_ENCODERS.get(t.name, model_path=t.model_path, device=t.device)


def text_templates(cfg: RunConfig) -> tuple[str, ...]:
    """The prompt templates ``embed.text`` asks for (see :mod:`objalign.encoders.prompts`)."""
    from ..encoders.prompts import resolve_templates

    t = cfg.embed.text
    return resolve_templates(t.prompts, t.template, t.template_file)


def prompts_for(names: list[str], template: str) -> list[str]:
    """Category names -> prompts (``"{}"`` is replaced by the name; a template without it is an error)."""
    from ..encoders.prompts import fill_templates, resolve_templates

    return [row[0] for row in fill_templates(names, resolve_templates("template", template))]


def embed_texts(encoder, names: list[str], template: str | tuple[str, ...], normalize: bool) -> np.ndarray:
    """``(n_names, dim)`` float32 text embeddings of the prompts (one template, or the normalised-mean
    ensemble of several), L2-normalised if ``normalize``."""
    from ..encoders.prompts import embed_prompts, resolve_templates

    templates = resolve_templates("template", template) if isinstance(template, str) else tuple(template)
    return embed_prompts(encoder, names, templates, normalize)


def content_hash(*arrays) -> str:
    """sha256 (16 hex digits) of arrays' dtypes, shapes and bytes (object arrays through their strings)."""
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        if a.dtype == object:
            a = np.asarray([str(x) for x in a.tolist()], dtype=str)
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def vision_key_fields(dataset_fingerprint: str, table: dict, fill, background: str, encoder_key: dict,
                      shard_size: int) -> dict:
    """Everything that changes a vision store's content: the dataset, the sampled instances (ids, in order),
    the crops (windows, masks), fill and background, the encoder (name, revision, preprocessing, pooling,
    dtype) and the shard size (which decides the batches)."""
    return {"dataset": dataset_fingerprint,
            "instances": content_hash(table["annotation_id"]),
            "n_instances": int(len(table["annotation_id"])),
            "crops": content_hash(table["x0"], table["y0"], table["x1"], table["y1"], table["mask_rle"]),
            "fill": [int(v) for v in fill], "background": background, "encoder": encoder_key,
            "shard_size": int(shard_size)}


def resolve_background(cfg: RunConfig, ds, table: dict, max_images: int = 200) -> tuple[tuple[int, int, int], str]:
    """``(fill colour, background mode for the renderer)``; ``mean`` becomes ``fill`` with the mean colour of
    (up to ``max_images``) of the sampled images."""
    from ..crops.render import BACKGROUNDS
    from ..errors import ObjalignError

    bg = cfg.crop.background
    if bg not in BACKGROUNDS:
        raise ObjalignError(f"crop.background = {bg!r}: expected one of {', '.join(BACKGROUNDS)}")
    if bg != "mean":
        return tuple(cfg.crop.fill), bg
    source = ds.image_source()
    names = sorted(set(table["file_name"].tolist()))[:max_images]
    means = [source.load(n).reshape(-1, 3).mean(0) for n in names]
    return tuple(int(round(v)) for v in np.mean(means, 0)), "fill"


def run_embed(cfg: RunConfig, out: str | Path, force: bool = False, progress: bool = True) -> dict:
    out = ensure_out(out)
    started = time.time()
    crop_key = stage_key(out, "crop")
    key = cfg.section_key("embed", "crop.fill", "crop.background", extra={"crop": crop_key})
    if not force and is_current(out, "embed", key):
        return {**stage_record(out, "embed"), "reused": True}
    check_encoder_names(cfg)
    emb_dir = out / "embeddings"
    emb_dir.mkdir(exist_ok=True)
    ds = open_dataset(cfg.data)

    # text: one vector per dataset category, in category-id order
    t = cfg.embed.text
    templates = text_templates(cfg)
    text_enc = build_text_encoder(cfg)
    cat_ids = sorted(ds.categories)
    names = [ds.categories[c] for c in cat_ids]
    tkey_fields = {"categories": [[int(c), n] for c, n in zip(cat_ids, names)], "encoder": text_enc.key(),
                   "prompts": t.prompts, "templates": list(templates), "normalize": t.normalize}
    tname = f"text-{store_key(tkey_fields)}"
    tstore = EmbeddingStore.open(emb_dir / tname, tkey_fields, shard_size=max(1, len(names)), n_rows=len(names))
    if not tstore.shard_done(0):
        vec = embed_texts(text_enc, names, templates, t.normalize)
        first_prompt = [row[0] if len(row) == 1 else f"mean of {len(row)} prompts, e.g. {row[0]!r}"
                        for row in fill_templates(names, templates)]
        tstore.write_shard(0, vec, {"category_id": np.asarray(cat_ids), "category": np.asarray(names, dtype=object),
                                    "prompt": np.asarray(first_prompt, dtype=object)}, [])
    tman = tstore.finalize(1, text_enc.dim, {"n_templates": len(templates)})
    atomic_write_json(emb_dir / "text.json", {"store": tname})
    from .vocab import embed_vocabulary

    vocab = embed_vocabulary(cfg.embed.vocabulary, text_enc, templates, t.normalize, t.prompts, names, emb_dir)
    del text_enc

    # vision: one vector per sampled object
    enc = build_vision_encoder(cfg)
    v = cfg.embed.vision
    table = read_table(out / "crop" / "crops.parquet")
    fill, background = resolve_background(cfg, ds, table)
    vkey_fields = vision_key_fields(ds.fingerprint, table, fill, background, enc.key(), cfg.embed.shard_size)
    vname = f"vision-{store_key(vkey_fields)}"
    vstore = EmbeddingStore.open(emb_dir / vname, vkey_fields, cfg.embed.shard_size, len(table["annotation_id"]))
    stats = extract_vision(table, ds.image_source(), enc, vstore, cfg.embed.shard_size, v.batch_size, fill,
                           num_workers=v.num_workers, progress=progress, background=background, executor=v.executor)
    seconds = stats["seconds"]
    vman = vstore.finalize(stats["n_shards"], enc.dim, {"seconds": round(seconds, 3)})
    atomic_write_json(emb_dir / "vision.json", {"store": vname})
    if vman["skipped"]:
        first = vman["skipped"][0]
        print(f"objalign: {len(vman['skipped'])} object(s) skipped while embedding (first: annotation "
              f"{first['annotation_id']}: {first['reason']}); see {emb_dir / vname / 'manifest.json'}")
    summary = {"vision_store": vname, "text_store": tname,
               "vision_encoder": {"name": enc.name, "dim": enc.dim, "pooling": enc.pooling,
                                  "preprocess": enc.key()["preprocess"], "revision": enc.revision,
                                  "dtype": v.dtype, "device": enc.device},
               "text_encoder": {"name": tman["key_fields"]["encoder"]["name"], "dim": tman["dim"],
                                "template": t.template if t.prompts == "template" else t.prompts,
                                "prompts": t.prompts, "n_templates": len(templates)},
               "vocabulary": vocab,
               "n_vision": vman["n_vectors"], "n_skipped": len(vman["skipped"]), "skipped": vman["skipped"],
               "objects_per_s": (round(stats["n_embedded"] / seconds, 2)
                                 if seconds > 0 and stats["n_embedded"] else None),
               **{k: stats[k] for k in ("n_shards", "shards_reused")}}
    return {**write_stage(out, "embed", key, summary, started), "reused": False}


def load_run_embeddings(out: Path) -> tuple[dict, np.ndarray, dict, np.ndarray]:
    """``(vision metadata, vision array, text metadata, text array)`` of a run."""
    emb_dir = Path(out) / "embeddings"
    v = EmbeddingStore(emb_dir / json.loads((emb_dir / "vision.json").read_text())["store"])
    t = EmbeddingStore(emb_dir / json.loads((emb_dir / "text.json").read_text())["store"])
    vm, va = v.read()
    tm, ta = t.read()
    return vm, va, tm, ta
