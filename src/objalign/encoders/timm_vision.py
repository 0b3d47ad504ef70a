"""timm models, ``timm:<name>`` (e.g. ``timm:vit_small_patch14_dinov2.lvd142m``, ``timm:convnext_tiny``).

The model is built headless (``num_classes=0``) so it returns its pooled features; ``pooling="mean"`` asks
timm for average pooling over tokens / the feature map instead of the model's default (the CLS token for
ViTs). The preprocessing is the model's ``pretrained_cfg`` (input size, mean/std, interpolation,
``crop_pct``, ``crop_mode``). Needs the ``timm`` extra (``pip install timm``).
"""

from __future__ import annotations

from objalign.encoders.base import Preprocess, VisionEncoder, optional_import, resample_name
from objalign.errors import ObjalignError

TIMM_EXTRA = ("timm", "timm", "timm")


def preprocess_from_timm(data_cfg: dict, image_size: int | None = None) -> Preprocess:
    """``timm.data.resolve_data_config`` output -> :class:`Preprocess` (``crop_mode`` ``center`` -> centre
    crop, ``squash`` -> squash, ``border`` -> letterbox)."""
    size = data_cfg.get("input_size", (3, 224, 224))[-1]
    mode = {"center": "center-crop", "squash": "squash", "border": "letterbox"}.get(
        str(data_cfg.get("crop_mode", "center")), "center-crop")
    mean = tuple(float(v) for v in data_cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(float(v) for v in data_cfg.get("std", (0.229, 0.224, 0.225)))
    return Preprocess(size=int(image_size or size), mean=mean, std=std,
                      resample=resample_name(data_cfg.get("interpolation", "bicubic")), resize=mode,
                      crop_pct=min(1.0, float(data_cfg.get("crop_pct", 1.0) or 1.0)))


class TimmVision(VisionEncoder):
    """A timm model, headless.

    Parameters
    ----------
    name : str
        A timm model name, optionally with its pretrained tag (``timm.list_models(pretrained=True)``).
    pooling : {"cls", "mean"}
        ``cls``: the model's default pooling (CLS token for ViTs, average for CNNs); ``mean``: average pooling.
    model_path : str, optional
        A local weights file (``pretrained_cfg_overlay={"file": model_path}``), for machines without network.
    pretrained : bool
        ``False`` builds random weights (timings, tests).
    model : optional
        An already-built timm model (tests).
    """

    def __init__(self, name: str, pooling: str = "cls", model_path: str | None = None, device: str = "cpu",
                 dtype: str = "float32", model=None, pretrained: bool = True, image_size: int | None = None):
        super().__init__(device, dtype)
        if pooling not in ("cls", "mean"):
            raise ObjalignError(f"pooling {pooling!r} for timm:{name}: expected 'cls' (the model's own pooling) "
                                "or 'mean' (average pooling)")
        timm = optional_import(*TIMM_EXTRA)
        if model is None:
            kwargs = {"num_classes": 0}
            if pooling == "mean":
                kwargs["global_pool"] = "avg"
            if model_path:
                kwargs["pretrained_cfg_overlay"] = {"file": str(model_path)}
            try:
                model = timm.create_model(name, pretrained=pretrained, **kwargs)
            except ObjalignError:
                raise
            except Exception as exc:  # unknown name (RuntimeError), no network (OSError and hub errors)
                raise ObjalignError(f"timm cannot build {name!r} ({str(exc).splitlines()[0]}); check "
                                    "timm.list_models(), or pass a local weights file as model_path") from None
        self.model = model.eval().to(self.device)
        self.name = f"timm:{name}"
        self.pooling = pooling
        cfg = getattr(model, "pretrained_cfg", None)
        self.revision = str(model_path or (cfg.get("tag", "") if isinstance(cfg, dict) else "") or "")
        data_cfg = timm.data.resolve_data_config({}, model=model)
        self.preprocess = preprocess_from_timm(data_cfg, image_size)
        self.dim = int(getattr(model, "num_features"))

    def _forward(self, pixel_values):
        return self.model(pixel_values)
