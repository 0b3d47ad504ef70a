"""The parts of a report a reader looks at first: the headline, the objects themselves, and where the map goes wrong.

* :func:`headline`: one sentence per protocol (estimate, interval, chance, p-value and its null) and a one-line
  verdict of the calibrated similarity measures — the same numbers as the tables, rounded.
* :func:`plan`: which test objects a gallery shows, per protocol: the worst- and best-aligned (cosine between
  the map's prediction and the true name), up to three typical ones per category (around its median cosine)
  and, for the held-out-images protocol, examples of the most-confused pairs; at most ``cap`` objects over all
  protocols.
* :func:`confusion`: the category confusion matrix (true x predicted top-1), rows and columns in the order of a
  clustering of the text embeddings (``category_order``), and the most-confused pairs.
* :func:`html_sections` / :func:`text_lines`: those as HTML (thumbnails as JPEG data URIs) and plain text.

Everything reads the report dictionary and the per-instance arrays of :func:`objalign.evaluation.engine.evaluate`
(``{split}__index``, ``{split}__label``, ``{split}__{method}__cosine`` / ``rank`` / ``top3``, ``category_name``,
``category_order``); thumbnails come from the caller as ``{object index: (h, w, 3) uint8}`` — this module never
reads an image file.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter

import numpy as np

#: How many thumbnails a report carries at most, over all protocols (``report.max_thumbnails``).
DEFAULT_CAP = 240
#: Edge of a thumbnail in pixels.
THUMB_SIZE = 96
#: Worst- and best-aligned objects shown per protocol.
N_EXTREMES = 8
#: Typical objects per category at most (around its median cosine), as the cap allows.
N_TYPICAL = 3
#: Most-confused pairs listed, and example objects per pair.
N_PAIRS, N_PAIR_EXAMPLES = 10, 3
#: Reason shown when no thumbnails were given at all.
NO_CROPS = "no crop images: the embeddings were given as arrays"

_SPLIT_NAMES = {"heldout_images": "Held-out images", "heldout_categories": "Held-out categories"}


def _e(x) -> str:
    return html.escape(str(x))


def main_method(rows: list[dict], split: str) -> dict | None:
    """The row a headline reports for ``split``: ridge when present, else the first fitted (non-baseline) map."""
    rs = [r for r in rows if r["split"] == split and r["method"] not in ("mean", "shuffled")]
    return next((r for r in rs if r["method"] == "ridge"), rs[0] if rs else None)


def headline(report: dict) -> list[str]:
    """One sentence per protocol and a verdict of the similarity measures (see the module docstring)."""
    lines = []
    for split in dict.fromkeys(r["split"] for r in report["results"]):
        r = main_method(report["results"], split)
        if r is None:
            continue
        ci = r.get("ci", {}).get("top1")
        n = r.get("n_candidates", round(1 / report["chance_top1"]))
        s = (f"{_SPLIT_NAMES.get(split, split)}: {r['method']} ranks the true name first for {r['top1']:.0%} of "
             f"{r['n_test']} objects" + (f" [{ci[0]:.0%}, {ci[1]:.0%}]" if ci else "")
             + f" among {n} names (chance {r.get('chance_top1', report['chance_top1']):.0%})")
        if "top1_unseen" in r:
            s += (f", {r['top1_unseen']:.0%} among the ~{r['n_candidates_unseen']:.0f} names it never saw "
                  f"(chance {r['chance_top1_unseen']:.0%})")
        p = r.get("pvalue", {}).get("top1")
        if p is not None:
            null = r.get("null") or {}
            s += f"; p = {p:.2g} ({null.get('kind', '?')} null, B = {null.get('n_permutations', '?')})"
        lines.append(s + ".")
    for split, why in (report.get("skipped_protocols") or {}).items():
        lines.append(f"{_SPLIT_NAMES.get(split, split)}: not evaluated ({why}).")
    cal = (report.get("similarity") or {}).get("calibrated") or {}
    if cal:
        above = [k for k, v in cal.items() if v.get("pvalue_bh") is not None and v["pvalue_bh"] < 0.05]
        below = [k for k in cal if k not in above]
        s = f"Similarity measures (calibrated, BH-adjusted): {len(above)} of {len(cal)} beat their permutation null"
        if above:
            s += " (" + ", ".join(f"{k} {cal[k]['score']:.3f}, p(BH) = {cal[k]['pvalue_bh']:.2g}" for k in above) + ")"
        if below:
            s += "; not " + ", ".join(below)
        lines.append(s + ".")
    return lines


def _names(per: dict, c: int) -> list[str]:
    names = per.get("category_name")
    return [str(x) for x in names] if names is not None and len(names) == c else [str(i) for i in range(c)]


def _n_categories(per: dict) -> int:
    if "category_order" in per:
        return len(per["category_order"])
    labels = [v for k, v in per.items() if k.endswith("__label")]
    return int(max(int(v.max()) for v in labels) + 1) if labels else 0


def confusion(labels: np.ndarray, predicted: np.ndarray, n_categories: int) -> np.ndarray:
    """Counts ``(c, c)``: entry ``[t, p]`` is how many objects of category ``t`` the map named ``p`` first."""
    m = np.zeros((n_categories, n_categories), np.int64)
    np.add.at(m, (np.asarray(labels, np.int64), np.asarray(predicted, np.int64)), 1)
    return m


def confused_pairs(matrix: np.ndarray, k: int = N_PAIRS) -> list[tuple[int, int, int]]:
    """The ``k`` largest off-diagonal entries as ``(true, predicted, count)``, largest first."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:k]
    return [(int(t), int(p), int(off[t, p])) for t, p in zip(*np.unravel_index(flat, off.shape)) if off[t, p] > 0]


