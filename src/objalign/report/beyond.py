"""Report sections for the studies beyond fitted maps: calibrated vs raw similarity, blind matching, RSA and
open-vocabulary retrieval — as text lines, HTML fragments and figures, from ``report.json``'s content only.
"""

from __future__ import annotations

import html
from pathlib import Path

from objalign.report.figures import _plt

NOTE = ("Calibrated scores (Groger, Wen & Brbic 2026): each similarity measure is recomputed on K image-block "
        "permutations of the pairing; tau is the ceil((1-alpha)(K+1))-th smallest of the observed and null scores, "
        "calibrated = max((s - tau)/(1 - tau), 0), p = (1 + #null >= s)/(K + 1), p(BH) Benjamini-Hochberg adjusted "
        "over the measures. Blind matching pairs category prototypes with names from the two within-modality cosine "
        "kernels alone (FAQ quadratic assignment; local similarity + Hungarian); chance is 1/c; the shuffle curve "
        "shows accuracy as a growing fraction of object-label pairs is shuffled. RSA correlates the upper triangles "
        "of the category dissimilarity matrices (Spearman, Kendall tau-a). Open-vocabulary retrieval ranks the true "
        "name among the dataset's names plus distractors (nearest neighbour and CSLS with k = 10).")


def _f(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _e(x) -> str:
    return html.escape(str(x))


def calibrated_rows(report: dict) -> list[tuple[str, dict]]:
    """``(measure, calibrated summary)`` of the similarity measures that were calibrated."""
    cal = (report.get("similarity") or {}).get("calibrated") or {}
    return [(k, v) for k, v in cal.items() if "score" in v]


def text_lines(report: dict) -> list[str]:
    """report.txt lines for every study present in ``report``."""
    lines = []
    cal = calibrated_rows(report)
    if cal:
        v0 = cal[0][1]
        lines += ["", f"calibrated similarity (K = {v0['n_permutations']} image-block permutations, alpha = "
                      f"{v0['alpha']}):",
                  f"  {'measure':<22}{'raw':>8}{'tau':>8}{'calibrated':>12}{'p':>10}{'p(BH)':>10}"]
        for name, v in cal:
            lines.append(f"  {name:<22}{v['score']:>8.3f}{v['threshold']:>8.3f}{v['calibrated']:>12.3f}"
                         f"{v['pvalue']:>10.3g}{v.get('pvalue_bh', float('nan')):>10.3g}")
    ov = [r for r in report.get("results", []) if r.get("open_vocabulary")]
    if ov:
        o = ov[0]["open_vocabulary"]
        ks = [k for k in o["csls"] if k.startswith("p@")]
        lines += ["", f"open-vocabulary retrieval among {o['n_candidates']} names (dataset + distractors; CSLS k = "
                      f"{o['k']}):",
                  f"  {'method':<14}{'split':<20}{'rule':<6}" + "".join(f"{k:>7}" for k in ks) + f"{'rank':>8}"]
        for r in ov:
            for rule in ("nn", "csls"):
                f = r["open_vocabulary"][rule]
                lines.append(f"  {r['method']:<14}{r['split']:<20}{rule:<6}" + "".join(f"{f[k]:>7.3f}" for k in ks)
                             + f"{f['mean_rank']:>8.1f}")
    cl = report.get("category_level") or {}
    m = cl.get("matching") or {}
    if m.get("methods"):
        lines += ["", f"blind matching of {m['n_categories']} category prototypes to names (no pairs; chance "
                      f"{m['chance']:.3f}):"]
        for name, r in m["methods"].items():
            ci = f" [{r['ci'][0]:.3f},{r['ci'][1]:.3f}]" if r.get("ci") else ""
            curve = ", ".join(f"{p['fraction']:.0%} {p['accuracy_mean']:.2f}" for p in r["shuffle_curve"])
            lines.append(f"  {name:<10} accuracy {r['accuracy']:.3f}{ci}; shuffled pairs -> accuracy: {curve}")
    elif m.get("skipped"):
        lines += ["", f"blind matching: skipped ({m['skipped']})"]
    rs = cl.get("rsa") or {}
    if rs.get("values"):
        lines += ["", f"RSA over {rs['n_categories']} categories (vision prototypes vs text embeddings):",
                  "  " + "  ".join(f"{k} {v:.3f}" for k, v in rs["values"].items())]
        c = rs.get("calibrated")
        if c:
            lines.append(f"  {c['measure']}: calibrated {c['calibrated']:.3f} (tau {c['threshold']:.3f}, p "
                         f"{c['pvalue']:.3g}, categories permuted, K = {c['n_permutations']})")
    elif rs.get("skipped"):
        lines += ["", f"RSA: skipped ({rs['skipped']})"]
    return lines


def _table(head: list[str], rows: list[list[str]], first_left: int = 1) -> str:
    th = "".join(f"<th{' class=l' if i < first_left else ''}>{_e(h)}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td{' class=l' if i < first_left else ''}>{c}</td>" for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def html_parts(report: dict) -> list[str]:
    """report.html fragments (headings and tables) for every study present in ``report``."""
    parts = []
    cal = calibrated_rows(report)
    if cal:
        v0 = cal[0][1]
        parts.append("<h2>calibrated vs raw similarity</h2><p class=note>"
                     f"K = {v0['n_permutations']} image-block permutations, alpha = {v0['alpha']}; calibrated = "
                     "max((s - tau)/(1 - tau), 0); p(BH): Benjamini-Hochberg over the measures.</p>")
        parts.append(_table(["measure", "raw", "threshold tau", "calibrated", "null mean", "p", "p (BH)"],
                            [[_e(k), _f(v["score"]), _f(v["threshold"]), _f(v["calibrated"]), _f(v["null_mean"]),
                              f"{v['pvalue']:.3g}", f"{v.get('pvalue_bh', float('nan')):.3g}"] for k, v in cal]))
    ov = [r for r in report.get("results", []) if r.get("open_vocabulary")]
    if ov:
        o = ov[0]["open_vocabulary"]
        ks = [k for k in o["csls"] if k.startswith("p@")]
        parts.append(f"<h2>open-vocabulary retrieval</h2><p class=note>The true name ranked among "
                     f"{o['n_candidates']} names (the dataset's plus distractors); CSLS with k = {o['k']}.</p>")
        rows = [[_e(r["method"]), _e(r["split"]), rule] + [_f(r["open_vocabulary"][rule][k]) for k in ks]
                + [_f(r["open_vocabulary"][rule]["mean_rank"], 1)] for r in ov for rule in ("nn", "csls")]
        parts.append(_table(["method", "split", "rule"] + ks + ["mean rank"], rows, 3))
    cl = report.get("category_level") or {}
    m = cl.get("matching") or {}
    if m.get("methods"):
        parts.append(f"<h2>blind matching</h2><p class=note>{_e(m['kernel'])}; {m['n_categories']} categories, no "
                     f"paired data; chance {m['chance']:.3f}; interval: {m['confidence']:.0%} bootstrap over images."
                     "</p>")
        rows = []
        for name, r in m["methods"].items():
            ci = f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]" if r.get("ci") else "-"
            rows.append([_e(name), _f(r["accuracy"]), ci] + [_f(p["accuracy_mean"]) for p in r["shuffle_curve"]])
        fr = next(iter(m["methods"].values()))["shuffle_curve"]
        parts.append(_table(["method", "accuracy", "interval"] + [f"{p['fraction']:.0%} shuffled" for p in fr], rows))
    rs = cl.get("rsa") or {}
    if rs.get("values"):
        parts.append(f"<h2>representational similarity analysis</h2><p class=note>{rs['n_categories']} categories; "
                     "RDM / comparison.</p>")
        rows = [[_e(k), _f(v)] for k, v in rs["values"].items()]
        c = rs.get("calibrated")
        if c:
            rows.append([_e(f"{c['measure']} calibrated (tau {c['threshold']:.3f}, p {c['pvalue']:.3g})"),
                         _f(c["calibrated"])])
        parts.append(_table(["RDM / comparison", "value"], rows))
    return parts


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figures(report: dict, out: Path) -> list[tuple[str, Path, str]]:
    """Figures of the studies present in ``report``: ``(heading, path, caption)`` each."""

    made = []
    cal = calibrated_rows(report)
    if cal:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(8, 3.6))
        x = range(len(cal))
        ax.bar([i - 0.27 for i in x], [v["score"] for _, v in cal], 0.27, label="raw", color="#999")
        ax.bar(list(x), [v["threshold"] for _, v in cal], 0.27, label="threshold tau", color="#e0a060")
        ax.bar([i + 0.27 for i in x], [v["calibrated"] for _, v in cal], 0.27, label="calibrated", color="#3070b0")
        ax.set_xticks(list(x), [k for k, _ in cal], rotation=20)
        ax.legend(fontsize=8)
        ax.set_title("similarity: raw, permutation threshold, calibrated")
        _save(plt, fig, out / "calibrated.png")
        made.append(("calibrated vs raw similarity", out / "calibrated.png",
                     "Raw score, its permutation threshold tau and the calibrated score per measure."))
    m = ((report.get("category_level") or {}).get("matching") or {}).get("methods")
    if m:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for name, r in m.items():
            fr = [p["fraction"] for p in r["shuffle_curve"]]
            ax.errorbar(fr, [p["accuracy_mean"] for p in r["shuffle_curve"]],
                        yerr=[p["accuracy_sd"] for p in r["shuffle_curve"]], marker="o", capsize=3, label=name)
        ax.axhline(report["category_level"]["matching"]["chance"], ls="--", color="k", lw=0.8, label="chance")
        ax.set_xlabel("fraction of object-label pairs shuffled")
        ax.set_ylabel("matching accuracy")
        ax.legend(fontsize=8)
        _save(plt, fig, out / "matching_shuffle.png")
        made.append(("blind matching under label shuffling", out / "matching_shuffle.png",
                     "Accuracy of matching category prototypes to names as object-label pairs are shuffled (mean and "
                     "standard deviation over shuffles); dashed: chance."))
    ov = [r for r in report.get("results", []) if r.get("open_vocabulary") and r["method"] not in ("mean", "shuffled")]
    if ov:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for r in ov:
            for rule, ls in (("nn", "--"), ("csls", "-")):
                f = r["open_vocabulary"][rule]
                ks = [int(k[2:]) for k in f if k.startswith("p@")]
                ax.plot(ks, [f[f"p@{k}"] for k in ks], ls, marker="o", label=f"{r['method']} {r['split']} {rule}")
        ax.set_xscale("log")
        ax.set_xlabel("k")
        ax.set_ylabel("precision@k")
        ax.set_title(f"true name among {ov[0]['open_vocabulary']['n_candidates']} candidates")
        ax.legend(fontsize=7)
        _save(plt, fig, out / "open_vocabulary.png")
        made.append(("open-vocabulary precision@k", out / "open_vocabulary.png",
                     "Precision@k of the true name among the dataset's names plus distractors; dashed: nearest "
                     "neighbour, solid: CSLS."))
    return made
