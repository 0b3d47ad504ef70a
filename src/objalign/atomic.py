"""Atomic file writes shared by every layer: a temporary beside the target, flushed, then moved into place, so a
reader never sees half a file and several writers of one folder (Ray workers, static-partition processes, two runs
filling one cache entry) never write into each other's temporaries."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

#: A temporary older than this is a dead writer's, wherever it ran (writing one file takes seconds).
STALE_TEMPORARY_S = 3600.0


def temporary_name(path: Path) -> Path:
    """``.<name>.tmp-<host>~<pid>~<random>`` beside ``path``: unique per writer (process, thread, machine), so
    several writers of one shared folder (Ray workers, static-partition processes, two runs filling one cache
    entry) never write into each other's temporaries."""
    host = socket.gethostname().replace("~", "-")
    return path.with_name(f".{path.name}.tmp-{host}~{os.getpid()}~{uuid.uuid4().hex[:8]}")


def is_stale_temporary(path: Path, now: float | None = None) -> bool:
    """True for a temporary whose writer is gone: this machine's and its process has ended, older than
    :data:`STALE_TEMPORARY_S`, or of the old ``.tmp-<pid>`` form. Another live writer's file is never stale."""
    tag = path.name.rpartition(".tmp-")[2]
    parts = tag.split("~")
    try:
        if (now or time.time()) - path.stat().st_mtime > STALE_TEMPORARY_S:
            return True
    except FileNotFoundError:
        return False
    if len(parts) != 3 or not parts[1].isdigit():
        return True
    if parts[0] != socket.gethostname().replace("~", "-"):
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path``, flush it to disk, then move it into place; a write that
    fails (a full disk) removes its temporary before the error goes on."""
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    """:func:`atomic_write_bytes` of ``obj`` as indented JSON."""
    atomic_write_bytes(path, json.dumps(obj, indent=1, default=str).encode())


