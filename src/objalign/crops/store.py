"""The crop store: the crop table decided shard by shard, so a segmenter can run on many workers and resume.

Layout::

    <store>/manifest.json               key, the fields hashed into it, the shard bounds, status
    <store>/shards/stats_00000.json     the mode's counters for that shard (segmenter calls, images)
    <store>/shards/crops_00000.parquet  the shard's rows of the crop table (written last: the completion mark)

A shard is a range of the image-grouped instance order that never splits an image
(:func:`objalign.compute.image_aligned_bounds`), so each image's masks come from one segmenter call whatever
the shard size, worker count or order. Writes are atomic renames; a shard is done when its parquet exists
with the shard's row count. Stores are keyed like embedding stores and listed by ``objalign cache ls``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from objalign.errors import ObjalignError
from objalign.runs import atomic_write_bytes, atomic_write_json
from objalign.stores import MANIFEST, open_manifest, remove_stale_temporaries


class CropStore:
    """One crop store on disk; create with :meth:`open`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._bounds: list[tuple[int, int]] | None = None

    @classmethod
    def open(cls, path: str | Path, key_fields: dict, bounds: list[tuple[int, int]]) -> "CropStore":
        """Open (or create) the store for ``key_fields``; a store with another key there is an error."""
        store = cls(path)
        _, created = open_manifest(store.path, key_fields, {"kind": "crops", "bounds": [list(b) for b in bounds]},
                                   ("shards",))
        if not created:
            store.remove_temporaries()
        return store

    def shard_path(self, i: int, kind: str = "crops") -> Path:
        return self.path / "shards" / (f"crops_{i:05d}.parquet" if kind == "crops" else f"stats_{i:05d}.json")

    @property
    def bounds(self) -> list[tuple[int, int]]:
        if self._bounds is None:
            self._bounds = [tuple(b) for b in json.loads((self.path / MANIFEST).read_text())["bounds"]]
        return self._bounds

    def shard_done(self, i: int) -> bool:
        p = self.shard_path(i)
        if not p.is_file():
            return False
        import pyarrow.parquet as pq

        try:
            rows = pq.read_metadata(p).num_rows
        except Exception:
            return False
        a, b = self.bounds[i]
        return rows == b - a

    def missing(self) -> list[int]:
        return [i for i in range(len(self.bounds)) if not self.shard_done(i)]

    def write_shard(self, i: int, table: dict, stats: dict) -> dict:
        """Write shard ``i``'s stats, then its rows (the completion mark); returns its receipt."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        atomic_write_json(self.shard_path(i, "stats"), stats)
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table(table), sink)
        data = sink.getvalue().to_pybytes()
        atomic_write_bytes(self.shard_path(i), data)
        n = len(next(iter(table.values()))) if table else 0
        return {"shard": int(i), "rows": int(n), "sha256": hashlib.sha256(data).hexdigest()[:16]}

    def remove_temporaries(self) -> int:
        """Delete the temporaries a killed writer left behind; returns how many."""
        return remove_stale_temporaries(self.path, ("shards",))

    def read(self) -> tuple[dict, list[dict]]:
        """The whole crop table (every shard, in order) and the shards' stats; every shard must be done."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        missing = self.missing()
        if missing:
            raise ObjalignError(f"{self.path}: crop shards {missing[:5]} are not finished; run the crop stage again")
        tables = [pq.read_table(self.shard_path(i)) for i in range(len(self.bounds))]
        table = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
        cols = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
        stats = [json.loads(self.shard_path(i, "stats").read_text()) for i in range(len(self.bounds))]
        return cols, stats

    def finalize(self) -> dict:
        mf = json.loads((self.path / MANIFEST).read_text())
        if not mf.get("complete"):
            mf["complete"] = True
            atomic_write_json(self.path / MANIFEST, mf)
        return mf
