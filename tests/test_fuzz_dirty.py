"""Seeded fuzzing of COCO files and images (boxes, ids, names, segmentations, image bytes, modes, sizes) through
sample, crop and embed with a tiny DINOv2: nothing but an ``ObjalignError`` may escape, every sampled instance
ends up embedded or recorded with a reason, every annotation is kept or recorded, and no file outside the image
folder is opened."""

import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from objalign.crops.stage import decide_crops, save_preview  # noqa: E402
from objalign.data.coco import load_coco  # noqa: E402
from objalign.data.sample import sample_instances  # noqa: E402
from objalign.embed.engine import extract_vision  # noqa: E402
from objalign.embed.store import EmbeddingStore  # noqa: E402
from objalign.errors import ObjalignError  # noqa: E402

N_CASES = 12
N_IMAGES = 10  # of the small demo, per case

_OPENED = {"on": False, "paths": []}


def _hook(event, args):
    if _OPENED["on"] and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED["paths"].append(os.path.abspath(os.fsdecode(args[0])))


sys.addaudithook(_hook)  # hooks cannot be removed: this one records only while _OPENED["on"]


@pytest.fixture(scope="module")
def tiny_encoder():
    from tiny_models import tiny_dinov2

    return tiny_dinov2("tiny-dinov2-fuzz", hidden_size=16, layers=1)


# -- corruptions: each takes (rng, case) and changes the dataset in place ----------------------------------------

BAD_NUMBERS = [float("nan"), float("inf"), -float("inf"), 0.0, -3.0, 1e9, -1e9, 1e300, 10**30, 0.4, 5e4]


def corrupt_box(rng, c):
    a = c.pick_annotation(rng)
    a["bbox"][int(rng.integers(4))] = BAD_NUMBERS[int(rng.integers(len(BAD_NUMBERS)))]
    if rng.random() < 0.5:
        a["area"] = [1e12, "big", None, float("nan"), -1, 10**400][int(rng.integers(6))]


def corrupt_id(rng, c):
    a = c.pick_annotation(rng)
    which = int(rng.integers(5)) if rng.random() < 0.95 else 5
    if which == 0:
        a["image_id"] = 10**6 + int(rng.integers(100))
    elif which == 1:
        a["category_id"] = 10**6 + int(rng.integers(100))
    elif which == 2:
        c.doc["annotations"].append(dict(a, bbox=list(a["bbox"])))  # a repeated annotation id
    elif which in (3, 4):
        a["id"] = c.doc["annotations"][int(rng.integers(len(c.doc["annotations"])))]["id"]
    else:
        a["id"] = str(a["id"]) if rng.random() < 0.5 else None  # breaks the schema: one ObjalignError line


def corrupt_name(rng, c):
    im = c.pick_image(rng)
    which = int(rng.integers(6))
    if which == 0:
        im["file_name"] = "../../outside/o.png"
    elif which == 1:
        im["file_name"] = str(c.outside / "o.png")
    elif which == 2:
        im["file_name"] = "missing/" + im["file_name"]
    elif which == 3:
        im["file_name"] = ["", ".", "..", "a/../../b.png", "C:\\o.png"][int(rng.integers(5))]
    elif which == 4:  # a link out of the folder, under a name that looks harmless
        link = c.images / f"link{int(rng.integers(10**6))}.png"
        link.symlink_to(c.outside / "o.png")
        im["file_name"] = link.name
    else:
        im["file_name"] = c.doc["images"][int(rng.integers(len(c.doc["images"])))]["file_name"]  # another image


def corrupt_bytes(rng, c):
    path = c.images / c.pick_image(rng)["file_name"]
    if not path.is_file() or path.is_symlink():
        return
    data = path.read_bytes()
    which = int(rng.integers(4))
    if which == 0:
        data = data[: int(rng.integers(len(data)))]
    elif which == 1:
        data = rng.integers(0, 256, int(rng.integers(1, 2000)), dtype=np.uint8).tobytes()
    elif which == 2:
        data = b""
    else:
        at = rng.integers(0, len(data), 20)
        arr = np.frombuffer(data, np.uint8).copy()
        arr[at] ^= 0xFF
        data = arr.tobytes()
    path.write_bytes(data)


