"""Object masks: COCO polygons/RLE -> binary masks -> compact RLE strings (pycocotools)."""

from __future__ import annotations

import numpy as np


def segmentation_to_rle(segmentation, height: int, width: int) -> dict | None:
    """Merge a COCO ``segmentation`` (polygons, compressed or uncompressed RLE) into one compressed RLE.

    Returns ``{"size": [h, w], "counts": str}`` or ``None`` when the segmentation is missing or empty.
    """
    from pycocotools import mask as mask_utils

    if not segmentation:
        return None
    if isinstance(segmentation, list):
        polys = [p for p in segmentation if isinstance(p, list) and len(p) >= 6]
        if not polys:
            return None
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict):
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    else:
        return None
    if int(mask_utils.area(rle)) == 0:
        return None
    counts = rle["counts"]
    return {"size": [int(height), int(width)], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def mask_to_rle(mask: np.ndarray) -> dict:
    """Encode an ``(H, W)`` boolean mask as compressed RLE with ``counts`` as a string."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict) -> np.ndarray:
    """Decode compressed RLE (``counts`` as str or bytes) to an ``(H, W)`` boolean mask."""
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    return mask_utils.decode({"size": list(rle["size"]),
                              "counts": counts.encode("ascii") if isinstance(counts, str) else counts}).astype(bool)
