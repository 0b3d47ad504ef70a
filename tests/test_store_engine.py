"""The embedding store and extraction engine: exact resume after an interruption, keys never reused silently."""

import json

import numpy as np
import pytest

from objalign.crops.stage import decide_crops
from objalign.data.coco import load_coco
from objalign.data.sample import sample_instances
from objalign.embed.engine import extract_vision
from objalign.embed.store import EmbeddingStore, read_embeddings
from objalign.encoders.base import Preprocess
from objalign.errors import ObjalignError


class PixelStats:
    """A deterministic stand-in encoder (mean colour per quadrant): enough to check bookkeeping exactly."""

    name, dim, pooling = "pixel-stats", 12, "none"
    preprocess = Preprocess(size=16)

    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after

    def encode(self, crops):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        q = crops.reshape(len(crops), 2, 8, 2, 8, 3).mean(axis=(2, 4)).reshape(len(crops), 12)
        return q.astype(np.float32)


@pytest.fixture()
def crop_table(small_demo):
    ds = load_coco(small_demo / "annotations.json", small_demo / "images")
    inst = sample_instances(ds, n=100, seed=0)
    table, _ = decide_crops(ds, inst, "gt-mask", 0.1, True)
    return ds, table


def _extract(ds, table, path, encoder, key=None):
    store = EmbeddingStore.open(path, key or {"k": 1}, shard_size=16, n_rows=len(table["annotation_id"]))
    stats = extract_vision(table, ds.image_source(), encoder, store, 16, 8, (0, 0, 0), num_workers=2, progress=False)
    store.finalize(stats["n_shards"], encoder.dim)
    return stats, store


def test_interrupted_run_resumes_to_identical_vectors(crop_table, tmp_path):
    ds, table = crop_table
    _, full = _extract(ds, table, tmp_path / "full", PixelStats())
    with pytest.raises(KeyboardInterrupt):
        _extract(ds, table, tmp_path / "resumed", PixelStats(fail_after=5))
    done = [i for i in range(7) if EmbeddingStore(tmp_path / "resumed").shard_done(i)]
    assert 0 < len(done) < 7
    stats, resumed = _extract(ds, table, tmp_path / "resumed", PixelStats())
    assert stats["shards_reused"] == len(done)
    (m1, a1), (m2, a2) = full.read(), resumed.read()
    assert np.array_equal(m1["annotation_id"], m2["annotation_id"])
    assert len(np.unique(m2["annotation_id"])) == len(table["annotation_id"])  # none lost, none duplicated
    np.testing.assert_array_equal(a1, a2)


def test_each_image_is_decoded_once(crop_table, tmp_path, monkeypatch):
    ds, table = crop_table
    from objalign.data.images import FolderImages

    opened = []
    real = FolderImages.load
    monkeypatch.setattr(FolderImages, "load", lambda self, f: (opened.append(f), real(self, f))[1])
    store = EmbeddingStore.open(tmp_path / "s", {"k": 1}, shard_size=1000, n_rows=len(table["annotation_id"]))
    extract_vision(table, ds.image_source(), PixelStats(), store, 1000, 8, (0, 0, 0), progress=False)
    assert len(opened) == len(set(table["image_id"].tolist()))


def test_key_mismatch_is_refused(tmp_path):
    EmbeddingStore.open(tmp_path / "s", {"encoder": "a"}, 4, 10)
    with pytest.raises(ObjalignError, match="different request"):
        EmbeddingStore.open(tmp_path / "s", {"encoder": "b"}, 4, 10)


def test_missing_and_corrupt_images_are_recorded(crop_table, tmp_path):
    ds, table = crop_table
    import shutil

    root = tmp_path / "images"
    shutil.copytree(ds.image_root, root)
    first, second = table["file_name"][0], table["file_name"][-1]
    (root / first).unlink()
    (root / second).write_bytes(b"not a jpeg")
    ds.image_root = root
    stats, store = _extract(ds, table, tmp_path / "s", PixelStats())
    mf = json.loads((store.path / "manifest.json").read_text())
    reasons = {s["annotation_id"]: s["reason"] for s in mf["skipped"]}
    n_bad = int(np.sum(table["file_name"] == first) + np.sum(table["file_name"] == second))
    assert len(reasons) == n_bad == stats["n_skipped"]
    assert any("not found" in r for r in reasons.values()) and any("unreadable" in r for r in reasons.values())
    ids, arr = read_embeddings(store.path)
    assert len(ids) == len(table["annotation_id"]) - n_bad and arr.shape == (len(ids), 12)
