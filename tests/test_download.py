"""download_coco2017 against a loopback HTTP server serving a tiny COCO-layout fixture (no network)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import re
import socket
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from objalign.data.download import MARKER, DownloadError, download_coco2017, verify_archive
from objalign.data.download import archives as dl_archives  # where _crc_sample is looked up
from objalign.data.download import fetch as dl_fetch  # where _RETRY_BACKOFF_S and _open_part are
from objalign.data.zipimages import ZipImageReader

TRAIN_URL = "/zips/train2017.zip"
VAL_URL = "/zips/val2017.zip"
ANN_URL = "/annotations/annotations_trainval2017.zip"


# ------------------------------------------------------------------------------------------------ fixture data


def _jpeg(seed: int, size=(40, 32)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _instances(split: str, files: dict[str, bytes]) -> bytes:
    images = [{"id": i + 1, "file_name": name, "width": 40, "height": 32} for i, name in enumerate(files)]
    anns = [
        {"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [2, 3, 10, 12], "area": 120, "iscrowd": 0}
        for i in range(len(files))
    ]
    doc = {"info": {"split": split}, "images": images, "annotations": anns,
           "categories": [{"id": 1, "name": "person", "supercategory": "person"}]}
    return json.dumps(doc).encode()


def _zip(members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        folders = sorted({name.split("/")[0] + "/" for name in members})
        for folder in folders:  # directory entries, as the official archives have
            zf.writestr(folder, b"")
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def coco():
    train = {f"{i:012d}.jpg": _jpeg(i) for i in (9, 25, 30, 34)}
    val = {f"{i:012d}.jpg": _jpeg(i) for i in (139, 285)}
    ann = {
        "annotations/instances_train2017.json": _instances("train", train),
        "annotations/instances_val2017.json": _instances("val", val),
        "annotations/captions_train2017.json": b'{"annotations": []}',
    }
    archives = {
        TRAIN_URL: _zip({f"train2017/{k}": v for k, v in train.items()}),
        VAL_URL: _zip({f"val2017/{k}": v for k, v in val.items()}),
        ANN_URL: _zip(ann, zipfile.ZIP_DEFLATED),
    }
    checksums = {url.rsplit("/", 1)[1]: (len(data), hashlib.md5(data).hexdigest()) for url, data in archives.items()}
    return {"train": train, "val": val, "ann": ann, "archives": archives, "checksums": checksums}


# ------------------------------------------------------------------------------------------------ server


class _State:
    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.cut: dict[str, int] = {}  # path -> body bytes to send before dropping the connection (once)
        self.stall: dict[str, int] = {}  # path -> body bytes to send before going silent (once)
        self.ignore_range = False
        self.status: int | None = None
        self.content_type = "application/zip"
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        st: _State = self.server.state
        with st.lock:
            st.requests.append((self.path, self.headers.get("Range")))
            cut = st.cut.pop(self.path, None)
            stall = st.stall.pop(self.path, None)
        if st.status is not None:
            return self._send(st.status, b"<html><body>nope</body></html>", "text/html")
        data = st.files.get(self.path)
        if data is None:
            return self._send(404, b"<html><body>Not Found</body></html>", "text/html")
        start, status, extra = 0, 200, {}
        etag = '"%s"' % hashlib.md5(data).hexdigest()
        rng = self.headers.get("Range")
        if self.headers.get("If-Range") not in (None, etag):
            rng = None  # the client's part belongs to another version of the file: send it whole
        if rng and not st.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1])
            if start >= len(data):
                return self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{len(data)}"})
            status, extra = 206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", st.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        if stall is not None:  # send part of the body, then say nothing for longer than the client waits
            self.wfile.write(body[:stall])
            self.wfile.flush()
            time.sleep(3.0)
            self.close_connection = True
            return
        if cut is not None:  # send part of the body, then drop the connection
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def _send(self, status, body, ctype, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def serve(files: dict[str, bytes]):
    """Serve ``files`` (URL path -> bytes) on 127.0.0.1; yields the server's :class:`_State` (``.url``)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = _State(files)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    httpd.state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield httpd.state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server(coco):
    with serve(coco["archives"]) as state:
        yield state


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    monkeypatch.setattr(dl_fetch, "_RETRY_BACKOFF_S", 0.0)


