"""Figures per category group (LVIS frequency: rare, common, frequent): how alignment falls along the long tail.

:func:`group_summary` folds ``per_category`` rows (one per split, method and category) into one row per split,
method and group, from a plain ``{category id: group}`` mapping; :func:`text_lines` and :func:`html_parts` show
``report["per_group"]``. Plain dicts in, plain dicts out.
"""

from __future__ import annotations

from html import escape

#: Groups in the order they are shown (others after them, sorted).
GROUP_ORDER = ("rare", "common", "frequent")
#: Figures shown (when the rows have them): held-out-category ones first.
SHOWN = ("top1_unseen", "top5_unseen", "top1", "top5", "mean_rank", "cosine_mean")
_SKIP = ("split", "method", "category", "category_id", "n")


def _order(groups) -> list[str]:
    return [g for g in GROUP_ORDER if g in groups] + sorted(g for g in groups if g not in GROUP_ORDER)


def group_summary(per_category: list[dict], group_of: dict) -> list[dict]:
    """One row per split, method and group.

    Parameters
    ----------
    per_category : list of dict
        ``split``, ``method``, ``category_id``, ``n`` and numeric figures (``top1``, ``top1_unseen`` ...).
    group_of : dict
        Category id (int or its string) -> group name; categories not in it are left out.

    Returns
    -------
    list of dict
        ``split``, ``method``, ``group``, ``n_categories``, ``n`` (objects) and, per figure, its object-weighted
        mean (the figure over the group's objects) and ``<figure>_category_mean`` (each category counted once).
    """
    groups = {str(k): v for k, v in group_of.items()}
    cells: dict = {}
    for r in per_category:
        g = groups.get(str(r.get("category_id")))
        if g is not None:
            cells.setdefault((r["split"], r["method"], g), []).append(r)
    out = []
    for (split, method, g), rows in cells.items():
        n = sum(r["n"] for r in rows)
        row = {"split": split, "method": method, "group": g, "n_categories": len(rows), "n": n}
        keys = [k for k in rows[0] if k not in _SKIP and isinstance(rows[0][k], (int, float))]
        for k in keys:
            have = [r for r in rows if isinstance(r.get(k), (int, float))]
            if have:
                row[k] = sum(r[k] * r["n"] for r in have) / max(sum(r["n"] for r in have), 1)
                row[f"{k}_category_mean"] = sum(r[k] for r in have) / len(have)
        out.append(row)
    rank = {g: i for i, g in enumerate(_order({r["group"] for r in out}))}
    return sorted(out, key=lambda r: (r["split"], r["method"], rank[r["group"]]))


def _figures(rows: list[dict]) -> list[str]:
    return [k for k in SHOWN if any(k in r for r in rows)]


def text_lines(report: dict) -> list[str]:
    """Lines for ``report.txt``: ridge's figures per group and split (nothing without ``per_group``)."""
    rows = [r for r in report.get("per_group") or [] if r["method"] == "ridge"] or report.get("per_group") or []
    if not rows:
        return []
    lines = ["", f"by category frequency group ({rows[0]['method']}; object-weighted means; "
                 "rare 1-10, common 11-100, frequent >100 training images):"]
    for split in dict.fromkeys(r["split"] for r in rows):
        part = [r for r in rows if r["split"] == split]
        figs = _figures(part)
        lines.append(f"  {split}")
        for r in part:
            lines.append(f"    {r['group']:<9} {r['n_categories']:>5} categories {r['n']:>6} objects  "
                         + "  ".join(f"{k} {r[k]:.3f}" for k in figs if k in r))
    return lines


def html_parts(report: dict) -> list[str]:
    """An HTML table of :func:`text_lines`'s figures (nothing without ``per_group``)."""
    rows = report.get("per_group") or []
    if not rows:
        return []
    figs = _figures(rows)
    parts = ["<h2>by category frequency group</h2><p class=note>Object-weighted means per LVIS frequency group "
             "(rare: 1-10 training images, common: 11-100, frequent: more).</p><table><tr><th class=l>split</th>"
             "<th class=l>method</th><th class=l>group</th><th>categories</th><th>objects</th>"
             + "".join(f"<th>{escape(k)}</th>" for k in figs) + "</tr>"]
    for r in rows:
        parts.append(f"<tr><td class=l>{escape(r['split'])}</td><td class=l>{escape(r['method'])}</td>"
                     f"<td class=l>{escape(r['group'])}</td><td>{r['n_categories']}</td><td>{r['n']}</td>"
                     + "".join(f"<td>{r[k]:.3f}</td>" if k in r else "<td>-</td>" for k in figs) + "</tr>")
    parts.append("</table>")
    return parts
