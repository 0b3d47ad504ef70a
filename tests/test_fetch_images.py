"""``data.images: fetch``: only the sampled objects' images, fetched by URL from a loopback server (never the
network) — many at once over kept-alive connections, atomic, resumed, retried after slow, failing and truncating
answers, a file that does not decode fetched once more and then skipped with its reason, the mirror honoured, the
dry run's counts, and a fetched run that gives the same report as a run on the local folder."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from objalign.config import load_config
from objalign.data import open_dataset
from objalign.data.download import DownloadError
from objalign.data.download import images as fetch_mod
from objalign.data.download.images import fetch_files, mirrored
from objalign.data.fetched import fetch_estimate
from objalign.data.sample import sample_instances
from objalign.errors import ObjalignError


def _jpeg(seed: int, size=(48, 40)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class ImageServer:
    """Files on 127.0.0.1 over HTTP/1.1 keep-alive. ``plan[path]`` is a list of what the next requests of that path
    get, consumed in order (then ``ok``): ``ok``, ``503``, ``404``, ``html``, ``slow`` (silent past the client's
    timeout), ``cut`` (Content-Length announced, half the body, connection closed), ``half`` (no Content-Length,
    half the body, connection closed: only the decoder notices), ``garbage`` (bytes that are no image) or
    ``redirect:/other``."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.plan, self.requests, self.ports = dict(files), {}, [], set()
        self.lock = threading.Lock()
        self.slow_s = 1.0
        state = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                with state.lock:
                    state.requests.append(self.path)
                    state.ports.add(self.client_address[1])
                    todo = state.plan.get(self.path) or ["ok"]
                    action = todo.pop(0) if state.plan.get(self.path) else "ok"
                body = state.files.get(self.path)
                if action.startswith("redirect:"):
                    return self._send(302, b"", {"Location": action.split(":", 1)[1]})
                if body is None or action == "404":
                    return self._send(404, b"not here")
                if action == "503":
                    return self._send(503, b"busy")
                if action == "html":
                    return self._send(200, b"<html>login</html>", {"Content-Type": "text/html"})
                if action == "garbage":
                    return self._send(200, b"\x00" * 300)
                if action == "gzip":
                    import gzip

                    return self._send(200, gzip.compress(body), {"Content-Encoding": "gzip"})
                if action == "huge":  # announces 100 GB, sends a little and closes
                    self.send_response(200)
                    self.send_header("Content-Length", str(10**11))
                    self.end_headers()
                    self.wfile.write(body[:100])
                    self.close_connection = True
                    return
                if action.startswith("raw-redirect:"):  # a Location in raw UTF-8, as some servers send it
                    target = action.split(":", 1)[1].encode().decode("latin-1")
                    return self._send(302, b"", {"Location": target})
                if action == "slow":
                    time.sleep(state.slow_s)
                    self.close_connection = True
                    return
                if action in ("cut", "half"):
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    if action == "cut":
                        self.send_header("Content-Length", str(len(body)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                self._send(200, body)

            def _send(self, status, body, headers=None):
                self.send_response(status)
                headers = {"Content-Type": "image/jpeg", **(headers or {})}
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def count(self, path: str) -> int:
        return sum(p == path for p in self.requests)


@contextlib.contextmanager
def running(httpd):
    """Serve ``httpd`` on a thread for the block; shut it down after (every wait bounded)."""
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def serve(files: dict[str, bytes]):
    server = ImageServer(files)
    with running(server.httpd):
        yield server


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    monkeypatch.setattr(fetch_mod, "_BACKOFF_S", 0.0)


@pytest.fixture(scope="module")
def images():
    return {f"/img/{i:04d}.jpg": _jpeg(i) for i in range(60)}


def _wanted(server, paths) -> dict[str, str]:
    return {p.rsplit("/", 1)[1]: server.url + p for p in paths}


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.rglob("*") if p.name.startswith(".") or p.name.endswith(".part"))


def test_many_files_over_few_kept_alive_connections_then_a_rerun_fetches_nothing(tmp_path, images):
    with serve(images) as server:
        got = fetch_files(_wanted(server, images), tmp_path, workers=4, progress=False)
        assert got["n_fetched"] == 60 and got["n_skipped"] == 0 and got["requests"] == 60
        assert got["bytes_fetched"] == sum(len(b) for b in images.values())
        assert got["connections"] <= 4 and len(server.ports) <= 4  # kept alive: not one per image
        for path, body in images.items():
            assert (tmp_path / path.rsplit("/", 1)[1]).read_bytes() == body
        again = fetch_files(_wanted(server, images), tmp_path, workers=4, progress=False)
        assert again["n_present"] == 60 and again["n_fetched"] == 0 and again["requests"] == 0
        assert len(server.requests) == 60  # the rerun asked the server nothing
    assert _leftovers(tmp_path) == []


def test_slow_failing_and_truncating_answers_are_retried(tmp_path, images):
    paths = list(images)[:6]
    with serve(images) as server:
        server.slow_s = 1.5
        server.plan = {paths[0]: ["503", "503"], paths[1]: ["cut"], paths[2]: ["slow"], paths[3]: ["half"],
                       paths[4]: ["redirect:/img/0004.jpg?moved"], "/img/0004.jpg?moved": ["redirect:" + paths[5]]}
        got = fetch_files(_wanted(server, paths[:5]), tmp_path, workers=3, timeout=0.5, progress=False)
        assert got["n_fetched"] == 5 and got["skipped"] == []
        assert [server.count(p) for p in paths[:4]] == [3, 2, 2, 2]
        assert (tmp_path / "0004.jpg").read_bytes() == images[paths[5]]  # redirects followed
        for p in paths[:4]:
            assert (tmp_path / p.rsplit("/", 1)[1]).read_bytes() == images[p]
    assert _leftovers(tmp_path) == []


def test_a_file_that_never_decodes_is_fetched_twice_then_skipped_with_its_reason(tmp_path, images):
    paths = list(images)[:5]
    with serve(images) as server:
        server.plan = {paths[0]: ["garbage", "garbage"], paths[1]: ["404"], paths[2]: ["html"],
                       paths[3]: ["503"] * 10}
        wanted = {**_wanted(server, paths), "bad-url.jpg": "ftp://example.org/x.jpg"}
        got = fetch_files(wanted, tmp_path, workers=2, retries=2, progress=False)
        reasons = {r["file"]: r["reason"] for r in got["skipped"]}
        assert got["n_fetched"] == 1 and got["n_skipped"] == 5
        assert "does not decode as an image, fetched twice" in reasons["0000.jpg"] and server.count(paths[0]) == 2
        assert reasons["0001.jpg"] == "HTTP 404" and server.count(paths[1]) == 1  # not retried
        assert "HTML page" in reasons["0002.jpg"]
        assert reasons["0003.jpg"] == "failed after 3 attempts: HTTP 503" and server.count(paths[3]) == 3
        assert "not an http(s) URL" in reasons["bad-url.jpg"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["0004.jpg"]  # nothing kept of the skipped ones
        server.plan = {}
        again = fetch_files(_wanted(server, paths), tmp_path, workers=2, progress=False)  # a rerun tries again
        assert again["n_fetched"] == 4 and again["n_present"] == 1 and again["n_skipped"] == 0


def test_mirror_replaces_scheme_and_host_and_keeps_the_path(tmp_path, images):
    assert mirrored("http://images.cocodataset.org/train2017/x.jpg", "https://m.example/coco/") == \
        "https://m.example/coco/train2017/x.jpg"
    assert mirrored("http://a.org/x.jpg?s=1", None) == "http://a.org/x.jpg?s=1"
    files = {f"/mirror{p}": b for p, b in images.items()}
    with serve(files) as server:
        wanted = {p.rsplit("/", 1)[1]: f"http://images.cocodataset.org{p}" for p in list(images)[:3]}
        got = fetch_files(wanted, tmp_path, mirror=server.url + "/mirror", progress=False)
        assert got["n_fetched"] == 3 and sorted(server.requests) == sorted(f"/mirror{p}" for p in list(images)[:3])
    with pytest.raises(DownloadError, match="mirror = 'nonsense'"):
        fetch_files(wanted, tmp_path, mirror="nonsense")


def test_disk_full_is_one_line_and_keeps_what_was_fetched(tmp_path, images, monkeypatch):
    paths = list(images)[:4]
    real_open = open
    written = []

    def full_after_two(path, mode="r", *a, **kw):
        if "w" in mode and ".tmp-" in Path(path).name:
            if len(written) >= 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            written.append(path)
        return real_open(path, mode, *a, **kw)

    import objalign.atomic

    monkeypatch.setattr(objalign.atomic, "open", full_after_two, raising=False)
    with serve(images) as server, pytest.raises(DownloadError, match=r"disk full while writing .*rerun"):
        fetch_files(_wanted(server, paths), tmp_path, workers=1, progress=False)
    assert len([p for p in tmp_path.iterdir() if p.suffix == ".jpg"]) == 2 and _leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------ datasets, runs


def coco_with_urls(demo: Path, base: str, path: Path) -> dict:
    """The demo's annotations with each image's ``coco_url`` under ``base`` (``{base}/images/NAME``)."""
    doc = json.loads((demo / "annotations.json").read_text())
    for im in doc["images"]:
        im["coco_url"] = f"{base}/images/{im['file_name']}"
    path.write_text(json.dumps(doc))
    return doc


def demo_files(demo: Path) -> dict[str, bytes]:
    return {f"/images/{p.name}": p.read_bytes() for p in (demo / "images").iterdir()}


def _cfg(root: Path, *extra: str):
    return load_config(None, ["data.kind=coco", f"data.root={root}", "data.images=fetch", "sample.n=60",
                              "sample.min_area=0", *extra])


def test_only_the_sampled_images_are_fetched_and_the_dry_run_counts_them(small_demo, tmp_path, capsys):
    from objalign.data.plan import data_plan
    from objalign.data.stage import run_sample

    with serve(demo_files(small_demo)) as server:
        coco_with_urls(small_demo, "http://images.example.org", tmp_path / "annotations.json")
        cfg = _cfg(tmp_path, f"data.mirror={server.url}")
        plan = "\n".join(data_plan(cfg))
        ds = open_dataset(cfg.data)
        table = sample_instances(ds, n=60, min_area=0)
        n_img = len(set(table["file_name"].tolist()))
        assert 0 < n_img < len(ds.images)
        assert f"fetch     {n_img} images of the sample (of {len(ds.images)} in the annotations)" in plan
        assert "0 already there" in plan and "size unknown before the first images are fetched" in plan
        assert server.requests == []  # the dry run touches no network
        run_sample(cfg, tmp_path / "run", progress=False)
        assert len(server.requests) == n_img and all(p.startswith("/images/") for p in server.requests)
        fetched = json.loads((tmp_path / "run" / "sample" / "fetched.json").read_text())
        assert fetched["n_fetched"] == n_img and fetched["dest"] == str(tmp_path / "fetched")
        assert sorted(p.name for p in (tmp_path / "fetched").iterdir()) == sorted(set(table["file_name"].tolist()))
        est = fetch_estimate(ds, table["file_name"].tolist())
        assert est == {"n_images": n_img, "n_present": n_img, "n_missing": 0, "bytes": 0, "how": ""}
        plan = "\n".join(data_plan(cfg))
        assert f"{n_img} already there, nothing to fetch" in plan
        run_sample(cfg, tmp_path / "run", progress=False)  # reused, and nothing fetched again
        assert len(server.requests) == n_img
        image = ds.image_source().load(table["file_name"][0])
        assert image.shape[2] == 3 and image.dtype == np.uint8


def test_a_failed_image_is_recorded_and_its_objects_skipped_later(small_demo, tmp_path, capsys):
    from objalign.data.stage import run_sample

    files = demo_files(small_demo)
    with serve(files) as server:
        doc = coco_with_urls(small_demo, server.url, tmp_path / "annotations.json")
        doc["images"][0]["coco_url"] = ""  # no URL: its annotations are left out before sampling
        (tmp_path / "annotations.json").write_text(json.dumps(doc))
        cfg = _cfg(tmp_path, "sample.n=1000")
        ds = open_dataset(cfg.data)
        assert {r["kind"] for r in ds.excluded} == {"image without url"}
        server.plan = {f"/images/{doc['images'][1]['file_name']}": ["garbage", "garbage"]}
        run_sample(cfg, tmp_path / "run", progress=False)
        err = capsys.readouterr().err
        assert "1 of 39 sampled image(s) could not be fetched" in err and "does not decode" in err
        with pytest.raises(FileNotFoundError, match="was not fetched into .*sample/fetched.json"):
            ds.image_source().load(doc["images"][1]["file_name"])


def test_config_refuses_fetch_where_there_are_no_urls():
    with pytest.raises(ObjalignError, match="data.kind = 'demo' has no image URLs to fetch"):
        load_config(None, ["data.images=fetch"])
    with pytest.raises(ObjalignError, match="fetch cannot be one of several locations"):
        load_config(None, ["data.kind=coco", "data.images=[fetch, other]"])
    with pytest.raises(ObjalignError, match="images_from_zip = true reads the whole image archive"):
        load_config(None, ["data.kind=coco2017", "data.images=fetch", "data.images_from_zip=true"])
    with pytest.raises(ObjalignError, match="data.fetch_workers"):
        load_config(None, ["data.kind=coco", "data.images=fetch", "data.fetch_workers=0"])


def test_coco2017_fetches_the_annotations_archive_and_the_sampled_images_only(tmp_path):
    import hashlib  # noqa: F401 - the archive is checked by the server's size and its CRCs here
    import zipfile

    from objalign.data.stage import run_sample

    files = {f"/train2017/{i:012d}.jpg": _jpeg(i) for i in range(1, 31)}
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 48, "height": 40,
               "coco_url": f"http://images.cocodataset.org/train2017/{i:012d}.jpg"} for i in range(1, 31)]
    anns = [{"id": 100 + i, "image_id": i, "category_id": 1 + i % 2, "bbox": [2, 3, 20, 20], "area": 400,
             "iscrowd": 0} for i in range(1, 31)]
    doc = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("annotations/", b"")
        zf.writestr("annotations/instances_train2017.json", json.dumps(doc))
        zf.writestr("annotations/instances_val2017.json", json.dumps({**doc, "annotations": []}))
    files["/annotations/annotations_trainval2017.zip"] = buf.getvalue()
    with serve(files) as server:
        cfg = load_config(None, ["data.kind=coco2017", f"data.root={tmp_path}", "data.images=fetch",
                                 f"data.mirror={server.url}", "data.official_checksums=false", "sample.n=8"])
        run_sample(cfg, tmp_path / "run", progress=False)
        jpgs = [p for p in server.requests if p.endswith(".jpg")]
        assert len(jpgs) == 8 and not any("zips" in p for p in server.requests)
        assert sorted(p.name for p in (tmp_path / "fetched" / "train2017").iterdir()) == \
            sorted(p.rsplit("/", 1)[1] for p in jpgs)


