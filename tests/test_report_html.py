"""The report stage on a made-up run folder: report.json schema, report.txt, figures, a self-contained
report.html that headless Chromium renders with every figure decoded, and ``objalign compare``."""

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from objalign.evaluation.engine import evaluate
from objalign.pipeline.align import write_results
from objalign.config import AlignConfig, RunConfig
from objalign.runs import write_stage

sys.path.insert(0, str(Path(__file__).parent))
from test_evaluate_protocols import _embeddings  # noqa: E402

CFG = AlignConfig(methods=("ridge", "kernel_ridge"), alphas=(0.1, 1.0, 10.0), gammas=(1.0,), cv_folds=3,
                  category_folds=3, n_permutations=100, n_bootstrap=200, common_dim=16, similarity_k=5, svcca_dim=4)


def _fake_run(out: Path, seed: int = 0, crop: str = "box", align: AlignConfig = CFG) -> Path:
    """A run folder holding what the report stage reads: stage records and the align stage's tables."""
    X, Y, groups, lab, E = _embeddings(True, seed=seed)
    names = [f"colour{j % 4} shape{j // 4}" for j in range(len(E))]
    t = time.time()
    write_stage(out, "sample", "k", {"dataset": "made-up", "dataset_fingerprint": "f00", "n_instances": len(X),
                                     "n_images": len(np.unique(groups)), "n_categories": len(E)}, t)
    write_stage(out, "crop", "k", {"mode": crop, "sources": {crop: len(X)}, "n_fallback": 0}, t)
    write_stage(out, "embed", "k", {"n_vision": len(X), "n_skipped": 0,
                                    "vision_encoder": {"name": "made-up-vision", "dim": X.shape[1], "pooling": "cls"},
                                    "text_encoder": {"name": "made-up-text", "dim": E.shape[1], "template": "{}"}}, t)
    distractors = np.random.default_rng(seed + 1).normal(size=(25, E.shape[1]))  # an open vocabulary's extra names
    res = evaluate(X, Y, groups, lab, E, align, names, np.arange(len(E)) + 1, vocabulary=distractors)
    write_results(out / "align", res, {"image_id": groups})
    write_stage(out, "align", "k", {}, t)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from objalign.pipeline.report import run_report

    out = _fake_run(tmp_path_factory.mktemp("run"))
    run_report(RunConfig(), out)
    return out


FIGURE_FILES = ("intervals.png", "alignment_hist.png", "per_category.png", "null_distributions.png",
                "pca_variance.png", "projection.png", "calibrated.png", "matching_shuffle.png", "open_vocabulary.png")


def test_report_json_rows_have_intervals_pvalues_and_breakdowns(run):
    rep = json.loads((run / "report.json").read_text())
    assert {(r["split"], r["method"]) for r in rep["results"]} == {
        (s, m) for s in ("heldout_images", "heldout_categories") for m in ("ridge", "kernel_ridge", "mean", "shuffled")}
    for r in rep["results"]:
        for k in ("method", "split", "r2", "r2_variance_weighted", "cosine_mean", "residual_mean", "residual_median",
                  "top1", "top5", "mean_rank", "hyperparameters", "ci"):
            assert k in r, k
        assert all(len(v) == 2 and v[0] <= v[1] for v in r["ci"].values())
        if r["method"] in ("ridge", "kernel_ridge"):
            assert {"r2", "top1"} <= set(r["pvalue"]) and r["null"]["n_permutations"] == 100
    assert {p["split"] for p in rep["per_category"]} == {"heldout_images", "heldout_categories"}
    assert set(rep["similarity"]["values"]) >= {"cka_linear", "mutual_knn", "cknna", "svcca"}
    assert set(rep["protocols"]) == {"heldout_images", "heldout_categories"}
    assert rep["figures"] == list(FIGURE_FILES)
    for f in FIGURE_FILES:
        assert (run / f).stat().st_size > 5000, f
    text = (run / "report.txt").read_text()
    assert "heldout_categories" in text and "top1 unseen" in text and "cka_linear" in text
    ridge = next(r for r in rep["results"] if r["method"] == "ridge" and r["split"] == "heldout_images")
    lo, hi = ridge["ci"]["top1"]
    assert f"{ridge['top1']:.3f} [{lo:.3f},{hi:.3f}]" in text


