"""Crop modes: how each sampled object's region is decided (box, ground-truth mask, segmenters).

A mode turns one image's sampled objects into masks. ``box`` needs neither pixels nor masks; ``gt-mask``
reads the dataset's polygons/RLE; segmenter-backed modes (``grabcut``, ``sam``) look at the pixels and
are registered in :data:`objalign.crops.CROP_MODES` as they land.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .masks import segmentation_to_rle


@dataclass
class MaskDecision:
    rle: dict | None  #: full-image compressed RLE, or None for a box crop
    source: str  #: "box", "gt-mask", "grabcut", "sam", ... (what was actually used)
    note: str = ""  #: why a fallback happened ("" when the requested mode was used)
    score: float = float("nan")  #: predicted IoU for model segmenters


class BoxMode:
    """Padded box crop: no mask, the object keeps its context."""

    name = "box"
    needs_pixels = False

    def decide(self, image: np.ndarray | None, annotations: list[dict], height: int, width: int) -> list[MaskDecision]:
        return [MaskDecision(None, "box") for _ in annotations]


class GtMaskMode:
    """The dataset's own mask (COCO polygons or RLE, decoded with pycocotools); background filled."""

    name = "gt-mask"
    needs_pixels = False

    def decide(self, image: np.ndarray | None, annotations: list[dict], height: int, width: int) -> list[MaskDecision]:
        out = []
        for a in annotations:
            rle = segmentation_to_rle(a.get("segmentation"), height, width)
            if rle is None:
                out.append(MaskDecision(None, "box", "no usable ground-truth mask: box crop used"))
            else:
                out.append(MaskDecision(rle, "gt-mask"))
        return out
