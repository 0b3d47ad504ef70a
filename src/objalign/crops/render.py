"""Rendering object crops at an encoder's input size: window, background fill, resize; one image's objects at once."""

from __future__ import annotations

import numpy as np

from objalign.config import CROP_BACKGROUNDS
from objalign.crops.masks import rle_to_mask
from objalign.data.coco import box_fault


def crop_window(x: float, y: float, w: float, h: float, padding: float = 0.1, square: bool = True,
                width: int | None = None, height: int | None = None) -> tuple[int, int, int, int]:
    """The crop window ``(x0, y0, x1, y1)`` (integer pixels, may extend past the image) for a COCO box.

    ``padding`` is a fraction of the box's longer side added on every side; ``square`` grows the shorter side
    so the object keeps its aspect ratio when the crop is resized to a square input. Given the image's
    ``width`` and ``height``, the box is first clipped to the image, so the window is bounded by the image plus
    its padding whatever the box (the part past the image edge is filled when rendered); a box with nothing
    inside the image gets a one-pixel window at the clipped corner (the renderer skips it and says why).
    """
    if width is not None and height is not None:
        if not np.all(np.isfinite([x, y, w, h])):
            x = y = w = h = 0.0
        x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
        x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
        x, y, w, h = x0, y0, max(x1 - x0, 0.0), max(y1 - y0, 0.0)
    pad = padding * max(w, h)
    cx, cy = x + w / 2, y + h / 2
    hw, hh = w / 2 + pad, h / 2 + pad
    if square:
        hw = hh = max(hw, hh)
    hw, hh = max(hw, 0.5), max(hh, 0.5)
    return (int(np.floor(cx - hw)), int(np.floor(cy - hh)), int(np.ceil(cx + hw)), int(np.ceil(cy + hh)))


BACKGROUNDS = CROP_BACKGROUNDS  # crop.background (objalign.config)


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


