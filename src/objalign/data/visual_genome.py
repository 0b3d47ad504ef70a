"""Reading Visual Genome (``data.kind: visual_genome``): the release's own ``image_data.json``, ``objects.json`` and
``attributes.json`` in ``data.root``, images in ``data.images`` (``VG_100K``, a list such as ``[VG_100K, VG_100K_2]``,
or the folder that holds both).

Each object becomes one COCO-style annotation (``bbox`` from its ``x, y, w, h``; ``area`` ``w * h``) of one
category, chosen by ``data.categories``:

* ``name``: the object's first name, normalised (below);
* ``synset``: its first WordNet synset (``car.n.01``), shown as the synset's head word (``car``; two synsets with
  one head word are told apart by ``data.duplicate_names``);
* ``attribute_name``: its first attribute and its name (``"red car"``, read from ``attributes.json``), so the
  text side is a phrase, not only a noun.

**Name rule.** Lower case; surrounding spaces and punctuation stripped; runs of whitespace one space; then a
plural last word is made singular *only when the singular also occurs* as a name in the file: ``ies`` -> ``y``,
``ches``/``shes``/``xes``/``sses``/``zes`` -> drop ``es``, else a final ``s`` dropped (not after ``s``, ``u``, ``i``).
So "Cars " and "car" merge, while "pants" stays "pants" unless "pant" is itself a name. Attributes get the first
two steps.

An object without a usable name (synset, attribute), a box that is not four numbers, or on an image whose ``url``
names no file is recorded in ``excluded`` with its reason, as is every object of a category with fewer than
``data.min_count`` objects. The image file is the ``url``'s file name, looked for in each image location and in its
``VG_100K/`` and ``VG_100K_2/`` sub-folders.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

from objalign.data.coco import CocoDataset, coco_from_doc, read_json_file
from objalign.data.images import MultiImages, open_image_source
from objalign.data.fetched import FetchedImages, url_faults
from objalign.data.lvis import url_file_name
from objalign.errors import ObjalignError

VG_FOLDERS = ("VG_100K", "VG_100K_2")
_PUNCT = re.compile(r"^[\W_]+|[\W_]+$")


def clean(text) -> str:
    """Lower case, whitespace collapsed, surrounding punctuation stripped (``" Red, "`` -> ``"red"``)."""
    return _PUNCT.sub("", " ".join(str(text).lower().split()))


def singular_candidates(word: str) -> list[str]:
    """Singular forms a plural ``word`` may have, by suffix (see the module's name rule)."""
    out = []
    if word.endswith("ies") and len(word) > 4:
        out.append(word[:-3] + "y")
    if word.endswith(("ches", "shes", "xes", "sses", "zes")):
        out.append(word[:-2])
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        out.append(word[:-1])
    return out


def normalise_names(raw: list[str]) -> dict[str, str]:
    """``{raw name: normalised name}`` by the module's name rule, the plural check made against all of ``raw``."""
    cleaned = {r: clean(r) for r in raw}
    known = set(cleaned.values())
    out = {}
    for r, c in cleaned.items():
        head, _, last = c.rpartition(" ")
        for cand in singular_candidates(last):
            single = f"{head} {cand}" if head else cand
            if single in known:
                c = single
                break
        out[r] = c
    return out


def _records(doc, path: Path, key: str) -> list:
    if not isinstance(doc, list):
        raise ObjalignError(f"{path}: expected a list of per-image records (Visual Genome's {path.name}); check "
                            "data.root holds the release's own files")
    return doc


def _images(root: Path) -> tuple[list, dict, str]:
    """COCO image records from ``image_data.json``, faults ``{id: (kind, reason)}`` and the file's fingerprint."""
    path = root / "image_data.json"
    doc, fp = read_json_file(path)
    images, faults = [], {}
    for i, im in enumerate(_records(doc, path, "images")):
        iid = im.get("image_id", im.get("id")) if isinstance(im, dict) else None
        if not isinstance(iid, int):
            raise ObjalignError(f"{path}: [{i}] = {str(im)[:80]} needs an integer 'image_id'; fix the file")
        name = url_file_name(im.get("url"), 1)
        if name is None:
            faults[iid] = ("image without url", f"image {iid} has url={im.get('url')!r}, which names no file")
            name = f"missing-{iid}"
        images.append({"id": iid, "file_name": name, "width": im.get("width"), "height": im.get("height"),
                       "url": im.get("url")})
    return images, faults, fp


def _label(obj: dict, mode: str) -> tuple[str | None, str]:
    """The raw category label of one object under ``mode``, or ``(None, why)``."""
    names = obj.get("names") or ([obj["name"]] if isinstance(obj.get("name"), str) else [])
    name = names[0] if names and isinstance(names[0], str) and clean(names[0]) else None
    if mode == "synset":
        syn = obj.get("synsets") or []
        return (syn[0], "") if syn and isinstance(syn[0], str) and syn[0].strip() else (None, "no synset")
    if name is None:
        return None, "no name"
    if mode == "attribute_name":
        attrs = [a for a in obj.get("attributes") or [] if isinstance(a, str) and clean(a)]
        return (f"{attrs[0]}\t{name}", "") if attrs else (None, "no attribute")
    return name, ""


def _box(obj: dict):
    box = [obj.get(k) for k in ("x", "y", "w", "h")]
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
    return [float(v) for v in box] if ok else None


def _display(labels: set, mode: str) -> dict:
    """``{raw label: category name}`` for ``mode`` (the name rule; ``synset``: its head word)."""
    if mode == "synset":
        return {s: " ".join(s.split(".")[0].replace("_", " ").split()) for s in labels}
    if mode == "attribute_name":
        names = normalise_names([lab.split("\t", 1)[1] for lab in labels])
        return {lab: f"{clean(lab.split(chr(9))[0])} {names[lab.split(chr(9), 1)[1]]}" for lab in labels}
    return normalise_names(sorted(labels))


def load_visual_genome(root: str | Path, images: str | Path | list, categories: str = "name", min_count: int = 1,
                       strict: bool = False, duplicate_names: str = "suffix", fetch: bool = False) -> CocoDataset:
    """Load Visual Genome's objects as a :class:`CocoDataset` (see the module notes).

    Parameters
    ----------
    root : path
        Folder with ``image_data.json`` and ``objects.json`` (``attributes.json`` for ``attribute_name``).
    images : path or list of paths
        Image folders (or zips); ``VG_100K/`` and ``VG_100K_2/`` inside them are searched too.
    categories : {"name", "synset", "attribute_name"}
    min_count : int
        Categories with fewer objects are left out (their objects recorded as ``rare category``).
    strict, duplicate_names, fetch
        As :func:`~objalign.data.coco.load_coco` (with ``fetch``, ``images`` is the one folder fetched images go to).

    Returns
    -------
    CocoDataset
        ``fingerprint`` covers the files read, ``categories`` and ``min_count``.
    """
    root = Path(root)
    imgs, faults, fp_images = _images(root)
    if fetch:
        faults = {**url_faults(imgs), **faults}
    name = "attributes.json" if categories == "attribute_name" or not (root / "objects.json").is_file() \
        else "objects.json"
    path = root / name
    doc, fp_objects = read_json_file(path)
    key = "attributes" if name == "attributes.json" else "objects"
    found, excluded = [], []
    for i, rec in enumerate(_records(doc, path, key)):
        if not isinstance(rec, dict) or not isinstance(rec.get("image_id", rec.get("id")), int):
            raise ObjalignError(f"{path}: [{i}] = {str(rec)[:80]} needs an integer 'image_id'; fix the file")
        iid = rec.get("image_id", rec.get("id"))
        for obj in rec.get(key) or rec.get("objects") or []:
            oid = obj.get("object_id", obj.get("id")) if isinstance(obj, dict) else None
            if not isinstance(oid, int):
                excluded.append({"annotation_id": oid, "image_id": iid, "kind": "bad object",
                                 "reason": f"object {str(obj)[:60]} has no integer object_id"})
                continue
            box = _box(obj)
            label, why = _label(obj, categories)
            if box is None or label is None:
                kind, why = ("bad box", f"x, y, w, h = {[obj.get(k) for k in 'xywh']}") if box is None \
                    else (f"object with {why}", f"object {oid} has {why} (data.categories: {categories})")
                excluded.append({"annotation_id": oid, "image_id": iid, "kind": kind, "reason": why})
                continue
            found.append((oid, iid, label, box))
    shown = _display({lab for _, _, lab, _ in found}, categories)
    counts = Counter(shown[lab] for _, _, lab, _ in found)
    kept_names = sorted(n for n, k in counts.items() if k >= min_count)
    ids = {n: i + 1 for i, n in enumerate(kept_names)}
    anns = []
    for oid, iid, lab, box in found:
        if shown[lab] not in ids:
            excluded.append({"annotation_id": oid, "image_id": iid, "kind": "rare category",
                             "reason": f"category {shown[lab]!r} has {counts[shown[lab]]} object(s), fewer than "
                                       f"data.min_count = {min_count}"})
            continue
        anns.append({"id": oid, "image_id": iid, "category_id": ids[shown[lab]], "bbox": box,
                     "area": box[2] * box[3], "iscrowd": 0})
    for im in imgs:  # a missing size is not fatal in VG: recorded for the image's objects
        if not isinstance(im["width"], int) or not isinstance(im["height"], int) or min(im["width"], im["height"]) <= 0:
            faults.setdefault(im["id"], ("bad image record", f"image {im['id']} has width={im['width']!r}, "
                                         f"height={im['height']!r}"))
            im["width"], im["height"] = 1, 1
    coco = {"images": imgs, "annotations": anns, "categories": [{"id": i, "name": n} for n, i in ids.items()]}
    blob = json.dumps([fp_images, fp_objects, categories, min_count]).encode()
    ds = coco_from_doc(coco, path, hashlib.sha256(blob).hexdigest()[:16], _first(images), strict=strict,
                       duplicate_names=duplicate_names, image_faults=faults)
    ds.excluded = excluded + ds.excluded
    ds.source = FetchedImages(_first(images)) if fetch else MultiImages(vg_sources(images))
    return ds


def _first(images) -> Path:
    return Path(images[0] if isinstance(images, (list, tuple)) else images)


def vg_sources(images) -> list:
    """Each image location, then its ``VG_100K/`` and ``VG_100K_2/`` sub-folders that exist."""
    out = []
    for loc in [Path(p) for p in (images if isinstance(images, (list, tuple)) else [images])]:
        out.append(open_image_source(loc))
        out += [open_image_source(loc / f) for f in VG_FOLDERS if (loc / f).is_dir()]
    return out
