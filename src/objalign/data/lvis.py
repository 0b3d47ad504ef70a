"""Reading LVIS v1 annotations (``data.kind: lvis``).

LVIS v1 is COCO-format with four differences objalign handles here:

* **Images carry ``coco_url``, not ``file_name``.** LVIS v1 val draws on both COCO 2017 train and val images, so
  the file is found by the URL: when the image location (``data.images``) holds COCO's ``train2017/`` or
  ``val2017/`` folders (or ``train2017.zip`` / ``val2017.zip``, there or in ``downloads/``), the last two parts of
  ``coco_url`` name the file (``val2017/000000397133.jpg``); otherwise the location is a single folder of images
  and the URL's file name alone does (``000000397133.jpg``). An image with a ``file_name`` and no ``coco_url`` keeps
  its ``file_name``; an image with neither is recorded, and its annotations skipped, as ``image without coco_url``.
* **Categories carry ``frequency``** (``r``/``c``/``f``: rare, 1-10 training images; common, 11-100; frequent,
  more), ``synonyms``, ``def`` and ``synset``: kept in :attr:`CocoDataset.category_info` (frequency as the word
  ``rare``/``common``/``frequent``, ``def`` as ``definition``), so the sample stage carries the frequency group
  into the results and prompt templates can use ``{definition}`` and ``{synonym}``.
* **Names are written ``bow_(weapon)``.** :func:`lvis_words` turns them into words by one rule: each underscore
  becomes a space, runs of spaces collapse, and the parenthesised sense stays (``bow (weapon)``,
  ``bow (decorative ribbons)``), so names that differ only in their sense stay distinct. Synonyms get the same rule.
* **Images carry ``neg_category_ids`` and ``not_exhaustive_category_ids``**: kept on the image records, and so
  in the sample stage's instance table.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from objalign.data.coco import CocoDataset, coco_from_doc, read_json_file
from objalign.data.fetched import FetchedImages, url_faults
from objalign.data.images import FolderImages, MultiImages, ZipImages, open_image_source
from objalign.errors import ObjalignError

#: LVIS's frequency letters -> the group names objalign reports.
FREQUENCY_GROUPS = {"r": "rare", "c": "common", "f": "frequent"}
#: COCO 2017's image folders, named by the second-to-last part of an LVIS ``coco_url``.
COCO_SPLIT_FOLDERS = ("train2017", "val2017")
_IMAGE_LISTS = ("neg_category_ids", "not_exhaustive_category_ids")


def lvis_words(name: str) -> str:
    """An LVIS name in words: underscores as spaces, whitespace collapsed, the parenthesised sense kept.

    ``"bow_(weapon)"`` -> ``"bow (weapon)"``; ``"baby_buggy"`` -> ``"baby buggy"``.
    """
    return " ".join(str(name).replace("_", " ").split())


def split_layout(locations: list[Path]) -> bool:
    """Whether the image locations hold COCO's split folders (or their zips), so that ``coco_url``'s last two
    parts name the file; otherwise each location is one folder of images named by the URL's last part."""
    for loc in locations:
        for split in COCO_SPLIT_FOLDERS:
            zips = (loc / f"{split}.zip", loc / "downloads" / f"{split}.zip")
            if (loc / split).is_dir() or any(z.is_file() for z in zips):
                return True
    return False


def split_sources(locations: list[Path]) -> list:
    """The image sources of the split layout: each location as a folder, then every COCO split zip found in it
    (or in its ``downloads/``), whose members are ``train2017/NAME.jpg`` as the file names are."""
    sources: list = []
    for loc in locations:
        if loc.is_dir():
            sources.append(FolderImages(loc))
        for split in COCO_SPLIT_FOLDERS:
            for z in (loc / f"{split}.zip", loc / "downloads" / f"{split}.zip"):
                if z.is_file() and not (loc / split).is_dir():
                    sources.append(ZipImages(z))
                    break
    return sources


def url_file_name(url, parts: int) -> str | None:
    """The last ``parts`` path parts of an image URL (``val2017/000000397133.jpg``), or ``None`` if it has fewer."""
    if not isinstance(url, str) or not url.strip():
        return None
    bits = [b for b in urlparse(url).path.split("/") if b]
    return "/".join(bits[-parts:]) if len(bits) >= parts else None


