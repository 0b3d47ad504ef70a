"""Old import paths (objalign <= 0.1: ``objalign.align.*``, ``objalign.evaluate.*``) kept working after the
library/application split, each with a :class:`DeprecationWarning` that names the new home.

A finder on ``sys.meta_path`` answers for every old module name with a module whose attributes are looked up, in
order, in the modules that now hold them; the table below is the whole map (the CHANGELOG lists it too).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
import warnings

#: old module -> the modules its names now live in (looked up in this order)
MOVED: dict[str, tuple[str, ...]] = {
    "objalign.align": ("objalign.maps", "objalign.evaluation.engine"),
    "objalign.align.stage": ("objalign.evaluation.engine", "objalign.evaluation.folds", "objalign.pipeline.align"),
    "objalign.align.shared": ("objalign.evaluation.folds",),
    "objalign.align.units_stage": ("objalign.pipeline.units",),
    **{f"objalign.align.{m}": (f"objalign.maps.{m}",) for m in
       ("linear", "kernel", "pca", "procrustes", "_blas", "_kernels", "_logo", "_nystroem", "_permuted_cv",
        "_ridge_stats", "_scoring", "_search", "_splits", "_targets", "_validation")},
    "objalign.evaluate": ("objalign.measures",),
    **{f"objalign.evaluate.{m}": (f"objalign.measures.{m}",) for m in
       ("similarity", "calibrate", "rsa", "retrieval", "matching")},
    **{f"objalign.evaluate.{m}": (f"objalign.stats.{m}",) for m in ("intervals", "protocols", "metrics")},
    "objalign.evaluate.nulls": ("objalign.stats.nulls", "objalign.stats.permutation"),
    "objalign.evaluate.grid": ("objalign.stats.permutation", "objalign.stats.metrics"),
    "objalign.evaluate.stats": ("objalign.stats.resampling", "objalign.stats.permutation", "objalign.stats.labels"),
    **{f"objalign.evaluate.{m}": (f"objalign.evaluation.{m}",) for m in ("category_level", "units", "convergence")},
}


def _warn(old: str, new: str, name: str | None = None) -> None:
    what = f"{old}.{name}" if name else old
    warnings.warn(f"{what} moved to {new}{'.' + name if name else ''}; the old path will be removed in a future "
                  "release", DeprecationWarning, stacklevel=3)


def lookup(old: str, name: str):
    """Attribute ``name`` of old module ``old``, from the first new module that has it (with a warning)."""
    if name.startswith("__"):
        raise AttributeError(name)
    for new in MOVED[old]:
        mod = importlib.import_module(new)
        if hasattr(mod, name):
            _warn(old, new, name)
            return getattr(mod, name)
    raise AttributeError(f"module {old!r} has no attribute {name!r} (it moved: see {', '.join(MOVED[old])})")


class _Loader:  # the loader protocol (importlib.abc is not imported: it costs ~30 ms of start-up)
    def create_module(self, spec):
        mod = types.ModuleType(spec.name, f"Deprecated alias of {', '.join(MOVED[spec.name])}.")
        mod.__getattr__ = lambda name: lookup(spec.name, name)
        if spec.name in ("objalign.align", "objalign.evaluate"):
            mod.__path__ = []  # a package: its old submodules resolve through the finder
        return mod

    def exec_module(self, module):
        return None


class _Finder:  # the meta path finder protocol
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader(), is_package=fullname in ("objalign.align",
                                                                                          "objalign.evaluate"))


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
