"""Any transformers vision backbone by hub id or local folder (``hf:<model id>``): ViT, DINOv2, DeiT, BEiT,
Swin, ConvNeXt, ... loaded with ``AutoModel``; pooling ``cls`` (the model's pooled output, else the first
token), ``mean`` (patch tokens / feature map) or ``cls+mean``. Preprocessing is read from the model's image
processor when it has one, else from its config."""

from __future__ import annotations

from objalign.encoders.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocess,
    VisionEncoder,
    check_pooling,
    hub_load,
    pool_tokens,
    resample_name,
)
from objalign.encoders.layers import config_layer_count, no_layers_error, normed_token_layers


def preprocess_from_processor(proc, image_size: int | None = None) -> Preprocess:
    """A transformers image processor -> :class:`Preprocess`.

    ``size={"shortest_edge": 256}`` with ``crop_size={"height": 224}`` (resize then centre-crop) becomes
    ``size=224, resize="center-crop", crop_pct=224/256``; ``size={"height": h, "width": w}`` (a plain resize)
    becomes ``size=h, resize="squash"``.
    """
    def side(d):
        if isinstance(d, dict):
            return d.get("shortest_edge") or d.get("height") or d.get("width")
        return getattr(d, "shortest_edge", None) or getattr(d, "height", None) or d

    size = side(getattr(proc, "size", None)) or 224
    crop = side(getattr(proc, "crop_size", None)) if getattr(proc, "do_center_crop", False) else None
    sz = getattr(proc, "size", None)
    shortest = (sz.get("shortest_edge") if isinstance(sz, dict) else getattr(sz, "shortest_edge", None)) is not None
    mean = tuple(float(v) for v in (getattr(proc, "image_mean", None) or IMAGENET_MEAN))
    std = tuple(float(v) for v in (getattr(proc, "image_std", None) or IMAGENET_STD))
    resample = resample_name(getattr(proc, "resample", "bicubic"))
    if crop:
        pre = Preprocess(size=int(crop), mean=mean, std=std, resample=resample,
                         resize="center-crop" if shortest else "squash", crop_pct=min(1.0, float(crop) / float(size)))
    else:
        pre = Preprocess(size=int(size), mean=mean, std=std, resample=resample,
                         resize="center-crop" if shortest else "squash")
    if image_size:
        pre = Preprocess(size=int(image_size), mean=pre.mean, std=pre.std, resample=pre.resample, resize=pre.resize,
                         crop_pct=pre.crop_pct)
    return pre


class HFVision(VisionEncoder):
    """A transformers vision backbone (``AutoModel``).

    Parameters
    ----------
    name : str
        Hub id or local folder, e.g. ``google/vit-base-patch16-224-in21k``.
    pooling : {"cls", "mean", "cls+mean"}
    model_path : str, optional
        Local folder (``save_pretrained`` layout) used instead of the hub.
    model : transformers.PreTrainedModel, optional
        An already-built model (tests build tiny random ones).
    image_processor : optional
        Its preprocessing is used (else the one saved with the model, else the config's ``image_size`` and
        ImageNet mean/std, bicubic).
    image_size : int, optional
        Input side override.

    The output width ``dim`` is read from one forward pass on a blank image, never assumed.
    """

    def __init__(self, name: str, pooling: str = "cls", model_path: str | None = None, device: str = "cpu",
                 dtype: str = "float32", model=None, image_processor=None, image_size: int | None = None):
        super().__init__(device, dtype)
        check_pooling(pooling)
        if model is None:
            from transformers import AutoImageProcessor, AutoModel

            model = hub_load(AutoModel.from_pretrained, name, model_path, "vision model")
            if image_processor is None:
                try:
                    image_processor = AutoImageProcessor.from_pretrained(model_path or name)
                except (OSError, ValueError):  # a backbone saved without a processor: use its config
                    image_processor = None
        self.model = model.eval().to(self.device)
        self.name = name
        self.pooling = pooling
        self.revision = str(getattr(model.config, "_commit_hash", "") or "")
        cfg = getattr(model.config, "vision_config", model.config)
        if image_processor is not None:
            self.preprocess = preprocess_from_processor(image_processor, image_size)
        else:
            side = image_size or getattr(cfg, "image_size", 224)
            side = side[0] if isinstance(side, (list, tuple)) else side
            self.preprocess = Preprocess(size=int(side))
        self.n_prefix = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)
        import torch

        with torch.inference_mode():
            probe = self._forward(torch.zeros(1, 3, self.preprocess.size, self.preprocess.size, device=self.device))
        self.dim = int(probe.shape[-1])
        # per-layer vectors where the last one is the usual output: a token model whose output is its final
        # LayerNorm's (DINOv2, ViT, DeiT, ...), pooled without a learned pooler (none, or ``mean`` pooling)
        self._layers_why = None
        if not isinstance(getattr(model, "layernorm", None), torch.nn.Module):
            self._layers_why = "no final layernorm module to apply per layer"
        elif getattr(model, "pooler", None) is not None and pooling != "mean":
            self._layers_why = "its cls vector comes from a learned pooler; use pooling: mean"
        elif not hasattr(cfg, "num_hidden_layers"):
            self._layers_why = "its config has no num_hidden_layers"

    def _forward(self, pixel_values):
        out = self.model(pixel_values=pixel_values.to(self.model.dtype))
        hidden = out.last_hidden_state
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None and pooled.ndim > 2:
            pooled = pooled.flatten(1)
        return pool_tokens(hidden, pooled, self.pooling, self.n_prefix)

    supports_layers = True  # decided per model once loaded (``_layers_why``)

    @classmethod
    def layer_count(cls, name: str = "", model_path: str | None = None, **_) -> int | None:
        return config_layer_count(model_path or name, "vision")

    @property
    def n_layers(self) -> int:
        if self._layers_why:
            raise no_layers_error(self.name, "vision", self._layers_why)
        return int(getattr(self.model.config, "vision_config", self.model.config).num_hidden_layers)

    def encode_layers(self, crops, layers):
        if self._layers_why:
            raise no_layers_error(self.name, "vision", self._layers_why)
        return super().encode_layers(crops, layers)

    def _forward_layers(self, pixel_values, layers):
        """Each layer through the final LayerNorm, pooled as the last (:func:`normed_token_layers`)."""
        return normed_token_layers(self.model, pixel_values.to(self.model.dtype), layers, self.pooling,
                                   self.n_prefix)
