"""The ``crop`` stage: sampled instances -> crop windows and masks (``crops/crops.parquet``).

Crops are *decided* here (window, mask as RLE, what was used and why) and *rendered* by the extraction
engine at each encoder's own input size, so one crop table serves every encoder.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from objalign.compute import image_aligned_bounds, make_executor, partition
from objalign.config import RunConfig
from objalign.crops import CROP_MODES
from objalign.crops.render import crop_window, groups_by_image, render_image_group
from objalign.crops.store import CropStore
from objalign.data import open_dataset
from objalign.data.fetched import unavailable_key
from objalign.errors import ObjalignError
from objalign.runs import ensure_out, is_current, stage_key, stage_record, store_home, write_stage
from objalign.stores import store_key
from objalign.tables import content_hash, read_table, write_table

#: Crop settings that change the crop table (the rest — background, fill — only change rendering).
DECISION_KEYS = ("crop.mode", "crop.padding", "crop.square", "crop.sam_model", "crop.grabcut_iterations",
                 "crop.dtype")


def parity_key(cfg: RunConfig) -> dict:
    """The SAM parity settings that change the crop table, only when set (earlier runs keep their keys)."""
    c = cfg.crop
    return {k: v for k, v in (("sam_checkpoint", c.sam_checkpoint), ("sam_mask", c.sam_mask))
            if v not in (None, "best_iou")}


def mode_spec(cfg: RunConfig):
    """How to build the configured crop mode, here or in a worker (a picklable ``Spec``; models load on build)."""
    c = cfg.crop
    return CROP_MODES.spec(c.mode, sam_model=c.sam_model, sam_model_path=c.sam_model_path, device=c.device,
                           dtype=c.dtype, iterations=c.grabcut_iterations, sam_checkpoint=c.sam_checkpoint,
                           sam_mask=c.sam_mask)


def build_mode(cfg: RunConfig):
    """The crop mode object a config asks for (segmenter models load here)."""
    return mode_spec(cfg).build()


def mode_has_model(name: str) -> bool:
    """Whether a crop mode looks at pixels with a model (segmenters), i.e. is worth distributing."""
    factory, _ = CROP_MODES.load(name)
    return bool(getattr(factory, "needs_pixels", True))


def decide_rows(source, anns: dict, inst: dict[str, np.ndarray], mode, padding: float, square: bool,
                progress: bool = False) -> dict[str, np.ndarray]:
    """The crop table rows of ``inst`` (grouped by image): instance columns plus ``x0 y0 x1 y1``, ``mask_rle``
    (JSON or ""), ``mask_source``, ``mask_score``, ``gt_iou``, ``note``. ``anns``: annotation id -> COCO
    annotation; ``source``: the image source (read only by modes that need pixels)."""
    from tqdm.auto import tqdm


    n = len(inst["annotation_id"])
    windows = np.zeros((n, 4), np.int64)
    rles, sources, notes, scores, gt_iou = [""] * n, [""] * n, [""] * n, np.full(n, np.nan), np.full(n, np.nan)
    for i in range(n):
        windows[i] = crop_window(inst["x"][i], inst["y"][i], inst["w"][i], inst["h"][i], padding, square,
                                 width=int(inst["width"][i]), height=int(inst["height"][i]))
    groups = groups_by_image(inst["image_id"])
    for a, b in tqdm(groups, unit="img", desc=f"crop {mode.name}", disable=not (progress and mode.needs_pixels)):
        image = None
        if mode.needs_pixels:
            try:
                image = source.load(inst["file_name"][a])
            except Exception as exc:  # recorded per instance, never silent
                for i in range(a, b):
                    sources[i] = "box"
                    notes[i] = f"image unreadable for segmentation ({type(exc).__name__}): box crop used"
                continue
        decisions = mode.decide(image, [anns[int(i)] for i in inst["annotation_id"][a:b]],
                                int(inst["height"][a]), int(inst["width"][a]))
        for i, d in zip(range(a, b), decisions):
            rles[i] = json.dumps(d.rle) if d.rle else ""
            sources[i], notes[i], scores[i], gt_iou[i] = d.source, d.note, d.score, d.gt_iou
    table = dict(inst)
    table.update({"x0": windows[:, 0], "y0": windows[:, 1], "x1": windows[:, 2], "y1": windows[:, 3],
                  "mask_rle": np.asarray(rles, dtype=object), "mask_source": np.asarray(sources, dtype=object),
                  "mask_score": scores, "gt_iou": gt_iou, "note": np.asarray(notes, dtype=object)})
    return table


def crop_summary(table: dict[str, np.ndarray], mode_name: str) -> dict:
    """What was used for each object and why (fallbacks counted by reason), from the crop table alone."""
    sources, notes = table["mask_source"].tolist(), table["note"].tolist()
    fallbacks = Counter(nt for nt, src in zip(notes, sources) if nt and src == "box" and mode_name != "box")
    summary = {"mode": mode_name, "sources": dict(Counter(sources)), "n_fallback": int(sum(fallbacks.values())),
               "fallback_reasons": dict(fallbacks)}
    gt_iou = np.asarray(table["gt_iou"], dtype=np.float64)
    if np.isfinite(gt_iou).any():
        summary["mean_gt_iou"] = float(np.nanmean(gt_iou))
    return summary


def decide_crops(ds, inst: dict[str, np.ndarray], mode, padding: float, square: bool,
                 progress: bool = False) -> tuple[dict[str, np.ndarray], dict]:
    """Decide each instance's crop window and mask with ``mode`` (a crop-mode object or a registered name).

    Returns the crop table (see :func:`decide_rows`) and a summary that counts fallbacks by reason.
    """
    mode = CROP_MODES.get(mode) if isinstance(mode, str) else mode
    anns = {a["id"]: a for a in ds.annotations}
    table = decide_rows(ds.image_source(), anns, inst, mode, padding, square, progress)
    summary = crop_summary(table, mode.name)
    if hasattr(mode, "stats"):
        summary.update(mode.stats())
    return table, summary


class CropShardWork:
    """The crop decisions as shards (a :class:`objalign.compute.ShardWork`): each worker builds the crop mode
    (its segmenter model) once and writes whole shards of the crop table into the :class:`CropStore`."""

    name = "crop"

    def __init__(self, source, anns: dict, inst: dict, spec, padding: float, square: bool, store_path):
        self.source, self.anns, self.inst, self.spec = source, anns, inst, spec
        self.padding, self.square, self.store_path = padding, square, str(store_path)

    def model_key(self) -> str:
        """Workers that already hold this model keep it for the next work with the same key."""
        return repr(self.spec)

    def setup(self):
        return self.spec.build()

    def run(self, mode, shards: list[int], progress: bool = False) -> list[dict]:
        from tqdm.auto import tqdm

        store = CropStore(self.store_path)
        bounds = [store.bounds[i] for i in shards]
        receipts = []
        with tqdm(total=sum(b - a for a, b in bounds), unit="obj", desc=f"crop {mode.name}",
                  disable=not progress, dynamic_ncols=True) as bar:
            for i, (a, b) in zip(shards, bounds):
                before = _counters(mode)
                rows = decide_rows(self.source, self.anns, {k: v[a:b] for k, v in self.inst.items()}, mode,
                                   self.padding, self.square)
                after = mode.stats() if hasattr(mode, "stats") else {}
                stats = {k: (v - before[k] if k in before else v) for k, v in after.items()}
                receipts.append(store.write_shard(i, rows, stats))
                bar.update(b - a)
        return receipts


def _counters(mode) -> dict:
    """The numeric counters of a mode's ``stats()`` (segmenter calls, images seen)."""
    return _counters_of(mode.stats() if hasattr(mode, "stats") else {})


