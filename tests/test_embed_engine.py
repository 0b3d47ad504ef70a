"""The extraction engine on bad input (every kind is skipped and recorded, nothing else lost), image modes
decoded to RGB against closed forms, batches aligned to shards, bounded read-ahead, thread vs process pools."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from objalign.crops.render import crop_window, render_crop
from objalign.crops.render import render_rows
from objalign.data.images import load_rgb
from objalign.embed.engine import extract_vision
from objalign.embed.store import EmbeddingStore, read_embeddings
from objalign.encoders.base import Preprocess
from objalign.errors import ObjalignError

SIZE = 16


class QuadrantMeans:
    """Deterministic stand-in encoder: mean colour per quadrant of a 16x16 crop (12 numbers)."""

    name, dim, pooling = "quadrant-means", 12, "none"
    preprocess = Preprocess(size=SIZE)

    def __init__(self, nan_rows_of_call: dict | None = None):
        self.calls, self.batches, self.nan = 0, [], dict(nan_rows_of_call or {})

    def encode(self, crops):
        self.calls += 1
        self.batches.append(len(crops))
        q = crops.reshape(len(crops), 2, SIZE // 2, 2, SIZE // 2, 3).mean(axis=(2, 4)).reshape(len(crops), 12)
        q = q.astype(np.float32)
        for j in self.nan.get(self.calls, ()):
            q[j, 3] = np.nan
        return q


def quadrant_means(crop):
    return crop.reshape(2, SIZE // 2, 2, SIZE // 2, 3).mean(axis=(1, 3)).reshape(12).astype(np.float32)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Images in every mode the engine must handle, plus broken ones, and a crop table over them."""
    root = tmp_path_factory.mktemp("zoo")
    rng = np.random.RandomState(0)
    rgb = rng.randint(0, 256, (48, 64, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(root / "rgb.png")
    gray = rng.randint(0, 256, (40, 40)).astype(np.uint8)
    Image.fromarray(gray, "L").save(root / "gray.png")
    # CMYK pure "red": C=0, M=255, Y=255, K=0 -> RGB (255, 0, 0); TIFF keeps it lossless
    cmyk = np.zeros((32, 32, 4), np.uint8)
    cmyk[..., 1:3] = 255
    Image.fromarray(cmyk, "CMYK").save(root / "cmyk.tif")
    wide = (rng.randint(0, 3700, (36, 36)) * 16).astype(np.uint16)  # below 60000
    wide[0, 0] = 60000  # the maximum, so the scale is known
    Image.fromarray(wide).save(root / "sixteen.png")
    rgba = rng.randint(0, 256, (30, 30, 4)).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
    buf = io.BytesIO()
    Image.fromarray(rng.randint(0, 256, (64, 64, 3)).astype(np.uint8)).save(buf, "JPEG", quality=95)
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    # file, box (x, y, w, h), expected reason substring or None
    rows = [("rgb.png", (10, 8, 20, 16), None), ("rgb.png", (5, 5, 0, 10), "zero-area box"),
            ("rgb.png", (70, 10, 5, 5), "outside the 64x48 image"), ("rgb.png", (40, 20, 30, 30), None),
            ("gray.png", (4, 4, 20, 20), None), ("cmyk.tif", (2, 2, 20, 20), None),
            ("sixteen.png", (0, 0, 36, 36), None), ("rgba.png", (5, 5, 10, 10), None),
            ("truncated.jpg", (1, 1, 10, 10), "unreadable image"),
            ("truncated.jpg", (3, 3, 10, 10), "unreadable image"),
            ("corrupt.jpg", (1, 1, 5, 5), "unreadable image"), ("missing.png", (1, 1, 5, 5), "not found"),
            ("rgb.png", (float("nan"), 1, 5, 5), "non-finite box")]
    # keep rows grouped by image, as the crop table is
    order = sorted(range(len(rows)), key=lambda i: (rows[i][0], i))
    rows = [rows[i] for i in order]
    image_id = {f: k for k, f in enumerate(sorted({r[0] for r in rows}))}
    wins = [crop_window(*(b if np.all(np.isfinite(b)) else (0, 0, 1, 1)), 0.1, True) for _, b, _ in rows]
    table = {"annotation_id": np.arange(100, 100 + len(rows)), "image_id": np.array([image_id[r[0]] for r in rows]),
             "category_id": np.ones(len(rows), np.int64), "file_name": np.array([r[0] for r in rows], dtype=object),
             "x": np.array([r[1][0] for r in rows], float), "y": np.array([r[1][1] for r in rows], float),
             "w": np.array([r[1][2] for r in rows], float), "h": np.array([r[1][3] for r in rows], float),
             "x0": np.array([w[0] for w in wins]), "y0": np.array([w[1] for w in wins]),
             "x1": np.array([w[2] for w in wins]), "y1": np.array([w[3] for w in wins]),
             "mask_rle": np.array([""] * len(rows), dtype=object)}
    return root, table, [r[2] for r in rows], rgb, gray, wide


def test_image_modes_decode_to_rgb_by_closed_forms(zoo):
    root, _, _, rgb, gray, wide = zoo
    np.testing.assert_array_equal(load_rgb(root / "rgb.png"), rgb)
    np.testing.assert_array_equal(load_rgb(root / "gray.png"), np.repeat(gray[..., None], 3, 2))
    red = load_rgb(root / "cmyk.tif")
    assert red.shape == (32, 32, 3) and np.all(red == np.array([255, 0, 0], np.uint8))
    got = load_rgb(root / "sixteen.png")
    want = np.round(255.0 * wide.astype(np.float64) / 60000.0).astype(np.uint8)
    np.testing.assert_array_equal(got, np.repeat(want[..., None], 3, 2))
    assert load_rgb(root / "rgba.png").shape == (30, 30, 3)
    with pytest.raises(OSError):
        load_rgb(root / "truncated.jpg")


def test_bad_instances_are_skipped_recorded_and_the_rest_is_exact(zoo, tmp_path):
    root, table, expect, rgb, gray, _ = zoo
    from objalign.data.images import FolderImages

    n = len(table["annotation_id"])
    store = EmbeddingStore.open(tmp_path / "s", {"k": 1}, shard_size=4, n_rows=n)
    stats = extract_vision(table, FolderImages(root), QuadrantMeans(), store, 4, 3, (0, 0, 0), progress=False)
    mf = store.finalize(stats["n_shards"], 12)
    reasons = {s["annotation_id"]: s["reason"] for s in mf["skipped"]}
    want_bad = {int(table["annotation_id"][i]): e for i, e in enumerate(expect) if e}
    assert set(reasons) == set(want_bad) and stats["n_skipped"] == len(want_bad)
    for aid, sub in want_bad.items():
        assert sub in reasons[aid], (aid, reasons[aid])
    ids, arr = read_embeddings(store.path)
    good = [i for i, e in enumerate(expect) if e is None]
    np.testing.assert_array_equal(ids, table["annotation_id"][good])  # order kept, none lost, none duplicated
    # the vectors are the stand-in's closed form on crops rendered from independently decoded pixels
    decoded = {"rgb.png": rgb, "gray.png": np.repeat(gray[..., None], 3, 2)}
    checked = 0
    for k, i in enumerate(good):
        f = table["file_name"][i]
        if f in decoded:
            win = tuple(int(table[c][i]) for c in ("x0", "y0", "x1", "y1"))
            crop = render_crop(decoded[f], win, SIZE, fill=(0, 0, 0))
            np.testing.assert_allclose(arr[k], quadrant_means(crop), rtol=0, atol=1e-4)
            checked += 1
    assert checked == 3


def test_non_finite_embeddings_are_skipped_and_recorded(zoo, tmp_path):
    root, table, expect, *_ = zoo
    from objalign.data.images import FolderImages

    n = len(table["annotation_id"])
    store = EmbeddingStore.open(tmp_path / "s", {"k": 1}, shard_size=100, n_rows=n)
    enc = QuadrantMeans(nan_rows_of_call={1: [1]})  # second row of the first batch turns NaN
    stats = extract_vision(table, FolderImages(root), enc, store, 100, 4, (0, 0, 0), progress=False)
    good = [i for i, e in enumerate(expect) if e is None]
    nan_id = int(table["annotation_id"][good[1]])
    assert {"annotation_id": nan_id, "reason": "non-finite embedding"} in stats["skipped"]
    store.finalize(1, 12)
    ids, arr = read_embeddings(store.path)
    assert nan_id not in ids.tolist() and len(ids) == len(good) - 1 and np.isfinite(arr).all()


def test_batches_never_cross_shards_and_read_ahead_is_bounded(small_demo, tmp_path, monkeypatch):
    from objalign.crops.stage import decide_crops
    from objalign.data.coco import load_coco
    from objalign.data.sample import sample_instances
    import objalign.embed.engine as engine

    ds = load_coco(small_demo / "annotations.json", small_demo / "images")
    table, _ = decide_crops(ds, sample_instances(ds, n=60, seed=0), "box", 0.1, True)
    n = len(table["annotation_id"])
    started, encoded = [], []
    real = engine.render_rows

    def counting(images, file_name, rows, *a, **k):
        started.append(len(rows))
        return real(images, file_name, rows, *a, **k)

    class Watch(QuadrantMeans):
        def encode(self, crops):
            encoded.append((len(crops), sum(started)))
            return super().encode(crops)

    monkeypatch.setattr(engine, "render_rows", counting)
    enc = Watch()
    store = EmbeddingStore.open(tmp_path / "s", {"k": 1}, shard_size=10, n_rows=n)
    extract_vision(table, ds.image_source(), enc, store, 10, 4, (0, 0, 0), progress=False, prefetch_batches=2)
    # every shard of 10 is cut into batches 4, 4, 2 (n = 60): a batch never spans two shards
    assert enc.batches == [4, 4, 2] * (n // 10)
    biggest_image = max(np.bincount(np.unique(table["image_id"], return_inverse=True)[1]))
    done = 0
    for size, submitted in encoded:
        done += size
        assert submitted - done <= 2 * 4 + biggest_image  # crops waiting ahead of the model stay bounded


def test_process_pool_gives_the_same_vectors_as_threads(zoo, tmp_path):
    root, table, *_ = zoo
    from objalign.data.images import FolderImages

    n = len(table["annotation_id"])
    out = {}
    for ex in ("thread", "process"):
        store = EmbeddingStore.open(tmp_path / ex, {"k": 1}, shard_size=5, n_rows=n)
        stats = extract_vision(table, FolderImages(root), QuadrantMeans(), store, 5, 3, (0, 0, 0), progress=False,
                               executor=ex, num_workers=2)
        store.finalize(stats["n_shards"], 12)
        out[ex] = read_embeddings(store.path)
    np.testing.assert_array_equal(out["thread"][0], out["process"][0])
    np.testing.assert_array_equal(out["thread"][1], out["process"][1])
    with pytest.raises(ObjalignError, match="executor = 'gpu'"):
        extract_vision(table, FolderImages(root), QuadrantMeans(), EmbeddingStore.open(tmp_path / "x", {"k": 1}, 5, n),
                       5, 3, (0, 0, 0), progress=False, executor="gpu")


def test_preprocess_windows_follow_the_policy():
    """Window arithmetic in closed form: centre crop, letterbox, crop_pct; bad settings are one clear line."""
    assert Preprocess(resize="squash").window(10, 20, 110, 70) == (10, 20, 110, 70)
    assert Preprocess(resize="center-crop").window(10, 20, 110, 70) == (35, 20, 85, 70)
    assert Preprocess(resize="letterbox").window(10, 20, 110, 70) == (10, -5, 110, 95)
    assert Preprocess(resize="center-crop", crop_pct=0.5).window(0, 0, 64, 64) == (16, 16, 48, 48)
    assert Preprocess(resize="center-crop", crop_pct=224 / 256).window(0, 0, 256, 256) == (16, 16, 240, 240)
    with pytest.raises(ObjalignError, match="resize='stretch'"):
        Preprocess(resize="stretch")
    with pytest.raises(ObjalignError, match="crop_pct=1.5"):
        Preprocess(crop_pct=1.5)


def test_render_rows_applies_the_encoders_crop_policy(zoo):
    root, table, *_ = zoo
    from objalign.data.images import FolderImages

    rgb = np.asarray(Image.open(root / "rgb.png").convert("RGB"))
    pre = Preprocess(size=SIZE, resize="center-crop", crop_pct=0.5, resample="bilinear")
    win = np.array([[4, 4, 44, 24]])
    ok, crops, bad = render_rows(FolderImages(root), "rgb.png", np.array([7]), win, [None], None, pre, (0, 0, 0))
    assert ok.tolist() == [7] and not bad
    want = render_crop(rgb, (19, 9, 29, 19), SIZE, fill=(0, 0, 0), resample="bilinear")
    np.testing.assert_array_equal(crops[0], want)


def test_store_removes_temporaries_and_names_the_differing_fields(tmp_path):
    s = EmbeddingStore.open(tmp_path / "s", {"encoder": {"name": "a", "dtype": "float32"}}, 4, 10)
    (s.path / "emb" / ".emb_00000.npy.tmp-123").write_bytes(b"half")
    EmbeddingStore.open(tmp_path / "s", {"encoder": {"name": "a", "dtype": "float32"}}, 4, 10)
    assert not list((s.path / "emb").glob(".*tmp*"))
    with pytest.raises(ObjalignError, match=r"differs in encoder\.dtype"):
        EmbeddingStore.open(tmp_path / "s", {"encoder": {"name": "a", "dtype": "bfloat16"}}, 4, 10)


def test_a_shard_missing_rows_is_not_done(tmp_path):
    """Metadata and array agree but do not account for every instance of the shard -> recomputed."""
    s = EmbeddingStore.open(tmp_path / "s", {"k": 1}, shard_size=4, n_rows=6)
    s.write_shard(0, np.zeros((3, 2), np.float32), {"annotation_id": np.arange(3)}, [])
    assert not s.shard_done(0)
    s.write_shard(0, np.zeros((3, 2), np.float32), {"annotation_id": np.arange(3)},
                  [{"annotation_id": 3, "reason": "x"}])
    assert s.shard_done(0)
    s.write_shard(1, np.zeros((2, 2), np.float32), {"annotation_id": np.arange(4, 6)}, [])
    assert s.shard_done(1)
    with pytest.raises(ObjalignError, match="not finished"):
        EmbeddingStore(tmp_path / "s").finalize(3, 2)
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["complete"] is False
