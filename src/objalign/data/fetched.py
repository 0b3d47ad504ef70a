"""``data.images: fetch``: sample from the annotations first, then fetch only the sampled objects' images.

The reference experiment samples 3,000 objects from COCO 2017 train; they sit on about 3,000 of its 118,287 images
(~0.5 GB), where ``train2017.zip`` is 18 GiB. With ``data.images: fetch`` the dataset is opened with its image
folder at ``root/fetched/`` (``coco2017``: ``root/fetched/<split>2017/``), the sample stage draws the sample from the
annotations alone, and :func:`fetch_sampled` then fetches just the sampled images (see
:func:`objalign.data.download.images.fetch_files`: many at once over kept-alive connections, each written
atomically, files already there skipped so a rerun resumes, a file that does not decode fetched again once and then
recorded as skipped with its reason). The list of what was fetched and skipped goes to ``sample/fetched.json``; an
object whose image was skipped is recorded as skipped by the embed stage, as for an unreadable local file.

**Which URL.** An image record's ``coco_url`` (COCO, LVIS), else its ``url`` (Visual Genome's ``image_data.json``).
An image with neither is recorded when the dataset loads, its annotations left out of the sample (``image without
url`` in ``sample/excluded.json``). ``data.mirror`` replaces each URL's scheme and host and keeps its path.

**Where a file goes.** Its ``file_name`` under the fetch folder: a COCO-format file's own ``file_name``; LVIS:
``coco_url``'s last two parts (``train2017/000000397133.jpg``), so LVIS and COCO 2017 runs on one root share the
files; Visual Genome: the URL's file name.
"""

from __future__ import annotations

from pathlib import Path

from objalign.data.download.common import COCO2017_CHECKSUMS
from objalign.data.download.images import fetch_files, url_problem
from objalign.data.images import FolderImages

#: Folder under ``data.root`` that fetched images go to.
FETCH_FOLDER = "fetched"
#: Image record fields holding the URL, in the order tried.
URL_FIELDS = ("coco_url", "url")
#: Host -> (mean bytes of one image, where the mean comes from): the dry run's estimate before any image is fetched.
KNOWN_MEAN_BYTES = {"images.cocodataset.org": (COCO2017_CHECKSUMS["train2017.zip"][0] // 118_287,
                                               "train2017.zip's size over its 118,287 images")}


def image_url(record: dict) -> str | None:
    """The first of :data:`URL_FIELDS` that holds an http(s) URL, or ``None``."""
    for key in URL_FIELDS:
        if url_problem(record.get(key)) is None:
            return record[key].strip()
    return None


def url_faults(images: list) -> dict:
    """``{image id: (kind, reason)}`` of the image records that cannot be fetched (their annotations are left out):
    no URL, or a ``file_name`` another image shares with another URL (one file cannot hold two pictures)."""
    faults, urls_of = {}, {}
    for im in images:
        if not isinstance(im, dict) or not isinstance(im.get("id"), int):
            continue
        url = image_url(im)
        if url is None:
            faults[im["id"]] = ("image without url", f"image {im['id']} has no http(s) URL in coco_url or url "
                                f"(coco_url={im.get('coco_url')!r}, url={im.get('url')!r}), so it cannot be fetched")
        elif isinstance(im.get("file_name"), str):
            urls_of.setdefault(im["file_name"], {}).setdefault(url, []).append(im["id"])
    for name, by_url in urls_of.items():
        if len(by_url) > 1:
            ids = sorted(i for group in by_url.values() for i in group)
            for i in ids:
                faults[i] = ("file_name shared by URLs", f"images {', '.join(map(str, ids[:4]))} share file_name "
                             f"{name!r} with {len(by_url)} different URLs, so one fetched file cannot stand for them")
    return faults


class FetchedImages(FolderImages):
    """The fetch folder as an image source: a file that is not there was not fetched (its reason is in
    ``sample/fetched.json``)."""

    def load(self, file_name: str):
        path = self.path(file_name)
        if not path.is_file():
            raise FileNotFoundError(f"image {file_name!r} was not fetched into {self.root} (sample/fetched.json "
                                    "says why); rerun to try again")
        return super().load(file_name)


def unavailable_key(out: str | Path) -> str | None:
    """A digest of the sampled images the last fetch could not get (``sample/fetched.json``), or ``None`` when
    there are none (or the images are not fetched). The crop stage's key and the vision stores' keys include it,
    so a rerun that fetches them recomputes what was computed without them."""
    import hashlib
    import json

    path = Path(out) / "sample" / "fetched.json"
    if not path.is_file():
        return None
    skipped = sorted(r["file"] for r in json.loads(path.read_text()).get("skipped", []))
    return hashlib.sha256("\n".join(skipped).encode()).hexdigest()[:16] if skipped else None


def fetch_dest(root: str | Path, kind: str, split: str) -> Path:
    """The fetch folder of a dataset: ``root/fetched`` (``coco2017``: ``root/fetched/<split>2017``)."""
    dest = Path(root) / FETCH_FOLDER
    return dest / f"{split}2017" if kind == "coco2017" else dest


def sampled_urls(ds, file_names) -> dict[str, str]:
    """``{file_name: URL}`` of the sampled images (``file_names``, from the sample's ``file_name`` column)."""
    wanted = set(file_names)
    return {im["file_name"]: image_url(im) for im in ds.images.values() if im["file_name"] in wanted}


def fetch_sampled(ds, file_names, mirror: str | None = None, workers: int = 16, progress: bool = True) -> dict:
    """Fetch the sampled images of ``ds`` (opened with ``data.images: fetch``) into its fetch folder.

    Returns
    -------
    dict
        :func:`~objalign.data.download.images.fetch_files`'s summary, with ``dest`` and ``mirror``.
    """
    res = fetch_files(sampled_urls(ds, file_names), ds.image_root, mirror=mirror, workers=workers, progress=progress)
    return {"dest": str(ds.image_root), "mirror": mirror, **res}


def fetch_estimate(ds, file_names) -> dict:
    """What fetching the sample would take, touching no network: ``n_images``, ``n_present``, ``n_missing`` and
    ``bytes`` (an estimate, ``None`` when nothing tells the size) with ``how`` (where the estimate comes from)."""
    urls = sampled_urls(ds, file_names)
    present = [p for p in (ds.image_root / f for f in urls) if p.is_file()]
    missing = len(urls) - len(present)
    out = {"n_images": len(urls), "n_present": len(present), "n_missing": missing, "bytes": None, "how": ""}
    if not missing:
        out["bytes"] = 0
    elif present:
        mean = sum(p.stat().st_size for p in present) / len(present)
        out["bytes"], out["how"] = int(mean * missing), f"the mean of the {len(present)} already fetched"
    else:
        from urllib.parse import urlsplit

        hosts = {urlsplit(u).hostname for u in urls.values()}
        if len(hosts) == 1 and (known := KNOWN_MEAN_BYTES.get(hosts.pop())):
            out["bytes"], out["how"] = known[0] * missing, known[1]
    return out
