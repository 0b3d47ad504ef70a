"""``hf-lm:`` text encoders on tiny random GPT-2-like and BERT-like models with locally built tokenizers: batches
give each input's own vectors for right and left padding, per layer, with mean and last-token pooling."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from objalign.encoders.hf_lm import HFLanguageModelText  # noqa: E402

TEXTS = ["a photo of a dog.", "a cat", "a blurry photo of the traffic light in a video game."]


def gpt2_tokenizer(tmp_path):
    """A byte-level BPE tokenizer without merges (one token per character) and without a pad token, as GPT-2's."""
    chars = [chr(c) for c in range(33, 127)] + ["Ġ"]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab["<|endoftext|>"] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    return transformers.GPT2Tokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))


def tiny_gpt2(vocab_size, eos):
    torch.manual_seed(0)
    return transformers.GPT2Model(transformers.GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=3,
                                                          n_head=2, bos_token_id=eos, eos_token_id=eos))


def bert_tokenizer():
    from objalign.encoders.hf_text import minilm_path

    return transformers.BertTokenizer(str(minilm_path() / "vocab.txt"))


def tiny_bert(vocab_size):
    torch.manual_seed(0)
    return transformers.BertModel(transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                                                          num_attention_heads=2, intermediate_size=64,
                                                          max_position_embeddings=64))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    gtok = gpt2_tokenizer(tmp_path_factory.mktemp("gpt2tok"))
    btok = bert_tokenizer()
    return {"gpt2": (tiny_gpt2(len(gtok), gtok.eos_token_id), gtok, 3),
            "bert": (tiny_bert(btok.vocab_size), btok, 2)}


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_batched_equals_one_at_a_time(models, kind, side, pooling):
    model, tok, n = models[kind]
    enc = HFLanguageModelText(f"tiny-{kind}", model=model, tokenizer=tok, pooling=pooling, padding_side=side)
    assert enc.n_layers == n and enc.dim == 32 and tok.padding_side == side
    layers = list(range(n + 1))
    batched = enc.encode_layers(TEXTS, layers)
    alone = np.concatenate([enc.encode_layers([t], layers) for t in TEXTS])
    assert batched.shape == (3, n + 1, 32)
    np.testing.assert_allclose(batched, alone, atol=2e-5, rtol=0)
    np.testing.assert_allclose(enc.encode(TEXTS), batched[:, n], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_last_layer_is_the_models_last_hidden_state_pooled(models, kind):
    model, tok, n = models[kind]
    for pooling in ("mean", "last"):
        enc = HFLanguageModelText(f"tiny-{kind}", model=model, tokenizer=tok, pooling=pooling, padding_side="right")
        got = enc.encode_layers(TEXTS, [n])[:, 0]
        for i, text in enumerate(TEXTS):
            ids = tok([text], return_tensors="pt")
            with torch.no_grad():
                h = model(**ids).last_hidden_state[0]
            want = h.mean(0) if pooling == "mean" else h[-1]
            np.testing.assert_allclose(got[i], want.numpy(), atol=2e-5, rtol=0)


def test_gpt2_pads_with_eos_and_left_padding_needs_position_ids(models):
    """Without positions counted from the first real token, a left-padded causal model shifts every position:
    the check above would fail by far more than float noise."""
    model, tok, n = models["gpt2"]
    enc = HFLanguageModelText("tiny-gpt2", model=model, tokenizer=tok, pooling="last", padding_side="left")
    assert tok.pad_token == tok.eos_token == "<|endoftext|>"
    alone = np.concatenate([enc.encode_layers([t], [n]) for t in TEXTS])
    enc._position_ids = False
    naive = enc.encode_layers(TEXTS, [n])
    assert np.abs(naive - alone).max() > 1e-2


def test_registry_loads_a_saved_folder_and_keys_the_pooling(models, tmp_path):
    from objalign.encoders import TEXT_ENCODERS
    from objalign.encoders.layers import config_layer_count

    model, tok, n = models["gpt2"]
    model.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    assert config_layer_count(str(tmp_path / "lm")) == 3
    enc = TEXT_ENCODERS.get(f"hf-lm:{tmp_path / 'lm'}", pooling="last")
    assert enc.name == f"hf-lm:{tmp_path / 'lm'}" and enc.key()["pooling"] == "last" and enc.n_layers == 3
    ref = HFLanguageModelText("x", model=model, tokenizer=tok, pooling="last")
    np.testing.assert_allclose(enc.encode(TEXTS), ref.encode(TEXTS), atol=1e-6)
    assert TEXT_ENCODERS.get(f"hf-lm:{tmp_path / 'lm'}").key()["pooling"] == "mean"
    from objalign.errors import ObjalignError

    with pytest.raises(ObjalignError, match="embed.text.pooling = 'cls': expected default, mean or last"):
        HFLanguageModelText("x", model=model, tokenizer=tok, pooling="cls")

    from objalign.config import load_config
    from objalign.embed.stage import check_layers

    name = f"hf-lm:{tmp_path / 'lm'}"
    check_layers(load_config(overrides={"embed.text.name": name, "embed.text.pooling": "last",
                                        "embed.text.layers": "all", "embed.text.dtype": "bfloat16"}))
    with pytest.raises(ObjalignError, match=r"layer 4 is out of range for .*lm', which has 3 blocks"):
        check_layers(load_config(overrides={"embed.text.name": name, "embed.text.layers": [4]}))
