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
    if parity_text == ["dtype"] and text.target.endswith(":HFLanguageModelText"):
        parity_text = []  # a language model may run in half precision too
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


def check_layers(cfg: RunConfig) -> None:
    """Fail with one line, before any model loads, on ``embed.*.layers`` that cannot be served: a malformed
    value, an encoder that cannot expose hidden states, or a layer number outside the model's blocks (when the
    count is known without loading it: the shipped defaults, DINOv2's releases, a local transformers folder or
    the hub cache; otherwise the same check runs once the model is loaded, before anything is embedded). Also
    checks ``embed.text.pooling`` and ``embed.storage_dtype``."""
    from ..encoders import TEXT_ENCODERS, VISION_ENCODERS
    from ..encoders.layers import check_layer_spec, no_layers_error, resolve_layers
    from ..errors import ObjalignError
    from .store import STORAGE_DTYPES

    if cfg.embed.storage_dtype not in STORAGE_DTYPES:
        raise ObjalignError(f"embed.storage_dtype = {cfg.embed.storage_dtype!r}: expected one of "
                            f"{', '.join(STORAGE_DTYPES)}")
    t = cfg.embed.text
    if t.pooling != "default" and not TEXT_ENCODERS.entry(t.name).target.endswith(":HFLanguageModelText"):
        raise ObjalignError(f"embed.text.pooling = {t.pooling!r} applies to hf-lm: language models, not {t.name!r}; "
                            "use pooling: default")
    for side, registry, sc in (("vision", VISION_ENCODERS, cfg.embed.vision), ("text", TEXT_ENCODERS, t)):
        where = f"embed.{side}.layers"
        if check_layer_spec(sc.layers, where) == "last":
            continue
        factory, bound = registry.load(sc.name)
        if getattr(factory, "supports_layers", None) is False:  # a plain factory function: known once built
            raise no_layers_error(sc.name, side)
        extra = {"checkpoint": sc.checkpoint} if getattr(sc, "checkpoint", None) else {}
        count = getattr(factory, "layer_count", None)
        n = count(**bound, model_path=sc.model_path, **extra) if count else None
        if n is not None:
            resolve_layers(sc.layers, n, sc.name, where)


def model_layers(encoder, spec, side: str) -> list[int] | None:
    """The positive layer numbers ``spec`` (``embed.<side>.layers``) asks of a loaded ``encoder``, None for
    ``last``; one error line for a layer out of range or an encoder without hidden states."""
    from ..encoders.layers import check_layer_spec, resolve_layers

    if check_layer_spec(spec, f"embed.{side}.layers") == "last":
        return None
    return resolve_layers(spec, encoder.n_layers, encoder.name, f"embed.{side}.layers")


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
    extra = {k: val for k, val in (("checkpoint", t.checkpoint), ("dtype", t.dtype), ("pooling", t.pooling))
             if val not in (None, "float32", "default")}
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


def embed_texts(encoder, names: list[str], template: str | tuple[str, ...], normalize: bool,
                layers: list[int] | None = None) -> np.ndarray:
    """``(n_names, dim)`` float32 text embeddings of the prompts (one template, or the normalised-mean
    ensemble of several), L2-normalised if ``normalize``; ``(n_names, len(layers), dim)`` with ``layers``."""
    from ..encoders.prompts import embed_prompts, resolve_templates

    templates = resolve_templates("template", template) if isinstance(template, str) else tuple(template)
    return embed_prompts(encoder, names, templates, normalize, layers=layers)


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