def _dead_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def _get(root, server, coco, **kw):
    kw.setdefault("checksums", coco["checksums"])
    kw.setdefault("progress", False)
    return download_coco2017(root, mirror=server.url, **kw)


def _requests(server, path):
    return [rng for p, rng in server.requests if p == path]


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.name.endswith((".part", ".part.json")) or ".extract-" in p.name)


# ------------------------------------------------------------------------------------------------ tests


def test_full_download_extracts_the_coco_layout(tmp_path, server, coco):
    out = _get(tmp_path, server, coco, split="all")

    assert out["root"] == tmp_path and out["images_from_zip"] is False
    assert out["annotations"] == {s: tmp_path / "annotations" / f"instances_{s}2017.json" for s in ("train", "val")}
    assert out["images"] == {"train": tmp_path / "train2017", "val": tmp_path / "val2017"}
    for name, data in coco["ann"].items():
        assert (tmp_path / name).read_bytes() == data
    for split in ("train", "val"):
        on_disk = {p.name: p.read_bytes() for p in (tmp_path / f"{split}2017").glob("*.jpg")}
        assert on_disk == coco[split]
        marker = json.loads((tmp_path / f"{split}2017" / MARKER).read_text())
        size, md5 = coco["checksums"][f"{split}2017.zip"]
        assert (marker["archive"], marker["size"], marker["md5"]) == (f"{split}2017.zip", size, md5)
    for url, data in coco["archives"].items():
        name = url.rsplit("/", 1)[1]
        assert (tmp_path / "downloads" / name).read_bytes() == data
        record = json.loads((tmp_path / "downloads" / f"{name}.verified.json").read_text())
        assert record["md5"] == hashlib.md5(data).hexdigest() and record["size"] == len(data)
    assert sorted(p for p, _ in server.requests) == sorted([ANN_URL, TRAIN_URL, VAL_URL])
    assert all(rng is None for _, rng in server.requests)
    assert _leftovers(tmp_path) == []


def test_second_run_makes_no_request(tmp_path, server, coco):
    _get(tmp_path, server, coco, split="all")
    n = len(server.requests)
    again = _get(tmp_path, server, coco, split="all")
    assert len(server.requests) == n
    # the same with a mirror nobody listens on: nothing is fetched
    again2 = download_coco2017(tmp_path, split="all", mirror=_dead_url(), progress=False,
                               checksums=coco["checksums"], retries=0)
    assert again == again2


def test_cut_transfer_resumes_on_the_next_run(tmp_path, server, coco):
    data = coco["archives"][TRAIN_URL]
    half = len(data) // 2
    server.cut[TRAIN_URL] = half
    with pytest.raises(DownloadError, match=r"train2017\.zip.*rerun to resume") as info:
        _get(tmp_path, server, coco, retries=0)
    assert "\n" not in str(info.value) and server.url in str(info.value)
    part = tmp_path / "downloads" / "train2017.zip.part"
    assert part.read_bytes() == data[:half]  # nothing already downloaded is lost
    assert not (tmp_path / "train2017").exists()

    _get(tmp_path, server, coco, retries=0)
    assert _requests(server, TRAIN_URL) == [None, f"bytes={half}-"]
    assert (tmp_path / "downloads" / "train2017.zip").read_bytes() == data
    assert {p.name: p.read_bytes() for p in (tmp_path / "train2017").glob("*.jpg")} == coco["train"]
    assert _leftovers(tmp_path) == []


def test_cut_transfer_is_retried_within_one_call(tmp_path, server, coco):
    data = coco["archives"][ANN_URL]
    server.cut[ANN_URL] = len(data) // 2
    _get(tmp_path, server, coco, annotations_only=True, retries=1)
    assert _requests(server, ANN_URL) == [None, f"bytes={len(data) // 2}-"]
    assert (tmp_path / "downloads" / "annotations_trainval2017.zip").read_bytes() == data


