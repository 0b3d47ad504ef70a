"""GPU benchmark: SAM ViT-H image-encoder throughput (random weights, bfloat16) and its fraction of peak.

The sam-vit-huge architecture (vision hidden 1280, 32 layers, 16 heads, global attention at
[7, 15, 23, 31], window 14, image 1024, patch 16) is built with random weights directly on the GPU
(no download: the FLOPs, and so the timings, are those of the released model). Batches of images go
through the image encoder; the script prints images/s and the achieved bf16 TFLOPS as a fraction of the
GPU's dense bf16 matmul peak, with the encoder's FLOPs counted both analytically and with torch's flop
counter (on the meta device, so the count costs nothing). It then times the whole objalign path
(``SamSegmenter.segment_many``: CPU preprocessing, batched encoder, one decoder batch per image).

``--tiny`` runs a tiny configuration on CPU in seconds (a smoke test of this script; no peak there).
The last line is ``images_per_s=<x> tflops=<y> fraction_of_peak=<z> peak_tflops=<p> gpu=<name>``.

Run: ``bench/gpu_sam.sh`` (or ``python bench/gpu_sam.py [--batches 1,8,16,32] [--tiny]``); < 5 minutes.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

# Dense (no sparsity) bf16 tensor-core peaks, TFLOPS, from the vendors' data sheets; first match wins.
PEAKS_BF16_DENSE = [
    ("GH200", 989.0, "GH200 (H100/H200 SXM class)"),
    ("H200", 989.0, "H200"),
    ("H100 NVL", 835.0, "H100 NVL"),
    ("H100 PCIE", 756.0, "H100 PCIe"),
    ("H100", 989.0, "H100 SXM"),
    ("H800", 989.0, "H800 SXM"),
    ("B200", 2250.0, "B200"),
    ("A100", 312.0, "A100"),
    ("A800", 312.0, "A800"),
    ("L40S", 362.0, "L40S"),
    ("L40", 181.0, "L40"),
    ("L4", 121.0, "L4"),
    ("A10G", 70.0, "A10G"),
    ("A10", 125.0, "A10"),
]

SAM_VIT_H = dict(
    hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, global_attn_indexes=[7, 15, 23, 31],
    image_size=1024, patch_size=16, window_size=14, mlp_dim=5120, output_channels=256,
)
TINY = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=2, global_attn_indexes=[1], image_size=128,
    patch_size=16, window_size=3, mlp_dim=256, output_channels=256,
)


def peak_for(name: str):
    """(peak TFLOPS, label) for a CUDA device name, or (None, reason)."""
    upper = name.upper()
    for key, tflops, label in PEAKS_BF16_DENSE:
        if key in upper:
            return tflops, label
    return None, f"unknown GPU '{name}' (pass --peak-tflops)"


def encoder_flops(vc: dict) -> float:
    """FLOPs (2 per multiply-add) of one image through SAM's ViT image encoder, counted by hand.

    Patch embedding, then per layer: qkv + output projections on the (window-padded) tokens, attention
    scores and weighted sum within each window (or globally), the decomposed relative-position terms,
    the MLP on the unpadded tokens; then the neck (1x1 and 3x3 convolutions).
    """
    d, p, s = vc["hidden_size"], vc["patch_size"], vc["image_size"]
    mlp = vc.get("mlp_dim") or 4 * d
    c = vc.get("output_channels", 256)
    side = s // p
    n_tok = side * side
    flops = 2.0 * n_tok * (3 * p * p) * d  # patch embedding
    for layer in range(vc["num_hidden_layers"]):
        if layer in vc["global_attn_indexes"]:
            w, padded = side, side
        else:
            w = vc["window_size"]
            padded = math.ceil(side / w) * w
        tokens = padded * padded  # attention runs on the padded grid
        per_window = w * w
        flops += 2.0 * tokens * d * 3 * d + 2.0 * tokens * d * d  # qkv, proj
        flops += 4.0 * tokens * per_window * d  # q k^T and attn v (all heads)
        flops += 2.0 * tokens * (2 * w) * d  # decomposed rel-pos einsums (h and w)
        flops += 4.0 * n_tok * d * mlp  # MLP on the unpadded tokens
    flops += 2.0 * n_tok * d * c + 2.0 * n_tok * 9 * c * c  # neck
    return flops


def counted_flops(vc: dict) -> float | None:
    """FLOPs of one image through the encoder per torch.utils.flop_counter, on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import SamVisionConfig
    from transformers.models.sam.modeling_sam import SamVisionEncoder

    try:
        with torch.device("meta"):
            enc = SamVisionEncoder(SamVisionConfig(**vc))
            x = torch.zeros(1, 3, vc["image_size"], vc["image_size"])
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            enc(x)
        return float(counter.get_total_flops())
    except Exception as exc:  # the flop counter is a cross-check only
        print(f"torch flop counter unavailable ({type(exc).__name__}: {exc})")
        return None


