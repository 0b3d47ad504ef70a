"""Unit of analysis (object, image, prototype) and convergence curves, against their definitions."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from objalign.config import AlignConfig
from objalign.errors import ObjalignError
from objalign.evaluation.convergence import check_sizes, convergence, subsample_images
from objalign.measures.matching import category_prototypes
from objalign.evaluation.units import check_units, image_level, image_targets, parse_ks, prototype_curve, prototypes


DEMO = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")


def _data(seed=0, n_img=90, c=8, q=12, d=20):
    """Images of 1-4 objects; vision = a linear image of the label embedding plus noise."""
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(c, q))
    A = rng.normal(size=(q, d))
    sizes = rng.integers(1, 5, size=n_img)
    groups = np.repeat(np.arange(100, 100 + n_img), sizes)
    lab = rng.integers(0, c, size=len(groups))
    X = C[lab] @ A + 0.3 * rng.normal(size=(len(groups), d))
    return X, C[lab], groups, lab, C, A


CFG = AlignConfig(methods=("ridge",), baselines=("mean",), n_permutations=0, n_bootstrap=0, similarity_permutations=0,
                  match_methods=(), cv_folds=3, category_folds=4, alphas=(0.01, 1.0, 100.0))


def test_image_target_is_the_mean_of_its_objects_label_embeddings():
    _, _, groups, lab, C, _ = _data()
    ids, T, W = image_targets(lab, groups, C)
    assert list(ids) == sorted(set(groups.tolist()))
    for i, g in enumerate(ids):
        np.testing.assert_allclose(T[i], C[lab[groups == g]].mean(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(W[i].sum(), 1.0)


def test_image_level_uses_the_object_levels_test_images_and_recovers_a_linear_map():
    from objalign.evaluation.engine import evaluate

    X, Y, groups, lab, C, A = _data()
    ids, T, _ = image_targets(lab, groups, C)
    X_img = T @ A  # whole-image embedding = an exact linear image of its target
    res = image_level(X_img[::-1], ids[::-1], lab, groups, C, CFG)  # store order need not be sorted
    obj = evaluate(X, Y, groups, lab, C, CFG)["rows"]
    for split in ("heldout_images", "heldout_categories"):
        r = next(r for r in res["rows"] if r["split"] == split and r["method"] == "ridge")
        o = next(o for o in obj if o["split"] == split and o["method"] == "ridge")
        if split == "heldout_images":  # the same held-out images at both levels
            assert r["n_test"] == r["n_images_test"] == o["n_images_test"]
            assert r["r2"] > 0.99 and r["top1"] == 1.0
        assert 0 < r["chance_top1"] <= 1 and r["n_candidates"] >= 1
    mean = next(r for r in res["rows"] if r["split"] == "heldout_images" and r["method"] == "mean")
    assert mean["r2"] <= 0.0 + 1e-9  # the training mean predicts nothing about a test image


def test_a_prototype_of_k_objects_is_the_mean_of_k_normalised_embeddings():
    # objects are distinct basis vectors (times a scale): the mean of k normalised ones has k entries of 1/k
    lab = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2])
    X = np.eye(10) * np.arange(1, 11)[:, None]
    for k in (1, 2, 3):
        P = prototypes(X, lab, 3, k, np.random.default_rng(k))
        for c in range(3):
            members = np.flatnonzero(lab == c)
            nz = np.flatnonzero(P[c])
            assert len(nz) == min(k, len(members)) and set(nz) <= set(members)
            np.testing.assert_allclose(P[c, nz], 1.0 / len(nz))
    rng = np.random.default_rng(0)
    Xr = rng.normal(size=(40, 6))
    labr = rng.integers(0, 4, size=40)
    np.testing.assert_allclose(prototypes(Xr, labr, 4, "all"), category_prototypes(Xr, labr, 4), atol=1e-12)
    np.testing.assert_allclose(prototypes(Xr, labr, 4, 1000), category_prototypes(Xr, labr, 4), atol=1e-12)


def test_prototype_curve_points_and_intervals():
    X, _, _, lab, C, _ = _data()
    cfg = dataclasses.replace(CFG, confidence=0.9)
    res = prototype_curve(X, lab, C, ["1", "5", "all"], 6, cfg)
    assert [p["k"] for p in res["points"]] == [1, 5, "all"]
    assert [p["n_draws"] for p in res["points"]] == [6, 6, 1]
    for p in res["points"]:
        for key in ("rsa_spearman", "cka_linear", "heldout_top1"):
            v = p[key]
            assert v["low"] <= v["mean"] <= v["high"]
    last = res["points"][-1]["rsa_spearman"]
    assert last["low"] == last["mean"] == last["high"]  # k = all: one deterministic prototype per category
    assert res["points"][-1]["heldout_top1"]["mean"] > res["chance_heldout_top1"]


def test_convergence_subsamples_are_whole_images_of_the_asked_size():
    _, _, groups, _, _, _ = _data()
    most = np.max(np.unique(groups, return_counts=True)[1])
    rng = np.random.default_rng(0)
    for size in (1, 25, 100, len(groups)):
        idx = subsample_images(groups, size, rng)
        chosen = np.unique(groups[idx])
        assert np.array_equal(np.sort(idx), np.flatnonzero(np.isin(groups, chosen)))  # whole images only
        assert size <= len(idx) < size + most
    assert check_sizes([0.25, 10, 10.0], 200) == [10, 50]


def test_convergence_at_full_size_equals_the_main_figures():
    from objalign.evaluation.engine import evaluate

    X, Y, groups, lab, C, _ = _data()
    main_cfg = dataclasses.replace(CFG, n_bootstrap=50, n_permutations=100, convergence_sizes=(60, 150),
                                   convergence_repeats=3)
    main = evaluate(X, Y, groups, lab, C, main_cfg)["rows"]
    res = convergence(X, Y, groups, lab, C, main_cfg, evaluate)
    assert res["sizes"] == [60, 150, len(X)] and res["repeats"] == 3
    for curve in res["curves"]:
        row = next(r for r in main if r["method"] == curve["method"] and r["split"] == curve["split"])
        first, last = curve["points"][0], curve["points"][-1]
        assert last["size"] == len(X) and last["n_draws"] == 1 and last["n_objects_mean"] == len(X)
        assert last["mean"] == pytest.approx(row[curve["figure"]], abs=1e-12)
        assert first["n_draws"] + first["n_failed"] == 3 and first["n_objects_mean"] >= 60
        if first["n_draws"]:
            assert first["low"] <= first["mean"] <= first["high"]


@pytest.mark.parametrize("call, needle", [
    (lambda: parse_ks([1, 0]), "0"),
    (lambda: parse_ks(["two"]), "'two'"),
    (lambda: prototypes(np.ones((3, 2)), np.zeros(3, int), 1, 0), "k = 0"),
    (lambda: check_sizes([5000], 300), "5000"),
    (lambda: check_sizes([-2], 300), "-2"),
    (lambda: check_units(["object", "scene"]), "'scene'"),
])
def test_bad_input_is_one_line_naming_the_value(call, needle):
    with pytest.raises(ObjalignError) as exc:
        call()
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_align_stage_checks_the_settings_before_fitting():
    from objalign.pipeline.units import check_unit_studies

    with pytest.raises(ObjalignError, match="prototype_k"):
        check_unit_studies(dataclasses.replace(CFG, units=("prototype",), prototype_k=("0",)), 100)
    with pytest.raises(ObjalignError, match="larger than the run's 100"):
        check_unit_studies(dataclasses.replace(CFG, convergence_sizes=(500,)), 100)
    with pytest.raises(ObjalignError, match="unknown unit 'images'"):
        check_unit_studies(dataclasses.replace(CFG, units=("images",)), 100)


@pytest.fixture
def tiny_vision():
    pytest.importorskip("transformers")
    from objalign.encoders import VISION_ENCODERS

    VISION_ENCODERS.register("tiny-dinov2-units", "tiny_models:make_tiny_dinov2")
    yield "tiny-dinov2-units"
    del VISION_ENCODERS._entries["tiny-dinov2-units"]


@pytest.mark.slow
def test_a_run_reports_object_and_image_side_by_side(small_demo, tmp_path, tiny_vision):
    from objalign.cli import main

    out = tmp_path / "run"
    args = ["run", DEMO, "--out", str(out), "--set", "data.kind=coco", "--set", f"data.root={small_demo}",
            "--vision", tiny_vision, "--no-progress"]
    fast = ["align.methods=[ridge]", "align.baselines=[mean]", "align.n_permutations=0", "align.n_bootstrap=50",
            "align.similarity_permutations=0", "align.match_methods=[]", "embed.vocabulary=null", "align.cv_folds=3",
            "align.prototype_draws=3", "align.convergence_repeats=2", "align.prototype_k=[1, 5, all]"]
    for s in fast:
        args += ["--set", s]
    assert main(args) == 0
    info = json.loads((out / "embeddings" / "image.json").read_text())
    rep = json.loads((out / "report.json").read_text())
    assert info["n_images"] == rep["n_images"]
    units = rep["units"]
    assert units["units"] == ["object", "image", "prototype"]
    obj = {(r["split"], r["method"]): r for r in units["object"]}
    for r in units["image"]["rows"]:
        assert (r["split"], r["method"]) in obj and "ci" in r
    ho = [r for r in units["image"]["rows"] if r["split"] == "heldout_images"][0]
    assert ho["n_test"] == obj[("heldout_images", ho["method"])]["n_images_test"]
    assert [p["k"] for p in units["prototype"]["points"]] == [1, 5, "all"]
    assert rep["convergence"]["sizes"][-1] == rep["n_instances"]
    txt = (out / "report.txt").read_text()
    html = (out / "report.html").read_text()
    for needle in ("unit of analysis", "category prototypes of k objects", "convergence"):
        assert needle in txt and needle in html, needle
    for f in ("units.png", "prototype_k.png", "convergence.png"):
        assert (out / f).is_file() and f in rep["figures"], f
    # with every layer stored, the whole images are embedded at the layer the objects are aligned at
    from objalign.embed.images import load_image_embeddings
    from objalign.embed.stage import load_run_embeddings

    last = load_image_embeddings(out)[1]
    assert main(args + ["--set", "embed.vision.layers=[1]"]) == 0
    info = json.loads((out / "embeddings" / "image.json").read_text())
    assert json.loads((out / "embeddings" / info["store"] / "manifest.json").read_text())["layers"] == [1]
    first = load_image_embeddings(out)[1]
    assert first.shape == last.shape and not np.allclose(first, last)
    assert load_run_embeddings(out)[1].shape[1] == first.shape[1]