def test_stalled_transfer_times_out_and_resumes(tmp_path, server, coco):
    data = coco["archives"][ANN_URL]
    server.stall[ANN_URL] = 700
    _get(tmp_path, server, coco, annotations_only=True, retries=3, timeout=1.0)
    ranges = _requests(server, ANN_URL)
    assert ranges[0] is None and ranges[-1] == "bytes=700-"  # the 700 bytes that arrived were kept
    assert (tmp_path / "downloads" / "annotations_trainval2017.zip").read_bytes() == data


def test_server_ignoring_range_restarts_from_zero(tmp_path, server, coco):
    data = coco["archives"][TRAIN_URL]
    server.cut[TRAIN_URL] = 3000
    with pytest.raises(DownloadError):
        _get(tmp_path, server, coco, retries=0)
    server.ignore_range = True  # answers 200 with the whole file
    _get(tmp_path, server, coco, retries=0)
    assert _requests(server, TRAIN_URL) == [None, "bytes=3000-"]
    assert (tmp_path / "downloads" / "train2017.zip").read_bytes() == data


def test_changed_remote_file_is_not_spliced(tmp_path, server, coco):
    old = coco["archives"][VAL_URL]
    server.cut[VAL_URL] = len(old) // 2
    with pytest.raises(DownloadError):
        _get(tmp_path, server, coco, split="val", checksums={}, retries=0)
    new = _zip({"val2017/000000000777.jpg": _jpeg(777), "val2017/000000000778.jpg": _jpeg(778)})
    server.files[VAL_URL] = new  # the mirror now serves another version
    out = _get(tmp_path, server, coco, split="val", checksums={}, retries=0)
    assert _requests(server, VAL_URL) == [None, f"bytes={len(old) // 2}-"]  # sent with If-Range: old ETag
    assert (tmp_path / "downloads" / "val2017.zip").read_bytes() == new
    assert sorted(p.name for p in out["images"]["val"].glob("*.jpg")) == ["000000000777.jpg", "000000000778.jpg"]


def test_416_on_a_whole_part_is_accepted(tmp_path, server, coco):
    data = coco["archives"][ANN_URL]
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "annotations_trainval2017.zip.part").write_bytes(data)  # crash before the rename
    _get(tmp_path, server, coco, annotations_only=True, retries=0)
    assert _requests(server, ANN_URL) == [f"bytes={len(data)}-"]
    assert (tmp_path / "downloads" / "annotations_trainval2017.zip").read_bytes() == data


def test_416_on_an_oversized_part_restarts(tmp_path, server, coco):
    data = coco["archives"][ANN_URL]
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "annotations_trainval2017.zip.part").write_bytes(data + b"junk")
    _get(tmp_path, server, coco, annotations_only=True, retries=0)
    assert _requests(server, ANN_URL) == [f"bytes={len(data) + 4}-", None]
    assert (tmp_path / "downloads" / "annotations_trainval2017.zip").read_bytes() == data


def _corrupted(data: bytes, needle: bytes) -> bytes:
    """Flip one byte inside the stored member whose bytes contain ``needle``."""
    at = data.index(needle) + len(needle) // 2
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def test_corrupt_archive_fails_md5_and_is_moved_aside(tmp_path, server, coco):
    good = coco["archives"][TRAIN_URL]
    server.files[TRAIN_URL] = _corrupted(good, coco["train"]["000000000025.jpg"])
    with pytest.raises(DownloadError, match=r"train2017\.zip .*failed its check \(md5 .*moved it to .*corrupt"):
        _get(tmp_path, server, coco)
    assert (tmp_path / "downloads" / "train2017.zip.corrupt").read_bytes() == server.files[TRAIN_URL]
    assert not (tmp_path / "downloads" / "train2017.zip").exists()
    assert not (tmp_path / "train2017").exists()
    assert _leftovers(tmp_path) == []
    # the next run downloads afresh from a good server
    server.files[TRAIN_URL] = good
    _get(tmp_path, server, coco)
    assert (tmp_path / "downloads" / "train2017.zip").read_bytes() == good


