"""Figures drawn from result tables (never from models). matplotlib with the Agg backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def residual_histogram(per_method: dict[str, dict[str, np.ndarray]], path: str | Path, title: str = "") -> None:
    """Histograms of per-instance L2 residuals and cosine similarities, one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    all_res = np.concatenate([v["residual_l2"] for v in per_method.values()]) if per_method else np.zeros(1)
    bins = np.linspace(0, max(float(all_res.max()), 1e-6), 40)
    for name, v in per_method.items():
        axes[0].hist(v["residual_l2"], bins=bins, alpha=0.5, label=f"{name} (median {np.median(v['residual_l2']):.3f})")
        axes[1].hist(v["cosine"], bins=np.linspace(-1, 1, 41), alpha=0.5, label=f"{name} (mean {v['cosine'].mean():.3f})")
    axes[0].set_xlabel("L2 residual ||predicted - true text embedding||")
    axes[1].set_xlabel("cosine(predicted, true text embedding)")
    for ax in axes:
        ax.set_ylabel("objects")
        ax.legend(fontsize=8)
    fig.suptitle(title or "held-out residuals per method")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
