"""objalign: measure how object-level vision embeddings align with language embeddings.

Two layers (``docs/`` explains both):

- the **library** computes on arrays: :func:`evaluate_alignment` (held-out images and categories, maps, nulls,
  intervals, similarity measures, RSA, retrieval, blind matching in one call) and its parts --
  :mod:`objalign.maps` (estimators and their exact CV engines), :mod:`objalign.measures` (similarity measures
  by ID, calibration, RSA, retrieval, matching), :mod:`objalign.stats` (splits, nulls, intervals, metrics),
  :mod:`objalign.report` (report files from results);
- the **application** runs the pipeline on a dataset: ``load_config`` -> ``run`` (stages in
  :mod:`objalign.pipeline`) -> ``read_embeddings`` / ``report.json``.

Heavy libraries load only when used.
"""

from __future__ import annotations

from objalign import _compat

__all__ = ["__version__", "evaluate_alignment", "AlignmentResult", "load_config", "run", "read_embeddings"]

_compat.install()  # old import paths (objalign.align.*, objalign.evaluate.*) keep working, with a warning

_LAZY = {
    "evaluate_alignment": "objalign.evaluation",
    "AlignmentResult": "objalign.evaluation",
    "load_config": "objalign.config",
    "run": "objalign.pipeline",
    "read_embeddings": "objalign.embed.store",
}


def _version() -> str:
    """The version lives in pyproject.toml only; an installed (or editable) package carries it in its metadata
    (read on first use: importlib.metadata costs ~25 ms of start-up)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("objalign")
    except PackageNotFoundError:  # a source tree on sys.path that was never installed
        return "0+unknown"


def __getattr__(name):
    if name == "__version__":
        return _version()
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'objalign' has no attribute {name!r}")
