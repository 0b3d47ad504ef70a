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
from ..runs import atomic_write_json
from .store import EmbeddingStore, store_key
from ..encoders.prompts import fill_templates
from ..runs import ensure_out, is_current, stage_key, stage_record, write_stage
from ..tables import content_hash, read_table
from .engine import VisionShardWork


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

    vision = VISION_ENCODERS.entry(cfg.embed.vision.name)
    text = TEXT_ENCODERS.entry(cfg.embed.text.name)
    v, t = cfg.embed.vision, cfg.embed.text
    parity_vision = [k for k, val in (("checkpoint", v.checkpoint), ("preprocess", v.preprocess),
                                      ("pos_interpolation", v.pos_interpolation))
                     if val not in (None, "default", "auto")]
    if parity_vision and not vision.target.endswith(":HFDinov2"):
        from ..errors import ObjalignError

        raise ObjalignError(f"embed.vision.{parity_vision[0]} applies to DINOv2 encoders (facebook/dinov2-*, "
                            f"dinov2_vit*14), not {v.name!r}; unset it or pick a DINOv2 encoder")
    parity_text = [k for k, val in (("checkpoint", t.checkpoint), ("dtype", t.dtype)) if val not in (None, "float32")]
    if parity_text and not text.target.endswith(":HFClipText"):
        from ..errors import ObjalignError

        raise ObjalignError(f"embed.text.{parity_text[0]} applies to CLIP text encoders (openai/clip-*, clip_vit_*), "
                            f"not {t.name!r}; unset it or pick a CLIP text encoder")
    text_templates(cfg)  # a bad template or template file fails before any model loads
    if cfg.embed.vision.executor not in ("thread", "process"):
        from ..errors import ObjalignError

        raise ObjalignError(f"embed.vision.executor = {cfg.embed.vision.executor!r}: expected 'thread' or 'process'")
    if cfg.embed.vision.batch_size < 1 or cfg.embed.shard_size < 1:
        from ..errors import ObjalignError

        raise ObjalignError(f"embed.vision.batch_size = {cfg.embed.vision.batch_size}, embed.shard_size = "
                            f"{cfg.embed.shard_size}: both must be at least 1")


def vision_encoder_spec(cfg: RunConfig, device: str | None = None):
    """How to build the configured vision encoder, in this process or a worker's (a picklable ``Spec``)."""
    from ..encoders import VISION_ENCODERS

    v = cfg.embed.vision
    extra = {"image_size": v.image_size} if v.image_size else {}
    # parity settings (docs/parity.md) reach only the encoders that take them
    extra.update({k: val for k, val in (("checkpoint", v.checkpoint), ("preprocess", v.preprocess),
                                        ("pos_interpolation", v.pos_interpolation))
                  if val not in (None, "default", "auto")})
    return VISION_ENCODERS.spec(v.name, pooling=v.pooling, model_path=v.model_path, device=device or v.device,
                                dtype=v.dtype, **extra)


def build_vision_encoder(cfg: RunConfig, device: str | None = None):
    """The configured vision encoder (on ``device`` instead of ``embed.vision.device`` if given)."""
    _quiet_transformers()
    return vision_encoder_spec(cfg, device).build()