def _text_store(cfg: RunConfig, home: Path, ds) -> dict:
    """Build the text encoder and make sure the text store (one row per dataset category, category-id order) is
    complete; returns ``store``, ``manifest``, ``encoder``, ``templates``, ``names`` and ``layers``."""
    t = cfg.embed.text
    templates = text_templates(cfg)
    text_enc = build_text_encoder(cfg)
    layers = model_layers(text_enc, t.layers, "text")
    cat_ids = sorted(ds.categories)
    names = [ds.categories[c] for c in cat_ids]
    fields = {"categories": [[int(c), n] for c, n in zip(cat_ids, names)], "encoder": text_enc.key(),
              "prompts": t.prompts, "templates": list(templates), "normalize": t.normalize}
    if layers is not None:
        fields["layers"] = layers
    store = EmbeddingStore.open(home / f"text-{store_key(fields)}", fields, shard_size=max(1, len(names)),
                                n_rows=len(names), layers=layers)
    if not store.shard_done(0):
        vec = embed_texts(text_enc, names, templates, t.normalize, layers=layers)
        first_prompt = [row[0] if len(row) == 1 else f"mean of {len(row)} prompts, e.g. {row[0]!r}"
                        for row in fill_templates(names, templates)]
        store.write_shard(0, vec, {"category_id": np.asarray(cat_ids), "category": np.asarray(names, dtype=object),
                                   "prompt": np.asarray(first_prompt, dtype=object)}, [])
    manifest = store.finalize(1, text_enc.dim, {"n_templates": len(templates)})
    return {"store": store, "manifest": manifest, "encoder": text_enc, "templates": templates, "names": names,
            "layers": layers}


