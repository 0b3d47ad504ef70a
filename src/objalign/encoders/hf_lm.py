"""Language models as text encoders, ``hf-lm:<model id or folder>``: causal (GPT-2, Llama, ...) and masked (BERT,
RoBERTa, ...) models through transformers' ``AutoModel``, each layer's hidden states pooled over the prompt.

Pooling: ``mean`` (over the non-padding tokens, the default, as the Platonic Representation Hypothesis code) or
``last`` (the last non-padding token, the usual sentence vector of a causal model). Batches are padded, and the
vectors equal each input's alone: padding tokens are masked out of attention and of the pooling, and with left
padding the position ids are counted from each input's first real token (a causal model otherwise shifts every
position by the padding). A tokenizer without a pad token (GPT-2) pads with its end-of-text token.
Encoder-decoder models (T5) use their encoder.
"""

from __future__ import annotations

import inspect

from objalign.encoders.base import TokenizedTextEncoder, hub_load, resolve_device
from objalign.encoders.layers import config_layer_count
from objalign.errors import ObjalignError

LM_POOLINGS = ("mean", "last")
LM_DTYPES = ("float32", "float16", "bfloat16")


def pool_hidden(hidden, attention_mask, pooling: str):
    """``(B, T, D)`` hidden states, ``(B, T)`` mask -> ``(B, D)``: masked ``mean`` or the ``last`` token whose mask
    is 1 (right or left padding alike)."""
    import torch

    if pooling == "mean":
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (attention_mask.long() * positions).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class HFLanguageModelText(TokenizedTextEncoder):
    """A transformers language model as a text encoder, per layer.

    Parameters
    ----------
    name : str
        Hub id or local folder (``save_pretrained`` layout of the model and its tokenizer).
    pooling : {"default", "mean", "last"}
        ``default`` is ``mean``.
    model, tokenizer : optional
        Already-built objects (tests build tiny random ones); a ``*ForCausalLM`` / ``*ForMaskedLM`` is reduced
        to its base model.
    padding_side : {"left", "right"}, optional
        Overrides the tokenizer's own.
    dtype : {"float32", "float16", "bfloat16"}
        Weights' dtype (vectors come back as float32).
    """

    supports_layers = True

    def __init__(self, name: str, model_path: str | None = None, device: str = "cpu", model=None, tokenizer=None,
                 pooling: str = "default", padding_side: str | None = None, dtype: str = "float32",
                 batch_size: int = 64, max_length: int = 128):
        import torch

        pooling = "mean" if pooling == "default" else pooling
        if pooling not in LM_POOLINGS:
            raise ObjalignError(f"embed.text.pooling = {pooling!r}: expected default, mean or last for hf-lm:{name}")
        if dtype not in LM_DTYPES:
            raise ObjalignError(f"embed.text.dtype = {dtype!r}: expected one of {', '.join(LM_DTYPES)} for hf-lm")
        if padding_side not in (None, "left", "right"):
            raise ObjalignError(f"padding_side = {padding_side!r}: expected left or right")
        self.device = resolve_device(device)
        if model is None:
            from transformers import AutoModel, AutoTokenizer

            tokenizer = hub_load(AutoTokenizer.from_pretrained, name, model_path, "language-model tokenizer")
            model = hub_load(AutoModel.from_pretrained, name, model_path, "language model")
        model = getattr(model, "base_model", model)  # a model with a head -> its body
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()
        if padding_side:
            tokenizer.padding_side = padding_side
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ObjalignError(f"hf-lm:{name}: the tokenizer has neither a pad nor an end-of-text token to pad "
                                    "batches with; save the tokenizer with a pad_token")
            tokenizer.pad_token = tokenizer.eos_token
        self.model = model.to(getattr(torch, dtype)).eval().to(self.device)
        self.tokenizer = tokenizer
        self.name = f"hf-lm:{name}"
        self.pooling = pooling
        self.dtype_name = dtype
        self.revision = str(getattr(model.config, "_commit_hash", "") or "")
        self.batch_size = batch_size
        self.max_length = max_length
        self._position_ids = "position_ids" in inspect.signature(self.model.forward).parameters
        probe = self.tokenizer(["a"], return_tensors="pt").to(self.device)
        with torch.inference_mode():
            hidden = self._hidden_states(probe)
        self._n_layers = len(hidden) - 1
        self.dim = int(hidden[-1].shape[-1])

    @classmethod
    def layer_count(cls, name: str = "", model_path: str | None = None, **_) -> int | None:
        return config_layer_count(model_path or name, "text")

    def key(self) -> dict:
        return {**super().key(), "pooling": self.pooling, "dtype": self.dtype_name}

    @property
    def n_layers(self) -> int:
        return self._n_layers

    def _hidden_states(self, tok):
        """Every hidden state (embedding output first) of one padded batch, with position ids counted from each
        input's first real token when it is left-padded."""
        mask = tok["attention_mask"]
        inputs = {"input_ids": tok["input_ids"], "attention_mask": mask}
        if "token_type_ids" in tok:
            inputs["token_type_ids"] = tok["token_type_ids"]
        if self._position_ids and self.tokenizer.padding_side == "left":
            inputs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
        return self.model(**inputs, output_hidden_states=True).hidden_states

    def _embed_layers(self, tok, layers):
        import torch

        hidden = self._hidden_states(tok)
        return torch.stack([pool_hidden(hidden[k], tok["attention_mask"], self.pooling) for k in layers], dim=1)

    def _embed(self, tok):
        return self._embed_layers(tok, [self._n_layers])[:, 0]
