"""A damaged embedding store: every way a shard's files can be damaged is noticed, the shard recomputed (and only
it), and the result equals the store of a run that was never damaged, byte for byte.

The engine-level tests use a deterministic pixel-statistics encoder (fast, exact); the CLI test damages a real
run's vision store (the tiny DINOv2 of ``tiny_models``) and checks that reading it fails in one line and that
the embed stage run again recomputes the damaged shard alone.
"""

import io
import json
import shutil

import numpy as np
import pytest

from objalign.crops.stage import decide_crops
from objalign.data.coco import load_coco
from objalign.data.sample import sample_instances
from objalign.embed.engine import extract_vision
from objalign.embed.store import EmbeddingStore
from objalign.encoders.base import Preprocess
from objalign.errors import ObjalignError

SHARD = 16
DAMAGED = 2


class PixelStats:
    """Mean colour per quadrant: deterministic, and it counts the crops it encodes."""

    name, dim, pooling = "pixel-stats", 12, "none"
    preprocess = Preprocess(size=16)

    def __init__(self):
        self.crops = 0

    def encode(self, crops):
        self.crops += len(crops)
        return crops.reshape(len(crops), 2, 8, 2, 8, 3).mean(axis=(2, 4)).reshape(len(crops), 12).astype(np.float32)


