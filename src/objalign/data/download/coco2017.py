"""The COCO 2017 plan: which archives a split needs, where they go under ``root``, and what is already there
(see :mod:`objalign.data.download`)."""

from __future__ import annotations

import os
import shutil
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from objalign.data.download.archives import _extract, _images_ready, _move_aside, _remove_archive, _verify
from objalign.data.download.common import (
    COCO2017_CHECKSUMS,
    DEFAULT_BASE_URL,
    REPACKED_HINT,
    DownloadError,
    _Archive,
    _Corrupt,
    _Options,
    _part_meta_path,
    _read_json,
    _record_path,
    _write_json,
)
from objalign.data.download.fetch import _fetch

_ANNOTATIONS = _Archive("annotations_trainval2017.zip", "annotations/annotations_trainval2017.zip", "annotations")
_IMAGES = {
    "train": _Archive("train2017.zip", "zips/train2017.zip", "train2017"),
    "val": _Archive("val2017.zip", "zips/val2017.zip", "val2017"),
}
_SPLITS = {"train": ("train",), "val": ("val",), "all": ("train", "val")}


def download_coco2017(
    root: str | os.PathLike,
    split: str = "train",
    annotations_only: bool = False,
    mirror: str | None = None,
    progress: bool = True,
    extract: bool = True,
    *,
    checksums: Mapping[str, tuple[int | None, str | None]] | None = None,
    keep_archives: bool = True,
    retries: int = 3,
    timeout: float = 60.0,
) -> dict:
    """Download (or find) COCO 2017 annotations and images under ``root``, laid out as COCO ships them.

    Parameters
    ----------
    root : str or path-like
        Dataset folder; created if missing. A copy already laid out as COCO ships it
        (``root/annotations/instances_train2017.json``, ``root/train2017/*.jpg``) is used as is.
    split : {"train", "val", "all"}
        Which image split(s); "all" is train and val. The annotations archive holds both splits.
    annotations_only : bool
        Fetch only ``annotations_trainval2017.zip`` (about 241 MiB), no images.
    mirror : str or None
        Base URL replacing ``http://images.cocodataset.org``; it must serve the official paths
        (``<mirror>/zips/train2017.zip``, ``<mirror>/annotations/annotations_trainval2017.zip``).
    progress : bool
        Show tqdm progress bars for transfers, hashing and extraction.
    extract : bool
        Extract image archives into ``root/<split>2017/``. With False the image archives are only downloaded
        and verified, for reading images straight from the zip (see :class:`objalign.data.zipimages.ZipImageReader`);
        annotations are always extracted, since every stage reads the json.
    checksums : mapping or None
        Archive name -> ``(size in bytes or None, md5 hex or None)`` to verify against. None uses
        :data:`COCO2017_CHECKSUMS` (the official archives); ``{}`` verifies only against the server's size
        and the zip's own CRCs (for a mirror serving repacked archives).
    keep_archives : bool
        Keep the ``.zip`` files in ``root/downloads`` after extraction (default). False deletes each one once
        its folder is in place (saves 19 GiB for train).
    retries : int
        How many times a dropped or failed connection is retried (each retry resumes) before giving up.
    timeout : float
        Seconds a connection may stall before it counts as dropped.

    Returns
    -------
    dict
        ``{"root": Path, "annotations": {split: Path to instances_<split>2017.json},
        "images": {split: Path}, "images_from_zip": bool}``. ``images`` maps each split to its image folder
        (``extract=True``) or to its verified zip archive (``extract=False``); it is empty with
        ``annotations_only=True``. ``images_from_zip`` is ``not extract``.

    Raises
    ------
    DownloadError
        Bad arguments, an HTTP error (404 ...), an HTML page instead of a zip, a full disk, an archive failing
        its check, or a connection that keeps failing. A partial download is kept for the next run to resume.
    """
    splits = _parse_split(split)
    base_url = _parse_mirror(mirror)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise DownloadError(f"retries={retries!r} is not a whole number >= 0; pass e.g. retries=3")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise DownloadError(f"timeout={timeout!r} is not a positive number of seconds; pass e.g. timeout=60")
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise DownloadError(f"dataset root {root} is a file, not a folder; pass a folder path")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create dataset root {root}: {exc.strerror}; pass a writable folder") from exc
    opts = _Options(
        base_url=base_url,
        checksums=_parse_checksums(checksums),
        progress=progress,
        retries=retries,
        timeout=float(timeout),
    )

    for spec in (_ANNOTATIONS, *_IMAGES.values()):  # temporary folders left by a crash in an earlier run
        for stale in root.glob(f".{spec.name.removesuffix('.zip')}.extract-*"):
            shutil.rmtree(stale, ignore_errors=True)

    annotations = {s: root / "annotations" / f"instances_{s}2017.json" for s in splits}
    if not all(p.is_file() for p in annotations.values()):
        archive = _ensure_archive(root, _ANNOTATIONS, opts)
        _extract(archive, root, _ANNOTATIONS, opts)
        if not keep_archives:
            _remove_archive(archive)
        missing = [p for p in annotations.values() if not p.is_file()]
        if missing:
            raise DownloadError(
                f"{archive.name} did not provide {missing[0].relative_to(root)}; it is not the official "
                f"COCO 2017 annotations archive — check the mirror or place the file there yourself"
            )

    images: dict[str, Path] = {}
    if not annotations_only:
        for s in splits:
            spec = _IMAGES[s]
            folder = root / spec.folder
            if not extract:
                images[s] = _ensure_archive(root, spec, opts)
                continue
            if not _images_ready(folder):
                archive = _ensure_archive(root, spec, opts)
                _extract(archive, root, spec, opts)
                if not keep_archives:
                    _remove_archive(archive)
            images[s] = folder
    return {"root": root, "annotations": annotations, "images": images, "images_from_zip": not extract}


