"""Archive verification (size, md5, zip integrity with a CRC sample), moving a corrupt archive aside, and atomic
extraction behind a completion marker (see :mod:`objalign.data.download`)."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import tempfile
import zipfile
import zlib
from datetime import datetime, timezone
from pathlib import Path

from objalign.data.download.common import (
    _CHUNK,
    MARKER,
    DownloadError,
    _Archive,
    _Corrupt,
    _gib,
    _Options,
    _part_meta_path,
    _read_json,
    _record_path,
    _write_json,
)

_CRC_SAMPLE_MEMBERS = 16  # members whose CRC is checked when verifying an archive (besides first and last)
_CRC_SAMPLE_BYTES = 32 << 20  # ... within this many compressed bytes


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
