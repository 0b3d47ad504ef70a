"""Datasets: COCO-format reading and validation, the generated demo, sampling, downloads."""

from __future__ import annotations

from pathlib import Path

from objalign.config import DataConfig
from objalign.data.coco import load_coco
from objalign.data.demo import make_demo_dataset
from objalign.data.download import download_coco2017
from objalign.errors import ObjalignError


def open_dataset(cfg: DataConfig):
    """Load the dataset a config names; the demo is generated on first use."""

    root = Path(cfg.root)
    ann = Path(cfg.annotations) if Path(cfg.annotations).is_absolute() else root / cfg.annotations
    images = Path(cfg.images) if Path(cfg.images).is_absolute() else root / cfg.images
    if cfg.kind == "demo":

        make_demo_dataset(root, seed=cfg.seed, n_images=cfg.demo_images)
    elif cfg.kind == "coco2017":
        ann, images = coco2017_paths(cfg)
        ds = load_coco(ann, images, strict=cfg.strict, duplicate_names=cfg.duplicate_names)
        ds.images_from_zip = cfg.images_from_zip
        return ds
    elif cfg.kind != "coco":
        raise ObjalignError(f"data.kind = {cfg.kind!r}: expected 'demo', 'coco' or 'coco2017'")
    else:  # the annotations' own errors first (a broken file is the first thing to fix), then the folder
        ds = load_coco(ann, images, strict=cfg.strict, duplicate_names=cfg.duplicate_names)
        check_image_folder(cfg, images)
        return ds
    return load_coco(ann, images, strict=cfg.strict, duplicate_names=cfg.duplicate_names)


def check_image_folder(cfg: DataConfig, images: Path) -> None:
    """Refuse, before any work, an image folder that does not exist (every object would be skipped while
    embedding, and the align stage would have nothing to fit): one line naming ``data.images`` and the path."""

    if not images.is_dir():
        what = "is a file, not a folder" if images.exists() else "does not exist"
        raise ObjalignError(f"data.images = {cfg.images!r}: the image folder {str(images)!r} {what}; set data.images "
                            f"(relative to data.root = {cfg.root!r}, or absolute) to the folder that holds the "
                            "COCO file_name paths")


def coco2017_paths(cfg: DataConfig, progress: bool = True) -> tuple[Path, Path]:
    """COCO 2017 ``(annotations json, image folder or zip)`` for ``cfg.split``, downloading what is missing."""

    if cfg.split not in ("train", "val"):
        raise ObjalignError(f"data.split = {cfg.split!r}: expected 'train' or 'val'")
    got = download_coco2017(cfg.root, split=cfg.split, mirror=cfg.mirror, progress=progress,
                            extract=not cfg.images_from_zip, checksums=None if cfg.official_checksums else {})
    return Path(got["annotations"][cfg.split]), Path(got["images"][cfg.split])