def _counters_of(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def save_preview(ds, table: dict, path: Path, fill, background: str = "fill", n: int = 48, size: int = 96) -> None:
    """A contact sheet of the first ``n`` crops as the encoder will see them (for a quick visual check)."""
    from PIL import Image


    source = ds.image_source()
    k = min(n, len(table["annotation_id"]))
    cols = 8
    sheet = Image.new("RGB", (cols * size, max(1, -(-k // cols)) * size), (255, 255, 255))
    for i in range(k):
        rle = json.loads(table["mask_rle"][i]) if table["mask_rle"][i] else None
        win = np.array([[table["x0"][i], table["y0"][i], table["x1"][i], table["y1"][i]]])
        box = np.array([[table["x"][i], table["y"][i], table["w"][i], table["h"][i]]], np.float64)
        crops, _ = render_image_group(source, table["file_name"][i], win, [rle], size, fill, "bicubic",
                                      "fill" if background == "mean" else background, boxes=box)
        if crops is not None:
            sheet.paste(Image.fromarray(crops[0]), ((i % cols) * size, (i // cols) * size))
    sheet.save(path)


def run_crop(cfg: RunConfig, out: str | Path, force: bool = False, progress: bool = True) -> dict:
    """Decide the crops, shard by shard, on ``compute.executor`` (segmenter modes) or here (box, gt-mask).

    With a static partition (``compute.num_workers`` > 1) this process decides its share of the shards; the
    one that then finds every shard done writes ``crop/crops.parquet`` and records the stage.
    """

    out = ensure_out(out)
    started = time.time()
    extra = {"sample": stage_key(out, "sample"), **parity_key(cfg)}
    if (missing := unavailable_key(out)) is not None:  # images the fetch could not get: a rerun that gets them redoes
        extra["unavailable_images"] = missing
    key = cfg.section_key(*DECISION_KEYS, extra=extra)
    if not force and is_current(out, "crop", key) and (out / "crop" / "crops.parquet").is_file():
        return {**stage_record(out, "crop"), "reused": True}
    CROP_MODES.entry(cfg.crop.mode)  # an unknown mode fails here, with "did you mean", before any work
    if cfg.crop.shard_size < 1:
        raise ObjalignError(f"crop.shard_size = {cfg.crop.shard_size}: must be at least 1")
    has_model = mode_has_model(cfg.crop.mode)
    executor = make_executor(cfg.compute, local_only=not has_model)
    if not executor.runs_here:
        executor.connect()  # an unreachable cluster or an impossible request fails before any model loads
    ds = open_dataset(cfg.data)
    inst = read_table(out / "sample" / "instances.parquet")
    n = len(inst["annotation_id"])
    if n == 0:
        raise ObjalignError(f"{out}/sample/instances.parquet is empty; check the sample settings")
    (out / "crop").mkdir(exist_ok=True)
    home, shared = store_home(cfg.cache.dir, out, "crop")
    bounds = image_aligned_bounds(inst["image_id"], cfg.crop.shard_size)
    key_fields = {"dataset": ds.fingerprint, "instances": content_hash(inst["annotation_id"]), "n_instances": n,
                  "decisions": {k: cfg.to_dict()["crop"][k.split(".")[1]] for k in DECISION_KEYS},
                  "shard_size": cfg.crop.shard_size, **parity_key(cfg)}
    if missing is not None:  # a segmenter fell back to the box where an image was not fetched
        key_fields["unavailable_images"] = missing
    store = CropStore.open(home / f"crops-{store_key(key_fields)}", key_fields, bounds)
    c = cfg.compute
    todo = [i for i in partition(len(bounds), c.num_workers, c.worker_index) if not store.shard_done(i)]
    wanted = set(inst["annotation_id"].tolist())
    anns = {a["id"]: a for a in ds.annotations if a["id"] in wanted}
    work = CropShardWork(ds.image_source(), anns, inst, mode_spec(cfg), cfg.crop.padding, cfg.crop.square,
                         store.path)
    t0 = time.perf_counter()
    receipts = executor.run(work, todo, progress=progress and has_model)
    seconds = time.perf_counter() - t0
    computed = {"executor": executor.name, "workers": executor.workers, "n_shards": len(bounds),
                "shards_computed": len(receipts), "shards_reused": len(bounds) - len(receipts),
                "store": str(store.path.resolve()) if shared else f"crop/{store.path.name}",
                "seconds_deciding": round(seconds, 3)}
    missing = store.missing()
    if missing:
        summary = {**computed, "shards_missing": len(missing), "worker": f"{c.worker_index}/{c.num_workers}"}
        return {"stage": "crop", "key": key, "summary": summary, "partial": True, "reused": False}
    store.remove_temporaries()
    table, stats = store.read()
    store.finalize()
    summary = crop_summary(table, cfg.crop.mode)
    for st in stats:  # counters add up over shards; the rest (segmenter parameters) is the same in every shard
        for k, v in st.items():
            summary[k] = summary.get(k, 0) + v if k in _counters_of(st) else summary.get(k, v)
    summary.update(computed)
    write_table(out / "crop" / "crops.parquet", table)
    save_preview(ds, table, out / "crop" / "preview.png", cfg.crop.fill, cfg.crop.background)
    return {**write_stage(out, "crop", key, summary, started), "reused": False}
