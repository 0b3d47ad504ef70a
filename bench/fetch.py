"""Benchmark of ``data.images: fetch`` (not a test): images per second of the image fetcher against a naive loop,
and the bytes a 3,000-object sample fetches against COCO's 18 GiB ``train2017.zip``.

Everything runs against a loopback HTTP/1.1 server on 127.0.0.1 (``ThreadingHTTPServer``, keep-alive honoured)
that answers every ``/train2017/<12-digit id>.jpg`` with one of ``--pool`` synthetic 640x480 JPEGs (smooth
gradients plus noise, quality 90, the noise tuned so their mean size is close to COCO train2017's mean image
size, 19,336,861,798 / 118,287 = 163,474 bytes; image ``id`` gets ``pool[id % len(pool)]``).

1. **Which images.** Synthetic annotations shaped like COCO 2017 train: 118,287 image ids (drawn from COCO's
   id range), 860,001 objects (1,021 images without any, as in COCO; the others 1 + a negative binomial count,
   mean ~7.33, adjusted to the exact total),
   categories 1..80, boxes of area >= 100 on 640x480 images, no crowd regions. They become a dataset through
   :func:`objalign.data.coco.coco_from_doc`, objalign's own sampler
   (:func:`objalign.data.sample.sample_instances`, ``--n`` objects, ``--seed``) draws the sample, and
   :func:`objalign.data.fetched.sampled_urls` lists the distinct images it touches (``coco_url`` on
   images.cocodataset.org, fetched through the loopback server as ``data.mirror``).
2. **Images per second**, at two latencies: 0 ms (plain loopback) and ``--latency-ms`` (default 20), where the
   server sleeps that long before answering each request (a simulated round trip; the network itself stays
   loopback). Side by side on the same server and the same images, each into its own empty folder:

   * objalign's fetcher, :func:`objalign.data.download.images.fetch_files` (``--workers`` threads, default 16,
     each on one kept-alive connection; decode check with Pillow, atomic write), over every sampled image;
   * the baseline, a sequential loop: ``urllib.request.urlopen(url, timeout=...)`` per image (a new connection
     each time), read the body, the same decode check (``decode_problem``), a plain write. It is timed on the
     first ``--baseline-max`` images only (default 600; images per second is a rate), and the line says on how
     many.

   Each side's connections are counted on the server (connections it accepted); the fetcher's own count is shown
   beside it. With ``--repeats R`` > 1 each side runs R times (fresh empty folders each time) and the **median**
   seconds of each side is reported.
3. **Bytes**: the bytes the fetcher fetched for the sample (measured, at 0 ms), as a percentage and a fraction of
   ``train2017.zip``'s 19,336,861,798 bytes. The images are synthetic JPEGs sized like COCO's mean, so the byte
   figure estimates what the real fetch would be; the image count comes from objalign's real sampler.

Usage::

    python bench/fetch.py [--n 3000] [--workers 16] [--latency-ms 20] [--baseline-max 600] [--seed 0]
                          [--repeats 1] [--pool 48]

Last lines, one per latency (0 ms first)::

    latency_ms=<ms> images_per_s_fetch=<x> images_per_s_baseline=<y> ratio=<x/y> connections_fetch=<c>
    connections_baseline=<d> images=<distinct images fetched> baseline_images=<timed baseline images>
    bytes_fetched=<bytes> archive_bytes=19336861798 fraction=<bytes / archive_bytes>

(each on one line; ``connections_*`` are server-accepted connections of one run of that side).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import statistics
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

ARCHIVE_BYTES = 19_336_861_798  # train2017.zip
COCO_IMAGES = 118_287
COCO_OBJECTS = 860_001
COCO_EMPTY = 1_021  # train2017 images without an object annotation
COCO_MAX_ID = 581_929  # COCO 2017 train ids lie in 1..581,929
MEAN_BYTES = ARCHIVE_BYTES / COCO_IMAGES


def jpeg_pool(n: int, target: float, seed: int) -> tuple[list[bytes], float]:
    """``n`` distinct 640x480 JPEGs (quality 90) whose mean size is close to ``target`` bytes, and the noise
    amplitude that got there (bisection on one amplitude scaling every image's noise)."""
    from PIL import Image

    h, w = 480, 640
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bases, noises, spread = [], [], []
    for i in range(n):
        r = np.random.default_rng([seed, i])
        base = np.empty((h, w, 3), np.float32)
        for c in range(3):
            a, b, p = r.uniform(-1, 1, 3)
            base[..., c] = 128 + 60 * np.sin(a * xx / 90 + b * yy / 70 + 6 * p) + r.uniform(-40, 40)
        bases.append(base)
        noises.append(r.normal(size=(h, w, 3)).astype(np.float32))
        spread.append(r.uniform(0.6, 1.4))  # sizes vary around the mean, as real images' do

    def encode(amp):
        out = []
        for base, noise, s in zip(bases, noises, spread):
            buf = io.BytesIO()
            Image.fromarray(np.clip(base + amp * s * noise, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
            out.append(buf.getvalue())
        return out

    lo, hi = 0.0, 64.0
    best = None
    for _ in range(14):
        amp = (lo + hi) / 2
        bodies = encode(amp)
        mean = sum(map(len, bodies)) / n
        if best is None or abs(mean - target) < abs(best[1] - target):
            best = (bodies, mean, amp)
        if abs(mean - target) < 0.01 * target:
            break
        lo, hi = (amp, hi) if mean < target else (lo, amp)
    return best[0], best[2]


def coco_like(seed: int) -> dict:
    """A COCO instances document shaped like train2017: 118,287 images, 860,001 objects, 80 categories."""
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(COCO_MAX_ID, COCO_IMAGES, replace=False) + 1)
    # COCO train2017: 1,021 images without objects, the others 1 + a long-tailed count (mean ~7.33 in all)
    mean, r = COCO_OBJECTS / (COCO_IMAGES - COCO_EMPTY) - 1, 1.5
    counts = 1 + rng.negative_binomial(r, r / (r + mean), COCO_IMAGES)
    counts[rng.choice(COCO_IMAGES, COCO_EMPTY, replace=False)] = 0
    while (diff := COCO_OBJECTS - int(counts.sum())) != 0:
        idx = rng.integers(0, COCO_IMAGES, abs(diff))
        if diff > 0:
            np.add.at(counts, idx, 1)
        else:
            idx = np.unique(idx[counts[idx] > 1])
            counts[idx] -= 1
    image_of = np.repeat(ids, counts)
    bw = np.exp(rng.uniform(np.log(10), np.log(600), COCO_OBJECTS))
    bh = np.exp(rng.uniform(np.log(10), np.log(450), COCO_OBJECTS))
    bx = rng.uniform(0, 1, COCO_OBJECTS) * (640 - bw)
    by = rng.uniform(0, 1, COCO_OBJECTS) * (480 - bh)
    cat = rng.integers(1, 81, COCO_OBJECTS)
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480,
               "coco_url": f"http://images.cocodataset.org/train2017/{i:012d}.jpg"} for i in ids.tolist()]
    boxes = zip(*(np.round(v, 2).tolist() for v in (bx, by, bw, bh)))
    annotations = [{"id": k + 1, "image_id": im, "category_id": c, "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
                   for k, (im, c, (x, y, w, h)) in enumerate(zip(image_of.tolist(), cat.tolist(), boxes))]
    categories = [{"id": c, "name": f"category {c}"} for c in range(1, 81)]
    return {"images": images, "annotations": annotations, "categories": categories}


class Server:
    """The loopback image server: counts the connections it accepts and the requests it answers."""

    def __init__(self, pool: list[bytes]):
        self.pool = pool
        self.latency = 0.0
        self.lock = threading.Lock()
        self.connections = self.requests = 0
        owner = self
        pattern = re.compile(r"^/train2017/(\d{12})\.jpg$")

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive unless the client asks to close
            disable_nagle_algorithm = True

            def setup(self):
                super().setup()
                with owner.lock:
                    owner.connections += 1

            def do_GET(self):
                with owner.lock:
                    owner.requests += 1
                if owner.latency:
                    time.sleep(owner.latency)
                m = pattern.match(self.path)
                if m is None:
                    self.send_error(404)
                    return
                body = owner.pool[int(m.group(1)) % len(owner.pool)]
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="bench-fetch-server", daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.connections = self.requests = 0

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def baseline(urls: dict[str, str], dest: Path, timeout: float) -> int:
    """The naive way: one ``urlopen`` (a new connection) per image in turn, decode check, plain write; the bytes."""
    from objalign.data.download.images import decode_problem

    total = 0
    for rel, url in urls.items():
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read()
        problem = decode_problem(body)
        if problem is not None:
            raise SystemExit(f"baseline: {url} does not decode: {problem}")
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as fh:
            fh.write(body)
        total += len(body)
    return total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="objects sampled (sample.n)")
    ap.add_argument("--workers", type=int, default=16, help="fetch_files workers")
    ap.add_argument("--latency-ms", type=float, default=20.0,
                    help="simulated round trip: the server sleeps this long before each answer (second latency)")
    ap.add_argument("--baseline-max", type=int, default=600, help="images the sequential baseline is timed on")
    ap.add_argument("--seed", type=int, default=0, help="seed of the annotations, the sample and the JPEG pool")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each side; the median is reported")
    ap.add_argument("--pool", type=int, default=48, help="distinct synthetic JPEGs served")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds a connection may stay silent (both sides)")
    args = ap.parse_args(argv)
    if min(args.n, args.workers, args.baseline_max, args.repeats, args.pool) < 1 or args.latency_ms < 0:
        ap.error("--n, --workers, --baseline-max, --repeats and --pool must be positive, --latency-ms >= 0")

    from objalign.data.coco import coco_from_doc
    from objalign.data.download.images import fetch_files, mirrored
    from objalign.data.fetched import sampled_urls
    from objalign.data.sample import sample_instances

    started = time.perf_counter()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    pool, amp = jpeg_pool(args.pool, MEAN_BYTES, args.seed)
    sizes = [len(b) for b in pool]
    mean_size = sum(sizes) / len(sizes)
    print(f"pool: {len(pool)} synthetic 640x480 JPEGs (quality 90, gradients + noise x {amp:.2f}), mean "
          f"{mean_size:,.0f} bytes ({100 * (mean_size / MEAN_BYTES - 1):+.1f}% against COCO train2017's mean "
          f"{MEAN_BYTES:,.0f} = {ARCHIVE_BYTES:,} / {COCO_IMAGES:,}), range {min(sizes):,}-{max(sizes):,}; "
          f"{time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    doc = coco_like(args.seed)
    n_empty = len(doc["images"]) - len({a["image_id"] for a in doc["annotations"]})
    ds = coco_from_doc(doc, Path("synthetic/instances_train2017.json"), "synthetic", Path("unused"))
    del doc
    t_ds = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = sample_instances(ds, n=args.n, seed=args.seed)
    wanted = sampled_urls(ds, table["file_name"])
    n_images = len(wanted)
    print(f"annotations (synthetic, COCO train2017-shaped): {len(ds.images):,} images, {len(ds.annotations):,} "
          f"objects ({len(ds.annotations) / len(ds.images):.2f} per image, {n_empty:,} images with none), "
          f"{len(ds.categories)} categories, boxes of area >= 100; built and loaded in {t_ds:.1f} s")
    print(f"sample: objalign's sample_instances(n={args.n}, seed={args.seed}): {len(table['file_name']):,} objects on "
          f"{n_images:,} distinct images (of {len(ds.images):,}); {time.perf_counter() - t0:.1f} s")
    del ds

    server = Server(pool)
    base_urls = {rel: mirrored(url, server.url) for rel, url in list(wanted.items())[: args.baseline_max]}
    n_base = len(base_urls)
    expected = sum(len(pool[int(rel[:12]) % len(pool)]) for rel in wanted)
    tmp = Path(tempfile.mkdtemp(prefix="objalign-bench-fetch-"))
    summary = []
    how = "1 run each" if args.repeats == 1 else f"median of {args.repeats} runs each"
    try:
        for latency_ms in (0.0, args.latency_ms):
            server.latency = latency_ms / 1000
            fetch_s, base_s = [], []
            for rep in range(args.repeats):
                server.reset()
                res = fetch_files(wanted, tmp / f"fetch-{latency_ms:g}-{rep}" / "train2017", mirror=server.url,
                                  workers=args.workers, timeout=args.timeout, progress=False)
                conn_fetch, req_fetch = server.connections, server.requests
                if res["n_fetched"] != n_images or res["n_skipped"]:
                    raise SystemExit(f"fetch_files fetched {res['n_fetched']} of {n_images}: {res['skipped'][:1]}")
                if res["bytes_fetched"] != expected:
                    raise SystemExit(f"fetch_files fetched {res['bytes_fetched']} bytes, the server served {expected}")
                fetch_s.append(res["seconds"])
                server.reset()
                t0 = time.perf_counter()
                baseline(base_urls, tmp / f"base-{latency_ms:g}-{rep}" / "train2017", args.timeout)
                base_s.append(time.perf_counter() - t0)
                conn_base = server.connections
                shutil.rmtree(tmp / f"fetch-{latency_ms:g}-{rep}")
                shutil.rmtree(tmp / f"base-{latency_ms:g}-{rep}")
            tf, tb = statistics.median(fetch_s), statistics.median(base_s)
            rate_f, rate_b = n_images / tf, n_base / tb
            ratio = rate_f / rate_b
            lat = ("0 ms (plain loopback)" if not latency_ms else
                   f"{latency_ms:g} ms (simulated: the server sleeps {latency_ms:g} ms before each answer)")
            print(f"latency {lat}; {how}:\n"
                  f"  fetch_files ({args.workers} workers, kept-alive): {n_images:,} images in {tf:.2f} s = "
                  f"{rate_f:,.1f} images/s; {conn_fetch} connections accepted by the server ({res['connections']} "
                  f"opened by the fetcher), {req_fetch:,} requests\n"
                  f"  baseline (sequential urlopen, a new connection per image): {n_base:,} images in {tb:.2f} s = "
                  f"{rate_b:,.1f} images/s (measured on {n_base:,} images); {conn_base:,} connections\n"
                  f"  ratio fetch_files / baseline: {ratio:.2f}x", flush=True)
            summary.append(f"latency_ms={latency_ms:g} images_per_s_fetch={rate_f:.1f} images_per_s_baseline="
                           f"{rate_b:.1f} ratio={ratio:.2f} connections_fetch={conn_fetch} connections_baseline="
                           f"{conn_base} images={n_images} baseline_images={n_base} bytes_fetched={expected} "
                           f"archive_bytes={ARCHIVE_BYTES} fraction={expected / ARCHIVE_BYTES:.5f}")
    finally:
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"bytes: the sample's {n_images:,} images came to {expected:,} bytes ({expected / 1e9:.3f} GB) fetched, "
          f"{100 * expected / ARCHIVE_BYTES:.2f}% of train2017.zip's {ARCHIVE_BYTES:,} bytes "
          f"(1/{ARCHIVE_BYTES / expected:.0f}); "
          f"the images are synthetic JPEGs sized like COCO's mean, so the byte figure estimates the real fetch "
          f"(the image count is objalign's real sampler on COCO-shaped annotations)")
    print(f"total {time.perf_counter() - started:.1f} s; load average now {os.getloadavg()[0]:.1f}")
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()
