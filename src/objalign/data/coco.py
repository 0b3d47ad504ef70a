"""Reading and validating COCO-format instance annotations.

A COCO file holds ``images`` (``id``, ``file_name``, ``width``, ``height``), ``annotations`` (``id``,
``image_id``, ``category_id``, ``bbox`` as ``[x, y, w, h]``, ``area``, ``iscrowd``, ``segmentation`` as
polygons or RLE) and ``categories`` (``id``, ``name``). Category ids need not be contiguous (COCO's run 1..90).

A file that breaks the schema (a missing list, a record without an integer id, a bbox that is not four numbers)
is refused with one line. Faults that real exports carry in single records are not fatal: an annotation whose
box is non-finite or has no area, whose image's ``file_name`` would leave the image folder, whose ``image_id``
or ``category_id`` is dangling (not in ``images`` / ``categories``) or whose ``id`` repeats an earlier one is
left out of :attr:`CocoDataset.annotations` and recorded in :attr:`CocoDataset.excluded` with the reason
(``strict=True`` refuses dangling references and repeated ids instead, as objalign did before).

Two category ids with one name would get identical text targets, so retrieval could never tell them apart:
``duplicate_names`` (``data.duplicate_names``) suffixes the id to each such name (``"bank (id 12)"``, the default),
merges the ids into the first one's category, or refuses the file; the first two print one warning line.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from objalign.config import DUPLICATE_NAME_RULES  # data.duplicate_names
from objalign.data.fetched import FetchedImages, url_faults
from objalign.data.images import FolderImages, ZipImages, file_name_problem
from objalign.errors import ObjalignError


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
        The usable annotation records, in file order.
    categories : dict[int, str]
        Category id -> name.
    fingerprint : str
        sha256 (first 16 hex digits) of the JSON file's bytes: identifies the dataset in cache keys.
    excluded : list[dict]
        ``{"annotation_id", "image_id", "kind", "reason"}`` of each annotation left out of ``annotations``, in
        file order; ``kind`` is ``"dangling reference"``, ``"repeated id"``, ``"bad box"`` or ``"file_name
        outside the image folder"``, ``reason`` the details.
    """

    path: Path
    image_root: Path
    images: dict
    annotations: list
    categories: dict
    fingerprint: str

    images_from_zip: bool = False  #: ``image_root`` is a zip archive, not a folder
    excluded: list = field(default_factory=list)
    #: name -> the category ids that shared it in the file (empty when every name is distinct); what
    #: ``duplicate_names`` did to them is in :attr:`categories`
    duplicate_names: dict = field(default_factory=dict)
    #: category id -> what a format knows beyond the name (LVIS: ``frequency`` ``rare``/``common``/``frequent``,
    #: ``synonyms``, ``definition``, ``synset``); empty for plain COCO
    category_info: dict = field(default_factory=dict)
    #: the image source when it is not ``image_root`` itself (several folders or zips; see
    #: :class:`~objalign.data.images.MultiImages`)
    source: object = None

    def excluded_summary(self) -> str:
        """``"3 dangling reference, 1 bad box"``: counts of :attr:`excluded` by kind of reason."""
        kinds = Counter(r["kind"] for r in self.excluded)
        return ", ".join(f"{n} {k}" for k, n in kinds.most_common())

    def image_path(self, image_id: int) -> Path:
        """The resolved image file of ``image_id``; :class:`~objalign.data.images.ImagePathError` for a name
        that leaves ``image_root``."""

        return FolderImages(self.image_root).path(self.images[image_id]["file_name"])

    def image_source(self):
        """Where pixels come from: ``load(file_name) -> (H, W, 3) uint8`` (a folder or a zip archive)."""

        if self.source is not None:
            return self.source
        return ZipImages(self.image_root) if self.images_from_zip else FolderImages(self.image_root)


def _fail(path: Path, what: str) -> ObjalignError:
    return ObjalignError(f"{path}: {what}")


