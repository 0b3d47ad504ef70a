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
from objalign.report.groups import group_summary
from objalign.report.writer import PROTOCOLS, write_report
from objalign.runs import ensure_out, stage_key, stage_record, write_stage


def build_report(out: Path) -> dict:
    """Assemble ``report.json``'s content from the stage records and result tables of a run."""
    sample = stage_record(out, "sample")["summary"]
    crop = stage_record(out, "crop")["summary"]
    embed = stage_record(out, "embed")["summary"]
    a = out / "align"
    rows = json.loads((a / "results.json").read_text())

    def opt(name, default):
        f = a / name
        return json.loads(f.read_text()) if f.is_file() else default

    splits = list(dict.fromkeys(r["split"] for r in rows))
    extra = {}
    if "smallest_category_n" in sample:  # sample.strategy per_category: how evenly the categories are covered
        extra["sampled_categories"] = {"n": sample["n_categories_sampled"], "smallest": sample["smallest_category_n"],
                                       "largest": sample["largest_category_n"]}
    cats = out / "sample" / "categories.json"
    if cats.is_file():  # LVIS: figures per frequency group, from the per-category rows
        group_of = {c["id"]: c["frequency"] for c in json.loads(cats.read_text()) if c.get("frequency")}
        if group_of:
            extra["category_groups"] = dict(Counter(group_of.values()))
            extra["per_group"] = group_summary(opt("per_category.json", []), group_of)
    return {
        "dataset": sample["dataset"],
        "dataset_fingerprint": sample["dataset_fingerprint"],
        "n_instances": embed["n_vision"],
        "n_instances_sampled": sample["n_instances"],
        "n_images": sample["n_images"],
        "n_categories": sample["n_categories"],
        "crop": crop,
        "vision_encoder": embed["vision_encoder"],
        "text_encoder": embed["text_encoder"],
        "n_skipped": embed["n_skipped"],
        "n_excluded": sample.get("n_excluded", 0),
        "chance_top1": 1.0 / sample["n_categories"],
        "protocols": {s: PROTOCOLS.get(s, "") for s in splits},
        "results": rows,
        "per_category": opt("per_category.json", []),
        "similarity": opt("similarity.json", {}),
        "pca": opt("pca.json", {}),
        "skipped_protocols": opt("skipped.json", {}),
        "category_level": opt("category_level.json", {}),
        "units": opt("units.json", {}),
        "convergence": opt("convergence.json", {}),
        **extra,
    }


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


def run_report(cfg: RunConfig, out: str | Path, force: bool = False) -> dict:
    out = ensure_out(out)
    started = time.time()
    key = cfg.section_key("report", extra={"align": stage_key(out, "align")})
    report = build_report(out)
    a = out / "align"
    arrays = {name: _load_npz(a / f"{name}.npz") for name in ("per_instance", "nulls", "projection")}
    files = write_report(out, report, arrays, cfg.report.title, cfg.report.html) + ["config.yaml"]
    if cfg.report.reference_names:
        files += write_reference_names(out)
    dump_config(cfg, out / "config.yaml")
    return {**write_stage(out, "report", key, {"files": files}, started), "reused": False}
