"""What every encoder provides: its output width, its own preprocessing, and a cache key.

Vision encoders take crops already rendered at their input size (uint8, ``(B, H, W, 3)``) and do their own
normalisation; text encoders take strings. Both return float32 numpy arrays ``(B, dim)``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import asdict, dataclass

import numpy as np

from objalign.encoders.layers import POOLINGS, check_pooling, no_layers_error, pool_tokens  # noqa: F401  (re-exported)
from objalign.errors import MissingDependencyError, ObjalignError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


RESIZE_POLICIES = ("squash", "center-crop", "letterbox", "torchvision")
RESAMPLES = ("bicubic", "bilinear", "nearest")


@dataclass(frozen=True)
class Preprocess:
    """An encoder's input contract (part of the embedding cache key).

    The crop window decided by the crop stage is turned into the encoder's input in two steps that are pure
    window arithmetic (so no pixel is resampled twice): ``resize`` makes the window square and ``crop_pct``
    keeps its central fraction, then the window is resized to ``size x size`` with ``resample``.
    """

    size: int = 224  #: square input side in pixels
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resample: str = "bicubic"  #: interpolation used to resize the crop
    #: ``squash`` (resize the window as is), ``center-crop`` (square on the shorter side, as torchvision's
    #: Resize + CenterCrop), ``letterbox`` (square on the longer side, padded with the fill colour),
    #: ``torchvision`` (two steps exactly as torchvision's ``Resize(round(size / crop_pct))`` + ``CenterCrop(size)``
    #: on the crop: the window at its own resolution, shorter side resized with PIL, then the centre cut out;
    #: uint8-identical to the DINOv2 repository's eval transform, see :func:`objalign.crops.render.torchvision_eval`)
    resize: str = "squash"
    #: fraction of the (squared) window kept around its centre (timm's ``crop_pct``: 224/256 = 0.875 for
    #: resize-256-then-crop-224)
    crop_pct: float = 1.0

    def __post_init__(self):
        if self.resize not in RESIZE_POLICIES:
            raise ObjalignError(f"preprocess resize={self.resize!r}: expected one of {', '.join(RESIZE_POLICIES)}")
        if self.resample not in RESAMPLES:
            raise ObjalignError(f"preprocess resample={self.resample!r}: expected one of {', '.join(RESAMPLES)}")
        if not 0.0 < float(self.crop_pct) <= 1.0:
            raise ObjalignError(f"preprocess crop_pct={self.crop_pct!r}: expected a fraction in (0, 1]")
        if int(self.size) < 1:
            raise ObjalignError(f"preprocess size={self.size!r}: expected a positive number of pixels")

    def window(self, x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
        """The window actually resized to the input: ``(x0, y0, x1, y1)`` after the resize policy and
        ``crop_pct`` (integer pixels, centred on the original window, at least 1 pixel wide and high)."""
        w, h = x1 - x0, y1 - y0
        if self.resize == "torchvision":  # the whole window; the crop happens after the resize
            return int(x0), int(y0), int(x1), int(y1)
        if self.resize == "center-crop":
            w = h = min(w, h)
        elif self.resize == "letterbox":
            w = h = max(w, h)
        if self.resize == "squash" and self.crop_pct == 1.0:
            return int(x0), int(y0), int(x1), int(y1)
        w, h = max(1, int(round(w * self.crop_pct))), max(1, int(round(h * self.crop_pct)))
        # centre in doubled coordinates so that integer windows stay exactly centred when they can be
        nx0 = (x0 + x1 - w) // 2
        ny0 = (y0 + y1 - h) // 2
        return int(nx0), int(ny0), int(nx0 + w), int(ny0 + h)


def resample_name(value) -> str:
    """A PIL / torchvision / timm interpolation (int code, enum or string) -> ``bicubic|bilinear|nearest``."""
    text = str(getattr(value, "name", value)).lower()
    codes = {"0": "nearest", "2": "bilinear", "3": "bicubic", "1": "bicubic"}  # 1 = LANCZOS -> bicubic
    if text in codes:
        return codes[text]
    for name in RESAMPLES:
        if name in text:
            return name
    return "bicubic"


def optional_import(module: str, extra: str, package: str):
    """Import an optional dependency or raise :class:`MissingDependencyError` with the install line.

    Also catches the ``RuntimeError`` a torchvision built for another torch raises at import time (open_clip
    and timm import torchvision), which otherwise surfaces as an obscure operator error.
    """


    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"this encoder needs '{package}', which is not installed ({exc.name or module} missing): "
            f"pip install 'objalign[{extra}]' (or pip install {package})") from None
    except (RuntimeError, AttributeError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MissingDependencyError(
            f"'{package}' is installed but fails to import ({type(exc).__name__}: {first}); usually torchvision "
            "was built for another torch: install the torchvision that matches your torch "
            "(pip install torchvision==<matching version>) and retry") from None


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

        crops = np.ascontiguousarray(crops)
        x = torch.from_numpy(crops if crops.flags.writeable else crops.copy())
        if self.device.startswith("cuda"):  # uint8 crosses the bus (4x less than float), asynchronously
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float()
        scale = 255.0 * torch.tensor(self.preprocess.std, device=x.device).view(1, 3, 1, 1)
        shift = 255.0 * torch.tensor(self.preprocess.mean, device=x.device).view(1, 3, 1, 1)
        return ((x - shift) / scale).to(self.device)

    def encode(self, crops: np.ndarray) -> np.ndarray:
        """Embed crops ``(B, H, W, 3)`` uint8 -> ``(B, dim)`` float32."""
        return self.encode_tensor(self.to_tensor(crops))

    def encode_tensor(self, pixel_values) -> np.ndarray:
        """Embed a normalised ``(B, 3, H, W)`` tensor -> ``(B, dim)`` float32 (the model's forward alone)."""
        return self._run(self._forward, pixel_values)

    def _run(self, fn, *args) -> np.ndarray:
        """``fn(*args)`` without autograd, under autocast for a reduced dtype -> float32 numpy."""
        import torch

        with torch.inference_mode():
            if self.dtype != torch.float32:
                with torch.autocast(device_type=self.device.split(":")[0], dtype=self.dtype):
                    out = fn(*args)
            else:
                out = fn(*args)
        return out.float().cpu().numpy()

    def _forward(self, pixel_values):  # pragma: no cover - abstract
        raise NotImplementedError

    #: whether :meth:`encode_layers` works (the model exposes its hidden states)
    supports_layers: bool = False

    @classmethod
    def layer_count(cls, **kwargs) -> int | None:
        """The number of blocks of the model these constructor arguments load, known without loading it (None:
        known only once loaded); lets a bad ``layers`` fail before any model loads."""
        return None

    @property
    def n_layers(self) -> int:
        """Number of blocks (layers ``1..n_layers``; ``0`` is the embedding output)."""

        raise no_layers_error(self.name, "vision")

    def encode_layers(self, crops: np.ndarray, layers: list[int]) -> np.ndarray:
        """Embed crops ``(B, S, S, 3)`` uint8 at each of ``layers`` (positive numbers, see
        :mod:`objalign.encoders.layers`) in one forward pass -> ``(B, len(layers), dim)`` float32."""

        if not self.supports_layers:
            raise no_layers_error(self.name, "vision")
        return self._run(self._forward_layers, self.to_tensor(crops), list(layers))

    def _forward_layers(self, pixel_values, layers: list[int]):  # pragma: no cover - abstract
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

    #: whether :meth:`encode_layers` works (the model exposes its hidden states)
    supports_layers: bool = False

    @classmethod
    def layer_count(cls, **kwargs) -> int | None:
        """As :meth:`VisionEncoder.layer_count`."""
        return None

    @property
    def n_layers(self) -> int:
        """Number of blocks (layers ``1..n_layers``; ``0`` is the embedding output)."""

        raise no_layers_error(self.name, "text")

    def encode_layers(self, texts: list[str], layers: list[int]) -> np.ndarray:
        """``n`` strings at each of ``layers`` (one forward pass per batch) -> ``(n, len(layers), dim)`` float32."""

        raise no_layers_error(self.name, "text")


class TokenizedTextEncoder(TextEncoder):
    """A transformers tokenizer + model: texts are tokenised and run in batches; subclasses set ``_embed``."""

    tokenizer = None
    model = None
    device: str = "cpu"
    batch_size: int = 256
    max_length: int = 77

    def _embed(self, tok):  # pragma: no cover - abstract
        """``tok`` (BatchEncoding on the device) -> ``(B, dim)`` tensor."""
        raise NotImplementedError

    def _embed_layers(self, tok, layers: list[int]):  # pragma: no cover - abstract
        """``tok`` -> ``(B, len(layers), dim)`` tensor (see :meth:`encode_layers`)."""
        raise NotImplementedError

    def encode(self, texts: list[str]) -> np.ndarray:
        return self._batches(texts, self._embed, (0, self.dim))

    def encode_layers(self, texts: list[str], layers: list[int]) -> np.ndarray:

        if not self.supports_layers:
            raise no_layers_error(self.name, "text")
        layers = list(layers)
        return self._batches(texts, lambda tok: self._embed_layers(tok, layers), (0, len(layers), self.dim))

    def _batches(self, texts: list[str], embed, empty: tuple) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                tok = self.tokenizer(list(texts[i:i + self.batch_size]), padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(self.device)
                out.append(embed(tok).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(empty, np.float32)


