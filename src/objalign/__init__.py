"""objalign: measure how object-level vision embeddings align with language embeddings.

The Python API mirrors the command line: ``load_config`` -> ``run`` (or the stage functions in
``objalign.pipeline``) -> ``read_embeddings`` / ``report.json``. Heavy libraries load only when used.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_config", "run", "read_embeddings"]


def __getattr__(name):
    if name == "load_config":
        from .config import load_config

        return load_config
    if name == "run":
        from .pipeline import run

        return run
    if name == "read_embeddings":
        from .embed.store import read_embeddings

        return read_embeddings
    raise AttributeError(f"module 'objalign' has no attribute {name!r}")
