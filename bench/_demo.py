"""The demo setup the CPU extraction benchmarks share (bench/extract.py, bench/layers.py): not a benchmark."""

from __future__ import annotations

from pathlib import Path


def demo_box_crops(root: str | Path, n: int):
    """The demo dataset at ``root`` (made if missing: 320 images, seed 0) and the box-crop table (padding 0.1,
    square) of ``n`` objects sampled with seed 0: ``(dataset, crop table)``."""
    from objalign.crops.stage import decide_crops
    from objalign.data.coco import load_coco
    from objalign.data.demo import make_demo_dataset
    from objalign.data.sample import sample_instances

    root = Path(root)
    make_demo_dataset(root, seed=0, n_images=320)
    ds = load_coco(root / "annotations.json", root / "images")
    table, _ = decide_crops(ds, sample_instances(ds, n=n, seed=0), "box", 0.1, True)
    return ds, table
