"""A COCO-format dataset with the faults real exports carry: bad boxes, file names outside the image folder,
dangling references. Nothing crashes, every bad annotation is recorded with its reason, every good one is
embedded, and no file outside the image folder is opened (an audit hook on ``open`` watches)."""

import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from objalign.crops.render import box_problem, crop_window, render_rows
from objalign.data.coco import load_coco
from objalign.data.images import FolderImages, ImagePathError, ZipImages, file_name_problem
from objalign.data.sample import sample_instances
from objalign.errors import ObjalignError

# -- the audit hook: installed once per process (hooks cannot be removed), recording only while switched on --

_WATCH = {"on": False, "opened": []}


def _hook(event, args):
    if _WATCH["on"] and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _WATCH["opened"].append(os.fsdecode(args[0]))


sys.addaudithook(_hook)


class watch_opens:
    """``with watch_opens() as opened:`` collects the path of every file opened in this process meanwhile."""

    def __enter__(self):
        _WATCH["opened"] = []
        _WATCH["on"] = True
        return _WATCH["opened"]

    def __exit__(self, *exc):
        _WATCH["on"] = False


def _inside(path: str, folder: Path) -> bool:
    return Path(os.path.abspath(path)).resolve().is_relative_to(folder.resolve())


# -- the dirty dataset -----------------------------------------------------------------------------------------


def make_dirty(small_demo, tmp_path):
    """A copy of the small demo with one of each fault; returns ``(root, outside, bad)``.

    ``bad`` maps annotation id -> expected reason substring for every annotation that must be left out at load
    (``load``) or skipped while embedding (``embed``).
    """
    root, outside = tmp_path / "ds", tmp_path / "outside"
    shutil.copytree(small_demo, root)
    outside.mkdir()
    for name in ("escape.jpg", "secret.png", "linked.png"):  # real images: opening them would succeed
        Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(outside / name)
    doc = json.loads((root / "annotations.json").read_text())
    anns = [a for a in doc["annotations"] if not a["iscrowd"]]
    by_image = {}
    for a in anns:
        by_image.setdefault(a["image_id"], []).append(a)
    images = {im["id"]: im for im in doc["images"]}
    ids = sorted(by_image)
    load, embed = {}, {}

    # item 1: non-finite and empty boxes, whatever their area says
    a = by_image[ids[0]][0]
    a["bbox"][2], a["area"] = float("nan"), 1e6
    load[a["id"]] = "non-finite box"
    a = by_image[ids[0]][1]
    a["bbox"][3], a["area"] = -5.0, 1e6
    load[a["id"]] = "zero-area box"
    # item 2: a box far larger than its image, and one mostly outside it
    a = by_image[ids[1]][0]
    a["bbox"] = [0.0, 0.0, 1e9, 20.0]
    embed[a["id"]] = "mostly outside"
    im = images[ids[1]]
    a = by_image[ids[1]][1]
    a["bbox"] = [im["width"] - 10.0, 5.0, 100.0, 30.0]
    embed[a["id"]] = "mostly outside"
    # item 3: names that leave the image folder (relative, absolute, and through a link)
    images[ids[2]]["file_name"] = "../../outside/escape.jpg"
    images[ids[3]]["file_name"] = str(outside / "secret.png")
    for a in by_image[ids[2]]:
        load[a["id"]] = "leaves the image folder"
    for a in by_image[ids[3]]:
        load[a["id"]] = "absolute path"
    linked = images[ids[4]]["file_name"]
    (root / "images" / linked).unlink()
    (root / "images" / linked).symlink_to(outside / "linked.png")
    for a in by_image[ids[4]]:
        embed[a["id"]] = "outside the image folder"
    # item 4: dangling references and a repeated id
    extra = dict(by_image[ids[5]][0], id=900001, category_id=12345)
    extra2 = dict(by_image[ids[5]][0], id=900002, image_id=987654)
    extra3 = dict(by_image[ids[5]][0], id=by_image[ids[5]][0]["id"])
    doc["annotations"] += [extra, extra2, extra3]
    load[900001], load[900002] = "category_id 12345 is not in 'categories'", "image_id 987654 is not in 'images'"
    # an area that is not a number, on a good annotation (sampling uses the box's w * h)
    by_image[ids[7]][0]["area"] = "big"
    # a corrupt image
    (root / "images" / images[ids[6]]["file_name"]).write_bytes(b"\xff\xd8 not a jpeg")
    for a in by_image[ids[6]]:
        embed[a["id"]] = "unreadable image"
    (root / "annotations.json").write_text(json.dumps(doc))  # NaN written as the NaN literal, as Python exports do
    return root, outside, load, embed, extra3


