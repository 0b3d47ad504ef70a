"""Rendering an object crop at an encoder's input size: window, background fill, resize."""

from __future__ import annotations

import numpy as np


def crop_window(x: float, y: float, w: float, h: float, padding: float = 0.1,
                square: bool = True) -> tuple[int, int, int, int]:
    """The crop window ``(x0, y0, x1, y1)`` (integer pixels, may extend past the image) for a COCO box.

    ``padding`` is a fraction of the box's longer side added on every side; ``square`` grows the shorter side
    so the object keeps its aspect ratio when the crop is resized to a square input.
    """
    pad = padding * max(w, h)
    cx, cy = x + w / 2, y + h / 2
    hw, hh = w / 2 + pad, h / 2 + pad
    if square:
        hw = hh = max(hw, hh)
    hw, hh = max(hw, 0.5), max(hh, 0.5)
    return (int(np.floor(cx - hw)), int(np.floor(cy - hh)), int(np.ceil(cx + hw)), int(np.ceil(cy + hh)))


BACKGROUNDS = ("fill", "mean", "blur", "context")


def render_crop(image: np.ndarray, window: tuple[int, int, int, int], size: int | tuple[int, int],
                mask: np.ndarray | None = None, fill: tuple[int, int, int] = (124, 116, 104),
                resample: str = "bicubic", background: str = "fill", blur_radius: float = 8.0) -> np.ndarray:
    """Cut ``window`` out of ``image`` and resize it.

    Parameters
    ----------
    image : (H, W, 3) uint8
    window : (x0, y0, x1, y1)
        May extend past the image; the outside is filled with ``fill``.
    size : int or (height, width)
        Output size.
    mask : (H, W) bool, optional
        Pixels outside the mask are replaced according to ``background``.
    background : {"fill", "blur", "context"}
        ``fill``: the ``fill`` colour (pass the dataset's mean colour for "mean"); ``blur``: the image blurred
        with a Gaussian of ``blur_radius`` pixels; ``context``: keep the pixels (the mask is ignored).

    Returns
    -------
    (height, width, 3) uint8
    """
    from PIL import Image

    H, W = image.shape[:2]
    x0, y0, x1, y1 = window
    canvas = np.empty((y1 - y0, x1 - x0, 3), dtype=np.uint8)
    canvas[...] = np.asarray(fill, dtype=np.uint8)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if ix1 > ix0 and iy1 > iy0:
        region = image[iy0:iy1, ix0:ix1]
        if mask is not None and background != "context":
            m = mask[iy0:iy1, ix0:ix1]
            if background == "blur":
                from PIL import ImageFilter

                other = np.asarray(Image.fromarray(region).filter(ImageFilter.GaussianBlur(blur_radius)))
            else:
                other = np.asarray(fill, dtype=np.uint8)
            region = np.where(m[..., None], region, other)
        canvas[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = region
    oh, ow = (size, size) if isinstance(size, int) else size
    method = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[resample]
    return np.asarray(Image.fromarray(canvas).resize((ow, oh), method))
