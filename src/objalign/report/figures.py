"""Figures drawn from result tables (never from models). matplotlib with the Agg backend.

Each function takes plain arrays / dicts as written by the align stage and writes one PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from objalign.stats.metrics import CURVE_FIGURES

SPLIT_TITLES = {"heldout_images": "held-out images", "heldout_categories": "held-out categories"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def residual_histogram(per_split: dict[str, dict[str, dict[str, np.ndarray]]], path: str | Path,
                       title: str = "") -> None:
    """Histograms of per-object L2 residuals and cosine similarities per method, one row per split.

    Parameters
    ----------
    per_split : dict split -> method -> {"residual_l2": (n,), "cosine": (n,)}
        (A dict method -> arrays is accepted as one unnamed split.)
    path : output PNG
    title : figure title
    """
    plt = _plt()
    if per_split and all("residual_l2" in v for v in per_split.values()):
        per_split = {"": per_split}  # type: ignore[dict-item]
    rows = max(len(per_split), 1)
    fig, axes = plt.subplots(rows, 2, figsize=(11, 3.6 * rows), squeeze=False)
    for r, (split, per_method) in enumerate(per_split.items()):
        all_res = np.concatenate([v["residual_l2"] for v in per_method.values()]) if per_method else np.zeros(1)
        bins = np.linspace(0, max(float(all_res.max()), 1e-6), 40)
        all_cos = np.concatenate([v["cosine"] for v in per_method.values()]) if per_method else np.zeros(1)
        lo = max(-1.0, np.floor(float(all_cos.min()) * 10) / 10)
        cos_bins = np.linspace(lo, 1.0, 41)
        for name, v in per_method.items():
            axes[r, 0].hist(v["residual_l2"], bins=bins, alpha=0.5,
                            label=f"{name} (median {np.median(v['residual_l2']):.3f})")
            axes[r, 1].hist(v["cosine"], bins=cos_bins, alpha=0.5,
                            label=f"{name} (mean {v['cosine'].mean():.3f})")
        label = SPLIT_TITLES.get(split, split)
        axes[r, 0].set_xlabel("L2 residual ||predicted - true text embedding||" + (f"  [{label}]" if label else ""))
        axes[r, 1].set_xlabel("cosine(predicted, true text embedding)" + (f"  [{label}]" if label else ""))
        for ax in axes[r]:
            ax.set_ylabel("objects")
            ax.legend(fontsize=8)
    fig.suptitle(title or "held-out residuals per method")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def per_category_errors(per_category: list[dict], path: str | Path,
                        methods: tuple[str, ...] = ("ridge", "kernel_ridge")) -> None:
    """Top-1 accuracy per category for each split (bars per fitted method), worst categories at the top.

    Parameters
    ----------
    per_category : list of dict with ``split``, ``method``, ``category``, ``top1`` (and ``top1_unseen``)
    path : output PNG
    methods : methods drawn (others, e.g. baselines, are left out)
    """
    plt = _plt()
    splits = list(dict.fromkeys(r["split"] for r in per_category))
    shown = [m for m in methods if any(r["method"] == m for r in per_category)] or \
        list(dict.fromkeys(r["method"] for r in per_category))[:1]
    cats = sorted({r["category"] for r in per_category})
    panels = []
    for s in splits:
        panels.append((s, "top1", f"{SPLIT_TITLES.get(s, s)}: top-1 among all categories"))
        if any("top1_unseen" in r for r in per_category if r["split"] == s):
            panels.append((s, "top1_unseen", f"{SPLIT_TITLES.get(s, s)}: top-1 among unseen categories"))
    height = max(3.0, 0.22 * len(cats) + 1.5)
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.6 * max(len(panels), 1), height), squeeze=False)
    for a, (s, key, title) in enumerate(panels):
        ax = axes[0, a]
        table = {(r["method"], r["category"]): r for r in per_category if r["split"] == s}
        ref = shown[0]
        order = sorted(cats, key=lambda c: table.get((ref, c), {}).get(key, -1.0), reverse=True)
        y = np.arange(len(order))
        h = 0.8 / len(shown)
        for j, m in enumerate(shown):
            vals = [table.get((m, c), {}).get(key, np.nan) for c in order]
            ax.barh(y + j * h, vals, height=h, label=m)
        ax.set_yticks(y + 0.4 - h / 2)
        ax.set_yticklabels(order, fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("fraction of the category's test objects")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def null_distributions(nulls: dict[str, np.ndarray], rows: list[dict], path: str | Path,
                       figures: tuple[str, ...] = CURVE_FIGURES) -> bool:
    """Observed figure against its permutation null, one panel per (split, method, figure).

    Parameters
    ----------
    nulls : dict ``"{split}__{method}__{figure}"`` -> (B,) null values
    rows : result rows (``split``, ``method``, the observed figures, ``pvalue``)
    path : output PNG
    figures : which figures to draw

    Returns
    -------
    bool
        False (and nothing written) when there is no null to draw.
    """
    pairs = [(r, f) for r in rows for f in figures if f"{r['split']}__{r['method']}__{f}" in nulls]
    if not pairs:
        return False
    plt = _plt()
    by_row = {}
    for r, f in pairs:
        by_row.setdefault((r["split"], r["method"]), (r, []))[1].append(f)
    ncol = max(len(fs) for _, fs in by_row.values())
    fig, axes = plt.subplots(len(by_row), ncol, figsize=(3.6 * ncol, 2.7 * len(by_row)), squeeze=False)
    for i, ((split, method), (r, fs)) in enumerate(by_row.items()):
        for j in range(ncol):
            ax = axes[i, j]
            if j >= len(fs):
                ax.axis("off")
                continue
            f = fs[j]
            null = nulls[f"{split}__{method}__{f}"]
            ax.hist(null, bins=30, color="0.6", label=f"null (B={len(null)})")
            ax.axvline(r[f], color="C3", lw=2, label=f"observed {r[f]:.3f}")
            p = r.get("pvalue", {}).get(f)
            ax.set_title(f"{method}, {SPLIT_TITLES.get(split, split)}\n{f}" + (f"  p={p:.3g}" if p is not None else ""),
                         fontsize=8)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def pca_variance(pca: dict, path: str | Path) -> bool:
    """Cumulative explained variance of the vision PCA (training split) and of the text targets.

    Parameters
    ----------
    pca : dict with ``vision_explained_variance_ratio`` (d,) and optionally ``text_explained_variance_ratio``
    path : output PNG

    Returns
    -------
    bool
        False (nothing written) without PCA information.
    """
    v = pca.get("vision_explained_variance_ratio")
    if not v:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    cv = np.cumsum(v)
    ax.plot(np.arange(1, len(cv) + 1), cv, label=f"vision PCA ({len(cv)} components kept: {cv[-1]:.1%} of variance)")
    t = pca.get("text_explained_variance_ratio")
    if t:
        ct = np.cumsum(t)
        ax.plot(np.arange(1, len(ct) + 1), ct, label="text targets (one embedding per category)")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("principal components")
    ax.set_ylabel("cumulative explained variance")
    ax.set_title("PCA explained variance (fitted on training objects)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def projection(proj: dict[str, np.ndarray], path: str | Path) -> bool:
    """2-D views of both spaces: vision test features (top two principal axes), and the language space
    (top two principal axes of the category embeddings) with the category names and the mapped test objects.

    Parameters
    ----------
    proj : dict with ``vision_2d`` (n, 2), ``label`` (n,), ``class_2d`` (c, 2), ``mapped_2d`` (n, 2),
        ``class_name`` (c,), ``mapped_method`` ()
    path : output PNG

    Returns
    -------
    bool
        False (nothing written) without projection arrays.
    """
    if "vision_2d" not in proj or len(proj["vision_2d"]) == 0:
        return False
    plt = _plt()
    lab = np.asarray(proj["label"])
    c = len(proj["class_2d"])
    cmap = plt.get_cmap("tab20" if c <= 20 else "gist_ncar")
    colours = cmap(np.linspace(0, 1, max(c, 2), endpoint=False)) if c > 20 else cmap(np.arange(c) % 20)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    V = np.asarray(proj["vision_2d"])
    axes[0].scatter(V[:, 0], V[:, 1] if V.shape[1] > 1 else np.zeros(len(V)), c=colours[lab], s=10, alpha=0.8)
    axes[0].set_title("vision space: held-out objects on the top two principal axes", fontsize=9)
    M, Cc = np.asarray(proj["mapped_2d"]), np.asarray(proj["class_2d"])
    axes[1].scatter(M[:, 0], M[:, 1], c=colours[lab], s=8, alpha=0.35)
    axes[1].scatter(Cc[:, 0], Cc[:, 1], c=colours[:c], s=60, marker="*", edgecolors="k", linewidths=0.5)
    names = proj.get("class_name", np.arange(c).astype(str))
    for j in range(c):
        axes[1].annotate(str(names[j]), Cc[j], fontsize=6, xytext=(3, 3), textcoords="offset points")
    method = str(proj.get("mapped_method", "map"))
    axes[1].set_title(f"language space: category embeddings (stars) and {method}-mapped held-out objects (dots)",
                      fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def intervals(rows: list[dict], path: str | Path,
              figures: tuple[str, ...] = ("top1", "top1_unseen", "r2", "cosine_mean")) -> bool:
    """Headline figures with their bootstrap intervals, one row per (split, method), chance levels dashed.

    Parameters
    ----------
    rows : result rows (``split``, ``method``, figures, ``ci``, ``pvalue``, ``chance_top1``,
        ``chance_top1_unseen``)
    path : output PNG
    figures : figures drawn, one panel each (those no row has are left out)

    Returns
    -------
    bool
        False (nothing written) when no row has an interval.
    """
    figs = [f for f in figures if any(f in r.get("ci", {}) for r in rows)]
    if not figs:
        return False
    plt = _plt()
    labels = [f"{r['method']} | {SPLIT_TITLES.get(r['split'], r['split'])}" for r in rows]
    y = np.arange(len(rows))[::-1]
    fig, axes = plt.subplots(1, len(figs), figsize=(3.4 * len(figs) + 2.2, 0.42 * len(rows) + 1.4), squeeze=False,
                             sharey=True)
    splits = list(dict.fromkeys(r["split"] for r in rows))
    for a, f in enumerate(figs):
        ax = axes[0, a]
        for i, r in enumerate(rows):
            if f not in r.get("ci", {}):
                continue
            lo, hi = r["ci"][f]
            colour = f"C{splits.index(r['split'])}"
            base = r["method"] in ("mean", "shuffled")
            # a percentile interval need not contain the estimate (e.g. R² on few test images): draw both as they are
            ax.hlines(y[i], lo, hi, color=colour, lw=1.5)
            ax.plot([lo, hi], [y[i], y[i]], "|", color=colour, ms=8)
            ax.plot(r[f], y[i], "o", color=colour, mfc="white" if base else colour)
            p = r.get("pvalue", {}).get(f)
            if p is not None:
                ax.annotate(f"p={p:.2g}", (hi, y[i]), xytext=(4, -3), textcoords="offset points", fontsize=6)
        chance = {"top1": "chance_top1", "top1_unseen": "chance_top1_unseen"}.get(f)
        if chance:
            for s in splits:
                c = next((r.get(chance) for r in rows if r["split"] == s and r.get(chance) is not None), None)
                if c is not None:
                    ax.axvline(c, ls="--", lw=0.8, color=f"C{splits.index(s)}")
        ax.set_title(f, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_yticks(y)
    axes[0, 0].set_yticklabels(labels, fontsize=8)
    fig.suptitle("figures with bootstrap intervals (open markers: baselines; dashed: chance)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
