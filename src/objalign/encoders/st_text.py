"""sentence-transformers models, ``st:<model id or folder>``: the model's own pipeline (its pooling and, when
the model has one, its Normalize module)."""

from __future__ import annotations

import numpy as np

from objalign.encoders.base import TextEncoder, optional_import, resolve_device
from objalign.errors import ObjalignError


class SentenceTransformerText(TextEncoder):
    """``sentence_transformers.SentenceTransformer(name).encode``.

    Parameters
    ----------
    name : str
        Hub id (``sentence-transformers/all-MiniLM-L6-v2``) or a local folder.
    model_path : str, optional
        Local folder used instead of ``name``.
    model : SentenceTransformer, optional
        An already-built model (tests).
    """

    def __init__(self, name: str, model_path: str | None = None, device: str = "cpu", model=None,
                 batch_size: int = 256):
        self.device = resolve_device(device)
        if model is None:
            st = optional_import("sentence_transformers", "st", "sentence-transformers")
            source = model_path or name
            try:
                model = st.SentenceTransformer(str(source), device=self.device)
            except OSError as exc:
                raise ObjalignError(f"cannot load sentence-transformers model {source!r} ({type(exc).__name__}); "
                                    "on a machine without network pass a local folder as model_path "
                                    "(--text-model-path)") from None
        self.model = model
        self.name = f"st:{name}"
        self.revision = str(getattr(getattr(model, "model_card_data", None), "base_model_revision", "") or "")
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        """``n`` strings -> ``(n, dim)`` float32."""
        if not len(texts):
            return np.zeros((0, self.dim), np.float32)
        out = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)
