"""Seeded sampling of object instances from a COCO dataset."""

from __future__ import annotations

import json
import math

import numpy as np

from objalign.data.coco import CocoDataset
from objalign.errors import ObjalignError

#: Columns of the instance table written by the ``sample`` stage (one row per sampled object).
INSTANCE_COLUMNS = ("annotation_id", "image_id", "category_id", "category", "file_name",
                    "width", "height", "x", "y", "w", "h", "area")


def _area(a: dict) -> float:
    """The annotation's ``area``, or its box's ``w * h`` when ``area`` is missing or not a finite number."""
    area = a.get("area")
    if isinstance(area, (int, float)) and not isinstance(area, bool):
        try:
            area = float(area)
        except OverflowError:
            area = None
        if area is not None and math.isfinite(area):
            return area
    return float(a["bbox"][2]) * float(a["bbox"][3])


def eligible(ds: CocoDataset, min_area: float = 100.0, exclude_crowd: bool = True,
             category_ids: set | None = None) -> list[dict]:
    """The annotations sampling draws from: usable ones (see ``ds.excluded``), crowd regions left out if
    ``exclude_crowd``, ``area`` at least ``min_area``, and in ``category_ids`` when given."""
    return [a for a in ds.annotations
            if not (exclude_crowd and a.get("iscrowd", 0))
            and _area(a) >= min_area
            and (category_ids is None or a["category_id"] in category_ids)]


def sample_instances(ds: CocoDataset, n: int = 3000, seed: int = 0, min_area: float = 100.0,
                     exclude_crowd: bool = True, categories: tuple[str, ...] = (),
                     strategy: str = "instances", per_category_max: int | None = None,
                     per_category_min: int = 1) -> dict[str, np.ndarray]:
    """Draw up to ``n`` object instances without replacement.

    ``strategy="instances"`` draws objects uniformly; ``"images_first"`` draws images in random order and
    takes all of each image's eligible objects until ``n`` are reached, so a per-image cost (decoding, a SAM
    image encoding) is shared by several objects; ``"per_category"`` shuffles each category's eligible objects and
    takes one object of each category in turn (categories in a random order each round) until ``n`` are drawn, at
    most ``per_category_max`` of one category, leaving out categories with fewer than ``per_category_min`` eligible
    objects: a long tail's many categories are covered instead of mostly its largest.

    Crowd regions (``iscrowd=1``) are excluded by default, as are objects whose ``area`` is below
    ``min_area`` pixels (the box's ``w * h`` when ``area`` is missing or not a finite number). Annotations the
    dataset could not use (a non-finite or empty box, a dangling reference, a ``file_name`` outside the image
    folder) were already left out when it was loaded, whatever their ``area``: see ``ds.excluded``.

    The result is sorted by ``(image_id, annotation_id)`` so each image's objects are contiguous (the
    extraction engine decodes each image once).

    Returns
    -------
    dict of column name -> array of length ``n_sampled`` (see :data:`INSTANCE_COLUMNS`).
    """
    if n <= 0:
        raise ObjalignError(f"sample.n = {n}: expected a positive number of instances")
    wanted = None
    if categories:
        names = set(ds.categories.values())
        unknown = [c for c in categories if c not in names]
        if unknown:
            raise ObjalignError(f"sample.categories: {unknown} not in {ds.path} (known: {sorted(names)[:10]}...)")
        wanted = {cid for cid, name in ds.categories.items() if name in set(categories)}
    pool = eligible(ds, min_area, exclude_crowd, wanted)
    if not pool and not ds.annotations and ds.excluded:  # the loader left every annotation out: say why
        first = ds.excluded[0]
        raise ObjalignError(f"{ds.path}: every annotation was left out when the dataset loaded "
                            f"({ds.excluded_summary()}; first: {first['reason']}); fix the file or the data settings")
    if not pool:
        raise ObjalignError(f"{ds.path}: no instance passes the filters (min_area={min_area}, "
                            f"exclude_crowd={exclude_crowd}); lower sample.min_area")
    rng = np.random.default_rng(seed)
    if strategy == "instances":
        take = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
        chosen = [pool[i] for i in take]
    elif strategy == "images_first":
        by_image: dict[int, list] = {}
        for a in pool:
            by_image.setdefault(a["image_id"], []).append(a)
        chosen = []
        for image_id in rng.permutation(sorted(by_image)):
            chosen.extend(by_image[int(image_id)][: n - len(chosen)])
            if len(chosen) >= n:
                break
    elif strategy == "per_category":
        chosen = _per_category(pool, n, rng, per_category_max, per_category_min, ds.path)
    else:
        raise ObjalignError(f"sample.strategy = {strategy!r}: expected 'instances', 'images_first' or 'per_category'")
    chosen = sorted(chosen, key=lambda a: (a["image_id"], a["id"]))
    cols: dict[str, list] = {c: [] for c in INSTANCE_COLUMNS}
    for a in chosen:
        im = ds.images[a["image_id"]]
        x, y, w, h = (float(v) for v in a["bbox"])
        for k, v in (("annotation_id", a["id"]), ("image_id", a["image_id"]), ("category_id", a["category_id"]),
                     ("category", ds.categories[a["category_id"]]), ("file_name", im["file_name"]),
                     ("width", im["width"]), ("height", im["height"]), ("x", x), ("y", y), ("w", w), ("h", h),
                     ("area", _area(a))):
            cols[k].append(v)
    table = {k: np.asarray(v) for k, v in cols.items()}
    table.update(extra_columns(ds, chosen))
    return table