def build_model(vc: dict, device: str, dtype):
    import torch
    from transformers import SamConfig, SamModel

    torch.manual_seed(0)
    config = SamConfig(vision_config=vc, prompt_encoder_config=dict(image_size=vc["image_size"],
                                                                    patch_size=vc["patch_size"]))
    try:  # initialise directly on the GPU (seconds for ViT-H) ...
        with torch.device(device):
            model = SamModel(config)
    except Exception as exc:  # ... or on the CPU and move it
        print(f"building on {device} failed ({type(exc).__name__}: {exc}); building on cpu and moving")
        model = SamModel(config).to(device)
    # SAM's vision init uses std 1e-10 (weights are meant to be loaded): give every parameter a realistic
    # scale so no run meets denormal numbers, whose slow paths would distort the timing.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.to(dtype).eval()


def time_encoder(model, batch: int, size: int, device: str, dtype, min_iters: int, max_seconds: float):
    """Seconds per batch of the image encoder on random pixels (median of timed iterations)."""
    import torch

    x = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.inference_mode():
        for _ in range(2):  # warm-up: kernels, allocator, autotuning
            model.get_image_embeddings(x)
        sync()
        times = []
        start = time.perf_counter()
        while len(times) < min_iters or (time.perf_counter() - start < 1.0 and len(times) < 100):
            t0 = time.perf_counter()
            model.get_image_embeddings(x)
            sync()
            times.append(time.perf_counter() - t0)
            if time.perf_counter() - start > max_seconds:
                break
    return float(np.median(times)), len(times)


