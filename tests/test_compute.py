"""Shards without Ray: the static partition (Slurm arrays), the shared cache, concurrent writers, bad requests."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tiny_models import cli_args, one_process_reference

from objalign.cli import main
from objalign.compute import image_aligned_bounds, partition
from objalign.errors import ObjalignError

TESTS = Path(__file__).parent


# --------------------------------------------------------------------------- shards and shares

@pytest.mark.parametrize("n_shards,n_workers", [(1, 1), (4, 2), (7, 3), (3, 5), (10, 4)])
def test_partition_gives_every_shard_to_exactly_one_worker_in_contiguous_shares(n_shards, n_workers):
    shares = [partition(n_shards, n_workers, i) for i in range(n_workers)]
    assert sum(shares, []) == list(range(n_shards))  # in order, each once
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("num,index,message", [(0, 0, "--num-workers 0"), (-2, 0, "--num-workers -2"),
                                               (2, 2, "outside [0, 2)"), (3, -1, "outside [0, 3)")])
def test_a_bad_partition_is_one_error(num, index, message):
    with pytest.raises(ObjalignError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        partition(10, num, index)


def test_image_aligned_shards_never_split_an_image():
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(40), rng.integers(1, 9, 40))  # 40 images, 1-8 objects each
    for size in (1, 5, 16, 1000):
        bounds = image_aligned_bounds(ids, size)
        assert len(bounds) == max(1, -(-len(ids) // size))
        assert bounds[0][0] == 0 and bounds[-1][1] == len(ids)
        assert all(b == c for (_, b), (c, _) in zip(bounds, bounds[1:]))  # contiguous, no gap, no overlap
        for a, b in bounds:
            if 0 < a < len(ids):
                assert ids[a] != ids[a - 1]  # a shard starts where an image starts
    # a big image (rows 0-4) takes the first shard; the second (rows 2-3 of the plain split) is empty
    assert image_aligned_bounds(np.array([7] * 5 + [8]), 2) == [(0, 5), (5, 5), (5, 6)]


def test_only_dead_writers_temporaries_are_stale(tmp_path):
    import socket

    from objalign.runs import is_stale_temporary, temporary_name

    live = temporary_name(tmp_path / "a.npy")  # this process: alive
    live.write_bytes(b"x")
    host = socket.gethostname().replace("~", "-")
    dead_pid = 2 ** 22 + 12345  # above Linux's pid_max default: no such process
    dead = tmp_path / f".b.npy.tmp-{host}~{dead_pid}~abcd1234"
    other = tmp_path / f".c.npy.tmp-another-host~{os.getpid()}~abcd1234"
    legacy = tmp_path / ".d.npy.tmp-123"
    for p in (dead, other, legacy):
        p.write_bytes(b"x")
    assert not is_stale_temporary(live) and not is_stale_temporary(other)  # a live writer here or elsewhere
    assert is_stale_temporary(dead) and is_stale_temporary(legacy)
    old = time.time() - 2 * 3600
    os.utime(other, (old, old))
    assert is_stale_temporary(other)  # hours old: dead wherever it ran


# --------------------------------------------------------------------------- processes sharing one folder

CHILD = r'''
import sys
from objalign.encoders import VISION_ENCODERS
VISION_ENCODERS.register("tiny-dinov2-dist", "tiny_models:make_tiny_dinov2")
from objalign.cli import main
sys.exit(main(sys.argv[1:]))
'''


common = cli_args


@pytest.fixture(scope="module")
def prepared(small_demo, tmp_path_factory):
    """A sampled, cropped run folder and the vision store one process makes from it."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from objalign.encoders import VISION_ENCODERS

    VISION_ENCODERS.register("tiny-dinov2-dist", "tiny_models:make_tiny_dinov2")
    try:
        yield one_process_reference(main, tmp_path_factory.mktemp("compute"), small_demo)
    finally:
        del VISION_ENCODERS._entries["tiny-dinov2-dist"]


