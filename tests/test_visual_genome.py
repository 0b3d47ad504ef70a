"""Visual Genome as an object source: tiny image_data.json / objects.json / attributes.json made here from the
small demo (names with case, spacing and plural variants; attributes), images in VG_100K/ and VG_100K_2/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from objalign.config import load_config
from objalign.data import open_dataset
from objalign.data.plan import data_plan
from objalign.data.visual_genome import clean, load_visual_genome, normalise_names


def make_vg(demo: Path, root: Path) -> dict:
    """Write the three json files into ``root`` and the images into root/VG_100K{,_2}; returns the objects doc."""
    coco = json.loads((demo / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    root.mkdir(parents=True, exist_ok=True)
    image_data, objects, attributes = [], {}, {}
    for im in coco["images"]:
        folder = "VG_100K" if im["id"] % 2 else "VG_100K_2"
        (root / folder).mkdir(exist_ok=True)
        shutil.copyfile(demo / "images" / im["file_name"], root / folder / im["file_name"])
        image_data.append({"image_id": im["id"], "width": im["width"], "height": im["height"], "coco_id": None,
                           "url": f"https://cs.stanford.edu/people/rak248/{folder}/{im['file_name']}"})
        objects[im["id"]] = {"image_id": im["id"], "objects": []}
        attributes[im["id"]] = {"image_id": im["id"], "attributes": []}
    for k, a in enumerate(coco["annotations"]):
        colour, shape = names[a["category_id"]].split(" ", 1)
        plural = shape + ("es" if shape.endswith(("s", "x", "ch", "sh")) else "s")
        variant = [shape, f"{plural.upper()} ", f"  {shape.title()}"][k % 3]  # cross, CROSSES, Cross
        x, y, w, h = (int(round(v)) for v in a["bbox"])
        obj = {"object_id": 1000 + a["id"], "x": x, "y": y, "w": max(w, 1), "h": max(h, 1), "names": [variant],
               "synsets": [f"{shape}.n.01"]}
        objects[a["image_id"]]["objects"].append(obj)
        attributes[a["image_id"]]["attributes"].append({**obj, "attributes": [f" {colour.title()}"]})
    (root / "image_data.json").write_text(json.dumps(image_data))
    (root / "objects.json").write_text(json.dumps(list(objects.values())))
    (root / "attributes.json").write_text(json.dumps(list(attributes.values())))
    return {"objects": list(objects.values()), "shapes": sorted({n.split(" ", 1)[1] for n in names.values()})}


def test_name_rule():
    assert clean("  Red,  CAR. ") == "red, car"
    got = normalise_names(["Cars", "car", "pants", "boxes", "box", "glasses", "puppies", "puppy", "bus"])
    assert got == {"Cars": "car", "car": "car", "pants": "pants", "boxes": "box", "box": "box",
                   "glasses": "glasses", "puppies": "puppy", "puppy": "puppy", "bus": "bus"}


@pytest.mark.parametrize("mode", ["name", "synset", "attribute_name"])
def test_categories_by_name_synset_or_attribute(small_demo, tmp_path, mode):
    made = make_vg(small_demo, tmp_path)
    ds = load_visual_genome(tmp_path, tmp_path, categories=mode)
    names = sorted(ds.categories.values())
    if mode == "attribute_name":
        assert "red circle" in names and all(" " in n for n in names) and len(names) == 30
    else:
        assert names == made["shapes"]  # "TRIANGLES " and "Triangle" merged into "triangle"
    src = ds.image_source()
    for im in list(ds.images.values())[:2]:  # one from each folder
        assert src.load(im["file_name"]).shape == (im["height"], im["width"], 3)
    assert not ds.excluded


def test_min_count_and_malformed_objects_are_recorded(small_demo, tmp_path):
    make_vg(small_demo, tmp_path)
    objects = json.loads((tmp_path / "objects.json").read_text())
    objects[0]["objects"][0]["names"] = []
    objects[0]["objects"][1]["x"] = "left"
    objects[1]["objects"][0]["names"] = ["unicorn"]
    (tmp_path / "objects.json").write_text(json.dumps(objects))
    images = json.loads((tmp_path / "image_data.json").read_text())
    images[2]["url"] = None
    (tmp_path / "image_data.json").write_text(json.dumps(images))
    ds = load_visual_genome(tmp_path, tmp_path, min_count=2)
    kinds = {r["kind"] for r in ds.excluded}
    assert {"object with no name", "bad box", "rare category", "image without url"} <= kinds
    assert "unicorn" not in ds.categories.values()
    rare = [r for r in ds.excluded if r["kind"] == "rare category"]
    assert "'unicorn' has 1 object(s), fewer than data.min_count = 2" in rare[0]["reason"]
    fp = ds.fingerprint
    assert load_visual_genome(tmp_path, tmp_path, min_count=1).fingerprint != fp


def test_config_and_dry_run(small_demo, tmp_path):
    make_vg(small_demo, tmp_path)
    cfg = load_config(None, {"data.kind": "visual_genome", "data.root": str(tmp_path), "data.images": ".",
                             "data.categories": "attribute_name", "sample.min_area": 0})
    assert len(open_dataset(cfg.data).categories) == 30
    plan = "\n".join(data_plan(cfg))
    assert "Visual Genome" in plan and "categories: attribute_name" in plan and "30 categories" in plan
    with pytest.raises(Exception, match="data.categories = 'colour'"):
        load_config(None, {"data.categories": "colour"})
