"""The ``sample`` stage: dataset -> ``sample/instances.parquet`` and ``sample/excluded.json`` (the annotations
the dataset could not use, each with its reason)."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections import Counter
from pathlib import Path

from objalign.config import RunConfig
from objalign.data import fetches_images, open_dataset
from objalign.data.fetched import fetch_sampled
from objalign.data.sample import draw_sample
from objalign.runs import atomic_write_json, ensure_out, is_current, stage_record, write_stage
from objalign.tables import read_table, write_table

#: Sample settings added after runs were keyed: left out of the stage's key while at their default, so an existing
#: run's key (and every stage after it) stays the same.
LATER_SAMPLE_KEYS = {"per_category_max": None, "per_category_min": 1}


def sample_key(cfg: RunConfig, extra: dict) -> str:
    """The sample stage's key: :meth:`RunConfig.section_key` of ``sample`` and ``data.strict``, the
    :data:`LATER_SAMPLE_KEYS` at their defaults left out."""
    d = cfg.to_dict()
    sample = {k: v for k, v in d["sample"].items() if k not in LATER_SAMPLE_KEYS or v != LATER_SAMPLE_KEYS[k]}
    payload = {"sample": sample, "data.strict": d["data"]["strict"], "extra": extra}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_sample(cfg: RunConfig, out: str | Path, force: bool = False, progress: bool = True) -> dict:
    """The sample stage (see the module notes); with ``data.images: fetch`` it then fetches the sampled images
    (also when the sample itself is reused, so a rerun resumes an interrupted fetch)."""
    out = ensure_out(out)
    ds = open_dataset(cfg.data)
    rec = _sample(cfg, out, ds, force)
    if fetches_images(cfg.data):
        fetch_stage_images(cfg, out, ds, progress)
    return rec


def fetch_stage_images(cfg: RunConfig, out: Path, ds, progress: bool = True) -> dict:
    """Fetch the images of ``out``'s sample into the dataset's fetch folder; ``sample/fetched.json`` records what
    was fetched and skipped, and one warning line counts the skipped ones."""
    names = read_table(out / "sample" / "instances.parquet")["file_name"].tolist()
    res = fetch_sampled(ds, names, mirror=cfg.data.mirror, workers=cfg.data.fetch_workers, progress=progress)
    atomic_write_json(out / "sample" / "fetched.json", res)
    if res["skipped"]:
        first = res["skipped"][0]
        print(f"objalign: warning: {res['n_skipped']} of {res['n_files']} sampled image(s) could not be fetched "
              f"(first: {first['file']} from {first['url']}: {first['reason']}); their objects are skipped by the "
              f"embed stage; listed in {out}/sample/fetched.json; rerun to try them again", file=sys.stderr)
    return res


def _sample(cfg: RunConfig, out: Path, ds, force: bool) -> dict:
    started = time.time()
    extra = {"dataset": ds.fingerprint}
    if ds.duplicate_names:  # the rule changes the sampled names or ids only where names are shared
        extra["duplicate_names"] = cfg.data.duplicate_names
    key = sample_key(cfg, extra)
    if not force and is_current(out, "sample", key) and (out / "sample" / "instances.parquet").is_file():
        return {**stage_record(out, "sample"), "reused": True}
    s = cfg.sample
    table = draw_sample(ds, s)
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
    if ds.duplicate_names:  # names several category ids share, and what data.duplicate_names did (the report says)
        summary["duplicate_names"] = {"rule": cfg.data.duplicate_names,
                                      "names": {n: [int(i) for i in ids] for n, ids in ds.duplicate_names.items()}}
    if s.strategy == "per_category":  # how evenly the long tail is covered
        sizes = Counter(table["category_id"].tolist())
        summary["smallest_category_n"] = min(sizes.values()) if sizes else 0
        summary["largest_category_n"] = max(sizes.values()) if sizes else 0
    if "frequency" in table:
        summary["n_categories_by_frequency"] = dict(Counter(v.get("frequency") for v in ds.category_info.values()))
        summary["n_instances_by_frequency"] = dict(Counter(table["frequency"].tolist()))
    return {**write_stage(out, "sample", key, summary, started), "reused": False}
