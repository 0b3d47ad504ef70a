"""The ``align`` stage of a run: the run's embeddings -> :func:`objalign.evaluation.engine.evaluate` -> the files
the report stage reads (``align/``).

Files written: ``results.json`` (rows), ``per_category.json``, ``similarity.json``, ``pca.json``,
``category_level.json``, ``skipped.json``, ``per_instance.npz``, ``nulls.npz``, ``projection.npz``; the unit studies
add ``units.json`` and ``convergence.json`` (:mod:`objalign.pipeline.units`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from objalign.config import RunConfig
from objalign.embed.stage import load_run_embeddings
from objalign.embed.vocab import load_vocabulary_embeddings
from objalign.errors import ObjalignError
from objalign.evaluation.api import call_options, evaluate_alignment
from objalign.evaluation.engine import compute_dtype, evaluate, methods_of
from objalign.pipeline.units import check_unit_studies, unit_studies
from objalign.runs import atomic_write_json, ensure_out, is_current, stage_key, stage_record, write_stage


def write_results(d: Path, res: dict, meta: dict[str, np.ndarray] | None = None) -> None:
    """Write :func:`evaluate`'s output into folder ``d`` (the files the report stage reads).

    ``meta`` maps column names (e.g. ``annotation_id``, ``image_id``) to per-object arrays (n,); each is stored
    for every protocol's test objects in ``per_instance.npz`` as ``{protocol}__{column}``.
    """
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    arrays = dict(res["per_instance"])
    for key in [k for k in arrays if k.endswith("__index")]:
        protocol = key[: -len("__index")]
        for col, values in (meta or {}).items():
            arrays[f"{protocol}__{col}"] = np.asarray(values)[arrays[key]]
    np.savez(d / "per_instance.npz", **arrays)
    np.savez(d / "nulls.npz", **res["nulls"])
    np.savez(d / "projection.npz", **res["projection"])
    atomic_write_json(d / "per_category.json", res["per_category"])
    atomic_write_json(d / "similarity.json", res["similarity"])
    atomic_write_json(d / "pca.json", res["pca"])
    atomic_write_json(d / "skipped.json", res.get("skipped", {}))
    atomic_write_json(d / "category_level.json", res.get("category_level", {}))
    atomic_write_json(d / "results.json", res["rows"])


def check_enough(out: Path, groups: np.ndarray, labels: np.ndarray, cfg) -> None:
    """Stop with one line when the embedded objects cannot support the protocols asked: none at all (every object
    skipped while embedding, e.g. a wrong ``data.images``), fewer than 2 images, or fewer than 2 categories.

    Parameters
    ----------
    out : Path
        The run folder (its ``embed/stage.json`` says why objects were skipped).
    groups, labels : (n,) arrays
        Image id and category id of each embedded object.
    cfg : AlignConfig
    """

    n, n_images, n_cats = len(groups), len(np.unique(groups)), len(np.unique(labels))
    if n == 0:
        rec = (stage_record(out, "embed") or {}).get("summary", {})
        skipped = rec.get("skipped") or []
        why = (f"all {len(skipped)} sampled objects were skipped while embedding (first: {skipped[0].get('reason')})"
               if skipped else "the embed stage produced no vectors")
        raise ObjalignError(f"align: no objects to align: {why}; check data.images (and data.root) point at the "
                            "dataset's image folder, then run again")
    if n_images < 2:
        raise ObjalignError(f"align: {n} object(s) from {n_images} image; held-out images need objects from at least "
                            "2 images (align.cv_folds more to choose hyperparameters): raise sample.n")
    if n_cats < 2:
        raise ObjalignError(f"align: all {n} objects are of 1 category; aligning to category names needs at least 2 "
                            "(raise sample.n or widen sample.categories)")
    if list(cfg.protocols) == ["heldout_categories"] and n_cats < cfg.category_folds:
        raise ObjalignError(f"align.category_folds = {cfg.category_folds} but the run has {n_cats} categories; lower "
                            "align.category_folds or sample more categories")


def run_align(cfg: RunConfig, out: str | Path, force: bool = False) -> dict:
    out = ensure_out(out)
    started = time.time()
    key = cfg.section_key("align", extra={"embed": stage_key(out, "embed")})
    if not force and is_current(out, "align", key) and (out / "align" / "results.json").is_file():
        return {**stage_record(out, "align"), "reused": True}
    vm, X, tm, T = load_run_embeddings(out)
    check_enough(out, np.asarray(vm["image_id"]), np.asarray(vm["category_id"]), cfg.align)
    cat_row = {int(c): j for j, c in enumerate(tm["category_id"])}
    label_index = np.asarray([cat_row[int(c)] for c in vm["category_id"]])
    Y = T[label_index]
    names = [str(x) for x in tm["category"]] if "category" in tm else None
    dtype = compute_dtype(cfg.align, len(X))
    check_unit_studies(cfg.align, len(X))  # align.units, prototype_k, convergence_sizes: before any fit
    vocab = load_vocabulary_embeddings(out)
    X, Y, T = X.astype(dtype, copy=False), Y.astype(dtype, copy=False), T.astype(dtype)  # one cast for both uses
    res = evaluate_alignment(X, T, label_index, vm["image_id"], names=names, category_ids=np.asarray(tm["category_id"]),
                             vocabulary=None if vocab is None else vocab[1].astype(dtype), text_per="category",
                             **call_options(cfg.align)).raw
    write_results(out / "align", res, {k: vm[k] for k in ("annotation_id", "category_id", "image_id")})
    studies = unit_studies(out, X, Y, vm["image_id"], label_index, T, cfg.align, res["rows"],
                           evaluate)  # align/units.json, convergence.json
    summary = {"n_instances": int(len(X)), "protocols": list(cfg.align.protocols), "methods": methods_of(cfg.align),
               "n_test": {r["split"]: r["n_test"] for r in res["rows"]},
               "units": list(studies["units"].get("units", ["object"])),
               "convergence_seconds": studies["convergence"].get("seconds")}
    return {**write_stage(out, "align", key, summary, started), "reused": False}