def box_fault(bbox) -> str | None:
    """Why a COCO ``[x, y, w, h]`` cannot be cropped whatever the image (non-finite, no area), or ``None``."""
    try:
        x, y, w, h = (float(v) for v in bbox)
    except OverflowError:  # an integer too large for a float
        return f"non-finite box {[str(v)[:12] for v in bbox]}"
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return f"non-finite box [{x}, {y}, {w}, {h}]"
    if w <= 0 or h <= 0:
        return f"zero-area box [{x:g}, {y:g}, {w:g}, {h:g}]"
    return None



_warned: set = set()  # (file, fingerprint, rule) already warned about in this process: one line per dataset


def resolve_duplicate_names(categories: dict[int, str], rule: str, path: Path) -> tuple[dict, dict, dict]:
    """Apply ``rule`` to category ids that share a name.

    Parameters
    ----------
    categories : dict[int, str]
        Category id -> name, in file order.
    rule : str
        ``suffix`` (each such name gets ``" (id N)"``), ``merge`` (the later ids become the first id) or ``error``.
    path : Path
        The file, for the message.

    Returns
    -------
    (categories, alias, duplicates)
        The new id -> name table, ``{merged id: kept id}`` (``merge`` only) and ``{name: [ids]}`` of each shared name.

    Raises
    ------
    ObjalignError
        ``rule == "error"`` and two ids share a name, or an unknown rule.
    """
    if rule not in DUPLICATE_NAME_RULES:
        raise ObjalignError(f"data.duplicate_names = {rule!r}: expected one of {', '.join(DUPLICATE_NAME_RULES)}")
    ids_of: dict[str, list[int]] = {}
    for cid, name in categories.items():
        ids_of.setdefault(name, []).append(cid)
    dups = {name: ids for name, ids in ids_of.items() if len(ids) > 1}
    if not dups:
        return categories, {}, {}
    listed = "; ".join(f"ids {', '.join(map(str, ids))} are all {name!r}" for name, ids in list(dups.items())[:3])
    more = f" (and {len(dups) - 3} more names)" if len(dups) > 3 else ""
    if rule == "error":
        raise _fail(path, f"category {listed}{more}: their text targets would be identical; set data.duplicate_names: "
                          "suffix (name them 'NAME (id N)') or merge, or rename them in the file")
    alias = {}
    out = dict(categories)
    for name, ids in dups.items():
        for cid in ids:
            if rule == "suffix":
                out[cid] = f"{name} (id {cid})"
            elif cid != ids[0]:
                alias[cid] = ids[0]
                del out[cid]
    return out, alias, dups


def load_coco(annotations: str | Path, image_root: str | Path, strict: bool = False,
              duplicate_names: str = "suffix", fetch: bool = False) -> CocoDataset:
    """Load and validate a COCO instances JSON.

    Parameters
    ----------
    annotations, image_root : path
        The JSON file and the folder (or zip archive) its ``file_name`` values are relative to.
    strict : bool
        Refuse a dangling ``image_id`` / ``category_id`` or a repeated annotation id (``data.strict``) instead
        of leaving that annotation out and recording it in ``excluded``.
    duplicate_names : str
        Two category ids with one name (``data.duplicate_names``): ``suffix`` (``"bank (id 12)"``), ``merge``
        (into the first id) or ``error``; see :func:`resolve_duplicate_names`. One warning line on stderr.
    fetch : bool
        The images will be fetched by URL (``data.images: fetch``): an image with no http(s) ``coco_url`` or
        ``url`` is recorded and its annotations left out (see :mod:`objalign.data.fetched`).

    Raises
    ------
    ObjalignError
        One line naming the file, the offending record and the fix, for a missing file, invalid JSON, a
        record that breaks the COCO schema (a repeated image id included), or (``strict``) a dangling
        reference or repeated annotation id.
    """
    path = Path(annotations)
    doc, fingerprint = read_json_file(path)
    faults = url_faults(doc.get("images") or []) if fetch and isinstance(doc, dict) else None
    ds = coco_from_doc(doc, path, fingerprint, image_root, strict=strict, duplicate_names=duplicate_names,
                       image_faults=faults)
    if fetch:
        ds.source = FetchedImages(image_root)
    return ds


