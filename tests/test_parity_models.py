"""Equivalence with the original implementations: segment-anything, DINOv2's own model code, OpenAI CLIP.

Each original is built small with every parameter randomised (objalign.encoders.reference), saved as the
reference pipeline saves it (a state dict), converted by objalign's loader and compared on CPU in float32:
embeddings within 1e-5 relative, logits within 1e-4, masks equal except where |logit| < 1e-3, token ids
identical. These run in the second test environment (.ci/run, `pytest -m parity`), where torchvision imports
beside torch; elsewhere they skip naming the missing package.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import original_package

pytestmark = pytest.mark.parity

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def rel_close(got, want, rtol=1e-5):
    """max |got - want| <= rtol * max |want| (a relative bound on the whole tensor)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    err, scale = np.abs(got - want).max(), np.abs(want).max()
    assert err <= rtol * scale, f"max diff {err:.3g} > {rtol:g} x {scale:.3g}"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OBJALIGN_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------------------------------------- SAM


@pytest.fixture(scope="module")
def sam_pair(tmp_path_factory):
    original_package("segment_anything")
    from objalign.encoders import reference

    sam = reference.tiny_sam()
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(sam.state_dict(), path)
    return sam, path


@pytest.mark.parametrize("multimask", [False, True])
def test_sam_predictor_with_a_box(sam_pair, multimask):
    from segment_anything import SamPredictor

    from objalign.crops.sam import SamSegmenter

    sam, path = sam_pair
    seg = SamSegmenter(checkpoint=path, mask="best_iou" if multimask else "first")
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (157, 211, 3), dtype=np.uint8)  # odd sizes: resize rounding and padding matter
    boxes = np.array([[20.0, 30.0, 150.0, 120.0], [0.0, 0.0, 211.0, 157.0], [100.5, 40.2, 130.7, 90.9]])
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    embedding, sizes = seg.encode([image])
    rel_close(embedding.numpy(), predictor.features.numpy())
    framed = predictor.transform.apply_boxes(boxes, image.shape[:2])
    from objalign.crops.sam import boxes_to_model_frame

    np.testing.assert_allclose(boxes_to_model_frame(boxes, 157, 211, seg.longest_edge), framed, rtol=1e-6)
    with torch.no_grad():
        out = seg.model(image_embeddings=embedding, input_boxes=torch.from_numpy(framed[None].astype(np.float32)),
                        multimask_output=multimask)
    logits, scores = seg.decode(embedding, sizes[0], boxes, return_logits=True)
    masks, _ = seg.decode(embedding, sizes[0], boxes)
    for b, box in enumerate(boxes):
        ref_masks, ref_iou, ref_low = predictor.predict(box=box, multimask_output=multimask, return_logits=True)
        np.testing.assert_allclose(out.pred_masks[0, b].numpy(), ref_low, atol=1e-4)  # every mask token
        np.testing.assert_allclose(out.iou_scores[0, b].numpy(), ref_iou, atol=1e-4)
        kept = int(np.argmax(ref_iou)) if multimask else 0
        np.testing.assert_allclose(logits[b], ref_masks[kept], atol=1e-4)
        assert abs(scores[b] - ref_iou[kept]) < 1e-4
        differ = masks[b] != (ref_masks[kept] > 0)
        assert not np.any(differ & (np.abs(ref_masks[kept]) >= 1e-3))


def test_sam_segment_gives_the_predictors_mask(sam_pair):
    from segment_anything import SamPredictor

    from objalign.crops.sam import SamSegmenter

    sam, path = sam_pair
    seg = SamSegmenter(checkpoint=path, mask="first")
    image = np.random.default_rng(2).integers(0, 256, (120, 97, 3), dtype=np.uint8)
    (result,) = seg.segment(image, np.array([[10.0, 12.0, 60.0, 80.0]]))  # COCO x, y, w, h
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    ref, _, _ = predictor.predict(box=np.array([10.0, 12.0, 70.0, 92.0]), multimask_output=False, return_logits=True)
    ref = ref[0]
    got = result.mask if result.mask is not None else np.zeros(ref.shape, bool)
    assert not np.any((got != (ref > 0)) & (np.abs(ref) >= 1e-3))
    assert seg.params["mask"] == "first" and seg.params["multimask_output"] is False


# ---------------------------------------------------------------------------------------------- DINOv2


