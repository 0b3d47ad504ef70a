"""DINOv2 through transformers (``facebook/dinov2-small|base|large|giant``): CLS, patch-mean or both."""

from __future__ import annotations

from .base import Preprocess, VisionEncoder, check_pooling, hub_load, pool_tokens


class HFDinov2(VisionEncoder):
    """A transformers ``Dinov2Model``.

    Parameters
    ----------
    name : str
        Hub id, e.g. ``facebook/dinov2-large`` (1024-d).
    pooling : {"cls", "mean", "cls+mean"}
    model_path : str, optional
        Local folder (``save_pretrained`` layout) used instead of the hub.
    model : transformers.Dinov2Model, optional
        An already-built model (tests build tiny random ones).
    """

    def __init__(self, name: str = "facebook/dinov2-large", pooling: str = "cls", model_path: str | None = None,
                 device: str = "cpu", dtype: str = "float32", model=None, image_size: int = 224):
        super().__init__(device, dtype)
        check_pooling(pooling)
        if model is None:
            from transformers import Dinov2Model

            model = hub_load(Dinov2Model.from_pretrained, name, model_path, "DINOv2 model")
        self.model = model.eval().to(self.device)
        self.name = name
        self.pooling = pooling
        self.revision = str(getattr(model.config, "_commit_hash", "") or "")
        width = model.config.hidden_size
        self.dim = 2 * width if pooling == "cls+mean" else width
        self.preprocess = Preprocess(size=image_size)

    def _forward(self, pixel_values):
        out = self.model(pixel_values=pixel_values.to(self.model.dtype))
        return pool_tokens(out.last_hidden_state, out.pooler_output, self.pooling)
