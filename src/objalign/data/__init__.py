"""Datasets: COCO-format reading and validation, the generated demo, sampling, downloads."""

from __future__ import annotations

from pathlib import Path

from objalign.config import FETCH, DataConfig
from objalign.data.coco import load_coco
from objalign.data.demo import make_demo_dataset
from objalign.data.download import download_coco2017
from objalign.data.download.lvis import download_lvis, lvis_annotation_path
from objalign.data.fetched import fetch_dest
from objalign.data.hf import load_hf
from objalign.data.images import MultiImages, open_image_source
from objalign.data.lvis import load_lvis
from objalign.data.visual_genome import load_visual_genome
from objalign.errors import ObjalignError


def under_root(cfg: DataConfig, path: str) -> Path:
    """``path`` relative to ``data.root`` unless absolute."""
    return Path(path) if Path(path).is_absolute() else Path(cfg.root) / path


def image_locations(cfg: DataConfig) -> list[Path]:
    """``data.images`` as a list of paths (one or several folders or zips), each relative to ``data.root``."""
    return [under_root(cfg, p) for p in ([cfg.images] if isinstance(cfg.images, str) else cfg.images)]


def open_dataset(cfg: DataConfig):
    """Load the dataset a config names; the demo is generated on first use."""

    root = Path(cfg.root)
    ann = under_root(cfg, cfg.annotations)
    if fetches_images(cfg):
        return open_fetched(cfg)
    if cfg.kind in OTHER_KINDS:
        return OTHER_KINDS[cfg.kind](cfg)
    if not isinstance(cfg.images, str):
        return open_coco_list(cfg, ann)
    images = under_root(cfg, cfg.images)
    if cfg.kind == "demo":

        make_demo_dataset(root, seed=cfg.seed, n_images=cfg.demo_images)
    elif cfg.kind == "coco2017":
        ann, images = coco2017_paths(cfg)
        ds = load_coco(ann, images, strict=cfg.strict, duplicate_names=cfg.duplicate_names)
        ds.images_from_zip = cfg.images_from_zip
        return ds
    elif cfg.kind != "coco":
        raise ObjalignError(f"data.kind = {cfg.kind!r}: expected 'demo', 'coco', 'coco2017', "
                            f"{', '.join(repr(k) for k in OTHER_KINDS)}")
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


def fetches_images(cfg: DataConfig) -> bool:
    """Whether ``data.images: fetch``: the sampled objects' images are fetched by URL (see
    :mod:`objalign.data.fetched`)."""
    return cfg.images == FETCH


def open_fetched(cfg: DataConfig):
    """A dataset whose images are fetched by URL into :func:`~objalign.data.fetched.fetch_dest`; its annotations
    (COCO 2017's and LVIS's fetched when missing) are read as its kind reads them."""
    dest = fetch_dest(cfg.root, cfg.kind, cfg.split)
    opts = {"strict": cfg.strict, "duplicate_names": cfg.duplicate_names, "fetch": True}
    if cfg.kind == "coco2017":
        ann = Path(cfg.root) / "annotations" / f"instances_{cfg.split}2017.json"
        if not ann.is_file():  # (a file already there is read as is: the dry run touches nothing)
            ann = download_coco2017(cfg.root, split=cfg.split, annotations_only=True, mirror=cfg.mirror,
                                    checksums=None if cfg.official_checksums else {})["annotations"][cfg.split]
        return load_coco(ann, dest, **opts)
    if cfg.kind == "lvis":
        ann = lvis_annotations(cfg)
        if not ann.is_file() and fetches_lvis(cfg):
            ann = download_lvis(cfg.root, split=cfg.split, mirror=cfg.mirror, progress=True)
        return load_lvis(ann, [dest], **opts)
    if cfg.kind == "visual_genome":
        return load_visual_genome(cfg.root, [dest], categories=cfg.categories, min_count=cfg.min_count, **opts)
    if cfg.kind == "coco":
        return load_coco(under_root(cfg, cfg.annotations), dest, **opts)
    raise ObjalignError(f"data.images = fetch: data.kind = {cfg.kind!r} has no image URLs to fetch; give the image "
                        "folder instead")


def open_coco_list(cfg: DataConfig, ann: Path):
    """A COCO-format dataset whose images sit in several folders or zips (``data.images`` a list)."""
    if cfg.kind not in ("coco",):
        raise ObjalignError(f"data.images = {list(cfg.images)!r}: a list of image locations needs data.kind: coco "
                            f"or lvis (data.kind = {cfg.kind!r}); give one folder")
    ds = load_coco(ann, image_locations(cfg)[0], strict=cfg.strict, duplicate_names=cfg.duplicate_names)
    locations = image_locations(cfg)
    missing = [str(p) for p in locations if not p.exists()]
    if missing:
        raise ObjalignError(f"data.images = {list(cfg.images)!r}: {missing[0]!r} does not exist; list only existing "
                            "image folders or zips (relative to data.root, or absolute)")
    ds.source = MultiImages([open_image_source(p) for p in locations])
    return ds


def open_lvis(cfg: DataConfig):
    """LVIS v1: ``data.annotations`` when it names a file, else the ``data.split`` archive fetched into the root."""
    locations = image_locations(cfg)
    missing = [str(p) for p in locations if not p.exists()]
    if missing:  # before any download
        raise ObjalignError(f"data.images = {cfg.images!r}: {missing[0]!r} does not exist; point it at the folder "
                            "that holds COCO's train2017/ and val2017/ (or their zips), or at a folder of images "
                            "(objalign data coco2017 fetches COCO's images)")
    ann = lvis_annotations(cfg)
    if not ann.is_file() and fetches_lvis(cfg):
        ann = download_lvis(cfg.root, split=cfg.split, mirror=cfg.mirror, progress=True)
    return load_lvis(ann, locations, strict=cfg.strict, duplicate_names=cfg.duplicate_names)


def fetches_lvis(cfg: DataConfig) -> bool:
    """Whether ``kind: lvis`` fetches ``data.split``'s annotations: ``data.annotations`` is left at its default
    (or empty) and no such file exists."""
    return cfg.annotations in ("", "annotations.json") and not under_root(cfg, cfg.annotations or "-").is_file()


def lvis_annotations(cfg: DataConfig) -> Path:
    """The LVIS annotation file a config names: ``data.annotations``, or the fetched
    ``annotations/lvis_v1_<split>.json`` when :func:`fetches_lvis`."""
    return lvis_annotation_path(cfg.root, cfg.split) if fetches_lvis(cfg) else under_root(cfg, cfg.annotations)


def open_visual_genome(cfg: DataConfig):
    """Visual Genome: the release's json files in ``data.root``, images in ``data.images``."""
    locations = image_locations(cfg)
    missing = [str(p) for p in locations if not p.exists()]
    if missing:
        raise ObjalignError(f"data.images = {cfg.images!r}: {missing[0]!r} does not exist; point it at VG_100K (or a "
                            "list such as [VG_100K, VG_100K_2], or the folder that holds them)")
    return load_visual_genome(cfg.root, locations, categories=cfg.categories, min_count=cfg.min_count,
                              strict=cfg.strict, duplicate_names=cfg.duplicate_names)


def open_hf_dataset(cfg: DataConfig):
    """A Hugging Face dataset (``datasets`` imported only here: an optional extra)."""

    return load_hf(cfg)


OTHER_KINDS = {"lvis": open_lvis, "visual_genome": open_visual_genome, "hf": open_hf_dataset}