def test_load_leaves_out_and_records_each_fault(small_demo, tmp_path):
    root, _, load, _, repeated = make_dirty(small_demo, tmp_path)
    ds = load_coco(root / "annotations.json", root / "images")
    got = {r["annotation_id"]: r for r in ds.excluded if r["kind"] != "repeated id"}
    assert set(got) == set(load)
    for aid, why in load.items():
        assert why in got[aid]["reason"], (aid, got[aid])
    rep = [r for r in ds.excluded if r["kind"] == "repeated id"]
    assert [r["annotation_id"] for r in rep] == [repeated["id"]]
    kept = {a["id"] for a in ds.annotations}
    assert not kept & set(load) and len(ds.annotations) + len(ds.excluded) == len(
        json.loads((root / "annotations.json").read_text())["annotations"])
    assert "dangling reference" in ds.excluded_summary() and "bad box" in ds.excluded_summary()
    # sampling never sees them, even with every area admitted
    table = sample_instances(ds, n=10**6, seed=0, min_area=0)
    assert not set(table["annotation_id"].tolist()) & set(load)
    assert np.isfinite(table["w"]).all() and (table["w"] > 0).all() and (table["h"] > 0).all()
    # data.strict keeps the old refusal, one line naming the record and the switch
    with pytest.raises(ObjalignError, match=r"category_id 12345 is not in 'categories' .*data\.strict: false"):
        load_coco(root / "annotations.json", root / "images", strict=True)


def test_repeated_image_id_is_refused(tmp_path):
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "width": 9, "height": 9}] * 2, "categories": [],
           "annotations": []}
    (tmp_path / "a.json").write_text(json.dumps(doc))
    with pytest.raises(ObjalignError, match="repeats image id 1"):
        load_coco(tmp_path / "a.json", tmp_path)


@pytest.mark.parametrize("name, why", [
    ("../escape.jpg", "leaves"), ("a/../../escape.jpg", "leaves"), ("..\\..\\x.jpg", "leaves"),
    ("/etc/passwd", "absolute"), ("C:\\Windows\\x.png", "absolute"), ("\\\\host\\share\\x.png", "absolute"),
    ("", "empty"), ("a\x00.png", "NUL"), (".", "folder itself"), (None, "not a string")])
def test_file_name_problem_refuses_names_outside(name, why):
    assert why in file_name_problem(name)


@pytest.mark.parametrize("name", ["a.jpg", "sub/a.jpg", "a/../b.jpg", "./a.jpg", "..a.jpg"])
def test_file_name_problem_accepts_names_inside(name):
    assert file_name_problem(name) is None


def test_folder_images_refuse_links_out_and_zip_refuses_climbing_names(tmp_path):
    root, outside = tmp_path / "images", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(outside / "x.png")
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(root / "in.png")
    (root / "link.png").symlink_to(outside / "x.png")
    (root / "sub").symlink_to(outside, target_is_directory=True)
    src = FolderImages(root)
    with watch_opens() as opened:
        assert src.load("in.png").shape == (4, 5, 3)
        for name in ("link.png", "sub/x.png", "../outside/x.png", str(outside / "x.png")):
            with pytest.raises(ImagePathError, match="outside the image folder|leaves|absolute"):
                src.load(name)
    assert any(p.endswith("in.png") for p in opened)  # the hook sees the opens that do happen
    assert not [p for p in opened if _inside(p, outside)]
    import zipfile

    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.write(root / "in.png", "in.png")
    with pytest.raises(ImagePathError, match="leaves"):
        ZipImages(tmp_path / "a.zip").load("../in.png")


def test_crop_window_is_bounded_by_the_image_and_boxes_mostly_outside_are_skipped():
    # clipped to the image, then padded: a 1e9-wide box on a 200 x 150 image gives a window about the image's size
    x0, y0, x1, y1 = crop_window(0, 0, 1e9, 20, 0.1, True, width=200, height=150)
    assert x1 - x0 <= 200 * 1.2 + 2 and y1 - y0 == x1 - x0
    # boxes inside the image are unchanged by the clipping
    assert crop_window(10, 20, 40, 20, 0.1, True, width=200, height=150) == crop_window(10, 20, 40, 20, 0.1, True)
    # a box reaching past the edge: clipped (the part past the edge is filled when rendered)
    assert crop_window(190, 10, 20, 20, 0.0, False, width=200, height=150) == (190, 10, 200, 30)
    assert "mostly outside" in box_problem([0, 0, 1e9, 20], 150, 200)
    assert "mostly outside" in box_problem([190, 0, 30, 10], 150, 200)  # a third inside
    assert box_problem([180, 0, 30, 10], 150, 200) is None  # two thirds inside
    assert "outside the 200x150" in box_problem([300, 0, 10, 10], 150, 200)
    assert "non-finite" in box_problem([0, float("inf"), 1, 1], 150, 200)


class _Pre:
    size, resample = 16, "bilinear"

    def window(self, *w):
        return tuple(int(v) for v in w)


class _Images:
    def __init__(self, image):
        self.image = image

    def describe(self, name):
        return name

    def load(self, name):
        return self.image


