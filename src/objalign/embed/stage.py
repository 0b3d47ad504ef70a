"""The ``embed`` stage: crops -> vision store; category names -> text store.

Stores live in ``<out>/embeddings/<kind>-<key>/`` (content-addressed: a changed request makes a new store and
never overwrites an old one); ``<out>/embeddings/<kind>.json`` points at the store this run uses.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from objalign.compute import make_executor, partition
from objalign.config import RunConfig
from objalign.data import open_dataset
from objalign.data.fetched import unavailable_key
from objalign.embed.encoding import (  # noqa: F401  (re-exported: the stage's public helpers)
    build_text_encoder,
    build_vision_encoder,
    category_text_info,
    check_encoder_names,
    check_layers,
    embed_texts,
    model_layers,
    prompts_for,
    resolve_background,
    text_templates,
    vision_encoder_spec,
    vision_key_fields,
)
from objalign.embed.engine import VisionShardWork
from objalign.embed.images import embed_image_store, image_key_extra
from objalign.embed.store import EmbeddingStore, store_key
from objalign.embed.vocab import embed_vocabulary
from objalign.encoders.prompts import fill_templates
from objalign.errors import ObjalignError
from objalign.runs import atomic_write_json, ensure_out, is_current, stage_key, stage_record, store_home, write_stage
from objalign.tables import read_table


def _text_store(cfg: RunConfig, home: Path, ds) -> dict:
    """Build the text encoder and make sure the text store (one row per dataset category, category-id order) is
    complete; returns ``store``, ``manifest``, ``encoder``, ``templates``, ``names`` and ``layers``."""
    t = cfg.embed.text
    templates = text_templates(cfg)
    text_enc = build_text_encoder(cfg)
    layers = model_layers(text_enc, t.layers, "text")
    cat_ids = sorted(ds.categories)
    names = [ds.categories[c] for c in cat_ids]
    info = category_text_info(ds, cat_ids, templates)
    fields = {"categories": [[int(c), n] for c, n in zip(cat_ids, names)], "encoder": text_enc.key(),
              "prompts": t.prompts, "templates": list(templates), "normalize": t.normalize}
    if info is not None:  # only when a template uses definitions or synonyms: other keys stay as they were
        fields["category_text"] = info
    if layers is not None:
        fields["layers"] = layers
    store = EmbeddingStore.open(home / f"text-{store_key(fields)}", fields, shard_size=max(1, len(names)),
                                n_rows=len(names), layers=layers)
    if not store.shard_done(0):
        vec = embed_texts(text_enc, names, templates, t.normalize, layers=layers, info=info)
        first_prompt = [row[0] if len(row) == 1 else f"mean of {len(row)} prompts, e.g. {row[0]!r}"
                        for row in fill_templates(names, templates, info)]
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

    v, c = cfg.embed.vision, cfg.compute
    crops = out / "crop" / "crops.parquet"
    if not crops.is_file():
        raise ObjalignError(f"{crops} does not exist: run the crop stage into {out} first (objalign crop)")
    enc = build_vision_encoder(cfg, device=None if executor.runs_here else "cpu")  # remote: only for the key
    layers = model_layers(enc, v.layers, "vision")
    table = read_table(crops)
    fill, background = resolve_background(cfg, ds, table)
    fields = vision_key_fields(ds.fingerprint, table, fill, background, enc.key(), cfg.embed.shard_size,
                               unavailable_key(out))
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

    executor = make_executor(cfg.compute)
    if not executor.runs_here:
        executor.connect()  # an unreachable cluster or an impossible request fails before any model loads
    return executor


def embed_text_store(cfg: RunConfig, out: str | Path) -> Path:
    """The complete text store for ``cfg.embed.text`` (one row per dataset category, in category-id order; a layer
    axis when ``embed.text.layers`` is not ``last``), computed unless it exists; its home follows ``cfg.cache``
    (``<out>/embeddings`` without a cache). Returns the store's folder (read it with :class:`EmbeddingStore`)."""

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


def stores_intact(out: Path) -> bool:
    """True when every store the run's embed stage points at has no damaged shard; otherwise says which (one line
    per store) and returns False, so the stage runs again and recomputes those shards alone."""
    emb_dir, intact = Path(out) / "embeddings", True
    for pointer in sorted(emb_dir.glob("*.json")):
        try:
            store = EmbeddingStore(emb_dir / json.loads(pointer.read_text())["store"])
            damaged = store.damaged_shards() if store.path.is_dir() else {-1: "the store is missing"}
        except (OSError, ValueError, KeyError) as exc:
            damaged = {-1: f"its pointer {pointer.name} cannot be read ({exc})"}
        if damaged:
            intact = False
            first = next(iter(damaged.items()))
            print(f"[embed ] {pointer.stem} store: {len(damaged)} damaged shard(s) (first: {first[1]}); recomputing "
                  "them", file=sys.stderr)
    return intact


def run_embed(cfg: RunConfig, out: str | Path, force: bool = False, progress: bool = True) -> dict:
    """Embed the crops (vision store, computed by ``compute.executor``) and the category names (text store).

    With ``embed.*.layers`` other than ``last`` the stores hold every requested layer; the run's alignment uses
    the last layer of each list (:func:`load_run_embeddings`).

    With a static partition (``compute.num_workers`` > 1) this process computes its share of the vision shards;
    the process that then finds every shard done finishes the stores and records the stage. The others return
    ``{"partial": True, ...}`` and record nothing, so the next stage never reads an unfinished store.
    """

    out = ensure_out(out)
    started = time.time()
    crop_key = stage_key(out, "crop")

    key = cfg.section_key("embed", "crop.fill", "crop.background", extra={"crop": crop_key, **image_key_extra(cfg)})
    if not force and is_current(out, "embed", key) and stores_intact(out):
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
