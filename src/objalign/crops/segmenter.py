"""The segmenter interface: box-prompted object masks, and the mask helpers every segmenter shares.

A segmenter turns one image and the COCO boxes of its objects into one binary mask per box. The crop
stage calls :meth:`Segmenter.segment` once per image (never once per object), so a segmenter with an
expensive image encoder (SAM) can encode the image once and prompt it with all of its boxes.

Masks travel between stages as COCO run-length encodings (:func:`mask_to_rle` / :func:`rle_to_mask`)
whose ``counts`` is a ``str``, so they fit in JSON and parquet.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from objalign.crops.masks import mask_iou, mask_to_rle, rle_to_mask  # re-exported: segmenters speak RLE
from objalign.errors import ObjalignError

__all__ = [
    "SegResult",
    "Segmenter",
    "check_image",
    "check_boxes",
    "clip_box_xywh",
    "finish_mask",
    "mask_to_rle",
    "rle_to_mask",
    "mask_iou",
]

#: A mask with less than this fraction of its pixels inside the prompt box is flagged as suspicious.
MIN_FRACTION_INSIDE_BOX = 0.5


@dataclass
class SegResult:
    """The segmentation of one box.

    Attributes
    ----------
    mask : numpy.ndarray of shape (H, W), dtype bool, or None
        The object mask in the frame of the whole image; ``None`` when segmentation failed.
    score : float
        The segmenter's confidence: SAM's predicted IoU, ``nan`` for segmenters without one (GrabCut).
    reason : str or None
        Why ``mask`` is ``None`` (``"empty mask"``, ``"box outside image"``, ...) or why a mask that was
        kept looks suspicious (``"mask mostly outside box"``); ``None`` when all is well.
    """

    mask: np.ndarray | None
    score: float
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """True when a mask was produced (it may still carry a warning in ``reason``)."""
        return self.mask is not None


class Segmenter(ABC):
    """Box-prompted segmenter.

    Subclasses set ``name`` and ``params`` (everything that changes the masks, for cache keys) and
    implement :meth:`segment`. ``encoder_calls`` counts how many images went through the expensive image
    encoder (0 for segmenters without one); callers and benchmarks use it to check that each image is
    encoded once however many boxes it has.
    """

    name: str = "segmenter"
    encoder_calls: int = 0

    @property
    def params(self) -> dict:
        """Settings that change the output, as a JSON-friendly dict (part of the crop cache key)."""
        return {"segmenter": self.name}

    @abstractmethod
    def segment(self, image: np.ndarray, boxes_xywh: np.ndarray) -> list[SegResult]:
        """Segment the objects in ``boxes_xywh``.

        Parameters
        ----------
        image : numpy.ndarray of shape (H, W, 3), dtype uint8
            RGB image.
        boxes_xywh : array-like of shape (k, 4)
            COCO boxes ``[x, y, w, h]`` in pixels of ``image``.

        Returns
        -------
        list of SegResult
            ``k`` results, in the order of ``boxes_xywh``. A bad box (zero area, outside the image) gives a
            result with ``mask=None`` and a ``reason``; it never raises.

        Raises
        ------
        ValueError
            If ``image`` or ``boxes_xywh`` do not have the shapes and types above.
        """

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items() if k != "segmenter")
        return f"{type(self).__name__}({args})"


# --------------------------------------------------------------------------- input checks


def check_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as a C-contiguous (H, W, 3) uint8 array or raise a one-line ``ValueError``.

    Parameters
    ----------
    image : numpy.ndarray of shape (H, W, 3), dtype uint8

    Returns
    -------
    numpy.ndarray of shape (H, W, 3), dtype uint8
    """
    if not isinstance(image, np.ndarray):
        raise ObjalignError(
            f"image must be a numpy array of shape (H, W, 3) and dtype uint8, got {type(image).__name__}; "
            "load it with numpy.asarray(PIL.Image.open(path).convert('RGB'))"
        )
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ObjalignError(
            f"image must have shape (H, W, 3) (RGB), got shape {image.shape}; "
            "convert grey or RGBA images with PIL's .convert('RGB')"
        )
    if image.dtype != np.uint8:
        raise ObjalignError(
            f"image must have dtype uint8 (0..255), got {image.dtype}; "
            "convert with numpy.clip(image, 0, 255).astype(numpy.uint8)"
        )
    return np.ascontiguousarray(image)


def check_boxes(boxes_xywh) -> np.ndarray:
    """Return ``boxes_xywh`` as a (k, 4) float64 array or raise a one-line ``ValueError``.

    Parameters
    ----------
    boxes_xywh : array-like of shape (k, 4) or (4,)
        COCO boxes ``[x, y, w, h]``; a single box of shape (4,) is accepted as k = 1.

    Returns
    -------
    numpy.ndarray of shape (k, 4), dtype float64
        Values are not checked here (non-finite or empty boxes become per-box failures later).
    """
    try:
        boxes = np.asarray(boxes_xywh, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ObjalignError(
            f"boxes_xywh must be numbers of shape (k, 4) in COCO [x, y, w, h] order, could not convert: {exc}"
        ) from None
    if boxes.ndim == 1 and boxes.shape[0] == 4:
        boxes = boxes[None, :]
    if boxes.ndim == 1 and boxes.shape[0] == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ObjalignError(
            f"boxes_xywh must have shape (k, 4) in COCO [x, y, w, h] order, got shape {boxes.shape}; "
            "stack one row per object"
        )
    return boxes


def clip_box_xywh(box_xywh: np.ndarray, height: int, width: int) -> tuple[np.ndarray | None, str | None]:
    """Clip one COCO box to the image and say why it is unusable, if it is.

    Parameters
    ----------
    box_xywh : numpy.ndarray of shape (4,)
        ``[x, y, w, h]`` in pixels.
    height, width : int
        Image size.

    Returns
    -------
    box_xyxy : numpy.ndarray of shape (4,) float64, or None
        ``[x0, y0, x1, y1]`` clipped to ``[0, width] x [0, height]``; ``None`` when the box is unusable.
    reason : str or None
        ``"box not finite"``, ``"zero-area box"`` or ``"box outside image"`` when ``box_xyxy`` is None.
    """
    x, y, w, h = (float(v) for v in box_xywh)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return None, "box not finite"
    if w <= 0 or h <= 0:
        return None, "zero-area box"
    x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return None, "box outside image"
    return np.array([x0, y0, x1, y1], dtype=np.float64), None


def finish_mask(mask: np.ndarray, box_xyxy: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """Apply the checks every segmenter shares to a fresh mask.

    Parameters
    ----------
    mask : numpy.ndarray of shape (H, W), dtype bool
    box_xyxy : numpy.ndarray of shape (4,)
        The clipped prompt box ``[x0, y0, x1, y1]``.

    Returns
    -------
    mask : numpy.ndarray of shape (H, W), dtype bool, or None
        ``None`` when the mask is empty.
    reason : str or None
        ``"empty mask"`` (mask is None), ``"mask mostly outside box"`` when less than
        :data:`MIN_FRACTION_INSIDE_BOX` of the mask lies in the box (the mask is kept), else None.
    """
    area = int(mask.sum())
    if area == 0:
        return None, "empty mask"
    x0, y0 = int(math.floor(box_xyxy[0])), int(math.floor(box_xyxy[1]))
    x1, y1 = int(math.ceil(box_xyxy[2])), int(math.ceil(box_xyxy[3]))
    inside = int(mask[y0:y1, x0:x1].sum())
    if inside < MIN_FRACTION_INSIDE_BOX * area:
        return mask, "mask mostly outside box"
    return mask, None
