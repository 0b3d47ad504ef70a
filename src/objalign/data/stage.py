"""The ``sample`` stage: dataset -> ``sample/instances.parquet``."""

from __future__ import annotations

import time
from pathlib import Path

from ..config import RunConfig
from ..runs import ensure_out, is_current, stage_record, write_stage
from ..tables import write_table
from . import open_dataset
from .sample import sample_instances


def run_sample(cfg: RunConfig, out: str | Path, force: bool = False) -> dict:
    out = ensure_out(out)
    started = time.time()
    ds = open_dataset(cfg.data)
    key = cfg.section_key("sample", extra={"dataset": ds.fingerprint})
    if not force and is_current(out, "sample", key) and (out / "sample" / "instances.parquet").is_file():
        return {**stage_record(out, "sample"), "reused": True}
    s = cfg.sample
    table = sample_instances(ds, n=s.n, seed=s.seed, min_area=s.min_area, exclude_crowd=s.exclude_crowd,
                             categories=s.categories, strategy=s.strategy)
    (out / "sample").mkdir(exist_ok=True)
    write_table(out / "sample" / "instances.parquet", table)
    summary = {"dataset": str(ds.path), "dataset_fingerprint": ds.fingerprint,
               "n_instances": int(len(table["annotation_id"])), "n_images": int(len(set(table["image_id"]))),
               "n_categories_sampled": int(len(set(table["category_id"]))), "n_categories": len(ds.categories),
               "n_annotations_total": len(ds.annotations)}
    return {**write_stage(out, "sample", key, summary, started), "reused": False}
