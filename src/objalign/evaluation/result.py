"""The result of :func:`objalign.evaluate_alignment`: it prints, converts to rows, and writes the report.

``AlignmentResult.to_dict()`` is ``report.json``'s content (the same keys a pipeline run writes, see
:mod:`objalign.report.writer`); the pipeline's report stage builds its dictionary with :func:`report_dict` too, so
the two cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from objalign.errors import MissingDependencyError, ObjalignError
from objalign.evaluation.settings import AlignConfig
from objalign.report.writer import PROTOCOLS, format_text, write_report

#: the arrays of a result (per object, per permutation, 2-D views), keyed ``{protocol}__{method}__{name}``
ARRAYS = ("per_instance", "nulls", "projection")


def report_dict(raw: dict, header: dict, units: dict | None = None, convergence: dict | None = None) -> dict:
    """``report.json``'s content from the engine's result ``raw`` and a ``header`` (dataset, counts, encoders).

    Parameters
    ----------
    raw : the engine's dict (``rows``, ``per_category``, ``similarity``, ``pca``, ``skipped``, ``category_level``)
    header : ``dataset``, ``dataset_fingerprint``, ``n_instances``, ``n_instances_sampled``, ``n_images``,
        ``n_categories``, ``crop``, ``vision_encoder``, ``text_encoder``, ``n_skipped``, ``n_excluded``
    units, convergence : the unit-of-analysis and convergence studies (a pipeline run's), if any
    """
    rows = raw["rows"]
    splits = list(dict.fromkeys(r["split"] for r in rows))
    return {**header, "chance_top1": 1.0 / header["n_categories"],
            "protocols": {s: PROTOCOLS.get(s, "") for s in splits}, "results": rows,
            "per_category": raw.get("per_category", []), "similarity": raw.get("similarity", {}),
            "pca": raw.get("pca", {}), "skipped_protocols": raw.get("skipped", {}),
            "category_level": raw.get("category_level", {}), "units": units or {},
            "convergence": convergence or {}}


def _flat(row: dict) -> dict:
    """One result row as flat columns: scalars as they are, ``ci`` as ``{figure}_ci_low/high``, ``pvalue`` as
    ``{figure}_pvalue``, hyperparameters as ``hp_{name}``."""
    out = {k: v for k, v in row.items() if np.isscalar(v) or v is None}
    for fig, (lo, hi) in (row.get("ci") or {}).items():
        out[f"{fig}_ci_low"], out[f"{fig}_ci_high"] = lo, hi
    for fig, p in (row.get("pvalue") or {}).items():
        out[f"{fig}_pvalue"] = p
    for name, v in (row.get("hyperparameters") or {}).items():
        out[f"hp_{name}"] = v
    if row.get("null", {}).get("kind"):
        out["null"] = row["null"]["kind"]
        out["n_permutations"] = row["null"]["n_permutations"]
    return out


@dataclass
class AlignmentResult:
    """Everything one evaluation found, for one text target set.

    Attributes
    ----------
    raw : dict
        The engine's result: ``rows`` (one per method and protocol), ``per_category``, ``similarity``, ``pca``,
        ``category_level``, ``skipped``, and the arrays ``per_instance``, ``nulls``, ``projection``; or
        ``{"error": "<one line>"}`` for a target set that could not be evaluated (see ``error``).
    settings : AlignConfig
        Every setting the evaluation used (defaults included).
    header : dict
        What the report says about the inputs: ``dataset``, counts, ``vision_encoder`` / ``text_encoder`` names
        and widths.
    """

    raw: dict
    settings: AlignConfig
    header: dict = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        """Why this target set could not be evaluated (``None`` when it was)."""
        return self.raw.get("error")

    @property
    def rows(self) -> list[dict]:
        """The result rows (one per method and protocol), as ``report.json``'s ``results``."""
        return [] if self.error else self.raw["rows"]

    def to_dict(self) -> dict:
        """``report.json``'s content (JSON-serialisable), with the settings under ``settings``."""
        if self.error:
            return {"error": self.error, "settings": asdict(self.settings)}
        return {**report_dict(self.raw, self.header), "settings": asdict(self.settings)}

    def summary(self, title: str = "objalign report") -> str:
        """The text report (``report.txt``): every table, interval and p-value."""
        if self.error:
            return f"{title}: not evaluated: {self.error}\n"
        return format_text(report_dict(self.raw, self.header), title, self.raw.get("per_instance"))

    def to_frame(self):
        """The result rows as a pandas DataFrame (one row per method and protocol; intervals, p-values and
        hyperparameters as flat columns). Needs pandas."""
        try:
            import pandas as pd
        except ImportError:
            raise MissingDependencyError("AlignmentResult.to_frame needs pandas: pip install pandas") from None
        return pd.DataFrame([_flat(r) for r in self.rows])

    def write_report(self, folder: str | Path, title: str = "objalign report", html: bool = True) -> list[str]:
        """Write ``report.json``, ``report.txt``, the figures and ``report.html`` into ``folder`` (as a run does)
        and ``settings.json``; returns the file names."""
        if self.error:
            raise ObjalignError(f"nothing to write: this target set was not evaluated ({self.error})")
        folder = Path(folder)
        files = write_report(folder, report_dict(self.raw, self.header), {a: self.raw.get(a, {}) for a in ARRAYS},
                             title, html)
        (folder / "settings.json").write_text(json.dumps(asdict(self.settings), indent=1))
        return files + ["settings.json"]

    def __repr__(self) -> str:
        if self.error:
            return f"AlignmentResult(error={self.error!r})"
        head = ", ".join(f"{r['method']}/{r['split']}: top1 {r['top1']:.3f}" for r in self.rows
                         if r["method"] in self.settings.methods)
        return f"AlignmentResult(n={self.header.get('n_instances')}, {head})"
