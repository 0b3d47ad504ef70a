"""Benchmark: SAM encode-once-per-image + batched box prompts vs a per-object loop (CPU, random weights).

The image encoder is the sam-vit-base architecture (hidden 768, 12 layers, 12 heads, global attention
at [2, 5, 8, 11], patch 16) at a reduced input side (default 256, position embeddings sized to a 16x16
grid, window 8 so the grid tiles without padding), with the released prompt encoder and mask decoder.
As in the real models the image encoder dominates, so the per-object loop (encode the image again for
every box, decode one box) costs about objects-per-image times more than the batched path (encode
each image once, decode all of its boxes in one batch).

Both paths run on the same instances in one process and their masks are compared. The last line is::

    encoder_calls=<a> distinct_images=<b> speedup_vs_per_object=<c>

Floor: encoder_calls == distinct_images and speedup >= 0.8 x mean objects per image.

Run: ``python bench/sam.py`` (30-80 s on 2 shared cores; ``--images/--boxes/--size`` to change).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def build(size: int, window: int, seed: int = 0):
    import torch
    from transformers import SamConfig, SamImageProcessorPil, SamModel, SamProcessor

    torch.manual_seed(seed)
    config = SamConfig(
        vision_config=dict(  # sam-vit-base encoder; image_size sets the position-embedding grid
            hidden_size=768, num_hidden_layers=12, num_attention_heads=12, global_attn_indexes=[2, 5, 8, 11],
            patch_size=16, image_size=size, window_size=window,
        ),
        prompt_encoder_config=dict(image_size=size, patch_size=16),
    )
    model = SamModel(config).eval()
    with torch.no_grad():  # random init leaves position tables at zero; give them signal
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    processor = SamProcessor(
        image_processor=SamImageProcessorPil(size={"longest_edge": size}, pad_size={"height": size, "width": size})
    )
    return model, processor


def make_instances(n_images: int, n_boxes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images, boxes = [], []
    for _ in range(n_images):
        h, w = int(rng.integers(200, 480)), int(rng.integers(200, 640))
        images.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        bw = rng.uniform(0.1, 0.5, n_boxes) * w
        bh = rng.uniform(0.1, 0.5, n_boxes) * h
        x = rng.uniform(0, 1, n_boxes) * (w - bw)
        y = rng.uniform(0, 1, n_boxes) * (h - bh)
        boxes.append(np.column_stack([x, y, bw, bh]))
    return images, boxes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--boxes", type=int, default=6, help="boxes per image")
    parser.add_argument("--size", type=int, default=256, help="model input side (sam-vit-base: 1024)")
    parser.add_argument("--window", type=int, default=8, help="windowed-attention size (sam-vit-base: 14)")
    args = parser.parse_args(argv)

    import torch

    from objalign.crops.sam import SamSegmenter
    from objalign.crops.segmenter import mask_iou

    model, processor = build(args.size, args.window)
    n_params = sum(p.numel() for p in model.vision_encoder.parameters())
    n_dec = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("vision_encoder"))
    images, boxes = make_instances(args.images, args.boxes)
    n_obj = sum(len(b) for b in boxes)
    mean_obj = n_obj / len(images)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; image encoder {n_params / 1e6:.1f}M params "
          f"(sam-vit-base at {args.size}px, window {args.window}), prompt+decoder {n_dec / 1e6:.1f}M")
    print(f"{len(images)} images x {args.boxes} boxes = {n_obj} objects (mean {mean_obj:.2f} per image)")

    warm = SamSegmenter.from_model(model, processor)
    warm.segment(images[0], boxes[0][:2])  # warm-up: allocator, kernels

    # The two paths alternate image by image (and which goes first alternates too), so that the load
    # other processes put on a shared machine falls on both alike.
    batched = SamSegmenter.from_model(model, processor)
    per_object = SamSegmenter.from_model(model, processor)
    res_batched, res_single = [], []
    wall = {"batched": 0.0, "single": 0.0}
    cpu = {"batched": 0.0, "single": 0.0}

    def timed(key, fn):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall[key] += time.perf_counter() - w0
        cpu[key] += time.process_time() - c0
        return out

    for i, (im, b) in enumerate(zip(images, boxes)):
        run_batched = lambda: batched.segment(im, b)  # noqa: E731
        run_single = lambda: [per_object.segment(im, box[None])[0] for box in b]  # noqa: E731
        if i % 2 == 0:
            res_batched.append(timed("batched", run_batched))
            res_single.append(timed("single", run_single))
        else:
            res_single.append(timed("single", run_single))
            res_batched.append(timed("batched", run_batched))
    t_batched, t_single = wall["batched"], wall["single"]

    ious, agree_none = [], 0
    for rb_list, rs_list in zip(res_batched, res_single):
        for rb, rs in zip(rb_list, rs_list):
            if rb.mask is None or rs.mask is None:
                agree_none += int(rb.mask is None and rs.mask is None)
            else:
                ious.append(mask_iou(rb.mask, rs.mask))
    n_compared = len(ious) + agree_none
    min_iou = min(ious) if ious else float("nan")
    masks_agree = n_compared == n_obj and (not ious or min_iou >= 0.999)

    speedup = t_single / t_batched
    speedup_cpu = cpu["single"] / cpu["batched"]
    floor = 0.8 * mean_obj
    print(f"batched per image : {t_batched:7.2f} s total, {1000 * t_batched / n_obj:8.1f} ms/object, "
          f"encoder calls {batched.encoder_calls}, CPU time {cpu['batched']:.2f} s")
    print(f"per-object loop   : {t_single:7.2f} s total, {1000 * t_single / n_obj:8.1f} ms/object, "
          f"encoder calls {per_object.encoder_calls}, CPU time {cpu['single']:.2f} s")
    print(f"speedup (wall) {speedup:.2f}, speedup (process CPU time) {speedup_cpu:.2f}; "
          f"ideal if the encoder were all the cost: {n_obj / len(images):.2f} (more = machine noise)")
    print(f"masks agree: {masks_agree} ({len(ious)} mask pairs, min IoU {min_iou:.4f}; {agree_none} both empty)")
    ok = batched.encoder_calls == len(images) and speedup >= floor and masks_agree
    print(f"floor: encoder_calls == distinct_images ({batched.encoder_calls} == {len(images)}) and "
          f"speedup >= 0.8 x {mean_obj:.2f} = {floor:.2f}: {'PASS' if ok else 'FAIL'}")
    print(f"encoder_calls={batched.encoder_calls} distinct_images={len(images)} speedup_vs_per_object={speedup:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