def _per_category(pool: list[dict], n: int, rng, cap: int | None, least: int, path) -> list[dict]:
    """Round-robin over categories (see :func:`sample_instances`, ``strategy="per_category"``)."""
    by_cat: dict[int, list] = {}
    for a in pool:
        by_cat.setdefault(a["category_id"], []).append(a)
    queues = {c: [objs[i] for i in rng.permutation(len(objs))][:cap] for c, objs in sorted(by_cat.items())
              if len(objs) >= least}
    if not queues:
        raise ObjalignError(f"{path}: no category has sample.per_category_min = {least} eligible objects; lower it")
    chosen: list[dict] = []
    depth = 0
    while len(chosen) < n and any(len(q) > depth for q in queues.values()):
        for c in rng.permutation(sorted(queues)):
            if len(chosen) >= n:
                break
            if len(queues[int(c)]) > depth:
                chosen.append(queues[int(c)][depth])
        depth += 1
    return chosen


def extra_columns(ds: CocoDataset, chosen: list[dict]) -> dict[str, np.ndarray]:
    """Columns a format adds to the instance table (none for COCO): LVIS's ``frequency`` group of the object's
    category, its image's ``neg_category_ids`` and ``not_exhaustive_category_ids`` (as JSON lists) and
    ``not_exhaustive`` (the object's own category is in the latter)."""
    out: dict[str, np.ndarray] = {}
    if any("frequency" in v for v in ds.category_info.values()):
        out["frequency"] = np.asarray([ds.category_info.get(a["category_id"], {}).get("frequency", "")
                                       for a in chosen], dtype=object)
    for key in ("neg_category_ids", "not_exhaustive_category_ids"):
        if any(key in ds.images[a["image_id"]] for a in chosen):
            out[key] = np.asarray([json.dumps(ds.images[a["image_id"]].get(key, [])) for a in chosen], dtype=object)
    if "not_exhaustive_category_ids" in out:
        out["not_exhaustive"] = np.asarray([a["category_id"] in ds.images[a["image_id"]]["not_exhaustive_category_ids"]
                                            for a in chosen], dtype=bool)
    return out


def draw_sample(ds: CocoDataset, s) -> dict[str, np.ndarray]:
    """:func:`sample_instances` with a config's ``sample`` section ``s`` (the sample stage's and the dry run's draw)."""
    return sample_instances(ds, n=s.n, seed=s.seed, min_area=s.min_area, exclude_crowd=s.exclude_crowd,
                            categories=s.categories, strategy=s.strategy, per_category_max=s.per_category_max,
                            per_category_min=s.per_category_min)
