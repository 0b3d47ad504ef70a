"""Report sections for the unit of analysis (object vs image side by side, prototype-k curve) and the convergence
curves — text lines, HTML fragments and figures, from ``report.json``'s ``units`` and ``convergence`` only.
"""

from __future__ import annotations

from pathlib import Path

from objalign.report.beyond import _e, _f, _save, _table
from objalign.report.figures import SPLIT_TITLES, _plt
from objalign.stats.metrics import UNIT_FIGURES

NOTE = ("Unit of analysis: 'object' maps each object crop to its category's text embedding (the tables above); "
        "'image' maps each whole image (the same vision encoder on the whole image) to the mean of its objects' label "
        "embeddings, on the same splits (held-out categories: an image is tested in every fold that holds out one of "
        "its categories, trained on in folds holding out none), ranking its target among the distinct targets of the "
        "test images (chance 1/candidates); 'prototype' averages k L2-normalised objects per category and compares "
        "the prototypes with the category names (RSA, linear CKA, held-out-category top-1 of a ridge map over category "
        "folds), mean and interval over repeated draws. Convergence: the headline figures re-estimated on whole-image "
        "subsamples of increasing size (nulls and bootstrap off), mean and interval over draws; the last point is the "
        "run itself.")

#: figures shown for the unit-of-analysis comparison
_HEADS = {"r2": "R2", "cosine_mean": "cos", "top1": "top-1", "top5": "top-5", "mean_rank": "rank"}
FIGS = tuple((k, _HEADS[k]) for k in UNIT_FIGURES)
#: prototype measures shown
PROTO = (("rsa_spearman", "RSA (Spearman)"), ("cka_linear", "linear CKA"), ("heldout_top1", "held-out-category top-1"))


def present(report: dict) -> bool:
    """Whether ``report`` has a unit-of-analysis or convergence section (its note is added then)."""
    return bool(report.get("units") or report.get("convergence"))


def _units(report: dict) -> dict:
    return report.get("units") or {}


def side_by_side(report: dict) -> list[dict]:
    """Object-level and image-level rows of ``report['units']``, paired by split and method (object first)."""
    u = _units(report)
    image = (u.get("image") or {}).get("rows") or []
    rows = []
    for r in image:
        obj = next((o for o in u.get("object", []) if o["split"] == r["split"] and o["method"] == r["method"]), None)
        rows += ([obj] if obj else []) + [r]
    return rows


def _ci(r: dict, k: str) -> str:
    ci = (r.get("ci") or {}).get(k)
    return f" [{ci[0]:.3f},{ci[1]:.3f}]" if ci else ""


def _point(p: dict) -> str:
    return "-" if p.get("mean") is None else f"{p['mean']:.3f} [{p['low']:.3f},{p['high']:.3f}]"


def text_lines(report: dict) -> list[str]:
    """report.txt lines for the unit-of-analysis and convergence sections present in ``report``."""
    lines = []
    u = _units(report)
    img = u.get("image") or {}
    if img.get("skipped"):
        lines += ["", f"image level: skipped ({img['skipped']})"]
    pairs = side_by_side(report)
    if pairs:
        lines += ["", f"unit of analysis, object vs image on the same images ({img['n_images']} images; image target = "
                      "mean of its objects' label embeddings; n: test objects / test images, scored once per fold):",
                  f"  {'split':<20}{'method':<8}{'unit':<8}{'n':>6}{'cand.':>7}{'chance':>8}"
                  + "".join(f"{h:>9}" for _, h in FIGS)]
        for r in pairs:
            lines.append(f"  {r['split']:<20}{r['method']:<8}{r['unit']:<8}{r['n_test']:>6}{r['n_candidates']:>7.0f}"
                         f"{r['chance_top1']:>8.3f}" + "".join(f"{_f(r.get(k)):>9}" for k, _ in FIGS))
    for split, why in (img.get("skipped_protocols") or {}).items():
        lines.append(f"  image level, {split}: skipped ({why})")
    pr = u.get("prototype") or {}
    if pr.get("points"):
        lines += ["", f"category prototypes of k objects vs the {pr['n_categories']} category names (mean [interval] "
                      f"over draws; held-out-category top-1 over {pr['n_folds']} folds, chance "
                      f"{pr['chance_heldout_top1']:.3f}):",
                  f"  {'k':>5}{'draws':>6}" + "".join(f"  {h:<26}" for _, h in PROTO)]
        for p in pr["points"]:
            lines.append(f"  {str(p['k']):>5}{p['n_draws']:>6}" + "".join(f"  {_point(p[k]):<26}" for k, _ in PROTO))
    elif pr.get("skipped"):
        lines += ["", f"prototypes: skipped ({pr['skipped']})"]
    cv = report.get("convergence") or {}
    if cv.get("curves"):
        lines += ["", f"convergence: figures on whole-image subsamples ({cv['repeats']} draws per size, mean "
                      f"[{cv['confidence']:.0%} interval]; the last size is the run itself, {cv['seconds']:.1f} s):"]
        for c in cv["curves"]:
            if c["figure"] == "cosine_mean":
                continue
            lines.append(f"  {c['method']:<8}{c['split']:<20}{c['figure']:<13}"
                         + "  ".join(f"n={p['size']}: {_point(p)}" + (f" ({p['n_failed']} failed)" if p["n_failed"]
                                                                       else "") for p in c["points"]))
    return lines


