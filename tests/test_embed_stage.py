"""The embed stage end to end through the CLI: store keys cover prompts, dtype and the instances; skipped
objects reach the run summary; stores are reused, listed and removed."""

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from objalign.cli import main  # noqa: E402
from objalign.encoders import VISION_ENCODERS  # noqa: E402


def make_tiny(pooling="cls", model_path=None, device="cpu", dtype="float32", image_size=None):
    from tiny_models import tiny_dinov2

    return tiny_dinov2("tiny-dinov2-stage", pooling, device, dtype, image_size)


@pytest.fixture()
def tiny_registered():
    VISION_ENCODERS.register("tiny-dinov2-stage", f"{__name__}:make_tiny")
    yield "tiny-dinov2-stage"
    del VISION_ENCODERS._entries["tiny-dinov2-stage"]


def stores(out, kind):
    return sorted(p.name for p in (out / "embeddings").glob(f"{kind}-*"))


def test_embed_stage_keys_prompts_dtype_and_records_skips(small_demo, tmp_path, tiny_registered, capsys):
    data = tmp_path / "data"
    shutil.copytree(small_demo, data)
    out = tmp_path / "run"
    tfile = tmp_path / "templates.txt"
    tfile.write_text("a photo of a {}.\na drawing of the {}.\n")
    common = ["--out", str(out), "--set", "data.kind=coco", "--set", f"data.root={data}", "--set", "sample.n=24",
              "--set", "embed.shard_size=8", "--set", "embed.vision.batch_size=4", "--vision", tiny_registered,
              "--no-progress"]
    assert main(["sample"] + common) == 0 and main(["crop"] + common) == 0
    from objalign.tables import read_table

    crops = read_table(out / "crop" / "crops.parquet")
    bad_file = crops["file_name"][0]
    (data / "images" / bad_file).write_bytes(b"garbage")
    n_bad = int(np.sum(crops["file_name"] == bad_file))

    assert main(["embed"] + common + ["--set", "embed.text.prompts=file", "--set",
                                      f"embed.text.template_file={tfile}"]) == 0
    rec = json.loads((out / "embed" / "stage.json").read_text())["summary"]
    assert rec["n_vision"] == 24 - n_bad and rec["n_skipped"] == n_bad
    bad_ids = set(crops["annotation_id"][crops["file_name"] == bad_file].tolist())
    assert {s["annotation_id"] for s in rec["skipped"]} == bad_ids
    assert all("unreadable image" in s["reason"] for s in rec["skipped"])
    assert rec["text_encoder"]["n_templates"] == 2

    # the text store: keyed by its templates, vectors = normalised mean over the two prompts
    from objalign.encoders.hf_text import MiniLMText
    from objalign.encoders.prompts import embed_prompts
    from objalign.embed.store import EmbeddingStore

    (tstore,) = stores(out, "text")
    tman = json.loads((out / "embeddings" / tstore / "manifest.json").read_text())
    assert tman["key_fields"]["templates"] == ["a photo of a {}.", "a drawing of the {}."]
    meta, T = EmbeddingStore(out / "embeddings" / tstore).read()
    want = embed_prompts(MiniLMText(), list(meta["category"]), ("a photo of a {}.", "a drawing of the {}."), True)
    np.testing.assert_allclose(T, want, atol=1e-5)

    vman = json.loads((out / "embeddings" / stores(out, "vision")[0] / "manifest.json").read_text())
    kf = vman["key_fields"]
    assert kf["encoder"]["dtype"] == "float32" and kf["encoder"]["preprocess"]["size"] == 28
    assert kf["n_instances"] == 24 and len(kf["dataset"]) == 16 and len(vman["skipped"]) == n_bad

    # the same request again: reused; other prompts or another dtype: new stores beside the old ones
    assert main(["embed"] + common + ["--set", "embed.text.prompts=file", "--set",
                                      f"embed.text.template_file={tfile}", "--force"]) == 0
    again = json.loads((out / "embed" / "stage.json").read_text())["summary"]
    assert again["shards_reused"] == again["n_shards"] == 3
    assert main(["embed"] + common + ["--set", "embed.text.prompts=name", "--dtype", "bfloat16"]) == 0
    assert len(stores(out, "text")) == 2 and len(stores(out, "vision")) == 2
    from objalign import read_embeddings

    ids16, X16 = read_embeddings(out, kind="vision")
    ids32, X32 = read_embeddings(out / "embeddings" / f"vision-{vman['key']}")
    assert (ids16 == ids32).all() and not np.array_equal(X16, X32)
    rel = np.linalg.norm(X16 - X32, axis=1) / np.linalg.norm(X32, axis=1)
    assert rel.max() < 0.1  # bfloat16 autocast: the same vectors to about 2-3 significant digits

    capsys.readouterr()
    assert main(["cache", "ls", str(out)]) == 0
    listing = capsys.readouterr().out
    # 2 text + 2 vision stores, the crop store, and the LVIS distractor vocabulary embedded with each of the two
    # prompt sets
    assert listing.count("crops  mode=box") == 1 and listing.count("key=") == 7
    assert listing.count("vectors=1203") == 2
    assert "dtype=bfloat16" in listing and f"skipped={n_bad}" in listing
    victim = out / "embeddings" / stores(out, "text")[0]
    assert main(["cache", "rm", str(victim)]) == 0 and not victim.exists()
    assert main(["cache", "rm", str(out / "crop")]) == 2  # not a store: refused, nothing removed
    assert (out / "crop" / "crops.parquet").is_file()


@pytest.mark.parametrize("setting,message", [
    ("embed.text.template=a photo", "has no '{}'"),
    ("embed.text.prompts=templates", "expected one of name, template, ensemble, file"),
    ("embed.vision.executor=gpu", "executor = 'gpu'"),
    ("embed.vision.batch_size=0", "embed.vision.batch_size = 0: expected an integer >= 1"),
])
def test_bad_embed_settings_fail_before_any_model_loads(small_demo, tmp_path, tiny_registered, capsys, setting,
                                                        message):
    out = tmp_path / "run"
    common = ["--out", str(out), "--set", "data.kind=coco", "--set", f"data.root={small_demo}", "--set", "sample.n=8",
              "--vision", tiny_registered, "--no-progress"]
    assert main(["sample"] + common) == 0 and main(["crop"] + common) == 0
    capsys.readouterr()
    assert main(["embed"] + common + ["--set", setting]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (out / "embeddings").exists() or not list((out / "embeddings").iterdir())
