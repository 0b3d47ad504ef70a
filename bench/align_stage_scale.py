"""The ``align`` stage at full-COCO scale: 860,000 synthetic objects, 256-d -> 256-d (not a test).

Builds a run folder whose embedding stores hold synthetic vectors (80 categories, ~7 objects per image, a
linear-plus-nonlinear link from text to vision plus noise), then runs the real ``align`` stage on it: PCA,
RidgeCV and Nystroem KernelRidgeCV with grouped 5-fold CV on the training images, held-out-image scoring,
bootstrap intervals (permutation nulls are skipped above ``align.null_max_train``, as recorded in the report).
Prints wall time and peak memory against the issue's limits (15 minutes, 8 GB).

    python bench/align_stage_scale.py [--n 860000] [--out /tmp/objalign-scale]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

import numpy as np


def build_run(out: Path, n: int, dim: int = 256, n_cat: int = 80, seed: int = 0, shard: int = 100_000) -> None:
    from objalign.embed.store import EmbeddingStore
    from objalign.runs import atomic_write_json
    from objalign.runs import write_stage

    rng = np.random.default_rng(seed)
    T = rng.standard_normal((n_cat, dim)).astype(np.float32)
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    A = rng.standard_normal((dim, dim)).astype(np.float32) / np.sqrt(dim)
    emb = out / "embeddings"
    emb.mkdir(parents=True, exist_ok=True)
    ts = EmbeddingStore.open(emb / "text-synthetic", {"synthetic": "text", "n_cat": n_cat}, n_cat, n_cat)
    ts.write_shard(0, T, {"category_id": np.arange(1, n_cat + 1), "category": np.array([f"c{i}" for i in range(n_cat)],
                                                                                      dtype=object)}, [])
    ts.finalize(1, dim)
    vs = EmbeddingStore.open(emb / "vision-synthetic", {"synthetic": "vision", "n": n}, shard, n)
    image_id = np.sort(rng.integers(0, n // 7, size=n))
    cats = rng.integers(0, n_cat, size=n)
    for i, lo in enumerate(range(0, n, shard)):
        hi = min(n, lo + shard)
        c = cats[lo:hi]
        X = np.tanh(T[c] @ A * 3.0) + 0.8 * rng.standard_normal((hi - lo, dim)).astype(np.float32)
        vs.write_shard(i, X.astype(np.float32), {"annotation_id": np.arange(lo, hi), "image_id": image_id[lo:hi],
                                                 "category_id": c + 1}, [])
    vs.finalize(-(-n // shard), dim)
    atomic_write_json(emb / "vision.json", {"store": "vision-synthetic"})
    atomic_write_json(emb / "text.json", {"store": "text-synthetic"})
    write_stage(out, "embed", f"synthetic-{n}", {"synthetic": True}, time.time())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=860_000)
    ap.add_argument("--out", default="/tmp/objalign-align-scale")
    args = ap.parse_args()
    from objalign.pipeline.align import run_align
    from objalign.config import load_config

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    build_run(out, args.n)
    print(f"synthetic stores: {args.n} x 256 vision, 80 x 256 text in {time.time() - t0:.1f} s")
    cfg = load_config(None, ["align.methods=[ridge,kernel_ridge]", "align.protocols=[heldout_images]",
                             "align.baselines=[mean]", "align.common_dim=256", "align.gammas=[0.5,1,2]"])
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t0 = time.time()
    rec = run_align(cfg, out, force=True)
    secs = time.time() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    import json

    rows = json.loads((out / "align" / "results.json").read_text())
    for r in rows:
        print(f"{r['method']:<14} r2={r['r2']:.4f} top1={r['top1']:.4f} hp={r.get('hyperparameters')} "
              f"fit_s={r.get('fit_seconds')}")
    print(f"align stage: {rec['summary']['n_instances']} objects in {secs:.1f} s; peak RSS {peak:.2f} GiB "
          f"(before the stage: {base_rss:.2f} GiB); limits 900 s and 8 GiB")
    print(f"align_stage_seconds={secs:.1f} peak_rss_gib={peak:.2f} within_limits={secs < 900 and peak < 8}")


if __name__ == "__main__":
    main()