@pytest.mark.parametrize("ffn", ["mlp", "swiglufused"])
@pytest.mark.parametrize("side", [224, 518])
def test_dinov2_tokens_with_hub_interpolation(tmp_path, ffn, side):
    original_package("dinov2.models.vision_transformer")
    from objalign.checkpoints import load_original
    from objalign.encoders import reference
    from objalign.checkpoints.dinov2 import use_hub_interpolation

    model = reference.tiny_dinov2(ffn_layer=ffn)
    torch.save(model.state_dict(), tmp_path / "dinov2_tiny.pth")
    ours = use_hub_interpolation(load_original(tmp_path / "dinov2_tiny.pth", "dinov2"))
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model.forward_features(x)
        out = ours(pixel_values=x)
    rel_close(out.pooler_output.numpy(), ref["x_norm_clstoken"].numpy())
    rel_close(out.last_hidden_state[:, 1:].numpy(), ref["x_norm_patchtokens"].numpy())


def test_dinov2_transformers_interpolation_differs_at_224_only(tmp_path):
    """Why the parity setting exists: transformers' own resizing moves the CLS token at 224 px, not at 518."""
    original_package("dinov2.models.vision_transformer")
    from objalign.checkpoints import load_original
    from objalign.encoders import reference

    model = reference.tiny_dinov2()
    torch.save(model.state_dict(), tmp_path / "d.pth")
    ours = load_original(tmp_path / "d.pth", "dinov2")  # transformers' interpolation
    with torch.no_grad():
        for side, differs in ((224, True), (518, False)):
            x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(1))
            ref = model.forward_features(x)["x_norm_clstoken"]
            diff = float((ours(pixel_values=x).pooler_output - ref).abs().max())
            assert (diff > 1e-4) == differs, (side, diff)


@pytest.mark.slow
def test_dinov2_vitl14_full_size_at_224(tmp_path):
    """The released ViT-L/14 architecture (304M parameters, random weights) at 224 px with the parity setting."""
    original_package("dinov2.models.vision_transformer")
    from objalign.checkpoints import load_original
    from objalign.encoders import reference
    from objalign.checkpoints.dinov2 import use_hub_interpolation

    model = reference.dinov2_vitl14()
    path = tmp_path / "dinov2_vitl14_pretrain.pth"
    torch.save(model.state_dict(), path)
    ours = use_hub_interpolation(load_original(path, "dinov2_vitl14", use_cache=False))
    path.unlink()  # 1.2 GB: not kept for the rest of the session
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model.forward_features(x)["x_norm_clstoken"]
        out = ours(pixel_values=x).pooler_output
    rel_close(out.numpy(), ref.numpy())


