"""``objalign compare``: several runs (model pairs, crop modes, ...) side by side, per split and method.

Each run folder must hold a ``report.json``. The table has one row per (run, split, method), grouped by
split so held-out-image and held-out-category figures are never mixed up; each figure shows its bootstrap
interval when the run has one, and the permutation p-value of top-1 when there is one. Below it, every run's
calibrated similarity scores, their p-values Benjamini-Hochberg adjusted over all runs and measures together.
"""

from __future__ import annotations

import json
from pathlib import Path

from objalign.errors import ObjalignError
from objalign.measures.calibrate import bh_adjust
from objalign.stats.metrics import COMPARE_FIGURES as FIGURES


def load_reports(run_dirs: list[str | Path]) -> list[tuple[str, dict]]:
    """``(run folder, report.json content)`` for each folder; one clear error for a folder without a report."""
    out = []
    for d in run_dirs:
        f = Path(d) / "report.json"
        if not f.is_file():
            raise ObjalignError(f"{d}: no report.json; run `objalign run CONFIG --out {d}` first")
        try:
            out.append((str(d), json.loads(f.read_text())))
        except json.JSONDecodeError:
            raise ObjalignError(f"{f}: not valid JSON; rerun `objalign report CONFIG --out {d}`") from None
    return out


def compare_rows(run_dirs: list[str | Path]) -> list[dict]:
    """One dict per (run, split, method): run, encoders, crop mode, figures, ``ci`` and ``pvalue``."""
    rows = []
    for d, rep in load_reports(run_dirs):
        for r in rep.get("results", []):
            rows.append({"run": d, "vision": rep["vision_encoder"]["name"], "text": rep["text_encoder"]["name"],
                         "crop": rep.get("crop", {}).get("mode", "?"), "method": r["method"], "split": r["split"],
                         "n_test": r.get("n_test"), **{k: r.get(k) for k in FIGURES},
                         "ci": {k: v for k, v in r.get("ci", {}).items() if k in FIGURES},
                         "pvalue": {k: v for k, v in r.get("pvalue", {}).items() if k in FIGURES}})
    return rows


def _cell(r: dict, k: str) -> str:
    v = r.get(k)
    if not isinstance(v, (int, float)):
        return "-"
    digits = 2 if k == "mean_rank" else 3
    ci = r["ci"].get(k)
    return f"{v:.{digits}f}" + (f" [{ci[0]:.{digits}f},{ci[1]:.{digits}f}]" if ci else "")


def compare_headline(rows: list[dict]) -> list[str]:
    """One line per split: the run and fitted method with the highest top-1, its interval, and how many runs."""
    lines = []
    for split in dict.fromkeys(r["split"] for r in rows):
        rs = [r for r in rows if r["split"] == split and r["method"] not in ("mean", "shuffled")
              and isinstance(r.get("top1"), (int, float))]
        if not rs:
            continue
        b = max(rs, key=lambda r: r["top1"])
        ci = b["ci"].get("top1")
        lines.append(f"{split.replace('heldout_', 'held-out ').capitalize()}: best top-1 {b['top1']:.0%}"
                     + (f" [{ci[0]:.0%}, {ci[1]:.0%}]" if ci else "")
                     + f" from {b['run']} ({b['crop']}, {b['vision']} -> {b['text']}, {b['method']}); "
                       f"{len({r['run'] for r in rs})} runs compared.")
    return lines + ([""] if lines else [])


def compare_runs(run_dirs: list[str | Path], json_out: str | Path | None = None) -> str:
    """A text table of several runs, grouped by split; optionally the same rows as JSON in ``json_out``."""
    rows = compare_rows(run_dirs)
    if json_out:
        Path(json_out).write_text(json.dumps(rows, indent=1))
    widths = {k: (22 if k in ("r2", "top1", "top1_unseen", "cosine_mean", "top5", "residual_median") else 19)
              for k in FIGURES}
    lines = compare_headline(rows)
    for split in dict.fromkeys(r["split"] for r in rows):
        rs = [r for r in rows if r["split"] == split]
        figs = [k for k in FIGURES if any(isinstance(r.get(k), (int, float)) for r in rs)]
        head = (f"{'run':<28}{'crop':<9}{'vision':<22}{'text':<16}{'method':<14}"
                + "".join(f"{k:<{widths[k]}}" for k in figs) + f"{'p(top1)':>8}")
        lines += [f"{split}", head, "-" * len(head)]
        for r in rs:
            p = r["pvalue"].get("top1")
            lines.append(f"{r['run'][-27:]:<28}{r['crop']:<9}{r['vision'][-21:]:<22}{r['text'][-15:]:<16}"
                         f"{r['method']:<14}" + "".join(f"{_cell(r, k):<{widths[k]}}" for k in figs)
                         + f"{'-' if p is None else f'{p:.2g}':>8}")
        lines.append("")
    cal = calibrated_rows(run_dirs)
    if cal:
        lines += ["calibrated similarity (p(BH): Benjamini-Hochberg over every run and measure below)",
                  f"{'run':<28}{'measure':<22}{'raw':>8}{'tau':>8}{'calibrated':>12}{'p':>10}{'p(BH)':>10}"]
        lines += [f"{r['run'][-27:]:<28}{r['measure']:<22}{r['score']:>8.3f}{r['threshold']:>8.3f}"
                  f"{r['calibrated']:>12.3f}{r['pvalue']:>10.3g}{r['pvalue_bh_all']:>10.3g}" for r in cal]
    return "\n".join(lines).rstrip() + "\n"


def calibrated_rows(run_dirs: list[str | Path]) -> list[dict]:
    """Every run's calibrated similarity measures, with p-values BH-adjusted over all runs and measures together."""

    rows = [{"run": d, "measure": m, **v} for d, rep in load_reports(run_dirs)
            for m, v in ((rep.get("similarity") or {}).get("calibrated") or {}).items() if "pvalue" in v]
    for r, q in zip(rows, bh_adjust([r["pvalue"] for r in rows])):
        r["pvalue_bh_all"] = float(q)
    return rows
