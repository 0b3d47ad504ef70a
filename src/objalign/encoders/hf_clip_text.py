"""CLIP's text tower through transformers (``openai/clip-vit-base-patch32``): projected text features."""

from __future__ import annotations

from .base import TokenizedTextEncoder, hub_load, resolve_device


class HFClipText(TokenizedTextEncoder):
    """``CLIPTextModelWithProjection``: the ``text_embeds`` output (512-d for ViT-B/32), context 77 tokens.

    Parameters
    ----------
    name : str
        Hub id such as ``openai/clip-vit-base-patch32``, or a local folder.
    model, tokenizer : optional
        Already-built objects (tests build tiny random ones).
    """

    def __init__(self, name: str = "openai/clip-vit-base-patch32", model_path: str | None = None,
                 device: str = "cpu", model=None, tokenizer=None, batch_size: int = 256):
        self.device = resolve_device(device)
        if model is None:
            from transformers import AutoTokenizer, CLIPTextModelWithProjection

            tokenizer = hub_load(AutoTokenizer.from_pretrained, name, model_path, "CLIP tokenizer")
            model = hub_load(CLIPTextModelWithProjection.from_pretrained, name, model_path, "CLIP text model")
        self.name = name
        self.model = model.eval().to(self.device)
        self.tokenizer = tokenizer
        self.dim = int(model.config.projection_dim)
        self.max_length = int(model.config.max_position_embeddings)
        self.revision = str(getattr(model.config, "_commit_hash", "") or "")
        self.batch_size = batch_size

    def _embed(self, tok):
        return self.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).text_embeds