def _check_categories(doc: dict, path: Path) -> dict:
    """``{id: info}`` of LVIS categories; one line for a category that breaks LVIS's schema."""
    info = {}
    for i, c in enumerate(doc.get("categories") or []):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            continue  # the COCO check names it
        freq = c.get("frequency")
        if freq not in FREQUENCY_GROUPS:
            raise ObjalignError(f"{path}: categories[{i}] (id {c['id']}) has frequency={freq!r}; expected 'r', 'c' "
                                "or 'f' (an LVIS v1 file; use data.kind: coco for a file without frequency groups)")
        syn = c.get("synonyms", [])
        if not isinstance(syn, list) or not all(isinstance(x, str) for x in syn):
            raise ObjalignError(f"{path}: categories[{i}] (id {c['id']}) has synonyms={str(syn)[:60]}; expected a "
                                "list of strings; fix the file")
        definition = c.get("def", "")
        if not isinstance(definition, str):
            raise ObjalignError(f"{path}: categories[{i}] (id {c['id']}) has def={str(definition)[:60]}; expected a "
                                "string; fix the file")
        words = list(dict.fromkeys(lvis_words(x) for x in [c["name"], *syn] if lvis_words(x)))
        info[c["id"]] = {"frequency": FREQUENCY_GROUPS[freq], "synonyms": words, "definition": definition.strip(),
                         "synset": str(c.get("synset", ""))}
    return info


def _image_names(doc: dict, split: bool) -> dict:
    """Give each image record a ``file_name`` from its ``coco_url``; returns ``{image id: (kind, reason)}`` of the
    images that cannot be read, whose annotations are then skipped."""
    faults = {}
    for im in doc.get("images") or []:
        if not isinstance(im, dict) or not isinstance(im.get("id"), int):
            continue  # the COCO check names it
        name = url_file_name(im.get("coco_url"), 2 if split else 1)
        if name is None and isinstance(im.get("file_name"), str) and "coco_url" not in im:
            name = im["file_name"]
        if name is None:
            faults[im["id"]] = ("image without coco_url", f"image {im['id']} has coco_url={im.get('coco_url')!r}, "
                                "which names no file")
            name = f"missing-{im['id']}"
        im["file_name"] = name
        for key in _IMAGE_LISTS:
            ids = im.get(key, [])
            if not isinstance(ids, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in ids):
                faults.setdefault(im["id"], ("bad image record", f"image {im['id']} has {key}={str(ids)[:40]}; "
                                             "expected a list of category ids"))
                im[key] = []
            else:
                im.setdefault(key, [])
    return faults


def load_lvis(annotations: str | Path, images: str | Path | list, strict: bool = False,
              duplicate_names: str = "suffix", fetch: bool = False) -> CocoDataset:
    """Load an LVIS v1 annotation file (see the module notes for what differs from COCO).

    Parameters
    ----------
    annotations : path
        ``lvis_v1_val.json`` or ``lvis_v1_train.json``.
    images : path or list of paths
        The folder that holds COCO's ``train2017/`` and ``val2017/`` (or their zips), or a folder of images.
    strict, duplicate_names, fetch
        As :func:`~objalign.data.coco.load_coco`; with ``fetch`` the file names are ``coco_url``'s last two parts
        (``train2017/NAME.jpg``) whatever ``images`` holds.

    Returns
    -------
    CocoDataset
        Category names in words (:func:`lvis_words`), ``category_info`` filled, image records with ``file_name``
        set from ``coco_url`` and both LVIS id lists.

    Raises
    ------
    ObjalignError
        One line for a file that breaks the COCO or LVIS schema.
    """
    path = Path(annotations)
    doc, fingerprint = read_json_file(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("categories"), list):
        raise ObjalignError(f"{path}: not an LVIS file (expected a JSON object with 'images', 'annotations' and "
                            "'categories'); check data.annotations")
    locations = [Path(p) for p in (images if isinstance(images, (list, tuple)) else [images])]
    split = fetch or split_layout(locations)
    info = _check_categories(doc, path)
    faults = _image_names(doc, split)
    if fetch:
        faults = {**url_faults(doc.get("images") or []), **faults}
    for c in doc["categories"]:
        if isinstance(c, dict) and isinstance(c.get("name"), str):
            c["name"] = lvis_words(c["name"])
    ds = coco_from_doc(doc, path, fingerprint, locations[0], strict=strict, duplicate_names=duplicate_names,
                       image_faults=faults)
    ds.category_info = {cid: info[cid] for cid in ds.categories if cid in info}
    if fetch:
        ds.source = FetchedImages(locations[0])
    elif split:
        ds.source = MultiImages(split_sources(locations))
    elif len(locations) > 1 or locations[0].suffix.lower() == ".zip":
        ds.source = MultiImages([open_image_source(p) for p in locations])
    return ds
