"""The data part of ``objalign run --dry-run``: per source, what is there, what will be fetched, and the counts.

Touches no network and loads no model; reads the annotation file when it is already there.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from objalign.config import RunConfig
from objalign.data import fetches_images, fetches_lvis, image_locations, lvis_annotations, open_dataset, under_root
from objalign.data.coco import load_coco
from objalign.data.download.common import COCO2017_CHECKSUMS, _gib
from objalign.data.download.lvis import LVIS_ARCHIVE_SIZES, LVIS_BASE_URL
from objalign.data.fetched import fetch_dest, fetch_estimate
from objalign.data.hf import SAVED_MARKERS
from objalign.data.lvis import load_lvis, split_layout
from objalign.data.sample import draw_sample, eligible


def _size(paths: list[Path]) -> str:
    """Total size of the files under ``paths`` (folders walked), e.g. ``"12.3 MiB in 40 files"``."""
    n, total = 0, 0
    for p in paths:
        files = [p] if p.is_file() else (f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
        for f in files:
            n += 1
            total += f.stat().st_size
    return f"{total / 2**20:.1f} MiB in {n} file(s)"


def _sample_line(cfg: RunConfig, ds) -> str:
    s = cfg.sample
    pool = eligible(ds, s.min_area, s.exclude_crowd)
    n = min(s.n, len(pool))
    return (f"sample    {n} instances (of {len(pool)} eligible; seed {s.seed}, min area {s.min_area}, "
            f"crowd {'excluded' if s.exclude_crowd else 'kept'}), {len(ds.categories)} categories"
            + (f"; {len(ds.excluded)} annotation(s) left out ({ds.excluded_summary()})" if ds.excluded else ""))


def _not_yet(cfg: RunConfig) -> str:
    s = cfg.sample
    return f"sample    up to {s.n} instances (seed {s.seed}); counts known once the annotations exist"


def coco_plan(cfg: RunConfig) -> list[str]:
    """demo, coco2017 and coco (one image folder): the plan as it always was."""

    d = cfg.data
    lines = []
    root = Path(d.root)
    if d.kind == "demo":
        ann = root / d.annotations
        lines.append(f"data      demo (generated, seed {d.seed}, {d.demo_images} images) in {root}"
                     + ("" if ann.is_file() else "  [will be generated]"))
    elif d.kind == "coco2017":
        ann = root / "annotations" / f"instances_{d.split}2017.json"
        img = root / f"{d.split}2017"
        zip_ = root / "downloads" / f"{d.split}2017.zip"
        todo = []
        if not ann.is_file():
            todo.append("annotations/annotations_trainval2017.zip (~241 MiB)")
        have_images = (zip_.is_file() if d.images_from_zip else (img.is_dir() or zip_.is_file()))
        if not have_images:
            todo.append(f"zips/{d.split}2017.zip ({'~18 GiB' if d.split == 'train' else '~778 MiB'})")
        lines.append(f"data      COCO 2017 {d.split} in {root}"
                     + (f" (images read from {zip_})" if d.images_from_zip else ""))
        lines.append(f"download  {', '.join(todo) if todo else 'nothing (already complete)'}"
                     + (f" from {d.mirror}" if d.mirror and todo else ""))
    else:
        ann = Path(d.annotations) if Path(d.annotations).is_absolute() else root / d.annotations
        lines.append(f"data      COCO-format {ann} (images: {root / d.images})")
    if ann.is_file():
        ds = load_coco(ann, root / d.images, strict=d.strict)
        lines.append(_sample_line(cfg, ds))
    else:
        lines.append(_not_yet(cfg))
    return lines


def images_plan(cfg: RunConfig) -> list[str]:
    """COCO-format with ``data.images`` a list: each location, whether it exists, its size."""

    d = cfg.data
    ann = under_root(d, d.annotations)
    locs = image_locations(d)
    lines = [f"data      COCO-format {ann} (images in {len(locs)} locations, each file read from the first that "
             "holds it)"]
    for p in locs:
        lines.append(f"images    {p}: " + (_size([p]) if p.exists() else "MISSING (the run will refuse it)"))
    if ann.is_file() and all(p.exists() for p in locs):
        lines.append(_sample_line(cfg, open_dataset(d)))
    else:
        lines.append(_not_yet(cfg))
    return lines


def lvis_plan(cfg: RunConfig) -> list[str]:
    """LVIS v1: the annotation file (or the archive to fetch), the image layout, groups and counts."""

    d = cfg.data
    ann = lvis_annotations(d)
    locs = image_locations(d)
    layout = ("COCO split folders/zips: coco_url's last two parts name the file" if split_layout(locs)
              else "one folder: coco_url's file name names the file")
    lines = [f"data      LVIS v1 {ann} (images: {', '.join(map(str, locs))}; {layout})"]
    if not ann.is_file() and fetches_lvis(d):
        lines.append(f"download  LVIS/lvis_v1_{d.split}.json.zip ({LVIS_ARCHIVE_SIZES[d.split]}) from "
                     f"{d.mirror or LVIS_BASE_URL}; the images are COCO 2017's (not fetched: objalign data coco2017)")
    else:
        lines.append("download  nothing (annotations already there)")
    missing = [str(p) for p in locs if not p.exists()]
    if missing:
        lines.append(f"images    MISSING {missing[0]} (the run will refuse it)")
    if not ann.is_file() or missing:
        return lines + [_not_yet(cfg)]
    ds = load_lvis(ann, locs, strict=d.strict, duplicate_names=d.duplicate_names)
    groups = Counter(v["frequency"] for v in ds.category_info.values())
    lines.append(f"groups    {', '.join(f'{groups[g]} {g}' for g in ('rare', 'common', 'frequent'))} categories "
                 f"(figures per group in the report); {len(ds.images)} images")
    return lines + [_sample_line(cfg, ds)]


def visual_genome_plan(cfg: RunConfig) -> list[str]:
    """Visual Genome: the json files, the image locations, the category rule and the counts."""

    d = cfg.data
    root = Path(d.root)
    need = ["image_data.json", "attributes.json" if d.categories == "attribute_name" else "objects.json"]
    locs = image_locations(d)
    lines = [f"data      Visual Genome in {root} (categories: {d.categories}, min_count {d.min_count}; images: "
             f"{', '.join(map(str, locs))})", "download  nothing (Visual Genome is not fetched; place its files)"]
    missing = [str(root / n) for n in need if not (root / n).is_file()] + [str(p) for p in locs if not p.exists()]
    for m in missing:
        lines.append(f"files     MISSING {m} (the run will refuse it)")
    if missing:
        return lines + [_not_yet(cfg)]
    lines.append(f"files     {', '.join(need)}: {_size([root / n for n in need])}")
    return lines + [_sample_line(cfg, open_dataset(d))]


def hf_plan(cfg: RunConfig) -> list[str]:
    """A Hugging Face dataset: the source, the schema, and the counts when it is a local folder."""

    d = cfg.data
    local = Path(d.root).is_dir()
    kind = ("hub name" if not local else "save_to_disk folder" if any((Path(d.root) / f).is_file()
                                                                        for f in SAVED_MARKERS)
            else "a dataset repository's files")
    lines = [f"data      Hugging Face dataset {d.root} ({kind}, split "
             f"{d.hf_split}; image {d.hf_image!r}, objects {d.hf_objects!r} with {d.hf_bbox!r} as {d.box_format} and "
             f"{d.hf_category!r})"]
    if not local:
        return lines + ["download  the dataset into the Hugging Face cache on first use (datasets.load_dataset)",
                        _not_yet(cfg)]
    lines.append(f"download  nothing (a local folder: {_size([Path(d.root)])})")
    return lines + [_sample_line(cfg, open_dataset(d))]


def fetch_plan(cfg: RunConfig) -> list[str]:
    """``data.images: fetch``: the annotations (and what fetching them takes), then how many of the sampled objects'
    images are already in the fetch folder and about how many bytes the rest are."""

    d = cfg.data
    dest = fetch_dest(d.root, d.kind, d.split)
    root = Path(d.root)
    download = "nothing (annotations already there)"
    if d.kind == "coco2017":
        ann = root / "annotations" / f"instances_{d.split}2017.json"
        if not ann.is_file():
            download = "annotations/annotations_trainval2017.zip (~241 MiB)"
        need = [ann]
    elif d.kind == "lvis":
        ann = lvis_annotations(d)
        if not ann.is_file() and fetches_lvis(d):
            download = f"LVIS/lvis_v1_{d.split}.json.zip ({LVIS_ARCHIVE_SIZES[d.split]})"
        need = [ann]
    elif d.kind == "visual_genome":
        ann = root
        need = [root / "image_data.json", root / ("attributes.json" if d.categories == "attribute_name"
                                                 else "objects.json")]
        download = "nothing (Visual Genome's json files are not fetched; place them)"
    else:
        ann = under_root(d, d.annotations)
        need = [ann]
    lines = [f"data      {FETCH_NAMES[d.kind]} {ann} (images: only the sampled objects', fetched by URL into {dest})",
             f"download  {download}" + (f" from {d.mirror}" if d.mirror and not download.startswith("nothing") else "")]
    missing = [str(p) for p in need if not p.is_file()]
    if missing and not download.startswith("nothing"):
        return lines + [f"fetch     the sampled objects' images by URL once the annotations are there (at most "
                        f"{cfg.sample.n}, one per sampled object at worst)", _not_yet(cfg)]
    if missing:
        return lines + [f"files     MISSING {missing[0]} (the run will refuse it)", _not_yet(cfg)]
    ds = open_dataset(d)
    est = fetch_estimate(ds, draw_sample(ds, cfg.sample)["file_name"].tolist())
    if not est["n_missing"]:
        todo = "nothing to fetch"
    elif est["bytes"] is None:
        todo = f"{est['n_missing']} to fetch, size unknown before the first images are fetched"
    else:
        todo = f"{est['n_missing']} to fetch, about {_gib(est['bytes'])} ({est['how']})"
    whole = f"; instead of {d.split}2017.zip's {_gib(COCO2017_CHECKSUMS[f'{d.split}2017.zip'][0])}" \
        if d.kind == "coco2017" else ""
    lines.append(f"fetch     {est['n_images']} images of the sample (of {len(ds.images)} in the annotations) into "
                 f"{dest}: {est['n_present']} already there, {todo}"
                 + (f" from {d.mirror}" if d.mirror and est["n_missing"] else "") + whole)
    return lines + [_sample_line(cfg, ds)]


#: data.kind -> what the fetch plan calls it
FETCH_NAMES = {"coco": "COCO-format", "coco2017": "COCO 2017", "lvis": "LVIS v1", "visual_genome": "Visual Genome"}


def data_plan(cfg: RunConfig) -> list[str]:
    """The dry run's data lines for ``cfg.data``'s source."""
    kind = cfg.data.kind
    if fetches_images(cfg.data):
        return fetch_plan(cfg)
    if kind == "lvis":
        return lvis_plan(cfg)
    if kind in PLANS:
        return PLANS[kind](cfg)
    if not isinstance(cfg.data.images, str):
        return images_plan(cfg)
    return coco_plan(cfg)


PLANS: dict = {"visual_genome": visual_genome_plan, "hf": hf_plan}  #: data.kind -> plan function
