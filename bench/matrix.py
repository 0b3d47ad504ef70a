"""The demo matrix's alignment work: ``evaluate_targets`` per vision layer vs one ``objalign run`` align per cell.

Every cell (vision layer x text layer) is aligned as each command runs it, side by side in one run:

- **separate**: what a loop over ``objalign run`` align stages does, one ``evaluate`` + ``write_results`` per
  cell (PCA, CV searches, smoothers and nulls recomputed for every cell), with the BLAS threads
  ``objalign run`` leaves as they are;
- **matrix**: what ``objalign matrix`` does per vision layer (:func:`objalign.matrix.study.evaluate_block`):
  one ``evaluate_targets`` call with every text layer as a target set (the work that does not depend on the
  text side shared, :mod:`objalign.evaluation.folds`) on one BLAS thread, then ``write_results`` per cell;
- **separate, one BLAS thread** (``--one-thread-baseline``): the separate loop on one BLAS thread too, the
  stronger baseline on this small problem, printed as ``matrix_vs_separate_one_thread``.

Then every number of every cell's results (rows, intervals, p-values, null arrays, per-instance arrays,
similarity, category level; timings aside) is compared with each separate run. Last line:
``matrix_vs_separate=<time ratio> max_diff=<largest absolute difference>`` (issue 13: ratio >= 5, max_diff <=
1e-9).

Input: an ``.npz`` with ``X`` (n, Lv, dv), ``T`` (c, Lt, dt), ``groups`` (n,) and ``labels`` (n,) (rows of T;
``bench/matrix_npz.py`` writes one from the demo), or a layered vision store and text store
(``--stores VISION TEXT``: ``EmbeddingStore.read()`` arrays (n, L, d) / (c, L, d)).

    PYTHONPATH=src python bench/matrix.py --npz /tmp/objalign-matrix-demo/layers.npz [--vision-layers 0,5,11]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load_arrays(args):
    """``(X (n, Lv, dv), T (c, Lt, dt), groups, labels)``."""
    if args.stores:
        from objalign.embed.store import EmbeddingStore

        vm, X = EmbeddingStore(Path(args.stores[0])).read()
        tm, T = EmbeddingStore(Path(args.stores[1])).read()
        X, T = (X[:, None] if X.ndim == 2 else X), (T[:, None] if T.ndim == 2 else T)
        row = {int(c): j for j, c in enumerate(tm["category_id"])}
        return X, T, np.asarray(vm["image_id"]), np.asarray([row[int(c)] for c in vm["category_id"]])
    z = np.load(args.npz)
    return z["X"], z["T"], z["groups"], z["labels"]


def numbers(obj, path=""):
    """Every numeric leaf of a result as ``path -> float array`` (timings left out)."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k != "fit_seconds":
                out.update(numbers(v, f"{path}.{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(numbers(v, f"{path}[{i}]"))
    else:
        a = np.asarray(obj)
        if a.dtype.kind in "biuf":
            out[path] = a.astype(np.float64)
        else:
            out[path] = a
    return out


def max_diff(a: dict, b: dict) -> float:
    na, nb = numbers(a), numbers(b)
    if set(na) != set(nb):
        return float("inf")
    worst = 0.0
    for k, x in na.items():
        y = nb[k]
        if x.shape != y.shape:
            return float("inf")
        if x.dtype.kind == "f":
            nan = np.isnan(x) | np.isnan(y)
            if (np.isnan(x) != np.isnan(y)).any():
                return float("inf")
            worst = max(worst, float(np.max(np.abs(x - y)[~nan], initial=0.0)))
        elif not np.array_equal(x, y):
            return float("inf")
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npz", default="/tmp/objalign-matrix-demo/layers.npz")
    ap.add_argument("--stores", nargs=2, metavar=("VISION", "TEXT"), default=None)
    ap.add_argument("--matrix", default=str(ROOT / "configs" / "demo_layers.yaml"),
                    help="matrix config whose align settings both sides use (default: the demo matrix's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="align overrides on top of the matrix config's")
    ap.add_argument("--vision-layers", default=None, help="comma-separated vision layer indices (default: all)")
    ap.add_argument("--one-thread-baseline", action="store_true",
                    help="also time the separate runs on one BLAS thread (matrix_vs_separate_one_thread)")
    args = ap.parse_args()

    from objalign.evaluation.engine import compute_dtype, evaluate, evaluate_targets
    from objalign.pipeline.align import write_results
    from objalign.maps.threads import single_threaded_blas
    from objalign.matrix.config import load_matrix

    cfg = load_matrix(args.matrix, list(args.set)).base.align
    X, T, groups, labels = load_arrays(args)
    vis = list(range(X.shape[1])) if args.vision_layers is None else [int(v) for v in args.vision_layers.split(",")]
    dtype = compute_dtype(cfg, len(X))
    n_cells = len(vis) * T.shape[1]
    print(f"matrix: {len(vis)} vision layers x {T.shape[1]} text layers = {n_cells} cells; n = {len(X)} objects, "
          f"c = {len(T)} categories; align: n_permutations={cfg.n_permutations} null={cfg.null} "
          f"n_bootstrap={cfg.n_bootstrap} similarity_permutations={cfg.similarity_permutations} "
          f"match_bootstrap={cfg.match_bootstrap} methods={list(cfg.methods)} protocols={list(cfg.protocols)}",
          flush=True)
    # warm-up, untimed: imports and first-call costs fall on neither side
    sub = np.flatnonzero(np.isin(groups, np.unique(groups)[:80]))
    T0 = np.ascontiguousarray(T[:, -1]).astype(dtype)
    evaluate(X[sub, vis[0]].astype(dtype), T0[labels[sub]], groups[sub], labels[sub], T0, cfg)
    tmp = Path(tempfile.mkdtemp(prefix="objalign-bench-matrix-"))
    t_sep = t_mat = t_one = 0.0
    worst = 0.0

    def separate_runs(v, Xv, targets, name):
        t0 = time.perf_counter()
        out = {}
        for key, Tt in targets.items():  # one objalign run align stage per cell
            out[key] = evaluate(Xv, Tt[labels], groups, labels, Tt, cfg)
            write_results(tmp / name / f"vision{v}-{key}", out[key])
        return out, time.perf_counter() - t0

    try:
        for v in vis:
            Xv = np.ascontiguousarray(X[:, v]).astype(dtype)
            targets = {f"text{t}": np.ascontiguousarray(T[:, t]).astype(dtype) for t in range(T.shape[1])}
            separate, s_sep = separate_runs(v, Xv, targets, "separate")
            t1 = time.perf_counter()
            with single_threaded_blas():  # as objalign matrix evaluates a block (matrix/study.py evaluate_block)
                shared = evaluate_targets(Xv, groups, labels, targets, cfg)
            for key, res in shared.items():
                write_results(tmp / "matrix" / f"vision{v}-{key}", res)
            s_mat = time.perf_counter() - t1
            diff = max(max_diff(shared[k], separate[k]) for k in targets)
            line = (f"vision layer {v}: separate {s_sep:.1f} s, matrix {s_mat:.1f} s (x{s_sep / s_mat:.2f})")
            if args.one_thread_baseline:
                with single_threaded_blas():
                    one, s_one = separate_runs(v, Xv, targets, "separate-one-thread")
                diff = max(diff, max(max_diff(shared[k], one[k]) for k in targets))
                t_one += s_one
                line += f", separate on one BLAS thread {s_one:.1f} s (x{s_one / s_mat:.2f})"
            worst = max(worst, diff)
            t_sep += s_sep
            t_mat += s_mat
            print(f"{line}, max_diff {diff:.2e}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"separate: {t_sep:.1f} s ({t_sep / n_cells:.2f} s/cell); matrix: {t_mat:.1f} s "
          f"({t_mat / n_cells:.2f} s/cell) for {n_cells} cells")
    if args.one_thread_baseline:
        print(f"separate on one BLAS thread: {t_one:.1f} s ({t_one / n_cells:.2f} s/cell); "
              f"matrix_vs_separate_one_thread={t_one / t_mat:.2f}")
    print(f"matrix_vs_separate={t_sep / t_mat:.2f} max_diff={worst:.3g}")


if __name__ == "__main__":
    main()
