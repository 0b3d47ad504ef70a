"""Reading dataset images: decode a file (or a zip member) to ``(H, W, 3)`` uint8 RGB.

An image source has ``load(file_name) -> (H, W, 3) uint8`` and ``describe(file_name) -> str`` (where it was
looked for, for messages). :class:`FolderImages` reads files under a folder, :class:`ZipImages` members of a
zip archive.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Modes PIL decodes to that are not 8-bit RGB and need more than ``convert("RGB")``.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def to_rgb(im) -> np.ndarray:
    """A decoded PIL image -> ``(H, W, 3)`` uint8 RGB.

    8-bit modes (L, LA, P, RGBA, CMYK, YCbCr, ...) go through ``convert("RGB")`` (alpha dropped, CMYK
    converted); 16-bit and 32-bit grayscale are scaled by their maximum to 0..255 (not clipped, which would
    make most 16-bit images white).
    """
    if im.mode in _WIDE_MODES:
        arr = np.asarray(im, dtype=np.float64)
        if arr.ndim == 3:
            arr = arr[..., 0]
        finite = np.isfinite(arr)
        arr = np.where(finite, arr, 0.0)
        lo = min(float(arr.min()), 0.0)
        top = max(float(arr.max()) - lo, 1.0)
        arr = np.round(255.0 * (arr - lo) / top).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3)`` uint8 RGB (grayscale, CMYK, palette, 16-bit all converted).

    A truncated file raises (``OSError``) instead of being padded with grey.
    """
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return to_rgb(im)


class FolderImages:
    """Images as files under a folder: ``load(file_name) -> (H, W, 3) uint8``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def describe(self, file_name: str) -> str:
        return str(self.root / file_name)

    def load(self, file_name: str) -> np.ndarray:
        return load_rgb(self.root / file_name)


class ZipImages:
    """Images read straight from a zip archive (``images_from_zip: true``), thread- and process-safe."""

    def __init__(self, zip_path: str | Path):
        from .zipimages import ZipImageReader

        self.path = Path(zip_path)
        self.reader = ZipImageReader(zip_path)

    def describe(self, file_name: str) -> str:
        return f"{self.path}:{file_name}"

    def load(self, file_name: str) -> np.ndarray:
        with self.reader.open(file_name) as im:
            return to_rgb(im)
