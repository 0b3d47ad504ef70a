"""DINOv2 torch-hub checkpoints ``dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth`` -> transformers ``Dinov2Model``
(or ``Dinov2WithRegistersModel``), and the hub code's own position-embedding interpolation.

The key map follows transformers' ``convert_dinov2_to_hf.py``: ``blocks.i`` -> ``encoder.layer.i``, the fused
``attn.qkv`` split into query/key/value, LayerScale ``ls{1,2}.gamma`` -> ``layer_scale{1,2}.lambda1``, the
SwiGLU ``w12`` split into gate/up and ``w3`` -> down (ViT-g), ``norm`` -> ``layernorm``. Width, depth, patch
size, input size, FFN kind and register count come from the tensors; heads are width / 64, as in every DINOv2
release.
"""

from __future__ import annotations

import math
import types

from objalign.checkpoints.keymap import check_against, count_indexed, need, rule

_BASE = {"s": (384, 12), "b": (768, 12), "l": (1024, 24), "g": (1536, 40)}
#: ``dinov2_vit{s,b,l,g}14`` and their ``_reg4`` variants (``dinov2/hub/backbones.py``): 518-px position grid.
ARCHS = {}
for _k, (_w, _d) in _BASE.items():
    for _reg in (0, 4):
        ARCHS[f"dinov2_vit{_k}14" + (f"_reg{_reg}" if _reg else "")] = {
            "hidden_size": _w, "num_hidden_layers": _d, "num_attention_heads": _w // 64, "patch_size": 14,
            "image_size": 518, "use_swiglu_ffn": _k == "g", "num_register_tokens": _reg}

#: How the hub code resizes position embeddings (``interpolate_offset``, ``interpolate_antialias``): the plain
#: models pass ``scale_factor=(n + 0.1) / M``, the register models ``size=n`` with antialiasing.
HUB_INTERPOLATION = {0: (0.1, False), 4: (0.0, True)}


def file_name(arch: str) -> str:
    """Torch hub's cache name of a release, e.g. ``dinov2_vitl14_pretrain.pth``."""
    return f"{arch}_pretrain.pth"


_B = r"blocks\.(\d+)\."
_WB = r"(weight|bias)"
_L = r"encoder.layer.\1."
RULES = [
    rule(r"cls_token", "embeddings.cls_token"),
    rule(r"pos_embed", "embeddings.position_embeddings"),
    rule(r"mask_token", "embeddings.mask_token"),
    rule(r"register_tokens", "embeddings.register_tokens"),
    rule(r"patch_embed\.proj\." + _WB, r"embeddings.patch_embeddings.projection.\1"),
    rule(_B + r"norm([12])\." + _WB, _L + r"norm\2.\3"),
    rule(_B + r"attn\.qkv\." + _WB, _L + r"attention.q_proj.\2", _L + r"attention.k_proj.\2",
         _L + r"attention.v_proj.\2", split=True),
    rule(_B + r"attn\.proj\." + _WB, _L + r"attention.o_proj.\2"),
    rule(_B + r"ls([12])\.gamma", _L + r"layer_scale\2.lambda1"),
    rule(_B + r"mlp\.(fc[12])\." + _WB, _L + r"mlp.\2.\3"),
    rule(_B + r"mlp\.w12\." + _WB, _L + r"mlp.gate_proj.\2", _L + r"mlp.up_proj.\2", split=True),
    rule(_B + r"mlp\.w3\." + _WB, _L + r"mlp.down_proj.\2"),
    rule(r"norm\." + _WB, r"layernorm.\1"),
]


