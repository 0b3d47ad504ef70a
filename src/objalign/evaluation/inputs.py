"""Checking and shaping a (vision, text, labels, groups) request before any work: one line per bad input.

:func:`prepare_inputs` turns what a researcher has -- vision features per object, text features per object or per
category (or several text target sets), labels of any kind, image ids or none -- into what the engine computes on:
``(X, {key: category rows}, label_index, groups, names, category ids)``. Every message names the input (an array's
name, or the file it came from when the command line passes ``where``), the bad value and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from objalign.errors import ObjalignError
from objalign.maps import check_matrix


@dataclass(frozen=True)
class Inputs:
    """A checked request: ``X`` (n, d); ``targets`` key -> (c, q_key) category rows; ``label_index`` (n,) rows of
    every target matrix; ``groups`` (n,) image ids; ``names`` and ``category_ids`` (c,); ``per`` how the text came
    (``object`` or ``category``)."""

    X: np.ndarray
    targets: dict
    label_index: np.ndarray
    groups: np.ndarray
    names: list
    category_ids: np.ndarray
    per: str
    errors: dict = None  # key -> one line, for target sets of a dict that cannot be evaluated (the others go on)


def _labels(labels, n: int, where: dict) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1 or len(lab) != n:
        raise ObjalignError(f"{where['labels']}: expected one label per object ({n}, as {where['vision']} has "
                            f"rows), got shape {lab.shape}")
    if lab.dtype.kind == "f":
        if not np.all(np.isfinite(lab)) or not np.all(lab == np.round(lab)):
            raise ObjalignError(f"{where['labels']}: float labels must be whole numbers (category indices or ids); "
                                f"got e.g. {lab[~(lab == np.round(lab))][:1].tolist() or 'NaN'}")
        lab = lab.astype(np.int64)
    return lab


def _groups(groups, n: int, where: dict) -> np.ndarray:
    if groups is None:
        return np.arange(n)  # every object its own image: splits then hold objects out one by one
    g = np.asarray(groups)
    if g.ndim != 1 or len(g) != n:
        raise ObjalignError(f"{where['groups']}: expected one image id per object ({n}), got shape {g.shape}; "
                            "groups say which objects share an image (held out together)")
    return g


def _per_object(T: np.ndarray, lab: np.ndarray, key: str, where: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Category rows of text given per object: ``(rows, label_index, category values)``."""
    cats, label_index = np.unique(lab, return_inverse=True)
    first = np.zeros(len(cats), dtype=np.int64)
    first[label_index[::-1]] = np.arange(len(lab))[::-1]  # each category's first object
    rows = T[first]
    differs = ~np.all(T == rows[label_index], axis=1)
    if differs.any():
        i = int(np.flatnonzero(differs)[0])
        raise ObjalignError(f"{where['text']}{key}: objects {int(first[label_index[i]])} and {i} have the same label "
                            f"{lab[i].tolist()!r} but different text rows; the maps target one text embedding per "
                            "category: pass text per category (one row per category, labels indexing it)")
    return rows, label_index, cats


def _per_category(T: np.ndarray, lab: np.ndarray, key: str, where: dict) -> np.ndarray:
    if lab.dtype.kind not in "iu":
        raise ObjalignError(f"{where['labels']}: with {where['text']}{key} given per category ({len(T)} rows), labels "
                            f"must be integer row indices into it, got {lab.dtype} values such as {lab[:1].tolist()}")
    bad = (lab < 0) | (lab >= len(T))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ObjalignError(f"{where['labels']}: value {int(lab[i])} (object {i}) is out of range for "
                            f"{where['text']}{key} with {len(T)} rows (one per category); labels index its rows")
    return lab.astype(np.int64)