def test_corrupt_archive_without_checksum_fails_crc(tmp_path, server, coco):
    server.files[TRAIN_URL] = _corrupted(coco["archives"][TRAIN_URL], coco["train"]["000000000030.jpg"])
    with pytest.raises(DownloadError, match=r"(?i)crc"):
        _get(tmp_path, server, coco, checksums={})
    assert (tmp_path / "downloads" / "train2017.zip.corrupt").exists()
    assert not (tmp_path / "train2017").exists()
    assert _leftovers(tmp_path) == []


def test_crc_failure_during_extraction_leaves_no_folder(tmp_path, server, coco, monkeypatch):
    server.files[TRAIN_URL] = _corrupted(coco["archives"][TRAIN_URL], coco["train"]["000000000030.jpg"])
    monkeypatch.setattr(dl_archives, "_crc_sample", lambda infos: [])  # let the bad member reach extraction
    with pytest.raises(DownloadError, match=r"train2017\.zip is corrupt .*CRC.*moved it to"):
        _get(tmp_path, server, coco, checksums={})
    assert (tmp_path / "downloads" / "train2017.zip.corrupt").exists()
    assert not (tmp_path / "train2017").exists()
    assert _leftovers(tmp_path) == []


def test_http_404_is_one_clear_line(tmp_path, server, coco):
    server.status = 404
    with pytest.raises(DownloadError, match=r"annotations_trainval2017\.zip answered HTTP 404") as info:
        _get(tmp_path, server, coco)
    assert "\n" not in str(info.value) and "mirror" in str(info.value)
    assert _leftovers(tmp_path) == []


def test_html_instead_of_zip(tmp_path, server, coco):
    server.content_type = "text/html; charset=utf-8"
    with pytest.raises(DownloadError, match=r"answered an HTML page"):
        _get(tmp_path, server, coco)
    assert _leftovers(tmp_path) == []


def test_non_zip_bytes_are_refused_before_writing(tmp_path, server, coco):
    server.content_type = "application/octet-stream"
    server.files[ANN_URL] = b"<!DOCTYPE html><html>login</html>"
    with pytest.raises(DownloadError, match=r"not a zip archive .*<!DOCTYPE"):
        _get(tmp_path, server, coco, checksums={})
    assert _leftovers(tmp_path) == []


def test_mirror_serving_another_archive_is_refused_by_size(tmp_path, server, coco):
    with pytest.raises(DownloadError, match=r"should be 252907541 bytes.*pass --no-official-checksums") as info:
        _get(tmp_path, server, coco, checksums=None)  # the official table
    assert "\n" not in str(info.value)


def test_connection_refused_names_the_url(tmp_path, coco):
    url = _dead_url()
    with pytest.raises(DownloadError, match=re.escape(url) + r".*failed after 2 attempt\(s\).*rerun") as info:
        download_coco2017(tmp_path, mirror=url, progress=False, retries=1)
    assert "\n" not in str(info.value)


def test_disk_full_keeps_the_part_for_resume(tmp_path, server, coco, monkeypatch):
    data = coco["archives"][TRAIN_URL]
    limit = 2500
    real_open = dl_fetch._open_part

    class FullDisk:
        def __init__(self, fh):
            self.fh = fh

        def write(self, b):
            room = limit - self.fh.tell()
            if len(b) > room:
                self.fh.write(b[:room])
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(b)

        def flush(self):
            self.fh.flush()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(dl_fetch, "_open_part", lambda part, mode: FullDisk(real_open(part, mode)))
    with pytest.raises(DownloadError, match=r"disk full while writing .*train2017\.zip\.part \(2500 bytes kept"):
        _get(tmp_path, server, coco)
    part = tmp_path / "downloads" / "train2017.zip.part"
    assert part.read_bytes() == data[:limit]

    monkeypatch.setattr(dl_fetch, "_open_part", real_open)
    _get(tmp_path, server, coco)
    assert _requests(server, TRAIN_URL) == [None, f"bytes={limit}-"]
    assert (tmp_path / "downloads" / "train2017.zip").read_bytes() == data


