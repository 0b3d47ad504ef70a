"""Text embeddings of a distractor vocabulary (``embed.vocabulary``) for open-vocabulary retrieval.

The embed stage embeds the vocabulary's names that are not dataset category names (compared case-insensitively,
underscores as spaces) with the run's text encoder and prompts, into their own content-addressed store
``embeddings/vocab-<key>``; ``embeddings/vocab.json`` names it. The align stage ranks each object's true category
among the dataset's names plus these distractors (:mod:`objalign.measures.retrieval`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from objalign.data.vocab import load_vocabulary, normalise_name
from objalign.embed.encoding import embed_texts
from objalign.embed.store import EmbeddingStore
from objalign.runs import atomic_write_json
from objalign.stores import store_key

__all__ = ["embed_vocabulary", "load_vocabulary_embeddings"]


def embed_vocabulary(spec: str | None, text_enc, templates, normalize: bool, prompts: str, dataset_names: list[str],
                     emb_dir: Path, home: Path | None = None, shared: bool = False,
                     layer: int | None = None) -> dict | None:
    """Embed the distractor names of vocabulary ``spec`` (None: none) into a store under ``home`` (default
    ``emb_dir``; with ``shared``, a cache folder outside the run, recorded by absolute path); returns what
    ``emb_dir/vocab.json`` records. ``layer``: the model layer the run aligns (layered text stores), else the
    encoder's usual output."""

    record = Path(emb_dir) / "vocab.json"
    if not spec:
        record.unlink(missing_ok=True)
        return None
    known = {normalise_name(n).lower() for n in dataset_names}
    extra = [n for n in load_vocabulary(spec) if n.lower() not in known]
    fields = {"vocabulary": extra, "encoder": text_enc.key(), "prompts": prompts, "templates": list(templates),
              "normalize": normalize}
    if layer is not None:
        fields["layer"] = int(layer)
    name = f"vocab-{store_key(fields)}"
    store = EmbeddingStore.open(Path(home or emb_dir) / name, fields, shard_size=max(1, len(extra)), n_rows=len(extra))
    if not store.shard_done(0):
        if layer is None:
            vec = embed_texts(text_enc, extra, templates, normalize)
        else:
            vec = embed_texts(text_enc, extra, templates, normalize, layers=[layer])[:, 0]
        store.write_shard(0, vec, {"name": np.asarray(extra, dtype=object)}, [])
    store.finalize(1, text_enc.dim, {})
    info = {"store": str(store.path.resolve()) if shared else name, "source": spec, "n_distractors": len(extra)}
    atomic_write_json(record, info)
    return info


def load_vocabulary_embeddings(out: Path) -> tuple[list[str], np.ndarray, dict] | None:
    """``(names, (m, dim) embeddings, vocab.json record)`` of a run's distractor vocabulary, or None."""
    record = Path(out) / "embeddings" / "vocab.json"
    if not record.is_file():
        return None
    info = json.loads(record.read_text())
    meta, arr = EmbeddingStore(record.parent / info["store"]).read()
    return [str(x) for x in meta["name"]], arr, info
