"""GPU check of the extraction engine: DINOv2 ViT-L/14 + CLIP ViT-B/32 text tower, random weights, bf16.

On a machine with an NVIDIA GPU and no network: builds both architectures with random weights (the FLOPs,
and so the timings, are those of the released models), generates the demo dataset, and

1. embeds the category names with CLIP's 80-template ensemble (text tower, projected features);
2. embeds ``--n`` (3,000) demo crops through the full objalign engine (decode and crop in background
   threads, batches in bfloat16 autocast, shards written to a store) -> objects/s;
3. times the model alone on ready tensors at the same batch size (the limit) -> pipeline_vs_model;
4. counts the encoder's FLOPs (by hand, cross-checked with torch's flop counter) -> achieved TFLOPS and the
   fraction of the GPU's dense bf16 matmul peak;
5. times a naive per-object loop (reopen the image, crop, batch size 1, float32) -> speedup (floor 10).

The last line is
``objects_per_s=<x> fraction_of_peak=<y> speedup_vs_naive=<z> pipeline_vs_model=<w> gpu=<name>``.
``--tiny`` runs tiny configurations on CPU in seconds (a smoke test of this script; no peak there).
Run with ``bench/gpu_extract.sh`` (< 5 minutes on an H100).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

DINOV2_L14 = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4,
                  patch_size=14, image_size=518, layerscale_value=1.0)  # MLP width 4096
CLIP_B32_TEXT = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                     num_attention_heads=8, max_position_embeddings=77, projection_dim=512)
TINY_VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, patch_size=14,
                   image_size=56)
TINY_TEXT = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=77, projection_dim=16)


def vit_flops(cfg: dict, side: int) -> float:
    """FLOPs (2 per multiply-add) of one ``side x side`` image through a ViT encoder counted by hand: patch
    embedding, then per layer the q/k/v/o projections (4 N D^2 MACs), attention scores and weighted sum
    (2 N^2 D MACs) and the MLP (2 N D F MACs), N = 1 + patches tokens."""
    d, p, layers = cfg["hidden_size"], cfg["patch_size"], cfg["num_hidden_layers"]
    f = int(cfg.get("mlp_ratio", 4) * d)  # Dinov2Config sizes its MLP by mlp_ratio
    patches = (side // p) ** 2
    n = patches + 1
    macs = patches * 3 * p * p * d + layers * (4 * n * d * d + 2 * n * n * d + 2 * n * d * f)
    return 2.0 * macs


def char_tokenizer():
    """A CLIP tokenizer with a character vocabulary (no download; ids fall inside CLIP's 49,408)."""
    import transformers

    vocab = {}
    for c in [chr(i) for i in range(32, 127)]:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    for t in ("<|startoftext|>", "<|endoftext|>"):
        vocab[t] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=[])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="demo crops to embed")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 2), help="render threads")
    ap.add_argument("--naive-n", type=int, default=64, help="objects for the naive batch-1 float32 loop")
    ap.add_argument("--data", help="demo dataset folder (default: a temporary one)")
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak of this GPU, if not in the table")
    ap.add_argument("--tiny", action="store_true", help="tiny models on CPU: a smoke test of this script")
    args = ap.parse_args(argv)

    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    from objalign.crops.render import render_crop
    from objalign.crops.stage import decide_crops
    from objalign.data.coco import load_coco
    from objalign.data.demo import make_demo_dataset
    from objalign.data.sample import sample_instances
    from objalign.data.images import FolderImages, load_rgb
    from objalign.embed.engine import extract_vision
    from objalign.embed.store import EmbeddingStore, read_embeddings
    from objalign.encoders.hf_clip_text import HFClipText
    from objalign.encoders.hf_dinov2 import HFDinov2
    from objalign.encoders.prompts import CLIP_IMAGENET_TEMPLATES, embed_prompts

    hf_logging.disable_progress_bar()
    if args.tiny:
        device, dtype, vcfg, tcfg = "cpu", "float32", TINY_VISION, TINY_TEXT
        args.n, args.batch_size, args.naive_n = min(args.n, 48), min(args.batch_size, 8), min(args.naive_n, 4)
    else:
        if not torch.cuda.is_available():
            print("no CUDA GPU visible to torch; run with --tiny for a CPU smoke test", file=sys.stderr)
            return 2
        device, dtype, vcfg, tcfg = "cuda", "bfloat16", DINOV2_L14, CLIP_B32_TEXT
        torch.backends.cuda.matmul.allow_tf32 = True  # helps only the float32 naive loop: a conservative baseline
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    peak, label = (args.peak_tflops, "given") if args.peak_tflops else (None, "cpu")
    if device == "cuda" and not peak:
        from gpu_sam import peak_for

        peak, label = peak_for(gpu)
    print(f"device {gpu} ({label}, dense bf16 peak {peak} TFLOPS); torch {torch.__version__}, "
          f"transformers {transformers.__version__}; {os.cpu_count()} CPU cores, {args.workers} render threads")

    tmp = Path(tempfile.mkdtemp(prefix="objalign-gpu-"))
    try:
        t0 = time.perf_counter()
        root = Path(args.data) if args.data else tmp / "demo"
        make_demo_dataset(root, seed=0, n_images=max(40, math.ceil(args.n / 3.6)))
        ds = load_coco(root / "annotations.json", root / "images")
        table, _ = decide_crops(ds, sample_instances(ds, n=args.n, seed=0), "box", 0.1, True)
        n = len(table["annotation_id"])
        print(f"demo data: {n} crops from {len(set(table['image_id'].tolist()))} images "
              f"({time.perf_counter() - t0:.1f} s)")

        # -- models with random weights, built on the device ------------------------------------------------
        t0 = time.perf_counter()
        torch.manual_seed(0)
        with torch.device(device):
            vmodel = transformers.Dinov2Model(transformers.Dinov2Config(**vcfg))
            tmodel = transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(
                **tcfg, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
        tok = char_tokenizer()
        vparams = sum(p.numel() for p in vmodel.parameters())
        tparams = sum(p.numel() for p in tmodel.parameters())
        enc = HFDinov2(name="dinov2-vit-l14-random" if not args.tiny else "tiny", model=vmodel, device=device,
                       dtype=dtype)
        enc32 = HFDinov2(name="dinov2-vit-l14-random-fp32", model=vmodel, device=device, dtype="float32")
        vname, tname = ("tiny DINOv2", "tiny CLIP text") if args.tiny else ("DINOv2 ViT-L/14", "CLIP ViT-B/32 text")
        print(f"vision: {vname} architecture, {vparams / 1e6:.2f} M parameters, {enc.dim}-d, "
              f"{enc.preprocess.size}px; text: {tname} tower, {tparams / 1e6:.2f} M parameters, random weights "
              f"({time.perf_counter() - t0:.1f} s to build)")

        # -- 1. text: 80-template ensemble -----------------------------------------------------------------
        text = HFClipText(name="clip-vit-b32-text-random", model=tmodel, tokenizer=tok, device=device)
        names = [ds.categories[c] for c in sorted(ds.categories)]
        t0 = time.perf_counter()
        T = embed_prompts(text, names, CLIP_IMAGENET_TEMPLATES, normalize=True)
        if device == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        print(f"text: {len(names)} categories x {len(CLIP_IMAGENET_TEMPLATES)} templates -> {T.shape} in {dt:.2f} s "
              f"({len(names) * len(CLIP_IMAGENET_TEMPLATES) / dt:.0f} prompts/s)")

        # -- 2. the full extraction ------------------------------------------------------------------------
        fill = (124, 116, 104)
        images = FolderImages(ds.image_root)
        B = args.batch_size
        warm = EmbeddingStore.open(tmp / "warm", {"w": 1}, shard_size=1024, n_rows=min(n, 2 * B))
        extract_vision({k: v[:min(n, 2 * B)] for k, v in table.items()}, images, enc, warm, 1024, B, fill,
                       num_workers=args.workers, progress=False)  # CUDA context, kernels, autotuning
        store = EmbeddingStore.open(tmp / "store", {"bench": 1}, shard_size=1024, n_rows=n)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        stats = extract_vision(table, images, enc, store, 1024, B, fill, num_workers=args.workers, progress=False)
        pipe_s = time.perf_counter() - t0
        store.finalize(stats["n_shards"], enc.dim)
        ids, X = read_embeddings(store.path)
        assert len(ids) == n == stats["n_embedded"] and np.isfinite(X).all(), stats
        pipe_rate = n / pipe_s
        print(f"pipeline: {n} objects in {pipe_s:.2f} s = {pipe_rate:.1f} objects/s (batch {B}, {dtype}, "
              f"{stats['n_shards']} shards written)")

        # -- 3. the model alone on ready tensors ------------------------------------------------------------
        rng = np.random.RandomState(0)
        ready = [enc.to_tensor(rng.randint(0, 256, (B, enc.preprocess.size, enc.preprocess.size, 3)).astype(np.uint8))
                 for _ in range(4)]
        enc.encode_tensor(ready[0])
        reps = max(1, math.ceil(n / (B * len(ready))))
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            for x in ready:
                enc.encode_tensor(x)
        if device == "cuda":
            torch.cuda.synchronize()
        model_rate = reps * len(ready) * B / (time.perf_counter() - t0)
        print(f"model alone (ready tensors, batch {B}): {model_rate:.1f} objects/s")

        # -- 4. FLOPs and the fraction of peak -------------------------------------------------------------
        side = enc.preprocess.size
        flops = vit_flops(vcfg, side)
        try:
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as fc:
                enc.encode_tensor(ready[0][:1])
            counted = fc.get_total_flops()
            print(f"FLOPs per object: {flops / 1e9:.3f} G by hand, {counted / 1e9:.3f} G by torch's flop counter "
                  ""
                  "(both count matmuls; the counter sees attention only in the GPU kernels)")
        except Exception as exc:  # the counter is a cross-check only
            print(f"FLOPs per object: {flops / 1e9:.3f} G by hand (flop counter unavailable: {exc})")
        tflops_pipe, tflops_model = flops * pipe_rate / 1e12, flops * model_rate / 1e12
        frac_pipe = tflops_pipe / peak if peak else float("nan")
        frac_model = tflops_model / peak if peak else float("nan")
        print(f"achieved: pipeline {tflops_pipe:.1f} TFLOPS ({frac_pipe:.1%} of peak), model alone "
              f"{tflops_model:.1f} TFLOPS ({frac_model:.1%} of peak)")

        # -- 5. the naive loop: reopen per object, batch 1, float32 ---------------------------------------
        windows = np.stack([table["x0"], table["y0"], table["x1"], table["y1"]], 1)
        k = min(args.naive_n, n)
        one = render_crop(load_rgb(Path(ds.image_root) / table["file_name"][0]), tuple(int(v) for v in windows[0]),
                          side)
        enc32.encode(one[None])  # warm-up
        t0 = time.perf_counter()
        for i in range(k):
            image = load_rgb(Path(ds.image_root) / table["file_name"][i])
            crop = render_crop(image, enc32.preprocess.window(*(int(v) for v in windows[i])), side, fill=fill,
                               resample=enc32.preprocess.resample)
            enc32.encode(crop[None])
        naive_rate = k / (time.perf_counter() - t0)
        print(f"naive (reopen per object, batch 1, float32{', TF32 matmuls' if device == 'cuda' else ''}): "
              f"{naive_rate:.1f} objects/s over {k} objects")
        speedup = pipe_rate / naive_rate
        floor = "" if args.tiny else ("  (floor 10: PASS)" if speedup >= 10 else "  (floor 10: FAIL)")
        print(f"speedup over naive: {speedup:.1f}x{floor}; pipeline_vs_model {pipe_rate / model_rate:.3f}")
        print(f"objects_per_s={pipe_rate:.1f} fraction_of_peak={frac_pipe:.3f} speedup_vs_naive={speedup:.1f} "
              f"pipeline_vs_model={pipe_rate / model_rate:.3f} gpu={gpu.replace(' ', '_')}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
