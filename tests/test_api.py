"""The public array API: ``objalign.evaluate_alignment`` and ``AlignmentResult``, and the old import paths."""

import json
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import objalign
from objalign.errors import ObjalignError
from objalign.evaluation.engine import evaluate, evaluate_targets
from objalign.evaluation.settings import AlignConfig

FAST = dict(n_permutations=0, n_bootstrap=50, similarity_permutations=0, match_methods=[], cv_folds=3,
            category_folds=3, alphas=[0.1, 1.0, 10.0], gammas=[0.5, 1.0], common_dim=16)


def _data(seed=0, c=6, per=10, d=24, q=12):
    rng = np.random.default_rng(seed)
    T = rng.normal(size=(c, q))
    labels = np.repeat(np.arange(c), per)
    X = T[labels] @ rng.normal(size=(q, d)) + 0.5 * rng.normal(size=(len(labels), d))
    groups = np.arange(len(labels)) // 2
    return X, T, labels, groups


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "fit_seconds"} for r in rows]


def test_per_category_text_equals_the_engine():
    X, T, labels, groups = _data()
    res = objalign.evaluate_alignment(X, T, labels, groups, **FAST)
    cfg = AlignConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in FAST.items()})
    ref = evaluate(X, T[labels], groups, labels, T, cfg)
    assert _strip(res.rows) == _strip(ref["rows"])
    assert res.raw["similarity"] == ref["similarity"] and res.raw["per_category"] == ref["per_category"]
    for k, v in ref["per_instance"].items():
        np.testing.assert_array_equal(res.raw["per_instance"][k], v)


def test_per_object_text_and_string_labels_give_the_same_figures():
    X, T, labels, groups = _data()
    by_cat = objalign.evaluate_alignment(X, T, labels, groups, names=list("abcdef"), **FAST)
    words = np.array(["a", "b", "c", "d", "e", "f"])[labels]
    by_obj = objalign.evaluate_alignment(X, T[labels], words, groups, **FAST)
    assert _strip(by_obj.rows) == _strip(by_cat.rows)
    assert by_obj.header["n_categories"] == 6
    assert by_obj.raw["per_category"] == by_cat.raw["per_category"]
    assert sorted({r["category"] for r in by_obj.raw["per_category"]}) == list("abcdef")


def test_many_text_targets_equal_evaluate_targets_and_a_bad_set_does_not_stop_the_others():
    X, T, labels, groups = _data()
    T2 = np.random.default_rng(3).normal(size=(6, 7))
    bad = T.copy()
    bad[2, 0] = np.nan
    out = objalign.evaluate_alignment(X, {"a": T, "b": T2, "bad": bad}, labels, groups, **FAST)
    assert list(out) == ["a", "b", "bad"]
    cfg = AlignConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in FAST.items()})
    ref = evaluate_targets(X, groups, labels, {"a": T, "b": T2}, cfg)
    assert _strip(out["a"].rows) == _strip(ref["a"]["rows"]) and _strip(out["b"].rows) == _strip(ref["b"]["rows"])
    assert "NaN" in out["bad"].error and out["bad"].rows == []
    assert "not evaluated" in out["bad"].summary()


@pytest.mark.parametrize("change, message", [
    (lambda X, T, l, g: (X[:-1], T, l, g), "expected one label per object"),
    (lambda X, T, l, g: (np.where(np.arange(len(X))[:, None] == 5, np.inf, X), T, l, g),
     "vision contains NaN or infinite values (first at row 5, column 0)"),
    (lambda X, T, l, g: (X, T, np.zeros_like(l), g), "same category"),
    (lambda X, T, l, g: (X, T, np.where(l == 5, 9, l), g), "value 9 (object 50) is out of range"),
    (lambda X, T, l, g: (X, T, l, g[:-3]), "groups: expected one image id per object"),
    (lambda X, T, l, g: (X, T[:, :, None], l, g), "text has shape (6, 12, 1); expected a 2-D"),
])
def test_bad_input_is_one_line_before_any_work(change, message):
    X, T, labels, groups = _data()
    with pytest.raises(ObjalignError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        objalign.evaluate_alignment(*change(X, T, labels, groups), **FAST)
    assert "\n" not in str(err.value)


def test_per_object_text_that_differs_within_a_category_is_refused():
    X, T, labels, groups = _data()
    Y = T[labels].copy()
    Y[7] += 1e-3
    with pytest.raises(ObjalignError, match="objects 0 and 7 have the same label 0 but different text rows"):
        objalign.evaluate_alignment(X, Y, labels, groups, **FAST)


def test_unknown_setting_has_did_you_mean_and_bad_setting_is_refused():
    X, T, labels, groups = _data()
    with pytest.raises(ObjalignError, match="unknown setting 'comon_dim'; did you mean 'common_dim'"):
        objalign.evaluate_alignment(X, T, labels, groups, comon_dim=8)
    with pytest.raises(ObjalignError, match="n_permutations"):
        objalign.evaluate_alignment(X, T, labels, groups, n_permutations=20)
    with pytest.raises(ObjalignError, match="similarity_measures"):
        objalign.evaluate_alignment(X, T, labels, groups, measures=["cka_lineer"])


def test_measures_pick_the_similarity_measures():
    X, T, labels, groups = _data()
    res = objalign.evaluate_alignment(X, T, labels, groups, measures=["cka_linear", "mutual_knn"],
                                      protocols=["heldout_images"], **{**FAST, "category_folds": 3})
    assert list(res.raw["similarity"]["values"]) == ["cka_linear", "mutual_knn"]
    full = objalign.evaluate_alignment(X, T, labels, groups, protocols=["heldout_images"], **FAST)
    assert res.raw["similarity"]["values"]["cka_linear"] == full.raw["similarity"]["values"]["cka_linear"]


def test_result_summary_dict_frame_and_report(tmp_path):
    X, T, labels, groups = _data()
    res = objalign.evaluate_alignment(X, T, labels, groups, names=list("abcdef"), vision_name="V", text_name="W",
                                      **FAST)
    text = res.summary("my title")
    assert text.startswith("my title\n========") and "heldout_categories" in text and "V (24-d)" in text
    d = res.to_dict()
    json.dumps(d)  # serialisable
    assert d["results"] == res.rows and d["settings"]["common_dim"] == 16 and d["n_categories"] == 6
    files = res.write_report(tmp_path / "rep", title="my title")
    assert files[0] == "report.json" and "report.html" in files and "settings.json" in files
    for f in files:
        assert (tmp_path / "rep" / f).stat().st_size > 0, f
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["results"] == json.loads(json.dumps(res.rows))
    assert (tmp_path / "rep" / "report.txt").read_text() == text
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ObjalignError, match="pip install pandas"):
            res.to_frame()
    else:
        frame = res.to_frame()
        assert len(frame) == len(res.rows) and "top1_ci_low" in frame.columns


