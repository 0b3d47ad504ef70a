"""Fetching single image files by URL, many at once over kept-alive connections (``data.images: fetch``).

:func:`fetch_files` takes ``{relative path: URL}`` and a destination folder and makes each file exist there:

* **Many at once.** ``workers`` threads, each holding one persistent HTTP/1.1 connection per host
  (:mod:`http.client`, standard library only), so a run of 3,000 images opens ``workers`` connections, not 3,000.
  A connection the server closed while idle is reopened once without counting as a failure.
* **Atomic.** A file's bytes are written with :func:`objalign.atomic.atomic_write_bytes` only after they decoded as
  an image: a crash never leaves a partial file under the real name, and the next fetch removes the temporaries a
  killed one left (:func:`objalign.stores.remove_stale_temporaries`).
* **Resume.** A file already at its place is not requested again, so a rerun fetches only what is missing.
* **Retries.** A dropped or stalled connection (``timeout``), a truncated body (fewer bytes than
  ``Content-Length``) and HTTP 408 / 429 / 5xx are retried ``retries`` times with a short back-off; redirects are
  followed (five at most). A 404 or another 4xx, or an HTML page, is not retried.
* **Decoded.** The bytes must decode as an image (Pillow, fully). A file that does not is fetched once more (a
  truncation the server did not announce); if it still does not decode it is not kept and is **recorded as
  skipped with its reason**, as are files whose fetch failed for good. Skips never stop the others.
* **Proxy.** ``http_proxy`` / ``https_proxy`` / ``no_proxy`` are honoured as :mod:`urllib` reads them (the
  archives' downloads go through urllib): https through a ``CONNECT`` tunnel, http by absolute URL; a user name and
  password in the proxy URL become ``Proxy-Authorization: Basic``.
* **Mirror.** ``mirror`` replaces each URL's scheme and host, keeping its path (and the mirror's own path prefix):
  ``http://images.cocodataset.org/train2017/x.jpg`` with mirror ``http://m.local/coco`` is fetched from
  ``http://m.local/coco/train2017/x.jpg``.

A full disk or an unwritable folder stops the whole fetch with one :class:`DownloadError` line (every file would
fail alike); files already moved into place stay for the next run.
"""

from __future__ import annotations

import base64
import errno
import gzip
import http.client
import io
import os
import ssl
import string
import threading
import time
import urllib.request
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

from objalign import __version__
from objalign.atomic import atomic_write_bytes
from objalign.data.download.common import DownloadError
from objalign.data.download.fetch import _reason
from objalign.data.images import file_name_problem
from objalign.stores import remove_stale_temporaries

_REDIRECTS = 5
_BACKOFF_S = 0.25  # first pause between retries of one file; doubles each time


_MAX_BYTES = 256 << 20  # a larger answer is no image objalign should hold in memory


class _Transient(Exception):
    """Worth retrying: a dropped or stalled connection, a truncated body (``network``), HTTP 408/429/5xx."""

    def __init__(self, message: str, network: bool = True):
        super().__init__(message)
        self.network = network


class _Permanent(Exception):
    """Not worth retrying (HTTP 4xx, an HTML page, a URL objalign cannot fetch), or retried in vain: the file is
    skipped. ``network``: the last failure was the connection itself (no answer from the server)."""

    def __init__(self, message: str, network: bool = False):
        super().__init__(message)
        self.network = network


def mirrored(url: str, mirror: str | None) -> str:
    """``url`` with its scheme and host replaced by ``mirror``'s (the mirror's path prefix kept before the URL's
    path); ``url`` itself when ``mirror`` is empty."""
    if not mirror:
        return url
    m, u = urlsplit(mirror), urlsplit(url)
    return urlunsplit((m.scheme, m.netloc, m.path.rstrip("/") + (u.path or "/"), u.query, ""))


def url_problem(url) -> str | None:
    """Why objalign cannot fetch ``url`` (not an http(s) URL with a host and a valid port), or ``None``."""
    if not isinstance(url, str) or not url.strip():
        return f"URL {url!r} is empty or not a string"
    try:
        parts = urlsplit(url.strip())
        has_host = bool(parts.hostname) and (parts.port is None or parts.port > 0)  # .port: ValueError if bad
    except ValueError as exc:
        return f"URL {url!r} cannot be read ({exc})"
    if parts.scheme not in ("http", "https") or not has_host:
        return f"URL {url!r} is not an http(s) URL with a host"
    return None


