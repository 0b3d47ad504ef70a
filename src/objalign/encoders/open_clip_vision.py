"""open_clip image towers, ``open_clip:<arch>/<pretrained>`` (e.g. ``open_clip:ViT-B-32/laion2b_s34b_b79k``).

The output is the tower's projected image embedding (``model.encode_image``), as open_clip computes it for
zero-shot classification. The preprocessing is the model's own (``open_clip.get_model_preprocess_cfg``:
size, mean/std, interpolation, resize mode). Needs the ``open_clip`` extra (``pip install open_clip_torch``).
"""

from __future__ import annotations

from objalign.encoders.base import Preprocess, VisionEncoder, optional_import, resample_name
from objalign.errors import ObjalignError

OPEN_CLIP_EXTRA = ("open_clip", "open_clip", "open_clip_torch")


def split_open_clip_name(name: str) -> tuple[str, str | None]:
    """``"ViT-B-32/laion2b_s34b_b79k"`` -> ``("ViT-B-32", "laion2b_s34b_b79k")``; ``"ViT-B-32"`` -> ``(.., None)``.

    An ``hf-hub:org/repo`` name is kept whole (open_clip loads config and weights from that repository).
    """
    if not name or name.startswith("/") or name.endswith("/"):
        raise ObjalignError(f"open_clip model {name!r}: expected '<arch>/<pretrained>' such as "
                            "'ViT-B-32/laion2b_s34b_b79k' (see open_clip.list_pretrained())")
    if name.startswith("hf-hub:"):
        return name, None
    arch, _, pretrained = name.partition("/")
    return arch, pretrained or None


def preprocess_from_open_clip(cfg: dict, image_size: int | None = None) -> Preprocess:
    """open_clip's preprocess config (``size``, ``mean``, ``std``, ``interpolation``, ``resize_mode``) ->
    :class:`Preprocess`. open_clip resizes the shorter side and centre-crops (``resize_mode="shortest"``),
    squashes (``"squash"``) or pads the longer side (``"longest"``)."""
    size = cfg.get("size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    mode = {"shortest": "center-crop", "squash": "squash", "longest": "letterbox"}.get(
        str(cfg.get("resize_mode", "shortest")), "center-crop")
    mean = tuple(float(v) for v in cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
    std = tuple(float(v) for v in cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
    return Preprocess(size=int(image_size or size), mean=mean, std=std,
                      resample=resample_name(cfg.get("interpolation", "bicubic")), resize=mode)


def load_open_clip(name: str, model_path: str | None, device: str):
    """``(open_clip module, model, arch)``: ``model_path`` is a local checkpoint used as ``pretrained``."""
    open_clip = optional_import(*OPEN_CLIP_EXTRA)
    arch, pretrained = split_open_clip_name(name)
    try:
        model = open_clip.create_model(arch, pretrained=model_path or pretrained, device=device)
    except ObjalignError:
        raise
    except Exception as exc:  # unknown arch/tag (RuntimeError), no network (OSError and hub errors)
        raise ObjalignError(f"open_clip cannot build {name!r} ({str(exc).splitlines()[0]}); check "
                            "open_clip.list_pretrained(), or download the checkpoint on a machine with network "
                            "and pass its file as model_path") from None
    return open_clip, model.eval(), arch


class OpenClipVision(VisionEncoder):
    """An open_clip image tower.

    Parameters
    ----------
    name : str
        ``<arch>/<pretrained>`` (``open_clip.list_pretrained()``) or ``hf-hub:<org>/<repo>``.
    pooling : {"cls"}
        Only the tower's own pooled, projected embedding is offered.
    model_path : str, optional
        A local checkpoint file (used as open_clip's ``pretrained``).
    model : optional
        An already-built open_clip model (tests); then ``preprocess_cfg`` may be given too.
    """

    def __init__(self, name: str, pooling: str = "cls", model_path: str | None = None, device: str = "cpu",
                 dtype: str = "float32", model=None, preprocess_cfg: dict | None = None,
                 image_size: int | None = None):
        super().__init__(device, dtype)
        if pooling != "cls":
            raise ObjalignError(f"pooling {pooling!r} for open_clip:{name}: open_clip image towers give one "
                                "pooled, projected embedding; use pooling: cls")
        if model is None:
            open_clip, model, _ = load_open_clip(name, model_path, self.device)
            if preprocess_cfg is None and hasattr(open_clip, "get_model_preprocess_cfg"):
                preprocess_cfg = open_clip.get_model_preprocess_cfg(model)
        self.model = model.eval().to(self.device)
        self.name = f"open_clip:{name}"
        self.pooling = pooling
        self.revision = str(model_path or "")
        cfg = dict(preprocess_cfg or getattr(getattr(model, "visual", None), "preprocess_cfg", None) or {})
        if "size" not in cfg:
            cfg["size"] = getattr(getattr(model, "visual", None), "image_size", 224)
        self.preprocess = preprocess_from_open_clip(cfg, image_size)
        self.dim = int(getattr(model.visual, "output_dim"))

    def _forward(self, pixel_values):
        return self.model.encode_image(pixel_values)
