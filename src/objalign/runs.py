"""Run folders: each stage writes ``<out>/<stage>/stage.json`` with the key of what it computed.

A stage's key hashes its own configuration and the keys of the stages it reads, so changing anything
upstream invalidates everything downstream, and ``objalign run`` run again reuses what still matches.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from objalign.atomic import (  # noqa: F401  (re-exported: the run folders' writers)
    STALE_TEMPORARY_S,
    atomic_write_bytes,
    atomic_write_json,
    is_stale_temporary,
    temporary_name,
)
from objalign.errors import ObjalignError


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


#: Environment variable naming the shared store folder when ``cache.dir`` is not set.
CACHE_ENV = "OBJALIGN_CACHE"


def cache_dir(configured: str | None) -> Path | None:
    """The shared, content-addressed store folder: ``cache.dir`` (``--cache``), else ``$OBJALIGN_CACHE``,
    else ``None`` (stores live inside each run folder)."""
    d = configured or os.environ.get(CACHE_ENV) or None
    return Path(d).expanduser() if d else None


def store_home(configured: str | None, out: Path, kind: str) -> tuple[Path, bool]:
    """``(folder, shared)``: where the stores of ``kind`` (``embeddings``, ``crops``) live for this run —
    ``<cache>/<kind>`` when a cache is configured (``shared`` True), else the run folder's own ``<out>/<kind>``.

    Stores are named by the hash of everything that changes their content, so runs asking for the same
    crops or embeddings find the same folder; writes are atomic renames of deterministic bytes, so two runs
    filling one entry at once never corrupt it (at worst both compute a shard).
    """
    c = cache_dir(configured)
    home = (c / kind) if c else (Path(out) / kind)
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ObjalignError(f"store folder {str(home)!r} cannot be created ({exc.strerror or exc}); "
                            f"check --cache / cache.dir / ${CACHE_ENV}") from None
    return home, c is not None