def read_json_file(path: Path) -> tuple[object, str]:
    """``(parsed JSON, fingerprint)`` of an annotation file; one line for a missing file or invalid JSON."""
    if not path.is_file():
        raise _fail(path, "annotation file not found; check data.root / data.annotations in the config")
    blob = path.read_bytes()
    try:
        doc = json.loads(blob)
    except json.JSONDecodeError as exc:
        raise _fail(path, f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                          "re-download or regenerate the file") from None
    return doc, hashlib.sha256(blob).hexdigest()[:16]


def coco_from_doc(doc, path: Path, fingerprint: str, image_root, strict: bool = False,
                  duplicate_names: str = "suffix", image_faults: dict | None = None) -> CocoDataset:
    """Validate a parsed COCO document (see :func:`load_coco`); ``image_faults`` maps image ids to
    ``(kind, reason)``: their annotations are recorded in ``excluded`` with that kind (a format's own faults)."""
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
        if im["id"] in images:
            raise _fail(path, f"images[{i}] repeats image id {im['id']}; image ids must be unique")
        images[im["id"]] = im
    bad_names = {k: ("file_name outside the image folder", p) for k, im in images.items()
                 if (p := file_name_problem(im["file_name"])) is not None}
    bad_names.update(image_faults or {})

    kept, excluded, seen = [], [], set()

    def exclude(a: dict, kind: str, reason: str) -> None:
        excluded.append({"annotation_id": a["id"], "image_id": a["image_id"], "kind": kind, "reason": reason})

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
        dangling = [f"{k} {a[k]} is not in {where!r}" for k, where, table in
                    (("image_id", "images", images), ("category_id", "categories", categories)) if a[k] not in table]
        repeated = a["id"] in seen
        if strict and (dangling or repeated):
            what = "; ".join(dangling) or f"id {a['id']} repeats an earlier annotation's"
            raise _fail(path, f"annotations[{i}] (id {a['id']}): {what} (data.strict is on; set data.strict: false "
                              "to skip such annotations)")
        seen.add(a["id"])
        if dangling:
            exclude(a, "dangling reference", "; ".join(dangling))
        elif repeated:
            exclude(a, "repeated id", f"annotation id {a['id']} repeats an earlier annotation's")
        elif (fault := box_fault(bbox)) is not None:
            exclude(a, "bad box", fault)
        elif a["image_id"] in bad_names:
            exclude(a, *bad_names[a["image_id"]])
        else:
            kept.append(a)

    categories, alias, dups = resolve_duplicate_names(categories, duplicate_names, path)
    if alias:
        kept = [{**a, "category_id": alias.get(a["category_id"], a["category_id"])} for a in kept]
    if dups and (str(path), fingerprint, duplicate_names) not in _warned:
        _warned.add((str(path), fingerprint, duplicate_names))
        name, ids = next(iter(dups.items()))
        done = (f"named {', '.join(repr(categories[c]) for c in ids)}" if duplicate_names == "suffix"
                else f"merged into id {ids[0]}")
        more = f" ({len(dups)} names are shared, each treated alike)" if len(dups) > 1 else ""
        print(f"objalign: warning: {path}: category ids {', '.join(map(str, ids))} share the name {name!r}, so their "
              f"text targets would be identical; {done}{more} (data.duplicate_names: {duplicate_names}; "
              "suffix, merge or error)", file=sys.stderr)

    return CocoDataset(
        path=path,
        image_root=Path(image_root),
        images=images,
        annotations=kept,
        categories=categories,
        fingerprint=fingerprint,
        excluded=excluded,
        duplicate_names=dups,
    )