def test_lvis_and_visual_genome_fetch_by_their_urls(small_demo, tmp_path):
    from test_lvis import lvis_doc
    from test_visual_genome import make_vg

    from objalign.data.stage import run_sample

    lvis = lvis_doc(small_demo)
    files = {}
    for im in lvis["images"]:
        split, name = im["coco_url"].split("/")[-2:]
        files[f"/{split}/{name}"] = (small_demo / "images" / name).read_bytes()
    (tmp_path / "lvis").mkdir()
    (tmp_path / "lvis" / "lvis_v1_val.json").write_text(json.dumps(lvis))
    vg = tmp_path / "vg"
    make_vg(small_demo, vg)
    for folder in ("VG_100K", "VG_100K_2"):
        for p in (vg / folder).iterdir():
            files[f"/people/rak248/{folder}/{p.name}"] = p.read_bytes()
        shutil.rmtree(vg / folder)  # the images exist only behind the server
    with serve(files) as server:
        cfg = load_config(None, ["data.kind=lvis", f"data.root={tmp_path / 'lvis'}", "data.images=fetch",
                                 "data.annotations=lvis_v1_val.json", f"data.mirror={server.url}", "sample.n=20"])
        run_sample(cfg, tmp_path / "run_lvis", progress=False)
        ds = open_dataset(cfg.data)
        fetched = tmp_path / "lvis" / "fetched"
        got = sorted(str(p.relative_to(fetched)) for p in fetched.rglob("*.jpg"))
        assert got and all(g.split("/")[0] in ("train2017", "val2017") for g in got)  # coco_url's last two parts
        assert ds.image_source().load(got[0]).shape[2] == 3
        cfg = load_config(None, ["data.kind=visual_genome", f"data.root={vg}", "data.images=fetch",
                                 "data.categories=attribute_name", f"data.mirror={server.url}", "sample.n=20"])
        n = len(server.requests)
        run_sample(cfg, tmp_path / "run_vg", progress=False)
        assert len(server.requests) > n and all(p.startswith("/people/rak248/VG_100K")
                                                for p in server.requests[n:])
        assert json.loads((tmp_path / "run_vg" / "sample" / "fetched.json").read_text())["n_skipped"] == 0


