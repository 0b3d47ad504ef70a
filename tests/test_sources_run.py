"""End-to-end runs on the other object sources, made here from the small demo: Visual Genome's json form with
attribute phrases as categories, and a Hugging Face ``save_to_disk`` folder (run with a tiny vision encoder)."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from test_visual_genome import make_vg


def make_tiny(pooling="cls", model_path=None, device="cpu", dtype="float32", image_size=None):
    from tiny_models import tiny_dinov2

    return tiny_dinov2("tiny-dinov2-sources", pooling, device, dtype, image_size, layers=1)


def demo_as_hf(demo, path):
    """The demo as a datasets folder: image, width, height, objects {bbox (xyxy), category (ClassLabel)}."""
    datasets = pytest.importorskip("datasets")
    doc = json.loads((demo / "annotations.json").read_text())
    cats = sorted(doc["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(cats)}
    rows = {im["id"]: {"image": Image.open(demo / "images" / im["file_name"]).convert("RGB"), "width": im["width"],
                       "height": im["height"], "objects": {"bbox": [], "category": []}} for im in doc["images"]}
    for a in doc["annotations"]:
        x, y, w, h = a["bbox"]
        rows[a["image_id"]]["objects"]["bbox"].append([x, y, x + w, y + h])
        rows[a["image_id"]]["objects"]["category"].append(index[a["category_id"]])
    features = datasets.Features({
        "image": datasets.Image(), "width": datasets.Value("int32"), "height": datasets.Value("int32"),
        "objects": datasets.Sequence({"bbox": datasets.Sequence(datasets.Value("float64")),
                                      "category": datasets.ClassLabel(names=[c["name"] for c in cats])})})
    cols = {k: [r[k] for r in rows.values()] for k in ("image", "width", "height", "objects")}
    datasets.Dataset.from_dict(cols, features=features).save_to_disk(str(path))


@pytest.mark.slow
@pytest.mark.parametrize("source", ["visual_genome", "hf"])
def test_run_end_to_end(small_demo, tmp_path, capfd, source):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from objalign.cli import main
    from objalign.encoders import VISION_ENCODERS

    if source == "hf":
        demo_as_hf(small_demo, tmp_path / "hf")
        data = ["data.kind=hf", f"data.root={tmp_path / 'hf'}", "data.box_format=xyxy"]
    else:
        make_vg(small_demo, tmp_path / "vg")
        data = ["data.kind=visual_genome", f"data.root={tmp_path / 'vg'}", "data.images=.",
                "data.categories=attribute_name"]
    out = tmp_path / "run"
    VISION_ENCODERS.register("tiny-dinov2-sources", f"{__name__}:make_tiny")
    try:
        args = ["run", "--out", str(out), "--set", "sample.n=1000", "--set", "sample.min_area=0",
                "--vision", "tiny-dinov2-sources", "--set", "embed.shard_size=64", "--set", "align.cv_folds=2",
                "--set", "align.category_folds=3", "--set", "align.gammas=[1]", "--set", "align.alphas=[1,10]",
                "--set", "align.n_permutations=0", "--set", "align.n_bootstrap=0", "--set", "report.html=false",
                "--no-progress"]
        for d in data:
            args += ["--set", d]
        assert main(args + ["--dry-run"]) == 0
        plan = capfd.readouterr().out
        assert ("Visual Genome" if source == "visual_genome" else "Hugging Face dataset") in plan
        code = main(args)
        got = capfd.readouterr()
    finally:
        del VISION_ENCODERS._entries["tiny-dinov2-sources"]
    assert code == 0, got.err[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["n_categories"] == 30 and report["n_skipped"] == 0
    assert {r["split"] for r in report["results"]} == {"heldout_images", "heldout_categories"}
    if source == "visual_genome":
        assert any(r["category"] == "red circle" for r in report["per_category"])