def test_render_rows_fills_past_the_edge_and_never_allocates_the_box():
    image = np.full((150, 200, 3), 255, np.uint8)
    boxes = np.array([[0, 0, 1e9, 20], [180, 0, 30, 10], [100, 0, 100, 150]], np.float64)
    windows = np.array([crop_window(*b, 0.1, True, width=200, height=150) for b in boxes])
    rows = np.arange(3)
    ok, crops, skipped = render_rows(_Images(image), "x", rows, windows, [None] * 3, boxes, _Pre(), (0, 0, 0))
    assert ok.tolist() == [1, 2] and [r for r, _ in skipped] == [0] and "mostly outside" in skipped[0][1]
    # the right-hand box: its padding past the image edge is fill (black), the image part white
    assert crops[1][:, -1].max() == 0 and crops[1][8, 8].min() == 255
    # a mask whose recorded size is not the image's is skipped before it is decoded (its size could be anything)
    rle = {"size": [10**6, 10**6], "counts": "0"}
    ok, _, skipped = render_rows(_Images(image), "x", rows[:1], windows[2:], [rle], boxes[2:], _Pre(), (0, 0, 0))
    assert ok.size == 0 and "mask size (1000000, 1000000) != image size (150, 200)" in skipped[0][1]


def test_sample_ignores_a_meaningless_area(tmp_path):
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "width": 90, "height": 90}],
           "categories": [{"id": 1, "name": "cat"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "area": "big"},
                           {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "area": 10**400},
                           {"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "area": float("nan")}]}
    (tmp_path / "a.json").write_text(json.dumps(doc))
    ds = load_coco(tmp_path / "a.json", tmp_path)
    table = sample_instances(ds, n=10, min_area=100)  # only the 20 x 20 box reaches 100 px by its w * h
    assert table["annotation_id"].tolist() == [1] and table["area"].tolist() == [400.0]
    assert math.isfinite(table["area"][0])


# -- the whole pipeline on the dirty dataset, through the CLI ----------------------------------------------------


@pytest.mark.slow
def test_run_on_a_dirty_dataset_exits_0_records_every_bad_instance_and_reads_nothing_outside(
        small_demo, tmp_path, capfd):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from objalign.cli import main
    from objalign.embed.store import EmbeddingStore
    from objalign.encoders import VISION_ENCODERS

    root, outside, load, embed, _ = make_dirty(small_demo, tmp_path)
    out = tmp_path / "run"
    VISION_ENCODERS.register("tiny-dinov2-dirty", f"{__name__}:make_tiny")
    try:
        args = ["run", "--out", str(out), "--set", "data.kind=coco", "--set", f"data.root={root}",
                "--set", "sample.n=1000", "--set", "sample.min_area=0", "--vision", "tiny-dinov2-dirty",
                "--set", "embed.shard_size=16", "--set", "align.cv_folds=2", "--set", "align.category_folds=2",
                "--set", "align.gammas=[1]", "--set", "align.alphas=[1,10]", "--set", "align.n_permutations=0",
                "--set", "align.n_bootstrap=0", "--set", "report.html=false", "--no-progress"]
        assert main(args + ["--dry-run"]) == 0
        plan = capfd.readouterr()
        assert f"{len(load) + 1} annotation(s) left out" in plan.out and "Traceback" not in plan.out + plan.err
        with watch_opens() as opened:
            code = main(args)
        got = capfd.readouterr()
    finally:
        del VISION_ENCODERS._entries["tiny-dinov2-dirty"]
    assert code == 0, got.err[-3000:]
    assert "Traceback" not in got.out + got.err
    warnings = [line for line in got.err.splitlines() if line.startswith("objalign: warning:")]
    assert len(warnings) == 1 and f"left out {len(load) + 1} annotation(s)" in warnings[0]
    assert not [p for p in opened if _inside(p, outside)]  # nothing outside the image root was opened
    assert any(_inside(p, root / "images") for p in opened)

    excluded = {r["annotation_id"]: r["reason"] for r in json.loads((out / "sample" / "excluded.json").read_text())}
    for aid, why in load.items():
        assert why in excluded[aid]
    inst = pd_ids(out / "sample" / "instances.parquet")
    doc = json.loads((root / "annotations.json").read_text())
    good = {a["id"] for a in doc["annotations"] if not a["iscrowd"]} - set(load) - set(embed)
    assert set(embed) <= inst and good <= inst
    store = out / "embeddings" / json.loads((out / "embeddings" / "vision.json").read_text())["store"]
    meta, vectors = EmbeddingStore(store).read()
    skipped = {s["annotation_id"]: s["reason"] for s in json.loads((store / "manifest.json").read_text())["skipped"]}
    assert set(meta["annotation_id"].tolist()) == good  # every good instance embedded
    assert set(skipped) == set(embed)  # every bad one recorded, with its reason
    for aid, why in embed.items():
        assert why in skipped[aid], (aid, skipped[aid])
    assert set(meta["annotation_id"].tolist()) | set(skipped) == inst and np.isfinite(vectors).all()
    report = json.loads((out / "report.json").read_text())
    assert report["n_excluded"] == len(load) + 1 and report["n_skipped"] == len(embed)
    assert f"{len(load) + 1} annotation(s) of the dataset left out" in (out / "report.txt").read_text()


def pd_ids(path):
    from objalign.tables import read_table

    return set(read_table(path)["annotation_id"].tolist())


def make_tiny(pooling="cls", model_path=None, device="cpu", dtype="float32", image_size=None):
    from tiny_models import tiny_dinov2

    return tiny_dinov2("tiny-dinov2-dirty", pooling, device, dtype, image_size, layers=1)