def _figures(report: dict) -> dict:
    """The report's figures, without what names the folders or says when and how long."""
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if k != "dataset" and "seconds" not in k}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return clean(report)


@pytest.mark.slow
def test_a_fetched_run_gives_the_same_report_as_the_local_folder(small_demo, tmp_path, capfd):
    """The images only behind the server: a first fetched run that cannot get one image skips its objects; the
    rerun fetches it and recomputes, and its report equals the local folder's (only paths and times differ)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from test_sources_run import make_tiny

    from objalign.cli import main
    from objalign.encoders import VISION_ENCODERS

    local, remote = tmp_path / "local", tmp_path / "remote"
    shutil.copytree(small_demo, local)
    remote.mkdir()
    VISION_ENCODERS.register("tiny-dinov2-fetch", f"{make_tiny.__module__}:make_tiny")
    try:
        with serve(demo_files(small_demo)) as server:
            coco_with_urls(small_demo, server.url, local / "annotations.json")
            shutil.copyfile(local / "annotations.json", remote / "annotations.json")
            common = ["--set", "data.kind=coco", "--set", "sample.n=1000", "--set", "sample.min_area=0",
                      "--vision", "tiny-dinov2-fetch", "--set", "align.cv_folds=2", "--set", "align.category_folds=3",
                      "--set", "align.gammas=[1]", "--set", "align.alphas=[1,10]", "--set", "align.n_permutations=0",
                      "--set", "align.n_bootstrap=0", "--set", "report.html=false", "--no-progress"]
            lost = sorted(demo_files(small_demo))[0]
            server.plan = {lost: ["503"] * 4}  # the first run never gets this image
            for root, images in ((local, "images"), (remote, "fetch"), (remote, "fetch")):
                code = main(["run", "--out", str(root / "run"), "--set", f"data.root={root}",
                             "--set", f"data.images={images}", *common])
                assert code == 0, capfd.readouterr().err[-3000:]
                if root == remote and server.plan[lost]:  # after the first fetched run
                    first = json.loads((remote / "run" / "report.json").read_text())
                    assert first["n_skipped"] > 0 and capfd.readouterr().err.count("could not be fetched") == 1
                    server.plan = {}
            assert len(server.requests) == 39 + 4 + 1  # the others once, the lost one 4 times, then once more
    finally:
        del VISION_ENCODERS._entries["tiny-dinov2-fetch"]
    a = json.loads((local / "run" / "report.json").read_text())
    b = json.loads((remote / "run" / "report.json").read_text())
    assert a["n_skipped"] == b["n_skipped"] == 0  # the rerun recomputed what was computed without the image
    assert a["dataset"] != b["dataset"] and _figures(a) == _figures(b)  # only the paths and the times differ
    assert len(a["results"]) > 4 and a["results"][0]["top1"] == b["results"][0]["top1"]


def test_the_reference_configuration_fetches_only_its_sample(small_demo, tmp_path, capsys):
    """configs/coco2017_thesis.yaml defaults to data.images: fetch: its dry run plans the annotations archive and the
    sample's images, never train2017.zip, and estimates the bytes from train2017.zip's mean image."""
    from objalign.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "coco2017_thesis.yaml"
    args = ["run", str(config), "--dry-run", "--set", f"data.root={tmp_path}", "--set", "sample.n=50"]
    assert load_config(config).data.images == "fetch"
    assert main(args) == 0
    plan = capsys.readouterr().out
    assert "download  annotations/annotations_trainval2017.zip (~241 MiB)" in plan and "zips/" not in plan
    assert "sample    up to 50 instances" in plan
    (tmp_path / "annotations").mkdir()
    coco_with_urls(small_demo, "http://images.cocodataset.org/train2017", tmp_path / "annotations" /
                   "instances_train2017.json")
    assert main(args) == 0
    plan = capsys.readouterr().out
    line = next(x for x in plan.splitlines() if x.startswith("fetch"))
    assert "0 already there" in line and "(train2017.zip's size over its 118,287 images)" in line
    assert "instead of train2017.zip's 18.01 GiB" in line
    assert not (tmp_path / "fetched").exists()  # planned, not fetched


def test_an_interrupted_fetch_ends_promptly_and_keeps_what_it_has(tmp_path, images, monkeypatch):
    """Ctrl-C (here raised where the main thread waits) stops every worker before its next attempt, so a fetch
    that is retrying a failing server returns at once instead of finishing each file's retries."""
    monkeypatch.setattr(fetch_mod, "_BACKOFF_S", 0.2)
    paths = list(images)[:20]

    def interrupted(futures):
        time.sleep(0.3)
        raise KeyboardInterrupt
        yield  # pragma: no cover

    monkeypatch.setattr(fetch_mod, "as_completed", interrupted)
    with serve(images) as server:
        server.plan = {p: ["503"] * 20 for p in paths}
        started = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            fetch_files(_wanted(server, paths), tmp_path, workers=2, retries=10, progress=False)
        assert time.perf_counter() - started < 2.0  # 20 files x 10 retries with back-off would take minutes
        assert len(server.requests) <= 6
    assert _leftovers(tmp_path) == []


