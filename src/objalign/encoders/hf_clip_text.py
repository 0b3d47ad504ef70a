"""CLIP's text tower through transformers (``openai/clip-vit-base-patch32``, or OpenAI's own ``ViT-B-32.pt``
converted by :mod:`objalign.checkpoints`): projected text features."""

from __future__ import annotations

import os

from objalign.checkpoints import ARCHS, arch_from_file_name, find_original, load_original
from objalign.checkpoints.clip import openai_tokenizer
from objalign.encoders.base import TokenizedTextEncoder, hub_load, resolve_device
from objalign.errors import ObjalignError


class HFClipText(TokenizedTextEncoder):
    """``CLIPTextModelWithProjection``: the ``text_embeds`` output (512-d for ViT-B/32), context 77 tokens.

    Parameters
    ----------
    name : str
        Hub id such as ``openai/clip-vit-base-patch32``, or a local folder.
    model, tokenizer : optional
        Already-built objects (tests build tiny random ones).
    checkpoint : str, optional
        OpenAI's ``ViT-B-32.pt`` (official SHA-256 only) or a saved state dict; with ``name`` an arch name
        (``clip_vit_b32``) and no checkpoint it is looked for in ``~/.cache/clip``. The tokenizer is then built
        from OpenAI's BPE vocabulary (:func:`objalign.checkpoints.clip.openai_tokenizer`), offline.
    dtype : {"float32", "float16", "auto"}
        ``float16`` runs the model in half precision; ``auto`` does what OpenAI's ``clip.load`` does: float16 on
        CUDA, float32 elsewhere.
    """

    def __init__(self, name: str = "openai/clip-vit-base-patch32", model_path: str | None = None,
                 device: str = "cpu", model=None, tokenizer=None, batch_size: int = 256,
                 checkpoint: str | None = None, dtype: str = "float32"):

        self.device = resolve_device(device)
        if dtype not in ("float32", "float16", "auto"):
            raise ObjalignError(f"embed.text.dtype = {dtype!r}: expected float32, float16 or auto")
        if dtype == "auto":
            dtype = "float16" if self.device.startswith("cuda") else "float32"
        revision = None
        if model is None and (checkpoint or name in ARCHS):

            checkpoint = checkpoint or find_original(name)
            model = load_original(checkpoint, name if name in ARCHS else (arch_from_file_name(checkpoint) or "clip"))
            tokenizer = tokenizer or openai_tokenizer()
            revision = f"{os.path.basename(os.fspath(checkpoint))}:{os.path.getsize(checkpoint)}"
        if model is None:
            from transformers import AutoTokenizer, CLIPTextModelWithProjection

            tokenizer = hub_load(AutoTokenizer.from_pretrained, name, model_path, "CLIP tokenizer")
            model = hub_load(CLIPTextModelWithProjection.from_pretrained, name, model_path, "CLIP text model")
        self.name = name
        if dtype == "float16":
            import torch

            model = model.to(torch.float16)
        self.model = model.eval().to(self.device)
        self.tokenizer = tokenizer
        self.dim = int(model.config.projection_dim)
        self.max_length = int(model.config.max_position_embeddings)
        self.revision = revision if revision is not None else str(getattr(model.config, "_commit_hash", "") or "")
        if dtype == "float16":
            self.revision += "|float16"
        self.batch_size = batch_size

    def _embed(self, tok):
        return self.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).text_embeds
