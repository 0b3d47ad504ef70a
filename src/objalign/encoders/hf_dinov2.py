"""DINOv2 through transformers (``facebook/dinov2-small|base|large|giant``): CLS, patch-mean or both."""

from __future__ import annotations

from .base import Preprocess, VisionEncoder, check_pooling, hub_load, pool_tokens


def dinov2_preprocess(image_size: int | None = None) -> Preprocess:
    """The ``facebook/dinov2-*`` image processor: resize the shorter side to 256, centre-crop 224, bicubic,
    ImageNet mean/std (``crop_pct = 224/256``). ``image_size`` changes the input side, keeping the ratio."""
    return Preprocess(size=int(image_size or 224), resample="bicubic", resize="center-crop", crop_pct=224 / 256)


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
    """

    def __init__(self, name: str = "facebook/dinov2-large", pooling: str = "cls", model_path: str | None = None,
                 device: str = "cpu", dtype: str = "float32", model=None, image_size: int | None = None):
        super().__init__(device, dtype)
        check_pooling(pooling)
        if model is None:
            from transformers import AutoModel

            model = hub_load(AutoModel.from_pretrained, name, model_path, "DINOv2 model")
        self.model = model.eval().to(self.device)
        self.name = name
        self.pooling = pooling
        self.revision = str(getattr(model.config, "_commit_hash", "") or "")
        width = model.config.hidden_size
        self.n_prefix = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)
        self.dim = 2 * width if pooling == "cls+mean" else width
        self.preprocess = dinov2_preprocess(image_size)

    def _forward(self, pixel_values):
        out = self.model(pixel_values=pixel_values.to(self.model.dtype))
        return pool_tokens(out.last_hidden_state, out.pooler_output, self.pooling, self.n_prefix)
