"""What every part of the COCO 2017 download shares: the public constants, the error type, the internal
exceptions and options, and the small json records kept next to archives and partial files."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from objalign.errors import ObjalignError

#: How to accept a mirror's repacked archives (checked by the server's size and the zips' CRCs only).
REPACKED_HINT = "--no-official-checksums (data.official_checksums: false in a config)"

#: Base URL of the official COCO archives; ``mirror`` replaces it.
DEFAULT_BASE_URL = "http://images.cocodataset.org"

#: Name of the completion marker written inside an extracted folder before it is moved into place.
MARKER = ".objalign-complete.json"

#: Archive name -> (size in bytes, md5 hex) of the official COCO 2017 archives. These are the values that
#: the COCO download scripts of PaddleDetection, NVIDIA DeepLearningExamples and others check (md5), and the
#: Content-Length that images.cocodataset.org serves (size); COCO itself publishes no checksums.
COCO2017_CHECKSUMS: dict[str, tuple[int, str]] = {
    "train2017.zip": (19_336_861_798, "cced6f7f71b7629ddf16f17bbcfab6b2"),
    "val2017.zip": (815_585_330, "442b8da7639aecaf257c1dceb8ba8c80"),
    "annotations_trainval2017.zip": (252_907_541, "f4bbac642086de4f52a3fdda2de5fa2c"),
}

_CHUNK = 1 << 20  # bytes per read from the network


class DownloadError(ObjalignError):
    """A download or archive problem the user can fix; the message is one line naming the URL/file and the fix."""


@dataclass(frozen=True)
class _Archive:
    name: str  # file name, e.g. "train2017.zip"
    url_path: str  # path under the base URL
    folder: str  # top-level folder it extracts to


@dataclass(frozen=True)
class _Options:
    base_url: str
    checksums: Mapping[str, tuple[int | None, str | None]]
    progress: bool
    retries: int
    timeout: float


class _Transient(Exception):
    """A network failure worth retrying (dropped connection, timeout, 5xx); resuming is possible."""


class _Restart(Exception):
    """The partial file cannot be continued; it was removed and the transfer starts again from zero."""


class _Corrupt(Exception):
    """The archive failed verification; the message says how."""


# --------------------------------------------------------------------------------------------- small files


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_json(path: Path, value: dict) -> None:
    """Write ``value`` atomically (temporary file, then :func:`os.replace`)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(value, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified.json")


def _part_meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _gib(n: int) -> str:
    """A byte count for messages: ``"18.01 GiB"``, ``"512.0 KiB"``, ``"100 B"``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}" if unit == "GiB" else f"{n / scale:.1f} {unit}"
    return f"{n} B"
