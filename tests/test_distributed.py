"""The Ray executor on a CPU machine: Ray's GPUs are logical, so ``ray.init(num_gpus=2)`` schedules "GPU" actors.

Ray starts once for the module. Every stage runs on a demo subset whose last shard is partial (30 objects in
shards of 8, batches of 4, so a shard has two batches) and is compared byte for byte with the local
executor's store: 2 and 3 workers, a worker killed in the middle of a shard, a driver killed after its first
shards, the SAM crop stage; and the requests the cluster can never serve fail in one line.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_models import cli_args, one_process_reference, store_files, temporaries, vision_store  # noqa: E402

from objalign.cli import main  # noqa: E402
from objalign.crops import CROP_MODES  # noqa: E402
from objalign.encoders import VISION_ENCODERS  # noqa: E402

TESTS = Path(__file__).parent
N_SHARDS = 4  # 30 objects, shards of 8: 8 + 8 + 8 + 6


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    fault_dir = tmp_path_factory.mktemp("faults")
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "OBJALIGN_TEST_FAULT_DIR")}
    # Ray's workers inherit the environment the cluster starts with: tests/ (tiny_models) and our sources
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS)] + sys.path)
    os.environ["OBJALIGN_TEST_FAULT_DIR"] = str(fault_dir)
    VISION_ENCODERS.register("tiny-dinov2-dist", "tiny_models:make_tiny_dinov2")
    CROP_MODES.register("tiny-sam-dist", "tiny_models:make_tiny_sam_mode")
    # address="local": always a fresh private Ray, whatever RAY_ADDRESS or a cluster left running elsewhere says
    ctx = ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False, logging_level="warning",
                   log_to_driver=False)
    try:
        yield {"address": ctx.address_info["gcs_address"], "faults": fault_dir}
    finally:
        ray.shutdown()
        del VISION_ENCODERS._entries["tiny-dinov2-dist"], CROP_MODES._entries["tiny-sam-dist"]
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


common = cli_args


# Every Ray run here uses one worker shape (half a logical GPU each), so this process's workers start once
# and serve every test (the driver keeps them between runs); 3 of them fit on the 2 GPUs.
RAY = ["--executor", "ray", "--set", "compute.gpus_per_worker=0.5"]


def summary(out, stage="embed") -> dict:
    return json.loads((out / stage / "stage.json").read_text())["summary"]


@pytest.fixture(scope="module")
def reference(cluster, small_demo, tmp_path_factory):
    """Sampled and cropped run folder (to copy), and the local executor's vision store from it."""
    base, files = one_process_reference(main, tmp_path_factory.mktemp("ref"), small_demo)
    assert sum(1 for k in files if k.startswith("emb/")) == N_SHARDS
    return base, files


def fresh(reference, tmp_path, name="run") -> Path:
    out = tmp_path / name
    shutil.copytree(reference[0], out)
    return out


def test_two_workers_one_killed_mid_shard_give_the_local_store(cluster, reference, small_demo, tmp_path):
    out = fresh(reference, tmp_path)
    (cluster["faults"] / "die-once").write_text("")
    try:
        assert main(["embed"] + common(out, small_demo) + RAY + ["--workers", "2"]) == 0
    finally:
        (cluster["faults"] / "die-once").unlink(missing_ok=True)
    assert (cluster["faults"] / "died").is_file()  # the fault did fire: a worker process died inside a shard
    (cluster["faults"] / "died").unlink()
    s = summary(out)
    assert s["executor"] == "ray" and s["workers"] == 2 and s["shards_computed"] == N_SHARDS
    assert store_files(vision_store(out)) == reference[1]  # vectors, metadata and skipped lists, byte for byte
    assert temporaries(out) == []


