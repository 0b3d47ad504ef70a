"""DINOv2 through transformers (``facebook/dinov2-small|base|large|giant``, or the torch-hub checkpoints
``dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth`` converted by :mod:`objalign.checkpoints`): CLS, patch-mean or both."""

from __future__ import annotations

import os

from objalign.checkpoints import ARCHS, arch_from_file_name, find_original, load_original
from objalign.checkpoints.dinov2 import use_hub_interpolation
from objalign.config import POS_INTERPOLATIONS, PREPROCESS_KINDS
from objalign.encoders.base import Preprocess, VisionEncoder, check_pooling, hub_load, pool_tokens
from objalign.encoders.layers import config_layer_count, normed_token_layers
from objalign.errors import ObjalignError

#: blocks of the released sizes (``facebook/dinov2-<size>``, ``dinov2_vit<k>14``), known before loading
DEPTHS = {"small": 12, "base": 12, "large": 24, "giant": 40, "vits14": 12, "vitb14": 12, "vitl14": 24, "vitg14": 40}


def dinov2_preprocess(image_size: int | None = None) -> Preprocess:
    """The ``facebook/dinov2-*`` image processor: resize the shorter side to 256, centre-crop 224, bicubic,
    ImageNet mean/std (``crop_pct = 224/256``). ``image_size`` changes the input side, keeping the ratio."""
    return Preprocess(size=int(image_size or 224), resample="bicubic", resize="center-crop", crop_pct=224 / 256)


def hub_eval_preprocess(image_size: int | None = None) -> Preprocess:
    """The DINOv2 repository's ``make_classification_eval_transform``, exactly: torchvision ``Resize(256,
    bicubic)`` + ``CenterCrop(224)`` on the crop image, ImageNet mean/std (``image_size`` keeps 224/256)."""
    return Preprocess(size=int(image_size or 224), resample="bicubic", resize="torchvision", crop_pct=224 / 256)


class HFDinov2(VisionEncoder):
    """A transformers ``Dinov2Model`` (or ``Dinov2WithRegistersModel``).

    Parameters
    ----------
    name : str
        Hub id, e.g. ``facebook/dinov2-large`` (1024-d).
    pooling : {"cls", "mean", "cls+mean"}
        ``cls`` is ``pooler_output`` (the layer-normed CLS token); ``mean`` averages the patch tokens (register
        tokens excluded); ``cls+mean`` concatenates them (``2 * hidden_size`` wide).
    model_path : str, optional
        Local folder (``save_pretrained`` layout) used instead of the hub.
    model : transformers.Dinov2Model, optional
        An already-built model (tests build tiny random ones).
    image_size : int, optional
        Input side (default 224, as DINOv2's processor).
    checkpoint : str, optional
        A torch-hub checkpoint file (``dinov2_vitl14_pretrain.pth``); its arch comes from ``name`` when that is
        an arch name (``dinov2_vitl14``), else from the file name, else from the file. With ``name`` an arch name
        and no checkpoint, the file is looked for in torch hub's cache.
    preprocess : {"default", "hub"}
        ``hub``: the DINOv2 repository's eval transform, exactly (:func:`hub_eval_preprocess`).
    pos_interpolation : {"auto", "transformers", "hub"}
        How position embeddings are resized to the patch grid; ``auto``: ``hub`` for a hub checkpoint (as the
        original model runs), ``transformers`` otherwise (see
        :func:`objalign.checkpoints.dinov2.use_hub_interpolation`).
    """

    def __init__(self, name: str = "facebook/dinov2-large", pooling: str = "cls", model_path: str | None = None,
                 device: str = "cpu", dtype: str = "float32", model=None, image_size: int | None = None,
                 checkpoint: str | None = None, preprocess: str = "default", pos_interpolation: str = "auto"):
        super().__init__(device, dtype)
        check_pooling(pooling)
        if preprocess not in PREPROCESS_KINDS:
            raise ObjalignError(f"embed.vision.preprocess = {preprocess!r}: expected one of "
                                f"{', '.join(PREPROCESS_KINDS)}")
        if pos_interpolation not in POS_INTERPOLATIONS:
            raise ObjalignError(f"embed.vision.pos_interpolation = {pos_interpolation!r}: expected one of "
                                f"{', '.join(POS_INTERPOLATIONS)}")

        revision = None
        if model is None and (checkpoint or name in ARCHS):

            checkpoint = checkpoint or find_original(name)
            arch = name if name in ARCHS else (arch_from_file_name(checkpoint) or "dinov2")
            model = load_original(checkpoint, arch)
            revision = f"{os.path.basename(os.fspath(checkpoint))}:{os.path.getsize(checkpoint)}"
        elif model is None:
            from transformers import AutoModel

            model = hub_load(AutoModel.from_pretrained, name, model_path, "DINOv2 model")
        if pos_interpolation == "hub" or (pos_interpolation == "auto" and revision is not None):

            use_hub_interpolation(model)
            revision = (revision or str(getattr(model.config, "_commit_hash", "") or "")) + "|pos=hub"
        self.model = model.eval().to(self.device)
        self.name = name
        self.pooling = pooling
        self.revision = revision if revision is not None else str(getattr(model.config, "_commit_hash", "") or "")
        width = model.config.hidden_size
        self.n_prefix = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)
        self.dim = 2 * width if pooling == "cls+mean" else width
        self.preprocess = (hub_eval_preprocess if preprocess == "hub" else dinov2_preprocess)(image_size)

    def _forward(self, pixel_values):
        out = self.model(pixel_values=pixel_values.to(self.model.dtype))
        return pool_tokens(out.last_hidden_state, out.pooler_output, self.pooling, self.n_prefix)

    supports_layers = True

    @classmethod
    def layer_count(cls, name: str = "", model_path: str | None = None, checkpoint: str | None = None,
                    **_) -> int | None:
        if model_path:
            return config_layer_count(model_path, "vision")
        tail = os.path.basename(os.fspath(checkpoint or name or "")).replace("dinov2-with-registers-", "dinov2-")
        for size, depth in DEPTHS.items():
            if tail.endswith(f"dinov2-{size}") or tail.startswith(f"dinov2_{size}"):
                return depth
        return None if checkpoint else config_layer_count(name, "vision")

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def _forward_layers(self, pixel_values, layers):
        """Each layer through the final LayerNorm, pooled as the last (:func:`normed_token_layers`)."""
        return normed_token_layers(self.model, pixel_values.to(self.model.dtype), layers, self.pooling,
                                   self.n_prefix)
