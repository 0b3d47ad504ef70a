"""Run folders: each stage writes ``<out>/<stage>/stage.json`` with the key of what it computed.

A stage's key hashes its own configuration and the keys of the stages it reads, so changing anything
upstream invalidates everything downstream, and ``objalign run`` run again reuses what still matches.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .errors import ObjalignError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path``, flush it to disk, then move it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj) -> None:
    """:func:`atomic_write_bytes` of ``obj`` as indented JSON."""
    atomic_write_bytes(path, json.dumps(obj, indent=1, default=str).encode())


def ensure_out(out: str | Path) -> Path:
    """Create the run folder, or fail with one line if it cannot be written."""
    p = Path(out)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ObjalignError(f"output folder {str(p)!r} cannot be written ({exc.strerror or exc}); "
                            "choose another --out") from None
    return p


def stage_record(out: Path, stage: str) -> dict | None:
    f = Path(out) / stage / "stage.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError:
        return None


def stage_key(out: Path, stage: str) -> str:
    rec = stage_record(out, stage)
    if rec is None:
        raise ObjalignError(f"{out}: stage '{stage}' has not run yet; run `objalign {stage} ... --out {out}` "
                            f"or `objalign run CONFIG --out {out}`")
    return rec["key"]


def is_current(out: Path, stage: str, key: str) -> bool:
    rec = stage_record(out, stage)
    return rec is not None and rec.get("key") == key


def write_stage(out: Path, stage: str, key: str, summary: dict, started: float) -> dict:
    rec = {"stage": stage, "key": key, "seconds": round(time.time() - started, 3), "summary": summary}
    d = Path(out) / stage
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_json(d / "stage.json", rec)
    return rec
