"""objalign.checkpoints: original files -> transformers models, strictly, safely, converted once.

The state dicts here are written by hand with the original implementations' key names and shapes (DINOv2's
hub model, OpenAI CLIP), so these tests need neither the original packages nor the network; the equivalence of
outputs with the original code is in tests/test_parity_*.py (second test environment).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from objalign.checkpoints import arch_from_file_name, find_original, load_original  # noqa: E402
from objalign.errors import ObjalignError  # noqa: E402


def hub_dinov2_state_dict(width=128, depth=2, grid=4, patch=14, registers=0, seed=0):
    """A DINOv2 hub ``DinoVisionTransformer`` state dict (key names and shapes as the released files)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.05  # noqa: E731
    sd = {"cls_token": r(1, 1, width), "pos_embed": r(1, 1 + grid * grid, width), "mask_token": r(1, width),
          "patch_embed.proj.weight": r(width, 3, patch, patch), "patch_embed.proj.bias": r(width)}
    if registers:
        sd["register_tokens"] = r(1, registers, width)
    for i in range(depth):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": 1 + r(width), b + "norm1.bias": r(width),
                   b + "attn.qkv.weight": r(3 * width, width), b + "attn.qkv.bias": r(3 * width),
                   b + "attn.proj.weight": r(width, width), b + "attn.proj.bias": r(width),
                   b + "ls1.gamma": r(width), b + "norm2.weight": 1 + r(width), b + "norm2.bias": r(width),
                   b + "mlp.fc1.weight": r(4 * width, width), b + "mlp.fc1.bias": r(4 * width),
                   b + "mlp.fc2.weight": r(width, 4 * width), b + "mlp.fc2.bias": r(width), b + "ls2.gamma": r(width)})
    sd.update({"norm.weight": 1 + r(width), "norm.bias": r(width)})
    return sd


