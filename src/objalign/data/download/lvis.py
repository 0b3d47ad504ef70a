"""The LVIS v1 annotation archives (``lvis_v1_train.json.zip``, ``lvis_v1_val.json.zip``), fetched with the same
resumable, verified machinery as COCO 2017 (see :mod:`objalign.data.download`) into ``root/annotations/``.

LVIS publishes no checksums, so by default an archive is verified by the server's size and the zip's own CRC-32s;
pass ``checksums`` (archive name -> ``(size, md5)``) to pin known values. LVIS v1 uses COCO 2017's images: fetch
them with :func:`~objalign.data.download.download_coco2017` (val needs both train2017 and val2017).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from objalign.data.download.archives import _extract, _remove_archive
from objalign.data.download.coco2017 import _ensure_archive, _parse_checksums, _parse_mirror
from objalign.data.download.common import DownloadError, _Archive, _Options

#: Base URL of the official LVIS archives; ``mirror`` replaces it (it must serve ``LVIS/<archive>``).
LVIS_BASE_URL = "https://dl.fbaipublicfiles.com"
#: Rough archive sizes for the dry run (LVIS publishes none; the server's Content-Length is what is checked).
LVIS_ARCHIVE_SIZES = {"train": "a few hundred MiB", "val": "tens of MiB"}


def lvis_archive(split: str) -> _Archive:
    """The archive of ``split`` (``train`` or ``val``)."""
    if split not in ("train", "val"):
        raise DownloadError(f"data.split = {split!r}: LVIS v1 has 'train' and 'val' annotations; pick one")
    name = f"lvis_v1_{split}.json.zip"
    return _Archive(name, f"LVIS/{name}", f"lvis_v1_{split}.json")


def lvis_annotation_path(root: str | os.PathLike, split: str) -> Path:
    """Where :func:`download_lvis` puts ``split``'s annotation file: ``root/annotations/lvis_v1_<split>.json``."""
    return Path(root) / "annotations" / f"lvis_v1_{split}.json"


def download_lvis(root: str | os.PathLike, split: str = "val", mirror: str | None = None, progress: bool = True,
                  *, checksums: Mapping | None = None, keep_archives: bool = True, retries: int = 3,
                  timeout: float = 60.0) -> Path:
    """Download (or find) LVIS v1's ``split`` annotations as ``root/annotations/lvis_v1_<split>.json``.

    Parameters
    ----------
    root : path
        Dataset folder (the archive goes to ``root/downloads/``).
    split : {"train", "val"}
    mirror : str or None
        Base URL replacing :data:`LVIS_BASE_URL`; it must serve ``<mirror>/LVIS/lvis_v1_<split>.json.zip``.
    progress, keep_archives, retries, timeout
        As :func:`~objalign.data.download.download_coco2017`.
    checksums : mapping or None
        Archive name -> ``(size or None, md5 or None)``; None or ``{}``: the server's size and the zip's CRCs only.

    Returns
    -------
    Path
        The annotation file; an existing one is used as is (no request).

    Raises
    ------
    DownloadError
        As :func:`~objalign.data.download.download_coco2017`, or an archive that does not hold the file.
    """

    spec = lvis_archive(split)
    target = lvis_annotation_path(root, split)
    if target.is_file():
        return target
    base = LVIS_BASE_URL if mirror is None else _parse_mirror(mirror)
    root = Path(root).expanduser()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {target.parent}: {exc.strerror}; pass a writable data.root") from exc
    opts = _Options(base_url=base, checksums=_parse_checksums(checksums or {}), progress=progress, retries=retries,
                    timeout=float(timeout))
    archive = _ensure_archive(root, spec, opts)
    _extract(archive, target.parent, spec, opts)
    if not keep_archives:
        _remove_archive(archive)
    if not target.is_file():
        raise DownloadError(f"{archive} did not provide {target.name}; it is not LVIS v1's {split} annotation "
                            "archive — check the mirror or place the file there yourself")
    return target
