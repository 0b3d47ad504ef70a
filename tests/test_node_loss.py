"""A node lost in the middle of a distributed embed run: its worker's shards go to the live worker (and to a
replacement started on a spare node when there is one), and the store equals the local executor's, byte for byte.

A simulated Ray cluster (``ray.cluster_utils.Cluster``) starts once for the module: a head without GPUs and
worker nodes with one logical GPU each. Each test runs ``objalign embed --executor ray`` with two one-GPU workers
in a thread, waits (bounded) until a worker is computing, removes that worker's node and checks the result.
"""

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("torch")
pytest.importorskip("transformers")
from ray.cluster_utils import Cluster  # noqa: E402
from tiny_models import cli_args, registered, store_files, temporaries, vision_store  # noqa: E402

from objalign.cli import main  # noqa: E402
from objalign.compute import release_workers  # noqa: E402
from objalign.encoders import VISION_ENCODERS  # noqa: E402

TESTS = Path(__file__).parent
N_OBJECTS, SHARD = 48, 8  # 6 shards of two 4-crop batches each
RAY = ["--executor", "ray", "--workers", "2", "--set", "compute.gpus_per_worker=1", "--set",
       "compute.start_timeout_s=20"]


def args(out, data) -> list[str]:
    a = cli_args(out, data)
    a[a.index("sample.n=30")] = f"sample.n={N_OBJECTS}"
    return a


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    faults = tmp_path_factory.mktemp("faults")
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "OBJALIGN_TEST_FAULT_DIR")}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS)] + sys.path)  # the nodes' workers inherit it
    os.environ["OBJALIGN_TEST_FAULT_DIR"] = str(faults)
    encoder = registered(VISION_ENCODERS, "tiny-dinov2-dist", "tiny_models:make_tiny_dinov2")
    encoder.__enter__()
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 0})
    try:
        ray.init(address=c.address, logging_level="warning", log_to_driver=False)
        yield {"cluster": c, "faults": faults}
    finally:
        release_workers()
        ray.shutdown()
        c.shutdown()
        encoder.__exit__(None, None, None)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def reference(cluster, small_demo, tmp_path_factory):
    base = tmp_path_factory.mktemp("ref") / "base"
    for stage in ("sample", "crop"):
        assert main([stage] + args(base, small_demo)) == 0
    one = base.parent / "one"
    shutil.copytree(base, one)
    assert main(["embed"] + args(one, small_demo)) == 0
    files = store_files(vision_store(one))
    assert sum(1 for k in files if k.startswith("emb/")) == N_OBJECTS // SHARD
    return base, files


def _gpu_nodes(c, n):
    nodes = [c.add_node(num_cpus=1, num_gpus=1) for _ in range(n)]
    c.wait_for_nodes(timeout=60)
    return nodes


def _run_losing_a_node(cluster, reference, data, tmp_path, spare: bool):
    c, faults = cluster["cluster"], cluster["faults"]
    release_workers()
    for f in faults.glob("*"):
        f.unlink()
    workers = _gpu_nodes(c, 2)
    extra = []
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    (faults / "delay").write_text("0.3")
    (faults / "record-nodes").write_text("")
    result = {}

    def embed():
        try:
            result["rc"] = main(["embed"] + args(out, data) + RAY)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            result["exc"] = exc

    t = threading.Thread(target=embed, daemon=True)
    t.start()
    try:
        deadline = time.time() + 60
        busy = []
        while time.time() < deadline and not busy and t.is_alive():
            busy = [n for n in workers if (faults / f"node-{n.node_id}").is_file()]
            time.sleep(0.02)
        assert busy, f"no worker started computing: {result}"
        if spare:  # added only now, so the first two workers land on the two nodes above
            extra = [c.add_node(num_cpus=1, num_gpus=1)]
        c.remove_node(busy[0], allow_graceful=False)
        t.join(timeout=120)
        assert not t.is_alive(), "the run did not end within 120 s of the node's loss"
    finally:
        (faults / "delay").unlink(missing_ok=True)
        (faults / "record-nodes").unlink(missing_ok=True)
    assert result.get("rc") == 0, result
    rec = json.loads((out / "embed" / "stage.json").read_text())["summary"]
    assert rec["executor"] == "ray" and rec["shards_computed"] >= 1
    assert store_files(vision_store(out)) == reference[1]
    assert temporaries(out) == []
    release_workers()
    for n in [w for w in workers if w is not busy[0]] + extra:
        c.remove_node(n)
    return faults, workers, extra, busy[0]


def test_a_lost_node_with_no_spare_leaves_its_shards_to_the_live_worker(cluster, reference, small_demo, tmp_path):
    faults, workers, _, lost = _run_losing_a_node(cluster, reference, small_demo, tmp_path, spare=False)
    other = next(n for n in workers if n is not lost)
    assert (faults / f"node-{other.node_id}").is_file()


def test_a_lost_node_is_replaced_on_a_spare_node(cluster, reference, small_demo, tmp_path):
    _run_losing_a_node(cluster, reference, small_demo, tmp_path, spare=True)