def openai_clip_state_dict(width=64, depth=1, embed=32, seed=0):
    """An OpenAI ``clip.model.CLIP`` state dict: the text tower, a stand-in image-tower key and the scalars."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.05  # noqa: E731
    sd = {"positional_embedding": r(77, width), "text_projection": r(width, embed), "logit_scale": torch.tensor(4.6),
          "visual.class_embedding": r(16), "token_embedding.weight": r(49408, width),
          "ln_final.weight": 1 + r(width), "ln_final.bias": r(width)}
    for i in range(depth):
        b = f"transformer.resblocks.{i}."
        sd.update({b + "attn.in_proj_weight": r(3 * width, width), b + "attn.in_proj_bias": r(3 * width),
                   b + "attn.out_proj.weight": r(width, width), b + "attn.out_proj.bias": r(width),
                   b + "ln_1.weight": 1 + r(width), b + "ln_1.bias": r(width),
                   b + "mlp.c_fc.weight": r(4 * width, width), b + "mlp.c_fc.bias": r(4 * width),
                   b + "mlp.c_proj.weight": r(width, 4 * width), b + "mlp.c_proj.bias": r(width),
                   b + "ln_2.weight": 1 + r(width), b + "ln_2.bias": r(width)})
    return sd


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OBJALIGN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def save(sd, path):
    torch.save(sd, path)
    return path


def test_dinov2_keys_land_where_the_hub_code_reads_them(tmp_path, cache):
    sd = hub_dinov2_state_dict()
    model = load_original(save(sd, tmp_path / "dinov2_tiny.pth"), "dinov2")
    out = model.state_dict()
    w = 128
    q, k, v = sd["blocks.1.attn.qkv.weight"].split(w)  # the hub's qkv Linear: rows [q; k; v]
    assert torch.equal(out["encoder.layer.1.attention.q_proj.weight"], q)
    assert torch.equal(out["encoder.layer.1.attention.k_proj.weight"], k)
    assert torch.equal(out["encoder.layer.1.attention.v_proj.weight"], v)
    assert torch.equal(out["encoder.layer.0.layer_scale2.lambda1"], sd["blocks.0.ls2.gamma"])
    assert torch.equal(out["embeddings.cls_token"], sd["cls_token"])
    assert torch.equal(out["layernorm.bias"], sd["norm.bias"])
    assert model.config.hidden_size == 128 and model.config.num_attention_heads == 2
    assert model.config.image_size == 56 and model.config.num_hidden_layers == 2


def test_dinov2_registers_build_the_register_model(tmp_path, cache):
    model = load_original(save(hub_dinov2_state_dict(registers=4), tmp_path / "reg.pth"), "dinov2")
    assert type(model).__name__ == "Dinov2WithRegistersModel" and model.config.num_register_tokens == 4


def test_clip_text_projection_is_transposed_and_image_tower_dropped(tmp_path, cache):
    sd = openai_clip_state_dict()
    model = load_original(save(sd, tmp_path / "clip_tiny.pt"), "clip")
    out = model.state_dict()
    assert torch.equal(out["text_projection.weight"], sd["text_projection"].t())
    q, k, v = sd["transformer.resblocks.0.attn.in_proj_weight"].split(64)
    assert torch.equal(out["text_model.encoder.layers.0.self_attn.v_proj.weight"], v)
    assert torch.equal(out["text_model.encoder.layers.0.mlp.fc2.bias"], sd["transformer.resblocks.0.mlp.c_proj.bias"])
    assert not any(key.startswith("visual") for key in out)
    # OpenAI's text features: x[arange, eot] @ text_projection after ln_final; eot is the highest token id
    ids = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 269, 49407, 49407, 49407]])
    mask = torch.tensor([[1] * 8 + [0] * 2])
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask).text_embeds
        hidden = model.text_model(input_ids=ids, attention_mask=mask).last_hidden_state[0, 7]
    np.testing.assert_allclose(got[0].numpy(), (hidden @ sd["text_projection"]).numpy(), rtol=1e-5, atol=1e-6)


def test_conversion_is_cached_as_safetensors_and_reused(tmp_path, cache, monkeypatch):
    path = save(hub_dinov2_state_dict(), tmp_path / "dinov2_tiny.pth")
    first = load_original(path, "dinov2")
    files = list(cache.rglob("model.safetensors"))
    assert len(files) == 1
    from objalign.checkpoints import dinov2

    def boom(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(dinov2, "build", boom)
    again = load_original(path, "dinov2")
    for key, value in first.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    os.utime(path, ns=(1, 1))  # a changed file is converted again
    with pytest.raises(AssertionError, match="converted again"):
        load_original(path, "dinov2")


def test_truncated_file_is_one_line_naming_it(tmp_path, cache):
    path = save(hub_dinov2_state_dict(), tmp_path / "dinov2_vitl14_pretrain.pth")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ObjalignError, match="dinov2_vitl14_pretrain.pth.*truncated") as err:
        load_original(path, "dinov2_vitl14")
    assert "\n" not in str(err.value)


def test_not_a_state_dict(tmp_path, cache):
    with pytest.raises(ObjalignError, match="holds a list, not a state dict"):
        load_original(save([1, 2, 3], tmp_path / "x.pth"), "dinov2")
    with pytest.raises(ObjalignError, match="entry 'epoch' holds a int"):
        load_original(save({"epoch": 3}, tmp_path / "y.pth"), "sam")


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_code_is_never_run(tmp_path, cache):
    path = tmp_path / "evil.pth"
    torch.save({"cls_token": Evil()}, path)
    with pytest.raises(ObjalignError, match="weights-only"):
        load_original(path, "dinov2")


def test_another_architecture_names_the_first_offending_key(tmp_path, cache):
    path = save(hub_dinov2_state_dict(), tmp_path / "dinov2_tiny.pth")
    with pytest.raises(ObjalignError, match=r"unknown key 'cls_token'"):
        load_original(path, "sam_vit_h")
    with pytest.raises(ObjalignError, match=r"unknown key 'cls_token'"):
        load_original(path, "clip_vit_b32")
    with pytest.raises(ObjalignError, match=r"does not hold dinov2_vitl14: hidden_size = 128 \(from key 'cls_token'\)"):
        load_original(path, "dinov2_vitl14")


def test_unknown_and_missing_keys(tmp_path, cache):
    sd = hub_dinov2_state_dict()
    sd["blocks.0.attn.extra_scale"] = torch.ones(1)
    with pytest.raises(ObjalignError, match=r"unknown key 'blocks.0.attn.extra_scale'"):
        load_original(save(sd, tmp_path / "a.pth"), "dinov2")
    sd = hub_dinov2_state_dict()
    del sd["blocks.1.ls1.gamma"]
    with pytest.raises(ObjalignError, match=r"lacks the weights of 'encoder.layer.1.layer_scale1.lambda1'"):
        load_original(save(sd, tmp_path / "b.pth"), "dinov2")
    sd = hub_dinov2_state_dict()
    sd["blocks.0.mlp.fc2.weight"] = sd["blocks.0.mlp.fc2.weight"][:, :10]
    with pytest.raises(ObjalignError, match=r"key 'blocks.0.mlp.fc2.weight' has shape \(128, 10\)"):
        load_original(save(sd, tmp_path / "c.pth"), "dinov2")


def test_unknown_arch_suggests_the_close_one(tmp_path):
    with pytest.raises(ObjalignError, match="did you mean 'dinov2_vitl14'"):
        load_original(tmp_path / "x.pth", "dinov2_vitl16")


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torchscript_with_unknown_hash_is_refused_with_the_conversion_line(tmp_path, cache):
    path = tmp_path / "ViT-B-32.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    with pytest.raises(ObjalignError, match="matches no official release.*torch.jit.load.*state_dict") as err:
        load_original(path, "clip_vit_b32")
    assert "\n" not in str(err.value)
    with pytest.raises(ObjalignError, match="is a TorchScript archive, not a state dict"):
        load_original(path, "dinov2")


def test_official_hashes_are_the_release_urls():
    from objalign.checkpoints.clip import OFFICIAL_SHA256

    assert OFFICIAL_SHA256["40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"] == "ViT-B/32"
    assert len(OFFICIAL_SHA256) == 9 and all(len(h) == 64 for h in OFFICIAL_SHA256)


def test_arch_from_official_file_names():
    assert arch_from_file_name("/x/dinov2_vitl14_pretrain.pth") == "dinov2_vitl14"
    assert arch_from_file_name("dinov2_vitg14_reg4_pretrain.pth") == "dinov2_vitg14_reg4"
    assert arch_from_file_name("sam_vit_h_4b8939.pth") == "sam_vit_h"
    assert arch_from_file_name("ViT-B-32.pt") == "clip_vit_b32"
    assert arch_from_file_name("model.pth") is None


def test_found_where_the_reference_code_leaves_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ObjalignError, match="no original dinov2_vitl14 checkpoint found.*dinov2_vitl14_pretrain.pth"):
        find_original("dinov2_vitl14")
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "dinov2_vitl14_pretrain.pth").write_bytes(b"x")
    assert find_original("dinov2_vitl14") == hub / "dinov2_vitl14_pretrain.pth"
    (tmp_path / ".cache" / "clip").mkdir(parents=True)
    (tmp_path / ".cache" / "clip" / "ViT-B-32.pt").write_bytes(b"x")
    assert find_original("clip_vit_b32") == tmp_path / ".cache" / "clip" / "ViT-B-32.pt"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "sam_vit_h_4b8939.pth").write_bytes(b"x")
    assert find_original("sam_vit_h") == tmp_path / "checkpoints" / "sam_vit_h_4b8939.pth"


def test_hub_interpolation_matches_the_hub_formula_and_differs_from_transformers(tmp_path, cache):
    """At 224 px (16 x 16 patches from a 4 x 4 grid here) the hub's scale_factor=(n + 0.1) / M samples other
    points than transformers' size=n; at the native grid nothing is resized and both agree."""
    from objalign.checkpoints.dinov2 import use_hub_interpolation

    model = load_original(save(hub_dinov2_state_dict(), tmp_path / "d.pth"), "dinov2")
    emb = model.embeddings.requires_grad_(False)
    tokens = torch.zeros(1, 1 + 16 * 16, 128)
    plain = emb.interpolate_pos_encoding(tokens, 224, 224)
    use_hub_interpolation(model)
    hub = emb.interpolate_pos_encoding(tokens, 224, 224)
    grid = emb.position_embeddings[:, 1:].reshape(1, 4, 4, 128).permute(0, 3, 1, 2)
    want = torch.nn.functional.interpolate(grid, scale_factor=(16.1 / 4, 16.1 / 4), mode="bicubic")
    np.testing.assert_allclose(hub[0, 1:].numpy(), want.permute(0, 2, 3, 1).reshape(-1, 128).numpy(), atol=1e-7)
    assert float((hub - plain).abs().max()) > 1e-4
    native = torch.zeros(1, 1 + 16, 128)
    assert torch.equal(emb.interpolate_pos_encoding(native, 56, 56), emb.position_embeddings)