# --------------------------------------------------------------------------------------------- arguments


def _parse_split(split: str) -> tuple[str, ...]:
    if split not in _SPLITS:
        raise DownloadError(f"split={split!r} is not one of 'train', 'val', 'all'; pick one of those")
    return _SPLITS[split]


def _parse_checksums(checksums) -> dict[str, tuple[int | None, str | None]]:
    if checksums is None:
        return dict(COCO2017_CHECKSUMS)
    if not isinstance(checksums, Mapping):
        raise DownloadError(
            f"checksums={checksums!r} is not a mapping; pass {{archive name: (size or None, md5 or None)}} or None"
        )
    table = {}
    for name, value in checksums.items():
        ok = isinstance(value, tuple | list) and len(value) == 2
        size, md5 = value if ok else (None, None)
        ok = ok and (size is None or (isinstance(size, int) and size >= 0))
        ok = ok and (md5 is None or (isinstance(md5, str) and len(md5) == 32))
        if not ok:
            raise DownloadError(
                f"checksums[{name!r}]={value!r} is not (size in bytes or None, 32-character md5 hex or None); "
                f"fix that entry"
            )
        table[str(name)] = (size, md5.lower() if md5 else None)
    return table


def _parse_mirror(mirror: str | None) -> str:
    if mirror is None:
        return DEFAULT_BASE_URL
    parsed = urllib.parse.urlparse(str(mirror))
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise DownloadError(
            f"mirror={mirror!r} is not an http(s) base URL; pass one like 'https://host/coco' that serves "
            f"zips/train2017.zip and annotations/annotations_trainval2017.zip"
        )
    return str(mirror).rstrip("/")


# --------------------------------------------------------------------------------------------- archives


def _ensure_archive(root: Path, spec: _Archive, opts: _Options) -> Path:
    """Return the path of a verified copy of ``spec`` in ``root/downloads``, downloading it if needed."""
    folder = root / "downloads"
    dest = folder / spec.name
    record = _record_path(dest)
    size, md5 = opts.checksums.get(spec.name, (None, None))
    url = f"{opts.base_url}/{spec.url_path}"

    if dest.is_file():
        done = _read_json(record)
        if done is not None and done.get("size") == dest.stat().st_size and (md5 is None or done.get("md5") == md5):
            return dest  # verified before: no request
        # An archive with no record (put there by the user, or a crash right after the rename): check it offline.
        try:
            info = _verify(dest, size, md5, None, opts.progress)
        except _Corrupt as exc:
            aside = _move_aside(dest)
            raise DownloadError(
                f"{dest} failed its check ({exc}); moved it to {aside} — rerun to download it again"
            ) from exc
        _write_json(record, {**info, "url": None})
        return dest

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {folder}: {exc.strerror}; pass a writable dataset root") from exc
    part = dest.with_name(dest.name + ".part")
    total, digest = _fetch(url, part, size, opts)
    try:
        info = _verify(part, total, md5, digest, opts.progress, expected_size=size)
    except _Corrupt as exc:
        aside = _move_aside(part, dest)
        mirrored = md5 and opts.base_url != DEFAULT_BASE_URL
        hint = f", or pass {REPACKED_HINT} if it serves repacked copies" if mirrored else ""
        raise DownloadError(
            f"{spec.name} from {url} failed its check ({exc}); moved it to {aside} — rerun to download it "
            f"again, or use another mirror{hint}"
        ) from exc
    os.replace(part, dest)
    _write_json(record, {**info, "url": url})
    _part_meta_path(part).unlink(missing_ok=True)
    return dest
