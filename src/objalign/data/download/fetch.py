"""HTTP fetching with resume: a ``.part`` file continued with ``Range`` / ``If-Range`` requests, retried on
dropped connections, checked against the server's size, the zip magic and the free disk space (see
:mod:`objalign.data.download`)."""

from __future__ import annotations

import errno
import hashlib
import http.client
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from objalign import __version__
from objalign.data.download.common import (
    _CHUNK,
    DEFAULT_BASE_URL,
    REPACKED_HINT,
    DownloadError,
    _gib,
    _Options,
    _part_meta_path,
    _read_json,
    _Restart,
    _Transient,
    _write_json,
)

_RETRY_BACKOFF_S = 0.5  # first pause between retries; doubles each time


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
    """One request for the bytes ``part`` lacks, appended to it; return (total size, md5 hex or None).

    Raises :class:`_Transient` (worth retrying: the next attempt resumes), :class:`_Restart` (the part was
    discarded) or :class:`DownloadError`.
    """
    offset, meta = _resume_point(url, part)
    response, whole = _open(url, part, offset, meta, opts)
    if response is None:
        return whole, None  # the part is already whole
    with response:
        offset, mode, total = _check_response(response, url, part, offset, size, meta)
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


def _resume_point(url: str, part: Path) -> tuple[int, dict]:
    """``(offset, meta)``: the bytes of ``part`` to continue from (0 when the part came from another URL: two
    sources are never spliced) and the part's record (``url``, ``etag``, ``total``; ``{}`` if none)."""
    offset = part.stat().st_size if part.exists() else 0
    meta = _read_json(_part_meta_path(part)) or {}
    if offset and meta.get("url") not in (None, url):
        offset = 0  # the part came from another URL: do not splice two sources
    return offset, meta


def _open(url: str, part: Path, offset: int, meta: dict, opts: _Options):
    """Request ``url`` from byte ``offset`` on (``If-Range`` on the part's strong ETag); return ``(response,
    None)``, or ``(None, total)`` when the server says (416) that the part is already whole."""
    headers = {"User-Agent": f"objalign/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if isinstance(meta.get("etag"), str) and not meta["etag"].startswith("W/"):
            headers["If-Range"] = meta["etag"]
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=opts.timeout), None
    except urllib.error.HTTPError as exc:
        code, reason, content_range = exc.code, exc.reason, exc.headers.get("Content-Range", "")
        exc.close()
        if code == 416 and offset:
            total = _content_range(content_range)[2]
            if total is not None and total == offset:
                return None, total  # the part is already whole
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


def _check_response(response, url: str, part: Path, offset: int, size: int | None,
                    meta: dict) -> tuple[int, str, int | None]:
    """``(offset, mode, total)`` for the answer: append (206 from ``offset``) or write from zero (200), and the
    file's total size if the server says it. Refuses an HTML page, a size other than ``size``, a remote file
    that changed size since the part was started (:class:`_Restart`) and a disk without room for the rest."""
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
    return offset, mode, total


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