def test_the_parity_config_loads_and_names_known_encoders():
    from pathlib import Path

    from objalign.config import load_config
    from objalign.embed.stage import check_encoder_names

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "coco2017_thesis_parity.yaml")
    check_encoder_names(cfg)
    assert (cfg.crop.sam_checkpoint, cfg.crop.sam_mask, cfg.crop.fill) == ("auto", "first", (0, 0, 0))
    assert (cfg.embed.vision.name, cfg.embed.vision.preprocess, cfg.embed.vision.pos_interpolation) == \
        ("dinov2_vitl14", "hub", "hub")
    assert (cfg.embed.text.name, cfg.embed.text.dtype, cfg.report.reference_names) == ("clip_vit_b32", "auto", True)


def test_parity_settings_on_another_encoder_are_one_line():
    from objalign.config import load_config
    from objalign.embed.stage import check_encoder_names

    with pytest.raises(ObjalignError, match="embed.vision.preprocess applies to DINOv2 encoders"):
        check_encoder_names(load_config(overrides=["embed.vision.preprocess=hub"]))
    with pytest.raises(ObjalignError, match="embed.text.dtype applies to CLIP text encoders"):
        check_encoder_names(load_config(overrides=["embed.text.dtype=float16"]))


def test_hub_eval_transform_arithmetic():
    """torchvision's Resize(256) + CenterCrop(224) on a 300 x 171 (w x h) crop: shorter side 171 -> 256, longer
    int(256 * 300 / 171) = 449, crop offsets round((449 - 224) / 2) = 112 (banker's rounding of 112.5) and 16."""
    from objalign.crops.render import torchvision_eval

    crop = np.zeros((171, 300, 3), np.uint8)
    crop[:, 150:] = 255  # a vertical edge; after the resize it sits at x = 224.5 of 449 columns
    out = torchvision_eval(crop, 224, 256, "nearest")
    assert out.shape == (224, 224, 3)
    from PIL import Image

    big = np.asarray(Image.fromarray(crop).resize((449, 256), Image.NEAREST))
    assert np.array_equal(out, big[16:240, 112:336])