def test_local_copy_is_used_as_is(tmp_path, coco):
    (tmp_path / "annotations").mkdir()
    ann = coco["ann"]["annotations/instances_train2017.json"]
    (tmp_path / "annotations" / "instances_train2017.json").write_bytes(ann)
    (tmp_path / "train2017").mkdir()
    (tmp_path / "train2017" / "000000000009.jpg").write_bytes(coco["train"]["000000000009.jpg"])
    out = download_coco2017(tmp_path, split="train", mirror=_dead_url(), progress=False, retries=0)
    assert out["annotations"] == {"train": tmp_path / "annotations" / "instances_train2017.json"}
    assert out["images"] == {"train": tmp_path / "train2017"}
    assert not (tmp_path / "downloads").exists()


def test_local_archive_is_verified_offline(tmp_path, coco):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_bytes(b"{}")
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "val2017.zip").write_bytes(coco["archives"][VAL_URL])
    out = download_coco2017(tmp_path, split="val", extract=False, mirror=_dead_url(), progress=False,
                            checksums=coco["checksums"], retries=0)
    assert out["images"] == {"val": tmp_path / "downloads" / "val2017.zip"}
    record = json.loads((tmp_path / "downloads" / "val2017.zip.verified.json").read_text())
    assert record["md5"] == coco["checksums"]["val2017.zip"][1]
    # a local archive that fails its md5 is moved aside with a clear error
    (tmp_path / "downloads" / "val2017.zip.verified.json").unlink()
    bad = {"val2017.zip": (None, "0" * 32)}
    with pytest.raises(DownloadError, match=r"val2017\.zip failed its check \(md5"):
        download_coco2017(tmp_path, split="val", extract=False, mirror=_dead_url(), progress=False,
                          checksums=bad, retries=0)
    assert (tmp_path / "downloads" / "val2017.zip.corrupt").exists()


def test_extract_false_keeps_images_in_the_zip(tmp_path, server, coco):
    out = _get(tmp_path, server, coco, split="val", extract=False)
    zip_path = tmp_path / "downloads" / "val2017.zip"
    assert out["images"] == {"val": zip_path} and out["images_from_zip"] is True
    assert not (tmp_path / "val2017").exists()
    assert out["annotations"]["val"].read_bytes() == coco["ann"]["annotations/instances_val2017.json"]
    doc = json.loads(out["annotations"]["val"].read_text())
    with ZipImageReader(zip_path) as reader:
        for image in doc["images"]:
            got = np.asarray(reader.open(image["file_name"]))
            want = np.asarray(Image.open(io.BytesIO(coco["val"][image["file_name"]])).convert("RGB"))
            np.testing.assert_array_equal(got, want)


def test_crash_during_extraction_never_leaves_a_complete_looking_folder(tmp_path, server, coco, monkeypatch):
    real_extract = zipfile.ZipFile.extract
    calls = []

    def dying_extract(self, member, path=None, pwd=None):
        if "train2017.zip" in str(self.filename):
            calls.append(member)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process is stopped half-way through the archive
        return real_extract(self, member, path, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "extract", dying_extract)
    monkeypatch.setattr(dl_archives.shutil, "rmtree", lambda *a, **k: None)  # as after a hard kill: no clean-up
    with pytest.raises(KeyboardInterrupt):
        _get(tmp_path, server, coco)
    assert not (tmp_path / "train2017").exists()
    assert list(tmp_path.glob(".train2017.extract-*"))  # the half-extracted temp folder is all that is left
    monkeypatch.undo()
    monkeypatch.setattr(dl_fetch, "_RETRY_BACKOFF_S", 0.0)

    n = len(server.requests)
    out = _get(tmp_path, server, coco)
    assert len(server.requests) == n  # the verified archive is reused: extraction only
    assert {p.name: p.read_bytes() for p in out["images"]["train"].glob("*.jpg")} == coco["train"]
    assert _leftovers(tmp_path) == []


