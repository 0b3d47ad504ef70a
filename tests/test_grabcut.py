"""GrabCut segmenter on synthetic scenes: flat-coloured shapes on textured, noisy backgrounds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from objalign.crops.segmenter import SegResult, mask_iou

cv2 = pytest.importorskip("cv2")

from objalign.crops.grabcut import GrabCutSegmenter  # noqa: E402


def make_scene(rng, h=160, w=200, n=3):
    """A textured noisy background with ``n`` flat-coloured shapes (circle, ellipse, triangle).

    Returns the (h, w, 3) uint8 image, the list of true (h, w) bool masks (later shapes occlude
    earlier ones) and their (n, 4) COCO boxes.
    """
    yy, xx = np.mgrid[0:h, 0:w]
    bg = np.stack([60 + 40 * np.sin(xx / 7.0 + c) + 30 * np.cos(yy / 5.0 - c) for c in range(3)], -1)
    img = np.clip(bg + rng.normal(0, 18, (h, w, 3)), 0, 255).astype(np.uint8)
    masks = []
    for i in range(n):
        m = np.zeros((h, w), np.uint8)
        cx, cy = int(rng.integers(35, w - 35)), int(rng.integers(35, h - 35))
        if i % 3 == 0:
            cv2.circle(m, (cx, cy), int(rng.integers(14, 28)), 1, -1)
        elif i % 3 == 1:
            axes = (int(rng.integers(15, 30)), int(rng.integers(8, 18)))
            cv2.ellipse(m, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        else:
            pts = np.array([[cx, cy - 25], [cx - 22, cy + 18], [cx + 24, cy + 15]], np.int32)
            cv2.fillPoly(m, [pts], 1)
        m = m.astype(bool)
        img[m] = rng.integers(0, 256, 3)
        masks = [old & ~m for old in masks] + [m]
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1])
    return img, masks, np.array(boxes, float)


def box_mask(shape, box):
    m = np.zeros(shape, bool)
    x, y, w, h = (int(v) for v in box)
    m[y:y + h, x:x + w] = True
    return m


def test_grabcut_recovers_flat_shapes_on_textured_backgrounds():
    rng = np.random.default_rng(0)
    seg = GrabCutSegmenter()
    ious, box_ious = [], []
    for _ in range(8):
        img, masks, boxes = make_scene(rng)
        results = seg.segment(img, boxes)
        assert len(results) == len(boxes)
        for r, m, b in zip(results, masks, boxes):
            assert isinstance(r, SegResult) and math.isnan(r.score)
            ious.append(mask_iou(r.mask, m) if r.mask is not None else 0.0)
            box_ious.append(mask_iou(box_mask(m.shape, b), m))
    # measured 0.947 (24 objects, seed 0; 0.98-0.998 on seeds 1-3): hold 0.85
    assert np.mean(ious) >= 0.85
    # and clearly better than using the box itself as the mask (circles ~0.79, triangles ~0.5)
    assert np.mean(ious) >= np.mean(box_ious) + 0.15
    assert seg.encoder_calls == 0


def test_grabcut_masks_stay_in_the_image_frame_and_inside_the_box():
    rng = np.random.default_rng(4)
    img, masks, boxes = make_scene(rng, h=120, w=150, n=2)
    for r, b in zip(GrabCutSegmenter(iterations=3).segment(img, boxes), boxes):
        assert r.mask.shape == img.shape[:2] and r.mask.dtype == bool
        assert not (r.mask & ~box_mask(r.mask.shape, b)).any()  # GC_INIT_WITH_RECT: outside is background


def test_grabcut_is_deterministic_and_order_independent():
    img, _, boxes = make_scene(np.random.default_rng(1))
    seg = GrabCutSegmenter()
    a = seg.segment(img, boxes)
    b = seg.segment(img, boxes[::-1])[::-1]
    for ra, rb in zip(a, b):
        np.testing.assert_array_equal(ra.mask, rb.mask)


def test_bad_boxes_give_none_with_reasons_not_exceptions():
    img, _, boxes = make_scene(np.random.default_rng(2), h=80, w=100, n=1)
    bad = np.array([[500, 10, 20, 20], [10, 10, 0, 5], [10, 10, 5, -3], [np.nan, 0, 4, 4], [-50, -50, 10, 10],
                    [10, 10, 1, 30]])
    results = GrabCutSegmenter().segment(img, np.vstack([bad, boxes]))
    reasons = [r.reason for r in results[:-1]]
    assert reasons[:5] == ["box outside image", "zero-area box", "zero-area box", "box not finite",
                           "box outside image"]
    assert reasons[5].startswith("box too small")
    assert all(r.mask is None for r in results[:-1])
    assert results[-1].mask is not None  # the good box still works


def test_box_covering_the_whole_image_still_segments_with_a_warning():
    h, w = 60, 80
    img = np.full((h, w, 3), 30, np.uint8)
    img += np.random.default_rng(0).integers(0, 20, (h, w, 3), dtype=np.uint8)
    img[15:45, 20:60] = (230, 40, 40)
    (r,) = GrabCutSegmenter().segment(img, np.array([[0, 0, w, h]]))
    assert r.reason == "no background around box"
    truth = np.zeros((h, w), bool)
    truth[15:45, 20:60] = True
    assert mask_iou(r.mask, truth) >= 0.9


def test_empty_mask_is_reported():
    # Inside and outside the box look the same: GrabCut puts every pixel in the background.
    flat = np.full((50, 50, 3), 128, np.uint8)
    stripes = np.zeros((60, 60, 3), np.uint8)
    stripes[::2] = 255
    for img in (flat, stripes):
        (r,) = GrabCutSegmenter().segment(img, np.array([[10, 10, 20, 20]]))
        assert r.mask is None and r.reason == "empty mask"


def test_input_and_parameter_errors():
    seg = GrabCutSegmenter()
    img = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\)"):
        seg.segment(np.zeros((10, 10), np.uint8), [[1, 1, 3, 3]])
    with pytest.raises(ValueError, match="uint8"):
        seg.segment(img.astype(float), [[1, 1, 3, 3]])
    with pytest.raises(ValueError, match=r"\(k, 4\)"):
        seg.segment(img, [[1, 1, 3]])
    assert seg.segment(img, np.zeros((0, 4))) == []
    with pytest.raises(ValueError, match="iterations"):
        GrabCutSegmenter(iterations=0)
    with pytest.raises(ValueError, match="margin"):
        GrabCutSegmenter(margin=-1)
    assert GrabCutSegmenter(iterations=2).params["iterations"] == 2


def test_grabcut_on_the_demo_dataset_beats_the_box(tmp_path):
    """The lead's generated demo dataset (shapes on flat/gradient/noise/stripe JPEG backgrounds)."""
    import json

    from PIL import Image
    from pycocotools import mask as mask_utils

    demo = pytest.importorskip("objalign.data.demo")
    ann_path = demo.make_demo_dataset(tmp_path / "demo", seed=0, n_images=16)
    coco = json.loads(ann_path.read_text())
    by_image = {}
    for a in coco["annotations"]:
        if not a.get("iscrowd", 0):
            by_image.setdefault(a["image_id"], []).append(a)
    seg = GrabCutSegmenter()
    ious, box_ious = [], []
    for im in coco["images"]:
        anns = by_image.get(im["id"], [])
        if not anns:
            continue
        path = ann_path.parent / "images" / im["file_name"]
        if not path.exists():
            path = ann_path.parent / im["file_name"]
        image = np.asarray(Image.open(path).convert("RGB"))
        h, w = image.shape[:2]
        for a, r in zip(anns, seg.segment(image, np.array([a["bbox"] for a in anns]))):
            segm = a["segmentation"]
            if isinstance(segm, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
            elif isinstance(segm["counts"], list):
                rle = mask_utils.frPyObjects(segm, h, w)
            else:
                rle = segm
            truth = mask_utils.decode(rle).astype(bool)
            ious.append(mask_iou(r.mask, truth) if r.mask is not None else 0.0)
            box_ious.append(mask_iou(box_mask(truth.shape, np.round(a["bbox"])), truth))
    assert len(ious) >= 40
    # measured 0.946 over 70 objects (box-as-mask: 0.566): hold 0.85
    assert np.mean(ious) >= 0.85
    assert np.mean(ious) >= np.mean(box_ious) + 0.2