def test_dinov2_encoder_with_the_hub_eval_transform(tmp_path):
    """objalign's DINOv2 encoder on a hub checkpoint with preprocess=hub gives the hub model's CLS on
    torchvision's Resize(256) + CenterCrop(224) + Normalize of the same crop."""
    original_package("dinov2.models.vision_transformer")
    tv = original_package("torchvision.transforms")
    from PIL import Image

    from objalign.encoders import reference
    from objalign.crops.render import render_input
    from objalign.encoders.hf_dinov2 import HFDinov2

    model = reference.tiny_dinov2()
    path = tmp_path / "dinov2_tiny.pth"
    torch.save(model.state_dict(), path)
    enc = HFDinov2(name="tiny", checkpoint=str(path), preprocess="hub")
    image = np.random.default_rng(3).integers(0, 256, (181, 263, 3), dtype=np.uint8)
    window = (31, 17, 190, 133)
    crop = render_input(image, window, enc.preprocess)
    got = enc.encode(crop[None])
    transform = tv.Compose([tv.Resize(256, interpolation=tv.InterpolationMode.BICUBIC), tv.CenterCrop(224),
                            tv.ToTensor(), tv.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    x = transform(Image.fromarray(image).crop(window))[None]
    with torch.no_grad():
        want = model.forward_features(x)["x_norm_clstoken"].numpy()
    rel_close(got, want)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
@pytest.mark.parametrize("size,window", [((181, 263), (31, 17, 190, 133)), ((97, 301), (0, 0, 301, 97)),
                                         ((255, 127), (-20, 40, 90, 230))])
def test_hub_eval_crops_are_uint8_identical(tmp_path, mode, size, window):
    """objalign's crop (image decoded by objalign, window rendered, then the hub transform) equals
    torchvision's transform of ``Image.open(path).convert("RGB").crop(window)`` byte for byte, on odd sizes,
    grayscale and RGBA files, and windows past the border (PIL fills those with black: fill (0, 0, 0))."""
    tv = original_package("torchvision.transforms")
    from PIL import Image

    from objalign.crops.render import render_input
    from objalign.data.images import load_rgb
    from objalign.encoders.hf_dinov2 import hub_eval_preprocess

    h, w = size
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    pixels = np.random.default_rng(h * w).integers(0, 256, (h, w, channels), dtype=np.uint8)
    path = tmp_path / f"im_{mode}.png"
    Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode).save(path)
    ours = render_input(load_rgb(path), window, hub_eval_preprocess(), fill=(0, 0, 0))
    transform = tv.Compose([tv.Resize(256, interpolation=tv.InterpolationMode.BICUBIC), tv.CenterCrop(224)])
    want = np.asarray(transform(Image.open(path).convert("RGB").crop(window)))
    assert ours.dtype == np.uint8 and ours.shape == want.shape == (224, 224, 3)
    assert np.array_equal(ours, want)


# ---------------------------------------------------------------------------------------------- CLIP

def test_clip_token_ids_identical_for_coco_names_and_templates(tmp_path):
    clip = original_package("clip")
    from objalign.checkpoints.clip import openai_tokenizer

    from objalign.encoders.reference import COCO_NAMES, coco_prompts
    from objalign.encoders.prompts import CLIP_IMAGENET_TEMPLATES

    prompts = coco_prompts()
    assert len(set(COCO_NAMES)) == 80 and len(prompts) == 80 * (2 + len(CLIP_IMAGENET_TEMPLATES))
    ref = clip.tokenize(prompts)
    tok = openai_tokenizer(cache=tmp_path / "tok")(prompts, padding="max_length", max_length=77, return_tensors="pt")
    ours = tok.input_ids.masked_fill(tok.attention_mask == 0, 0)  # OpenAI pads with 0, transformers with <eot>
    assert torch.equal(ours.to(ref.dtype), ref)


def test_clip_text_embeddings(tmp_path):
    clip = original_package("clip")
    from objalign.encoders import reference
    from objalign.encoders.hf_clip_text import HFClipText

    model = reference.tiny_clip()
    path = tmp_path / "clip_tiny.pt"
    torch.save(model.state_dict(), path)
    enc = HFClipText(name="tiny", checkpoint=str(path))
    prompts = ["a photo of a " + n + "." for n in reference.COCO_NAMES]
    got = enc.encode(prompts)
    with torch.no_grad():
        want = model.encode_text(clip.tokenize(prompts)).numpy()
    rel_close(got, want)


# ---------------------------------------------------------------------------------------------- a whole run


@pytest.mark.slow
def test_a_run_on_the_three_original_files(small_demo, tmp_path):
    """The CLI end to end with SAM, DINOv2 and CLIP given as their original files (tiny random ones here),
    the parity settings, and the reference pipeline's report names."""
    original_package("segment_anything")
    original_package("dinov2.models.vision_transformer")
    original_package("clip")
    import json
    from pathlib import Path

    from objalign.encoders import reference
    from objalign.cli import main

    files = {"sam": tmp_path / "sam_tiny.pth", "dinov2": tmp_path / "dinov2_tiny.pth", "clip": tmp_path / "clip.pt"}
    torch.save(reference.tiny_sam().state_dict(), files["sam"])
    torch.save(reference.tiny_dinov2().state_dict(), files["dinov2"])
    torch.save(reference.tiny_clip().state_dict(), files["clip"])
    out = tmp_path / "run"
    demo = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    sets = ["data.kind=coco", f"data.root={small_demo}", "crop.mode=sam", f"crop.sam_checkpoint={files['sam']}",
            "crop.sam_mask=first", "crop.fill=[0,0,0]", "embed.vision.name=facebook/dinov2-small",
            f"embed.vision.checkpoint={files['dinov2']}", "embed.vision.preprocess=hub", "embed.text.name=hf-clip:tiny",
            f"embed.text.checkpoint={files['clip']}", "report.reference_names=true", "align.cv_folds=3",
            "align.n_permutations=0", "align.n_bootstrap=0", "report.html=false"]
    assert main(["run", demo, "--out", str(out), "--no-progress"] + [a for s in sets for a in ("--set", s)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["vision_encoder"]["dim"] == 128 and rep["text_encoder"]["dim"] == 64
    assert rep["vision_encoder"]["preprocess"]["resize"] == "torchvision"
    crop = json.loads((out / "crop" / "stage.json").read_text())
    assert crop["summary"]["sources"].get("sam", 0) > 0
    assert (out / "reports" / "alignment_report.txt").is_file() and (out / "reports" / "alignment_hist.png").is_file()
