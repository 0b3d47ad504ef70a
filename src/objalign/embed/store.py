"""The embedding store: ``.npy`` shards plus parquet metadata, keyed by everything that changes them.

Layout (clip-retrieval's convention, readable by embedding-reader)::

    <store>/manifest.json            key, the fields hashed into it, dim, shard size, status
    <store>/emb/emb_00000.npy        float32 (rows, dim)
    <store>/metadata/metadata_00000.parquet   one row per vector (annotation_id, image_id, category_id, ...)
    <store>/skipped/skipped_00000.json        instances of that shard that could not be embedded, with reasons

Every file is written to a temporary name and moved into place (``os.replace``), and a shard counts as done
only when its metadata file — written last — exists with as many rows as its array. A run killed at any
moment and started again recomputes only the shards that are not done, and ends with exactly the vectors an
uninterrupted run gives. A store whose key does not match the request is never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import ObjalignError

MANIFEST = "manifest.json"


def store_key(fields: dict) -> str:
    """sha256 (first 16 hex digits) of the canonical JSON of ``fields``."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, default=str).encode())


class EmbeddingStore:
    """One store on disk. Create with :meth:`open` (checks the key) or read with :func:`read_embeddings`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- writing -------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, key_fields: dict, shard_size: int, n_rows: int) -> "EmbeddingStore":
        """Open (or create) the store at ``path`` for the request described by ``key_fields``.

        Raises :class:`ObjalignError` if a store already sits there with a different key.
        """
        store = cls(path)
        key = store_key(key_fields)
        mf = store.path / MANIFEST
        if mf.is_file():
            old = json.loads(mf.read_text())
            if old.get("key") != key:
                raise ObjalignError(
                    f"{store.path}: an embedding store made for a different request is here (key {old.get('key')} "
                    f"!= {key}); remove it with `objalign cache rm {store.path}` or choose another path")
        else:
            for sub in ("emb", "metadata", "skipped"):
                (store.path / sub).mkdir(parents=True, exist_ok=True)
            atomic_write_json(mf, {"key": key, "key_fields": key_fields, "shard_size": shard_size,
                                   "n_requested": n_rows, "complete": False})
        return store

    def manifest(self) -> dict:
        mf = self.path / MANIFEST
        if not mf.is_file():
            raise ObjalignError(f"{self.path}: no {MANIFEST}; this is not an objalign embedding store")
        return json.loads(mf.read_text())

    def shard_paths(self, i: int) -> tuple[Path, Path, Path]:
        return (self.path / "emb" / f"emb_{i:05d}.npy", self.path / "metadata" / f"metadata_{i:05d}.parquet",
                self.path / "skipped" / f"skipped_{i:05d}.json")

    def shard_done(self, i: int) -> bool:
        emb, meta, _ = self.shard_paths(i)
        if not (emb.is_file() and meta.is_file()):
            return False
        import pyarrow.parquet as pq

        try:
            rows = pq.read_metadata(meta).num_rows
            arr = np.load(emb, mmap_mode="r")
        except Exception:
            return False
        return arr.shape[0] == rows

    def write_shard(self, i: int, vectors: np.ndarray, metadata: dict[str, np.ndarray], skipped: list[dict]) -> None:
        """Write shard ``i``: skipped list, then vectors, then metadata (the completion mark)."""
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        emb, meta, skip = self.shard_paths(i)
        atomic_write_json(skip, skipped)
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(vectors, dtype=np.float32))
        atomic_write_bytes(emb, buf.getvalue())
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table({k: np.asarray(v) for k, v in metadata.items()}), sink)
        atomic_write_bytes(meta, sink.getvalue().to_pybytes())

    def finalize(self, n_shards: int, dim: int, extra: dict | None = None) -> dict:
        mf = self.manifest()
        skipped = []
        for i in range(n_shards):
            p = self.shard_paths(i)[2]
            if p.is_file():
                skipped.extend(json.loads(p.read_text()))
        mf.update({"complete": True, "n_shards": n_shards, "dim": dim, "skipped": skipped,
                   "n_vectors": int(sum(np.load(self.shard_paths(i)[0], mmap_mode="r").shape[0]
                                        for i in range(n_shards)))})
        mf.update(extra or {})
        atomic_write_json(self.path / MANIFEST, mf)
        return mf

    # -- reading -------------------------------------------------------------------------------------------
    def read(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """All metadata columns and the ``(n, dim)`` float32 array, in shard order."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        mf = self.manifest()
        if not mf.get("complete"):
            raise ObjalignError(f"{self.path}: the store is incomplete (an interrupted run?); run the embed stage "
                                "again to finish it")
        arrays, tables = [], []
        for i in range(mf["n_shards"]):
            emb, meta, _ = self.shard_paths(i)
            arrays.append(np.load(emb))
            tables.append(pq.read_table(meta))
        table = pa.concat_tables(tables) if tables else pa.table({})
        cols = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
        array = np.concatenate(arrays) if arrays else np.zeros((0, mf.get("dim", 0)), np.float32)
        return cols, array


def remove_store(path: str | Path) -> None:
    p = Path(path)
    if not (p / MANIFEST).is_file():
        raise ObjalignError(f"{p}: not an objalign embedding store (no {MANIFEST}); nothing removed")
    shutil.rmtree(p)


def find_stores(root: str | Path) -> list[Path]:
    """Every store (folder with a ``manifest.json`` holding a ``key``) under ``root``."""
    out = []
    for mf in sorted(Path(root).rglob(MANIFEST)):
        try:
            if "key" in json.loads(mf.read_text()) and (mf.parent / "emb").is_dir():
                out.append(mf.parent)
        except (json.JSONDecodeError, OSError):
            continue
    return out


def read_embeddings(path_or_run_dir: str | Path, kind: str = "vision") -> tuple[np.ndarray, np.ndarray]:
    """Read embeddings from a store folder or a run folder.

    Parameters
    ----------
    path_or_run_dir : path
        A store (has ``manifest.json``) or a run directory made by ``objalign run`` / ``objalign embed``.
    kind : {"vision", "text"}
        Which store of a run to read.

    Returns
    -------
    ids : (n,) int64
        ``annotation_id`` for vision stores, ``category_id`` for text stores.
    array : (n, dim) float32
    """
    if kind not in ("vision", "text"):
        raise ObjalignError(f"kind={kind!r}: expected 'vision' or 'text'")
    p = Path(path_or_run_dir)
    if not (p / MANIFEST).is_file():
        pointer = p / "embeddings" / f"{kind}.json"
        if not pointer.is_file():
            raise ObjalignError(f"{p}: neither an embedding store nor a run folder with embeddings "
                                f"(no {pointer.relative_to(p)}); run `objalign embed` first")
        p = p / "embeddings" / json.loads(pointer.read_text())["store"]
    cols, array = EmbeddingStore(p).read()
    id_col = "annotation_id" if "annotation_id" in cols else "category_id"
    return cols[id_col].astype(np.int64), array