@contextlib.contextmanager
def forward_proxy():
    """A plain-http forward proxy on 127.0.0.1 that records the absolute URLs and the Proxy-Authorization it gets."""
    import urllib.request

    seen = []
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append((self.path, self.headers.get("Proxy-Authorization")))
            with direct.open(self.path, timeout=10) as resp:
                body = resp.read()
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with running(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as httpd:
        yield httpd.server_address[1], seen


def test_the_environment_s_http_proxy_is_used_unless_no_proxy_exempts_the_host(tmp_path, images, monkeypatch):
    paths = list(images)[:5]
    for key in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(key, raising=False)
    with serve(images) as origin, forward_proxy() as (port, seen):
        monkeypatch.setenv("http_proxy", f"http://user:p%40ss@127.0.0.1:{port}")
        got = fetch_files(_wanted(origin, paths), tmp_path / "a", workers=2, progress=False)
        assert got["n_fetched"] == 5 and sorted(u for u, _ in seen) == sorted(origin.url + p for p in paths)
        assert {a for _, a in seen} == {"Basic dXNlcjpwQHNz"}  # user:p@ss
        assert len(origin.requests) == 5  # each image once, through the proxy
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        got = fetch_files(_wanted(origin, paths), tmp_path / "b", workers=2, progress=False)
        assert got["n_fetched"] == 5 and len(seen) == 5  # exempt: straight to the server


@contextlib.contextmanager
def connect_proxy():
    """A CONNECT proxy on 127.0.0.1 (what https goes through): records each tunnel's target and credentials."""
    import select
    import socket

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_CONNECT(self):
            seen.append((self.path, self.headers.get("Proxy-Authorization")))
            host, port = self.path.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)), timeout=10)
            self.send_response(200, "Connection established")
            self.end_headers()
            self.wfile.flush()
            ends = [self.connection, upstream]
            try:
                while True:
                    ready, _, _ = select.select(ends, [], [], 10)
                    if not ready:
                        break
                    for s in ready:
                        data = s.recv(65536)
                        if not data:
                            return
                        (upstream if s is self.connection else self.connection).sendall(data)
            finally:
                upstream.close()
                self.close_connection = True

    with running(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as httpd:
        yield httpd.server_address[1], seen


def test_https_directly_and_through_a_connect_tunnel(tmp_path, images, monkeypatch):
    """https with certificate checks (a test CA made by trustme, trusted through SSL_CERT_FILE): straight to the
    server, then through the environment's https_proxy as a CONNECT tunnel with Basic credentials."""
    import ssl

    trustme = pytest.importorskip("trustme")  # in the test extra; a skip fails CI (.ci/run)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    for key in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    paths = list(images)[:4]
    with serve(images) as origin, connect_proxy() as (port, seen):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(ctx)
        origin.httpd.socket = ctx.wrap_socket(origin.httpd.socket, server_side=True)
        wanted = {k: v.replace("http://", "https://") for k, v in _wanted(origin, paths).items()}
        got = fetch_files(wanted, tmp_path / "direct", workers=2, progress=False)
        assert got["n_fetched"] == 4 and got["skipped"] == [] and seen == []
        monkeypatch.setenv("https_proxy", f"http://me:secret@127.0.0.1:{port}")
        got = fetch_files(wanted, tmp_path / "tunnel", workers=2, progress=False)
        assert got["n_fetched"] == 4 and got["skipped"] == []
        host = origin.url.removeprefix("http://")
        assert seen and set(seen) == {(host, "Basic bWU6c2VjcmV0")}  # me:secret
        assert len(origin.requests) == 8
        for p in paths:
            assert (tmp_path / "tunnel" / p.rsplit("/", 1)[1]).read_bytes() == images[p]
        monkeypatch.delenv("SSL_CERT_FILE")  # an untrusted certificate is a skipped file with its reason
        n = len(origin.requests)
        got = fetch_files({"x.jpg": wanted[paths[0].rsplit("/", 1)[1]]}, tmp_path / "untrusted", progress=False)
        assert got["n_skipped"] == 1 and "certificate is not trusted" in got["skipped"][0]["reason"]
        assert len(origin.requests) == n  # refused at the handshake, and not retried


def test_the_lvis_configuration_plans_the_archive_and_then_the_sample_s_images(tmp_path, capsys):
    from objalign.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "lvis_v1_val.yaml"
    assert main(["run", str(config), "--dry-run", "--set", f"data.root={tmp_path}"]) == 0
    plan = capsys.readouterr().out
    assert "download  LVIS/lvis_v1_val.json.zip" in plan and "train2017.zip" not in plan
    assert "fetch     the sampled objects' images by URL once the annotations are there (at most 3000" in plan


def test_odd_urls_and_answers_skip_their_file_or_are_handled_never_stopping_the_others(tmp_path, images):
    body = images["/img/0000.jpg"]
    files = {**images, "/img/caf%C3%A9.jpg": body, "/img/a%20b.jpg": body}
    with serve(files) as server:
        server.plan = {"/img/0001.jpg": ["gzip"], "/img/0002.jpg": ["huge"],
                       "/img/0003.jpg": ["raw-redirect:/img/café.jpg"]}
        wanted = {"cafe.jpg": server.url + "/img/café.jpg", "space.jpg": server.url + "/img/a b.jpg",
                  "gz.jpg": server.url + "/img/0001.jpg", "huge.jpg": server.url + "/img/0002.jpg",
                  "moved.jpg": server.url + "/img/0003.jpg", "port.jpg": "http://127.0.0.1:99999/x.jpg",
                  "v6.jpg": "http://[::1/x.jpg", "ok.jpg": server.url + "/img/0004.jpg"}
        got = fetch_files(wanted, tmp_path, workers=3, progress=False)
    reasons = {r["file"]: r["reason"] for r in got["skipped"]}
    assert sorted(reasons) == ["huge.jpg", "port.jpg", "v6.jpg"], reasons
    assert "more than 256 MiB" in reasons["huge.jpg"] and "cannot be read" in reasons["port.jpg"]
    for name in ("cafe.jpg", "space.jpg", "moved.jpg"):  # percent-encoded as urllib sends them
        assert (tmp_path / name).read_bytes() == body
    assert (tmp_path / "gz.jpg").read_bytes() == images["/img/0001.jpg"]  # a gzip Content-Encoding undone
    assert (tmp_path / "ok.jpg").is_file() and _leftovers(tmp_path) == []


def test_an_unreachable_host_stops_the_fetch_in_one_line_instead_of_retrying_every_file(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    wanted = {f"{i}.jpg": f"http://127.0.0.1:{port}/{i}.jpg" for i in range(200)}
    started = time.perf_counter()
    with pytest.raises(DownloadError, match=r"no image could be fetched: the first 4 failed to connect .*rerun"):
        fetch_files(wanted, tmp_path, workers=2, retries=1, progress=False)
    assert time.perf_counter() - started < 10


def test_a_file_name_two_urls_share_is_left_out_when_fetching(small_demo, tmp_path):
    doc = coco_with_urls(small_demo, "http://images.example.org", tmp_path / "annotations.json")
    doc["images"][1]["file_name"] = doc["images"][0]["file_name"]
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    ds = open_dataset(_cfg(tmp_path).data)
    kinds = {r["image_id"]: r["kind"] for r in ds.excluded}
    assert set(kinds) == {doc["images"][0]["id"], doc["images"][1]["id"]}
    assert set(kinds.values()) == {"file_name shared by URLs"}


def test_a_file_without_urls_is_one_line_saying_so(small_demo, tmp_path):
    shutil.copyfile(small_demo / "annotations.json", tmp_path / "annotations.json")  # no coco_url at all
    ds = open_dataset(_cfg(tmp_path).data)
    with pytest.raises(ObjalignError, match=r"every annotation was left out when the dataset loaded \(\d+ image "
                                            r"without url; first: image \d+ has no http\(s\) URL"):
        sample_instances(ds, n=10)


def test_temporary_files_of_a_killed_fetch_are_removed_by_the_next(tmp_path, images):
    import subprocess
    import sys

    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname().replace("~", "-")
    left = tmp_path / "sub" / f".0000.jpg.tmp-{host}~{dead.stdout.strip()}~0123abcd"  # the process has exited
    alive = tmp_path / f".0001.jpg.tmp-{host}~{os.getppid()}~0123abcd"  # still runs: not ours to remove
    left.parent.mkdir()
    left.write_bytes(b"half")
    alive.write_bytes(b"half")
    paths = list(images)[:2]
    with serve(images) as server:
        wanted = {"sub/0000.jpg": server.url + paths[0], "0001.jpg": server.url + paths[1]}
        got = fetch_files(wanted, tmp_path, progress=False)
    assert got["n_fetched"] == 2 and not left.exists() and alive.exists()


def test_a_connection_without_an_explicit_port_is_dropped_after_a_failure():
    """URLs such as http://images.cocodataset.org/... carry no port: the connection kept for them must be the one
    a failure drops (else the broken connection would be reused)."""
    conns = fetch_mod._Connections(timeout=1.0)
    a = conns.get("http", "images.example.org", None)
    assert conns.get("http", "images.example.org", 80) is a and (a.host, a.port) == ("images.example.org", 80)
    conns.drop("http", "images.example.org", None)
    assert conns.get("http", "images.example.org", None) is not a
    v6 = conns.get("https", "::1", None)
    assert (v6.host, v6.port) == ("::1", 443)
    conns.close()