def _shape_targets(text, lab: np.ndarray, n: int, per: str, where: dict):
    """key -> category rows, the label index and the category values (``None`` for per-category text)."""
    many = isinstance(text, dict)
    sets = dict(text) if many else {"": text}
    if not sets:
        raise ObjalignError(f"{where['text']}: no text target set given")
    if per not in ("auto", "object", "category"):
        raise ObjalignError(f"text_per = {per!r}: expected auto, object or category")
    mode = per
    if per == "auto":
        counts = {len(T) for T in sets.values() if np.ndim(T) == 2}
        mode = "object" if counts == {n} else "category"
    targets, errors, label_index, cats = {}, {}, None, None
    for k, T in sets.items():
        tag = f"[{k!r}]" if many else ""
        try:
            T = check_matrix(T, f"{where['text']}{tag}")
            if mode == "object":
                if len(T) != n:
                    raise ObjalignError(f"{where['text']}{tag} has {len(T)} rows but {where['vision']} has {n}; "
                                        "give text per object (one row each) or per category (labels index its rows)")
                targets[k], label_index, cats = _per_object(T, lab, tag, where)
            else:
                label_index = _per_category(T, lab, tag, where)
                targets[k] = T
        except ObjalignError as exc:
            if not many:
                raise
            errors[k] = str(exc)  # this set is reported as not evaluated; the others go on
    if not targets:
        raise ObjalignError(next(iter(errors.values())))
    return targets, label_index, cats, mode, errors


def prepare_inputs(vision, text, labels, groups=None, *, names=None, category_ids=None, text_per: str = "auto",
                   where: dict | None = None) -> Inputs:
    """Check a request and shape it for the engine, before any work.

    Parameters
    ----------
    vision : (n, d) array
        One vision feature vector per object.
    text : (n, q) or (c, q) array, or dict key -> such arrays
        Text features per object (rows of one category must be equal) or per category (``labels`` index the
        rows). A dict gives several text target sets at once (e.g. text layers), every one per object or every one
        per category, all with the same categories.
    labels : (n,) array
        Each object's category: row indices into per-category text, or any values (ints, strings) with per-object
        text.
    groups : (n,) array, optional
        Image ids: objects of one image are held out together. Default: every object its own image.
    names : sequence of c str, optional
        Category names for the report (default: the label values, or row numbers).
    category_ids : (c,) array, optional
        The dataset's category ids (default: the label values, or row numbers).
    text_per : {"auto", "object", "category"}
        How to read ``text``; ``auto`` reads text with as many rows as objects per object, else per category.
    where : dict, optional
        Names of the inputs in messages (``vision``, ``text``, ``labels``, ``groups``, ``names``): file names on the
        command line.

    Returns
    -------
    Inputs

    Raises
    ------
    ObjalignError
        Mismatched rows, NaN or infinite rows, labels out of range, groups of the wrong length, fewer than two
        categories, names of the wrong length: one line naming the input, the value and the fix.
    """
    where = {"vision": "vision", "text": "text", "labels": "labels", "groups": "groups", "names": "names",
             **(where or {})}
    X = check_matrix(vision, where["vision"])
    n = len(X)
    lab = _labels(labels, n, where)
    g = _groups(groups, n, where)
    targets, label_index, cats, mode, errors = _shape_targets(text, lab, n, text_per, where)
    c = len(next(iter(targets.values())))
    if len(np.unique(label_index)) < 2:
        raise ObjalignError(f"{where['labels']}: every object has the same category ({lab[0].tolist()!r}); alignment "
                            "ranks a category among others: give objects of at least two categories")
    if names is None:
        names = [str(x) for x in cats] if cats is not None else [str(i) for i in range(c)]
    names = [str(x) for x in names]
    if len(names) != c:
        raise ObjalignError(f"{where['names']}: {len(names)} names for {c} categories; give one name per category "
                            "(in the order of the text rows, or of the sorted labels for per-object text)")
    if category_ids is None:
        category_ids = np.asarray(cats) if cats is not None and np.asarray(cats).dtype.kind in "iu" else np.arange(c)
    return Inputs(X, targets, label_index, g, names, np.asarray(category_ids), mode, errors)