def end_to_end(model, vc, device, n_images: int, boxes_per_image: int, images_per_batch: int):
    """images/s and objects/s of SamSegmenter.segment_many on synthetic 480x640 images."""
    import torch
    from transformers import SamImageProcessorPil, SamProcessor

    from objalign.crops.sam import SamSegmenter

    s = vc["image_size"]
    processor = SamProcessor(image_processor=SamImageProcessorPil(size={"longest_edge": s},
                                                                   pad_size={"height": s, "width": s}))
    seg = SamSegmenter.from_model(model, processor)
    rng = np.random.default_rng(0)
    h, w = (480, 640) if s >= 512 else (s * 3 // 4, s)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n_images)]
    boxes = []
    for _ in range(n_images):
        bw, bh = rng.uniform(0.1, 0.5, boxes_per_image) * w, rng.uniform(0.1, 0.5, boxes_per_image) * h
        boxes.append(np.column_stack([rng.uniform(0, 1, boxes_per_image) * (w - bw),
                                      rng.uniform(0, 1, boxes_per_image) * (h - bh), bw, bh]))
    seg.segment_many(images[:images_per_batch], boxes[:images_per_batch], images_per_batch=images_per_batch)
    seg.encoder_calls = 0
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    results = seg.segment_many(images, boxes, images_per_batch=images_per_batch)
    sync()
    dt = time.perf_counter() - t0
    n_masks = sum(r.mask is not None for rs in results for r in rs)
    return n_images / dt, n_images * boxes_per_image / dt, seg.encoder_calls, n_masks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config on CPU: smoke-test this script")
    parser.add_argument("--batches", default=None, help="comma-separated encoder batch sizes (default 1,4,8,16,32)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default=None, help="bfloat16 (default on GPU) or float32 (default on CPU)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the peak looked up by GPU name")
    parser.add_argument("--seconds-per-batch", type=float, default=20.0)
    parser.add_argument("--e2e-images", type=int, default=None)
    args = parser.parse_args(argv)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[
        args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")]
    vc = TINY if args.tiny else SAM_VIT_H
    batches = [int(b) for b in (args.batches or ("1,2" if args.tiny else "1,4,8,16,32")).split(",")]

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(device)
        peak, label = (args.peak_tflops, "given") if args.peak_tflops else peak_for(name)
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        name, peak, label = "cpu", args.peak_tflops, ("given" if args.peak_tflops else "no peak on CPU")
    print(f"torch {torch.__version__}, device {device} ({name}), dtype {str(dtype).replace('torch.', '')}, "
          f"config {'tiny' if args.tiny else 'sam-vit-huge'} (random weights)")
    print(f"peak bf16 dense: {f'{peak:.0f} TFLOPS ({label})' if peak else label}")

    flops = encoder_flops(vc)
    print(f"encoder FLOPs per image (analytic, 2 per multiply-add): {flops / 1e12:.4f} TFLOP")

    t0 = time.perf_counter()
    model = build_model(vc, device, dtype)
    n_params = sum(p.numel() for p in model.vision_encoder.parameters())
    print(f"built in {time.perf_counter() - t0:.1f} s: image encoder {n_params / 1e6:.1f}M params, "
          f"attention {model.config._attn_implementation}")

    best = None
    for batch in batches:
        try:
            sec, iters = time_encoder(model, batch, vc["image_size"], device, dtype, min_iters=3 if args.tiny else 5,
                                      max_seconds=args.seconds_per_batch)
        except torch.cuda.OutOfMemoryError:
            print(f"batch {batch:3d}: out of memory, stopping the sweep")
            torch.cuda.empty_cache()
            break
        ips = batch / sec
        tflops = flops * ips / 1e12
        frac = tflops / peak if peak else float("nan")
        mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.startswith("cuda") else float("nan")
        print(f"batch {batch:3d}: {1000 * sec:8.1f} ms/batch ({iters} iters), {ips:8.2f} images/s, "
              f"{tflops:7.1f} TFLOPS, {frac:6.1%} of peak, peak mem {mem:.1f} GiB")
        if best is None or ips > best[1]:
            best = (batch, ips, tflops, frac)

    e2e_images = args.e2e_images or (4 if args.tiny else 64)
    ipb = best[0] if best else 1
    ips_e2e, ops_e2e, calls, n_masks = end_to_end(model, vc, device, e2e_images, 7, ipb)
    print(f"end to end (SamSegmenter.segment_many, {e2e_images} images x 7 boxes, {ipb} images per encoder batch, "
          f"CPU preprocessing included): {ips_e2e:.2f} images/s, {ops_e2e:.1f} objects/s, encoder_calls={calls}, "
          f"masks={n_masks}")
    # Cross-check the analytic count with torch's flop counter (meta device: shapes only, no compute).
    counted = counted_flops(vc)
    if counted:
        print(f"torch flop counter: {counted / 1e12:.4f} TFLOP per image; analytic count differs by "
              f"{abs(counted - flops) / counted:.3%}")
    if best is None:
        print("no batch size ran")
        return 1
    batch, ips, tflops, frac = best
    print(f"best: batch {batch}: {ips:.2f} images/s = {tflops:.1f} TFLOPS = "
          f"{'n/a' if math.isnan(frac) else f'{frac:.1%}'} of the bf16 dense peak "
          f"({f'{peak:.0f} TFLOPS, {label}' if peak else label})")
    print(f"images_per_s={ips:.2f} tflops={tflops:.1f} fraction_of_peak={frac:.3f} "
          f"peak_tflops={peak if peak else 'nan'} gpu={name.replace(' ', '_')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