def test_sam_crops_on_ray_equal_the_local_crops(cluster, small_demo, tmp_path):
    from objalign.tables import read_table

    base = tmp_path / "base"
    assert main(["sample"] + common(base, small_demo)) == 0
    local, remote = tmp_path / "local", tmp_path / "remote"
    shutil.copytree(base, local)
    shutil.copytree(base, remote)
    args = ["--crop-mode", "tiny-sam-dist"]
    assert main(["crop"] + common(local, small_demo) + args) == 0
    assert main(["crop"] + common(remote, small_demo) + args + RAY + ["--workers", "2"]) == 0
    a, b = read_table(local / "crop" / "crops.parquet"), read_table(remote / "crop" / "crops.parquet")
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k].tolist() == b[k].tolist()) or (a[k].dtype.kind == "f" and
                                                    ((a[k] == b[k]) | (a[k] != a[k]) & (b[k] != b[k])).all()), k
    sl, sr = summary(local, "crop"), summary(remote, "crop")
    assert sr["executor"] == "ray" and sl["executor"] == "local"
    assert sl["sources"] == sr["sources"] and sr["sources"].get("sam", 0) > 0
    # shards never split an image: each image is encoded once, however the shards were spread
    assert sr["encoder_calls"] == sl["encoder_calls"] == len(set(a["image_id"].tolist()))
    shards = next((remote / "crop").glob("crops-*"))
    assert store_files(shards) == store_files(next((local / "crop").glob("crops-*")))


def test_three_workers_sharing_the_gpus_give_the_local_store(reference, small_demo, tmp_path):
    out = fresh(reference, tmp_path)
    assert main(["embed"] + common(out, small_demo) + RAY + ["--workers", "3"]) == 0
    s = summary(out)
    assert s["executor"] == "ray" and s["workers"] == 3 and s["shards_computed"] == N_SHARDS
    assert store_files(vision_store(out)) == reference[1]


CHILD = r'''
import sys
from pathlib import Path
import ray
from objalign.encoders import VISION_ENCODERS
VISION_ENCODERS.register("tiny-dinov2-dist", "tiny_models:make_tiny_dinov2")
ray.init(address=sys.argv[1], logging_level="warning", log_to_driver=False)
Path(sys.argv[2]).write_text(ray.get_runtime_context().get_job_id())  # this job's workers stop after a shard
from objalign.cli import main
sys.exit(main(sys.argv[3:]))
'''


def test_killing_the_driver_then_rerunning_computes_only_the_missing_shards(cluster, reference, small_demo,
                                                                             tmp_path):
    out = fresh(reference, tmp_path)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    hold = cluster["faults"] / "hold-job"
    # one worker: half a GPU, beside the 3 half-GPU workers this process keeps
    args = ["embed"] + common(out, small_demo) + RAY + ["--workers", "1"]
    proc = subprocess.Popen([sys.executable, str(script), cluster["address"], str(hold)] + args,
                            env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            if list((out / "embeddings").glob("vision-*/metadata/metadata_*.parquet")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the driver finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        hold.unlink(missing_ok=True)  # the held worker loops for good; the rerun's job is another one
    store = next((out / "embeddings").glob("vision-*"))

    def done() -> int:
        return len(list((store / "metadata").glob("metadata_*.parquet")))

    # a shard being written when the driver died may still land: wait until none has for 2 s (bounded)
    last, stable_since, deadline = done(), time.time(), time.time() + 60
    while time.time() - stable_since < 2 and time.time() < deadline:
        time.sleep(0.2)
        if done() != last:
            last, stable_since = done(), time.time()
    before = done()
    assert before == 1  # the child's one worker wrote one shard, then was held until its driver died
    assert not (out / "embed" / "stage.json").exists()

    assert main(["embed"] + common(out, small_demo) + RAY + ["--workers", "2"]) == 0
    s = summary(out)
    assert s["shards_computed"] == N_SHARDS - before and s["shards_reused"] == before
    assert store_files(vision_store(out)) == reference[1]
    assert temporaries(out) == []


def test_more_gpu_workers_than_the_cluster_holds_fail_in_one_line(reference, small_demo, tmp_path, capsys):
    out = fresh(reference, tmp_path)
    capsys.readouterr()
    assert main(["embed"] + common(out, small_demo) + ["--executor", "ray", "--workers", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--workers 3" in err and "at most 2" in err and "wait forever" in err
    assert not (out / "embeddings").exists()  # before any model loaded or store was opened