def test_report_html_is_self_contained(run):
    html = (run / "report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == len(FIGURE_FILES)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html, re.I)  # nothing fetched from outside
    assert "<script" not in html and "@import" not in html and "url(" not in html
    assert "heldout_categories" in html and "top-1 unseen" in html


_CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0 && i.naturalHeight > 0; });
  var d = document.createElement('div');
  d.id = 'objalign-check';
  d.textContent = 'IMAGES-DECODED ' + ok.length + '/' + imgs.length;
  document.body.appendChild(d);
});
</script></body>"""


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _render(browser: str, page: Path, profile: Path) -> str:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
           "--disable-extensions", f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom",
           page.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return res.stdout


@pytest.mark.skipif(_chromium() is None,
                    reason="chromium is not installed (CI installs it: apt-get install -y chromium)")
def test_report_html_renders_every_figure_in_headless_chromium(run, tmp_path):
    browser = _chromium()
    page = tmp_path / "page.html"
    page.write_text((run / "report.html").read_text().replace("</body>", _CHECK))
    dom = _render(browser, page, tmp_path / "profile")
    n = len(FIGURE_FILES)
    assert f"IMAGES-DECODED {n}/{n}" in dom, dom[-500:]
    # the check can fail: a page whose first figure is corrupt decodes one image fewer
    broken = tmp_path / "broken.html"
    broken.write_text(page.read_text().replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1))
    assert f"IMAGES-DECODED {n - 1}/{n}" in _render(browser, broken, tmp_path / "profile2")


def test_compare_puts_runs_side_by_side(run, tmp_path, capsys):
    from objalign.cli import main
    from objalign.pipeline.report import run_report

    other = _fake_run(tmp_path / "other", seed=1, crop="gt-mask", align=replace(CFG, protocols=("heldout_images",)))
    run_report(RunConfig(), other)
    out_json = tmp_path / "cmp.json"
    assert main(["compare", str(run), str(other), "--out", str(out_json)]) == 0
    table = capsys.readouterr().out
    assert table.index("heldout_images") < table.index("heldout_categories")
    assert " gt-mask " in table and " box " in table
    rows = json.loads(out_json.read_text())
    assert len(rows) == 8 + 4
    r = next(r for r in rows if r["crop"] == "gt-mask" and r["method"] == "ridge")
    assert r["split"] == "heldout_images" and len(r["ci"]["top1"]) == 2 and "top1" in r["pvalue"]
    assert f"{r['top1']:.3f} [{r['ci']['top1'][0]:.3f},{r['ci']['top1'][1]:.3f}]" in table
    from objalign.measures import bh_adjust
    from objalign.report.compare import calibrated_rows

    cal = calibrated_rows([run, other])
    assert len(cal) == 12 and "calibrated similarity (p(BH)" in table  # 6 measures x 2 runs, adjusted together
    np.testing.assert_allclose([c["pvalue_bh_all"] for c in cal], bh_adjust([c["pvalue"] for c in cal]))


def test_compare_without_a_report_is_one_line(tmp_path, capsys):
    from objalign.cli import main

    assert main(["compare", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no report.json" in err and err.count("\n") == 1


def test_report_has_calibrated_scores_matching_rsa_and_open_vocabulary(run):
    rep = json.loads((run / "report.json").read_text())
    cal = rep["similarity"]["calibrated"]
    assert set(cal) >= {"cka_linear", "cka_linear_unbiased", "cka_rbf", "mutual_knn", "cknna", "svcca"}
    for name, v in cal.items():
        assert {"score", "threshold", "pvalue", "pvalue_bh", "calibrated"} <= set(v)
        assert v["score"] == pytest.approx(rep["similarity"]["values"][name], abs=1e-12)
        assert v["n_permutations"] == CFG.similarity_permutations and v["pvalue_bh"] >= v["pvalue"]
    m = rep["category_level"]["matching"]
    assert set(m["methods"]) == {"faq", "local_cka"} and m["chance"] == pytest.approx(1 / m["n_categories"])
    for r in m["methods"].values():
        assert 0 <= r["ci"][0] <= r["ci"][1] <= 1 and [p["fraction"] for p in r["shuffle_curve"]][0] == 0.0
        assert sorted(r["assignment"]) == list(range(m["n_categories"]))
    assert {"correlation/spearman", "euclidean/kendall"} <= set(rep["category_level"]["rsa"]["values"])
    fitted = [r for r in rep["results"] if r["method"] == "ridge"]
    for r in fitted:
        ov = r["open_vocabulary"]
        assert ov["n_candidates"] == 12 + 25 and set(ov) >= {"nn", "csls"}
        assert ov["csls"]["p@1"] <= ov["csls"]["p@5"] <= ov["csls"]["p@100"] == 1.0
    txt = (run / "report.txt").read_text()
    for phrase in ("calibrated similarity", "blind matching of", "RSA over", "open-vocabulary retrieval among 37"):
        assert phrase in txt
    html = (run / "report.html").read_text()
    for phrase in ("calibrated vs raw similarity", "blind matching", "representational similarity analysis",
                   "open-vocabulary retrieval"):
        assert phrase in html
