"""LVIS v1 as an object source: a tiny LVIS-format file made here (no file_name, coco_url only, frequency groups,
synonyms, definitions, negative and not-exhaustive ids), its images in both layouts, the annotation archive fetched
from a loopback server, templates with {definition} / {synonym}, and a run with figures per frequency group."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_download import serve

from objalign.config import load_config
from objalign.data import open_dataset
from objalign.data.download import DownloadError
from objalign.data.download.lvis import download_lvis
from objalign.data.lvis import load_lvis, lvis_words
from objalign.data.sample import sample_instances
from objalign.encoders.prompts import embed_prompts, fill_templates
from objalign.errors import ObjalignError
from objalign.report.groups import group_summary

FREQ = "rcf"


def lvis_doc(demo: Path) -> dict:
    """The demo's annotations as LVIS v1 writes them: images by coco_url (even ids in train2017, odd in val2017),
    names with underscores and senses, frequency groups in turn, synonyms, definitions, the two id lists."""
    doc = json.loads((demo / "annotations.json").read_text())
    for im in doc["images"]:
        split = "train2017" if im["id"] % 2 == 0 else "val2017"
        im["coco_url"] = f"http://images.cocodataset.org/{split}/{im.pop('file_name')}"
        im["neg_category_ids"] = [1 + (im["id"] % 5)]
        im["not_exhaustive_category_ids"] = [c["id"] for c in doc["categories"][:3]]
    for i, c in enumerate(doc["categories"]):
        raw = c["name"].replace(" ", "_")
        c["name"] = f"{raw}_(shape)" if i == 0 else raw
        c["frequency"] = FREQ[i % 3]
        c["synonyms"] = [c["name"], f"{raw}_thing"]
        c["def"] = f"a drawn {c['name'].replace('_', ' ')}"
        c["synset"] = f"{raw}.n.01"
    for a in doc["annotations"]:
        a.pop("iscrowd", None)  # LVIS has none
    return doc


def make_lvis(demo: Path, root: Path, layout: str = "split") -> Path:
    """Write ``root/lvis_v1_val.json`` and the images in ``layout``: ``split`` (root/coco/{train,val}2017/),
    ``zips`` (root/coco/{train,val}2017.zip), ``flat`` (root/images/). Returns the annotation file."""
    doc = lvis_doc(demo)
    root.mkdir(parents=True, exist_ok=True)
    zips: dict = {}
    for im in doc["images"]:
        split, name = im["coco_url"].split("/")[-2:]
        src = demo / "images" / name
        if layout == "flat":
            dst = root / "images" / name
        elif layout == "split":
            dst = root / "coco" / split / name
        else:
            zips.setdefault(split, {})[f"{split}/{name}"] = src.read_bytes()
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    for split, members in zips.items():
        (root / "coco").mkdir(exist_ok=True)
        with zipfile.ZipFile(root / "coco" / f"{split}.zip", "w") as zf:
            for k, v in members.items():
                zf.writestr(k, v)
    path = root / "lvis_v1_val.json"
    path.write_text(json.dumps(doc))
    return path


def test_lvis_words_rule():
    assert lvis_words("bow_(weapon)") == "bow (weapon)"
    assert lvis_words("baby_buggy") == "baby buggy"
    assert lvis_words("  a__b ") == "a b"


@pytest.mark.parametrize("layout", ["split", "zips", "flat"])
def test_images_found_through_coco_url_in_each_layout(small_demo, tmp_path, layout):
    ann = make_lvis(small_demo, tmp_path, layout)
    images = tmp_path / ("images" if layout == "flat" else "coco")
    ds = load_lvis(ann, images)
    assert not ds.excluded
    some = next(iter(ds.images.values()))
    expect = some["coco_url"].split("/")[-1] if layout == "flat" else "/".join(some["coco_url"].split("/")[-2:])
    assert some["file_name"] == expect
    src = ds.image_source()
    for im in list(ds.images.values())[:4]:  # both splits
        assert src.load(im["file_name"]).shape == (im["height"], im["width"], 3)


def test_categories_frequency_synonyms_definitions_and_id_lists(small_demo, tmp_path):
    ann = make_lvis(small_demo, tmp_path)
    ds = load_lvis(ann, tmp_path / "coco")
    assert ds.categories[1] == "red circle (shape)" and ds.categories[2] == "red square"
    assert ds.category_info[1]["frequency"] == "rare" and ds.category_info[2]["frequency"] == "common"
    assert ds.category_info[3]["frequency"] == "frequent"
    assert ds.category_info[1]["synonyms"] == ["red circle (shape)", "red circle thing"]
    assert ds.category_info[1]["definition"] == "a drawn red circle (shape)"
    table = sample_instances(ds, n=50, seed=0, min_area=0)
    assert set(table["frequency"]) <= {"rare", "common", "frequent"}
    first = ds.images[int(table["image_id"][0])]
    assert json.loads(table["neg_category_ids"][0]) == first["neg_category_ids"]
    assert json.loads(table["not_exhaustive_category_ids"][0]) == [1, 2, 3]
    assert table["not_exhaustive"].tolist() == [int(c) in (1, 2, 3) for c in table["category_id"]]


def test_malformed_entries_each_get_a_line(small_demo, tmp_path):
    ann = make_lvis(small_demo, tmp_path)
    doc = json.loads(ann.read_text())
    doc["images"][0].pop("coco_url")
    doc["images"][1]["neg_category_ids"] = "oops"
    ann.write_text(json.dumps(doc))
    ds = load_lvis(ann, tmp_path / "coco")
    kinds = {r["image_id"]: r for r in ds.excluded}
    first, second = doc["images"][0]["id"], doc["images"][1]["id"]
    assert kinds[first]["kind"] == "image without coco_url" and "coco_url=None" in kinds[first]["reason"]
    assert kinds[second]["kind"] == "bad image record" and "neg_category_ids" in kinds[second]["reason"]
    doc["categories"][0]["frequency"] = "x"
    ann.write_text(json.dumps(doc))
    with pytest.raises(ObjalignError, match=r"categories\[0\] \(id 1\) has frequency='x'; expected 'r', 'c' or 'f'"):
        load_lvis(ann, tmp_path / "coco")


def test_templates_with_definition_and_synonym():
    info = [{"definition": "a weapon that shoots arrows", "synonyms": ["bow (weapon)", "longbow"]}, {}]
    rows = fill_templates(["bow (weapon)", "cat"], ("a photo of a {name}, {definition}.", "a {synonym}."), info)
    assert rows[0] == ["a photo of a bow (weapon), a weapon that shoots arrows.", "a bow (weapon).", "a longbow."]
    assert rows[1] == ["a photo of a cat, cat.", "a cat."]
    assert fill_templates(["cat"], ("a {}.",)) == [["a cat."]]

    class Enc:  # a deterministic "encoder": a vector from each prompt's bytes
        def encode(self, texts):
            return np.stack([np.frombuffer(hashlib.sha256(t.encode()).digest()[:8], np.uint8) for t in texts]) * 1.0

    out = embed_prompts(Enc(), ["bow (weapon)", "cat"], ("a {synonym}.",), info=info)
    e = Enc().encode(["a bow (weapon).", "a longbow."])
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    want = e.mean(0) / np.linalg.norm(e.mean(0))
    assert np.allclose(out[0], want, atol=1e-6) and out.shape == (2, 8)


def test_group_summary_weights_by_objects():
    rows = [{"split": "s", "method": "ridge", "category": "a", "category_id": 1, "n": 3, "top1": 1.0},
            {"split": "s", "method": "ridge", "category": "b", "category_id": 2, "n": 1, "top1": 0.0},
            {"split": "s", "method": "ridge", "category": "c", "category_id": 3, "n": 2, "top1": 0.5}]
    got = group_summary(rows, {1: "rare", 2: "rare", "3": "frequent"})
    assert [r["group"] for r in got] == ["rare", "frequent"]
    assert got[0]["top1"] == pytest.approx(0.75) and got[0]["top1_category_mean"] == pytest.approx(0.5)
    assert got[0]["n"] == 4 and got[0]["n_categories"] == 2


def _archive(doc_bytes: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("lvis_v1_val.json", doc_bytes)
    return buf.getvalue()


def test_fetch_by_split_from_a_loopback_server_resumes_and_verifies(small_demo, tmp_path, monkeypatch):
    from objalign.data.download import fetch as dl_fetch

    monkeypatch.setattr(dl_fetch, "_RETRY_BACKOFF_S", 0.0)
    body = json.dumps(lvis_doc(small_demo)).encode()
    data = _archive(body)
    url = "/LVIS/lvis_v1_val.json.zip"
    with serve({url: data}) as server:
        third = len(data) // 3
        server.cut[url] = third  # the first transfer drops a third of the way in
        with pytest.raises(DownloadError, match=r"lvis_v1_val\.json\.zip.*rerun to resume"):
            download_lvis(tmp_path, "val", mirror=server.url, progress=False, retries=0)
        assert (tmp_path / "downloads" / "lvis_v1_val.json.zip.part").read_bytes() == data[:third]
        got = download_lvis(tmp_path, "val", mirror=server.url, progress=False, retries=0,
                            checksums={"lvis_v1_val.json.zip": (len(data), hashlib.md5(data).hexdigest())})
        assert got == tmp_path / "annotations" / "lvis_v1_val.json" and got.read_bytes() == body
        assert [r for p, r in server.requests if p == url] == [None, f"bytes={third}-"]  # resumed
        n = len(server.requests)
        assert download_lvis(tmp_path, "val", mirror=server.url, progress=False) == got
        assert len(server.requests) == n  # nothing fetched again
    bad = tmp_path / "bad"
    with serve({url: data}) as server, pytest.raises(DownloadError, match="failed its check"):
        download_lvis(bad, "val", mirror=server.url, progress=False,
                      checksums={"lvis_v1_val.json.zip": (None, "0" * 32)})


def test_cli_data_lvis_fetches_from_a_mirror(small_demo, tmp_path, capsys):
    from objalign.cli import main

    data = _archive(json.dumps(lvis_doc(small_demo)).encode())
    with serve({"/LVIS/lvis_v1_val.json.zip": data}) as server:
        assert main(["data", "lvis", "--root", str(tmp_path), "--split", "val", "--mirror", server.url,
                     "--no-progress"]) == 0
    assert "lvis_v1_val.json" in capsys.readouterr().out
    assert (tmp_path / "annotations" / "lvis_v1_val.json").is_file()


def test_kind_lvis_with_split_fetches_then_reads_the_images(small_demo, tmp_path, monkeypatch):
    make_lvis(small_demo, tmp_path / "src")
    data = _archive((tmp_path / "src" / "lvis_v1_val.json").read_bytes())
    root = tmp_path / "lvis"
    shutil.copytree(tmp_path / "src" / "coco", root / "coco")
    with serve({"/LVIS/lvis_v1_val.json.zip": data}) as server:
        cfg = load_config(None, {"data.kind": "lvis", "data.root": str(root), "data.split": "val",
                                 "data.images": "coco", "data.mirror": server.url})
        ds = open_dataset(cfg.data)
    assert len(ds.categories) == 30 and ds.category_info[1]["frequency"] == "rare"
    cfg = load_config(None, {"data.kind": "lvis", "data.root": str(root), "data.images": "nowhere",
                             "data.mirror": "http://127.0.0.1:9"})  # refused before any request
    with pytest.raises(ObjalignError, match="data.images = 'nowhere'"):
        open_dataset(cfg.data)


def make_tiny(pooling="cls", model_path=None, device="cpu", dtype="float32", image_size=None):
    from tiny_models import tiny_dinov2

    return tiny_dinov2("tiny-dinov2-lvis", pooling, device, dtype, image_size, layers=1)


@pytest.mark.slow
def test_lvis_run_end_to_end_reports_per_frequency_group(small_demo, tmp_path, capfd):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from objalign.cli import main
    from objalign.encoders import VISION_ENCODERS
    from objalign.tables import read_table

    make_lvis(small_demo, tmp_path / "lvis")
    out = tmp_path / "run"
    VISION_ENCODERS.register("tiny-dinov2-lvis", f"{__name__}:make_tiny")
    try:
        args = ["run", "--out", str(out), "--set", "data.kind=lvis", "--set", f"data.root={tmp_path / 'lvis'}",
                "--set", "data.annotations=lvis_v1_val.json", "--set", "data.images=coco",
                "--set", "embed.text.template=a photo of a {name}, {definition}.",
                "--set", "sample.n=1000", "--set", "sample.min_area=0", "--vision", "tiny-dinov2-lvis",
                "--set", "embed.shard_size=64", "--set", "align.cv_folds=2", "--set", "align.category_folds=3",
                "--set", "align.gammas=[1]", "--set", "align.alphas=[1,10]", "--set", "align.n_permutations=0",
                "--set", "align.n_bootstrap=0", "--no-progress"]
        assert main(args + ["--dry-run"]) == 0
        plan = capfd.readouterr().out
        assert "LVIS v1" in plan and "10 rare, 10 common, 10 frequent" in plan
        code = main(args)
        got = capfd.readouterr()
    finally:
        del VISION_ENCODERS._entries["tiny-dinov2-lvis"]
    assert code == 0, got.err[-3000:]
    inst = read_table(out / "sample" / "instances.parquet")
    assert {"frequency", "neg_category_ids", "not_exhaustive_category_ids", "not_exhaustive"} <= set(inst)
    report = json.loads((out / "report.json").read_text())
    assert report["category_groups"] == {"rare": 10, "common": 10, "frequent": 10}
    held = [r for r in report["per_group"] if r["split"] == "heldout_categories" and r["method"] == "ridge"]
    assert [r["group"] for r in held] == ["rare", "common", "frequent"]
    assert all("top1_unseen" in r and 0 <= r["top1_unseen"] <= 1 for r in held)
    assert sum(r["n"] for r in held) == sum(r["n"] for r in report["per_category"]
                                            if r["split"] == "heldout_categories" and r["method"] == "ridge")
    text = (out / "report.txt").read_text()
    assert "by category frequency group" in text and "rare" in text
    assert "by category frequency group" in (out / "report.html").read_text()
    from objalign.embed.store import EmbeddingStore

    store = out / "embeddings" / json.loads((out / "embeddings" / "text.json").read_text())["store"]
    meta, _ = EmbeddingStore(store).read()
    assert "a photo of a red circle (shape), a drawn red circle (shape)." in meta["prompt"].tolist()
    (tmp_path / "report.txt").write_text(text)  # kept for a look


def test_per_category_sampling_covers_the_long_tail(small_demo, tmp_path):
    ds = load_lvis(make_lvis(small_demo, tmp_path), tmp_path / "coco")
    uniform = sample_instances(ds, n=60, seed=0, min_area=0)
    spread = sample_instances(ds, n=60, seed=0, min_area=0, strategy="per_category", per_category_max=3)
    sizes = np.unique(spread["category_id"], return_counts=True)[1]
    assert len(sizes) >= len(set(uniform["category_id"])) and sizes.max() <= 3
    pool = Counter(a["category_id"] for a in ds.annotations)
    least = sample_instances(ds, n=60, seed=0, min_area=0, strategy="per_category", per_category_min=6)
    assert {int(c) for c in least["category_id"]} == {c for c, k in pool.items() if k >= 6}
    again = sample_instances(ds, n=60, seed=0, min_area=0, strategy="per_category", per_category_max=3)
    assert again["annotation_id"].tolist() == spread["annotation_id"].tolist()
    with pytest.raises(ObjalignError, match="per_category_min = 999"):
        sample_instances(ds, n=60, seed=0, min_area=0, strategy="per_category", per_category_min=999)


def test_new_sample_keys_leave_an_existing_runs_key_alone():
    from objalign.data.stage import sample_key

    cfg = load_config("configs/demo.yaml" if Path("configs/demo.yaml").is_file() else None)
    assert sample_key(cfg, {"dataset": "x"}) == "b90a6a0cc3b36b46"  # the key before per_category_* existed
    other = load_config(None, {"sample.strategy": "per_category", "sample.per_category_max": 5})
    assert sample_key(other, {"dataset": "x"}) != sample_key(cfg, {"dataset": "x"})