def test_old_import_paths_still_work_with_a_deprecation_warning():
    from objalign.maps import RidgeCV
    from objalign.measures import calibrated

    with pytest.warns(DeprecationWarning, match="objalign.align.RidgeCV moved to objalign.maps.RidgeCV"):
        from objalign.align import RidgeCV as old
    assert old is RidgeCV
    with pytest.warns(DeprecationWarning, match="moved to objalign.measures"):
        from objalign.evaluate import calibrated as old_cal
    assert old_cal is calibrated
    with pytest.warns(DeprecationWarning):
        from objalign.align.stage import evaluate_targets as old_et
    assert old_et is evaluate_targets
    with pytest.warns(DeprecationWarning):
        from objalign.evaluate.similarity import cka
    from objalign.measures.similarity import cka as new_cka
    assert cka is new_cka
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import objalign.maps  # noqa: F401  (the new paths warn about nothing)


def test_the_example_runs(tmp_path):
    example = Path(__file__).resolve().parents[1] / "examples" / "own_embeddings.py"
    proc = subprocess.run([sys.executable, str(example), "--out", str(tmp_path / "ex"), "--quick"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "ex" / "report.html").is_file()
    assert "heldout_categories" in proc.stdout


def test_replace_settings_keep_defaults():
    cfg = objalign.evaluation.api.make_settings(common_dim=8)
    assert cfg == replace(AlignConfig(), common_dim=8)


def test_evaluate_reads_parquet_npz_and_text_files(tmp_path, capsys):
    """``objalign evaluate`` on a parquet list column, an npz key and a text file of labels gives the array API's
    figures."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from objalign.cli import main

    X, T, labels, groups = _data()
    pq.write_table(pa.table({"emb": [list(map(float, row)) for row in X], "image": groups}), tmp_path / "v.parquet")
    np.savez(tmp_path / "t.npz", names=T, other=np.zeros(3))
    (tmp_path / "labels.txt").write_text("\n".join(map(str, labels)))
    sets = ["align.n_permutations=0", "align.n_bootstrap=50", "align.similarity_permutations=0",
            "align.match_methods=[]", "align.cv_folds=3", "align.category_folds=3", "align.alphas=[0.1,1.0,10.0]",
            "align.gammas=[0.5,1.0]", "align.common_dim=16", "report.html=false", "embed.vocabulary=null"]
    assert main(["evaluate", "--vision", f"{tmp_path / 'v.parquet'}:emb", "--text", f"{tmp_path / 't.npz'}:names",
                 "--labels", str(tmp_path / "labels.txt"), "--groups", f"{tmp_path / 'v.parquet'}:image",
                 "--out", str(tmp_path / "ev")] + [x for s in sets for x in ("--set", s)]) == 0
    got = json.loads((tmp_path / "ev" / "report.json").read_text())["results"]
    want = objalign.evaluate_alignment(X, T, labels, groups, **FAST).rows
    assert _strip(got) == json.loads(json.dumps(_strip(want)))
    with pytest.raises(SystemExit):
        main(["evaluate", "--vision", str(tmp_path / "v.parquet")])  # --text and --labels are required
    assert main(["evaluate", "--vision", str(tmp_path / "t.npz"), "--text", str(tmp_path / "t.npz"),
                 "--labels", str(tmp_path / "labels.txt"), "--out", str(tmp_path / "x")]) == 2
    assert "t.npz holds 2 arrays: name one as" in capsys.readouterr().err
