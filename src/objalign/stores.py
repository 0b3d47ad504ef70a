"""Keyed store folders (crop stores, embedding stores): the key, the manifest that holds it, listing, removal.

A store is a folder with a ``manifest.json`` holding ``key`` (the hash of ``key_fields``, everything that
changes its content) and ``kind``. Opening a folder whose key differs from the request is an error that
names the fields that differ; a store is never overwritten by another request.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from objalign.errors import ObjalignError
from objalign.runs import atomic_write_json, is_stale_temporary

MANIFEST = "manifest.json"


def store_key(fields: dict) -> str:
    """sha256 (first 16 hex digits) of the canonical JSON of ``fields``."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def open_manifest(path: Path, key_fields: dict, new: dict, subdirs: tuple[str, ...]) -> tuple[dict, bool]:
    """Check the manifest at ``path`` against ``key_fields``, or create the store (``subdirs``, then a manifest
    of ``new`` plus the key). Returns ``(manifest, created)``. Safe when several processes open one store at once:
    they write the same manifest, atomically."""
    key = store_key(key_fields)
    mf = path / MANIFEST
    if mf.is_file():
        try:
            old = json.loads(mf.read_text())
        except json.JSONDecodeError:
            raise ObjalignError(f"{mf} is not valid JSON; remove the store with `objalign cache rm {path}`") from None
        if old.get("key") != key:
            diff = differences(old.get("key_fields", {}), json.loads(json.dumps(key_fields, default=str)))
            raise ObjalignError(
                f"{path}: a store made for a different request is here (key {old.get('key')} != {key}; differs in "
                f"{', '.join(diff[:4]) or 'its key'}); remove it with `objalign cache rm {path}` or choose another "
                "path")
        return old, False
    for sub in subdirs:
        (path / sub).mkdir(parents=True, exist_ok=True)
    manifest = {"key": key, "key_fields": key_fields, **new, "complete": False}
    atomic_write_json(mf, manifest)
    return manifest, True


def remove_stale_temporaries(path: Path, subdirs: tuple[str, ...]) -> int:
    """Delete the temporaries a killed writer left in ``path`` and its ``subdirs`` (never a live writer's: several
    processes may fill one store, see :func:`objalign.runs.is_stale_temporary`); returns how many."""
    n = 0
    for sub in ("",) + tuple(subdirs):
        d = Path(path) / sub
        for f in d.glob(".*.tmp-*") if d.is_dir() else ():
            if is_stale_temporary(f):
                f.unlink(missing_ok=True)
                n += 1
    return n


def differences(a, b, prefix: str = "") -> list[str]:
    """Dotted names of the fields where two nested dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".") or "(root)"]


def find_stores(root: str | Path) -> list[Path]:
    """Every store (a folder whose ``manifest.json`` holds a ``key``) under ``root``."""
    out = []
    for mf in sorted(Path(root).rglob(MANIFEST)):
        try:
            if "key" in json.loads(mf.read_text()):
                out.append(mf.parent)
        except (json.JSONDecodeError, OSError):
            continue
    return out


def remove_store(path: str | Path) -> None:
    p = Path(path)
    if not (p / MANIFEST).is_file():
        raise ObjalignError(f"{p}: not an objalign store (no {MANIFEST}); nothing removed")
    shutil.rmtree(p)
