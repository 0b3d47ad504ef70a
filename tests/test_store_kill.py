"""``kill -9`` in the middle of the embed stage, then a restart: exactly the bytes of an uninterrupted run.

The embed stage runs in a child process (the real CLI) with a tiny random DINOv2 registered through the
encoder registry; the child is SIGKILLed as soon as its first shard lands, started again, and its store is
compared file by file with the store of a run that was never interrupted.
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

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from objalign.cli import main  # noqa: E402

CHILD = r'''
import os, sys, time
import torch, transformers
from objalign.encoders import VISION_ENCODERS
from objalign.encoders.hf_dinov2 import HFDinov2

DELAY = float(os.environ.get("OBJALIGN_TEST_DELAY", "0"))


class SlowTiny(HFDinov2):
    def _forward(self, pixel_values):
        time.sleep(DELAY)  # slow enough for the parent to kill it between shards
        return super()._forward(pixel_values)


def make(pooling="cls", model_path=None, device="cpu", dtype="float32", image_size=None):
    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                    patch_size=14, image_size=28)
    return SlowTiny(name="tiny-dinov2-test", pooling=pooling, device=device, dtype=dtype,
                    model=transformers.Dinov2Model(cfg), image_size=28)


VISION_ENCODERS.register("tiny-dinov2-test", "__main__:make")
torch.set_num_threads(1)
from objalign.cli import main
sys.exit(main(sys.argv[1:]))
'''


def _files(store: Path) -> dict:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file() and p.parent.name in ("emb", "metadata", "skipped")}


def test_sigkill_then_restart_gives_the_uninterrupted_bytes(small_demo, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    common = ["--set", "data.kind=coco", "--set", f"data.root={small_demo}", "--set", "sample.n=60",
              "--set", "embed.shard_size=8", "--set", "embed.vision.batch_size=4", "--vision", "tiny-dinov2-test",
              "--no-progress"]
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    for stage in ("sample", "crop"):
        assert main([stage, "--out", str(killed)] + common) == 0
    shutil.copytree(killed, clean)
    env = {**os.environ, "OBJALIGN_TEST_DELAY": "0.25", "PYTHONPATH": os.pathsep.join(sys.path)}

    proc = subprocess.Popen([sys.executable, str(script), "embed", "--out", str(killed)] + common, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 90
    first = None
    while time.time() < deadline and proc.poll() is None:
        found = list((killed / "embeddings").glob("vision-*/metadata/metadata_00000.parquet"))
        if found:
            first = found[0]
            break
        time.sleep(0.02)
    assert first is not None, f"no shard landed before the child ended: {proc.communicate()[0].decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = first.parents[1]
    n_shards = -(-60 // 8)
    done_before = len(list((store / "metadata").glob("metadata_*.parquet")))
    assert 1 <= done_before < n_shards, "the kill came too late to test anything"
    assert json.loads((store / "manifest.json").read_text())["complete"] is False

    fast = {**env, "OBJALIGN_TEST_DELAY": "0"}
    for out in (killed, clean):
        r = subprocess.run([sys.executable, str(script), "embed", "--out", str(out)] + common, env=fast,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rec = json.loads((killed / "embed" / "stage.json").read_text())
    assert rec["summary"]["shards_reused"] == done_before  # only unfinished shards were recomputed

    clean_store = next((clean / "embeddings").glob("vision-*"))
    assert clean_store.name == store.name  # the same request, the same content address
    a, b = _files(store), _files(clean_store)
    assert sorted(a) == sorted(b) and len([k for k in a if k.startswith("emb")]) == n_shards
    for name in a:
        assert a[name] == b[name], f"{name} differs after kill -9 and restart"
    assert not [p for p in store.rglob(".*tmp*")], "temporary files left behind"
    from objalign import read_embeddings

    ids, X = read_embeddings(killed, kind="vision")
    ids2, X2 = read_embeddings(clean, kind="vision")
    assert len(ids) == len(set(ids.tolist())) == 60 and (ids == ids2).all() and (X == X2).all()
