import hashlib
import json

import numpy as np
import pytest

from objalign.data.coco import load_coco
from objalign.data.demo import make_demo_dataset
from objalign.data.sample import sample_instances
from objalign.errors import ObjalignError


def test_demo_is_deterministic_and_complete(tmp_path):
    a = make_demo_dataset(tmp_path / "a", seed=3, n_images=30)
    b = make_demo_dataset(tmp_path / "b", seed=3, n_images=30)
    assert a.read_bytes() == b.read_bytes()
    for name in ("000001.jpg", "000030.jpg"):
        assert (hashlib.sha256((a.parent / "images" / name).read_bytes()).digest()
                == hashlib.sha256((b.parent / "images" / name).read_bytes()).digest())
    c = make_demo_dataset(tmp_path / "c", seed=4, n_images=30)
    assert c.read_bytes() != a.read_bytes()


def test_default_demo_meets_the_spec(tmp_path):
    path = make_demo_dataset(tmp_path / "demo", seed=0)
    doc = json.loads(path.read_text())
    anns = [a for a in doc["annotations"] if not a["iscrowd"]]
    assert len(anns) >= 1000
    assert len(doc["categories"]) >= 24
    assert any(a["iscrowd"] for a in doc["annotations"])
    assert any(isinstance(a["segmentation"], list) for a in anns)
    assert any(isinstance(a["segmentation"], dict) for a in anns)
    per_image = np.bincount([a["image_id"] for a in anns])
    assert np.mean(per_image[per_image > 0]) >= 3
    names = [c["name"] for c in doc["categories"]]
    assert "red circle" in names and "blue star" in names
    areas = np.array([a["area"] for a in anns])
    assert areas.max() / areas.min() > 20  # varied sizes


def test_demo_masks_match_area_and_box(small_demo):
    from pycocotools.coco import COCO

    coco = COCO(str(small_demo / "annotations.json"))
    for a in coco.dataset["annotations"][:60]:
        m = coco.annToMask(a)
        assert abs(m.sum() - a["area"]) <= 0.15 * a["area"] + 20  # polygon rasterisers differ at the edge
        ys, xs = np.nonzero(m)
        x, y, w, h = a["bbox"]
        assert abs(xs.min() - x) <= 2 and abs(ys.min() - y) <= 2


def test_load_coco_errors_name_file_and_fix(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(ObjalignError, match=r"bad.json: not valid JSON"):
        load_coco(bad, tmp_path)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ObjalignError, match="missing list 'annotations'"):
        load_coco(bad, tmp_path)
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
           "categories": [{"id": 1, "name": "cat"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 1, 1]}]}
    bad.write_text(json.dumps(doc))
    with pytest.raises(ObjalignError, match=r"category_id 7 is not in 'categories' .*data\.strict: false"):
        load_coco(bad, tmp_path, strict=True)  # without strict it is skipped and recorded (tests/test_dirty_data.py)
    doc["annotations"][0].update(category_id=1, bbox=[0, 0, 1])
    bad.write_text(json.dumps(doc))
    with pytest.raises(ObjalignError, match=r"bbox=\[0, 0, 1\]"):
        load_coco(bad, tmp_path)
    with pytest.raises(ObjalignError, match="not found"):
        load_coco(tmp_path / "nope.json", tmp_path)


def test_sampling_is_seeded_and_filters(small_demo):
    ds = load_coco(small_demo / "annotations.json", small_demo / "images")
    t1 = sample_instances(ds, n=50, seed=1, min_area=200)
    t2 = sample_instances(ds, n=50, seed=1, min_area=200)
    t3 = sample_instances(ds, n=50, seed=2, min_area=200)
    assert np.array_equal(t1["annotation_id"], t2["annotation_id"])
    assert not np.array_equal(t1["annotation_id"], t3["annotation_id"])
    assert len(t1["annotation_id"]) == 50 and np.all(t1["area"] >= 200)
    crowd = {a["id"] for a in ds.annotations if a["iscrowd"]}
    everything = sample_instances(ds, n=10**6, seed=0, min_area=0)
    assert not crowd & set(everything["annotation_id"].tolist())
    assert len(everything["annotation_id"]) == sum(1 for a in ds.annotations if not a["iscrowd"])
    assert np.all(np.diff(everything["image_id"]) >= 0)  # grouped by image for the extraction engine
    with pytest.raises(ObjalignError, match="sample.n"):
        sample_instances(ds, n=0)
