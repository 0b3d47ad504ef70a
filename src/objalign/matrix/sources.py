"""Where the matrix gets its layered embeddings and its per-vision-layer evaluation.

The real functions are issue 13's embed branch (``objalign.embed.stage.embed_vision_store`` /
``embed_text_store``, layered stores with ``EmbeddingStore.layers()``) and align branch
(``objalign.align.stage.evaluate_targets``). Until they are in the tree, :mod:`objalign.matrix._shims` stands in
with the same behaviour; each choice below is made in one place, on whether the real function exists.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import RunConfig


def _real(module: str, name: str):
    import importlib

    return getattr(importlib.import_module(module), name, None)


def _read_layered(path: Path) -> tuple[dict, np.ndarray, list[int]]:
    from ..embed.store import EmbeddingStore

    store = EmbeddingStore(path)
    cols, arr = store.read()
    layers = store.layers()
    if arr.ndim == 2:  # a ``layers: last`` store (the matrix asks for [-1] instead, so not expected): one layer
        arr, layers = arr[:, None, :], [-1]
    return cols, arr, list(layers)


def vision_layers(cfg: RunConfig, layers, out: Path, progress: bool = True) -> tuple[dict, np.ndarray, list[int]]:
    """The vision store of ``cfg.embed.vision`` at ``layers``: ``(metadata columns, (n, L, dim), layer indices)``.

    Needs ``out/crop/crops.parquet`` (the crop stage has run into ``out``)."""
    real = _real("objalign.embed.stage", "embed_vision_store")
    if real is None:  # SHIM until the layered embed stage lands
        from ._shims import embed_vision_layers

        return embed_vision_layers(cfg, layers, out, progress)
    return _read_layered(real(cfg, out, progress=progress))


def text_layers(cfg: RunConfig, layers, out: Path) -> tuple[dict, np.ndarray, list[int]]:
    """The text store of ``cfg.embed.text`` at ``layers``: ``(metadata columns, (c, L, dim), layer indices)``, one
    row per dataset category in category-id order."""
    real = _real("objalign.embed.stage", "embed_text_store")
    if real is None:  # SHIM until the layered embed stage lands
        from ._shims import embed_text_layers

        return embed_text_layers(cfg, layers, out)
    return _read_layered(real(cfg, out))


def evaluate_targets():
    """``evaluate_targets(X, groups, label_index, targets, cfg, ...)``: the align branch's, else the shim."""
    real = _real("objalign.align.stage", "evaluate_targets")
    if real is None:  # SHIM until the shared evaluation core lands
        from ._shims import evaluate_targets as real
    return real
