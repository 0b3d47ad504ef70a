"""Datasets: COCO-format reading and validation, the generated demo, sampling, downloads."""

from __future__ import annotations

from pathlib import Path

from ..config import DataConfig
from ..errors import ObjalignError


def open_dataset(cfg: DataConfig):
    """Load the dataset a config names; the demo is generated on first use."""
    from .coco import load_coco

    root = Path(cfg.root)
    ann = Path(cfg.annotations) if Path(cfg.annotations).is_absolute() else root / cfg.annotations
    images = Path(cfg.images) if Path(cfg.images).is_absolute() else root / cfg.images
    if cfg.kind == "demo":
        from .demo import make_demo_dataset

        make_demo_dataset(root, seed=cfg.seed, n_images=cfg.demo_images)
    elif cfg.kind != "coco":
        raise ObjalignError(f"data.kind = {cfg.kind!r}: expected 'demo' or 'coco'")
    return load_coco(ann, images)
