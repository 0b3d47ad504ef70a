"""Reading and validating COCO-format instance annotations.

A COCO file holds ``images`` (``id``, ``file_name``, ``width``, ``height``), ``annotations`` (``id``,
``image_id``, ``category_id``, ``bbox`` as ``[x, y, w, h]``, ``area``, ``iscrowd``, ``segmentation`` as
polygons or RLE) and ``categories`` (``id``, ``name``). Category ids need not be contiguous (COCO's run 1..90).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ObjalignError


@dataclass
class CocoDataset:
    """An instances file held in memory.

    Attributes
    ----------
    path : Path
        The JSON file.
    image_root : Path
        Folder that ``file_name`` is relative to.
    images : dict[int, dict]
        Image id -> image record.
    annotations : list[dict]
        Annotation records, in file order.
    categories : dict[int, str]
        Category id -> name.
    fingerprint : str
        sha256 (first 16 hex digits) of the JSON file's bytes: identifies the dataset in cache keys.
    """

    path: Path
    image_root: Path
    images: dict
    annotations: list
    categories: dict
    fingerprint: str

    images_from_zip: bool = False  #: ``image_root`` is a zip archive, not a folder

    def image_path(self, image_id: int) -> Path:
        return self.image_root / self.images[image_id]["file_name"]

    def image_source(self):
        """Where pixels come from: ``load(file_name) -> (H, W, 3) uint8`` (a folder or a zip archive)."""
        from .images import FolderImages, ZipImages

        return ZipImages(self.image_root) if self.images_from_zip else FolderImages(self.image_root)


def _fail(path: Path, what: str) -> ObjalignError:
    return ObjalignError(f"{path}: {what}")


def load_coco(annotations: str | Path, image_root: str | Path) -> CocoDataset:
    """Load and validate a COCO instances JSON.

    Raises
    ------
    ObjalignError
        One line naming the file, the offending record and the fix, for a missing file, invalid JSON or a
        record that breaks the COCO schema.
    """
    path = Path(annotations)
    if not path.is_file():
        raise _fail(path, "annotation file not found; check data.root / data.annotations in the config")
    blob = path.read_bytes()
    try:
        doc = json.loads(blob)
    except json.JSONDecodeError as exc:
        raise _fail(path, f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                          "re-download or regenerate the file") from None
    if not isinstance(doc, dict):
        raise _fail(path, "expected a JSON object with 'images', 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise _fail(path, f"missing list {key!r}: this is not a COCO instances file "
                              "(COCO needs 'images', 'annotations' and 'categories')")

    categories: dict[int, str] = {}
    for i, c in enumerate(doc["categories"]):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise _fail(path, f"categories[{i}] = {str(c)[:80]} needs an integer 'id' and a string 'name'")
        categories[c["id"]] = c["name"]

    images: dict[int, dict] = {}
    for i, im in enumerate(doc["images"]):
        if not isinstance(im, dict) or not isinstance(im.get("id"), int) or not isinstance(im.get("file_name"), str):
            raise _fail(path, f"images[{i}] = {str(im)[:80]} needs an integer 'id' and a string 'file_name'")
        for k in ("width", "height"):
            if not isinstance(im.get(k), int) or im[k] <= 0:
                raise _fail(path, f"images[{i}] (id {im['id']}) has {k}={im.get(k)!r}; expected a positive integer")
        images[im["id"]] = im

    for i, a in enumerate(doc["annotations"]):
        if not isinstance(a, dict):
            raise _fail(path, f"annotations[{i}] is not an object")
        for k in ("id", "image_id", "category_id"):
            if not isinstance(a.get(k), int):
                raise _fail(path, f"annotations[{i}] has {k}={a.get(k)!r}; expected an integer")
        bbox = a.get("bbox")
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) for v in bbox)):
            raise _fail(path, f"annotations[{i}] (id {a['id']}) has bbox={bbox!r}; expected [x, y, width, height]")
        if a["image_id"] not in images:
            raise _fail(path, f"annotations[{i}] (id {a['id']}) refers to image_id {a['image_id']}, "
                              "which is not in 'images'")
        if a["category_id"] not in categories:
            raise _fail(path, f"annotations[{i}] (id {a['id']}) refers to category_id {a['category_id']}, "
                              "which is not in 'categories'")

    return CocoDataset(
        path=path,
        image_root=Path(image_root),
        images=images,
        annotations=doc["annotations"],
        categories=categories,
        fingerprint=hashlib.sha256(blob).hexdigest()[:16],
    )
