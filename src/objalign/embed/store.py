"""The embedding store: ``.npy`` shards plus parquet metadata, keyed by everything that changes them.

Layout (clip-retrieval's convention, readable by embedding-reader)::

    <store>/manifest.json            key, the fields hashed into it, dim, shard size, status
    <store>/emb/emb_00000.npy        float32 (rows, dim); a layered store: (rows, L, dim) in its storage dtype
    <store>/metadata/metadata_00000.parquet   one row per vector (annotation_id, image_id, category_id, ...)
    <store>/skipped/skipped_00000.json        instances of that shard that could not be embedded, with reasons

Every file is written to a temporary name and moved into place (``os.replace``), and a shard counts as done
only when its metadata file — written last — exists with as many rows as its array, those rows plus the
shard's skipped instances account for every instance of the shard, and none of its files is damaged (a
truncated, empty, padded or foreign vector file, the wrong dtype or row shape: see
:meth:`EmbeddingStore.shard_problem`). A damaged shard is recomputed like a missing one, and reading a finished
store that holds one fails in one line instead of returning wrong arrays. A run killed at any moment (``kill -9``)
and started again removes the temporaries it left, recomputes only the shards that are not done (the engine
cuts batches at shard boundaries, so a recomputed shard sees the same batches), and ends with exactly the
bytes an uninterrupted run gives. A store whose key does not match the request is never reused: the error
names the key fields that differ. One writer per store at a time.

A layered store (``embed.*.layers`` other than ``last``) holds every requested layer of each object on a layer
axis; its manifest records ``layers`` (the model's layer numbers, in axis order) and ``storage_dtype``
(``float32`` or ``float16``). A ``last`` store in float32 records neither, so it is laid out and keyed as before.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from objalign.config import STORAGE_DTYPES  # embed.storage_dtype
from objalign.errors import ObjalignError
from objalign.runs import atomic_write_bytes, atomic_write_json
from objalign.stores import MANIFEST, find_stores, open_manifest, remove_stale_temporaries, remove_store, store_key

#: dtypes a store's shards may be kept in (``embed.storage_dtype``)

__all__ = ["EmbeddingStore", "find_stores", "read_embeddings", "remove_store", "store_key"]


class EmbeddingStore:
    """One store on disk. Create with :meth:`open` (checks the key) or read with :func:`read_embeddings`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- writing -------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, key_fields: dict, shard_size: int, n_rows: int, layers: list[int] | None = None,
             storage_dtype: str = "float32") -> "EmbeddingStore":
        """Open (or create) the store at ``path`` for the request described by ``key_fields``.

        ``layers`` (model layer numbers) makes a layered store, ``(rows, len(layers), dim)`` shards;
        ``storage_dtype`` is the shards' dtype (``float32`` or ``float16``). Both must also be in ``key_fields``
        when they are not the defaults (the caller's key says what the content is).

        Raises :class:`ObjalignError` if a store already sits there with a different key (naming the fields
        that differ). Temporary files left by a killed writer are removed.
        """
        if storage_dtype not in STORAGE_DTYPES:
            raise ObjalignError(f"embed.storage_dtype = {storage_dtype!r}: expected one of {', '.join(STORAGE_DTYPES)}")
        store = cls(path)
        extra = {} if layers is None else {"layers": [int(k) for k in layers]}
        if layers is not None or storage_dtype != "float32":
            extra["storage_dtype"] = storage_dtype
        _, created = open_manifest(store.path, key_fields, {
            "kind": "embeddings", "shard_size": int(shard_size), "n_requested": int(n_rows),
            "layout": "clip-retrieval: emb/emb_NNNNN.npy + metadata/metadata_NNNNN.parquet", **extra},
            ("emb", "metadata", "skipped"))
        if not created:
            store.remove_temporaries()
        return store

    def remove_temporaries(self) -> int:
        """Delete the temporaries a killed writer left behind (never a live writer's: several processes may
        fill one store, see :func:`objalign.runs.is_stale_temporary`); returns how many."""
        return remove_stale_temporaries(self.path, ("emb", "metadata", "skipped"))

    def manifest(self) -> dict:
        mf = self.path / MANIFEST
        if not mf.is_file():
            raise ObjalignError(f"{self.path}: no {MANIFEST}; this is not an objalign embedding store")
        return json.loads(mf.read_text())

    def layers(self) -> list[int] | None:
        """The model layer numbers on a layered store's layer axis, or None (a ``last`` store: ``(n, dim)``)."""
        layers = self.manifest().get("layers")
        return None if layers is None else [int(k) for k in layers]

    def storage_dtype(self) -> str:
        """``float32`` or ``float16``: the dtype of the shards on disk."""
        if not hasattr(self, "_dtype"):
            self._dtype = str(self.manifest().get("storage_dtype", "float32"))
        return self._dtype

    def shard_paths(self, i: int) -> tuple[Path, Path, Path]:
        return (self.path / "emb" / f"emb_{i:05d}.npy", self.path / "metadata" / f"metadata_{i:05d}.parquet",
                self.path / "skipped" / f"skipped_{i:05d}.json")

    def expected_rows(self, i: int) -> int | None:
        """Instances shard ``i`` covers (embedded + skipped), from the manifest; ``None`` if unknown."""
        if not hasattr(self, "_layout"):
            try:
                mf = self.manifest()
                self._layout = (int(mf["shard_size"]), int(mf["n_requested"]))
            except (ObjalignError, KeyError, TypeError, ValueError):
                self._layout = None
        if self._layout is None:
            return None
        size, n = self._layout
        return max(0, min(size, n - i * size))

    def shard_done(self, i: int) -> bool:
        """A shard is done when its metadata (written last) exists with as many rows as its array, and those
        rows plus its skipped instances account for every instance of the shard; a damaged shard is not done
        (see :meth:`shard_problem`), so the next run recomputes it."""
        return self.shard_problem(i) is None

    def shard_problem(self, i: int) -> str | None:
        """Why shard ``i`` is not done, or ``None`` when it is: a missing file, or a damaged one.

        The vector file must be a whole ``.npy`` array (its header readable, its size exactly the header's
        shape times the itemsize: a truncated or padded file fails) of the store's dtype and row shape
        (``(dim,)``, or ``(len(layers), dim)`` for a layered store; ``dim`` once the manifest records it); the
        metadata a readable parquet file with as many rows; the skipped list a JSON list.
        """
        emb, meta, skip = self.shard_paths(i)
        for f in (emb, meta):
            if not f.is_file():
                return f"{f.parent.name}/{f.name} is missing"
        import pyarrow.parquet as pq

        shape, problem = self._array_shape(emb)
        if problem:
            return f"emb/{emb.name} {problem}"
        try:
            rows = pq.read_metadata(meta).num_rows
        except Exception as exc:  # any unreadable parquet file: pyarrow raises several kinds
            return f"metadata/{meta.name} is unreadable ({type(exc).__name__})"
        try:
            skipped = json.loads(skip.read_text()) if skip.is_file() else []
        except (OSError, ValueError) as exc:
            return f"skipped/{skip.name} is unreadable ({type(exc).__name__})"
        if not isinstance(skipped, list):
            return f"skipped/{skip.name} is not a JSON list"
        if shape[0] != rows:
            return f"emb/{emb.name} has {shape[0]} rows but metadata/{meta.name} has {rows}"
        want = self.expected_rows(i)
        if want is not None and rows + len(skipped) != want:
            return f"{rows} rows + {len(skipped)} skipped do not account for the shard's {want} instances"
        return None

    def _array_shape(self, emb: Path) -> tuple[tuple[int, ...], str | None]:
        """``(shape, None)`` for an intact vector file, else ``((), what is wrong)``; reads only the header."""
        fmt = np.lib.format
        try:
            size = emb.stat().st_size
            with open(emb, "rb") as fh:
                version = fmt.read_magic(fh)
                read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, fortran, dtype = read_header(fh)
                offset = fh.tell()
        except (OSError, ValueError, SyntaxError, TypeError, KeyError) as exc:
            return (), f"is not a readable .npy array ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"
        if dtype != np.dtype(self.storage_dtype()) or fortran:
            return (), f"holds {dtype}{' (Fortran order)' if fortran else ''}, not {self.storage_dtype()}"
        mf = self._manifest_layout()
        layers, dim = mf.get("layers"), mf.get("dim")
        row = (len(layers),) if layers is not None else ()
        if len(shape) != 1 + len(row) + 1 or tuple(shape[1:-1]) != row or (dim is not None and shape[-1] != dim):
            want = ", ".join(["rows", *map(str, row), str(dim) if dim is not None else "dim"])
            return (), f"has shape {tuple(shape)}, expected ({want})"
        need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if size != need:
            return (), f"is {'truncated' if size < need else 'padded'}: {size} bytes, its header needs {need}"
        return tuple(int(k) for k in shape), None

    def _manifest_layout(self) -> dict:
        """The manifest's ``layers`` and ``dim`` (``dim`` only once a finished store records it)."""
        try:
            mf = self.manifest()
        except (ObjalignError, OSError, ValueError):
            return {}
        return {"layers": mf.get("layers"), "dim": int(mf["dim"]) if mf.get("dim") is not None else None}

    def damaged_shards(self) -> dict[int, str]:
        """The shards of a finished store that are not intact: ``{shard: what is wrong}`` (empty when sound)."""
        n = int(self.manifest().get("n_shards", 0))
        found = {i: self.shard_problem(i) for i in range(n)}
        return {i: why for i, why in found.items() if why}

    def write_shard(self, i: int, vectors: np.ndarray, metadata: dict[str, np.ndarray], skipped: list[dict]) -> dict:
        """Write shard ``i``: skipped list, then vectors, then metadata (the completion mark).

        Returns the shard's receipt: ``{"shard", "rows", "skipped", "sha256"}`` (of the vector and metadata
        bytes), small enough to send back from a remote worker."""

        import pyarrow as pa
        import pyarrow.parquet as pq

        emb, meta, skip = self.shard_paths(i)
        atomic_write_json(skip, skipped)
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(vectors, dtype=self.storage_dtype()))
        atomic_write_bytes(emb, buf.getvalue())
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table({k: np.asarray(v) for k, v in metadata.items()}), sink)
        meta_bytes = sink.getvalue().to_pybytes()
        atomic_write_bytes(meta, meta_bytes)
        return {"shard": int(i), "rows": int(len(vectors)), "skipped": len(skipped),
                "sha256": hashlib.sha256(buf.getvalue() + meta_bytes).hexdigest()[:16]}

    def finalize(self, n_shards: int, dim: int, extra: dict | None = None) -> dict:
        """Mark the store complete (every shard must be done) and gather the skipped instances into the
        manifest; returns the manifest."""
        mf = self.manifest()
        missing = [i for i in range(n_shards) if not self.shard_done(i)]
        if missing:
            raise ObjalignError(f"{self.path}: shards {missing[:5]} are not finished; run the embed stage again "
                                "to complete the store")
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
    def read(self, layer: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """All metadata columns and the float32 array, in shard order.

        Parameters
        ----------
        layer : int, optional
            A layered store: only this model layer (one of :meth:`layers`; negative counts from the end of that
            list), read shard by shard so memory holds one layer, not all.

        Returns
        -------
        cols : dict of (n,) arrays
        array : (n, dim) float32, or (n, L, dim) for a layered store read without ``layer``
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        mf = self.manifest()
        if not mf.get("complete"):
            raise ObjalignError(f"{self.path}: the store is incomplete (an interrupted run?); run the embed stage "
                                "again to finish it")
        layers = mf.get("layers")
        pick = None
        if layer is not None:
            if layers is None:
                raise ObjalignError(f"{self.path}: layer={layer} asked of a store without a layer axis (layers: last)")
            if not (layer in layers or -len(layers) <= layer < 0):
                raise ObjalignError(f"{self.path}: layer {layer} is not in this store (layers {layers})")
            pick = layers.index(layer) if layer in layers else layer
        damaged = self.damaged_shards()
        if damaged:
            i, why = next(iter(damaged.items()))
            raise ObjalignError(f"{self.path}: {len(damaged)} damaged shard(s), first shard {i}: {why}; run the "
                                "embed stage again with --force to recompute them (intact shards are kept)")
        arrays, tables = [], []
        for i in range(mf["n_shards"]):
            emb, meta, _ = self.shard_paths(i)
            arr = np.load(emb, mmap_mode="r" if pick is not None else None)
            arrays.append(np.asarray(arr[:, pick] if pick is not None else arr, dtype=np.float32))
            tables.append(pq.read_table(meta))
        table = pa.concat_tables(tables) if tables else pa.table({})
        cols = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
        shape = (0, mf.get("dim", 0)) if layers is None or pick is not None else (0, len(layers), mf.get("dim", 0))
        array = np.concatenate(arrays) if arrays else np.zeros(shape, np.float32)
        return cols, array


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
    array : (n, dim) float32, or (n, L, dim) for a layered store (see :meth:`EmbeddingStore.read`)
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
