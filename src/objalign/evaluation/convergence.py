"""Convergence curves: each headline figure against the number of sampled objects.

For every size ``s`` in ``align.convergence_sizes`` (a number of objects, or a fraction of the run in (0, 1)) the
run's images are shuffled (seeded, one shuffle per draw) and the shortest prefix whose objects number at least
``s`` is kept: subsamples are **whole images**, so a subsample has between ``s`` and ``s + (largest image's object
count) - 1`` objects. The whole evaluation (splits, PCA, CV search, maps) is repeated on each of
``align.convergence_repeats`` draws with every null, bootstrap and blind matching turned off, and each figure is
summarised by its mean and a percentile interval over the draws.
The curve ends at the run's own size ``n`` (one draw: the whole run), where the figures equal the align stage's
own. A draw that a protocol cannot run on (too few categories for its folds) is counted in ``n_failed``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

from objalign.errors import ObjalignError
from objalign.maps.threads import single_threaded_blas
from objalign.stats.metrics import CURVE_FIGURES  # followed along the curve (``top1_unseen`` where present)


def check_sizes(sizes, n: int) -> list[int]:
    """``align.convergence_sizes`` as numbers of objects, validated against the run's ``n`` objects (one line
    naming a bad size). A size in (0, 1) is a fraction of ``n`` (rounded up); a size >= 1 is a count (an integer)."""
    out = []
    for s in sizes:
        ok = not isinstance(s, bool) and isinstance(s, (int, float, np.integer, np.floating)) and s > 0 \
            and (s < 1 or float(s).is_integer())
        if not ok:
            raise ObjalignError(f"align.convergence_sizes: {s!r} is not a number of objects; expected integers >= 1 "
                                "(counts) or fractions of the run in (0, 1)")
        size = int(np.ceil(s * n)) if s < 1 else int(s)
        if size > n:
            raise ObjalignError(f"align.convergence_sizes: {s:g} is larger than the run's {n} embedded objects; use "
                                f"sizes up to {n} or fractions in (0, 1) (the curve ends at {n} by itself)")
        out.append(max(size, 1))
    return sorted(set(out))


def check_repeats(repeats) -> int:
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ObjalignError(f"align.convergence_repeats = {repeats!r}: expected an integer >= 1, e.g. 5")
    return int(repeats)


def subsample_images(groups: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted object indices of the shortest prefix of a random image order holding at least ``size`` objects.

    Parameters
    ----------
    groups : (n,) image id of each object
    size : int, 1 <= size <= n
    rng : numpy Generator

    Returns
    -------
    (s',) int indices, whole images only, ``s' >= size``
    """
    groups = np.asarray(groups)
    ids, counts = np.unique(groups, return_counts=True)
    if not 1 <= size <= len(groups):
        raise ObjalignError(f"subsample size {size}: expected 1 to the number of objects ({len(groups)})")
    order = rng.permutation(len(ids))
    m = int(np.searchsorted(np.cumsum(counts[order]), size)) + 1
    return np.flatnonzero(np.isin(groups, ids[order[:m]]))


def curve_config(cfg):
    """The AlignConfig of one draw: the run's, with nulls, bootstrap, calibration and blind matching off and
    only ``convergence_methods`` fitted (no baselines)."""
    return dataclasses.replace(cfg, n_permutations=0, n_bootstrap=0, similarity_permutations=0, match_methods=(),
                               methods=tuple(cfg.convergence_methods), baselines=())


def convergence(X: np.ndarray, Y: np.ndarray, groups: np.ndarray, label_index: np.ndarray, class_emb: np.ndarray,
                cfg, evaluate: Callable[..., dict], sizes=None, repeats: int | None = None) -> dict:
    """Headline figures on whole-image subsamples of increasing size.

    Parameters
    ----------
    X, Y, groups, label_index, class_emb : as :func:`objalign.evaluation.engine.evaluate` takes them
    cfg : AlignConfig (``convergence_sizes``, ``convergence_repeats``, ``convergence_methods``, ``confidence``,
        ``seed``, and everything the evaluation itself reads)
    evaluate : the evaluation of one set of embeddings, ``evaluate(X, Y, groups, label_index, class_emb, cfg)``
        returning a dict with ``rows`` (the align stage passes :func:`objalign.evaluation.engine.evaluate`)
    sizes, repeats : override ``cfg.convergence_sizes`` / ``cfg.convergence_repeats``

    Returns
    -------
    dict with ``sizes`` (the asked sizes and ``n``), ``n``, ``repeats``, ``curves`` (one per method, split and
    figure: ``points`` of ``size``, ``n_objects_mean``, ``n_images_mean``, ``mean``, ``low``, ``high``,
    ``n_draws``, ``n_failed``), ``confidence``, ``seconds``
    """
    groups = np.asarray(groups)
    n = len(groups)
    sizes = check_sizes(cfg.convergence_sizes if sizes is None else sizes, n)
    repeats = check_repeats(cfg.convergence_repeats if repeats is None else repeats)
    sub_cfg = curve_config(cfg)
    if n not in sizes:
        sizes.append(n)
    t0 = time.perf_counter()
    values: dict[tuple[str, str, str], dict[int, list[float]]] = {}
    counts: dict[int, list[tuple[int, int]]] = {}
    failed: dict[tuple[str, int], int] = {}
    for j, size in enumerate(sizes):
        rng = np.random.default_rng([cfg.seed, j, size])
        for _ in range(1 if size == n else repeats):
            idx = np.arange(n) if size == n else subsample_images(groups, size, rng)
            counts.setdefault(size, []).append((len(idx), len(np.unique(groups[idx]))))
            try:
                # many small fits: BLAS threads only contend (10x slower on a loaded 2-core machine)
                with single_threaded_blas():
                    res = evaluate(X[idx], Y[idx], groups[idx], label_index[idx], class_emb, sub_cfg)
            except ObjalignError:
                for p in cfg.protocols:
                    failed[(p, size)] = failed.get((p, size), 0) + 1
                continue
            for p in res.get("skipped", {}):
                failed[(p, size)] = failed.get((p, size), 0) + 1
            for r in res["rows"]:
                for fig in CURVE_FIGURES:
                    if r.get(fig) is not None:
                        values.setdefault((r["method"], r["split"], fig), {}).setdefault(size, []).append(r[fig])
    lo_q, hi_q = (1 - cfg.confidence) / 2, (1 + cfg.confidence) / 2
    curves = []
    for (method, split, fig), by_size in values.items():
        points = []
        for size in sizes:
            v = np.asarray(by_size.get(size, []), dtype=np.float64)
            c = np.asarray(counts[size])
            points.append({"size": size, "n_objects_mean": float(c[:, 0].mean()),
                           "n_images_mean": float(c[:, 1].mean()),
                           "n_draws": int(len(v)), "n_failed": failed.get((split, size), 0),
                           "mean": float(v.mean()) if len(v) else None,
                           "low": float(np.quantile(v, lo_q)) if len(v) else None,
                           "high": float(np.quantile(v, hi_q)) if len(v) else None})
        curves.append({"method": method, "split": split, "figure": fig, "points": points})
    return {"n": n, "sizes": sizes, "repeats": repeats, "methods": list(sub_cfg.methods), "confidence": cfg.confidence,
            "subsample": "whole images, shortest prefix of a random image order with at least `size` objects",
            "off_inside_the_curve": "permutation nulls, bootstrap, calibration, blind matching, baselines",
            "curves": curves, "seconds": round(time.perf_counter() - t0, 3)}