def quoted(url: str, encoding: str = "utf-8") -> str:
    """``url`` with spaces and non-ASCII characters percent-encoded (``%`` escapes already there kept), as urllib
    sends them; ``encoding="iso-8859-1"`` for a ``Location`` header (http.client decodes headers so)."""
    return quote(url.strip(), safe=string.punctuation, encoding=encoding)


class _Connections:
    """One persistent connection per (scheme, host, port) for the calling thread; all of them closed at the end."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.local = threading.local()
        self.lock = threading.Lock()
        self.every: list = []
        self.opened = 0
        self.requests = 0

    @staticmethod
    def key(scheme: str, host: str, port: int | None) -> tuple:
        """``(scheme, host, port)`` with the scheme's default port made explicit (so an IPv6 literal is never split
        on its colons, and a URL with and without ``:80`` share one connection)."""
        return scheme, host, port or (443 if scheme == "https" else 80)

    def get(self, scheme: str, host: str, port: int | None):
        """The calling thread's connection to ``scheme://host:port`` (through the environment's proxy, if any)."""
        pool = self.local.__dict__.setdefault("pool", {})
        key = self.key(scheme, host, port)
        port = key[2]
        conn = pool.get(key)
        if conn is None:
            proxy = proxy_for(scheme, host)
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            if proxy is None:
                conn = cls(host, port, timeout=self.timeout)
            else:  # https: a CONNECT tunnel through the proxy; http: absolute URLs sent to the proxy
                p = urlsplit(proxy)
                pcls = http.client.HTTPSConnection if p.scheme == "https" else http.client.HTTPConnection
                conn = (cls if scheme == "https" else pcls)(p.hostname, p.port, timeout=self.timeout)
                auth = _proxy_auth(p)
                if scheme == "https":
                    conn.set_tunnel(host, port, headers=auth)
                conn.proxy_headers = {} if scheme == "https" else auth
            conn.via_proxy = proxy is not None and scheme == "http"
            pool[key] = conn
            with self.lock:
                self.every.append(conn)
        return conn

    def drop(self, scheme: str, host: str, port: int | None) -> None:
        conn = self.local.__dict__.get("pool", {}).pop(self.key(scheme, host, port), None)
        if conn is not None:
            conn.close()

    def count(self, opened: bool) -> None:
        with self.lock:
            self.requests += 1
            self.opened += int(opened)

    def close(self) -> None:
        with self.lock:
            for conn in self.every:
                conn.close()
            self.every.clear()


def proxy_for(scheme: str, host: str) -> str | None:
    """The proxy URL the environment names for ``scheme`` (``http_proxy``, ``https_proxy``, as :mod:`urllib` reads
    them), or ``None`` when there is none or ``no_proxy`` exempts ``host``."""
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _proxy_auth(parts) -> dict:
    """``Proxy-Authorization`` for a proxy URL with a user name (``http://user:pass@proxy:3128``), else ``{}``."""
    if not parts.username:
        return {}
    token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
    return {"Proxy-Authorization": f"Basic {token}"}


def _request(url: str, conns: _Connections) -> tuple[int, dict, bytes]:
    """One GET on a kept-alive connection: ``(status, headers, body)``. A connection the server closed while idle
    is reopened once; other network failures raise :class:`_Transient`."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"User-Agent": f"objalign/{__version__}", "Accept-Encoding": "identity", "Connection": "keep-alive"}
    for attempt in (0, 1):
        conn = conns.get(parts.scheme, parts.hostname, parts.port)
        reused = conn.sock is not None
        try:
            if conn.via_proxy:  # a plain-http proxy takes the absolute URL
                conn.request("GET", url, headers={**headers, **conn.proxy_headers})
            else:
                conn.request("GET", path, headers=headers)
            conns.count(opened=not reused)
            resp = conn.getresponse()
            length = resp.getheader("Content-Length", "")
            if length.isdigit() and int(length) > _MAX_BYTES:
                conns.drop(parts.scheme, parts.hostname, parts.port)
                raise _Permanent(f"answers {int(length)} bytes, more than {_MAX_BYTES >> 20} MiB: not an image to "
                                 "fetch")
            body = resp.read()  # IncompleteRead when the body is shorter than Content-Length
        except ssl.SSLCertVerificationError as exc:
            conns.drop(parts.scheme, parts.hostname, parts.port)
            raise _Permanent(f"the server's certificate is not trusted ({exc.verify_message or exc})") from None
        except http.client.InvalidURL as exc:
            raise _Permanent(f"invalid URL ({exc})") from None
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
            conns.drop(parts.scheme, parts.hostname, parts.port)
            if reused and attempt == 0:
                continue  # the server closed the idle connection: reopen, not a failure
            raise _Transient(_reason(exc)) from None
        except (http.client.HTTPException, OSError) as exc:
            conns.drop(parts.scheme, parts.hostname, parts.port)
            raise _Transient(_reason(exc)) from None
        if resp.will_close:
            conns.drop(parts.scheme, parts.hostname, parts.port)
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    raise AssertionError("unreachable")


def _get(url: str, conns: _Connections) -> bytes:
    """The body of ``url`` (redirects followed); :class:`_Transient` or :class:`_Permanent` otherwise."""
    for _ in range(_REDIRECTS + 1):
        status, headers, body = _request(url, conns)
        if status in (301, 302, 303, 307, 308) and headers.get("location"):
            url = urljoin(url, quoted(headers["location"], "iso-8859-1"))
            if url_problem(url):
                raise _Permanent(f"redirected to {url!r}, which is not an http(s) URL")
            continue
        if status == 200:
            if "html" in headers.get("content-type", "").lower():
                raise _Permanent(f"answered an HTML page (Content-Type {headers['content-type']}), not an image")
            return _decoded(body, headers.get("content-encoding", ""))
        if status in (408, 429) or status >= 500:
            raise _Transient(f"HTTP {status}", network=False)
        raise _Permanent(f"HTTP {status}")
    raise _Permanent(f"more than {_REDIRECTS} redirects")


def _decoded(body: bytes, encoding: str) -> bytes:
    """The body without a ``gzip`` / ``deflate`` Content-Encoding (sent by a server that ignores ``identity``)."""
    encoding = encoding.strip().lower()
    try:
        if encoding in ("gzip", "x-gzip"):
            return gzip.decompress(body)
        if encoding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)  # raw deflate, as some servers send it
    except (OSError, EOFError, zlib.error) as exc:
        raise _Transient(f"a {encoding} body that does not decompress ({exc})") from None
    return body


def decode_problem(body: bytes) -> str | None:
    """Why ``body`` is not a whole image (Pillow decodes it fully: a truncated JPEG fails), or ``None``."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(body)) as im:
            im.load()
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the reason recorded
        return f"{type(exc).__name__}: {str(exc)[:120]}"
    return None


def _write(target: Path, body: bytes) -> None:
    """Write ``body`` atomically at ``target`` (:func:`objalign.atomic.atomic_write_bytes`)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, body)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DownloadError(f"disk full while writing {target}; free space on that disk (or choose another "
                                "data.root) and rerun: the images already fetched are kept") from None
        raise DownloadError(f"cannot write {target}: {exc.strerror or exc}; check the folder's permissions") from None


def _fetch_one(url: str, target: Path, conns: _Connections, retries: int, stop: threading.Event) -> int:
    """Fetch ``url`` to ``target``; the bytes written. Raises :class:`_Permanent` (with the reason) when it is
    skipped — whatever went wrong, short of :class:`DownloadError` (a full disk) — and gives up before its next
    attempt once ``stop`` is set (an interrupted fetch ends promptly)."""
    try:
        return _fetch_tries(quoted(url), target, conns, retries, stop)
    except (_Permanent, DownloadError):
        raise
    except Exception as exc:  # noqa: BLE001 - one odd answer skips its file, never the whole fetch
        raise _Permanent(f"{type(exc).__name__}: {str(exc)[:160]}") from None


def _fetch_tries(url: str, target: Path, conns: _Connections, retries: int, stop: threading.Event) -> int:
    problem = None
    for _decode_try in (0, 1):  # a file that does not decode is fetched once more
        failures = 0
        while True:
            if stop.is_set():
                raise _Permanent("interrupted")
            try:
                body = _get(url, conns)
                break
            except _Transient as exc:
                failures += 1
                if failures > retries:
                    raise _Permanent(f"failed after {failures} attempts: {exc}", network=exc.network) from None
                stop.wait(_BACKOFF_S * 2 ** (failures - 1))
        problem = decode_problem(body)
        if problem is None:
            _write(target, body)
            return len(body)
    raise _Permanent(f"does not decode as an image, fetched twice ({problem})")


def _give_up_if_unreachable(failed: list, enough: int) -> None:
    """Stop the whole fetch when the first ``enough`` files all failed at the connection and none arrived: the
    host (or the network, the proxy, the mirror) is down, and retrying the rest file by file would take hours."""
    if len(failed) >= enough:
        first = failed[0]
        raise DownloadError(f"no image could be fetched: the first {len(failed)} failed to connect (first: "
                            f"{first['url']}: {first['reason']}); check the network, the proxy or data.mirror, then "
                            "rerun (the images already fetched are kept)")


def fetch_files(wanted: Mapping[str, str], dest: str | os.PathLike, *, mirror: str | None = None,
                workers: int = 16, retries: int = 3, timeout: float = 30.0, progress: bool = True) -> dict:
    """Make each ``dest / path`` of ``wanted`` (relative path -> URL) exist, fetching only the missing ones.

    Parameters
    ----------
    wanted : mapping of str to str
        Relative path under ``dest`` (e.g. ``"train2017/000000000009.jpg"``) -> the URL to fetch it from.
    dest : path
        Folder the files go to (created if missing).
    mirror : str or None
        Base URL replacing each URL's scheme and host (see the module notes).
    workers : int
        Files fetched at once (threads, each with its own kept-alive connection).
    retries : int
        Retries of one file after a transient failure.
    timeout : float
        Seconds a connection may stay silent before the attempt counts as failed.
    progress : bool
        A tqdm bar over the files.

    Returns
    -------
    dict
        ``n_files``, ``n_present`` (already there), ``n_fetched``, ``n_skipped``, ``bytes_fetched``,
        ``bytes_present``, ``seconds``, ``requests``, ``connections`` (opened) and ``skipped``
        (``{"file", "url", "reason"}`` each, sorted by file).

    Raises
    ------
    DownloadError
        A bad argument, a full disk or an unwritable folder (one line; the files already in place stay).
    """
    if not isinstance(workers, int) or workers < 1:
        raise DownloadError(f"workers={workers!r}: pass a positive number of files fetched at once, e.g. 16")
    if not isinstance(retries, int) or retries < 0:
        raise DownloadError(f"retries={retries!r}: pass a non-negative integer, e.g. 3")
    if mirror and url_problem(mirror):
        raise DownloadError(f"mirror = {mirror!r}: {url_problem(mirror)}; give a base URL such as http://host/path")
    dest = Path(dest)
    started = time.perf_counter()
    skipped, todo, n_present, bytes_present = [], [], 0, 0
    for rel, url in wanted.items():
        problem = file_name_problem(rel) or url_problem(url)
        if problem is not None:
            skipped.append({"file": rel, "url": url, "reason": problem})
            continue
        target = dest / rel
        if target.is_file() and (size := target.stat().st_size) > 0:
            n_present += 1
            bytes_present += size
        else:
            todo.append((rel, url, target))
    conns = _Connections(timeout)
    fetched, total = 0, 0
    if todo:
        from tqdm.auto import tqdm

        dest.mkdir(parents=True, exist_ok=True)
        # the temporaries a killed fetch left in the folders this one writes (never a live writer's)
        remove_stale_temporaries(dest, tuple(sorted({str(t.parent.relative_to(dest)) for _, _, t in todo} - {"."})))
        pool = ThreadPoolExecutor(max_workers=min(workers, len(todo)), thread_name_prefix="objalign-fetch")
        stop = threading.Event()
        try:
            futures = {pool.submit(_fetch_one, mirrored(url, mirror), target, conns, retries, stop): (rel, url)
                       for rel, url, target in todo}
            unreachable = []  # files that failed at the connection while none has arrived yet
            with tqdm(total=len(todo), unit="img", desc="fetch images", disable=not progress) as bar:
                for fut in as_completed(futures):
                    rel, url = futures[fut]
                    try:
                        total += fut.result()
                        fetched += 1
                    except _Permanent as exc:
                        skipped.append({"file": rel, "url": mirrored(url, mirror), "reason": str(exc)})
                        if exc.network and not fetched:
                            unreachable.append(skipped[-1])
                            _give_up_if_unreachable(unreachable, min(len(todo), 2 * workers))
                    bar.update(1)
        finally:  # after an error or Ctrl-C: no new attempts, the ones under way end within their timeout
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            conns.close()
    return {"n_files": len(wanted), "n_present": n_present, "n_fetched": fetched, "n_skipped": len(skipped),
            "bytes_fetched": total, "bytes_present": bytes_present, "seconds": time.perf_counter() - started,
            "requests": conns.requests, "connections": conns.opened,
            "skipped": sorted(skipped, key=lambda r: r["file"])}