def html_parts(report: dict) -> list[str]:
    """report.html fragments (headings and tables) for the unit-of-analysis and convergence sections."""
    parts = []
    u = _units(report)
    img = u.get("image") or {}
    pairs = side_by_side(report)
    if pairs:
        parts.append("<h2>unit of analysis: object vs image</h2><p class=note>The same held-out images; "
                     f"{_e(img['target'])}; "
                     f"retrieval: {_e(img['retrieval'])}; held-out categories: {_e(img['heldout_categories'])}. "
                     f"{img['n_images']} images with a whole-image embedding.</p>")
        parts.append(_table(["split", "method", "unit", "n test", "candidates", "chance top-1"] + [h for _, h in FIGS],
                            [[_e(r["split"]), _e(r["method"]), _e(r["unit"]), str(r["n_test"]),
                              f"{r['n_candidates']:.0f}", _f(r["chance_top1"])]
                             + [_f(r.get(k)) + _ci(r, k) for k, _ in FIGS] for r in pairs], 3))
    elif img.get("skipped"):
        parts.append(f"<h2>unit of analysis: image</h2><p class=note>skipped: {_e(img['skipped'])}</p>")
    pr = u.get("prototype") or {}
    if pr.get("points"):
        parts.append(f"<h2>category prototypes of k objects</h2><p class=note>{_e(pr['definition'])}; "
                     f"{pr['n_categories']} categories; held-out-category top-1 over {pr['n_folds']} category folds "
                     f"(chance {pr['chance_heldout_top1']:.3f}); mean [interval] over draws.</p>")
        parts.append(_table(["k", "draws", "categories with fewer than k"] + [h for _, h in PROTO],
                            [[_e(p["k"]), str(p["n_draws"]), str(p["n_categories_below_k"])]
                             + [_point(p[k]) for k, _ in PROTO] for p in pr["points"]], 1))
    cv = report.get("convergence") or {}
    if cv.get("curves"):
        parts.append(f"<h2>convergence with the number of objects</h2><p class=note>{_e(cv['subsample'])}; "
                     f"{cv['repeats']} draws per size; off inside the curve: {_e(cv['off_inside_the_curve'])}; mean "
                     f"[{cv['confidence']:.0%} interval]; the last size is the run itself.</p>")
        sizes = cv["sizes"]
        parts.append(_table(["method", "split", "figure"] + [f"n = {s}" for s in sizes],
                            [[_e(c["method"]), _e(c["split"]), _e(c["figure"])] + [_point(p) for p in c["points"]]
                             for c in cv["curves"]], 3))
    return parts


def _yerr(points: list[dict]) -> list[list[float]]:
    """matplotlib's ``yerr`` of ``{"mean", "low", "high"}`` points (never negative: a one-draw interval is a point)."""
    return [[max(p["mean"] - p["low"], 0.0) for p in points], [max(p["high"] - p["mean"], 0.0) for p in points]]


