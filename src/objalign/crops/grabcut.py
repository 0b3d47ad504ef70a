"""GrabCut: a box-initialised colour-model segmenter that needs no weights (OpenCV).

Each box is segmented on its own: GrabCut runs on the box plus a margin of context around it (the
background colour model is learnt from that margin), initialised with ``cv2.GC_INIT_WITH_RECT``.
"""

from __future__ import annotations

import math

import numpy as np

from objalign.crops.segmenter import Segmenter, SegResult, check_boxes, check_image, clip_box_xywh, finish_mask
from objalign.errors import ObjalignError, require

__all__ = ["GrabCutSegmenter"]


class GrabCutSegmenter(Segmenter):
    """OpenCV GrabCut initialised from each box.

    Parameters
    ----------
    iterations : int, default 5
        GrabCut iterations (``iterCount`` of ``cv2.grabCut``).
    margin : float, default 0.5
        Context around the box that GrabCut sees, as a fraction of the box's larger side (at least
        ``min_margin_px`` pixels). Pixels in that margin seed the background model; more margin means a
        better background model and a slower run.
    min_margin_px : int, default 8
        Smallest margin in pixels, so small boxes still get background samples.
    seed : int, default 0
        Seed of OpenCV's RNG (GrabCut initialises its colour models with k-means), reset before each box
        so results do not depend on the order of boxes.

    Notes
    -----
    ``score`` is always ``nan`` (GrabCut has no confidence) and ``encoder_calls`` stays 0.
    When a box covers the image up to every border there is no background to learn from; the rectangle
    is then shrunk by one pixel on those sides and the result carries the reason
    ``"no background around box"``.
    """

    name = "grabcut"

    def __init__(self, iterations: int = 5, margin: float = 0.5, min_margin_px: int = 8, seed: int = 0):
        if not isinstance(iterations, (int, np.integer)) or iterations < 1:
            raise ObjalignError(f"iterations must be an integer >= 1, got {iterations!r}; GrabCut's default is 5")
        if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
            raise ObjalignError(f"margin must be a number >= 0 (fraction of the box side), got {margin!r}; try 0.5")
        if not isinstance(min_margin_px, (int, np.integer)) or min_margin_px < 0:
            raise ObjalignError(f"min_margin_px must be an integer >= 0, got {min_margin_px!r}; try 8")
        self.iterations = int(iterations)
        self.margin = float(margin)
        self.min_margin_px = int(min_margin_px)
        self.seed = int(seed)
        self.encoder_calls = 0

    @property
    def params(self) -> dict:
        return {
            "segmenter": self.name,
            "iterations": self.iterations,
            "margin": self.margin,
            "min_margin_px": self.min_margin_px,
            "seed": self.seed,
        }

    def segment(self, image: np.ndarray, boxes_xywh: np.ndarray) -> list[SegResult]:
        """Segment each box of ``image`` with GrabCut.

        Parameters
        ----------
        image : numpy.ndarray of shape (H, W, 3), dtype uint8
            RGB image.
        boxes_xywh : array-like of shape (k, 4)
            COCO ``[x, y, w, h]`` boxes.

        Returns
        -------
        list of SegResult
            ``k`` results in box order; masks of shape (H, W), ``score`` nan.
        """
        image = check_image(image)
        boxes = check_boxes(boxes_xywh)
        cv2 = require("cv2", "demo", "opencv-python-headless")
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        height, width = image.shape[:2]
        results = []
        for box in boxes:
            xyxy, reason = clip_box_xywh(box, height, width)
            if xyxy is None:
                results.append(SegResult(None, math.nan, reason))
                continue
            results.append(self._segment_one(cv2, bgr, xyxy))
        return results

    def _segment_one(self, cv2, bgr: np.ndarray, xyxy: np.ndarray) -> SegResult:
        """GrabCut one clipped box ``xyxy`` (4,) on the BGR image (H, W, 3)."""
        height, width = bgr.shape[:2]
        # Integer pixel rectangle covering the (possibly fractional) box.
        x0, y0 = int(math.floor(xyxy[0])), int(math.floor(xyxy[1]))
        x1, y1 = int(math.ceil(xyxy[2])), int(math.ceil(xyxy[3]))
        bw, bh = x1 - x0, y1 - y0
        if bw < 2 or bh < 2:
            return SegResult(None, math.nan, f"box too small for GrabCut ({bw}x{bh} px)")
        pad = max(int(math.ceil(self.margin * max(bw, bh))), self.min_margin_px)
        cx0, cy0 = max(x0 - pad, 0), max(y0 - pad, 0)
        cx1, cy1 = min(x1 + pad, width), min(y1 + pad, height)
        crop = np.ascontiguousarray(bgr[cy0:cy1, cx0:cx1])
        rx0, ry0, rx1, ry1 = x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0
        ch, cw = crop.shape[:2]
        reason = None
        if rx0 == 0 and ry0 == 0 and rx1 == cw and ry1 == ch:
            # No pixel outside the rectangle: GrabCut cannot learn a background model.
            reason = "no background around box"
            rx0, ry0, rx1, ry1 = 1, 1, cw - 1, ch - 1
            if rx1 - rx0 < 1 or ry1 - ry0 < 1:
                return SegResult(None, math.nan, "box too small for GrabCut (covers the whole tiny image)")
        gc_mask = np.zeros((ch, cw), np.uint8)
        bgd_model = np.zeros((1, 65), np.float64)
        fgd_model = np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(self.seed)
        try:
            cv2.grabCut(
                crop, gc_mask, (rx0, ry0, rx1 - rx0, ry1 - ry0), bgd_model, fgd_model,
                self.iterations, cv2.GC_INIT_WITH_RECT,
            )
        except cv2.error as exc:  # e.g. too few distinct colours for the colour models
            msg = " ".join(str(exc).split())[-160:]
            return SegResult(None, math.nan, f"grabcut failed: {msg}")
        fg = (gc_mask == cv2.GC_FGD) | (gc_mask == cv2.GC_PR_FGD)
        mask = np.zeros((height, width), dtype=bool)
        mask[cy0:cy1, cx0:cx1] = fg
        mask, check = finish_mask(mask, xyxy)
        return SegResult(mask, math.nan, check if mask is None else (reason or check))
