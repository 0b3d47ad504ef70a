"""Hugging Face ``datasets`` as an object source (``data.kind: hf``; ``pip install 'objalign[hf]'``).

``data.root`` is a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (``data.hf_split``
picks the split of a DatasetDict), a folder holding a dataset repository's files (a hub dataset cloned or
downloaded: its parquet files, read by ``datasets.load_dataset(folder)``) or a dataset name on the hub (loaded with
``datasets.load_dataset`` into the Hugging Face cache). Each row is one image; the schema is declared in the config:

``data.hf_image``     the image column (an ``Image`` feature)
``data.hf_objects``   the objects column: a dict of lists (a ``Sequence`` of dicts) or a list of dicts
``data.hf_bbox``      the box field inside it; ``data.box_format``: ``xywh`` / ``xyxy`` in pixels, or
                      ``xywh_norm`` / ``xyxy_norm`` (fractions of the image's width and height)
``data.hf_category``  the category field: a ``ClassLabel`` (names from the feature; ids its indices), strings
                      (ids in sorted order, from 1) or integers (named ``"category N"``)

The set never sits in memory: annotations are read in batches from the memory-mapped arrow files with the images
left undecoded (each image's size is read from its ``width``/``height`` columns when the row has them, else from
its header), and the crop and embed stages decode one row's image at a time (:class:`HFImages`, file name = row
index). The dataset's fingerprint (with the split and the schema) keys the cache. A box that is not four finite
numbers or a missing category is recorded in ``excluded`` and skipped, as COCO's are.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections import Counter
from pathlib import Path

from objalign.data.coco import CocoDataset, coco_from_doc
from objalign.data.images import to_rgb
from objalign.errors import ObjalignError

INSTALL = "pip install 'objalign[hf]'  (or: pip install datasets)"


def _datasets():
    try:
        import datasets
    except ImportError:
        raise ObjalignError(f"data.kind = 'hf' needs the datasets package: {INSTALL}") from None
    return datasets


#: Files ``save_to_disk`` writes (a Dataset, a DatasetDict): a folder with one is read with ``load_from_disk``.
SAVED_MARKERS = ("state.json", "dataset_dict.json")


def open_hf(source: str, split: str = "train"):
    """The ``datasets.Dataset`` of ``source`` and ``split``: a ``save_to_disk`` folder (``load_from_disk``), a folder
    of a dataset repository's files (parquet, json, csv, images: ``load_dataset(folder)``, the loader a hub name
    goes through after its download) or a hub name (``load_dataset(name)``, into the Hugging Face cache)."""
    datasets = _datasets()
    if Path(source).is_dir() and not any((Path(source) / f).is_file() for f in SAVED_MARKERS):
        try:  # a dataset repository's files (a hub dataset cloned or downloaded): the hub's own loader, offline
            ds = datasets.load_dataset(str(source), split=split)
        except Exception as exc:  # noqa: BLE001 - the loader raises many types for a folder it cannot read
            raise ObjalignError(f"data.root = {source!r} is neither a folder written by save_to_disk (it has none of "
                                f"{', '.join(SAVED_MARKERS)}) nor a dataset repository's files "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); give such a folder or a "
                                "dataset name") from None
    elif Path(source).is_dir():
        try:
            ds = datasets.load_from_disk(str(source))
        except FileNotFoundError as exc:
            raise ObjalignError(f"data.root = {source!r} is not a folder written by save_to_disk ({exc}); give "
                                "such a folder or a dataset name") from None
    else:
        try:
            ds = datasets.load_dataset(source, split=split)
        except Exception as exc:  # noqa: BLE001 - the hub raises many types (offline, missing, gated)
            raise ObjalignError(f"data.root = {source!r}: not a folder and not loadable as a dataset name "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); give a save_to_disk "
                                "folder or a dataset name reachable from here") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ObjalignError(f"data.hf_split = {split!r}: {source} has splits {', '.join(ds)}; pick one")
        ds = ds[split]
    return ds


def to_xywh(box, fmt: str, width: int, height: int):
    """A box in ``fmt`` -> COCO ``[x, y, w, h]`` in pixels, or None when it is not four finite numbers."""
    try:
        a, b, c, d = (float(v) for v in box)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (a, b, c, d)):
        return None
    if fmt.endswith("_norm"):
        a, b, c, d = a * width, b * height, c * width, d * height
    if fmt.startswith("xyxy"):
        c, d = c - a, d - b
    return [a, b, c, d]


def _objects(value, bbox: str, category: str) -> list[tuple]:
    """``[(box, category), ...]`` of one row's objects column (dict of lists, or list of dicts)."""
    if isinstance(value, dict):
        boxes, cats = value.get(bbox) or [], value.get(category) or []
        return [(b, cats[i] if i < len(cats) else None) for i, b in enumerate(boxes)]
    if isinstance(value, list):
        return [(o.get(bbox), o.get(category)) if isinstance(o, dict) else (None, None) for o in value]
    return []


def _size(row: dict, image) -> tuple[int, int] | None:
    if isinstance(row.get("width"), int) and isinstance(row.get("height"), int):
        return row["width"], row["height"]
    from PIL import Image

    try:
        if isinstance(image, dict) and image.get("bytes"):
            with Image.open(io.BytesIO(image["bytes"])) as im:
                return im.size
        if isinstance(image, dict) and image.get("path"):
            with Image.open(image["path"]) as im:
                return im.size
    except Exception:  # noqa: BLE001 - PIL raises many types for an unreadable header
        return None
    return None


