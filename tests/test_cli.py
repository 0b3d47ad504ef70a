"""The command line: fast help, and bad input as one clear line (exit 2), never a traceback."""

import json
import subprocess
import sys
import time

from objalign.cli import main


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys, time; t=time.time(); from objalign.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy=[m for m in ('torch','transformers','onnx','sklearn','matplotlib') if m in sys.modules]\n"
            "print('HEAVY', heavy, time.time()-t)")
    t0 = time.time()
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in res.stdout, res.stdout + res.stderr
    assert time.time() - t0 < 5  # includes interpreter start-up on a loaded machine; the CLI itself is ~0.1 s


def _err(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("objalign: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_malformed_coco_json(capsys, tmp_path):
    (tmp_path / "ann.json").write_text('{"images": [}')
    err = _err(capsys, ["sample", "--out", str(tmp_path / "run"), "--set", "data.kind=coco",
                        "--set", f"data.root={tmp_path}", "--set", "data.annotations=ann.json"])
    assert "ann.json" in err and "not valid JSON" in err


def test_unknown_encoder_did_you_mean(capsys, small_demo, tmp_path):
    out = str(tmp_path / "run")
    assert main(["sample", "--out", out, "--set", "data.kind=coco", "--set", f"data.root={small_demo}"]) == 0
    assert main(["crop", "--out", out, "--set", "data.kind=coco", "--set", f"data.root={small_demo}"]) == 0
    capsys.readouterr()
    err = _err(capsys, ["embed", "--out", out, "--set", "data.kind=coco", "--set", f"data.root={small_demo}",
                        "--vision", "facebook/dinov2-lage"])
    assert "did you mean 'facebook/dinov2-large'" in err


def test_unknown_crop_mode(capsys, small_demo, tmp_path):
    out = str(tmp_path / "run")
    assert main(["sample", "--out", out, "--set", "data.kind=coco", "--set", f"data.root={small_demo}"]) == 0
    capsys.readouterr()
    err = _err(capsys, ["crop", "--out", out, "--set", "data.kind=coco", "--set", f"data.root={small_demo}",
                        "--crop-mode", "gt-mask2"])
    assert "did you mean 'gt-mask'" in err


def test_unwritable_output_folder(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = _err(capsys, ["sample", "--out", str(blocker / "run")])
    assert "cannot be written" in err and "--out" in err


def test_stage_before_its_input(capsys, tmp_path):
    err = _err(capsys, ["align", "--out", str(tmp_path)])
    assert "has not run yet" in err


def test_missing_image_is_recorded_not_fatal(capsys, small_demo, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(small_demo, root)
    doc = json.loads((root / "annotations.json").read_text())
    (root / "images" / doc["images"][0]["file_name"]).unlink()
    out = str(tmp_path / "run")
    base = ["--out", out, "--set", "data.kind=coco", "--set", f"data.root={root}", "--set", "sample.n=20", "--no-progress"]
    assert main(["sample", *base]) == 0 and main(["crop", *base]) == 0
    assert main(["embed", *base]) == 0
    stdout = capsys.readouterr().out
    # "n_skipped" is always printed, so check the recorded count itself: exactly the sampled objects of the
    # deleted image are skipped, each with its reason, and the one-line notice gives the same count
    import ast

    from objalign.tables import read_table

    sampled = read_table(tmp_path / "run" / "sample" / "instances.parquet")
    lost = sorted(int(a) for a, i in zip(sampled["annotation_id"], sampled["image_id"]) if i == doc["images"][0]["id"])
    assert lost, "the deleted image must hold a sampled object for this test to mean anything"
    line = next(x for x in stdout.splitlines() if x.startswith("[embed] done: "))
    summary = ast.literal_eval(line[len("[embed] done: "):])
    assert summary["n_skipped"] == len(lost) and summary["n_vision"] == 20 - len(lost)
    assert sorted(s["annotation_id"] for s in summary["skipped"]) == lost
    assert all(s["reason"].startswith("image file not found") for s in summary["skipped"])
    assert f"objalign: {len(lost)} object(s) skipped while embedding" in stdout


def test_data_demo_and_models(capsys, tmp_path):
    assert main(["data", "demo", "--out", str(tmp_path / "d"), "--n-images", "5"]) == 0
    assert (tmp_path / "d" / "annotations.json").is_file()
    assert main(["models", "facebook/*"]) == 0
    out = capsys.readouterr().out
    assert "facebook/dinov2-large" in out and "1024-d" in out


def test_dry_run_needs_no_out_and_shows_the_default(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "run folder: runs/demo (the default; choose another with --out)" in out
    assert "outputs   runs/demo/" in out and not (tmp_path / "runs").exists()  # a dry run writes nothing
    cfg = tmp_path / "my_study.yaml"
    cfg.write_text("sample:\n  n: 10\n")
    assert main(["run", str(cfg), "--dry-run"]) == 0
    assert "outputs   runs/my_study/" in capsys.readouterr().out
    assert main(["run", str(cfg), "--dry-run", "--out", str(tmp_path / "elsewhere")]) == 0
    out = capsys.readouterr().out
    assert "the default" not in out and f"outputs   {tmp_path / 'elsewhere'}/" in out