def _vision_store(cfg: RunConfig, out: Path, home: Path, ds, executor, progress: bool) -> dict:
    """Compute this process's share of the vision store's shards on ``executor`` (all of them unless a static
    partition splits them) and finish the store if every shard is then done. Returns ``store``, ``layers``,
    ``missing`` (shards left to other workers), ``n_shards``, ``receipts``, ``seconds``, ``computed`` (executor
    figures), ``encoder`` (what the summary records), ``manifest`` (None while shards are missing) and ``model``
    (the encoder this process ran, None under a remote executor)."""
    from ..compute import partition
    from ..errors import ObjalignError

    v, c = cfg.embed.vision, cfg.compute
    crops = out / "crop" / "crops.parquet"
    if not crops.is_file():
        raise ObjalignError(f"{crops} does not exist: run the crop stage into {out} first (objalign crop)")
    enc = build_vision_encoder(cfg, device=None if executor.runs_here else "cpu")  # remote: only for the key
    layers = model_layers(enc, v.layers, "vision")
    table = read_table(crops)
    fill, background = resolve_background(cfg, ds, table)
    fields = vision_key_fields(ds.fingerprint, table, fill, background, enc.key(), cfg.embed.shard_size)
    if layers is not None:
        fields["layers"] = layers
    if cfg.embed.storage_dtype != "float32":
        fields["storage_dtype"] = cfg.embed.storage_dtype
    n_rows = len(table["annotation_id"])
    store = EmbeddingStore.open(home / f"vision-{store_key(fields)}", fields, cfg.embed.shard_size, n_rows,
                                layers=layers, storage_dtype=cfg.embed.storage_dtype)
    n_shards = max(1, -(-n_rows // cfg.embed.shard_size))
    todo = [s for s in partition(n_shards, c.num_workers, c.worker_index) if not store.shard_done(s)]
    options = {"shard_size": cfg.embed.shard_size, "batch_size": v.batch_size, "fill": fill,
               "background": background, "num_workers": v.num_workers, "executor": v.executor}
    if layers is not None:
        options["layers"] = layers
    work = VisionShardWork(table, ds.image_source(), vision_encoder_spec(cfg), store.path, options)
    info = {"name": enc.name, "dim": enc.dim, "pooling": enc.pooling, "preprocess": enc.key()["preprocess"],
            "revision": enc.revision, "dtype": v.dtype, "device": enc.device if executor.runs_here else v.device,
            "layers": layers, "storage_dtype": cfg.embed.storage_dtype}
    if not executor.runs_here:
        enc = None  # each worker builds its own
    t0 = time.perf_counter()
    receipts = executor.run(work, todo, progress=progress, state=enc)
    seconds = time.perf_counter() - t0
    computed = {"executor": executor.name, "workers": executor.workers, "shards_computed": len(receipts),
                **{f"workers_{k}": round(v, 3) for k, v in getattr(executor, "stats", {}).items() if k.endswith("_s")},
                "objects_per_s": (round(sum(r["rows"] for r in receipts) / seconds, 2)
                                  if seconds > 0 and receipts else None)}
    missing = [s for s in range(n_shards) if not store.shard_done(s)]
    manifest = None
    if not missing:
        store.remove_temporaries()
        manifest = store.finalize(n_shards, info["dim"], {"seconds": round(seconds, 3)})
    return {"store": store, "layers": layers, "missing": missing, "n_shards": n_shards, "receipts": receipts,
            "seconds": seconds, "computed": computed, "encoder": info, "manifest": manifest,
            "model": enc}  # the encoder this process ran (None under a remote executor)


def _executor(cfg: RunConfig):
    from ..compute import make_executor

    executor = make_executor(cfg.compute)
    if not executor.runs_here:
        executor.connect()  # an unreachable cluster or an impossible request fails before any model loads
    return executor


def embed_text_store(cfg: RunConfig, out: str | Path) -> Path:
    """The complete text store for ``cfg.embed.text`` (one row per dataset category, in category-id order; a layer
    axis when ``embed.text.layers`` is not ``last``), computed unless it exists; its home follows ``cfg.cache``
    (``<out>/embeddings`` without a cache). Returns the store's folder (read it with :class:`EmbeddingStore`)."""
    from ..runs import store_home

    check_encoder_names(cfg)
    check_layers(cfg)
    home, _ = store_home(cfg.cache.dir, ensure_out(out), "embeddings")
    return _text_store(cfg, home, open_dataset(cfg.data))["store"].path


def embed_vision_store(cfg: RunConfig, out: str | Path, progress: bool = True) -> Path:
    """The complete vision store of the objects cropped into ``out`` (``out/crop/crops.parquet``: the crop stage
    has run there) for ``cfg.embed.vision``, its layers and ``embed.storage_dtype``, computed with
    ``cfg.compute``'s executor unless it exists; its home follows ``cfg.cache``. Returns the store's folder.

    Raises
    ------
    ObjalignError
        Bad layers, an unknown encoder, a missing crop table (before any model loads), or shards left to other
        workers of a static partition (``compute.num_workers`` > 1: run the other workers, then call again).
    """
    from ..errors import ObjalignError
    from ..runs import store_home

    check_encoder_names(cfg)
    check_layers(cfg)
    out = ensure_out(out)
    if not (out / "crop" / "crops.parquet").is_file():
        raise ObjalignError(f"{out / 'crop' / 'crops.parquet'} does not exist: run the crop stage into {out} first")
    executor = _executor(cfg)
    home, _ = store_home(cfg.cache.dir, out, "embeddings")
    res = _vision_store(cfg, out, home, open_dataset(cfg.data), executor, progress)
    if res["missing"]:
        raise ObjalignError(f"{res['store'].path}: {len(res['missing'])} of {res['n_shards']} shards are left to the "
                            f"other workers of the static partition (compute.num_workers = {cfg.compute.num_workers});"
                            " run them, then call again")
    return res["store"].path


def run_embed(cfg: RunConfig, out: str | Path, force: bool = False, progress: bool = True) -> dict:
    """Embed the crops (vision store, computed by ``compute.executor``) and the category names (text store).

    With ``embed.*.layers`` other than ``last`` the stores hold every requested layer; the run's alignment uses
    the last layer of each list (:func:`load_run_embeddings`).

    With a static partition (``compute.num_workers`` > 1) this process computes its share of the vision shards;
    the process that then finds every shard done finishes the stores and records the stage. The others return
    ``{"partial": True, ...}`` and record nothing, so the next stage never reads an unfinished store.
    """
    from ..runs import store_home

    out = ensure_out(out)
    started = time.time()
    crop_key = stage_key(out, "crop")
    from .images import embed_image_store, image_key_extra

    key = cfg.section_key("embed", "crop.fill", "crop.background", extra={"crop": crop_key, **image_key_extra(cfg)})
    if not force and is_current(out, "embed", key):
        return {**stage_record(out, "embed"), "reused": True}
    check_encoder_names(cfg)
    check_layers(cfg)
    executor = _executor(cfg)
    emb_dir = out / "embeddings"
    emb_dir.mkdir(exist_ok=True)
    home, shared = store_home(cfg.cache.dir, out, "embeddings")
    ds = open_dataset(cfg.data)

    def pointer(kind: str, path: Path) -> None:
        atomic_write_json(emb_dir / f"{kind}.json", {"store": str(path.resolve()) if shared else path.name})

    # text: one vector per dataset category, in category-id order (tiny: always computed here)
    t = cfg.embed.text
    text = _text_store(cfg, home, ds)
    tstore, tman, templates = text["store"], text["manifest"], text["templates"]
    pointer("text", tstore.path)
    from .vocab import embed_vocabulary

    vocab = embed_vocabulary(cfg.embed.vocabulary, text["encoder"], templates, t.normalize, t.prompts, text["names"],
                             emb_dir, home, shared, layer=None if text["layers"] is None else text["layers"][-1])
    del text

    # vision: one vector (or one per layer) per sampled object, shard by shard, on whichever executor
    c = cfg.compute
    vis = _vision_store(cfg, out, home, ds, executor, progress)
    vstore, n_shards, computed = vis["store"], vis["n_shards"], vis["computed"]
    if vis["missing"]:
        summary = {"vision_store": str(vstore.path), "n_shards": n_shards, "shards_missing": len(vis["missing"]),
                   **computed, "worker": f"{c.worker_index}/{c.num_workers}"}
        return {"stage": "embed", "key": key, "summary": summary, "partial": True, "reused": False}
    vman = vis["manifest"]
    pointer("vision", vstore.path)
    if vman["skipped"]:
        first = vman["skipped"][0]
        print(f"objalign: {len(vman['skipped'])} object(s) skipped while embedding (first: annotation "
              f"{first['annotation_id']}: {first['reason']}); see {vstore.path / 'manifest.json'}")
    # align.units: image (None otherwise), with the encoder this process already holds
    images = embed_image_store(cfg, out, progress=progress, encoder=vis.pop("model"), ds=ds)
    summary = {"vision_store": vstore.path.name, "text_store": tstore.path.name, "image_store": images,
               "store_folder": str(home.resolve()) if shared else "embeddings",
               "vision_encoder": vis["encoder"],
               "text_encoder": {"name": tman["key_fields"]["encoder"]["name"], "dim": tman["dim"],
                                "template": t.template if t.prompts == "template" else t.prompts,
                                "prompts": t.prompts, "n_templates": len(templates),
                                "layers": tman.get("layers")},
               "aligned_layers": {"vision": (vis["layers"] or ["last"])[-1],
                                  "text": (tman.get("layers") or ["last"])[-1]},
               "vocabulary": vocab,
               "n_vision": vman["n_vectors"], "n_skipped": len(vman["skipped"]), "skipped": vman["skipped"],
               "n_shards": n_shards, "shards_reused": n_shards - len(vis["receipts"]), **computed}
    return {**write_stage(out, "embed", key, summary, started), "reused": False}


def load_run_embeddings(out: Path) -> tuple[dict, np.ndarray, dict, np.ndarray]:
    """``(vision metadata, (n, dim) vision array, text metadata, (c, q) text array)`` of a run, float32.

    A layered store gives its last layer (the deepest of ``embed.*.layers``): the one ``objalign run`` aligns.
    """
    emb_dir = Path(out) / "embeddings"
    v = EmbeddingStore(emb_dir / json.loads((emb_dir / "vision.json").read_text())["store"])
    t = EmbeddingStore(emb_dir / json.loads((emb_dir / "text.json").read_text())["store"])
    vl, tl = v.layers(), t.layers()
    vm, va = v.read(layer=None if vl is None else vl[-1])
    tm, ta = t.read(layer=None if tl is None else tl[-1])
    return vm, va, tm, ta