def _npy(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _truncated(emb, meta):
    emb.write_bytes(emb.read_bytes()[: emb.stat().st_size // 2])


def _cut_inside_header(emb, meta):
    emb.write_bytes(emb.read_bytes()[:40])


def _empty(emb, meta):
    emb.write_bytes(b"")


def _not_an_array(emb, meta):
    emb.write_text('{"this": "is json, not a .npy array"}')


def _pickled_objects(emb, meta):
    emb.write_bytes(_npy(np.array([{"a": 1}, None], dtype=object)))


def _padded(emb, meta):
    emb.write_bytes(emb.read_bytes() + b"\0" * 16)


def _wrong_dim(emb, meta):
    emb.write_bytes(_npy(np.load(emb)[:, :-1]))


def _one_dimensional(emb, meta):
    emb.write_bytes(_npy(np.load(emb)[:, 0]))


def _rows_missing(emb, meta):
    emb.write_bytes(_npy(np.load(emb)[:-1]))


def _float64(emb, meta):
    emb.write_bytes(_npy(np.load(emb).astype(np.float64)))


def _fortran_order(emb, meta):
    emb.write_bytes(_npy(np.asfortranarray(np.load(emb))))


def _missing(emb, meta):
    emb.unlink()


def _metadata_garbage(emb, meta):
    meta.write_bytes(b"PAR1 not really parquet")


def _metadata_missing(emb, meta):
    meta.unlink()


DAMAGE = {f.__name__.strip("_"): f for f in (
    _truncated, _cut_inside_header, _empty, _not_an_array, _pickled_objects, _padded, _wrong_dim, _one_dimensional,
    _rows_missing, _float64, _fortran_order, _missing, _metadata_garbage, _metadata_missing)}


@pytest.fixture(scope="module")
def crop_table(small_demo):
    ds = load_coco(small_demo / "annotations.json", small_demo / "images")
    inst = sample_instances(ds, n=80, seed=0)
    table, _ = decide_crops(ds, inst, "gt-mask", 0.1, True)
    return ds, table


def _extract(ds, table, path):
    encoder = PixelStats()
    store = EmbeddingStore.open(path, {"k": 1}, shard_size=SHARD, n_rows=len(table["annotation_id"]))
    stats = extract_vision(table, ds.image_source(), encoder, store, SHARD, 8, (0, 0, 0), num_workers=1,
                           progress=False)
    store.finalize(stats["n_shards"], encoder.dim)
    return stats, store, encoder


def _files(store) -> dict:
    return {str(p.relative_to(store.path)): p.read_bytes() for p in sorted(store.path.rglob("*"))
            if p.is_file() and p.parent.name in ("emb", "metadata", "skipped")}


@pytest.fixture(scope="module")
def reference(crop_table, tmp_path_factory):
    ds, table = crop_table
    stats, store, _ = _extract(ds, table, tmp_path_factory.mktemp("ref") / "store")
    assert stats["n_shards"] == 5 and store.damaged_shards() == {}
    return store


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_shard_is_noticed_and_recomputed_alone(kind, crop_table, reference, tmp_path):
    ds, table = crop_table
    store = EmbeddingStore(tmp_path / "store")
    shutil.copytree(reference.path, store.path)
    emb, meta, _ = store.shard_paths(DAMAGED)
    DAMAGE[kind](emb, meta)

    # the store notices: the shard is not done, the others are, and reading fails in one line
    assert [store.shard_done(i) for i in range(5)] == [i != DAMAGED for i in range(5)]
    assert list(store.damaged_shards()) == [DAMAGED]
    with pytest.raises(ObjalignError) as err:
        store.read()
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and f"shard {DAMAGED}:" in msg and "--force" in msg

    # the next run recomputes that shard only and ends with the undamaged store's bytes
    stats, again, encoder = _extract(ds, table, store.path)
    assert stats["shards_reused"] == 4 and [r["shard"] for r in stats["receipts"]] == [DAMAGED]
    assert 0 < encoder.crops <= SHARD
    assert again.damaged_shards() == {}
    assert _files(again) == _files(reference)
    (m1, a1), (m2, a2) = reference.read(), again.read()
    np.testing.assert_array_equal(a1, a2)
    assert all(np.array_equal(m1[k], m2[k]) for k in m1)
    mf = json.loads((store.path / "manifest.json").read_text())
    assert mf["complete"] and mf["n_vectors"] == len(a1)


def test_a_layered_float16_store_checks_its_layer_axis_and_dtype(tmp_path):
    store = EmbeddingStore.open(tmp_path / "s", {"k": 2}, shard_size=4, n_rows=6, layers=[1, 3],
                                storage_dtype="float16")
    meta = {"annotation_id": np.arange(4)}
    store.write_shard(0, np.ones((4, 2, 5), np.float32), meta, [])
    store.write_shard(1, np.ones((2, 2, 5), np.float32), {"annotation_id": np.arange(4, 6)}, [])
    store.finalize(2, 5)
    assert store.damaged_shards() == {}
    emb = store.shard_paths(1)[0]
    emb.write_bytes(_npy(np.ones((2, 5), np.float16)))  # the layer axis lost
    assert "expected (rows, 2, 5)" in store.shard_problem(1)
    emb.write_bytes(_npy(np.ones((2, 2, 5), np.float32)))  # float32 in a float16 store
    assert "float32, not float16" in store.shard_problem(1)
    emb.write_bytes(_npy(np.ones((2, 3, 5), np.float16)))  # a layer too many
    assert "expected (rows, 2, 5)" in store.shard_problem(1)
    assert store.shard_done(0) and not store.shard_done(1)


def test_a_damaged_skipped_list_is_noticed(crop_table, reference, tmp_path):
    store = EmbeddingStore(tmp_path / "store")
    shutil.copytree(reference.path, store.path)
    skip = store.shard_paths(1)[2]
    skip.write_text("[{")
    assert "skipped_00001.json is unreadable" in store.shard_problem(1)
    skip.write_text('{"annotation_id": 1}')
    assert "not a JSON list" in store.shard_problem(1)


# -- the CLI: a finished run whose vision shard is cut to half its size ----------------------------------------


def test_cli_reading_a_damaged_store_fails_in_one_line_and_embed_recomputes_the_shard(small_demo, tmp_path,
                                                                                       capsys):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tiny_models import cli_args, registered, store_files, vision_store

    from objalign.cli import main
    from objalign.encoders import VISION_ENCODERS

    with registered(VISION_ENCODERS, "tiny-dinov2-dist", "tiny_models:make_tiny_dinov2"):
        out = tmp_path / "run"
        for stage in ("sample", "crop", "embed"):
            assert main([stage] + cli_args(out, small_demo)) == 0
        store = vision_store(out)
        clean = store_files(store)
        emb = store / "emb" / "emb_00000.npy"
        emb.write_bytes(emb.read_bytes()[: emb.stat().st_size // 2])
        capsys.readouterr()
        assert main(["align"] + cli_args(out, small_demo)) == 2  # align reads the store
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "shard 0:" in err and "truncated" in err, err
        assert "Traceback" not in err
        assert main(["embed", "--force"] + cli_args(out, small_demo)) == 0
        rec = json.loads((out / "embed" / "stage.json").read_text())["summary"]
        assert rec["shards_computed"] == 1 and rec["shards_reused"] == rec["n_shards"] - 1
        assert store_files(vision_store(out)) == clean
        # a plain (not forced) embed stage notices the damage itself: not reused, the shard recomputed alone
        emb.write_bytes(b"")
        capsys.readouterr()
        assert main(["embed"] + cli_args(out, small_demo)) == 0
        err = capsys.readouterr().err
        assert "vision store: 1 damaged shard(s)" in err and "recomputing them" in err, err
        rec = json.loads((out / "embed" / "stage.json").read_text())["summary"]
        assert rec["shards_computed"] == 1 and rec["shards_reused"] == rec["n_shards"] - 1
        assert store_files(vision_store(out)) == clean
