"""Name -> lazy ``"module:attr"`` factories, listed with wildcards, with "did you mean" for unknown names.

A registry stores *strings*, not objects, so listing models or parsing the CLI never imports torch or
transformers; the target is imported only when :meth:`Registry.get` is called.
"""

from __future__ import annotations

import fnmatch
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from objalign.errors import ObjalignError, did_you_mean


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "package.module:attr"
    description: str = ""
    kwargs: dict = field(default_factory=dict)  # default keyword arguments bound to the factory


class Registry:
    """A named table of lazily imported factories.

    Parameters
    ----------
    kind : str
        What the registry holds, used in messages ("vision encoder", "crop mode", ...).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._prefixes: dict[str, Entry] = {}

    def register(self, name: str, target: str, description: str = "", defaults: dict | None = None) -> None:
        """Register ``name`` -> ``"module:attr"``; ``defaults`` are keyword arguments bound to the factory."""
        if name in self._entries:
            raise KeyError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = Entry(name, target, description, dict(defaults or {}))

    def register_prefix(self, prefix: str, target: str, description: str = "") -> None:
        """Register a family such as ``"hf:"``: ``"hf:org/model"`` calls the factory with ``name="org/model"``."""
        self._prefixes[prefix] = Entry(prefix + "*", target, description)

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names (and prefix families) matching a shell-style wildcard ``pattern``."""
        pool = list(self._entries) + [e.name for e in self._prefixes.values()]
        return sorted(n for n in pool if fnmatch.fnmatchcase(n, pattern))

    def items(self, pattern: str = "*") -> list[tuple[str, str]]:
        """``(name, description)`` of every entry and prefix family matching ``pattern``, sorted by name."""
        pool = {**{e.name: e for e in self._entries.values()}, **{e.name: e for e in self._prefixes.values()}}
        return [(n, pool[n].description) for n in self.names(pattern)]

    def entry(self, name: str) -> Entry:
        return self._resolve(name)[0]

    def __contains__(self, name: str) -> bool:
        try:
            self._resolve(name)
        except ObjalignError:
            return False
        return True

    def _resolve(self, name: str) -> tuple[Entry, dict]:
        if name in self._entries:
            e = self._entries[name]
            return e, dict(e.kwargs)
        for prefix, e in self._prefixes.items():
            if name.startswith(prefix) and len(name) > len(prefix):
                return e, {"name": name[len(prefix):]}
        hint = did_you_mean(name, self._entries, n=3, cutoff=0.5)
        known = ", ".join(self.names()) or "(none)"
        raise ObjalignError(f"unknown {self.kind} {name!r}{hint} (known: {known})")

    def load(self, name: str) -> tuple[Callable[..., Any], dict]:
        """Import the factory for ``name``; returns ``(factory, bound_kwargs)``."""
        entry, bound = self._resolve(name)
        return _import_target(entry.target), bound

    def get(self, name: str, **kwargs: Any) -> Any:
        """Build the object registered under ``name``: ``factory(**bound_kwargs, **kwargs)``."""
        factory, bound = self.load(name)
        bound.update(kwargs)
        return factory(**bound)

    def spec(self, name: str, **kwargs: Any) -> "Spec":
        """A picklable recipe for :meth:`get` that another process (a Ray worker) can build from, even if
        ``name`` was registered at run time in this process only (the recipe carries the target itself)."""
        entry, bound = self._resolve(name)
        bound.update(kwargs)
        return Spec(entry.target, bound)


@dataclass(frozen=True)
class Spec:
    """``"module:attr"`` and its keyword arguments: :meth:`build` imports the factory and calls it."""

    target: str
    kwargs: dict = field(default_factory=dict)

    def build(self) -> Any:
        return _import_target(self.target)(**self.kwargs)


def _import_target(target: str) -> Any:
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
