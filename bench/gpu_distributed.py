"""GPU check of the Ray executor: the thesis models (SAM ViT-H crops, DINOv2 ViT-L/14 embeddings), random weights.

On a machine with NVIDIA GPUs and no network: builds both architectures with random weights in each Ray
worker (the FLOPs, and so the timings, are those of the released models), generates the demo dataset, and
runs objalign's real ``crop`` (mode ``sam``) and ``embed`` stages through ``compute.executor: ray`` with

* 1 worker on GPU 0 (the reference),
* 2 workers sharing GPU 0 (``gpus_per_worker: 0.5``),
* on a node with k > 1 GPUs, also 2..k workers with one GPU each (per-GPU scaling).

Each configuration first warms its workers on a few objects (model built, kernels chosen; not timed), then
crops and embeds ``--n`` objects into a fresh run folder; objects/s come from the workers' compute time. Every
configuration's crop store and vision store must be byte-identical to the 1-worker reference.

The last line is ``sam_objects_per_s=<x> embed_objects_per_s=<y> shared_vs_one=<s> per_gpu_scaling=<p>
identical=<true|false> gpu=<name>``: ``x``, ``y`` for 1 worker; ``s`` the 2-shared-worker rate over the 1-worker
rate (embed stage); ``p`` the k-GPU embed rate over k times the 1-GPU rate (``n/a`` on one GPU).
``--tiny`` runs tiny models on CPU with 2 logical Ray GPUs in a minute or two (a smoke test of this script).
Run with ``bench/gpu_distributed.sh``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

TINY = os.environ.get("OBJALIGN_BENCH_TINY") == "1"  # read in every Ray worker too (they inherit the env)


def dinov2_l14_random(pooling="cls", model_path=None, device="cpu", dtype="float32", image_size=None):
    """DINOv2 ViT-L/14 (1024-d) with random weights, built on ``device`` (tiny with OBJALIGN_BENCH_TINY=1)."""
    import torch
    import transformers

    from objalign.encoders.hf_dinov2 import HFDinov2

    from gpu_extract import DINOV2_L14, TINY_VISION

    torch.manual_seed(0)
    with torch.device(device if device.startswith("cuda") else "cpu"):
        model = transformers.Dinov2Model(transformers.Dinov2Config(**(TINY_VISION if TINY else DINOV2_L14)))
    return HFDinov2(name="dinov2-vit-l14-random", pooling=pooling, device=device, dtype=dtype, model=model,
                    image_size=image_size or (56 if TINY else None))


def sam_vit_h_random_mode(device="cpu", dtype="float32", **_):
    """The ``sam`` crop mode with SAM ViT-H at random weights (tiny with OBJALIGN_BENCH_TINY=1)."""
    from transformers import SamImageProcessorPil, SamProcessor

    from objalign.crops.modes import SegmenterMode
    from objalign.crops.sam import SamSegmenter, _resolve_dtype
    from objalign.encoders.base import resolve_device

    import torch
    from gpu_sam import SAM_VIT_H
    from gpu_sam import TINY as SAM_TINY
    from gpu_sam import build_model

    vc = SAM_TINY if TINY else SAM_VIT_H
    device = resolve_device(device)
    model = build_model(vc, device, _resolve_dtype(torch, dtype))
    s = vc["image_size"]
    processor = SamProcessor(image_processor=SamImageProcessorPil(size={"longest_edge": s},
                                                                   pad_size={"height": s, "width": s}))
    return SegmenterMode(SamSegmenter.from_model(model, processor))


def store_files(p: Path) -> dict:
    return {str(f.relative_to(p)): f.read_bytes() for f in sorted(p.rglob("*"))
            if f.is_file() and f.parent.name in ("emb", "metadata", "skipped", "shards")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1500, help="demo objects to crop and embed")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--shard-size", type=int, default=128, help="objects per shard (crop and embed)")
    ap.add_argument("--render-workers", type=int, default=min(8, os.cpu_count() or 2))
    ap.add_argument("--max-gpus", type=int, default=8, help="per-GPU scaling up to this many GPUs")
    ap.add_argument("--tiny", action="store_true", help="tiny models on CPU, 2 logical GPUs: a smoke test")
    args = ap.parse_args(argv)
    if args.tiny and not TINY:  # the workers read the switch from the environment: restart with it set
        os.environ["OBJALIGN_BENCH_TINY"] = "1"
        os.execv(sys.executable, [sys.executable, __file__] + (argv if argv is not None else sys.argv[1:]))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "src"), str(HERE), os.environ.get("PYTHONPATH", "")])
    os.environ.pop("OBJALIGN_CACHE", None)  # every configuration must compute its own stores

    import ray
    import torch

    from objalign.config import load_config
    from objalign.crops import CROP_MODES
    from objalign.crops.stage import run_crop
    from objalign.data.demo import make_demo_dataset
    from objalign.data.stage import run_sample
    from objalign.embed.stage import run_embed
    from objalign.encoders import VISION_ENCODERS

    if TINY:
        device, dtype, n_gpus = "cpu", "float32", 2
        args.n, args.batch_size, args.shard_size = min(args.n, 48), min(args.batch_size, 8), min(args.shard_size, 8)
        ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    else:
        if not torch.cuda.is_available():
            print("no CUDA GPU visible to torch; run with --tiny for a CPU smoke test", file=sys.stderr)
            return 2
        device, dtype, n_gpus = "cuda", "bfloat16", min(torch.cuda.device_count(), args.max_gpus)
        ray.init(num_gpus=n_gpus, include_dashboard=False, logging_level="warning", log_to_driver=False)
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "cpu (logical Ray GPUs)"
    print(f"{gpu}: {n_gpus} GPU(s) for Ray; torch {torch.__version__}; {os.cpu_count()} CPU cores")
    VISION_ENCODERS.register("dinov2-l14-random", "gpu_distributed:dinov2_l14_random")
    CROP_MODES.register("sam-vit-h-random", "gpu_distributed:sam_vit_h_random_mode")

    tmp = Path(tempfile.mkdtemp(prefix="objalign-gpu-dist-"))
    try:
        data = tmp / "demo"
        make_demo_dataset(data, seed=0, n_images=max(40, math.ceil(args.n / 3.6)))
        base = {"data.kind": "coco", "data.root": str(data), "sample.strategy": "images_first",
                "crop.mode": "sam-vit-h-random", "crop.device": device, "crop.dtype": dtype,
                "crop.shard_size": args.shard_size, "embed.vision.name": "dinov2-l14-random",
                "embed.vision.device": device, "embed.vision.dtype": dtype, "embed.shard_size": args.shard_size,
                "embed.vision.batch_size": args.batch_size, "embed.vision.num_workers": args.render_workers,
                "compute.executor": "ray", "compute.cpus_per_worker": 1}
        configs = [("1 worker, GPU 0", 1, 1.0), ("2 workers sharing GPU 0", 2, 0.5)]
        configs += [(f"{k} workers, {k} GPUs", k, 1.0) for k in range(2, n_gpus + 1)]
        rows, ref, identical = [], None, True
        for label, workers, gpw in configs:
            cfg_over = {**base, "compute.workers": workers, "compute.gpus_per_worker": gpw}
            warm = tmp / f"warm-{workers}-{gpw}"
            wcfg = load_config(None, {**cfg_over, "sample.n": 2 * workers})
            run_sample(wcfg, warm)
            run_crop(wcfg, warm, progress=False)  # workers start, SAM built, kernels chosen
            out = tmp / f"run-{workers}-{gpw}"
            cfg = load_config(None, {**cfg_over, "sample.n": args.n})
            run_sample(cfg, out)
            crop = run_crop(cfg, out, progress=False)["summary"]
            run_embed(wcfg, warm, progress=False)  # the same workers swap SAM for DINOv2 (not timed)
            emb = run_embed(cfg, out, progress=False)["summary"]
            n = emb["n_vision"] + emb["n_skipped"]
            sam_rate = n / crop["seconds_deciding"]
            emb_rate = n / emb["workers_compute_s"]
            files = {k: v for k, v in store_files(next((out / "crop").glob("crops-*"))).items()}
            vision = out / "embeddings" / json.loads((out / "embeddings" / "vision.json").read_text())["store"]
            files.update({f"vision/{k}": v for k, v in store_files(vision).items()})
            same = True if ref is None else files == ref
            ref = files if ref is None else ref
            identical &= same
            rows.append((label, workers, gpw, sam_rate, emb_rate))
            print(f"{label:<26} crop (SAM ViT-H) {sam_rate:8.1f} objects/s ({crop['encoder_calls']} image "
                  f"encodings), embed (DINOv2 L/14) {emb_rate:8.1f} objects/s; {n} objects, "
                  f"{emb['n_shards']} shards; identical to 1 worker: {same}")
        one = rows[0]
        shared = rows[1][4] / one[4]
        print(f"2 workers sharing one GPU vs 1: crop {rows[1][3] / one[3]:.2f}x, embed {shared:.2f}x")
        scaling = "n/a"
        for label, k, gpw, sam_rate, emb_rate in rows[2:]:
            print(f"{k} GPUs vs 1: crop {sam_rate / one[3]:.2f}x, embed {emb_rate / one[4]:.2f}x "
                  f"({emb_rate / (k * one[4]):.0%} of linear)")
            scaling = f"{emb_rate / (k * one[4]):.3f}"
        print(f"sam_objects_per_s={one[3]:.1f} embed_objects_per_s={one[4]:.1f} shared_vs_one={shared:.3f} "
              f"per_gpu_scaling={scaling} identical={'true' if identical else 'false'} gpu={gpu.replace(' ', '_')}")
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