def torchvision_eval(crop: np.ndarray, size: int, resize_size: int, resample: str = "bicubic") -> np.ndarray:
    """torchvision's ``Resize(resize_size)`` + ``CenterCrop(size)`` on a PIL image, uint8 for uint8.

    The shorter side becomes ``resize_size`` and the longer ``int(resize_size * long / short)`` (PIL resize, which
    antialiases), then the ``size x size`` centre is cut at ``round((side - size) / 2)`` (padded with zeros when
    the image is smaller), as ``torchvision.transforms.functional.resize`` / ``center_crop`` do for PIL images.

    Parameters
    ----------
    crop : (h, w, 3) uint8
    size, resize_size : int
    resample : {"bicubic", "bilinear", "nearest"}

    Returns
    -------
    (size, size, 3) uint8
    """
    from PIL import Image

    h, w = crop.shape[:2]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = resize_size, int(resize_size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    method = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[resample]
    image = Image.fromarray(crop)
    if (new_h, new_w) != (h, w):
        image = image.resize((new_w, new_h), method)
    out = np.asarray(image)
    if new_h < size or new_w < size:  # CenterCrop pads with zeros first
        padded = np.zeros((max(new_h, size), max(new_w, size), 3), np.uint8)
        top, left = (padded.shape[0] - new_h) // 2, (padded.shape[1] - new_w) // 2
        padded[top:top + new_h, left:left + new_w] = out
        out, new_h, new_w = padded, padded.shape[0], padded.shape[1]
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return np.ascontiguousarray(out[top:top + size, left:left + size])


def render_input(image: np.ndarray, window: tuple[int, int, int, int], preprocess, mask: np.ndarray | None = None,
                 fill: tuple[int, int, int] = (124, 116, 104), background: str = "fill") -> np.ndarray:
    """One crop as an encoder takes it: ``preprocess.window`` then one resize (or, for ``resize="torchvision"``,
    the window at its own resolution through :func:`torchvision_eval`). Returns ``(size, size, 3)`` uint8."""
    win = preprocess.window(*window)
    if getattr(preprocess, "resize", "") != "torchvision":
        return render_crop(image, win, preprocess.size, mask=mask, fill=fill, resample=preprocess.resample,
                           background=background)
    native = render_crop(image, win, (win[3] - win[1], win[2] - win[0]), mask=mask, fill=fill, resample="nearest",
                         background=background)
    return torchvision_eval(native, preprocess.size, int(round(preprocess.size / preprocess.crop_pct)),
                            preprocess.resample)


def groups_by_image(image_ids: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop)]`` runs of equal consecutive image ids."""
    if len(image_ids) == 0:
        return []
    cut = np.flatnonzero(np.diff(image_ids)) + 1
    starts = np.concatenate([[0], cut])
    stops = np.concatenate([cut, [len(image_ids)]])
    return list(zip(starts.tolist(), stops.tolist()))


#: A box with less than this fraction of its area inside the image is skipped (its crop would be mostly fill).
MIN_FRACTION_INSIDE_IMAGE = 0.5


def box_problem(box, height: int, width: int) -> str | None:
    """Why a COCO box ``[x, y, w, h]`` cannot be cropped from an ``height x width`` image, or ``None``.

    Non-finite, zero-area, wholly outside the image, or less than :data:`MIN_FRACTION_INSIDE_IMAGE` of its
    area inside it.
    """

    fault = box_fault(box)
    if fault is not None:
        return fault
    x, y, w, h = (float(v) for v in box)
    iw = min(x + w, width) - max(x, 0.0)
    ih = min(y + h, height) - max(y, 0.0)
    if iw <= 0 or ih <= 0:
        return f"box [{x:g}, {y:g}, {w:g}, {h:g}] lies outside the {width}x{height} image"
    inside = (iw / w) * (ih / h)
    if inside < MIN_FRACTION_INSIDE_IMAGE:
        return f"box [{x:g}, {y:g}, {w:g}, {h:g}] lies mostly outside the {width}x{height} image ({inside:.0%} inside)"
    return None


def render_rows(images, file_name: str, rows: np.ndarray, windows: np.ndarray, rles: list, boxes: np.ndarray | None,
                preprocess, fill, background: str = "fill"):
    """Decode one image once and render the crops of its instances ``rows``.

    Parameters
    ----------
    images : image source with ``load(file_name)`` and ``describe(file_name)``
    rows : (k,) int64
        Row numbers of the instances (returned back, to keep the bookkeeping in the caller).
    windows : (k, 4) int
        Crop windows ``x0 y0 x1 y1`` decided by the crop stage.
    rles : list of k dict or None
        Masks (COCO compressed RLE) or ``None`` for a box crop.
    boxes : (k, 4) float or None
        COCO boxes ``x y w h``, checked against the image (zero-area / outside -> skipped).
    preprocess : Preprocess
        The encoder's input contract (size, resize policy, ``crop_pct``, interpolation).

    Returns
    -------
    ok_rows : (m,) int64
    crops : (m, size, size, 3) uint8
    skipped : list of (row, reason)
    """
    size = preprocess.size
    where = images.describe(file_name)
    try:
        image = images.load(file_name)
    except FileNotFoundError:
        return rows[:0], np.empty((0, size, size, 3), np.uint8), [(int(r), f"image file not found: {where}")
                                                                   for r in rows]
    except Exception as exc:  # PIL raises many types for corrupt or truncated files
        reason = f"unreadable image {where}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return rows[:0], np.empty((0, size, size, 3), np.uint8), [(int(r), reason) for r in rows]
    H, W = image.shape[:2]
    out = np.empty((len(rows), size, size, 3), np.uint8)
    ok, skipped = [], []
    for j, row in enumerate(rows):
        problem = box_problem(boxes[j], H, W) if boxes is not None else None
        x0, y0, x1, y1 = (int(v) for v in windows[j])
        if problem is None and (x1 <= x0 or y1 <= y0):
            problem = f"empty crop window ({x0}, {y0}, {x1}, {y1})"
        mask = None
        if problem is None and rles[j]:
            shape = tuple(int(v) for v in rles[j]["size"])
            if shape != (H, W):  # checked before decoding: a wrong size in the dataset can be any size
                problem = f"mask size {shape} != image size {(H, W)} for {where}"
            else:
                try:
                    mask = rle_to_mask(rles[j])
                except Exception as exc:  # noqa: BLE001 - pycocotools raises ValueError, TypeError, ... for bad RLE
                    problem = f"unreadable mask ({type(exc).__name__}: {exc})"
        if problem is not None:
            skipped.append((int(row), problem))
            continue
        out[len(ok)] = render_input(image, (x0, y0, x1, y1), preprocess, mask=mask, fill=fill, background=background)
        ok.append(int(row))
    return np.asarray(ok, np.int64), out[:len(ok)], skipped


class _Squash:
    """The plainest input contract: the window resized as is to ``size x size``."""

    def __init__(self, size: int, resample: str):
        self.size, self.resample = size, resample

    def window(self, x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
        return int(x0), int(y0), int(x1), int(y1)


def render_image_group(images, file_name: str, windows: np.ndarray, rles: list, size: int, fill, resample: str,
                       background: str = "fill", boxes: np.ndarray | None = None):
    """Decode one image and render all of its crops at ``size`` (squash, no ``crop_pct``), e.g. for previews.

    ``boxes`` ``(k, 4)`` (COCO ``x y w h``), when given, are checked as :func:`render_rows` checks them.
    Returns ``(crops (k, size, size, 3) uint8 or None, reason or None)``: ``None`` and the first reason when any
    instance cannot be rendered.
    """
    rows = np.arange(len(windows), dtype=np.int64)
    ok, crops, skipped = render_rows(images, file_name, rows, np.asarray(windows), list(rles), boxes,
                                     _Squash(int(size), resample), fill, background)
    if skipped:
        return None, skipped[0][1]
    return crops, None
