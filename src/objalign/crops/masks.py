"""Object masks: COCO polygons/RLE -> binary masks -> compact RLE strings (pycocotools)."""

from __future__ import annotations

import numpy as np

from objalign.errors import ObjalignError


def segmentation_to_rle(segmentation, height: int, width: int) -> dict | None:
    """Merge a COCO ``segmentation`` (polygons, compressed or uncompressed RLE) into one compressed RLE.

    Returns ``{"size": [h, w], "counts": str}`` or ``None`` when the segmentation is missing or empty, is an
    RLE whose ``size`` is not ``[height, width]``, or the image has 2**32 pixels or more (pycocotools' limit).
    """
    from pycocotools import mask as mask_utils

    if not segmentation or int(height) * int(width) >= 2**32:  # pycocotools counts pixels in 32 bits
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
        if [int(v) for v in rle.get("size", ())] != [int(height), int(width)]:
            return None  # an RLE of another image size: not this image's mask
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    else:
        return None
    if int(mask_utils.area(rle)) == 0:
        return None
    counts = rle["counts"]
    counts = counts.decode("ascii") if isinstance(counts, bytes) else counts
    return {"size": [int(height), int(width)], "counts": counts}


def mask_to_rle(mask: np.ndarray) -> dict:
    """Encode a binary mask as COCO compressed RLE with ``counts`` as ``str``.

    Parameters
    ----------
    mask : numpy.ndarray of shape (H, W)
        Binary mask (bool or 0/1 integers).

    Returns
    -------
    dict
        ``{"size": [H, W], "counts": str}``, JSON/parquet friendly; pycocotools reads it back after
        ``counts.encode()``, :func:`rle_to_mask` reads it directly.
    """
    from pycocotools import mask as mask_utils

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ObjalignError(f"mask must have shape (H, W), got shape {mask.shape}; pass one mask at a time")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(bool, copy=False).astype(np.uint8)))
    counts = rle["counts"]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts.decode("ascii")}


def rle_to_mask(rle: dict) -> np.ndarray:
    """Decode a COCO RLE (compressed with ``str`` or ``bytes`` counts, or uncompressed list counts).

    Parameters
    ----------
    rle : dict
        ``{"size": [H, W], "counts": str | bytes | list[int]}``.

    Returns
    -------
    numpy.ndarray of shape (H, W), dtype bool
    """
    from pycocotools import mask as mask_utils

    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ObjalignError(
            f"rle must be a dict with 'size' [H, W] and 'counts', got {type(rle).__name__} "
            f"{sorted(rle) if isinstance(rle, dict) else ''}; make it with objalign.crops.segmenter.mask_to_rle"
        )
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE (COCO iscrowd annotations)
        compressed = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        compressed = {"size": [h, w], "counts": counts}
    return mask_utils.decode(compressed).astype(bool)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two binary masks.

    Parameters
    ----------
    a, b : numpy.ndarray of shape (H, W)
        Binary masks of the same shape.

    Returns
    -------
    float
        ``|a & b| / |a | b|``; 0.0 when both masks are empty (the pycocotools convention).
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ObjalignError(f"masks must have the same shape to compare them, got {a.shape} and {b.shape}")
    union = int(np.logical_or(a, b).sum())
    if union == 0:
        return 0.0
    return int(np.logical_and(a, b).sum()) / union