def test_partial_local_folder_is_completed(tmp_path, server, coco):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train2017.json").write_bytes(b"{}")  # the user's own, kept
    out = _get(tmp_path, server, coco, split="val")
    assert (tmp_path / "annotations" / "instances_train2017.json").read_bytes() == b"{}"
    assert out["annotations"]["val"].read_bytes() == coco["ann"]["annotations/instances_val2017.json"]
    assert (tmp_path / "annotations" / MARKER).is_file()


def test_keep_archives_false_removes_zips_and_reruns_offline(tmp_path, server, coco):
    _get(tmp_path, server, coco, split="val", keep_archives=False)
    assert not any((tmp_path / "downloads").glob("*.zip*"))
    n = len(server.requests)
    _get(tmp_path, server, coco, split="val", keep_archives=False)
    assert len(server.requests) == n


def test_progress_bars_are_shown_when_asked(tmp_path, server, coco, capsys):
    _get(tmp_path, server, coco, annotations_only=True, progress=True)
    assert "annotations_trainval2017.zip" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"split": "test"}, r"split='test' is not one of 'train', 'val', 'all'"),
        ({"mirror": "ftp://example.org/coco"}, r"mirror='ftp://example.org/coco' is not an http\(s\) base URL"),
        ({"mirror": "images.cocodataset.org"}, r"is not an http\(s\) base URL"),
        ({"retries": -1}, r"retries=-1"),
        ({"timeout": 0}, r"timeout=0"),
        ({"checksums": {"val2017.zip": "abc"}}, r"checksums\['val2017.zip'\]='abc' is not \(size"),
        ({"checksums": ["val2017.zip"]}, r"is not a mapping"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        download_coco2017(tmp_path, progress=False, **kwargs)


def test_root_that_is_a_file(tmp_path):
    target = tmp_path / "coco"
    target.write_text("x")
    with pytest.raises(DownloadError, match=r"is a file, not a folder"):
        download_coco2017(target, progress=False)


def test_verify_archive(tmp_path, coco):
    path = tmp_path / "val2017.zip"
    path.write_bytes(coco["archives"][VAL_URL])
    size, md5 = coco["checksums"]["val2017.zip"]
    info = verify_archive(path, size, md5)
    assert info == {"name": "val2017.zip", "size": size, "md5": md5, "members": 3}
    with pytest.raises(DownloadError, match=r"failed its check: \d+ bytes, expected 1"):
        verify_archive(path, size=1)
    path.write_bytes(coco["archives"][VAL_URL][: size // 2])  # truncated: no central directory
    with pytest.raises(DownloadError, match=r"unreadable zip"):
        verify_archive(path)
    with pytest.raises(DownloadError, match=r"does not exist"):
        verify_archive(tmp_path / "missing.zip")


def test_disk_full_during_extraction_keeps_the_archive(tmp_path, server, coco, monkeypatch):
    def full(self, member, path=None, pwd=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    _get(tmp_path, server, coco, split="val", annotations_only=True)
    monkeypatch.setattr(zipfile.ZipFile, "extract", full)
    with pytest.raises(DownloadError, match=r"disk full while extracting val2017\.zip .*the archive is kept"):
        _get(tmp_path, server, coco, split="val")
    assert (tmp_path / "downloads" / "val2017.zip").read_bytes() == coco["archives"][VAL_URL]
    assert not (tmp_path / "val2017").exists() and _leftovers(tmp_path) == []


def test_too_little_free_space_is_refused_up_front(tmp_path, server, coco, monkeypatch):
    real = dl_archives.shutil.disk_usage
    monkeypatch.setattr(dl_archives.shutil, "disk_usage", lambda p: real(p)._replace(free=100))
    with pytest.raises(DownloadError, match=r"needs \d+ B more but only 100 B is free .*free space"):
        _get(tmp_path, server, coco, annotations_only=True)
    assert _leftovers(tmp_path) == []
