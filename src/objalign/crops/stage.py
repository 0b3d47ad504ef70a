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

from ..config import RunConfig
from ..data import open_dataset
from ..errors import ObjalignError
from ..runs import ensure_out, is_current, stage_key, stage_record, write_stage
from ..tables import read_table, write_table
from . import CROP_MODES
from .render import crop_window


#: Crop settings that change the crop table (the rest — background, fill — only change rendering).
DECISION_KEYS = ("crop.mode", "crop.padding", "crop.square", "crop.sam_model", "crop.grabcut_iterations",
                 "crop.dtype")


def parity_key(cfg: RunConfig) -> dict:
    """The SAM parity settings that change the crop table, only when set (earlier runs keep their keys)."""
    c = cfg.crop
    return {k: v for k, v in (("sam_checkpoint", c.sam_checkpoint), ("sam_mask", c.sam_mask))
            if v not in (None, "best_iou")}


def build_mode(cfg: RunConfig):
    """The crop mode object a config asks for (segmenter models load here)."""
    c = cfg.crop
    return CROP_MODES.get(c.mode, sam_model=c.sam_model, sam_model_path=c.sam_model_path, device=c.device,
                          dtype=c.dtype, iterations=c.grabcut_iterations, sam_checkpoint=c.sam_checkpoint,
                          sam_mask=c.sam_mask)


def decide_crops(ds, inst: dict[str, np.ndarray], mode, padding: float, square: bool,
                 progress: bool = False) -> tuple[dict[str, np.ndarray], dict]:
    """Decide each instance's crop window and mask with ``mode`` (a crop-mode object or a registered name).

    Returns the crop table (instance columns plus ``x0 y0 x1 y1``, ``mask_rle`` (JSON or ""), ``mask_source``,
    ``mask_score``, ``gt_iou``, ``note``) and a summary that counts fallbacks by reason.
    """
    from tqdm.auto import tqdm

    from .render import groups_by_image

    mode = CROP_MODES.get(mode) if isinstance(mode, str) else mode
    source = ds.image_source()
    anns = {a["id"]: a for a in ds.annotations}
    n = len(inst["annotation_id"])
    windows = np.zeros((n, 4), np.int64)
    rles, sources, notes, scores, gt_iou = [""] * n, [""] * n, [""] * n, np.full(n, np.nan), np.full(n, np.nan)
    for i in range(n):
        windows[i] = crop_window(inst["x"][i], inst["y"][i], inst["w"][i], inst["h"][i], padding, square)
    groups = groups_by_image(inst["image_id"])
    for a, b in tqdm(groups, unit="img", desc=f"crop {mode.name}", disable=not (progress and mode.needs_pixels)):
        image = None
        if mode.needs_pixels:
            try:
                image = source.load(inst["file_name"][a])
            except Exception as exc:  # recorded per instance, never silent
                for i in range(a, b):
                    sources[i], notes[i] = "box", f"image unreadable for segmentation ({type(exc).__name__}): box crop used"
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
    fallbacks = Counter(nt for nt, src in zip(notes, sources) if nt and src == "box" and mode.name != "box")
    summary = {"mode": mode.name, "sources": dict(Counter(sources)), "n_fallback": int(sum(fallbacks.values())),
               "fallback_reasons": dict(fallbacks)}
    if np.isfinite(gt_iou).any():
        summary["mean_gt_iou"] = float(np.nanmean(gt_iou))
    if hasattr(mode, "stats"):
        summary.update(mode.stats())
    return table, summary


def save_preview(ds, table: dict, path: Path, fill, background: str = "fill", n: int = 48, size: int = 96) -> None:
    """A contact sheet of the first ``n`` crops as the encoder will see them (for a quick visual check)."""
    from PIL import Image

    from .render import render_image_group

    source = ds.image_source()
    k = min(n, len(table["annotation_id"]))
    cols = 8
    sheet = Image.new("RGB", (cols * size, max(1, -(-k // cols)) * size), (255, 255, 255))
    for i in range(k):
        rle = json.loads(table["mask_rle"][i]) if table["mask_rle"][i] else None
        win = np.array([[table["x0"][i], table["y0"][i], table["x1"][i], table["y1"][i]]])
        crops, _ = render_image_group(source, table["file_name"][i], win, [rle], size, fill, "bicubic",
                                      "fill" if background == "mean" else background)
        if crops is not None:
            sheet.paste(Image.fromarray(crops[0]), ((i % cols) * size, (i // cols) * size))
    sheet.save(path)


def run_crop(cfg: RunConfig, out: str | Path, force: bool = False, progress: bool = True) -> dict:
    out = ensure_out(out)
    started = time.time()
    key = cfg.section_key(*DECISION_KEYS, extra={"sample": stage_key(out, "sample"), **parity_key(cfg)})
    if not force and is_current(out, "crop", key) and (out / "crop" / "crops.parquet").is_file():
        return {**stage_record(out, "crop"), "reused": True}
    CROP_MODES.entry(cfg.crop.mode)  # an unknown mode fails here, with "did you mean", before any work
    ds = open_dataset(cfg.data)
    inst = read_table(out / "sample" / "instances.parquet")
    if len(inst["annotation_id"]) == 0:
        raise ObjalignError(f"{out}/sample/instances.parquet is empty; check the sample settings")
    table, summary = decide_crops(ds, inst, build_mode(cfg), cfg.crop.padding, cfg.crop.square, progress=progress)
    (out / "crop").mkdir(exist_ok=True)
    write_table(out / "crop" / "crops.parquet", table)
    save_preview(ds, table, out / "crop" / "preview.png", cfg.crop.fill, cfg.crop.background)
    return {**write_stage(out, "crop", key, summary, started), "reused": False}
