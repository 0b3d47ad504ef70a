"""What every encoder provides: its output width, its own preprocessing, and a cache key.

Vision encoders take crops already rendered at their input size (uint8, ``(B, H, W, 3)``) and do their own
normalisation; text encoders take strings. Both return float32 numpy arrays ``(B, dim)``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ObjalignError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """An encoder's input contract (part of the embedding cache key)."""

    size: int = 224  #: square input side in pixels
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resample: str = "bicubic"  #: interpolation used to resize the crop


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` if available, then ``mps``, else ``cpu``; a named device that is absent is an error."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ObjalignError(f"device {device!r} requested but CUDA is not available; use --device cpu or auto")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ObjalignError("device 'mps' requested but MPS is not available; use --device cpu or auto")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise ObjalignError(f"device {device!r}: expected cpu, cuda, cuda:N, mps or auto")
    return device


def resolve_dtype(dtype: str):
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ObjalignError(f"dtype {dtype!r}: expected one of {', '.join(table)}")
    return table[dtype]


def hub_load(loader, name: str, model_path: str | None, what: str, **kwargs):
    """Call ``loader(model_path or name, **kwargs)`` and turn a hub failure into one clear line."""
    source = model_path or name
    try:
        return loader(source, **kwargs)
    except OSError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
        why = "offline mode is set" if offline else "no network or the id is wrong"
        if model_path:
            raise ObjalignError(f"cannot load {what} from local path {model_path!r} ({type(exc).__name__}); "
                                "point model_path at a folder saved with save_pretrained()") from None
        raise ObjalignError(
            f"cannot load {what} {name!r} from the Hugging Face Hub ({why}). On a machine with network run "
            f"`huggingface-cli download {name}` and copy the cache (set HF_HOME to it), or save the model "
            "with save_pretrained() and pass its folder as model_path (--vision-model-path/--text-model-path)"
        ) from None


class VisionEncoder:
    """Base class for vision encoders. Subclasses set ``name``, ``dim``, ``preprocess`` and ``_forward``."""

    name: str
    dim: int
    preprocess: Preprocess
    pooling: str = "cls"
    revision: str = ""

    def __init__(self, device: str = "cpu", dtype: str = "float32"):
        self.device = resolve_device(device)
        self.dtype_name = dtype
        self.dtype = resolve_dtype(dtype)

    def key(self) -> dict:
        """Everything about this encoder that changes its output (goes into the cache key)."""
        return {"name": self.name, "revision": self.revision, "pooling": self.pooling,
                "preprocess": asdict(self.preprocess), "dtype": self.dtype_name, "dim": self.dim}

    def to_tensor(self, crops: np.ndarray):
        """``(B, H, W, 3)`` uint8 -> normalised ``(B, 3, H, W)`` float tensor on the encoder's device."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.preprocess.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocess.std, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode(self, crops: np.ndarray) -> np.ndarray:
        """Embed crops ``(B, H, W, 3)`` uint8 -> ``(B, dim)`` float32."""
        return self.encode_tensor(self.to_tensor(crops))

    def encode_tensor(self, pixel_values) -> np.ndarray:
        """Embed a normalised ``(B, 3, H, W)`` tensor -> ``(B, dim)`` float32 (the model's forward alone)."""
        import torch

        with torch.inference_mode():
            if self.dtype != torch.float32:
                with torch.autocast(device_type=self.device.split(":")[0], dtype=self.dtype):
                    out = self._forward(pixel_values)
            else:
                out = self._forward(pixel_values)
        return out.float().cpu().numpy()

    def _forward(self, pixel_values):  # pragma: no cover - abstract
        raise NotImplementedError


class TextEncoder:
    """Base class for text encoders: ``encode(list[str]) -> (n, dim)`` float32."""

    name: str
    dim: int
    revision: str = ""

    def key(self) -> dict:
        return {"name": self.name, "revision": self.revision, "dim": self.dim}

    def encode(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


POOLINGS = ("cls", "mean", "cls+mean")


def check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise ObjalignError(f"pooling {pooling!r}: expected one of {', '.join(POOLINGS)}")


def pool_tokens(last_hidden_state, pooler_output, pooling: str):
    """DINOv2-style pooling of ``(B, 1 + P, D)`` tokens: ``cls`` (layer-normed CLS), ``mean`` (patch mean),
    ``cls+mean`` (concatenation, ``2 D`` wide)."""
    import torch

    if pooling == "cls":
        return pooler_output
    patch_mean = last_hidden_state[:, 1:].mean(dim=1)
    if pooling == "mean":
        return patch_mean
    if pooling == "cls+mean":
        return torch.cat([pooler_output, patch_mean], dim=1)
    raise ObjalignError(f"pooling {pooling!r}: expected cls, mean or cls+mean")
