"""Per-instance and aggregate alignment metrics between predicted and true text embeddings."""

from __future__ import annotations

import numpy as np


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def per_instance(pred: np.ndarray, true: np.ndarray, label_index: np.ndarray,
                 class_emb: np.ndarray) -> dict[str, np.ndarray]:
    """Per-instance residuals and retrieval ranks.

    Parameters
    ----------
    pred, true : (n, d)
        Predicted and true text embeddings.
    label_index : (n,) int
        Row of ``class_emb`` that holds each instance's true category.
    class_emb : (c, d)
        One text embedding per candidate category.

    Returns
    -------
    dict with ``residual_l2`` (n,), ``cosine`` (n,) and ``rank`` (n,) — the 1-based rank of the true
    category among the candidates by cosine similarity to the prediction (ties counted against the truth:
    rank = 1 + number of candidates scoring strictly higher).
    """
    residual = np.linalg.norm(pred - true, axis=1)
    cosine = np.sum(_unit(pred) * _unit(true), axis=1)
    sims = _unit(pred) @ _unit(class_emb).T
    own = sims[np.arange(len(pred)), label_index]
    rank = 1 + np.sum(sims > own[:, None], axis=1)
    return {"residual_l2": residual, "cosine": cosine, "rank": rank}


def r2_uniform(true: np.ndarray, pred: np.ndarray) -> float:
    """R² averaged uniformly over output dimensions (scikit-learn's ``r2_score`` default)."""
    from sklearn.metrics import r2_score

    return float(r2_score(true, pred, multioutput="uniform_average"))


def r2_variance_weighted(true: np.ndarray, pred: np.ndarray) -> float:
    """R² with outputs weighted by their variance (scikit-learn's ``multioutput="variance_weighted"``)."""
    from sklearn.metrics import r2_score

    return float(r2_score(true, pred, multioutput="variance_weighted"))


def summarize(pred: np.ndarray, true: np.ndarray, label_index: np.ndarray, class_emb: np.ndarray) -> tuple[dict, dict]:
    """Aggregate figures (``r2``, ``cosine_mean``, ``residual_mean``, ``residual_median``, ``top1``, ``top5``,
    ``mean_rank``) and the per-instance arrays they come from."""
    per = per_instance(pred, true, label_index, class_emb)
    agg = {
        "r2": r2_uniform(true, pred),
        "r2_variance_weighted": r2_variance_weighted(true, pred),
        "cosine_mean": float(per["cosine"].mean()),
        "residual_mean": float(per["residual_l2"].mean()),
        "residual_median": float(np.median(per["residual_l2"])),
        "top1": float(np.mean(per["rank"] <= 1)),
        "top5": float(np.mean(per["rank"] <= 5)),
        "mean_rank": float(per["rank"].mean()),
        "n_test": int(len(pred)),
        "n_candidates": int(len(class_emb)),
    }
    return agg, per