def build_text_encoder(cfg: RunConfig):
    from ..encoders import TEXT_ENCODERS

    _quiet_transformers()
    t = cfg.embed.text
    extra = {k: val for k, val in (("checkpoint", t.checkpoint), ("dtype", t.dtype)) if val not in (None, "float32")}
    return TEXT_ENCODERS.get(t.name, model_path=t.model_path, device=t.device, **extra)


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
    (up to ``max_images``) of the sampled images that can be read (``crop.fill`` when none can)."""
    from ..crops.render import BACKGROUNDS
    from ..errors import ObjalignError

    bg = cfg.crop.background
    if bg not in BACKGROUNDS:
        raise ObjalignError(f"crop.background = {bg!r}: expected one of {', '.join(BACKGROUNDS)}")
    if bg != "mean":
        return tuple(cfg.crop.fill), bg
    source = ds.image_source()
    names = sorted(set(table["file_name"].tolist()))[:max_images]
    means = []
    for name in names:
        try:
            means.append(source.load(name).reshape(-1, 3).mean(0))
        except Exception:  # noqa: BLE001 - an unreadable image is skipped and recorded by the extraction engine
            continue
    if not means:
        return tuple(cfg.crop.fill), "fill"
    return tuple(int(round(v)) for v in np.mean(means, 0)), "fill"


def run_embed(cfg: RunConfig, out: str | Path, force: bool = False, progress: bool = True) -> dict:
    """Embed the crops (vision store, computed by ``compute.executor``) and the category names (text store).

    With a static partition (``compute.num_workers`` > 1) this process computes its share of the vision shards;
    the process that then finds every shard done finishes the stores and records the stage. The others return
    ``{"partial": True, ...}`` and record nothing, so the next stage never reads an unfinished store.
    """
    from ..compute import make_executor, partition
    from ..runs import store_home

    out = ensure_out(out)
    started = time.time()
    crop_key = stage_key(out, "crop")
    from .images import embed_image_store, image_key_extra

    key = cfg.section_key("embed", "crop.fill", "crop.background", extra={"crop": crop_key, **image_key_extra(cfg)})
    if not force and is_current(out, "embed", key):
        return {**stage_record(out, "embed"), "reused": True}
    check_encoder_names(cfg)
    executor = make_executor(cfg.compute)
    if not executor.runs_here:
        executor.connect()  # an unreachable cluster or an impossible request fails before any model loads
    emb_dir = out / "embeddings"
    emb_dir.mkdir(exist_ok=True)
    home, shared = store_home(cfg.cache.dir, out, "embeddings")
    ds = open_dataset(cfg.data)

    def pointer(kind: str, path: Path) -> None:
        atomic_write_json(emb_dir / f"{kind}.json", {"store": str(path.resolve()) if shared else path.name})

    # text: one vector per dataset category, in category-id order (tiny: always computed here)
    t = cfg.embed.text
    templates = text_templates(cfg)
    text_enc = build_text_encoder(cfg)
    cat_ids = sorted(ds.categories)
    names = [ds.categories[c] for c in cat_ids]
    tkey_fields = {"categories": [[int(c), n] for c, n in zip(cat_ids, names)], "encoder": text_enc.key(),
                   "prompts": t.prompts, "templates": list(templates), "normalize": t.normalize}
    tstore = EmbeddingStore.open(home / f"text-{store_key(tkey_fields)}", tkey_fields, shard_size=max(1, len(names)),
                                 n_rows=len(names))
    if not tstore.shard_done(0):
        vec = embed_texts(text_enc, names, templates, t.normalize)
        first_prompt = [row[0] if len(row) == 1 else f"mean of {len(row)} prompts, e.g. {row[0]!r}"
                        for row in fill_templates(names, templates)]
        tstore.write_shard(0, vec, {"category_id": np.asarray(cat_ids), "category": np.asarray(names, dtype=object),
                                    "prompt": np.asarray(first_prompt, dtype=object)}, [])
    tman = tstore.finalize(1, text_enc.dim, {"n_templates": len(templates)})
    pointer("text", tstore.path)
    from .vocab import embed_vocabulary

    vocab = embed_vocabulary(cfg.embed.vocabulary, text_enc, templates, t.normalize, t.prompts, names, emb_dir,
                             home, shared)
    del text_enc

    # vision: one vector per sampled object, shard by shard, on whichever executor
    v, c = cfg.embed.vision, cfg.compute
    enc = build_vision_encoder(cfg, device=None if executor.runs_here else "cpu")  # remote: only for the key
    table = read_table(out / "crop" / "crops.parquet")
    fill, background = resolve_background(cfg, ds, table)
    vkey_fields = vision_key_fields(ds.fingerprint, table, fill, background, enc.key(), cfg.embed.shard_size)
    n_rows = len(table["annotation_id"])
    vstore = EmbeddingStore.open(home / f"vision-{store_key(vkey_fields)}", vkey_fields, cfg.embed.shard_size, n_rows)
    n_shards = max(1, -(-n_rows // cfg.embed.shard_size))
    todo = [s for s in partition(n_shards, c.num_workers, c.worker_index) if not vstore.shard_done(s)]
    work = VisionShardWork(table, ds.image_source(), vision_encoder_spec(cfg), vstore.path,
                           {"shard_size": cfg.embed.shard_size, "batch_size": v.batch_size, "fill": fill,
                            "background": background, "num_workers": v.num_workers, "executor": v.executor})
    dim, enc_info = enc.dim, {"name": enc.name, "dim": enc.dim, "pooling": enc.pooling,
                              "preprocess": enc.key()["preprocess"], "revision": enc.revision, "dtype": v.dtype,
                              "device": enc.device if executor.runs_here else v.device}
    if not executor.runs_here:
        del enc  # each worker builds its own
        enc = None
    t0 = time.perf_counter()
    receipts = executor.run(work, todo, progress=progress, state=enc)
    seconds = time.perf_counter() - t0
    del enc
    computed = {"executor": executor.name, "workers": executor.workers, "shards_computed": len(receipts),
                **{f"workers_{k}": round(v, 3) for k, v in getattr(executor, "stats", {}).items() if k.endswith("_s")},
                "objects_per_s": (round(sum(r["rows"] for r in receipts) / seconds, 2)
                                  if seconds > 0 and receipts else None)}
    missing = [s for s in range(n_shards) if not vstore.shard_done(s)]
    if missing:
        summary = {"vision_store": str(vstore.path), "n_shards": n_shards, "shards_missing": len(missing), **computed,
                   "worker": f"{c.worker_index}/{c.num_workers}"}
        return {"stage": "embed", "key": key, "summary": summary, "partial": True, "reused": False}
    vstore.remove_temporaries()
    vman = vstore.finalize(n_shards, dim, {"seconds": round(seconds, 3)})
    pointer("vision", vstore.path)
    if vman["skipped"]:
        first = vman["skipped"][0]
        print(f"objalign: {len(vman['skipped'])} object(s) skipped while embedding (first: annotation "
              f"{first['annotation_id']}: {first['reason']}); see {vstore.path / 'manifest.json'}")
    images = embed_image_store(cfg, out, progress=progress)  # align.units: image (None otherwise)
    summary = {"vision_store": vstore.path.name, "text_store": tstore.path.name, "image_store": images,
               "store_folder": str(home.resolve()) if shared else "embeddings",
               "vision_encoder": enc_info,
               "text_encoder": {"name": tman["key_fields"]["encoder"]["name"], "dim": tman["dim"],
                                "template": t.template if t.prompts == "template" else t.prompts,
                                "prompts": t.prompts, "n_templates": len(templates)},
               "vocabulary": vocab,
               "n_vision": vman["n_vectors"], "n_skipped": len(vman["skipped"]), "skipped": vman["skipped"],
               "n_shards": n_shards, "shards_reused": n_shards - len(receipts), **computed}
    return {**write_stage(out, "embed", key, summary, started), "reused": False}


def load_run_embeddings(out: Path) -> tuple[dict, np.ndarray, dict, np.ndarray]:
    """``(vision metadata, vision array, text metadata, text array)`` of a run."""
    emb_dir = Path(out) / "embeddings"
    v = EmbeddingStore(emb_dir / json.loads((emb_dir / "vision.json").read_text())["store"])
    t = EmbeddingStore(emb_dir / json.loads((emb_dir / "text.json").read_text())["store"])
    vm, va = v.read()
    tm, ta = t.read()
    return vm, va, tm, ta