def run_together(tmp_path, arg_lists: list[list[str]], timeout: float = 240) -> list[subprocess.CompletedProcess]:
    """Start one CLI process per argument list at once; wait for all (bounded)."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS)] + sys.path)}
    procs = [subprocess.Popen([sys.executable, str(script)] + args, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for args in arg_lists]
    out = []
    for p in procs:
        try:
            stdout, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        out.append((p.returncode, stdout))
    return out


def test_two_partitioned_processes_and_a_whole_run_filling_one_cache_entry_give_the_one_process_store(
        prepared, small_demo, tmp_path):
    """Three processes at once, all filling the same cache entry: the two static-partition workers of one run
    folder and a whole run in another folder. All end with the bytes one process makes, and no temporaries."""
    import shutil

    from tiny_models import store_files, temporaries

    base, reference = prepared
    split, whole = tmp_path / "split", tmp_path / "whole"
    for d in (split, whole):
        shutil.copytree(base, d)
    cache = ["--cache", str(tmp_path / "cache")]
    results = run_together(tmp_path, [
        ["embed"] + common(split, small_demo) + cache + ["--num-workers", "2", "--worker-index", "0"],
        ["embed"] + common(split, small_demo) + cache + ["--num-workers", "2", "--worker-index", "1"],
        ["embed"] + common(whole, small_demo) + cache])
    assert all(rc == 0 for rc, _ in results), [o[-600:] for _, o in results]
    # the partition: the process that found every shard done finished the stage (the other, if it ended
    # first, said so and recorded nothing)
    rec = json.loads((split / "embed" / "stage.json").read_text())["summary"]
    assert rec["n_vision"] == 30
    assert any("still with other workers" in o for _, o in results[:2]) or rec["shards_reused"] >= 2
    # one cache entry, both run folders point at it, never corrupted by three concurrent writers
    entries = list((tmp_path / "cache" / "embeddings").glob("vision-*"))
    assert len(entries) == 1 and store_files(entries[0]) == reference
    for run in (split, whole):
        pointer = json.loads((run / "embeddings" / "vision.json").read_text())["store"]
        assert Path(pointer) == entries[0].resolve()
        assert not list((run / "embeddings").glob("vision-*"))  # nothing copied into the run folder
    assert temporaries(tmp_path) == []


def test_a_second_run_with_the_cache_computes_nothing(prepared, small_demo, tmp_path, monkeypatch, capsys):
    import shutil

    from objalign.tables import read_table

    base, reference = prepared
    cache = tmp_path / "cache"
    monkeypatch.setenv("OBJALIGN_CACHE", str(cache))  # the environment variable, when cache.dir is unset
    runs = [tmp_path / "first", tmp_path / "second"]
    for out in runs:
        shutil.copytree(base, out)
        shutil.rmtree(out / "crop")
        assert main(["crop"] + common(out, small_demo)) == 0
        assert main(["embed"] + common(out, small_demo)) == 0
    first, second = (json.loads((r / "embed" / "stage.json").read_text())["summary"] for r in runs)
    crops2 = json.loads((runs[1] / "crop" / "stage.json").read_text())["summary"]
    assert first["shards_computed"] == 4 and second["shards_computed"] == 0 and second["shards_reused"] == 4
    assert crops2["shards_computed"] == 0
    a, b = (read_table(r / "crop" / "crops.parquet") for r in runs)
    assert all(a[k].tolist() == b[k].tolist() for k in a if a[k].dtype.kind != "f")
    capsys.readouterr()
    monkeypatch.delenv("OBJALIGN_CACHE")
    assert main(["cache", "ls", str(cache)]) == 0
    listing = capsys.readouterr().out
    # one crop store and one text, one vision and one distractor-vocabulary store, all shared by both runs
    assert listing.count("crops  mode=box") == 1 and listing.count("embeddings  encoder=") == 3
    assert listing.count("vectors=1203") == 1 and not list((runs[1] / "embeddings").glob("vocab-*"))
    assert "complete=True" in listing
    entry = next((cache / "embeddings").glob("vision-*"))
    assert main(["cache", "rm", str(entry)]) == 0 and not entry.exists()


def test_partitioned_crop_processes_finish_the_stage_only_when_all_shards_are_done(prepared, small_demo, tmp_path,
                                                                                   capsys):
    import shutil

    from objalign.tables import read_table

    base, _ = prepared
    out = tmp_path / "run"
    shutil.copytree(base, out)
    reference = read_table(base / "crop" / "crops.parquet")
    shutil.rmtree(out / "crop")
    capsys.readouterr()
    assert main(["crop"] + common(out, small_demo) + ["--num-workers", "2", "--worker-index", "1"]) == 0
    assert "still with other workers" in capsys.readouterr().out
    assert not (out / "crop" / "stage.json").exists() and not (out / "crop" / "crops.parquet").exists()
    assert main(["embed"] + common(out, small_demo)) == 2  # the next stage refuses an unfinished crop stage
    assert main(["crop"] + common(out, small_demo) + ["--num-workers", "2", "--worker-index", "0"]) == 0
    rec = json.loads((out / "crop" / "stage.json").read_text())["summary"]
    assert rec["shards_computed"] == 2 and rec["shards_reused"] == 2
    got = read_table(out / "crop" / "crops.parquet")
    assert all(got[k].tolist() == reference[k].tolist() for k in reference if reference[k].dtype.kind != "f")


# --------------------------------------------------------------------------- bad requests, one line each

@pytest.mark.parametrize("args,message", [
    (["--executor", "ray", "--workers", "0"], "--workers 0"),
    (["--executor", "ray", "--workers", "-1"], "--workers -1"),
    (["--num-workers", "0"], "--num-workers 0"),
    (["--num-workers", "2", "--worker-index", "2"], "--worker-index 2 (compute.worker_index) is outside [0, 2)"),
    (["--num-workers", "2", "--worker-index", "-1"], "outside [0, 2)"),
    (["--executor", "dask"], "unknown executor 'dask'"),
    (["--set", "compute.gpus_per_worker=1.5"], "compute.gpus_per_worker = 1.5"),
])
def test_bad_compute_requests_fail_in_one_line_before_any_model_loads(prepared, small_demo, tmp_path, capsys, args,
                                                                      message):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(prepared[0], out)
    capsys.readouterr()
    assert main(["embed"] + common(out, small_demo) + args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (out / "embeddings").exists()


def test_ray_missing_names_the_extra(prepared, small_demo, tmp_path, capsys, monkeypatch):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(prepared[0], out)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    capsys.readouterr()
    assert main(["embed"] + common(out, small_demo) + ["--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'objalign[ray]'" in err
    assert not (out / "embeddings").exists()


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_an_unreachable_ray_address_fails_in_bounded_time(prepared, small_demo, tmp_path, capsys, address):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("another test module's Ray is running in this process")
    import shutil

    out = tmp_path / "run"
    shutil.copytree(prepared[0], out)
    capsys.readouterr()
    t0 = time.time()
    assert main(["embed"] + common(out, small_demo) + ["--executor", "ray", "--ray-address", address,
                                                         "--set", "compute.connect_timeout_s=2"]) == 2
    assert time.time() - t0 < 15
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and repr(address) in err and "no Ray cluster answered within 2 s" in err
    assert not ray.is_initialized() and not (out / "embeddings").exists()
