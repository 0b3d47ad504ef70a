"""Where the matrix gets its layered embeddings and its per-vision-layer evaluation: the embed stage's
content-addressed stores (:func:`objalign.embed.stage.embed_vision_store` / ``embed_text_store``, layered with
``EmbeddingStore.layers()``) and the shared evaluation core (:func:`objalign.evaluation.engine.evaluate_targets`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from objalign.config import RunConfig
from objalign.embed.stage import embed_text_store, embed_vision_store
from objalign.embed.store import EmbeddingStore


def _read_layered(path: Path) -> tuple[dict, np.ndarray, list[int]]:

    store = EmbeddingStore(path)
    cols, arr = store.read()
    layers = store.layers()
    if arr.ndim == 2:  # a ``layers: last`` store (the matrix asks for [-1] instead, so not expected): one layer
        arr, layers = arr[:, None, :], [-1]
    return cols, arr, list(layers)


def vision_layers(cfg: RunConfig, layers, out: Path, progress: bool = True) -> tuple[dict, np.ndarray, list[int]]:
    """The vision store of ``cfg.embed.vision`` (whose ``layers`` the matrix config set): ``(metadata columns,
    (n, L, dim), layer indices)``. Needs ``out/crop/crops.parquet`` (the crop stage has run into ``out``)."""

    return _read_layered(embed_vision_store(cfg, out, progress=progress))


def text_layers(cfg: RunConfig, layers, out: Path) -> tuple[dict, np.ndarray, list[int]]:
    """The text store of ``cfg.embed.text``: ``(metadata columns, (c, L, dim), layer indices)``, one row per
    dataset category in category-id order."""

    return _read_layered(embed_text_store(cfg, out))