def test_a_cached_conversion_still_names_its_source(tmp_path, cache):
    path = save(hub_dinov2_state_dict(), tmp_path / "dinov2_tiny.pth")
    load_original(path, "dinov2")
    again = load_original(path, "dinov2")
    assert again.config.objalign_source == str(path) and again.config.objalign_arch == "dinov2"


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torchscript_with_an_official_hash_is_read(tmp_path, cache, monkeypatch):
    """A TorchScript archive holding CLIP's weights whose hash is in the official table (patched in here: the real
    files are 338 MB and more) is read through torch.jit.load, and its release must match the arch."""
    from objalign.checkpoints import _io, clip

    class Holder(torch.nn.Module):
        def forward(self, x):
            return x

    sd = openai_clip_state_dict()
    root = Holder()
    for key, value in sd.items():
        *parents, leaf = key.split(".")
        node = root
        for part in parents:
            if not hasattr(node, part):
                node.add_module(part, Holder())
            node = getattr(node, part)
        node.register_parameter(leaf, torch.nn.Parameter(value, requires_grad=False))
    path = tmp_path / "ViT-B-32.pt"
    torch.jit.script(root).save(str(path))
    monkeypatch.setattr(clip, "OFFICIAL_SHA256", {_io.sha256_file(path): "ViT-B/32"})
    model = load_original(path, "clip")
    assert torch.equal(model.state_dict()["text_projection.weight"], sd["text_projection"].t())
    with pytest.raises(ObjalignError, match="official ViT-B/32 release, not clip_vit_l14; set the arch to clip_vit_b32"):
        load_original(path, "clip_vit_l14")


def test_sam_parity_settings_enter_the_crop_key_only_when_set():
    from objalign.config import load_config
    from objalign.crops.stage import parity_key

    assert parity_key(load_config()) == {}  # runs made before these settings keep their cache keys
    assert parity_key(load_config(overrides=["crop.sam_mask=first", "crop.sam_checkpoint=auto"])) == \
        {"sam_checkpoint": "auto", "sam_mask": "first"}
