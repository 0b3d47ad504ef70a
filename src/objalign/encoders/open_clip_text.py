"""open_clip text towers, ``open_clip:<arch>/<pretrained>``: the projected text embedding (``encode_text``)."""

from __future__ import annotations

import numpy as np

from objalign.encoders.base import TextEncoder, resolve_device
from objalign.encoders.open_clip_vision import load_open_clip


class OpenClipText(TextEncoder):
    """An open_clip text tower (``model.encode_text`` on ``open_clip.get_tokenizer(arch)`` tokens).

    Parameters
    ----------
    name : str
        ``<arch>/<pretrained>`` such as ``ViT-B-32/openai``.
    model_path : str, optional
        A local checkpoint file (open_clip's ``pretrained``).
    model, tokenizer : optional
        Already-built objects (tests): ``tokenizer(list[str]) -> (n, context) LongTensor``.
    """

    def __init__(self, name: str, model_path: str | None = None, device: str = "cpu", model=None, tokenizer=None,
                 batch_size: int = 256):
        self.device = resolve_device(device)
        if model is None:
            open_clip, model, arch = load_open_clip(name, model_path, self.device)
            tokenizer = open_clip.get_tokenizer(arch)
        self.name = f"open_clip:{name}"
        self.model = model.eval().to(self.device)
        self.tokenizer = tokenizer
        self.revision = str(model_path or "")
        self.batch_size = batch_size
        self.dim = int(self._encode_batch(["a"]).shape[1])

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tokens = self.tokenizer(list(texts)).to(self.device)
            return self.model.encode_text(tokens).float().cpu().numpy()

    def encode(self, texts: list[str]) -> np.ndarray:
        """``n`` strings -> ``(n, dim)`` float32 projected text embeddings (not normalised)."""
        out = [self._encode_batch(texts[i:i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)
