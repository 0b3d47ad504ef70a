"""The open_clip and timm backends against the real packages (tiny random models, each package's own forward).

They need a torchvision that imports beside torch, so they run in the second test environment (.ci/run,
`pytest -m parity`); elsewhere they skip naming the missing package. Weights go through a local file, as a user
without network passes ``model_path``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import original_package

pytestmark = pytest.mark.parity

torch = pytest.importorskip("torch")

TINY_OPEN_CLIP = {"embed_dim": 32,
                  "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def crops(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def normalise(batch, mean, std):
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    open_clip = original_package("open_clip")
    from objalign.encoders.reference import randomize

    folder = tmp_path_factory.mktemp("open_clip")
    (folder / "objalign-tiny.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(str(folder / "objalign-tiny.json"))
    model = randomize(open_clip.create_model("objalign-tiny", pretrained=None), seed=3)
    torch.save(model.state_dict(), folder / "tiny.pt")
    return open_clip, model, folder / "tiny.pt"


def test_open_clip_image_tower_is_the_packages_encode_image(tiny_open_clip):
    open_clip, model, path = tiny_open_clip
    from objalign.encoders import VISION_ENCODERS

    enc = VISION_ENCODERS.get("open_clip:objalign-tiny", model_path=str(path))
    cfg = open_clip.get_model_preprocess_cfg(model)
    assert enc.preprocess.size == 64 and enc.preprocess.resize == "center-crop" and enc.dim == 32
    assert enc.preprocess.mean == tuple(cfg["mean"]) and enc.preprocess.std == tuple(cfg["std"])
    batch = crops(3, 64)
    with torch.no_grad():
        want = model.encode_image(normalise(batch, cfg["mean"], cfg["std"])).numpy()
    np.testing.assert_allclose(enc.encode(batch), want, rtol=1e-5, atol=1e-6)


def test_open_clip_text_tower_is_the_packages_encode_text(tiny_open_clip):
    open_clip, model, path = tiny_open_clip
    from objalign.encoders import TEXT_ENCODERS

    enc = TEXT_ENCODERS.get("open_clip:objalign-tiny", model_path=str(path))
    texts = ["a photo of a dog.", "a photo of a traffic light.", "hair drier"]
    with torch.no_grad():
        want = model.encode_text(open_clip.get_tokenizer("objalign-tiny")(texts)).numpy()
    assert enc.dim == 32
    np.testing.assert_allclose(enc.encode(texts), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_timm_backend_is_the_packages_forward(tmp_path, pooling):
    timm = original_package("timm")
    from objalign.encoders.reference import randomize
    from objalign.encoders import VISION_ENCODERS

    reference = randomize(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0,
                                            global_pool="avg" if pooling == "mean" else "token"), seed=4)
    path = tmp_path / "vit_tiny.pth"
    torch.save(reference.state_dict(), path)
    enc = VISION_ENCODERS.get("timm:vit_tiny_patch16_224", pooling=pooling, model_path=str(path))
    data_cfg = timm.data.resolve_data_config({}, model=reference)
    assert enc.preprocess.size == data_cfg["input_size"][-1] == 224 and enc.dim == reference.num_features == 192
    assert enc.preprocess.crop_pct == pytest.approx(data_cfg["crop_pct"])
    batch = crops(2, 224, seed=5)
    with torch.no_grad():
        want = reference(normalise(batch, data_cfg["mean"], data_cfg["std"])).numpy()
    np.testing.assert_allclose(enc.encode(batch), want, rtol=1e-5, atol=1e-5)
