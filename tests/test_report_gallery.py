"""report.html's first screen: the headline (the tables' numbers, rounded), the objects as thumbnails (each the
named object's crop window and mask, downsampled), the confusion matrix (the predictions' counts), and a run whose
images are gone still writing its report with one line saying why."""

import base64
import io
import json
import re
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from objalign.config import DataConfig, RunConfig
from objalign.crops.masks import mask_to_rle, rle_to_mask
from objalign.crops.render import crop_window, render_crop
from objalign.evaluation.engine import evaluate
from objalign.evaluation.settings import AlignConfig
from objalign.pipeline.align import write_results
from objalign.report import gallery
from objalign.runs import write_stage
from objalign.stats.metrics import top_predicted
from objalign.tables import write_table

sys.path.insert(0, str(Path(__file__).parent))
from test_evaluate_protocols import _embeddings  # noqa: E402
from test_report_html import _CHECK, _chromium, _render  # noqa: E402

CFG = AlignConfig(methods=("ridge",), alphas=(0.1, 1.0, 10.0), cv_folds=3, category_folds=3, n_permutations=100,
                  n_bootstrap=50, common_dim=16, similarity_k=5, svcca_dim=4, similarity_permutations=100)
SIZE = 64  # the made-up images' edge


def _images_and_crops(root: Path, groups: np.ndarray, lab: np.ndarray) -> dict:
    """One random image per image id and a crop table row (window, mask) per object; returns the table."""
    rng = np.random.default_rng(3)
    (root / "images").mkdir(parents=True)
    n = len(groups)
    table = {k: [] for k in ("annotation_id", "image_id", "file_name", "x", "y", "w", "h", "x0", "y0", "x1", "y1",
                             "mask_rle")}
    for img in np.unique(groups):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / "images" / f"{img}.png")
    for i in range(n):
        x, y = rng.integers(0, SIZE // 2, 2)
        w, h = rng.integers(8, SIZE // 2, 2)
        win = crop_window(x, y, w, h, 0.1, True, width=SIZE, height=SIZE)
        mask = np.zeros((SIZE, SIZE), bool)
        mask[y:y + h, x:x + w // 2 + 1] = True  # half the box: the mask must show in the thumbnail
        for k, v in zip(table, (1000 + i, int(groups[i]), f"{groups[i]}.png", x, y, w, h, *win,
                                json.dumps(mask_to_rle(mask)))):
            table[k].append(v)
    table = {k: np.asarray(v, dtype=object if k in ("file_name", "mask_rle") else None) for k, v in table.items()}
    write_table(root / "run" / "crop" / "crops.parquet", table)
    return table


def _run(root: Path) -> tuple[Path, RunConfig, dict]:
    X, Y, groups, lab, E = _embeddings(True, seed=0)
    names = [f"colour{j % 4} shape{j // 4}" for j in range(len(E))]
    out = root / "run"
    (out / "crop").mkdir(parents=True)
    table = _images_and_crops(root, groups, lab)
    t = time.time()
    write_stage(out, "sample", "k", {"dataset": "made-up", "dataset_fingerprint": "f00", "n_instances": len(X),
                                     "n_images": len(np.unique(groups)), "n_categories": len(E)}, t)
    write_stage(out, "crop", "k", {"mode": "gt-mask", "sources": {"gt-mask": len(X)}, "n_fallback": 0}, t)
    write_stage(out, "embed", "k", {"n_vision": len(X), "n_skipped": 0,
                                    "vision_encoder": {"name": "made-up-vision", "dim": X.shape[1]},
                                    "text_encoder": {"name": "made-up-text", "dim": E.shape[1]}}, t)
    res = evaluate(X, Y, groups, lab, E, CFG, names, np.arange(len(E)) + 1)
    write_results(out / "align", res, {"image_id": groups, "annotation_id": table["annotation_id"]})
    write_stage(out, "align", "k", {}, t)
    cfg = RunConfig(data=DataConfig(kind="coco", root=str(root), images="images"))
    cfg = replace(cfg, crop=replace(cfg.crop, mode="gt-mask"))
    from objalign.pipeline.report import run_report

    run_report(cfg, out)
    return out, cfg, table


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("gallery"))


def _per(out: Path) -> dict:
    with np.load(out / "align" / "per_instance.npz") as z:
        return {k: z[k] for k in z.files}


def _thumbs(page: str) -> dict[int, np.ndarray]:
    found = re.findall(r'<img src="data:image/jpeg;base64,([^"]+)" alt="[^"]*" data-object="(\d+)"', page)
    return {int(i): np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")) for b, i in found}


def test_a_thumbnail_is_the_named_objects_crop(run):
    out, cfg, table = run
    thumbs = _thumbs((out / "report.html").read_text())
    assert len(thumbs) >= 20
    per = _per(out)
    for idx, got in list(thumbs.items())[:10]:
        assert got.shape == (gallery.THUMB_SIZE, gallery.THUMB_SIZE, 3)
        pos = {s: np.flatnonzero(per[f"{s}__index"] == idx) for s in ("heldout_images", "heldout_categories")}
        aid = next(int(per[f"{s}__annotation_id"][p[0]]) for s, p in pos.items() if len(p))
        row = int(np.flatnonzero(table["annotation_id"] == aid)[0])  # the named object's crop table row
        image = np.asarray(Image.open(Path(cfg.data.root) / "images" / table["file_name"][row]).convert("RGB"))
        win = tuple(int(table[k][row]) for k in ("x0", "y0", "x1", "y1"))
        want = render_crop(image, win, gallery.THUMB_SIZE, mask=rle_to_mask(json.loads(table["mask_rle"][row])),
                           fill=cfg.crop.fill)
        no_mask = render_crop(image, win, gallery.THUMB_SIZE, fill=cfg.crop.fill)
        other = render_crop(image, (0, 0, SIZE, SIZE), gallery.THUMB_SIZE, fill=cfg.crop.fill)
        err = np.abs(got.astype(float) - want).mean()
        assert err < 12, (idx, err)  # JPEG of random pixels: a few grey levels off
        assert err < np.abs(got.astype(float) - no_mask).mean() - 10  # the mask is applied
        assert err < np.abs(got.astype(float) - other).mean() - 10  # the window is the object's


def _html_matrix(page: str) -> np.ndarray:
    table = re.search(r"<table class=cm[^>]*>(.*?)</table>", page, re.S).group(1)
    rows = re.findall(r"<tr><th class=l>[^<]*</th>(.*?)</tr>", table, re.S)
    return np.array([[int(c) if c else 0 for c in re.findall(r"<td[^>]*>(\d*)</td>", r)] for r in rows])


def test_confusion_matrix_counts_are_the_predictions(run):
    out, _, _ = run
    per, rep = _per(out), json.loads((out / "report.json").read_text())
    lab, top1 = per["heldout_images__label"], per["heldout_images__ridge__top3"][:, 0]
    order = per["category_order"]
    assert sorted(order) == list(range(len(order)))
    want = np.zeros((len(order), len(order)), int)
    for t, p in zip(lab, top1):
        want[t, p] += 1
    got = _html_matrix((out / "report.html").read_text())
    np.testing.assert_array_equal(got, want[np.ix_(order, order)])
    # the first predicted name is the truth exactly when the truth ranks first: the diagonal is the top-1 figure
    row = next(r for r in rep["results"] if r["split"] == "heldout_images" and r["method"] == "ridge")
    assert np.trace(want) == round(row["top1"] * row["n_test"])
    np.testing.assert_array_equal(top1 == lab, per["heldout_images__ridge__rank"] == 1)


def test_top_predicted_is_the_nearest_names():
    rng = np.random.default_rng(0)
    pred, emb = rng.normal(size=(50, 6)), rng.normal(size=(9, 6))
    sims = (pred / np.linalg.norm(pred, axis=1, keepdims=True)) @ (emb / np.linalg.norm(emb, axis=1, keepdims=True)).T
    np.testing.assert_array_equal(top_predicted(pred, emb, 3), np.argsort(-sims, axis=1)[:, :3])


def test_headline_numbers_are_the_tables(run):
    out, _, _ = run
    rep = json.loads((out / "report.json").read_text())
    text, page = (out / "report.txt").read_text(), (out / "report.html").read_text()
    assert len(rep["headline"]) == 3  # two protocols and the similarity verdict
    for split, sentence in zip(("heldout_images", "heldout_categories"), rep["headline"]):
        r = next(r for r in rep["results"] if r["split"] == split and r["method"] == "ridge")
        lo, hi = r["ci"]["top1"]
        assert f"first for {r['top1']:.0%} of {r['n_test']} objects [{lo:.0%}, {hi:.0%}]" in sentence
        assert f"among {r['n_candidates']} names (chance {r['chance_top1']:.0%})" in sentence
        assert f"p = {r['pvalue']['top1']:.2g} (selection null, B = {CFG.n_permutations})" in sentence
        assert f"{r['top1']:.3f} [{lo:.3f},{hi:.3f}]" in text  # the table it rounds
        assert sentence in text and f"<p>{sentence}</p>" in page
    cal = rep["similarity"]["calibrated"]
    n_above = sum(v["pvalue_bh"] < 0.05 for v in cal.values())
    assert f"{n_above} of {len(cal)} beat their permutation null" in rep["headline"][2]
    assert text.index(rep["headline"][0]) < text.index("dataset ")
    assert page.index('id=headline') < page.index('id="objects-heldout_images"') < page.index('id="table-')


@pytest.mark.skipif(_chromium() is None,
                    reason="chromium is not installed (CI installs it: apt-get install -y chromium)")
def test_chromium_shows_the_headline_and_the_gallery(run, tmp_path):
    out, _, _ = run
    page = tmp_path / "page.html"
    html = (out / "report.html").read_text()
    page.write_text(html.replace("</body>", _CHECK))
    dom = _render(_chromium(), page, tmp_path / "profile")
    n = html.count("<img ")
    assert f"IMAGES-DECODED {n}/{n}" in dom
    assert '<div class="headline" id="headline"><p>Held-out images: ridge ranks the true name first' in dom
    assert len(re.findall(r'<img src="data:image/jpeg;base64,[^"]+" alt="object \d+" data-object', dom)) >= 20
    assert 'href="#objects-heldout_images"' in dom and "<details><summary>method notes" in dom


def test_moved_images_still_write_the_report_with_one_line(run, tmp_path):
    out, cfg, _ = run
    moved = tmp_path / "run"
    shutil.copytree(out, moved)
    gone = replace(cfg, data=replace(cfg.data, root=str(tmp_path / "nowhere")))
    from objalign.pipeline.report import run_report

    run_report(gone, moved)
    page = (moved / "report.html").read_text()
    why = re.findall(r"<p class=why>([^<]*)</p>", page)
    assert why and all(w.startswith("no crop images: FileNotFoundError: the image folder") for w in why)
    assert "data:image/jpeg" not in page and page.count("class=noimg") >= 20  # the objects, named, without pictures
    before, after = (json.loads((d / "report.json").read_text())["figures"] for d in (out, moved))
    assert after == before and page.count("data:image/png;base64,") == len(before)  # no figure dropped


def test_a_report_from_arrays_says_there_are_no_crops(run, tmp_path):
    from objalign.report.writer import write_report

    out, _, _ = run
    rep = json.loads((out / "report.json").read_text())
    write_report(tmp_path, rep, {"per_instance": _per(out)}, "from arrays")
    page = (tmp_path / "report.html").read_text()
    assert f"<p class=why>{gallery.NO_CROPS}</p>" in page and "data:image/jpeg" not in page
    assert "<table class=cm" in page


def test_compare_opens_with_the_best_run_per_split(run, tmp_path):
    from objalign.report.compare import compare_runs

    out, _, _ = run
    other = tmp_path / "other"
    shutil.copytree(out, other, ignore=shutil.ignore_patterns("crop"))
    rep = json.loads((other / "report.json").read_text())
    for r in rep["results"]:
        r["top1"] = r["top1"] / 2  # a worse run
    (other / "report.json").write_text(json.dumps(rep))
    table = compare_runs([other, out])
    best = next(r for r in json.loads((out / "report.json").read_text())["results"]
                if r["split"] == "heldout_images" and r["method"] == "ridge")
    lo, hi = best["ci"]["top1"]
    first = table.splitlines()[0]
    assert first == (f"Held-out images: best top-1 {best['top1']:.0%} [{lo:.0%}, {hi:.0%}] from {out} (gt-mask, "
                     f"made-up-vision -> made-up-text, ridge); 2 runs compared.")


def test_the_thumbnail_cap_holds(run, tmp_path):
    from objalign.pipeline.report import run_report

    out, cfg, _ = run
    capped = tmp_path / "run"
    shutil.copytree(out, capped)
    run_report(replace(cfg, report=replace(cfg.report, max_thumbnails=10)), capped)
    n = len(_thumbs((capped / "report.html").read_text()))
    assert 0 < n <= 10
