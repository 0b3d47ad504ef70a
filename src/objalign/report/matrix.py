"""The matrix's figures and ``matrix.html``, from its result tables only (``matrix.parquet``, ``best.parquet``,
``matrix.json``; never a model).

- ``heatmap_<vision>__<text>.png``: per model pair, vision layer x text layer of the headline measure of the
  headline method, one panel per protocol, the best cell outlined;
- ``models.png``: vision model x text model, each pair at its best layer pair, one panel per protocol;
- ``matrix.html``: one self-contained page (figures embedded, as ``report.html``).
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np

from objalign.report.figures import SPLIT_TITLES, _plt
from objalign.report.html import _CSS, _png
from objalign.stats.metrics import is_smaller_better

NOTE = ("Each cell is one vision layer against one text layer, aligned exactly as `objalign run` aligns a model "
        "pair (PCA, ridge and kernel ridge with grouped CV, held-out images and held-out categories, bootstrap "
        "intervals, permutation p-values), on the same objects for every cell. The best cell of a grid is inflated "
        "by the choice itself, so its p-value is corrected: under each permutation (the same image-label shuffle "
        "in every cell) the best figure over the grid is taken, and the observed best is compared with those B "
        "maxima: p_max = (1 + #{null max >= observed max}) / (B + 1) (minima for residuals and ranks). p_max is "
        "never below the best cell's own p-value and equals it for a one-cell grid.")


def _e(x) -> str:
    return html.escape(str(x))


def _rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(str(path)).to_pylist() if path.is_file() else []


def file_label(label: str) -> str:
    """A model label as a file-name part (``facebook/dinov2-base`` -> ``facebook-dinov2-base``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "model"


def layer_grid(rows: list[dict], vision: str, text: str, protocol: str, method: str, measure: str,
               vlayers: list[int], tlayers: list[int]) -> np.ndarray:
    """``(len(vlayers), len(tlayers))`` values of one measure for one model pair (NaN where a cell failed)."""
    grid = np.full((len(vlayers), len(tlayers)), np.nan)
    vi, ti = {v: i for i, v in enumerate(vlayers)}, {t: i for i, t in enumerate(tlayers)}
    for r in rows:
        if (r["vision_model"], r["text_model"], r["protocol"], r["method"], r["measure"], r["status"]) == \
                (vision, text, protocol, method, measure, "ok") and r["vision_layer"] in vi and r["text_layer"] in ti:
            grid[vi[r["vision_layer"]], ti[r["text_layer"]]] = r["value"]
    return grid


def _find_best(best: list[dict], v: str, t: str, protocol: str, method: str, measure: str) -> dict | None:
    for b in best:
        if (b["vision_model"], b["text_model"], b["protocol"], b["method"], b["measure"], b["status"]) == \
                (v, t, protocol, method, measure, "ok"):
            return b
    return None


def _annotate(ax, grid: np.ndarray, labels: dict) -> None:
    """Write ``labels[(i, j)]`` on cell (i, j), dark on the bright end of viridis and light elsewhere."""
    finite = grid[np.isfinite(grid)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    for (i, j), text in labels.items():
        v = grid[i, j]
        bright = np.isfinite(v) and hi > lo and (v - lo) / (hi - lo) > 0.6
        ax.text(j, i, text, ha="center", va="center", fontsize=7, color="k" if bright else "w")


def heatmap(rows, best, vision: dict, text: dict, protocols: list[str], method: str, measures: dict,
            path: Path) -> None:
    """One model pair's layer x layer heatmaps (one panel per protocol) into ``path``."""
    plt = _plt()
    vl, tl = vision["layers"], text["layers"]
    fig, axes = plt.subplots(1, len(protocols), figsize=(max(4.0, 0.55 * len(tl) + 2.5) * len(protocols),
                                                         max(3.5, 0.4 * len(vl) + 2)), squeeze=False)
    for ax, protocol in zip(axes[0], protocols):
        m = measures.get(protocol, "top1")
        g = layer_grid(rows, vision["label"], text["label"], protocol, method, m, vl, tl)
        im = ax.imshow(np.ma.masked_invalid(g), origin="lower", aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(tl)), [str(x) for x in tl])
        ax.set_yticks(range(len(vl)), [str(x) for x in vl])
        ax.set_xlabel(f"{text['label']} layer")
        ax.set_ylabel(f"{vision['label']} layer")
        if g.size <= 400:
            _annotate(ax, g, {(i, j): "x" if np.isnan(g[i, j]) else f"{g[i, j]:.2f}"
                              for i in range(g.shape[0]) for j in range(g.shape[1])})
        b = _find_best(best, vision["label"], text["label"], protocol, method, m)
        title = f"{SPLIT_TITLES.get(protocol, protocol)}: {m} ({method})"
        if b:
            i, j = vl.index(b["vision_layer"]), tl.index(b["text_layer"])
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
            title += (f"\nbest ({b['vision_layer']}, {b['text_layer']}) = {b['value']:.3f}, "
                      f"p_max = {b['pvalue_max']:.3g}")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"{vision['label']} x {text['label']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def models_figure(best, visions: list[dict], texts: list[dict], protocols: list[str], method: str, measures: dict,
                  path: Path) -> None:
    """Vision model x text model at each pair's best layer pair (one panel per protocol) into ``path``."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(protocols), figsize=((1.6 * len(texts) + 3) * len(protocols),
                                                         1.0 * len(visions) + 2.5), squeeze=False)
    for ax, protocol in zip(axes[0], protocols):
        m = measures.get(protocol, "top1")
        g = np.full((len(visions), len(texts)), np.nan)
        notes = {}
        for i, v in enumerate(visions):
            for j, t in enumerate(texts):
                b = _find_best(best, v["label"], t["label"], protocol, method, m)
                if b:
                    g[i, j] = b["value"]
                    notes[i, j] = (f"{b['value']:.3f}\nL{b['vision_layer']} x L{b['text_layer']}\n"
                                   f"p_max {b['pvalue_max']:.2g}")
        im = ax.imshow(np.ma.masked_invalid(g), aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(texts)), [t["label"] for t in texts], rotation=20, ha="right")
        ax.set_yticks(range(len(visions)), [v["label"] for v in visions])
        _annotate(ax, g, notes)
        ax.set_title(f"{SPLIT_TITLES.get(protocol, protocol)}: best-layer {m} ({method})", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return f"{v:.{digits}g}" if digits == "p" else f"{v:.{digits}f}"


def matrix_headline(meta: dict, best: list[dict]) -> list[str]:
    """One sentence per protocol: the best cell over every model pair for the headline method and measure, with
    its selection-corrected p-value (``p_max``) and the number of cells it was chosen from."""
    lines = []
    for protocol, measure in meta["measure"].items():
        cands = [b for b in best if (b["protocol"], b["method"], b["measure"], b["status"]) ==
                 (protocol, meta["method"], measure, "ok") and np.isfinite(b["value"])]
        if not cands:
            continue
        b = (min if is_smaller_better(measure) else max)(cands, key=lambda x: x["value"])
        lines.append(f"{SPLIT_TITLES.get(protocol, protocol).capitalize()}: {b['vision_model']} layer "
                     f"{b['vision_layer']} with "
                     f"{b['text_model']} layer {b['text_layer']} is best, {meta['method']} {measure} = "
                     f"{_fmt(b['value'])}; p_max = {b['pvalue_max']:.2g} over its {b['n_cells']} cells "
                     f"(B = {b['n_permutations']}).")
    return lines


def build_matrix_html(meta: dict, rows: list[dict], best: list[dict], figures: list[tuple[str, Path, str]]) -> str:
    """The whole ``matrix.html`` page (figures embedded as base64 PNG)."""
    title = f"objalign matrix: {meta.get('title', '')}".rstrip(": ")
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{_e(title)}</h1>"]
    info = [("objects", f"{meta['n_objects']} (the same in every cell), {meta['n_images']} images, "
                        f"{meta['n_categories']} categories"),
            ("vision", "; ".join(f"{v['label']} ({v['name']}, {v['dim']}-d, layers {v['layers']})"
                                 for v in meta["vision"])),
            ("text", "; ".join(f"{t['label']} ({t['name']}, {t['dim']}-d, layers {t['layers']})"
                               for t in meta["text"])),
            ("cells", f"{meta['n_cells']} (vision layer x text layer x model pair)"),
            ("null", f"{meta['null']}, B = {meta['n_permutations']}")]
    head = matrix_headline(meta, best)
    if head:
        parts.append("<div class=headline id=headline>" + "".join(f"<p>{_e(x)}</p>" for x in head) + "</div>")
    parts.append("<table>" + "".join(f"<tr><td class=l>{_e(k)}</td><td class=l>{_e(v)}</td></tr>" for k, v in info)
                 + "</table>")
    parts.append("<!--contents-->")
    method, measures = meta["method"], meta["measure"]
    shown = [b for b in best if b["status"] == "ok" and measures.get(b["protocol"]) == b["measure"]]
    if shown:
        parts.append("<h2>best layer pair per model pair</h2><table><tr><th class=l>vision</th><th class=l>text</th>"
                     "<th class=l>protocol</th><th class=l>method</th><th class=l>measure</th><th>vision layer</th>"
                     "<th>text layer</th><th>value</th><th>p (cell)</th><th>p_max (corrected)</th><th>cells</th>"
                     "<th>B</th></tr>")
        order = sorted(shown, key=lambda b: (b["protocol"], b["method"] != method, b["vision_model"], b["text_model"]))
        for b in order:
            parts.append(f"<tr><td class=l>{_e(b['vision_model'])}</td><td class=l>{_e(b['text_model'])}</td>"
                         f"<td class=l>{_e(b['protocol'])}</td><td class=l>{_e(b['method'])}</td>"
                         f"<td class=l>{_e(b['measure'])}</td><td>{b['vision_layer']}</td><td>{b['text_layer']}</td>"
                         f"<td>{_fmt(b['value'])}</td><td>{b['pvalue_cell']:.3g}</td><td>{b['pvalue_max']:.3g}</td>"
                         f"<td>{b['n_cells']}</td><td>{b['n_permutations']}</td></tr>")
        parts.append("</table><p class=note>Every measure's best pair is in best.parquet; every cell's figures, "
                     "intervals and p-values in matrix.parquet.</p>")
    for heading, path, caption in figures:
        parts.append(f"<h2>{_e(heading)}</h2><figure><img src=\"{_png(path)}\" alt=\"{_e(heading)}\">"
                     f"<figcaption>{_e(caption)}</figcaption></figure>")
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        parts.append("<h2>cells not computed</h2><table><tr><th class=l>vision</th><th>layer</th><th class=l>text</th>"
                     "<th>layer</th><th class=l>protocol</th><th class=l>measure</th><th class=l>status</th>"
                     "<th class=l>reason</th></tr>")
        seen = set()
        for r in bad:
            k = (r["vision_model"], r["vision_layer"], r["text_model"], r["text_layer"], r["protocol"], r["measure"],
                 r["reason"])
            if k in seen:
                continue
            seen.add(k)
            parts.append(f"<tr><td class=l>{_e(r['vision_model'])}</td><td>{r['vision_layer']}</td>"
                         f"<td class=l>{_e(r['text_model'])}</td><td>{r['text_layer']}</td>"
                         f"<td class=l>{_e(r['protocol'] or '-')}</td>"
                         f"<td class=l>{_e(' '.join(x for x in (r['method'], r['measure']) if x) or '-')}</td>"
                         f"<td class=l>{_e(r['status'])}</td>"
                         f"<td class=l>{_e(r['reason'])}</td></tr>")
        parts.append("</table>")
    parts.append(f"<h2>how to read this</h2><details><summary>method notes</summary><p class=note>{_e(NOTE)}</p>"
                 "</details>")
    parts.append("</body></html>")
    return _with_contents("\n".join(parts))


def _with_contents(page: str) -> str:
    """Give every ``<h2>`` an anchor and put a contents list where ``<!--contents-->`` stands."""
    heads = re.findall(r"<h2>(.*?)</h2>", page)
    for k, h in enumerate(heads):
        page = page.replace(f"<h2>{h}</h2>", f'<h2 id="s{k}">{h}</h2>', 1)
    toc = "<nav class=toc><b>contents</b><ol>" + "".join(f'<li><a href="#s{k}">{h}</a></li>'
                                                         for k, h in enumerate(heads)) + "</ol></nav>"
    return page.replace("<!--contents-->", toc, 1)


def write_matrix_report(out: str | Path) -> list[str]:
    """Write the figures and ``matrix.html`` of the matrix in ``out``; returns the file names written."""
    out = Path(out)
    meta = json.loads((out / "matrix.json").read_text())
    rows, best = _rows(out / "matrix.parquet"), _rows(out / "best.parquet")
    protocols = list(dict.fromkeys(r["protocol"] for r in rows if r["status"] == "ok" and r["method"] != "similarity"))
    method, measures = meta["method"], meta["measure"]
    figures = []
    if protocols:
        for v in meta["vision"]:
            for t in meta["text"]:
                p = out / f"heatmap_{file_label(v['label'])}__{file_label(t['label'])}.png"
                heatmap(rows, best, v, t, protocols, method, measures, p)
                figures.append((f"{v['label']} x {t['label']}: layer x layer", p,
                                f"{', '.join(measures.get(x, 'top1') for x in protocols)} of {method} per vision "
                                "layer (rows) and text layer (columns); the red box is the best cell, p_max its "
                                "selection-corrected p-value; x: not computed (matrix.html lists why)."))
        p = out / "models.png"
        models_figure(best, meta["vision"], meta["text"], protocols, method, measures, p)
        figures.append(("model x model at each pair's best layers", p,
                        "each model pair at its best layer pair (layers named in each cell) with p_max."))
    (out / "matrix.html").write_text(build_matrix_html(meta, rows, best, figures), encoding="utf-8")
    return [p.name for _, p, _ in figures] + ["matrix.html"]
