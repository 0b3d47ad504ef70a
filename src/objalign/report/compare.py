"""``objalign compare``: several runs side by side (model pairs, crop modes, ...)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ObjalignError

FIGURES = ("r2", "cosine_mean", "residual_median", "top1", "top5")


def load_reports(run_dirs: list[str | Path]) -> list[tuple[str, dict]]:
    out = []
    for d in run_dirs:
        f = Path(d) / "report.json"
        if not f.is_file():
            raise ObjalignError(f"{d}: no report.json; run `objalign run CONFIG --out {d}` first")
        out.append((str(d), json.loads(f.read_text())))
    return out


def compare_runs(run_dirs: list[str | Path], json_out: str | Path | None = None) -> str:
    """A text table with one row per (run, method, split); optionally the same rows as JSON."""
    reports = load_reports(run_dirs)
    rows = []
    for d, rep in reports:
        for r in rep["results"]:
            rows.append({"run": d, "vision": rep["vision_encoder"]["name"], "text": rep["text_encoder"]["name"],
                         "crop": rep.get("crop", {}).get("mode", "?"), "method": r["method"], "split": r["split"],
                         **{k: r.get(k) for k in FIGURES}})
    if json_out:
        Path(json_out).write_text(json.dumps(rows, indent=1))
    head = f"{'run':<28}{'crop':<9}{'vision':<22}{'text':<16}{'method':<14}{'split':<20}" + "".join(
        f"{k:>16}" for k in FIGURES)
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['run'][-27:]:<28}{r['crop']:<9}{r['vision'][-21:]:<22}{r['text'][-15:]:<16}"
                     f"{r['method']:<14}{r['split']:<20}"
                     + "".join(f"{r[k]:>16.3f}" if isinstance(r[k], (int, float)) else f"{'-':>16}" for k in FIGURES))
    return "\n".join(lines)