def plan(report: dict, per: dict, cap: int = DEFAULT_CAP) -> dict:
    """Which test objects each protocol's gallery shows (positions in the protocol's test arrays).

    Returns
    -------
    dict split -> ``{"method", "worst", "best", "typical": [(category, [pos])], "pairs": [(t, p, count, [pos])]}``
    (only splits whose per-instance arrays are present); over all splits at most ``cap`` positions.
    """
    splits = [s for s in dict.fromkeys(r["split"] for r in report["results"]) if f"{s}__label" in per]
    out, budget = {}, max(int(cap), 0)
    share = budget // max(len(splits), 1)
    for split in splits:
        r = main_method(report["results"], split)
        if r is None or f"{split}__{r['method']}__cosine" not in per:
            continue
        m, lab = r["method"], np.asarray(per[f"{split}__label"])
        cos = np.asarray(per[f"{split}__{m}__cosine"])
        order = np.argsort(cos, kind="stable")
        k = min(N_EXTREMES, share // 4, len(cos) // 2)
        entry = {"method": m, "worst": order[:k].tolist(), "best": order[::-1][:k].tolist(), "typical": [],
                 "pairs": []}
        left = share - 2 * k
        top3 = per.get(f"{split}__{m}__top3")
        if split == "heldout_images" and top3 is not None:
            mat = confusion(lab, top3[:, 0], _n_categories(per))
            for t, p, n in confused_pairs(mat):
                pos = np.flatnonzero((lab == t) & (top3[:, 0] == p))[:min(N_PAIR_EXAMPLES, max(left, 0))]
                left -= len(pos)
                entry["pairs"].append((t, p, n, pos.tolist()))
        cats = sorted(set(lab.tolist()), key=lambda c: -np.sum(lab == c))
        per_cat = int(np.clip(max(left, 0) // max(len(cats), 1), 1, N_TYPICAL))
        for c in cats[:max(left, 0)]:
            rows = np.flatnonzero(lab == c)
            mid = rows[np.argsort(cos[rows], kind="stable")]  # around the category's median cosine
            start = max(len(mid) // 2 - per_cat // 2, 0)
            entry["typical"].append((int(c), mid[start:start + per_cat].tolist()))
        out[split] = entry
    return out


def wanted(the_plan: dict, per: dict) -> dict[str, list[int]]:
    """Per split, the positions the plan shows (each once), for a caller that renders their thumbnails."""
    out = {}
    for split, e in the_plan.items():
        pos = e["worst"] + e["best"] + [p for _, ps in e["typical"] for p in ps]
        pos += [p for *_, ps in e["pairs"] for p in ps]
        out[split] = sorted(set(pos))
    return out


def jpeg_uri(thumb: np.ndarray, quality: int = 80) -> str:
    """A ``(h, w, 3)`` uint8 image as a ``data:image/jpeg;base64,`` URI."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(thumb, dtype=np.uint8)).save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _card(split: str, pos: int, per: dict, method: str, names: list[str], thumbs: dict) -> str:
    idx = int(per[f"{split}__index"][pos])
    true = names[int(per[f"{split}__label"][pos])]
    cos = float(per[f"{split}__{method}__cosine"][pos])
    top3 = per.get(f"{split}__{method}__top3")
    guess = " · ".join(names[int(j)] for j in top3[pos]) if top3 is not None else "?"
    ok = top3 is not None and names[int(top3[pos][0])] == true
    img = (f'<img src="{jpeg_uri(thumbs[idx])}" alt="object {idx}" data-object="{idx}">' if idx in thumbs
           else '<div class=noimg>no image</div>')
    return (f'<div class="card{" hit" if ok else ""}" title="object {idx}">{img}<b>{_e(true)}</b>'
            f"<span>{_e(guess)}</span><span>cos {cos:.2f}</span></div>")


def _strip(title: str, split: str, positions, per, method, names, thumbs) -> str:
    cards = "".join(_card(split, p, per, method, names, thumbs) for p in positions)
    return f"<h3>{_e(title)}</h3><div class=strip>{cards}</div>" if cards else ""


def gallery_html(report: dict, per: dict, the_plan: dict, thumbs: dict, note: str | None) -> list[tuple[str, str, str]]:
    """``(anchor, heading, html)`` sections: one gallery per protocol (see :func:`plan`)."""
    names = _names(per, _n_categories(per))
    out = []
    for split, e in the_plan.items():
        m = e["method"]
        head = (f"<p class=note>Test objects as the vision encoder saw them (crop window and mask), with the true "
                f"name in bold, the {_e(m)} map's three nearest names (green: the first is right) and the cosine "
                f"between prediction and true name.</p>")
        if note:
            head += f"<p class=why>{_e(note)}</p>"
        parts = [head, _strip("worst aligned", split, e["worst"], per, m, names, thumbs),
                 _strip("best aligned", split, e["best"], per, m, names, thumbs)]
        groups = "".join(f"<div class=pair><h3>{_e(names[c])}</h3><div class=strip>"
                         + "".join(_card(split, q, per, m, names, thumbs) for q in ps) + "</div></div>"
                         for c, ps in e["typical"])
        if groups:
            parts.append(f"<h3>typical objects per category (around its median cosine)</h3><div class=strip>{groups}"
                         "</div>")
        out.append((f"objects-{split}", f"the objects: {split}", "".join(parts)))
    return out


def _heat(v: float) -> str:
    g = int(round(255 - 175 * v))
    return f"rgb({g},{g + (255 - g) // 3},255)" if v > 0 else ""


def _pairs_html(the_plan: dict, per: dict, names: list[str], thumbs: dict) -> str:
    e = the_plan.get("heldout_images") or {}
    groups = []
    for t, p, n, pos in e.get("pairs", []):
        cards = "".join(_card("heldout_images", q, per, e["method"], names, thumbs) for q in pos)
        groups.append(f"<div class=pair><h3>{_e(names[t])} → {_e(names[p])} ({n})</h3>"
                      f"<div class=strip>{cards}</div></div>")
    if not groups:
        return ""
    return "<p class=note>Most confused (true → named), with example objects:</p><div class=strip>" + "".join(
        groups) + "</div>"


def confusion_html(per: dict, rows: list[dict], the_plan: dict | None = None,
                   thumbs: dict | None = None) -> list[tuple[str, str, str]]:
    """``(anchor, heading, html)``: the held-out-images confusion matrix as a heat-map table (counts in cells),
    the most-confused pairs with example thumbnails (objects of ``the_plan``'s ``pairs``), and the distractors
    most often named for held-out categories."""
    c = _n_categories(per)
    names = _names(per, c)
    out = []
    r = main_method(rows, "heldout_images")
    top3 = per.get(f"heldout_images__{r['method']}__top3") if r else None
    if top3 is not None and "heldout_images__label" in per:
        mat = confusion(per["heldout_images__label"], top3[:, 0], c)
        order = np.asarray(per.get("category_order", np.arange(c)))
        m = mat[np.ix_(order, order)]
        frac = m / np.maximum(m.sum(1, keepdims=True), 1)
        head = "<tr><th></th>" + "".join(f'<th title="{_e(names[j])}">{k + 1}</th>' for k, j in enumerate(order))
        body = []
        for a, i in enumerate(order):
            cells = "".join(f'<td style="background:{_heat(frac[a, b])}">{m[a, b]}</td>' if m[a, b]
                            else "<td></td>" for b in range(c))
            body.append(f"<tr><th class=l>{a + 1} {_e(names[i])}</th>{cells}</tr>")
        pairs = _pairs_html(the_plan or {}, per, names, thumbs or {})
        html_ = (f"<p class=note>Rows: true category; columns: the {_e(r['method'])} map's first name (numbered as "
                 f"the rows); counts of held-out-image test objects, shaded by row fraction. Categories are ordered "
                 f"by a clustering of their text embeddings, so confusions between near names sit near the "
                 f"diagonal.</p><div class=scroll><table class=cm data-confusion=\"{_e(r['method'])}\">"
                 f"{head}{''.join(body)}</table></div>" + pairs)
        out.append(("confusion", "where the map goes wrong", html_))
    r = main_method(rows, "heldout_categories")
    top3 = per.get(f"heldout_categories__{r['method']}__top3") if r else None
    if top3 is not None and "heldout_categories__label" in per:
        lab = per["heldout_categories__label"]
        wrong = Counter(int(p) for t, p in zip(lab, top3[:, 0]) if t != p)
        items = "".join(f"<li>{_e(names[p])}: {n}</li>" for p, n in wrong.most_common(N_PAIRS))
        out.append(("distractors", "held-out categories: names predicted instead",
                    f"<p class=note>The names the {_e(r['method'])} map gave held-out-category objects most often "
                    f"when it was wrong ({sum(wrong.values())} of {len(lab)} objects).</p><ol>{items}</ol>"))
    return out


def text_lines(report: dict, per: dict) -> list[str]:
    """report.txt's lines for the most-confused pairs (held-out images) and the most-predicted distractors."""
    c = _n_categories(per)
    names, lines = _names(per, c), []
    for split, what in (("heldout_images", "most confused (true -> named)"),
                        ("heldout_categories", "held-out categories: names predicted instead")):
        r = main_method(report["results"], split)
        top3 = per.get(f"{split}__{r['method']}__top3") if r else None
        if top3 is None or f"{split}__label" not in per:
            continue
        lab = per[f"{split}__label"]
        if split == "heldout_images":
            items = [f"{names[t]} -> {names[p]} {n}" for t, p, n in confused_pairs(confusion(lab, top3[:, 0], c))]
        else:
            wrong = Counter(int(p) for t, p in zip(lab, top3[:, 0]) if t != p)
            items = [f"{names[p]} {n}" for p, n in wrong.most_common(N_PAIRS)]
        if items:
            lines += ["", f"{what}, {r['method']}:", "  " + ", ".join(items)]
    return lines