def corrupt_mode(rng, c):
    path = c.images / c.pick_image(rng)["file_name"]
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except Exception:  # already corrupted by another fault
        return
    mode, fmt = [("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("CMYK", "TIFF"), ("1", "PNG"),
                 ("I;16", "PNG"), ("F", "TIFF"), ("I", "TIFF")][int(rng.integers(9))]
    wide = {"I;16": np.uint16, "F": np.float32, "I": np.int32}
    if mode in wide:  # 16- and 32-bit grey: made from the grey values, scaled
        pic = Image.fromarray((np.asarray(rgb.convert("L"), np.float32) * 200).astype(wide[mode]))
    else:
        pic = rgb.convert(mode)
    buf = io.BytesIO()
    pic.save(buf, fmt)
    path.write_bytes(buf.getvalue())  # the extension no longer matches the format: PIL goes by the bytes


def corrupt_size(rng, c):
    im = c.pick_image(rng)
    if rng.random() < 0.5:  # the record lies about the size
        k = ["width", "height"][int(rng.integers(2))]
        im[k] = int(max(1, im[k] * [0.3, 3.0, 1000.0][int(rng.integers(3))]))
    else:  # the file has another size than the record says
        path = c.images / im["file_name"]
        try:
            with Image.open(path) as pic:
                pic.convert("RGB").resize((int(rng.integers(1, 60)), int(rng.integers(1, 60)))).save(path, "PNG")
        except Exception:
            return


def corrupt_segmentation(rng, c):
    a = c.pick_annotation(rng)
    a["segmentation"] = [[], [[1, 2, 3]], {"counts": "!!", "size": [3, 3]}, {"size": [5]}, "x", [[float("nan")] * 8],
                         {"counts": [5, 10**9], "size": [10, 10]}][int(rng.integers(7))]


CORRUPTIONS = (corrupt_box, corrupt_id, corrupt_name, corrupt_bytes, corrupt_mode, corrupt_size,
               corrupt_segmentation)


class Case:
    def __init__(self, small_demo, tmp, rng):
        self.root, self.outside = tmp / "ds", tmp / "outside"
        self.images = self.root / "images"
        self.images.mkdir(parents=True)
        self.outside.mkdir()
        Image.fromarray(np.full((30, 30, 3), 90, np.uint8)).save(self.outside / "o.png")
        doc = json.loads((small_demo / "annotations.json").read_text())
        keep = {im["id"] for im in doc["images"][:N_IMAGES]}
        doc["images"] = [im for im in doc["images"] if im["id"] in keep]
        doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in keep]
        for im in doc["images"]:
            shutil.copy(small_demo / "images" / im["file_name"], self.images / im["file_name"])
        self.doc = doc

    def pick_annotation(self, rng):
        return self.doc["annotations"][int(rng.integers(len(self.doc["annotations"])))]

    def pick_image(self, rng):
        return self.doc["images"][int(rng.integers(len(self.doc["images"])))]


@pytest.mark.parametrize("seed", range(N_CASES))
def test_fuzzed_dataset_through_sample_crop_embed(seed, small_demo, tmp_path, tiny_encoder):
    rng = np.random.default_rng(seed)
    case = Case(small_demo, tmp_path, rng)
    faults = [CORRUPTIONS[int(i)] for i in rng.integers(len(CORRUPTIONS), size=int(rng.integers(4, 14)))]
    for f in faults:
        f(rng, case)
    ann_path = case.root / "annotations.json"
    ann_path.write_text(json.dumps(case.doc))
    mode = ["box", "gt-mask"][seed % 2]

    _OPENED["on"], _OPENED["paths"] = True, []
    try:
        ds = load_coco(ann_path, case.images)
        inst = sample_instances(ds, n=10**6, seed=seed, min_area=0, exclude_crowd=bool(seed % 3))
        table, _ = decide_crops(ds, inst, mode, 0.1, True)
        save_preview(ds, table, tmp_path / "preview.png", (124, 116, 104))
        n = len(table["annotation_id"])
        store = EmbeddingStore.open(tmp_path / "store", {"seed": seed}, shard_size=16, n_rows=n)
        stats = extract_vision(table, ds.image_source(), tiny_encoder, store, 16, 8, (124, 116, 104),
                               num_workers=2, progress=False)
        manifest = store.finalize(stats["n_shards"], tiny_encoder.dim)
    except ObjalignError as exc:  # the one thing allowed out: one line naming the problem
        assert "\n" not in str(exc) and str(exc)
        return
    finally:
        _OPENED["on"] = False
    outside = [p for p in _OPENED["paths"] if Path(p).resolve().is_relative_to(case.outside.resolve())]
    assert outside == [], f"opened outside the image folder: {outside} (faults: {[f.__name__ for f in faults]})"

    # every annotation is kept or recorded with a reason
    assert len(ds.annotations) + len(ds.excluded) == len(case.doc["annotations"])
    assert all(r["reason"] and r["kind"] for r in ds.excluded)
    # every sampled instance is embedded or recorded with a reason, never both, never lost
    meta, vectors = EmbeddingStore(store.path).read()
    embedded = meta["annotation_id"].tolist()
    skipped = [s["annotation_id"] for s in manifest["skipped"]]
    assert all(s["reason"] for s in manifest["skipped"])
    assert sorted(embedded + skipped) == sorted(table["annotation_id"].tolist())
    assert len(set(embedded)) == len(embedded) and not set(embedded) & set(skipped)
    assert vectors.shape == (len(embedded), tiny_encoder.dim) and np.isfinite(vectors).all()
    # sampled boxes are finite and have an area (the rest were recorded at load)
    assert np.isfinite(np.stack([table[c] for c in ("x", "y", "w", "h")])).all()
    assert (table["w"] > 0).all() and (table["h"] > 0).all()
