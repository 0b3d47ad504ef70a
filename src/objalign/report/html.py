"""``report.html``: one self-contained file (figures embedded as base64 PNG, inline CSS, no script, no URL).

It opens offline in any browser and can be mailed to a colleague as is.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from objalign.report import beyond, groups, units
from objalign.stats.metrics import ALL_FIGURES, FIGURES, SMALLER_IS_BETTER
from objalign.stats.nulls import describe_null

#: column heading of each figure in the results table
HEADS = {"r2": "R²", "r2_variance_weighted": "R² (var.)", "cosine_mean": "cosine", "residual_mean": "residual mean",
         "residual_median": "residual median", "top1": "top-1", "top5": "top-5", "mean_rank": "mean rank",
         "top1_unseen": "top-1 unseen", "top5_unseen": "top-5 unseen", "mean_rank_unseen": "rank unseen"}

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:0.6em 0;font-size:0.85em}
th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}th{background:#f5f5f5}
td.l,th.l{text-align:left}.ci{color:#777;font-size:0.85em}.base{color:#777}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:0.85em;color:#555}
.note{font-size:0.85em;color:#444;max-width:60em}dl{font-size:0.85em}dt{font-weight:bold}
.headline{font-size:1.05em;background:#f4f8ff;border-left:4px solid #4a7bd0;padding:0.3em 1em}
.toc{font-size:0.85em;columns:2}.toc ol{margin:0.3em 0}h3{font-size:1em;margin:0.8em 0 0.3em}
.strip{display:flex;flex-wrap:wrap;gap:6px}.card{width:112px;font-size:0.72em;border:1px solid #ddd;padding:3px;
background:#fafafa}.card img,.noimg{width:96px;height:96px;display:block;margin:0 auto 2px}.noimg{background:#eee}
.card b,.card span{display:block;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}.card.hit span{color:#17702a}
.why{color:#a33;font-size:0.9em}.scroll{overflow:auto;max-height:60em}
table.cm{font-size:0.65em}.pair{border:1px solid #eee;padding:0 4px 4px}.pair h3{font-size:0.8em}
table.cm td,table.cm th{padding:1px 3px;border:1px solid #f2f2f2}
"""


def _e(x) -> str:
    return html.escape(str(x))