def figures(report: dict, out: Path) -> list[tuple[str, Path, str]]:
    """The unit-of-analysis, prototype-k and convergence figures: ``(heading, path, caption)`` each."""

    made = []
    pairs = [r for r in side_by_side(report) if r["method"] == "ridge"]
    if pairs:
        plt = _plt()
        splits = list(dict.fromkeys(r["split"] for r in pairs))
        figs = (("r2", "R2"), ("cosine_mean", "cosine"), ("top1", "top-1"))
        fig, axes = plt.subplots(1, len(splits), figsize=(5 * len(splits), 3.6), squeeze=False)
        for ax, split in zip(axes[0], splits):
            for j, unit in enumerate(("object", "image")):
                r = next((r for r in pairs if r["split"] == split and r["unit"] == unit), None)
                if r is None:
                    continue
                xs = [i + (j - 0.5) * 0.38 for i in range(len(figs))]
                ys = [r.get(k) or 0.0 for k, _ in figs]
                err = [[max(y - (r.get("ci") or {}).get(k, [y, y])[0], 0) for (k, _), y in zip(figs, ys)],
                       [max((r.get("ci") or {}).get(k, [y, y])[1] - y, 0) for (k, _), y in zip(figs, ys)]]
                ax.bar(xs, ys, 0.38, yerr=err, capsize=3, label=f"{unit} (chance top-1 {r['chance_top1']:.3f})",
                       color="#3070b0" if unit == "object" else "#e0a060")
            ax.set_xticks(range(len(figs)), [h for _, h in figs])
            ax.axhline(0, color="k", lw=0.6)
            ax.set_title(f"ridge, {SPLIT_TITLES.get(split, split)}")
            ax.legend(fontsize=7)
        _save(plt, fig, out / "units.png")
        made.append(("unit of analysis: object vs image", out / "units.png",
                     "Ridge on object crops vs whole images (target: the mean of the image's objects' label "
                     "embeddings), same held-out images; bars: bootstrap intervals over images."))
    pr = _units(report).get("prototype") or {}
    if pr.get("points"):
        plt = _plt()
        pts = pr["points"]
        ks = [p["k"] for p in pts]
        x = list(range(len(ks)))
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for key, label in PROTO:
            ax.errorbar(x, [p[key]["mean"] for p in pts], yerr=_yerr([p[key] for p in pts]), marker="o", capsize=3,
                        label=label)
        ax.axhline(pr["chance_heldout_top1"], ls="--", color="k", lw=0.8, label="chance top-1")
        ax.set_xticks(x, [str(k) for k in ks])
        ax.set_xlabel("objects per prototype (k)")
        ax.legend(fontsize=7)
        _save(plt, fig, out / "prototype_k.png")
        made.append(("category prototypes of k objects", out / "prototype_k.png",
                     "Prototypes (mean of k normalised object embeddings) vs the category names, per k: mean and "
                     "interval over draws; dashed: chance of held-out-category top-1."))
    cv = report.get("convergence") or {}
    curves = [c for c in cv.get("curves", []) if c["figure"] in ("r2", "top1", "top1_unseen")]
    if curves:
        plt = _plt()
        names = list(dict.fromkeys(c["figure"] for c in curves))
        fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.6), squeeze=False)
        for ax, name in zip(axes[0], names):
            for c in (c for c in curves if c["figure"] == name):
                pts = [p for p in c["points"] if p["mean"] is not None]
                ax.errorbar([p["n_objects_mean"] for p in pts], [p["mean"] for p in pts], yerr=_yerr(pts),
                            marker="o", capsize=3, label=f"{c['method']} {SPLIT_TITLES.get(c['split'], c['split'])}")
            ax.set_xlabel("objects")
            ax.set_title(name)
            ax.legend(fontsize=7)
        _save(plt, fig, out / "convergence.png")
        made.append(("convergence with the number of objects", out / "convergence.png",
                     "Each headline figure on whole-image subsamples of the run (mean and interval over draws); the "
                     "last point is the run itself."))
    return made
