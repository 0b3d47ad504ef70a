"""Column tables (dict of equal-length numpy arrays) <-> parquet, written atomically."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from objalign.atomic import atomic_write_bytes


def write_table(path: str | Path, cols: dict[str, np.ndarray]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq


    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({k: np.asarray(v) if not isinstance(v, list) else v for k, v in cols.items()}), sink)
    atomic_write_bytes(Path(path), sink.getvalue().to_pybytes())


def read_table(path: str | Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    t = pq.read_table(str(path))
    return {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}


def content_hash(*arrays) -> str:
    """sha256 (16 hex digits) of arrays' dtypes, shapes and bytes (object arrays through their strings)."""

    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        if a.dtype == object:
            a = np.asarray([str(x) for x in a.tolist()], dtype=str)
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]
