"""COCO-format sets laid out as Objects365 is: file_name with sub-folders, images over several folders and zips
(``data.images`` a list)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from objalign.config import load_config
from objalign.data import open_dataset
from objalign.data.plan import data_plan
from objalign.errors import ObjalignError


def _jpeg(seed: int, w=40, h=32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def make_patches(root):
    """Objects365-style: ``images/v1/patch0/*.jpg`` in a folder, ``images/v1/patch1/*.jpg`` in a zip."""
    names = {1: "images/v1/patch0/objects365_v1_00000001.jpg", 2: "images/v1/patch1/objects365_v1_00000002.jpg"}
    (root / "folder" / "images" / "v1" / "patch0").mkdir(parents=True)
    (root / "folder" / names[1]).write_bytes(_jpeg(1))
    with zipfile.ZipFile(root / "patch1.zip", "w") as zf:
        zf.writestr(names[2], _jpeg(2))
    doc = {"images": [{"id": i, "file_name": n, "width": 40, "height": 32} for i, n in names.items()],
           "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 2, 20, 20], "area": 400,
                            "iscrowd": 0} for i in names],
           "categories": [{"id": 1, "name": "Person"}]}
    (root / "zhiyuan_objv2_val.json").write_text(json.dumps(doc))
    return names


def test_images_in_several_folders_and_zips_with_sub_folder_names(tmp_path):
    names = make_patches(tmp_path)
    cfg = load_config(None, {"data.kind": "coco", "data.root": str(tmp_path), "data.annotations":
                             "zhiyuan_objv2_val.json", "data.images": ["folder", "patch1.zip"]})
    assert cfg.data.images == ("folder", "patch1.zip")
    ds = open_dataset(cfg.data)
    src = ds.image_source()
    for n in names.values():
        assert src.load(n).shape == (32, 40, 3)
    assert str(tmp_path / "patch1.zip") in src.describe(names[2])
    with pytest.raises(FileNotFoundError, match="add the folder or zip that holds it to data.images"):
        src.load("images/v1/patch9/nope.jpg")
    plan = "\n".join(data_plan(cfg))
    assert "images in 2 locations" in plan and "2 instances" in plan


def test_a_missing_location_and_an_empty_list_are_one_line(tmp_path):
    make_patches(tmp_path)
    cfg = load_config(None, {"data.kind": "coco", "data.root": str(tmp_path), "data.annotations":
                             "zhiyuan_objv2_val.json", "data.images": ["folder", "patch2.zip"]})
    with pytest.raises(ObjalignError, match=r"data.images = \['folder', 'patch2.zip'\]: .*patch2.zip' does not exist"):
        open_dataset(cfg.data)
    with pytest.raises(ObjalignError, match=r"data.images = \(\): give an image folder"):
        load_config(None, {"data.images": []})
