"""Parity: objalign's converted models vs the original implementations, measured side by side (random weights).

Needs the parity environment (``pip install -e '.[parity]'`` beside torch 2.14.1 + torchvision 0.29.1, and
``pip install --no-deps dinov2==0.0.1.dev2``; see .ci/run). For each reference model the original is built with
every parameter randomised, saved as the reference pipeline saves it, loaded through
``objalign.checkpoints.load_original`` and run on the same inputs:

* SAM: a small image encoder (the released prompt encoder and mask decoder), ``SamPredictor`` with box prompts
  on images of odd sizes, ``multimask_output`` False and True vs ``crop.sam_mask: first | best_iou``: mask IoU,
  logit and IoU-prediction differences.
* DINOv2: the full-size ViT-L/14 as ``torch.hub`` builds it, at 224 px, on crops made by the DINOv2
  repository's eval transform vs objalign's ``preprocess: hub`` crops: CLS max |diff| with
  ``pos_interpolation: hub`` (and, for the record, with transformers' own interpolation).
* CLIP: OpenAI's model with the ViT-B/32 text tower (width 512, 12 layers): text features of every COCO name in
  every prompt template, tokens from ``clip.tokenize`` vs objalign's tokenizer.

The last line is::

    sam_mask_iou_min=<x> dinov2_cls_maxdiff=<y> clip_text_maxdiff=<z> tokens_identical=<true|false>

Floors: IoU >= 0.999, both maxdiffs <= 1e-4, tokens identical. ``--device cuda --clip-dtype float16`` repeats it
on a GPU in the originals' precisions (bench/gpu_parity.sh; the floors are then not the float32 ones: it prints
cosine similarities). Run: ``python bench/parity.py`` (about 3 CPU-minutes; 12 min wall on 2 heavily shared
cores; ``--quick``: a tiny DINOv2).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

import numpy as np


def cosine_min(a, b) -> float:
    a, b = np.asarray(a, np.float64).reshape(len(a), -1), np.asarray(b, np.float64).reshape(len(b), -1)
    return float(np.min((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def bench_sam(folder: str, device: str, images: int, seed: int) -> dict:
    import torch
    from segment_anything import SamPredictor

    from objalign.encoders import reference
    from objalign.crops.sam import SamSegmenter

    sam = reference.tiny_sam(seed=seed)
    path = os.path.join(folder, "sam_tiny.pth")
    torch.save(sam.state_dict(), path)
    sam = sam.to(device)
    predictor = SamPredictor(sam)
    rng = np.random.default_rng(seed)
    ious, logit_diff, iou_diff, emb_rel = [], 0.0, 0.0, 0.0
    segs = {mm: SamSegmenter(checkpoint=path, device=device, mask="best_iou" if mm else "first")
            for mm in (False, True)}
    for _ in range(images):
        h, w = (int(v) for v in rng.integers(90, 330, 2))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        x0, y0 = rng.uniform(0, w * 0.6), rng.uniform(0, h * 0.6)
        boxes = np.array([[x0, y0, rng.uniform(x0 + 8, w), rng.uniform(y0 + 8, h)] for _ in range(4)])
        predictor.set_image(image)
        for mm, seg in segs.items():
            embedding, sizes = seg.encode([image])
            scale = float(predictor.features.abs().max())
            emb_rel = max(emb_rel, float((embedding - predictor.features).abs().max()) / scale)
            logits, scores = seg.decode(embedding, sizes[0], boxes, return_logits=True)
            for b, box in enumerate(boxes):
                ref, ref_iou, _ = predictor.predict(box=box, multimask_output=mm, return_logits=True)
                kept = int(np.argmax(ref_iou)) if mm else 0
                ious.append(iou(logits[b] > 0, ref[kept] > 0))
                logit_diff = max(logit_diff, float(np.abs(logits[b] - ref[kept]).max()))
                iou_diff = max(iou_diff, abs(float(scores[b]) - float(ref_iou[kept])))
    return {"mask_iou_min": min(ious), "masks": len(ious), "logit_maxdiff": logit_diff, "iou_pred_maxdiff": iou_diff,
            "embedding_rel_maxdiff": emb_rel}


def bench_dinov2(folder: str, device: str, quick: bool, seed: int, crops: int) -> dict:
    import torch
    import torchvision.transforms as tv
    from PIL import Image

    from objalign.checkpoints import load_original
    from objalign.encoders import reference
    from objalign.crops.render import render_input
    from objalign.encoders.hf_dinov2 import HFDinov2, hub_eval_preprocess

    model = reference.tiny_dinov2(seed=seed) if quick else reference.dinov2_vitl14(seed=seed)
    path = os.path.join(folder, "dinov2_tiny.pth" if quick else "dinov2_vitl14_pretrain.pth")
    torch.save(model.state_dict(), path)
    model = model.to(device)
    arch = "dinov2" if quick else "dinov2_vitl14"
    encoder = HFDinov2(name="dinov2_vitl14" if not quick else "tiny", checkpoint=path, preprocess="hub",
                       device=device)  # pos_interpolation auto -> hub for a hub checkpoint
    plain = load_original(path, arch).to(device)  # transformers' own interpolation, for the record
    rng = np.random.default_rng(seed)
    transform = tv.Compose([tv.Resize(256, interpolation=tv.InterpolationMode.BICUBIC), tv.CenterCrop(224)])
    normalize = tv.Compose([tv.ToTensor(), tv.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    ours_crops, ref_crops, identical = [], [], 0
    for _ in range(crops):
        h, w = (int(v) for v in rng.integers(120, 480, 2))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        window = (x0, y0, int(rng.integers(x0 + 16, w + 1)), int(rng.integers(y0 + 16, h + 1)))
        ours = render_input(image, window, hub_eval_preprocess(), fill=(0, 0, 0))
        ref = np.asarray(transform(Image.fromarray(image).crop(window)))
        identical += int(np.array_equal(ours, ref))
        ours_crops.append(ours)
        ref_crops.append(normalize(Image.fromarray(ref)))
    with torch.no_grad():
        ref_cls = model.forward_features(torch.stack(ref_crops).to(device))["x_norm_clstoken"].float().cpu().numpy()
        plain_cls = plain(pixel_values=encoder.to_tensor(np.stack(ours_crops))).pooler_output.float().cpu().numpy()
    ours_cls = encoder.encode(np.stack(ours_crops))
    return {"cls_maxdiff": float(np.abs(ours_cls - ref_cls).max()), "cls_scale": float(np.abs(ref_cls).max()),
            "cls_cos_min": cosine_min(ours_cls, ref_cls), "crops_uint8_identical": f"{identical}/{crops}",
            "transformers_interp_cls_maxdiff": float(np.abs(plain_cls - ref_cls).max()),
            "arch": "ViT-L/14 (304M)" if not quick else "tiny"}


def bench_clip(folder: str, device: str, dtype: str, seed: int) -> dict:
    import clip
    import torch

    from objalign.encoders import reference
    from objalign.checkpoints.clip import openai_tokenizer
    from objalign.encoders.hf_clip_text import HFClipText

    model = reference.tiny_clip(width=512, layers=12, embed_dim=512, seed=seed)  # ViT-B/32's text tower
    path = os.path.join(folder, "clip_b32_text.pt")
    torch.save(model.state_dict(), path)
    prompts = reference.coco_prompts()
    ids = clip.tokenize(prompts)
    tok = openai_tokenizer(cache=os.path.join(folder, "tok"))(prompts, padding="max_length", max_length=77,
                                                              return_tensors="pt")
    identical = bool(torch.equal(tok.input_ids.masked_fill(tok.attention_mask == 0, 0).to(ids.dtype), ids))
    encoder = HFClipText(name="clip", checkpoint=path, device=device, dtype=dtype)
    subset = ["a photo of a " + n + "." for n in reference.COCO_NAMES]
    model = model.to(device)
    if dtype == "float16":
        from clip.model import convert_weights

        convert_weights(model)  # what clip.load does on CUDA
    with torch.no_grad():
        want = model.encode_text(clip.tokenize(subset).to(device)).float().cpu().numpy()
    got = encoder.encode(subset)
    return {"text_maxdiff": float(np.abs(got - want).max()), "text_scale": float(np.abs(want).max()),
            "text_cos_min": cosine_min(got, want), "tokens_identical": identical, "prompts_tokenized": len(prompts)}


def show(title: str, started: float, figures: dict) -> None:
    """One line per model: what was compared, how long it took, and every figure."""
    values = " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    print(f"{title}; {time.perf_counter() - started:.0f} s): {values}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clip-dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--quick", action="store_true", help="a tiny DINOv2 instead of the full ViT-L/14")
    parser.add_argument("--sam-images", type=int, default=4)
    parser.add_argument("--crops", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        os.environ["OBJALIGN_CACHE"] = os.path.join(folder, "cache")
        t = time.perf_counter()
        sam = bench_sam(folder, args.device, args.sam_images, args.seed)
        show("SAM (segment-anything SamPredictor, box prompts, both multimask settings", t, sam)
        t = time.perf_counter()
        dino = bench_dinov2(folder, args.device, args.quick, args.seed, args.crops)
        show("DINOv2 (hub model code, eval transform, 224 px", t, dino)
        t = time.perf_counter()
        text = bench_clip(folder, args.device, args.clip_dtype, args.seed)
        show(f"CLIP (OpenAI clip.model + clip.tokenize, {args.clip_dtype}", t, text)
    ok = (sam["mask_iou_min"] >= 0.999 and dino["cls_maxdiff"] <= 1e-4 and text["text_maxdiff"] <= 1e-4
          and text["tokens_identical"])
    print(f"floors (IoU >= 0.999, maxdiffs <= 1e-4, tokens identical): {'met' if ok else 'NOT met'}"
          f"{'' if args.device == 'cpu' and args.clip_dtype == 'float32' else ' (float32-CPU floors; see cosines)'}")
    print(f"sam_mask_iou_min={sam['mask_iou_min']:.6f} dinov2_cls_maxdiff={dino['cls_maxdiff']:.3g} "
          f"clip_text_maxdiff={text['text_maxdiff']:.3g} tokens_identical={str(text['tokens_identical']).lower()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
