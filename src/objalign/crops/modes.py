"""Crop modes: how each sampled object's region is decided (box, ground-truth mask, segmenters).

A mode turns one image's sampled objects into masks. ``box`` needs neither pixels nor masks; ``gt-mask``
reads the dataset's polygons/RLE; segmenter-backed modes (``grabcut``, ``sam``) look at the pixels and
are registered in :data:`objalign.crops.CROP_MODES` as they land.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from objalign.crops.grabcut import GrabCutSegmenter
from objalign.crops.masks import mask_to_rle, rle_to_mask, segmentation_to_rle
from objalign.crops.sam import SamSegmenter
from objalign.crops.segmenter import mask_iou
from objalign.encoders.base import resolve_device


@dataclass
class MaskDecision:
    rle: dict | None  #: full-image compressed RLE, or None for a box crop
    source: str  #: "box", "gt-mask", "grabcut", "sam", ... (what was actually used)
    note: str = ""  #: why a fallback happened ("" when the requested mode was used)
    score: float = float("nan")  #: predicted IoU for model segmenters
    gt_iou: float = float("nan")  #: IoU with the dataset's own mask, where it has one


class BoxMode:
    """Padded box crop: no mask, the object keeps its context."""

    name = "box"
    needs_pixels = False

    def __init__(self, **_: object):
        pass

    def decide(self, image: np.ndarray | None, annotations: list[dict], height: int, width: int) -> list[MaskDecision]:
        return [MaskDecision(None, "box") for _ in annotations]


class GtMaskMode:
    """The dataset's own mask (COCO polygons or RLE, decoded with pycocotools); background filled."""

    name = "gt-mask"
    needs_pixels = False

    def __init__(self, **_: object):
        pass

    def decide(self, image: np.ndarray | None, annotations: list[dict], height: int, width: int) -> list[MaskDecision]:
        out = []
        for a in annotations:
            try:
                rle = segmentation_to_rle(a.get("segmentation"), height, width)
            except Exception as exc:  # noqa: BLE001 - pycocotools raises many types for malformed segmentations
                out.append(MaskDecision(None, "box", f"unreadable ground-truth mask ({type(exc).__name__}): "
                                                     "box crop used"))
                continue
            if rle is None:
                out.append(MaskDecision(None, "box", "no usable ground-truth mask: box crop used"))
            else:
                out.append(MaskDecision(rle, "gt-mask"))
        return out


class SegmenterMode:
    """Masks from a box-prompted segmenter (GrabCut, SAM), one ``segment`` call per image.

    Each mask is compared with the dataset's own mask where there is one (``gt_iou``). A box the segmenter
    cannot handle or a mask that comes back empty falls back to the box crop, with the reason recorded.
    """

    needs_pixels = True

    def __init__(self, segmenter):
        self.segmenter = segmenter
        self.name = segmenter.name
        self.images_seen = 0

    def decide(self, image: np.ndarray, annotations: list[dict], height: int, width: int) -> list[MaskDecision]:

        self.images_seen += 1
        boxes = np.array([a["bbox"] for a in annotations], dtype=np.float64).reshape(-1, 4)
        out = []
        for a, res in zip(annotations, self.segmenter.segment(image, boxes)):
            if res.mask is None:
                out.append(MaskDecision(None, "box", f"{self.name}: {res.reason or 'no mask'}: box crop used",
                                        res.score))
                continue
            gt = segmentation_to_rle(a.get("segmentation"), height, width)
            iou = mask_iou(res.mask, rle_to_mask(gt)) if gt else float("nan")
            note = f"{self.name}: {res.reason}" if res.reason else ""
            out.append(MaskDecision(mask_to_rle(res.mask), self.name, note, float(res.score), iou))
        return out

    def stats(self) -> dict:
        return {"encoder_calls": int(self.segmenter.encoder_calls), "distinct_images": self.images_seen,
                "segmenter": self.segmenter.params}


def grabcut_mode(iterations: int = 5, **_: object) -> SegmenterMode:
    """``grabcut``: OpenCV GrabCut initialised from the box (no weights, runs offline)."""

    return SegmenterMode(GrabCutSegmenter(iterations=iterations))


def sam_mode(sam_model: str = "facebook/sam-vit-huge", sam_model_path: str | None = None, device: str = "cpu",
             dtype: str = "float32", segmenter=None, sam_checkpoint: str | None = None, sam_mask: str = "best_iou",
             **_: object) -> SegmenterMode:
    """``sam``: Segment Anything prompted with the box; one image encoding per image (transformers SamModel).

    ``sam_checkpoint``: segment-anything's own ``.pth`` (or ``auto``) instead of ``sam_model``; ``sam_mask``:
    ``best_iou`` or ``first`` (see :mod:`objalign.crops.sam`)."""
    if segmenter is None:

        segmenter = SamSegmenter(sam_model, model_path=sam_model_path, device=resolve_device(device), dtype=dtype,
                                 checkpoint=sam_checkpoint, mask=sam_mask)
    return SegmenterMode(segmenter)
