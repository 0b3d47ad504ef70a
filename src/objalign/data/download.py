"""Download COCO 2017: resumable, verified, atomically extracted, skipped when already there.

:func:`download_coco2017` fetches the official archives (or a mirror's copies) with the standard library
only (:mod:`urllib`), so downloading adds no dependency. The layout it produces is the one COCO ships::

    root/
      annotations/instances_train2017.json   (and the other json files of annotations_trainval2017.zip)
      annotations/instances_val2017.json
      train2017/000000000009.jpg ...
      val2017/000000000139.jpg ...
      downloads/train2017.zip                (archives; kept unless ``keep_archives=False``)
      downloads/train2017.zip.verified.json  (size and md5 recorded after verification)

Guarantees
----------
* **Resume.** Bytes arrive in ``downloads/<archive>.part``; an interrupted transfer (dropped connection,
  Ctrl-C, crash) continues from the bytes already there with an HTTP ``Range`` request (and ``If-Range`` on
  the server's ETag, so a changed remote file restarts from zero). A server that ignores ``Range`` (status 200)
  restarts from zero; a 416 answer means the part is already whole (or bigger than the file: restart).
  Dropped connections are retried ``retries`` times, each retry resuming.
* **Verify.** The size must equal the server's ``Content-Length`` / ``Content-Range`` total; archives named in
  the checksum table (the official md5 and size by default) must match it; and every archive must be a
  readable zip whose central directory fits in the file and whose sample of members passes its CRC-32
  (extraction then checks the CRC of every member). An archive that fails is **moved aside** to
  ``downloads/<archive>.corrupt`` (replacing an older one; delete it once inspected) and the error says so,
  so the next run downloads it afresh.
* **Atomic extraction.** An archive is extracted into a temporary folder next to the target
  (``root/.<archive>.extract-*``); a completion marker (:data:`MARKER`, recording the archive's name, size and
  md5) is written inside it and only then is the folder moved into place with :func:`os.replace`. A crash
  leaves a temporary folder (removed by the next run) and never a target folder that looks complete.
* **Skip.** Annotation files that exist, an image folder that holds a marker or any ``*.jpg`` (a local copy
  laid out as COCO ships it is used as is), and an archive with a matching ``.verified.json`` record are not
  fetched again: a second run makes no network request for finished parts.
* **Clear errors.** A 404, an HTML page instead of a zip, a full disk, a failed check or a refused
  connection raise :class:`DownloadError` (a :class:`ValueError`) with one line naming the URL or file and the
  fix. Nothing already downloaded is lost: the ``.part`` file stays for the next run to resume.

Two processes downloading into the same ``root`` at the same time are not supported.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import random
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from objalign import __version__
from objalign.errors import ObjalignError

__all__ = [
    "COCO2017_CHECKSUMS",
    "DEFAULT_BASE_URL",
    "MARKER",
    "DownloadError",
    "download_coco2017",
    "verify_archive",
]

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
_RETRY_BACKOFF_S = 0.5  # first pause between retries; doubles each time
_CRC_SAMPLE_MEMBERS = 16  # members whose CRC is checked when verifying an archive (besides first and last)
_CRC_SAMPLE_BYTES = 32 << 20  # ... within this many compressed bytes


class DownloadError(ObjalignError):
    """A download or archive problem the user can fix; the message is one line naming the URL/file and the fix."""


@dataclass(frozen=True)
class _Archive:
    name: str  # file name, e.g. "train2017.zip"
    url_path: str  # path under the base URL
    folder: str  # top-level folder it extracts to


_ANNOTATIONS = _Archive("annotations_trainval2017.zip", "annotations/annotations_trainval2017.zip", "annotations")
_IMAGES = {
    "train": _Archive("train2017.zip", "zips/train2017.zip", "train2017"),
    "val": _Archive("val2017.zip", "zips/val2017.zip", "val2017"),
}
_SPLITS = {"train": ("train",), "val": ("val",), "all": ("train", "val")}


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


# --------------------------------------------------------------------------------------------- public API


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


def verify_archive(
    path: str | os.PathLike,
    size: int | None = None,
    md5: str | None = None,
    *,
    progress: bool = False,
) -> dict:
    """Check a zip archive: its size, its md5 and its integrity (central directory and a CRC sample).

    Parameters
    ----------
    path : str or path-like
        The archive.
    size : int or None
        Expected size in bytes, or None to skip the size check.
    md5 : str or None
        Expected md5 hex digest, or None to skip hashing (the slow part: about 40 s for train2017.zip).
    progress : bool
        Show a progress bar while hashing.

    Returns
    -------
    dict
        ``{"name", "size", "md5", "members"}`` of the verified archive (``md5`` is None when not checked).

    Raises
    ------
    DownloadError
        The file is missing or fails a check (the file is left where it is).
    """
    path = Path(path)
    if not path.is_file():
        raise DownloadError(f"archive {path} does not exist; pass the path of a downloaded .zip file")
    try:
        return _verify(path, size, md5, None, progress)
    except _Corrupt as exc:
        raise DownloadError(f"archive {path} failed its check: {exc}; download it again") from exc


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


def _verify(
    path: Path,
    size: int | None,
    md5: str | None,
    digest: str | None,
    progress: bool,
    *,
    expected_size: int | None = None,
) -> dict:
    """Size, md5 and zip-integrity checks; raise :class:`_Corrupt` with the reason on failure."""
    actual = path.stat().st_size
    for want in (size, expected_size):
        if want is not None and actual != want:
            raise _Corrupt(f"{actual} bytes, expected {want}")
    if md5 is not None:
        if digest is None:
            digest = _md5_file(path, progress)
        if digest != md5.lower():
            raise _Corrupt(f"md5 {digest}, expected {md5.lower()}")
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            raise _Corrupt("not a zip archive (it does not start with the zip magic bytes PK\\x03\\x04)")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if not infos:
                raise _Corrupt("the zip archive is empty")
            for info in infos:
                if info.header_offset + info.compress_size > actual:
                    raise _Corrupt(f"member {info.filename} lies past the end of the file (truncated)")
            for info in _crc_sample(infos):
                with zf.open(info) as member:  # reading to the end checks the member's CRC-32
                    while member.read(_CHUNK):
                        pass
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise _Corrupt(f"unreadable zip: {exc}") from exc
    return {"name": path.name.removesuffix(".part"), "size": actual, "md5": digest, "members": len(infos)}


def _crc_sample(infos: list[zipfile.ZipInfo]) -> list[zipfile.ZipInfo]:
    """First and last member plus a few random ones, within a byte budget: a cheap ``testzip``."""
    files = [i for i in infos if not i.is_dir()]
    if not files:
        return []
    picked = {id(files[0]): files[0], id(files[-1]): files[-1]}
    budget = _CRC_SAMPLE_BYTES - sum(i.compress_size for i in picked.values())
    rng = random.Random(len(files))
    for info in rng.sample(files, min(len(files), 4 * _CRC_SAMPLE_MEMBERS)):
        if len(picked) >= _CRC_SAMPLE_MEMBERS + 2:
            break
        if id(info) not in picked and info.compress_size <= budget:
            picked[id(info)] = info
            budget -= info.compress_size
    return list(picked.values())


def _md5_file(path: Path, progress: bool) -> str:
    from tqdm.auto import tqdm

    h = hashlib.md5()
    with open(path, "rb") as fh, tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024,
        desc=f"md5 {path.name}", disable=not progress, leave=False,
    ) as bar:
        while block := fh.read(_CHUNK * 8):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def _move_aside(path: Path, dest: Path | None = None) -> Path:
    """Rename a corrupt archive to ``<dest>.corrupt`` (replacing an older one) and drop its records."""
    dest = dest or path
    aside = dest.with_name(dest.name + ".corrupt")
    os.replace(path, aside)
    _record_path(dest).unlink(missing_ok=True)
    _part_meta_path(dest.with_name(dest.name + ".part")).unlink(missing_ok=True)
    return aside


def _remove_archive(archive: Path) -> None:
    archive.unlink(missing_ok=True)
    _record_path(archive).unlink(missing_ok=True)


def _record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified.json")


def _part_meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


# --------------------------------------------------------------------------------------------- HTTP


def _fetch(url: str, part: Path, size: int | None, opts: _Options) -> tuple[int, str | None]:
    """Download ``url`` into ``part``, resuming and retrying; return (total size, md5 hex or None)."""
    failures = 0
    restarts = 0
    while True:
        try:
            return _fetch_once(url, part, size, opts)
        except _Restart:
            restarts += 1
            if restarts > 2:
                raise DownloadError(
                    f"{url} keeps answering byte ranges that do not fit {part.name}; remove {part} and rerun"
                ) from None
        except _Transient as exc:
            failures += 1
            if failures > opts.retries:
                kept = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"download of {url} failed after {failures} attempt(s): {exc}; {part} keeps {kept} bytes — "
                    f"check the network (or the mirror) and rerun to resume"
                ) from None
            time.sleep(_RETRY_BACKOFF_S * 2 ** (failures - 1))


def _fetch_once(url: str, part: Path, size: int | None, opts: _Options) -> tuple[int, str | None]:

    offset = part.stat().st_size if part.exists() else 0
    meta = _read_json(_part_meta_path(part)) or {}
    if offset and meta.get("url") not in (None, url):
        offset = 0  # the part came from another URL: do not splice two sources
    headers = {"User-Agent": f"objalign/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if isinstance(meta.get("etag"), str) and not meta["etag"].startswith("W/"):
            headers["If-Range"] = meta["etag"]
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=opts.timeout)
    except urllib.error.HTTPError as exc:
        code, reason, content_range = exc.code, exc.reason, exc.headers.get("Content-Range", "")
        exc.close()
        if code == 416 and offset:
            total = _content_range(content_range)[2]
            if total is not None and total == offset:
                return total, None  # the part is already whole
            _discard_part(part)
            raise _Restart() from None
        if code >= 500 or code in (408, 429):
            raise _Transient(f"HTTP {code} {reason}") from None
        raise DownloadError(
            f"{url} answered HTTP {code} {reason}; check the mirror URL (it must serve the official "
            f"paths under its base) or leave mirror unset to use {DEFAULT_BASE_URL}"
        ) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise _Transient(_reason(exc)) from None

    with response:
        status = response.status
        ctype = response.headers.get("Content-Type", "") or ""
        if "html" in ctype.lower():
            raise DownloadError(
                f"{url} answered an HTML page (Content-Type {ctype}), not a zip archive; the mirror URL is wrong "
                f"or needs a login — open it in a browser, then fix mirror"
            )
        if status == 206:
            start, _end, total = _content_range(response.headers.get("Content-Range", ""))
            if start != offset:
                _discard_part(part)
                raise _Restart()
            mode = "ab"
        elif status == 200:
            offset, mode = 0, "wb"  # a fresh start, or a server that ignored Range: restart from zero
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise DownloadError(f"{url} answered HTTP {status}, expected 200 or 206; check the mirror URL")
        if total is not None and size is not None and total != size:
            raise DownloadError(
                f"{url} serves {total} bytes but {part.name.removesuffix('.part')} should be {size} bytes; "
                f"the mirror does not serve the official archive — if it serves repacked copies on purpose, pass "
                f"{REPACKED_HINT}; otherwise use another mirror"
            )
        if total is not None and meta.get("total") not in (None, total) and mode == "ab":
            _discard_part(part)
            raise _Restart()  # the remote file changed size since the part was started
        if total is not None:
            _check_space(part, total - offset, url)

        hasher = hashlib.md5()
        if mode == "ab":
            with open(part, "rb") as fh:
                while block := fh.read(_CHUNK * 8):
                    hasher.update(block)
        head = b""
        if offset == 0:  # look at the first bytes before writing anything
            head = _read_head(response, url)
            if not head.startswith(b"PK"):
                raise DownloadError(
                    f"{url} answered something that is not a zip archive (it starts with {head[:16]!r}); "
                    f"check the mirror URL"
                )
        meta = {"url": url, "etag": response.headers.get("ETag"), "total": total}
        _write_json(_part_meta_path(part), meta)
        written = _stream(response, part, mode, head, hasher, offset, total, url, opts)
    got = offset + written
    if total is not None and got != total:
        raise _Transient(f"connection closed after {got} of {total} bytes")
    if total is None:
        total = got
    return total, hasher.hexdigest()


def _stream(response, part: Path, mode: str, head: bytes, hasher, offset: int, total: int | None,
            url: str, opts: _Options) -> int:
    """Append the response body to ``part``; return the bytes written (a dropped connection -> _Transient)."""
    from tqdm.auto import tqdm

    written = 0
    try:
        with _open_part(part, mode) as fh, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=not opts.progress,
        ) as bar:
            chunk = head
            while True:
                if chunk:
                    fh.write(chunk)
                    hasher.update(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
                try:
                    chunk = response.read1(_CHUNK)  # what has arrived: a stall loses nothing
                except (http.client.HTTPException, OSError) as exc:
                    fh.flush()
                    raise _Transient(f"connection dropped after {offset + written} bytes ({_reason(exc)})") from None
                if not chunk:
                    break
    except _Transient:
        raise
    except OSError as exc:
        kept = part.stat().st_size if part.exists() else 0
        if exc.errno == errno.ENOSPC:
            raise DownloadError(
                f"disk full while writing {part} ({kept} bytes kept for resume); free space on that disk "
                f"(or choose another root) and rerun to resume {url}"
            ) from None
        raise DownloadError(f"cannot write {part}: {exc.strerror or exc}; check the folder's permissions") from None
    return written


def _open_part(part: Path, mode: str):
    """Open the partial file for writing (a seam for tests that simulate a full disk)."""
    return open(part, mode)


def _read_head(response, url: str) -> bytes:
    """The first bytes of the body (up to 64), to check the zip magic and quote what came instead."""
    head = b""
    while len(head) < 64:
        try:
            chunk = response.read(64 - len(head))
        except (http.client.HTTPException, OSError) as exc:
            raise _Transient(f"connection dropped at the start ({_reason(exc)})") from None
        if not chunk:
            break
        head += chunk
    return head


def _check_space(part: Path, needed: int, url: str) -> None:
    free = shutil.disk_usage(part.parent).free
    if needed > free:
        raise DownloadError(
            f"{url} needs {_gib(needed)} more but only {_gib(free)} is free on the disk of {part.parent}; "
            f"free space (or choose another root) and rerun"
        )


def _content_range(value: str) -> tuple[int | None, int | None, int | None]:
    """Parse ``bytes START-END/TOTAL`` or ``bytes */TOTAL``; unknown parts are None."""
    value = value.strip()
    if not value.startswith("bytes "):
        return None, None, None
    span, _, total_s = value[6:].partition("/")
    total = int(total_s) if total_s.strip().isdigit() else None
    start_s, _, end_s = span.partition("-")
    start = int(start_s) if start_s.strip().isdigit() else None
    end = int(end_s) if end_s.strip().isdigit() else None
    return start, end, total


def _discard_part(part: Path) -> None:
    part.unlink(missing_ok=True)
    _part_meta_path(part).unlink(missing_ok=True)


def _reason(exc: BaseException) -> str:
    """A short description of a network error."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        if not isinstance(exc.reason, BaseException):
            return str(exc.reason)
        exc = exc.reason
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
        return "timed out"
    if isinstance(exc, http.client.IncompleteRead):
        return "the server closed the connection early"
    message = getattr(exc, "strerror", None) or str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _gib(n: int) -> str:
    """A byte count for messages: ``"18.01 GiB"``, ``"512.0 KiB"``, ``"100 B"``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}" if unit == "GiB" else f"{n / scale:.1f} {unit}"
    return f"{n} B"


# --------------------------------------------------------------------------------------------- extraction


def _extract(archive: Path, root: Path, spec: _Archive, opts: _Options) -> None:
    """Extract ``archive`` into a temporary folder under ``root``, mark it complete, move it into place."""
    from tqdm.auto import tqdm

    stem = archive.name.removesuffix(".zip")
    record = _read_json(_record_path(archive)) or {}
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        _corrupt_during_extraction(archive, exc)
    with zf:
        infos = zf.infolist()
        needed = sum(i.file_size for i in infos)
        free = shutil.disk_usage(root).free
        if needed > free:
            raise DownloadError(
                f"extracting {archive.name} needs {_gib(needed)} but only {_gib(free)} is free under {root}; "
                f"free space and rerun (the archive is kept)"
            )
        tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.extract-", dir=root))
        try:
            for info in tqdm(infos, desc=f"extract {archive.name}", unit="file", disable=not opts.progress):
                zf.extract(info, tmp)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            _corrupt_during_extraction(archive, exc)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno == errno.ENOSPC:
                raise DownloadError(
                    f"disk full while extracting {archive.name} under {root}; free space and rerun "
                    f"(the archive is kept)"
                ) from None
            raise DownloadError(f"cannot extract {archive.name} under {root}: {exc.strerror or exc}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    marker = {
        "archive": archive.name,
        "size": archive.stat().st_size,
        "md5": record.get("md5"),
        "url": record.get("url"),
        "members": len(infos),
        "completed_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        for top in sorted(tmp.iterdir()):
            target = root / top.name
            if top.is_dir():
                _place_folder(top, target, marker)
            elif not target.exists():
                os.replace(top, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _place_folder(top: Path, target: Path, marker: dict) -> None:
    if target.is_dir() and any(target.iterdir()):
        # A partial copy of the user's own: add what is missing, file by file (each move is atomic).
        for path in sorted(top.rglob("*")):
            dst = target / path.relative_to(top)
            if path.is_dir():
                dst.mkdir(exist_ok=True)
            elif not dst.exists():
                os.replace(path, dst)
        _write_json(target / MARKER, marker)
        return
    if target.exists() and not target.is_dir():
        raise DownloadError(f"{target} exists and is not a folder; move it away and rerun")
    _write_json(top / MARKER, marker)  # written before the move: the folder appears complete or not at all
    if target.is_dir():
        target.rmdir()  # empty
    os.replace(top, target)


def _corrupt_during_extraction(archive: Path, exc: BaseException):
    aside = _move_aside(archive)
    raise DownloadError(
        f"{archive.name} is corrupt ({exc}); moved it to {aside} — rerun to download it again"
    ) from None


def _images_ready(folder: Path) -> bool:
    """True for a folder we extracted (it has the marker) or a local copy holding at least one JPEG."""
    if not folder.is_dir():
        return False
    if (folder / MARKER).is_file():
        return True
    with os.scandir(folder) as it:
        return any(entry.name.lower().endswith((".jpg", ".jpeg")) for entry in it)


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
