"""The ``report`` stage: a run's stage records and align tables -> :func:`objalign.report.writer.write_report`
(``report.json``, ``report.txt``, figures, ``report.html``) and ``config.yaml``.

Reads only the stage records and the align stage's result tables (never a model); the fields of ``report.json``
are described in :mod:`objalign.report.writer`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np

from objalign.config import RunConfig, dump_config
from objalign.crops.render import render_image_group
from objalign.data.images import FolderImages, ZipImages
from objalign.evaluation.result import report_dict
from objalign.report import gallery
from objalign.report.groups import group_summary
from objalign.report.writer import write_report
from objalign.runs import ensure_out, stage_key, stage_record, write_stage
from objalign.tables import read_table


def build_report(out: Path) -> dict:
    """Assemble ``report.json``'s content from the stage records and result tables of a run (the layout of
    :func:`objalign.evaluation.result.report_dict`, which :class:`objalign.AlignmentResult` uses too)."""
    sample = stage_record(out, "sample")["summary"]
    crop = stage_record(out, "crop")["summary"]
    embed = stage_record(out, "embed")["summary"]
    a = out / "align"

    def opt(name, default):
        f = a / name
        return json.loads(f.read_text()) if f.is_file() else default

    raw = {"rows": json.loads((a / "results.json").read_text()), "per_category": opt("per_category.json", []),
           "similarity": opt("similarity.json", {}), "pca": opt("pca.json", {}), "skipped": opt("skipped.json", {}),
           "category_level": opt("category_level.json", {})}
    header = {"dataset": sample["dataset"], "dataset_fingerprint": sample["dataset_fingerprint"],
              "n_instances": embed["n_vision"], "n_instances_sampled": sample["n_instances"],
              "n_images": sample["n_images"], "n_categories": sample["n_categories"], "crop": crop,
              "vision_encoder": embed["vision_encoder"], "text_encoder": embed["text_encoder"],
              "n_skipped": embed["n_skipped"], "n_excluded": sample.get("n_excluded", 0)}
    if sample.get("duplicate_names"):
        header["duplicate_names"] = sample["duplicate_names"]
    extra = {}
    if "smallest_category_n" in sample:  # sample.strategy per_category: how evenly the categories are covered
        extra["sampled_categories"] = {"n": sample["n_categories_sampled"], "smallest": sample["smallest_category_n"],
                                       "largest": sample["largest_category_n"]}
    cats = out / "sample" / "categories.json"
    if cats.is_file():  # LVIS: figures per frequency group, from the per-category rows
        group_of = {c["id"]: c["frequency"] for c in json.loads(cats.read_text()) if c.get("frequency")}
        if group_of:
            extra["category_groups"] = dict(Counter(group_of.values()))
            extra["per_group"] = group_summary(raw["per_category"], group_of)
    return {**report_dict(raw, header, units=opt("units.json", {}), convergence=opt("convergence.json", {})),
            **extra}


def _load_npz(path: Path) -> dict:
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


#: The reference pipeline's output names -> the objalign files they are copies of (``report.reference_names``).
REFERENCE_NAMES = {"reports/alignment_hist.png": "alignment_hist.png", "reports/alignment_report.txt": "report.txt"}


def write_reference_names(out: Path) -> list[str]:
    """Copy the residual histogram and the text report to the reference pipeline's names; returns those made."""
    made = []
    for name, source in REFERENCE_NAMES.items():
        if (out / source).is_file():
            (out / name).parent.mkdir(exist_ok=True)
            shutil.copyfile(out / source, out / name)
            made.append(name)
    return made


def _image_source(cfg: RunConfig):
    """Where the run's pixels are, from the config alone: never parses the annotations, never downloads."""
    d = cfg.data
    if d.kind == "coco2017":
        root, name = Path(d.root), f"{d.split}2017"
        found = [p for p in (root / name, root / f"{name}.zip", root / "zips" / f"{name}.zip") if p.exists()]
        images = found[0] if found else root / name
    else:
        images = Path(d.images) if Path(d.images).is_absolute() else Path(d.root) / d.images
    if not images.exists():
        raise FileNotFoundError(f"the image folder {images} is gone (moved dataset?)")
    return ZipImages(images) if images.is_file() else FolderImages(images)


def object_thumbnails(cfg: RunConfig, out: Path, report: dict, per: dict) -> dict:
    """The gallery's thumbnails: each shown test object's crop window and mask from ``crop/crops.parquet``,
    rendered at :data:`objalign.report.gallery.THUMB_SIZE` (``write_report``'s ``gallery_input``).

    Objects whose image cannot be read are left out and ``note`` says why (one line), so a run whose dataset
    moved still writes its report.
    """
    cap = cfg.report.max_thumbnails
    result = {"thumbnails": {}, "note": None, "cap": cap}
    want = gallery.wanted(gallery.plan(report, per, cap), per)
    if not any(want.values()):
        return result
    table_path = out / "crop" / "crops.parquet"
    if not table_path.is_file() or not all(f"{s}__annotation_id" in per for s in want):
        result["note"] = f"no crop images: {table_path} or the objects' annotation ids are missing"
        return result
    try:
        source = _image_source(cfg)
    except Exception as exc:  # noqa: BLE001 - any reason the images cannot be reached is said, not raised
        result["note"] = f"no crop images: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return result
    table = read_table(table_path)
    row_of = {int(a): i for i, a in enumerate(table["annotation_id"])}
    objects = {int(per[f"{s}__index"][p]): row_of.get(int(per[f"{s}__annotation_id"][p]))
               for s, ps in want.items() for p in ps}
    by_file: dict = {}
    for idx, row in objects.items():
        if row is not None:
            by_file.setdefault(str(table["file_name"][row]), []).append((idx, row))
    background = "fill" if cfg.crop.background == "mean" else cfg.crop.background
    problems = [] if None not in objects.values() else ["object not in the crop table"]
    for file_name, items in by_file.items():
        rows = [r for _, r in items]
        windows = np.array([[table[k][r] for k in ("x0", "y0", "x1", "y1")] for r in rows], np.int64)
        rles = [json.loads(table["mask_rle"][r]) if table["mask_rle"][r] else None for r in rows]
        boxes = np.array([[table[k][r] for k in ("x", "y", "w", "h")] for r in rows], np.float64)
        crops, why = render_image_group(source, file_name, windows, rles, gallery.THUMB_SIZE, cfg.crop.fill,
                                        "bicubic", background, boxes=boxes)
        if crops is None:
            problems.append(why)
            continue
        result["thumbnails"].update({idx: crop for (idx, _), crop in zip(items, crops)})
    if problems:
        n = len(objects) - len(result["thumbnails"])
        result["note"] = f"no crop images for {n} of {len(objects)} objects: {problems[0]}"
    return result


def run_report(cfg: RunConfig, out: str | Path, force: bool = False) -> dict:
    out = ensure_out(out)
    started = time.time()
    key = cfg.section_key("report", extra={"align": stage_key(out, "align")})
    report = build_report(out)
    a = out / "align"
    arrays = {name: _load_npz(a / f"{name}.npz") for name in ("per_instance", "nulls", "projection")}
    thumbs = object_thumbnails(cfg, out, report, arrays["per_instance"]) if cfg.report.html else None
    files = write_report(out, report, arrays, cfg.report.title, cfg.report.html, thumbs) + ["config.yaml"]
    if cfg.report.reference_names:
        files += write_reference_names(out)
    dump_config(cfg, out / "config.yaml")
    return {**write_stage(out, "report", key, {"files": files}, started), "reused": False}