def _num(v, digits=3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return _e(v)


def _cell(row: dict, key: str, digits: int = 3) -> str:
    v = row.get(key)
    ci = row.get("ci", {}).get(key)
    out = _num(v, digits)
    if ci:
        out += f'<br><span class="ci">[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]</span>'
    return f"<td>{out}</td>"


def _p(row: dict, key: str) -> str:
    p = row.get("pvalue", {}).get(key)
    return "<td>-</td>" if p is None else f"<td>{p:.3g}</td>"


def results_table(rows: list[dict], split: str) -> str:
    """An HTML table of one split's rows: figures with their CIs and p-values."""
    rows = [r for r in rows if r["split"] == split]
    if not rows:
        return ""
    unseen = any("top1_unseen" in r for r in rows)
    cols = [(k, HEADS[k]) for k in (ALL_FIGURES if unseen else FIGURES)]
    pcols = [("r2", "p(R²)"), ("top1", "p(top-1)")] + ([("top1_unseen", "p(top-1 unseen)")] if unseen else [])
    head = "<tr><th class=l>method</th>" + "".join(f"<th>{_e(t)}</th>" for _, t in cols + pcols) + "</tr>"
    body = []
    for r in rows:
        cls = ' class="base"' if r["method"] in ("mean", "shuffled") else ""
        body.append(f"<tr{cls}><td class=l>{_e(r['method'])}</td>"
                    + "".join(_cell(r, k, 2 if k.startswith("mean_rank") else 3) for k, _ in cols)
                    + "".join(_p(r, k) for k, _ in pcols) + "</tr>")
    nulls = "".join(f"<li>{_e(r['method'])}: {_e(describe_null(r.get('null')))}</li>" for r in rows if "null" in r)
    table = "<table>" + head + "".join(body) + "</table>"
    return table + (f"<p class=note>p-values:</p><ul>{nulls}</ul>" if nulls else "")


def _png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _sections(report: dict, figures: list[tuple[str, Path, str]]) -> list[tuple[str, str, str]]:
    """``(anchor, heading, html)`` of the statistics: protocols' tables, similarity, the rest, figures."""
    out = []
    for split, desc in report.get("protocols", {}).items():
        out.append((f"table-{split}", split, f"<p class=note>{_e(desc)}</p>" + results_table(report["results"], split)))
    for split, why in (report.get("skipped_protocols") or {}).items():
        out.append((f"table-{split}", split, f"<p class=note>skipped: {_e(why)}</p>"))
    if figures and figures[0][1].name == "intervals.png":
        heading, path, caption = figures[0]
        out.append(("figure-0", heading, f"<figure><img src=\"{_png(path)}\" alt=\"{_e(heading)}\">"
                                         f"<figcaption>{_e(caption)}</figcaption></figure>"))
        figures = figures[1:]
    sim = report.get("similarity") or {}
    if sim.get("values"):
        note = (f"<p class=note>{_e(sim.get('features', ''))}; n = {sim['n']}, k = {sim.get('k')}, "
                f"SVCCA dim = {sim.get('svcca_dim')}; ties: {_e(sim.get('ties', ''))}. "
                f"Chance level of mutual k-NN ≈ k/(n-1) = {sim.get('chance_mutual_knn', 0):.3f}.</p>")
        head = "<tr><th class=l>pairing</th>" + "".join(f"<th>{_e(k)}</th>" for k in sim["values"]) + "</tr>"
        body = "<tr><td class=l>real</td>" + "".join(f"<td>{_num(x)}</td>" for x in sim["values"].values()) + "</tr>"
        if sim.get("values_shuffled"):
            body += ("<tr class=base><td class=l>shuffled images</td>"
                     + "".join(f"<td>{_num(sim['values_shuffled'].get(k))}</td>" for k in sim["values"]) + "</tr>")
        out.append(("similarity", "similarity measures (no fitting)", note + "<table>" + head + body + "</table>"))
    rest = "\n".join(beyond.html_parts(report) + units.html_parts(report) + groups.html_parts(report))
    if rest:
        out.append(("beyond", "category level, open vocabulary, units", rest))
    for k, (heading, path, caption) in enumerate(figures, start=len(out)):
        out.append((f"figure-{k}", heading, f"<figure><img src=\"{_png(path)}\" alt=\"{_e(heading)}\">"
                                           f"<figcaption>{_e(caption)}</figcaption></figure>"))
    worst = [r for r in report.get("per_category", []) if r["method"] == "ridge"]
    if worst:
        rows = ["<table><tr><th class=l>split</th><th class=l>category</th><th>n</th><th>top-1</th><th>top-5</th>"
                "<th>mean rank</th><th>cosine</th><th>top-1 unseen</th></tr>"]
        for r in sorted(worst, key=lambda r: (r["split"], r["top1"])):
            rows.append(f"<tr><td class=l>{_e(r['split'])}</td><td class=l>{_e(r['category'])}</td><td>{r['n']}</td>"
                        f"<td>{r['top1']:.2f}</td><td>{r['top5']:.2f}</td><td>{r['mean_rank']:.2f}</td>"
                        f"<td>{r['cosine_mean']:.3f}</td><td>{_num(r.get('top1_unseen'), 2)}</td></tr>")
        out.append(("per-category", "per-category figures (ridge)", "\n".join(rows) + "</table>"))
    return out


def build_html(report: dict, title: str, figures: list[tuple[str, Path, str]], notes: list[str],
               headline: list[str] | None = None, top: list[tuple[str, str, str]] | None = None) -> str:
    """The whole page: the headline, a contents list, ``top`` sections (the objects, where the map goes wrong),
    the statistics and figures, and the method notes folded away.

    Parameters
    ----------
    report : report.json's content
    title : page title
    figures : list of (heading, PNG path, caption); each PNG is embedded
    notes : paragraphs of plain text shown under "How to read this" (folded)
    headline : sentences shown first (:func:`objalign.report.gallery.headline`)
    top : ``(anchor, heading, html)`` sections shown before the statistics
    """
    v, t = report["vision_encoder"], report["text_encoder"]
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{_e(title)}</h1>"]
    if headline:
        parts.append("<div class=headline id=headline>" + "".join(f"<p>{_e(s)}</p>" for s in headline) + "</div>")
    parts.append("<table>" + "".join(f"<tr><td class=l>{_e(k)}</td><td class=l>{_e(val)}</td></tr>" for k, val in [
        ("dataset", f"{report['dataset']} (fingerprint {report['dataset_fingerprint']})"),
        ("objects",
         f"{report['n_instances']} embedded, {report['n_images']} images, {report['n_categories']} categories"),
        ("crops", report["crop"].get("mode", "?")),
        ("vision", f"{v['name']} ({v['dim']}-d)"),
        ("text", f"{t['name']} ({t['dim']}-d, prompt {t.get('template', '{}')!r})"),
    ]) + "</table>")
    sections = list(top or []) + _sections(report, figures)
    sections.append(("notes", "how to read this",
                     "<details><summary>method notes</summary>" + "".join(f"<p class=note>{_e(n)}</p>" for n in notes)
                     + f"<p class=note>Smaller is better for: {_e(', '.join(sorted(SMALLER_IS_BETTER)))}.</p>"
                     "</details>"))
    parts.append("<nav class=toc><b>contents</b><ol>" + "".join(f'<li><a href="#{a}">{_e(h)}</a></li>'
                                                               for a, h, _ in sections) + "</ol></nav>")
    parts += [f'<h2 id="{a}">{_e(h)}</h2>{body}' for a, h, body in sections]
    parts.append("</body></html>")
    return "\n".join(parts)