def _names(feature, values: set) -> dict:
    """Category value -> ``(id, name)`` from the feature (ClassLabel) or the values themselves."""
    names = getattr(feature, "names", None)
    if names:
        return {i: (i, str(n)) for i, n in enumerate(names)}
    if all(isinstance(v, str) for v in values):
        return {v: (i + 1, v) for i, v in enumerate(sorted(values))}
    return {v: (int(v), f"category {int(v)}") for v in values if isinstance(v, int)}


def _category_feature(ds, objects: str, category: str):
    """The category field's feature (a ClassLabel when the set has one), whichever way the objects are nested:
    a dict of lists (``datasets`` >= 3 writes ``Sequence(dict)`` so), ``Sequence(dict)`` or a list of dicts."""
    feat = ds.features.get(objects)
    if isinstance(feat, list) and feat:
        feat = feat[0]
    feat = getattr(feat, "feature", feat)
    inner = feat.get(category) if isinstance(feat, dict) else None
    while inner is not None and not hasattr(inner, "names") and hasattr(inner, "feature"):
        inner = inner.feature  # List(ClassLabel) -> ClassLabel
    return inner


def load_hf(cfg) -> CocoDataset:
    """Read a Hugging Face dataset's objects as a :class:`CocoDataset` (see the module notes); ``cfg`` is the
    :class:`~objalign.config.DataConfig`."""
    datasets = _datasets()
    ds = open_hf(cfg.root, cfg.hf_split)
    for col in (cfg.hf_image, cfg.hf_objects):
        if col not in ds.column_names:
            key = "data.hf_image" if col == cfg.hf_image else "data.hf_objects"
            raise ObjalignError(f"{key} = {col!r}: {cfg.root} has no such column (it has "
                                f"{', '.join(ds.column_names)}); set it to the right column")
    keep = [c for c in (cfg.hf_image, cfg.hf_objects, "width", "height") if c in ds.column_names]
    plain = ds.select_columns(keep).cast_column(cfg.hf_image, datasets.Image(decode=False))
    found, images, faults, excluded = [], [], {}, []
    next_id = 1
    for start in range(0, len(plain), 256):
        batch = plain[start:start + 256]
        for k in range(len(batch[cfg.hf_image])):
            row_id = start + k
            row = {c: batch[c][k] for c in keep}
            size = _size(row, row[cfg.hf_image])
            if size is None:
                faults[row_id] = ("unreadable image", f"row {row_id}: the image's size cannot be read")
                size = (1, 1)
            images.append({"id": row_id, "file_name": str(row_id), "width": int(size[0]), "height": int(size[1])})
            for box, cat in _objects(row[cfg.hf_objects], cfg.hf_bbox, cfg.hf_category):
                xywh = to_xywh(box, cfg.box_format, *size) if box is not None else None
                if xywh is None or cat is None:
                    kind, why = ("bad box", f"row {row_id}: {cfg.hf_bbox}={str(box)[:40]}") if xywh is None else \
                        ("no category", f"row {row_id}: the object has no {cfg.hf_category!r}")
                    excluded.append({"annotation_id": next_id, "image_id": row_id, "kind": kind, "reason": why})
                else:
                    found.append((next_id, row_id, cat, xywh))
                next_id += 1
    table = _names(_category_feature(ds, cfg.hf_objects, cfg.hf_category), {c for _, _, c, _ in found})
    counts = Counter(c for _, _, c, _ in found if c in table)
    anns = []
    for aid, iid, cat, box in found:
        if cat not in table or counts[cat] < cfg.min_count:
            why = f"category {cat!r} " + ("is not a category of the feature" if cat not in table else
                                          f"has {counts[cat]} object(s), fewer than data.min_count = {cfg.min_count}")
            excluded.append({"annotation_id": aid, "image_id": iid, "kind": "rare category" if cat in table else
                             "unknown category", "reason": why})
            continue
        anns.append({"id": aid, "image_id": iid, "category_id": table[cat][0], "bbox": box,
                     "area": box[2] * box[3], "iscrowd": 0})
    used = {table[c][0]: table[c][1] for c in counts if counts[c] >= cfg.min_count}
    doc = {"images": images, "annotations": anns,
           "categories": [{"id": i, "name": n} for i, n in sorted(used.items())]}
    schema = [ds._fingerprint, cfg.hf_split, cfg.hf_image, cfg.hf_objects, cfg.hf_bbox, cfg.hf_category,
              cfg.box_format, cfg.min_count]
    fp = hashlib.sha256(json.dumps(schema).encode()).hexdigest()[:16]
    out = coco_from_doc(doc, Path(str(cfg.root)), fp, Path(str(cfg.root)), strict=cfg.strict,
                        duplicate_names=cfg.duplicate_names, image_faults=faults)
    out.excluded = excluded + out.excluded
    out.source = HFImages(str(cfg.root), cfg.hf_split, cfg.hf_image)
    return out


class HFImages:
    """A dataset's images by row: ``load("17")`` decodes row 17's image to ``(H, W, 3)`` uint8.

    Opens the dataset lazily in each process (memory-mapped; pickling sends only the source, split and column).
    """

    def __init__(self, source: str, split: str, column: str):
        self.source, self.split, self.column = source, split, column
        self._ds = None

    def __getstate__(self) -> dict:
        return {"source": self.source, "split": self.split, "column": self.column}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["source"], state["split"], state["column"])

    def describe(self, file_name: str) -> str:
        return f"{self.source} [{self.split}] row {file_name}"

    def load(self, file_name: str):
        if self._ds is None:
            self._ds = open_hf(self.source, self.split)
        image = self._ds[int(file_name)][self.column]
        return to_rgb(image)
