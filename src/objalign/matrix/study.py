"""``objalign matrix CONFIG --out DIR``: every vision layer x text layer of several models, every store computed once.

1. ``sample`` and ``crop`` run once into ``DIR`` with the base configuration (``DIR/sample``, ``DIR/crop``).
2. Each text model's and each vision model's layered store is computed once (reused through the store cache on a
   rerun, or by any run with the same settings and ``cache.dir``).
3. The rows of every vision model are intersected (an object one model could not embed is left out of every
   cell), so every cell scores the same objects with the same folds and the same permutations.
4. For every vision model and layer: one ``evaluate_targets`` call with every (text model, text layer) as a
   target set — PCA and CV splits of that layer are shared, each cell chooses its own hyperparameters. Its rows
   and nulls are written atomically to ``DIR/matrix_blocks/<vision>__L<layer>/`` with ``block.json`` last: a rerun
   reuses every finished block whose inputs are unchanged.
5. ``matrix.parquet`` (one row per cell, protocol, method and measure), ``best.parquet`` (the best layer pair of
   every model pair with its selection-corrected p-value, :func:`objalign.stats.permutation.grid_max_pvalue`), the
   figures and ``matrix.html`` (:mod:`objalign.report.matrix`), ``matrix.json`` and the resolved ``config.yaml``.

A cell that cannot be computed is recorded with ``status`` ``error`` and its ``reason``, a protocol skipped for
too few objects with ``status`` ``skipped``; the rest of the matrix completes.
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np

from objalign.config import dump_config
from objalign.errors import ObjalignError
from objalign.evaluation.api import call_options, evaluate_alignment
from objalign.evaluation.engine import compute_dtype
from objalign.maps.threads import single_threaded_blas
from objalign.matrix import sources
from objalign.matrix.config import MatrixConfig, load_matrix
from objalign.pipeline.chain import stage_function
from objalign.report.matrix import file_label, write_matrix_report
from objalign.runs import atomic_write_bytes, atomic_write_json, ensure_out
from objalign.stats.metrics import ALL_FIGURES, is_smaller_better
from objalign.stats.permutation import grid_max_pvalue
from objalign.stores import store_key
from objalign.tables import content_hash

#: ``matrix.parquet``'s columns, in order.
COLUMNS = ("vision_model", "vision_name", "vision_layer", "text_model", "text_name", "text_layer", "protocol",
           "method", "measure", "value", "ci_low", "ci_high", "pvalue", "n_permutations", "null", "status", "reason")
#: ``best.parquet``'s columns, in order.
BEST_COLUMNS = ("vision_model", "text_model", "protocol", "method", "measure", "vision_layer", "text_layer", "value",
                "pvalue_cell", "pvalue_max", "n_cells", "n_permutations", "status", "reason")
BLOCKS = "matrix_blocks"


def cell_rows(res: dict, base: dict) -> list[dict]:
    """``matrix.parquet`` rows of one cell from its :func:`objalign.evaluation.engine.evaluate` result (``base``: the
    cell's model and layer columns)."""
    empty = {"value": np.nan, "ci_low": np.nan, "ci_high": np.nan, "pvalue": np.nan, "n_permutations": 0,
             "null": "", "status": "ok", "reason": ""}
    if "error" in res:
        return [{**base, "protocol": "", "method": "", "measure": "", **empty, "status": "error",
                 "reason": str(res["error"])}]
    rows = []
    for r in res["rows"]:
        null = r.get("null") or {}
        for m in ALL_FIGURES:
            if m not in r:
                continue
            ci = (r.get("ci") or {}).get(m) or (np.nan, np.nan)
            p = (r.get("pvalue") or {}).get(m)
            rows.append({**base, "protocol": r["split"], "method": r["method"], "measure": m, **empty,
                         "value": float(r[m]), "ci_low": float(ci[0]), "ci_high": float(ci[1]),
                         "pvalue": np.nan if p is None else float(p),
                         "n_permutations": int(null.get("n_permutations", 0)), "null": str(null.get("kind", ""))})
    for protocol, why in (res.get("skipped") or {}).items():
        rows.append({**base, "protocol": protocol, "method": "", "measure": "", **empty, "status": "skipped",
                     "reason": str(why)})
    sim = res.get("similarity") or {}
    calibrated = sim.get("calibrated") or {}
    for m, v in (sim.get("values") or {}).items():
        cal = calibrated.get(m) or {}
        row = {**base, "protocol": "heldout_images", "method": "similarity", "measure": m, **empty}
        if v is None:
            row.update(status="error", reason=str((sim.get("errors") or {}).get(m, "not computed")))
        else:
            row.update(value=float(v), pvalue=float(cal["pvalue"]) if "pvalue" in cal else np.nan,
                       n_permutations=int(cal.get("n_permutations", 0) or 0) if "pvalue" in cal else 0,
                       null="image-block permutations" if "pvalue" in cal else "")
        rows.append(row)
        if "calibrated" in cal:
            rows.append({**row, "measure": f"{m}_calibrated", "value": float(cal["calibrated"])})
    return rows


def _table_bytes(rows: list[dict], columns) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"vision_layer": pa.int64(), "text_layer": pa.int64(), "n_permutations": pa.int64(),
             "n_cells": pa.int64(), "value": pa.float64(), "ci_low": pa.float64(), "ci_high": pa.float64(),
             "pvalue": pa.float64(), "pvalue_cell": pa.float64(), "pvalue_max": pa.float64()}
    schema = pa.schema([(c, types.get(c, pa.string())) for c in columns])
    table = pa.table({c: pa.array([r.get(c) for r in rows], type=schema.field(c).type) for c in columns},
                     schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _read_rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(str(path)).to_pylist()


def _npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _block_dir(out: Path, vlabel: str, layer: int) -> Path:

    return out / BLOCKS / f"{file_label(vlabel)}__L{layer}"


def _load_block(out: Path, key: str, vlabel: str, layer: int) -> tuple[list[dict], dict] | None:
    """Rows and nulls of a finished (vision model, layer) block whose key is ``key``; ``None`` if there is none."""
    d = _block_dir(out, vlabel, layer)
    done = d / "block.json"
    if done.is_file():
        try:
            if json.loads(done.read_text()).get("key") == key:
                with np.load(d / "nulls.npz") as z:
                    return _read_rows(d / "cells.parquet"), {k: z[k] for k in z.files}
        except (OSError, ValueError, json.JSONDecodeError):
            pass  # an unreadable block is recomputed
    return None


def _save_block(out: Path, key: str, vlabel: str, layer: int, rows: list[dict], nulls: dict, seconds: float) -> None:
    """Write a block's rows and nulls atomically, ``block.json`` (the completion mark) last."""

    d = _block_dir(out, vlabel, layer)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(d / "cells.parquet", _table_bytes(rows, COLUMNS))
    atomic_write_bytes(d / "nulls.npz", _npz_bytes(nulls))
    atomic_write_json(d / "block.json", {"key": key, "vision_model": vlabel, "vision_layer": layer,
                                         "seconds": round(seconds, 3), "n_rows": len(rows)})


def evaluate_block(X, groups, label_index, targets: dict, align, names, category_ids, vision: dict,
                   text_of: dict) -> tuple[list[dict], dict, float]:
    """One vision layer against every target: ``(matrix.parquet rows, nulls by "<target>__<null key>", seconds)``.

    ``vision`` holds the block's ``vision_model``, ``vision_name`` and ``vision_layer`` columns, ``text_of`` maps
    each target key to its ``text_model``, ``text_name`` and ``text_layer`` columns (plain values: this runs in
    worker processes with ``matrix.jobs`` > 1).
    """

    t0 = time.time()
    try:  # one BLAS thread: the many small products of a cell only lose to threads' synchronisation
        with single_threaded_blas():
            out = evaluate_alignment(X, targets, label_index, groups, names=names, category_ids=category_ids,
                                     text_per="category", **call_options(align))
            res = {k: r.raw for k, r in out.items()}
    except ObjalignError as exc:  # concerns X itself (e.g. too few objects for the folds)
        res = {k: {"error": str(exc)} for k in targets}
    rows, nulls = [], {}
    for k, r in res.items():
        rows += cell_rows(r, {**vision, **text_of[k]})
        for nk, arr in (r.get("nulls") or {}).items():
            nulls[f"{k}__{nk}"] = np.asarray(arr)
    return rows, nulls, time.time() - t0


def best_cells(rows: list[dict], nulls: dict[tuple, np.ndarray]) -> list[dict]:
    """The best layer pair of every (vision model, text model, protocol, method, measure) that has nulls, with
    its selection-corrected p-value (:func:`objalign.stats.permutation.grid_max_pvalue`).

    ``nulls`` maps ``(vision_model, vision_layer, text_model, text_layer, protocol, method, measure)`` to the
    cell's (B,) null. Cells that failed, or have no null, are left out of the grid (``n_cells`` says how many
    took part).
    """

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["status"] == "ok" and r["method"] != "similarity" and np.isfinite(r["value"]):
            groups.setdefault((r["vision_model"], r["text_model"], r["protocol"], r["method"], r["measure"]),
                              []).append(r)
    out = []
    for (vm, tm, protocol, method, measure), cells in groups.items():
        have = [(c, nulls.get((vm, c["vision_layer"], tm, c["text_layer"], protocol, method, measure)))
                for c in cells]
        have = [(c, n) for c, n in have if n is not None and len(n)]
        base = {"vision_model": vm, "text_model": tm, "protocol": protocol, "method": method, "measure": measure}
        if not have:
            continue  # baselines and cells without a permutation null
        sizes = {len(n) for _, n in have}
        if len(sizes) > 1:
            out.append({**base, "status": "error", "reason": f"the cells' nulls differ in size ({sorted(sizes)}): "
                        "no common permutations to take the maximum over"})
            continue
        g = grid_max_pvalue([c["value"] for c, _ in have], np.stack([n for _, n in have]),
                            smaller_is_better=is_smaller_better(measure))
        c = have[g["best"]][0]
        out.append({**base, "vision_layer": c["vision_layer"], "text_layer": c["text_layer"], "value": g["value"],
                    "pvalue_cell": g["pvalue_cell"], "pvalue_max": g["pvalue_max"], "n_cells": g["n_cells"],
                    "n_permutations": g["n_permutations"], "status": "ok", "reason": ""})
    return out


def _base_stages(base, out: Path, force: bool, progress: bool, log) -> None:
    """Run (or reuse) ``sample`` and ``crop`` into ``out`` with the base configuration."""
    for name in ("sample", "crop"):
        t0 = time.time()
        kwargs = {"force": force, **({"progress": progress} if name == "crop" else {})}
        rec = stage_function(name)(base, out, **kwargs)
        log(f"[{name:<6}] {'reused' if rec.get('reused') else f'done in {time.time() - t0:.1f} s'}")


def _text_stores(mcfg: MatrixConfig, out: Path, log) -> tuple[list[tuple], np.ndarray, list[str]]:
    """Every text model's layered store: ``([(spec, columns, (C, L, D) vectors, layers)], category ids, names)``;
    every text model must embed the same categories."""
    texts = []
    for spec in mcfg.text:
        t0 = time.time()
        cols, T, layers = sources.text_layers(spec.cfg, spec.layers, out)
        texts.append((spec, cols, T, layers))
        log(f"[text  ] {spec.label}: layers {layers} ({T.shape[-1]}-d) in {time.time() - t0:.1f} s")
    cat_ids = np.asarray(texts[0][1]["category_id"]).astype(np.int64)
    for spec, cols, _, _ in texts[1:]:
        if not np.array_equal(np.asarray(cols["category_id"]).astype(np.int64), cat_ids):
            raise ObjalignError(f"text model {spec.label!r}: its store's categories differ from "
                                f"{texts[0][0].label!r}'s; both must embed the dataset's categories")
    names = [str(x) for x in texts[0][1]["category"]]
    return texts, cat_ids, names


def _vision_stores(mcfg: MatrixConfig, out: Path, progress: bool, log) -> list[tuple]:
    """Every vision model's layered store: ``[(spec, columns, (N, L, D) vectors, layers)]``."""
    visions = []
    for spec in mcfg.vision:
        t0 = time.time()
        cols, V, layers = sources.vision_layers(spec.cfg, spec.layers, out, progress=progress)
        visions.append((spec, cols, V, layers))
        log(f"[vision] {spec.label}: layers {layers} ({V.shape[-1]}-d, {len(V)} objects) in {time.time() - t0:.1f} s")
    return visions


def _common_objects(visions: list[tuple], cat_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same objects in every cell: those every vision model embedded, in the first store's order, as
    ``(annotation ids, image ids, category rows)``."""
    ids = [np.asarray(cols["annotation_id"]).astype(np.int64) for _, cols, _, _ in visions]
    common = ids[0][np.isin(ids[0], _intersect(ids))]
    first = visions[0][1]
    pos0 = {a: i for i, a in enumerate(ids[0])}
    rows0 = np.asarray([pos0[a] for a in common])
    groups = np.asarray(first["image_id"])[rows0]
    cat_row = {int(c): j for j, c in enumerate(cat_ids)}
    label_index = np.asarray([cat_row[int(c)] for c in np.asarray(first["category_id"])[rows0]])
    return common, groups, label_index


def _targets(texts: list[tuple], dtype) -> tuple[dict[str, np.ndarray], dict[str, tuple]]:
    """Every (text model, text layer) as a target: ``({key: (C, D) array}, {key: (spec, layer)})``."""
    targets, target_of = {}, {}
    for ti, (spec, _, T, layers) in enumerate(texts):
        for j, tl in enumerate(layers):
            key = f"t{ti}_L{tl}"
            targets[key] = np.ascontiguousarray(T[:, j], dtype=dtype)
            target_of[key] = (spec, tl)
    return targets, target_of


def _plan_blocks(out: Path, visions: list[tuple], common: np.ndarray, dtype, shared: dict, force: bool,
                 n_targets: int, log) -> tuple[dict, list]:
    """``(done, todo)``: the (vision model, layer) blocks reused from an earlier run, by slot ``(vi, j)``, and
    those to compute, as ``(slot, key, X, vision columns)``."""
    done, todo = {}, []
    for vi, (vspec, cols, V, vlayers) in enumerate(visions):
        pos = {a: i for i, a in enumerate(np.asarray(cols["annotation_id"]).astype(np.int64))}
        idx = np.asarray([pos[a] for a in common])
        for j, vl in enumerate(vlayers):
            X = np.ascontiguousarray(V[idx, j], dtype=dtype)
            key = store_key({**shared, "X": content_hash(X)})
            got = None if force else _load_block(out, key, vspec.label, vl)
            if got is not None:
                done[vi, j] = (*got, True)
                log(f"[align ] {vspec.label} layer {vl}: {n_targets} cell(s) reused")
            else:
                todo.append(((vi, j), key, X, {"vision_model": vspec.label, "vision_name": vspec.name,
                                               "vision_layer": int(vl)}))
    return done, todo


def _finish_block(out: Path, done: dict, n_targets: int, log, slot, key: str, vision: dict, rows: list[dict],
                  nulls: dict, seconds: float) -> None:
    """Save a computed block, file it in ``done`` and log it."""
    _save_block(out, key, vision["vision_model"], vision["vision_layer"], rows, nulls, seconds)
    done[slot] = (rows, nulls, False)
    n_err = sum(r["status"] == "error" for r in rows)
    log(f"[align ] {vision['vision_model']} layer {vision['vision_layer']}: {n_targets} cell(s) in "
        f"{seconds:.1f} s" + (f"; {n_err} row(s) failed (see matrix.parquet status/reason)" if n_err else ""))


def _gather(done: dict, visions: list[tuple], target_of: dict) -> tuple[list[dict], dict, list[dict]]:
    """Every block's rows and nulls (nulls keyed as :func:`best_cells` takes them), and the blocks' list."""
    all_rows, all_nulls, blocks = [], {}, []
    for slot in sorted(done):  # vision model, then layer: the same table whatever order the blocks finished in
        rows, nulls, reused = done[slot]
        vspec, vl = visions[slot[0]][0], visions[slot[0]][3][slot[1]]
        blocks.append({"vision_model": vspec.label, "vision_layer": vl, "reused": reused})
        all_rows += rows
        for nk, arr in nulls.items():
            tkey, protocol, method, figure = nk.split("__")
            tspec, tl = target_of[tkey]
            all_nulls[(vspec.label, vl, tspec.label, tl, protocol, method, figure)] = arr
    return all_rows, all_nulls, blocks


def _summary(mcfg: MatrixConfig, common: np.ndarray, groups: np.ndarray, cat_ids: np.ndarray, visions: list[tuple],
             texts: list[tuple], n_targets: int, all_rows: list[dict], blocks: list[dict], started: float) -> dict:
    """``matrix.json``'s content (without ``files``)."""
    base = mcfg.base
    return {"n_objects": int(len(common)), "n_images": int(len(np.unique(groups))),
            "n_categories": int(len(cat_ids)), "method": mcfg.method, "measure": mcfg.measure,
            "vision": [{"label": s.label, "name": s.name, "layers": [int(x) for x in ls], "dim": int(V.shape[-1]),
                        "n_embedded": int(len(V))} for s, _, V, ls in visions],
            "text": [{"label": s.label, "name": s.name, "layers": [int(x) for x in ls], "dim": int(T.shape[-1])}
                     for s, _, T, ls in texts],
            "n_cells": int(sum(len(ls) for *_, ls in visions) * n_targets),
            "n_failed_rows": int(sum(r["status"] == "error" for r in all_rows)),
            "blocks_reused": int(sum(b["reused"] for b in blocks)), "blocks": len(blocks),
            "null": base.align.null, "n_permutations": base.align.n_permutations,
            "title": base.report.title, "seconds": round(time.time() - started, 1),
            "matrix": mcfg.source}


def run_matrix(mcfg: MatrixConfig | str | Path, out: str | Path, overrides: list[str] | None = None,
               force: bool = False, progress: bool = True, log=print, jobs: int | None = None) -> dict:
    """Run the matrix (see the module docstring); returns ``matrix.json``'s content. ``jobs`` replaces the
    file's ``matrix.jobs``."""

    if not isinstance(mcfg, MatrixConfig):
        mcfg = load_matrix(mcfg, overrides, jobs)
    base = mcfg.base
    if base.compute.num_workers > 1:
        raise ObjalignError("--num-workers (the static partition) is for `objalign crop` / `objalign embed`; "
                            "run the matrix in one process")
    out = ensure_out(out)
    started = time.time()
    _base_stages(base, out, force, progress, log)
    texts, cat_ids, names = _text_stores(mcfg, out, log)
    visions = _vision_stores(mcfg, out, progress, log)
    common, groups, label_index = _common_objects(visions, cat_ids)
    dtype = compute_dtype(base.align, len(common))
    targets, target_of = _targets(texts, dtype)
    shared = {"align": asdict(base.align), "dtype": np.dtype(dtype).name, "names": names,
              "groups": content_hash(groups), "labels": content_hash(label_index),
              "targets": {k: [target_of[k][0].label, target_of[k][1], content_hash(T)] for k, T in targets.items()}}
    text_of = {k: {"text_model": t.label, "text_name": t.name, "text_layer": int(tl)}
               for k, (t, tl) in target_of.items()}
    args = (groups, label_index, targets, base.align, names, cat_ids)
    done, todo = _plan_blocks(out, visions, common, dtype, shared, force, len(targets), log)
    finished = partial(_finish_block, out, done, len(targets), log)
    if mcfg.jobs > 1 and len(todo) > 1:
        _run_parallel(todo, args, text_of, mcfg.jobs, finished)
    else:
        for slot, key, X, vision in todo:
            finished(slot, key, vision, *evaluate_block(X, *args, vision, text_of))
    all_rows, all_nulls, blocks = _gather(done, visions, target_of)
    atomic_write_bytes(out / "matrix.parquet", _table_bytes(all_rows, COLUMNS))
    best = best_cells(all_rows, all_nulls)
    atomic_write_bytes(out / "best.parquet", _table_bytes(best, BEST_COLUMNS))
    summary = _summary(mcfg, common, groups, cat_ids, visions, texts, len(targets), all_rows, blocks, started)
    atomic_write_json(out / "matrix.json", summary)
    dump_config(base, out / "config.yaml")

    summary["files"] = write_matrix_report(out)
    atomic_write_json(out / "matrix.json", summary)
    return summary


def _run_parallel(todo: list, args: tuple, text_of: dict, jobs: int, finished) -> None:
    """Evaluate the blocks of ``todo`` in ``jobs`` worker processes (at most ``2 jobs`` blocks in flight, so memory
    holds a few layers' features, not all of them); ``finished(slot, key, vision, rows, nulls, seconds)`` is called
    here as each one completes."""

    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    queue = list(todo)
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context(method)) as pool:
        running = {}
        while queue or running:
            while queue and len(running) < 2 * jobs:
                slot, key, X, vision = queue.pop(0)
                running[pool.submit(evaluate_block, X, *args, vision, text_of)] = (slot, key, vision)
            ready, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in ready:
                slot, key, vision = running.pop(fut)
                finished(slot, key, vision, *fut.result())


def _intersect(arrays: list[np.ndarray]) -> np.ndarray:
    common = arrays[0]
    for a in arrays[1:]:
        common = np.intersect1d(common, a)
    return common