def infer(state_dict: dict, where: str) -> tuple[dict, dict]:
    """Architecture fields (the :data:`ARCHS` keys plus ``mlp_ratio``) and the key each was read from."""
    cls = need(state_dict, "cls_token", where)
    width = int(cls.shape[-1])
    patch = int(need(state_dict, "patch_embed.proj.weight", where).shape[-1])
    n_pos = int(need(state_dict, "pos_embed", where).shape[1]) - 1
    depth = count_indexed(state_dict, "blocks.")
    swiglu = "blocks.0.mlp.w12.weight" in state_dict
    hidden = 0 if swiglu else int(need(state_dict, "blocks.0.mlp.fc1.weight", where).shape[0])
    regs = state_dict.get("register_tokens")
    fields = {"hidden_size": width, "num_hidden_layers": depth, "num_attention_heads": max(1, width // 64),
              "patch_size": patch, "image_size": int(round(math.sqrt(n_pos))) * patch, "use_swiglu_ffn": swiglu,
              "num_register_tokens": int(regs.shape[1]) if regs is not None else 0,
              "mlp_ratio": 4 if swiglu or hidden % width else hidden // width}
    source = {"hidden_size": "cls_token", "num_hidden_layers": f"blocks.{depth - 1}",
              "num_attention_heads": "cls_token", "patch_size": "patch_embed.proj.weight", "image_size": "pos_embed",
              "use_swiglu_ffn": "blocks.0.mlp", "num_register_tokens": "register_tokens"}
    return fields, source


def build(converted: dict, source_of: dict, fields: dict, where: str):
    """A ``Dinov2Model`` / ``Dinov2WithRegistersModel`` holding ``converted``, float32."""
    import torch

    common = dict(hidden_size=fields["hidden_size"], num_hidden_layers=fields["num_hidden_layers"],
                  num_attention_heads=fields["num_attention_heads"], patch_size=fields["patch_size"],
                  image_size=fields["image_size"], use_swiglu_ffn=fields["use_swiglu_ffn"],
                  mlp_ratio=fields["mlp_ratio"], layer_norm_eps=1e-6, qkv_bias=True)
    if fields["num_register_tokens"]:
        from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
            num_register_tokens=fields["num_register_tokens"], **common))
    else:
        from transformers import Dinov2Config, Dinov2Model

        model = Dinov2Model(Dinov2Config(**common))
    converted = {k: v.to(torch.float32) for k, v in converted.items()}
    check_against(model, converted, source_of, where)
    model.load_state_dict(converted, strict=True)
    return model.eval()


def _hub_interpolate_pos_encoding(self, embeddings, height: int, width: int):
    """The hub ``DinoVisionTransformer.interpolate_pos_encoding``, on transformers' embeddings module.

    Same arithmetic as the hub code: float32 bicubic, ``scale_factor=(n + offset) / M`` when the offset is set
    (else ``size=n``), antialiasing as the release was built; returned in the position embeddings' dtype.
    """
    import torch
    from torch import nn

    pos = self.position_embeddings
    n_pos = pos.shape[1] - 1
    if embeddings.shape[1] - 1 == n_pos and height == width:
        return pos
    patch_h, patch_w = self.patch_embeddings.patch_size
    h0, w0 = height // patch_h, width // patch_w
    grid = int(math.sqrt(n_pos))
    offset, antialias = self._objalign_hub_interpolation
    kwargs = {"scale_factor": ((h0 + offset) / grid, (w0 + offset) / grid)} if offset else {"size": (h0, w0)}
    dim = embeddings.shape[-1]
    full = pos.float()
    patch = nn.functional.interpolate(full[:, 1:].reshape(1, grid, grid, dim).permute(0, 3, 1, 2), mode="bicubic",
                                      antialias=antialias, **kwargs)
    patch = patch.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((full[:, :1], patch), dim=1).to(pos.dtype)


def use_hub_interpolation(model, num_register_tokens: int | None = None):
    """Make a transformers DINOv2 resize its position embeddings exactly as the torch-hub model does.

    transformers always passes ``size=n`` (and antialiasing only for the register models); the hub's plain
    models pass ``scale_factor=(n + 0.1) / M``, which picks slightly different bicubic sample points, so CLS
    tokens differ at 224 px (nothing is resized at 518 px). Returns ``model``, changed in place.
    """
    if num_register_tokens is None:
        num_register_tokens = int(getattr(model.config, "num_register_tokens", 0) or 0)
    embeddings = model.embeddings
    embeddings._objalign_hub_interpolation = HUB_INTERPOLATION[4 if num_register_tokens else 0]
    embeddings.interpolate_pos_encoding = types.MethodType(_hub_interpolate_pos_encoding, embeddings)
    return model
