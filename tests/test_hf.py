"""Hugging Face datasets as an object source: a tiny dataset made here with Dataset.from_dict and save_to_disk
(never the hub), objects as a dict of lists with a ClassLabel, or a list of dicts with string categories."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from objalign.config import load_config
from objalign.data import open_dataset
from objalign.data.hf import to_xywh
from objalign.data.plan import data_plan
from objalign.errors import ObjalignError

datasets = pytest.importorskip("datasets")


def _image(seed: int, w: int = 48, h: int = 40) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def make_hf(path, fmt="xyxy", labels=True):
    """Three images, objects in ``fmt``; categories as a ClassLabel (``labels``) or as strings."""
    names = ["cat", "dog"]
    boxes = [[[2, 3, 20, 30], [5, 5, 40, 35]], [[0, 0, 10, 10]], [[1, 1, 1e309, 4], [4, 4, 30, 20]]]
    cats = [[0, 1], [1], [0, 0]]
    if fmt == "xywh_norm":
        boxes = [[[b[0] / 48, b[1] / 40, (b[2] - b[0]) / 48, (b[3] - b[1]) / 40] for b in row] for row in boxes]
    if labels:
        objects = [{"bbox": b, "category": c} for b, c in zip(boxes, cats)]
        feature = datasets.Sequence({"bbox": datasets.Sequence(datasets.Value("float64")),
                                     "category": datasets.ClassLabel(names=names)})
    else:
        objects = [[{"bbox": b, "category": names[c]} for b, c in zip(bs, cs)] for bs, cs in zip(boxes, cats)]
        feature = [{"bbox": datasets.Sequence(datasets.Value("float64")), "category": datasets.Value("string")}]
    features = datasets.Features({"image": datasets.Image(), "objects": feature})
    ds = datasets.Dataset.from_dict({"image": [_image(i) for i in range(3)], "objects": objects}, features=features)
    ds.save_to_disk(str(path))
    return ds


def _cfg(path, **kw):
    return load_config(None, {"data.kind": "hf", "data.root": str(path), "sample.min_area": 0,
                              **{f"data.{k}": v for k, v in kw.items()}})


def test_box_formats():
    assert to_xywh([2, 3, 20, 30], "xyxy", 48, 40) == [2, 3, 18, 27]
    assert to_xywh([0.5, 0.5, 0.25, 0.25], "xywh_norm", 48, 40) == [24, 20, 12, 10]
    assert to_xywh([0.5, 0.5, 0.75, 1.0], "xyxy_norm", 48, 40) == [24, 20, 12, 20]
    assert to_xywh([1, 2, "x", 4], "xywh", 48, 40) is None and to_xywh([1, 2, float("nan"), 4], "xywh", 1, 1) is None


@pytest.mark.parametrize("labels", [True, False])
def test_save_to_disk_folder_is_read_with_its_schema(tmp_path, labels):
    make_hf(tmp_path / "hf", labels=labels)
    ds = open_dataset(_cfg(tmp_path / "hf", box_format="xyxy").data)
    assert sorted(ds.categories.values()) == ["cat", "dog"]
    assert len(ds.annotations) == 4
    bad = [r for r in ds.excluded]
    assert len(bad) == 1 and bad[0]["kind"] == "bad box" and "row 2" in bad[0]["reason"]
    first = ds.annotations[0]
    assert first["bbox"] == [2, 3, 18, 27] and ds.images[0]["width"] == 48 and ds.images[0]["height"] == 40
    assert ds.image_source().load("1").shape == (40, 48, 3)
    np.testing.assert_array_equal(ds.image_source().load("1"), np.asarray(_image(1)))


def test_fingerprint_follows_the_dataset_and_schema(tmp_path):
    make_hf(tmp_path / "hf")
    a = open_dataset(_cfg(tmp_path / "hf", box_format="xyxy").data).fingerprint
    assert open_dataset(_cfg(tmp_path / "hf", box_format="xyxy").data).fingerprint == a
    assert open_dataset(_cfg(tmp_path / "hf", box_format="xywh").data).fingerprint != a
    make_hf(tmp_path / "hf2", fmt="xywh_norm")
    b = open_dataset(_cfg(tmp_path / "hf2", box_format="xywh_norm").data)
    assert b.fingerprint != a and b.annotations[0]["bbox"] == pytest.approx([2, 3, 18, 27])


def test_schema_errors_and_dry_run(tmp_path):
    make_hf(tmp_path / "hf")
    with pytest.raises(ObjalignError, match="data.hf_objects = 'objs': .* has no such column"):
        open_dataset(_cfg(tmp_path / "hf", hf_objects="objs").data)
    with pytest.raises(ObjalignError, match="data.box_format = 'cxcywh'"):
        _cfg(tmp_path / "hf", box_format="cxcywh")
    plan = "\n".join(data_plan(_cfg(tmp_path / "hf", box_format="xyxy")))
    assert "save_to_disk folder" in plan and "4 instances" in plan and "2 categories" in plan


def test_pickled_image_source_reopens(tmp_path):
    import pickle

    make_hf(tmp_path / "hf")
    src = open_dataset(_cfg(tmp_path / "hf", box_format="xyxy").data).image_source()
    src.load("0")
    again = pickle.loads(pickle.dumps(src))
    assert again._ds is None and again.load("2").shape == (40, 48, 3)


def test_a_dataset_repository_folder_goes_through_the_hub_loader(tmp_path, monkeypatch):
    """A hub dataset's files (parquet under data/, as a clone or a snapshot download holds them) are read with
    ``datasets.load_dataset(folder)`` — the loader a hub name reaches after its download — with the same objects,
    images and names as the save_to_disk folder of the same rows."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    made = make_hf(tmp_path / "saved")
    (tmp_path / "repo" / "data").mkdir(parents=True)
    made.to_parquet(str(tmp_path / "repo" / "data" / "train-00000-of-00001.parquet"))
    saved = open_dataset(_cfg(tmp_path / "saved", box_format="xyxy").data)
    repo = open_dataset(_cfg(tmp_path / "repo", box_format="xyxy").data)
    assert repo.categories == saved.categories and repo.annotations == saved.annotations
    assert [r["kind"] for r in repo.excluded] == ["bad box"]
    np.testing.assert_array_equal(repo.image_source().load("2"), np.asarray(_image(2)))
    plan = "\n".join(data_plan(_cfg(tmp_path / "repo", box_format="xyxy")))
    assert "a dataset repository's files" in plan and "4 instances" in plan
    (tmp_path / "empty").mkdir()
    with pytest.raises(ObjalignError, match="neither a folder written by save_to_disk .* nor a dataset repository"):
        open_dataset(_cfg(tmp_path / "empty").data)


def test_a_hub_name_is_loaded_by_name_and_split(tmp_path, monkeypatch):
    """A name that is not a folder goes to ``datasets.load_dataset(name, split=...)``; offline and not cached, it is
    one line naming it."""
    made = make_hf(tmp_path / "saved")
    calls = []

    def fake_load_dataset(name, split=None, **kw):
        calls.append((name, split))
        return made

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = open_dataset(_cfg("someone/detection-set", box_format="xyxy", hf_split="validation").data)
    assert calls == [("someone/detection-set", "validation")] and len(ds.annotations) == 4
    monkeypatch.undo()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    with pytest.raises(ObjalignError, match="data.root = 'nobody/no-such-set-objalign': not a folder and not loadable"):
        open_dataset(_cfg("nobody/no-such-set-objalign").data)
