"""SAM segmenter (tiny random SamModel, real transformers code path) and the shared mask helpers.

No weights and no network: the model is a randomly initialised ``SamConfig`` with a 64-pixel input.
Random weights make meaningless masks, so the tests check the plumbing against independent
computations: the standard transformers SAM pipeline, closed-form box transforms, pycocotools.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from objalign.crops.segmenter import (
    SegResult,
    check_boxes,
    clip_box_xywh,
    finish_mask,
    mask_iou,
    mask_to_rle,
    rle_to_mask,
)
from objalign.errors import ObjalignError

# --------------------------------------------------------------------------- shared mask helpers


def test_rle_round_trip_is_exact_and_json_friendly():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    masks = [
        rng.random((37, 53)) > 0.6,
        np.zeros((5, 7), bool),
        np.ones((4, 9), bool),
        np.pad(np.ones((10, 3), bool), ((2, 1), (30, 4))),
    ]
    for mask in masks:
        rle = mask_to_rle(mask)
        assert isinstance(rle["counts"], str)
        assert rle["size"] == list(mask.shape)
        rle = json.loads(json.dumps(rle))  # survives JSON
        back = rle_to_mask(rle)
        assert back.dtype == bool and back.shape == mask.shape
        np.testing.assert_array_equal(back, mask)
        # pycocotools agrees on the area of our encoding
        assert mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()}) == mask.sum()


def test_rle_to_mask_reads_uncompressed_coco_counts():
    # column-major runs: 3 zeros, 4 ones, 5 zeros on a 4x3 image
    mask = rle_to_mask({"size": [4, 3], "counts": [3, 4, 5]})
    expected = np.zeros(12, bool)
    expected[3:7] = True
    np.testing.assert_array_equal(mask, expected.reshape(3, 4).T)


def test_rle_errors_are_value_errors():
    with pytest.raises(ValueError, match="shape"):
        mask_to_rle(np.zeros((2, 3, 4), bool))
    with pytest.raises(ValueError, match="size"):
        rle_to_mask({"counts": "abc"})


def test_mask_iou_closed_form():
    a = np.zeros((20, 20), bool)
    b = np.zeros((20, 20), bool)
    a[0:10, 0:10] = True  # 100 px
    b[5:15, 5:20] = True  # 150 px, overlap 5x5 = 25
    assert mask_iou(a, b) == pytest.approx(25 / (100 + 150 - 25))
    assert mask_iou(a, a) == 1.0
    assert mask_iou(np.zeros((3, 3)), np.zeros((3, 3))) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        mask_iou(a, b[:, :10])


def test_clip_box_reasons_and_clipping():
    np.testing.assert_allclose(clip_box_xywh(np.array([-5, 2, 20, 4.5]), 10, 12)[0], [0, 2, 12, 6.5])
    assert clip_box_xywh(np.array([1, 1, 0, 5]), 10, 10) == (None, "zero-area box")
    assert clip_box_xywh(np.array([1, 1, 5, -2]), 10, 10) == (None, "zero-area box")
    assert clip_box_xywh(np.array([20, 1, 5, 5]), 10, 10) == (None, "box outside image")
    assert clip_box_xywh(np.array([-9, 1, 5, 5]), 10, 10) == (None, "box outside image")
    assert clip_box_xywh(np.array([np.nan, 1, 5, 5]), 10, 10) == (None, "box not finite")
    with pytest.raises(ValueError, match=r"shape \(k, 4\)"):
        check_boxes(np.zeros((3, 5)))
    assert check_boxes([]).shape == (0, 4)
    assert check_boxes([1, 2, 3, 4]).shape == (1, 4)


def test_finish_mask_flags_empty_and_outside_masks():
    box = np.array([2.0, 2.0, 6.0, 6.0])
    assert finish_mask(np.zeros((10, 10), bool), box) == (None, "empty mask")
    inside = np.zeros((10, 10), bool)
    inside[3:5, 3:5] = True
    mask, reason = finish_mask(inside, box)
    assert mask is inside and reason is None
    outside = inside.copy()
    outside[7:10, :] = True  # 4 px in the box, 30 outside
    mask, reason = finish_mask(outside, box)
    assert mask is outside and reason == "mask mostly outside box"


# --------------------------------------------------------------------------- tiny SAM

INPUT = 64  # model input side of the tiny SAM


def tiny_sam_config():
    from transformers import SamConfig

    return SamConfig(
        vision_config=dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=INPUT, patch_size=8,
            output_channels=32, window_size=4, global_attn_indexes=[1], num_pos_feats=16, mlp_dim=64,
        ),
        prompt_encoder_config=dict(hidden_size=32, image_size=INPUT, patch_size=8, mask_input_channels=8),
        mask_decoder_config=dict(
            hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=32,
        ),
    )


def tiny_processor():
    from transformers import SamImageProcessorPil, SamProcessor

    return SamProcessor(
        image_processor=SamImageProcessorPil(
            size={"longest_edge": INPUT}, pad_size={"height": INPUT, "width": INPUT}
        )
    )


@pytest.fixture(scope="module")
def tiny():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import SamModel

    # One thread: the tiny model gains nothing from more, and on a loaded shared machine every
    # multi-threaded op waits for a descheduled worker thread (tens of ms per op).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = SamModel(tiny_sam_config()).eval()
    # Random init leaves SAM's position tables at zero and the encoder near-constant; give every
    # parameter some signal so that masks depend on the image and the boxes.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    yield model, tiny_processor()
    torch.set_num_threads(threads)


@pytest.fixture
def seg(tiny):
    from objalign.crops.sam import SamSegmenter

    model, processor = tiny
    return SamSegmenter.from_model(model, processor)


def make_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


BOXES = np.array(
    [[5, 6, 10, 12], [20, 3, 25, 20], [0, 0, 50, 30], [33.5, 10.25, 12, 15.5], [1, 18, 30, 11], [40, 1, 9, 28],
     [12, 12, 6, 6]],
    dtype=float,
)


def count_encoder_forwards(model):
    calls = []
    handle = model.vision_encoder.register_forward_hook(lambda mod, args, out: calls.append(1))
    return calls, handle


def test_boxes_to_model_frame_closed_form_and_matches_sam_processor(tiny):
    from objalign.crops.sam import boxes_to_model_frame, resized_shape

    # 30 x 50 image, longest edge 64: scale 1.28 -> resized 38 x 64 (38.4 rounds down)
    assert resized_shape(30, 50, 64) == (38, 64)
    assert resized_shape(50, 30, 64) == (64, 38)
    assert resized_shape(480, 640, 1024) == (768, 1024)
    xyxy = np.array([[5, 6, 15, 18], [0, 0, 50, 30]], float)
    got = boxes_to_model_frame(xyxy, 30, 50, 64)
    expected = xyxy * np.array([64 / 50, 38 / 30, 64 / 50, 38 / 30])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # the transformers processor maps boxes the same way
    _, processor = tiny
    ref = processor(images=make_image(30, 50), input_boxes=[xyxy.tolist()], return_tensors="pt")["input_boxes"]
    np.testing.assert_allclose(got, ref[0].numpy(), rtol=1e-6)


def test_model_is_prompted_with_boxes_in_its_input_frame(seg, tiny):
    model, _ = tiny
    seen = []

    def grab(module, args, kwargs):
        seen.append(kwargs["input_boxes"].detach().cpu().numpy().copy())

    handle = model.prompt_encoder.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        seg.segment(make_image(30, 50), BOXES[:3])
    finally:
        handle.remove()
    assert len(seen) == 1 and seen[0].shape == (1, 3, 4)  # one batch of all three boxes
    xyxy = np.column_stack([BOXES[:3, :2], BOXES[:3, :2] + BOXES[:3, 2:]])
    np.testing.assert_allclose(seen[0][0], xyxy * [64 / 50, 38 / 30, 64 / 50, 38 / 30], rtol=1e-6)


@pytest.mark.parametrize("shape", [(30, 50), (50, 30), (64, 64), (97, 41)])
def test_masks_have_the_original_image_size_and_one_encoder_call(seg, tiny, shape):
    model, _ = tiny
    calls, handle = count_encoder_forwards(model)
    try:
        results = seg.segment(make_image(*shape), BOXES)
    finally:
        handle.remove()
    assert len(results) == len(BOXES)
    assert len(calls) == 1 and seg.encoder_calls == 1  # seven boxes, one image encoding
    for r in results:
        assert isinstance(r, SegResult)
        if r.mask is not None:
            assert r.mask.shape == shape and r.mask.dtype == bool
            assert math.isfinite(r.score)
        else:
            assert r.reason in ("empty mask", "box outside image")
    assert any(r.mask is not None for r in results)


def test_batched_boxes_equal_boxes_prompted_one_by_one(seg):
    image = make_image(45, 60, seed=3)
    batched = seg.segment(image, BOXES)
    for i, box in enumerate(BOXES):
        alone = seg.segment(image, box[None])[0]
        assert alone.reason == batched[i].reason
        assert alone.score == pytest.approx(batched[i].score, rel=1e-4, abs=1e-6)
        if alone.mask is None:
            assert batched[i].mask is None
        else:
            # identical up to float-rounding ties at the 0 threshold
            assert mask_iou(alone.mask, batched[i].mask) >= 0.999
    assert seg.encoder_calls == 1 + len(BOXES)


def test_matches_the_standard_transformers_sam_pipeline(seg, tiny):
    """Encode-once + box batch + best-IoU selection == the documented one-shot SamModel usage."""
    import torch

    model, processor = tiny
    image = make_image(41, 70, seed=5)
    xyxy = np.column_stack([BOXES[:, :2], BOXES[:, :2] + BOXES[:, 2:]])
    xyxy = np.minimum(xyxy, [70, 41, 70, 41])
    inputs = processor(images=image, input_boxes=[xyxy.tolist()], return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"].float(),
                    multimask_output=True)
    masks = processor.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])
    best = out.iou_scores[0].argmax(-1)
    results = seg.segment(image, BOXES)
    for i, r in enumerate(results):
        ref = masks[0][i, best[i]].numpy()
        assert r.score == pytest.approx(float(out.iou_scores[0, i, best[i]]), rel=1e-4, abs=1e-6)
        if r.mask is None:
            assert not ref.any()
        else:
            assert mask_iou(r.mask, ref) >= 0.999


def test_bad_boxes_give_reasons_and_skip_the_encoder(seg):
    image = make_image(30, 50)
    results = seg.segment(image, np.array([[60, 0, 5, 5], [3, 3, 0, 4], [np.inf, 1, 2, 2]]))
    assert [r.reason for r in results] == ["box outside image", "zero-area box", "box not finite"]
    assert all(r.mask is None and math.isnan(r.score) for r in results)
    assert seg.encoder_calls == 0  # nothing worth encoding
    assert seg.segment(image, np.zeros((0, 4))) == []
    mixed = seg.segment(image, np.array([[60, 0, 5, 5], [5, 6, 10, 12]]))
    assert mixed[0].reason == "box outside image" and seg.encoder_calls == 1
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\)"):
        seg.segment(image[:, :, 0], BOXES)
    with pytest.raises(ValueError, match="uint8"):
        seg.segment(image.astype(np.float32), BOXES)
    with pytest.raises(ValueError, match=r"\(k, 4\)"):
        seg.segment(image, np.zeros((2, 3)))


def test_segment_many_batches_images_through_the_encoder(seg, tiny):
    model, _ = tiny
    images = [make_image(30, 50, 1), make_image(64, 40, 2), make_image(20, 20, 3), make_image(33, 61, 4)]
    boxes = [BOXES[:3], BOXES[3:], np.array([[1, 1, 10, 10]]), np.array([[100, 100, 5, 5]])]
    one_by_one = [seg.segment(im, b) for im, b in zip(images, boxes)]
    assert seg.encoder_calls == 3  # the last image has no usable box
    seg.encoder_calls = 0
    calls, handle = count_encoder_forwards(model)
    try:
        many = seg.segment_many(images, boxes, images_per_batch=3)
    finally:
        handle.remove()
    assert len(calls) == 1 and seg.encoder_calls == 3  # three images in one forward pass
    for a_list, b_list in zip(one_by_one, many):
        assert len(a_list) == len(b_list)
        for a, b in zip(a_list, b_list):
            assert a.reason == b.reason
            if a.mask is not None:
                assert mask_iou(a.mask, b.mask) >= 0.999
    with pytest.raises(ValueError, match="one"):
        seg.segment_many(images, boxes[:2])


def test_rle_round_trip_of_sam_masks(seg):
    for r in seg.segment(make_image(30, 50), BOXES):
        if r.mask is not None:
            np.testing.assert_array_equal(rle_to_mask(json.loads(json.dumps(mask_to_rle(r.mask)))), r.mask)


def test_loads_a_saved_checkpoint_from_model_path(tiny, tmp_path):
    from objalign.crops.sam import SamSegmenter

    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = SamSegmenter("facebook/sam-vit-base", model_path=tmp_path)
    assert loaded.model_id == str(tmp_path) and loaded.longest_edge == INPUT
    image = make_image(30, 50)
    ref = SamSegmenter.from_model(model, processor).segment(image, BOXES)
    for a, b in zip(ref, loaded.segment(image, BOXES)):
        assert a.score == pytest.approx(b.score, rel=1e-5, abs=1e-7)
        assert (a.mask is None) == (b.mask is None)
        if a.mask is not None:
            np.testing.assert_array_equal(a.mask, b.mask)


def test_missing_hub_model_fails_with_one_clear_line(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from objalign.crops.sam import SamSegmenter

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ObjalignError) as err:
        SamSegmenter("facebook/sam-vit-huge", local_files_only=True)
    msg = str(err.value)
    assert "\n" not in msg
    assert "facebook/sam-vit-huge" in msg and "model_path=" in msg and "HF_HOME" in msg
    with pytest.raises(ObjalignError, match="not a SAM checkpoint folder"):
        SamSegmenter("facebook/sam-vit-huge", model_path=tmp_path / "nowhere")
    # without local_files_only, an offline machine fails at once instead of retrying downloads
    with pytest.raises(ObjalignError, match="hub is unreachable") as err:
        SamSegmenter("facebook/sam-vit-huge")
    assert "model_path=" in str(err.value)


def test_constructor_errors(tiny):
    from objalign.crops.sam import SamSegmenter

    model, processor = tiny
    with pytest.raises(ValueError, match="processor is required"):
        SamSegmenter(model)
    with pytest.raises(ValueError, match="max_boxes_per_batch"):
        SamSegmenter.from_model(model, processor, max_boxes_per_batch=0)


def test_box_chunks_do_not_change_results(tiny):
    from objalign.crops.sam import SamSegmenter

    model, processor = tiny
    image = make_image(45, 60, seed=7)
    full = SamSegmenter.from_model(model, processor).segment(image, BOXES)
    chunked_seg = SamSegmenter.from_model(model, processor, max_boxes_per_batch=3)
    chunked = chunked_seg.segment(image, BOXES)
    assert chunked_seg.encoder_calls == 1
    for a, b in zip(full, chunked):
        assert a.score == pytest.approx(b.score, rel=1e-4, abs=1e-6)
        if a.mask is not None:
            assert mask_iou(a.mask, b.mask) >= 0.999
