"""The align stage's unit-of-analysis studies and convergence curves (``align/units.json``, ``align/convergence.json``).

:func:`check_unit_studies` validates their settings before the main evaluation runs; :func:`unit_studies` runs them
after it (its result rows are the object level) and writes their files. See :mod:`objalign.evaluation.units` and
:mod:`objalign.evaluation.convergence` for the definitions.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from objalign.embed.images import load_image_embeddings
from objalign.errors import ObjalignError
from objalign.evaluation.convergence import check_repeats, check_sizes, convergence
from objalign.evaluation.units import check_units, image_level, object_rows, parse_ks, prototype_curve
from objalign.maps.threads import single_threaded_blas
from objalign.runs import atomic_write_json


def check_unit_studies(cfg, n: int) -> None:
    """One line naming a bad ``align.units``, ``prototype_k``, ``prototype_draws``, ``convergence_sizes`` (sizes
    above the run's ``n`` objects included), ``convergence_repeats`` or ``convergence_methods``."""

    units = check_units(cfg.units)
    if "prototype" in units:
        parse_ks(cfg.prototype_k)
        if isinstance(cfg.prototype_draws, bool) or cfg.prototype_draws < 1:
            raise ObjalignError(f"align.prototype_draws = {cfg.prototype_draws}: expected an integer >= 1, e.g. 20")
    if cfg.convergence_sizes:
        check_sizes(cfg.convergence_sizes, n)
        check_repeats(cfg.convergence_repeats)
        bad = [m for m in cfg.convergence_methods if m not in ("ridge", "kernel_ridge")]
        if bad or not cfg.convergence_methods:
            raise ObjalignError(f"align.convergence_methods = {list(cfg.convergence_methods)}: expected ridge and/or "
                                "kernel_ridge")


def unit_studies(out: str | Path, X: np.ndarray, Y: np.ndarray, groups: np.ndarray, label_index: np.ndarray,
                 class_emb: np.ndarray, cfg, rows: list[dict], evaluate: Callable[..., dict]) -> dict:
    """Run the studies ``cfg`` asks for and write ``align/units.json`` and ``align/convergence.json``.

    Parameters
    ----------
    out : the run folder (the whole-image store is read from ``out/embeddings/image.json``)
    X, Y, groups, label_index, class_emb : the object-level data the align stage evaluated
    cfg : AlignConfig
    rows : the align stage's result rows (the object level)
    evaluate : :func:`objalign.evaluation.engine.evaluate` (the convergence curves re-run it on subsamples)

    Returns
    -------
    dict with ``units`` and ``convergence`` (what the two files hold; ``{}`` for what was not asked for)
    """

    out = Path(out)
    with single_threaded_blas():  # small matrices (images, categories): BLAS threads only contend
        res = {"units": _units(out, X, groups, label_index, class_emb, cfg, rows), "convergence": {}}
    if cfg.convergence_sizes:

        res["convergence"] = convergence(X, Y, groups, label_index, class_emb, cfg, evaluate)
    d = out / "align"
    atomic_write_json(d / "units.json", res["units"])
    atomic_write_json(d / "convergence.json", res["convergence"])
    return res


def _units(out: Path, X, groups, label_index, class_emb, cfg, rows) -> dict:
    """``align/units.json``'s content: object rows, image level and prototype curve as ``cfg.units`` asks."""


    units = check_units(cfg.units)
    u: dict = {}
    if "image" in units or "prototype" in units:
        u = {"units": ["object", *[x for x in units if x != "object"]], "object": object_rows(rows)}
    if "image" in units:

        t0 = time.perf_counter()
        loaded = load_image_embeddings(out)
        if loaded is None:
            u["image"] = {"skipped": "no whole-image store (embeddings/image.json): run the embed stage again "
                                     "with image in align.units (objalign embed --force)"}
        else:
            ids, X_img, info = loaded
            u["image"] = {**image_level(X_img.astype(X.dtype), ids, label_index, groups, class_emb, cfg),
                          "n_images_skipped_while_embedding": info.get("n_skipped", 0),
                          "seconds": round(time.perf_counter() - t0, 3)}
    if "prototype" in units:
        t0 = time.perf_counter()
        try:
            u["prototype"] = prototype_curve(X, label_index, class_emb, cfg.prototype_k, cfg.prototype_draws, cfg)
            u["prototype"]["seconds"] = round(time.perf_counter() - t0, 3)
        except ObjalignError as exc:  # e.g. fewer than 3 categories: say why, keep the rest
            u["prototype"] = {"skipped": str(exc)}
    return u
