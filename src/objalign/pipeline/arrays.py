"""``objalign evaluate``: embeddings a researcher already has, read from files -> the report a run writes.

Each input is a file, optionally with ``:KEY`` naming the array inside it: ``.npy``; ``.npz`` (``FILE.npz:KEY``, or
its only array); ``.parquet`` (``FILE.parquet:COLUMN``: a list column gives a matrix, a scalar column a vector;
without a column, every numeric column side by side); ``.txt`` (one value per line: labels, names); ``.json`` (a
list). The ``align:`` and ``report:`` settings come from a config file and ``--set align.KEY=VALUE`` as for
``objalign run``. Every input and setting is checked before any work.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from objalign.config import RunConfig, dump_config
from objalign.errors import MissingDependencyError, ObjalignError
from objalign.evaluation.api import call_options, make_settings, run_inputs
from objalign.evaluation.inputs import prepare_inputs
from objalign.evaluation.result import AlignmentResult
from objalign.maps import check_matrix

SUFFIXES = (".npy", ".npz", ".parquet", ".txt", ".json")


def _split_key(spec: str) -> tuple[Path, str | None]:
    """``"a/b.npz:X"`` -> (path, "X"); a colon that is part of an existing path is kept."""
    if Path(spec).exists() or ":" not in spec:
        return Path(spec), None
    path, _, key = spec.rpartition(":")
    return Path(path), key


def _parquet(path: Path, key: str | None, spec: str) -> np.ndarray:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a core dependency
        raise MissingDependencyError("reading parquet needs pyarrow: pip install pyarrow") from None
    table = pq.read_table(path)
    if key is not None:
        if key not in table.column_names:
            raise ObjalignError(f"{spec}: no column {key!r} (columns: {', '.join(table.column_names)})")
        values = table.column(key).to_pylist()
        return np.asarray(values)
    cols = [c for c in table.column_names if np.asarray(table.column(c).to_pylist()).dtype.kind in "fiu"]
    if not cols:
        raise ObjalignError(f"{spec}: no numeric column; name one as {spec}:COLUMN")
    return np.column_stack([np.asarray(table.column(c).to_pylist()) for c in cols])


def read_array(spec: str) -> np.ndarray:
    """The array that ``spec`` (``FILE`` or ``FILE:KEY``) names; one line naming the file if it cannot be read."""
    path, key = _split_key(spec)
    if not path.is_file():
        raise ObjalignError(f"{spec}: no such file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ObjalignError(f"{spec}: unknown file type {suffix or '(none)'}; expected {', '.join(SUFFIXES)}")
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if key is None and len(z.files) != 1:
                    raise ObjalignError(f"{spec} holds {len(z.files)} arrays: name one as {path}:KEY (keys: "
                                        f"{', '.join(z.files)})")
                if key is not None and key not in z.files:
                    raise ObjalignError(f"{spec}: no array {key!r} (keys: {', '.join(z.files)})")
                return z[key or z.files[0]]
        if suffix == ".parquet":
            return _parquet(path, key, spec)
        if suffix == ".txt":
            return np.asarray([line.strip() for line in path.read_text().splitlines() if line.strip()])
        return np.asarray(json.loads(path.read_text()))
    except (ValueError, OSError, json.JSONDecodeError) as exc:
        raise ObjalignError(f"{spec}: cannot be read as {suffix[1:]} ({str(exc).splitlines()[0]})") from None


def _labels_as_ints(labels: np.ndarray) -> np.ndarray:
    """Text files give strings: whole numbers among them are read as numbers (category indices or ids)."""
    if labels.dtype.kind == "U":
        try:
            return labels.astype(np.int64)
        except ValueError:
            return labels
    return labels


def evaluate_files(vision: str, text: str, labels: str, out: str | Path, cfg: RunConfig, groups: str | None = None,
                   names: str | None = None, vocabulary: str | None = None, log=print) -> AlignmentResult:
    """Read the inputs, check them and the settings (one line, before any work), evaluate, write the report.

    Parameters
    ----------
    vision, text, labels, groups, names, vocabulary : file specs (``FILE`` or ``FILE:KEY``; see this module);
        ``vocabulary`` holds (m, q) distractor name embeddings (open-vocabulary retrieval)
    out : folder for ``report.json``, ``report.txt``, figures, ``report.html``, ``settings.json``, ``config.yaml``
    cfg : the run configuration whose ``align`` and ``report`` sections apply

    Returns
    -------
    AlignmentResult
    """
    align = make_settings(**call_options(cfg.align))
    where = {"vision": vision, "text": text, "labels": labels, "groups": groups or "groups", "names": names or "names"}
    inputs = prepare_inputs(read_array(vision), read_array(text), _labels_as_ints(read_array(labels)),
                            None if groups is None else read_array(groups),
                            names=None if names is None else [str(x) for x in read_array(names)], where=where)
    vocab = None
    if vocabulary is not None:
        vocab = check_matrix(read_array(vocabulary), vocabulary)
        q = inputs.targets[""].shape[1]
        if vocab.shape[1] != q:
            raise ObjalignError(f"{vocabulary}: expected a (names, {q}) matrix of distractor text embeddings "
                                f"(as wide as {text}), got shape {vocab.shape}")
    log(f"[evaluate] {len(inputs.X)} objects, {len(np.unique(inputs.groups))} images, {len(inputs.names)} "
        f"categories (text per {inputs.per}); vision {inputs.X.shape[1]}-d, text "
        f"{inputs.targets[''].shape[1]}-d")
    result = run_inputs(inputs, align, vocab, vision_name=Path(_split_key(vision)[0]).name,
                        text_name=Path(_split_key(text)[0]).name, dataset=f"{vision} + {text}")
    out = Path(out)
    files = result.write_report(out, title=cfg.report.title, html=cfg.report.html)
    dump_config(cfg, out / "config.yaml")
    log(f"[evaluate] wrote {', '.join(files + ['config.yaml'])} to {out}/")
    return result
