"""Real signals to a running ``python -m objalign run``: Ctrl-C (SIGINT) in the middle of the embed stage exits
130, SIGTERM in the middle of the align stage exits 143, each with one line; the finished stages and shards are
kept, and the rerun (here, in this process) finishes with the stores and figures of a run that was never
interrupted.

The child is started the way a background job of a non-interactive shell is *not*: such a job inherits SIGINT as
ignored, so the child resets SIGINT to its default before ``exec``. It is ``python -m objalign`` (``runpy``) after
registering the tiny random DINOv2 of ``tiny_models`` and, for the align test only, a hook that marks the start of
the fits and holds the stage there until the signal arrives (so the signal lands inside align on any machine).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_models import store_files  # noqa: E402

from objalign.cli import main  # noqa: E402

DEMO = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
N, SHARD = 60, 8
N_SHARDS = -(-N // SHARD)
MESSAGE = "finished stages and shards are kept, run again to resume"

CHILD = r'''
import os, runpy, sys
from pathlib import Path
from objalign.encoders import VISION_ENCODERS
VISION_ENCODERS.register("tiny-dinov2-sig", "tiny_models:make_tiny_dinov2")
mark = os.environ.get("OBJALIGN_TEST_ALIGN_MARK")
if mark:  # touch a file when the align stage starts fitting, then wait there for the signal
    import objalign.pipeline.align as align_stage
    real = align_stage.evaluate_alignment

    def evaluate_alignment(*args, **kwargs):
        Path(mark).touch()
        import time
        time.sleep(120)  # inside the align stage until the test's signal arrives (however fast the fits are)
        return real(*args, **kwargs)

    align_stage.evaluate_alignment = evaluate_alignment
sys.argv = ["objalign"] + sys.argv[1:]
runpy.run_module("objalign", run_name="__main__", alter_sys=True)
'''


def _args(out: Path, data: Path) -> list[str]:
    """A small run with the tiny encoder: 60 objects in 8 shards of two batches; align fits ridge with a
    selection null of 200 permutations (a few seconds of real work to be interrupted in)."""
    args = ["run", DEMO, "--out", str(out), "--set", "data.kind=coco", "--set", f"data.root={data}",
            "--vision", "tiny-dinov2-sig", "--no-progress"]
    for s in (f"sample.n={N}", f"embed.shard_size={SHARD}", "embed.vision.batch_size=4", "align.units=[object]",
              "align.convergence_sizes=[]", "align.methods=[ridge]", "align.baselines=[mean]",
              "align.n_permutations=200", "align.n_bootstrap=50", "align.similarity_permutations=0",
              "align.match_methods=[]", "embed.vocabulary=null", "align.cv_folds=3", "report.html=false"):
        args += ["--set", s]
    return args


def _stores(out: Path) -> dict[str, dict[str, bytes]]:
    emb = out / "embeddings"
    return {kind: store_files(emb / json.loads((emb / f"{kind}.json").read_text())["store"])
            for kind in ("vision", "text")}


def _figures(out: Path) -> tuple[list, dict]:
    rows = json.loads((out / "report.json").read_text())["results"]
    for r in rows:
        r.pop("fit_seconds", None)
    with np.load(out / "align" / "per_instance.npz") as z:
        return rows, {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def reference(small_demo, tmp_path_factory):
    """Run folders after ``crop`` and after ``embed`` (to copy), and the finished uninterrupted run; the tiny
    encoder stays registered here for the reruns (in this process: resuming needs no fresh one)."""
    from objalign.encoders import VISION_ENCODERS

    VISION_ENCODERS.register("tiny-dinov2-sig", "tiny_models:make_tiny_dinov2")
    try:
        root = tmp_path_factory.mktemp("signals")
        ref = root / "ref"
        stage_args = _args(ref, small_demo)[2:]  # without "run CONFIG"
        for stage in ("sample", "crop"):
            assert main([stage, DEMO] + stage_args) == 0
        shutil.copytree(ref, root / "cropped")
        assert main(["embed", DEMO] + stage_args) == 0
        shutil.copytree(ref, root / "embedded")
        assert main(_args(ref, small_demo)) == 0
        yield {"cropped": root / "cropped", "embedded": root / "embedded", "ref": ref, "data": small_demo}
    finally:
        del VISION_ENCODERS._entries["tiny-dinov2-sig"]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OBJALIGN_CACHE", "OBJALIGN_TEST_FAULT_DIR")}
    return {**env, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONUNBUFFERED": "1", **extra}


def _start(script: Path, args: list[str], env: dict) -> subprocess.Popen:
    # SIGINT back to its default action: a background job without job control would have it ignored
    return subprocess.Popen([sys.executable, str(script)] + args, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    if proc.poll() is not None:
        out, err = proc.communicate()
        pytest.fail(f"the run ended (status {proc.returncode}) before the signal: {out[-1500:]}{err[-1500:]}")
    assert ready(), "the run did not reach the point to interrupt within the time allowed"


def _signal_and_wait(proc: subprocess.Popen, sig: int) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def _rerun(args: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(args) == 0
    return capsys.readouterr().out


def _same_as_reference(out: Path, reference) -> None:
    assert _stores(out) == _stores(reference["ref"])
    rows, arrays = _figures(out)
    ref_rows, ref_arrays = _figures(reference["ref"])
    assert rows == ref_rows
    assert arrays.keys() == ref_arrays.keys()
    for k in arrays:
        assert np.array_equal(arrays[k], ref_arrays[k]), k
    assert not list(out.rglob(".*.tmp-*")), "temporary files left behind"


@pytest.mark.slow
def test_ctrl_c_during_embedding_exits_130_and_the_rerun_finishes(reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference["cropped"], out)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "delay").write_text("0.3")  # every forward pass of the tiny encoder: 2 per shard
    args = _args(out, reference["data"])
    proc = _start(script, args, _env(OBJALIGN_TEST_FAULT_DIR=str(faults)))
    try:
        _wait_for(proc, lambda: bool(list((out / "embeddings").glob("vision-*/metadata/metadata_*.parquet"))))
        status, stdout, stderr = _signal_and_wait(proc, signal.SIGINT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert status == 130, stdout[-2000:] + stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == f"objalign: interrupted; {MESSAGE}"
    assert "Traceback" not in stderr
    assert "[sample] reused" in stdout and "[crop  ] reused" in stdout
    store = next((out / "embeddings").glob("vision-*"))
    kept = len(list((store / "metadata").glob("metadata_*.parquet")))
    assert 1 <= kept < N_SHARDS, "the interrupt came too late to test anything"
    assert not (out / "embed" / "stage.json").exists()

    log = _rerun(args, capsys)
    assert "[embed ] done" in log and "[report] done" in log
    assert json.loads((out / "embed" / "stage.json").read_text())["summary"]["shards_reused"] >= kept
    _same_as_reference(out, reference)


@pytest.mark.slow
def test_sigterm_during_align_exits_143_and_the_rerun_finishes(reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference["embedded"], out)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    mark = tmp_path / "align-started"
    args = _args(out, reference["data"])
    proc = _start(script, args, _env(OBJALIGN_TEST_ALIGN_MARK=str(mark)))
    try:
        _wait_for(proc, mark.is_file)
        time.sleep(0.3)  # into the fits
        assert not (out / "align" / "stage.json").exists(), "align finished before the signal"
        status, stdout, stderr = _signal_and_wait(proc, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert status == 143, stdout[-2000:] + stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == f"objalign: terminated; {MESSAGE}"
    assert "Traceback" not in stderr
    assert "[embed ] reused" in stdout
    assert not (out / "align" / "stage.json").exists()

    log = _rerun(args, capsys)
    assert "[embed ] reused" in log and "[align ] done" in log and "[report] done" in log
    _same_as_reference(out, reference)
