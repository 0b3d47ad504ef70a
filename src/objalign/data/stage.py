"""The ``sample`` stage: dataset -> ``sample/instances.parquet`` and ``sample/excluded.json`` (the annotations
the dataset could not use, each with its reason)."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

from objalign.config import RunConfig
from objalign.data import open_dataset
from objalign.data.sample import sample_instances
from objalign.runs import atomic_write_json, ensure_out, is_current, stage_record, write_stage
from objalign.tables import write_table


def run_sample(cfg: RunConfig, out: str | Path, force: bool = False) -> dict:
    out = ensure_out(out)
    started = time.time()
    ds = open_dataset(cfg.data)
    extra = {"dataset": ds.fingerprint}
    if ds.duplicate_names:  # the rule changes the sampled names or ids only where names are shared
        extra["duplicate_names"] = cfg.data.duplicate_names
    key = cfg.section_key("sample", "data.strict", extra=extra)
    if not force and is_current(out, "sample", key) and (out / "sample" / "instances.parquet").is_file():
        return {**stage_record(out, "sample"), "reused": True}
    s = cfg.sample
    table = sample_instances(ds, n=s.n, seed=s.seed, min_area=s.min_area, exclude_crowd=s.exclude_crowd,
                             categories=s.categories, strategy=s.strategy)
    (out / "sample").mkdir(exist_ok=True)
    write_table(out / "sample" / "instances.parquet", table)
    atomic_write_json(out / "sample" / "excluded.json", ds.excluded)
    if ds.category_info:  # what a format knows of each category (LVIS: frequency group, synonyms, definition)
        table_of = [{"id": int(c), "name": ds.categories[c], **ds.category_info[c]} for c in sorted(ds.category_info)]
        atomic_write_json(out / "sample" / "categories.json", table_of)
    if ds.excluded:  # one line, however many
        first = ds.excluded[0]
        refs = any(r["kind"] in ("dangling reference", "repeated id") for r in ds.excluded)
        print(f"objalign: warning: left out {len(ds.excluded)} annotation(s) of {ds.path} ({ds.excluded_summary()}; "
              f"first: annotation {first['annotation_id']}: {first['reason']}); listed in {out}/sample/excluded.json"
              + ("; data.strict: true refuses dangling references and repeated ids instead" if refs else ""),
              file=sys.stderr)
    summary = {"dataset": str(ds.path), "dataset_fingerprint": ds.fingerprint,
               "n_instances": int(len(table["annotation_id"])), "n_images": int(len(set(table["image_id"]))),
               "n_categories_sampled": int(len(set(table["category_id"]))), "n_categories": len(ds.categories),
               "n_annotations_total": len(ds.annotations) + len(ds.excluded), "n_excluded": len(ds.excluded),
               "excluded_by_kind": dict(Counter(r["kind"] for r in ds.excluded))}
    if "frequency" in table:
        summary["n_categories_by_frequency"] = dict(Counter(v.get("frequency") for v in ds.category_info.values()))
        summary["n_instances_by_frequency"] = dict(Counter(table["frequency"].tolist()))
    return {**write_stage(out, "sample", key, summary, started), "reused": False}
