"""Prompting a text encoder with category names: bare name, one template, CLIP's 80-template ensemble, or a
template file. An ensemble embeds every template, L2-normalises each embedding, averages per category and
(with ``normalize``) renormalises the mean, as in CLIP's ImageNet zero-shot notebook.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from objalign.config import PROMPT_MODES  # embed.text.prompts
from objalign.errors import ObjalignError

#: ``name``: the bare category name; ``template``: one template; ``ensemble``: :data:`CLIP_IMAGENET_TEMPLATES`;
#: ``file``: one template per line of a text file (blank lines and ``#`` comments ignored).

#: The 80 prompt templates of CLIP's ImageNet zero-shot classifier (OpenAI, Prompt_Engineering_for_ImageNet).
CLIP_IMAGENET_TEMPLATES = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)


#: Placeholders that put a category's name in a template: ``{}`` and ``{name}`` (the name), ``{synonym}`` (each of
#: the category's synonyms in turn, the prompts averaged as an ensemble; the name alone without synonyms).
NAME_FIELDS = ("{}", "{name}", "{synonym}")
#: Placeholders that need what a format knows of its categories (LVIS): ``{definition}`` (its ``def``; the name when
#: it has none) and ``{synonym}``.
INFO_FIELDS = ("{definition}", "{synonym}")
_FIELD = re.compile(r"\{\}|\{name\}|\{definition\}|\{synonym\}")


def _check_template(template: str, where: str) -> str:
    if not any(f in template for f in NAME_FIELDS):
        raise ObjalignError(f"{where} = {template!r} has no '{{}}' where the category name goes; "
                            "use e.g. 'a photo of a {}.' or '{}' for the bare name ({name} and {synonym} work too)")
    return template


def uses_category_info(templates) -> bool:
    """Whether any template has ``{definition}`` or ``{synonym}`` (:data:`INFO_FIELDS`)."""
    return any(f in t for t in templates for f in INFO_FIELDS)


def read_template_file(path: str | Path) -> tuple[str, ...]:
    """One template per line (each with ``{}``); blank lines and lines starting with ``#`` are ignored."""
    p = Path(path)
    if not p.is_file():
        raise ObjalignError(f"embed.text.template_file = {str(p)!r} does not exist; give a text file with one "
                            "template such as 'a photo of a {}.' per line")
    lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    templates = tuple(ln for ln in lines if ln and not ln.startswith("#"))
    if not templates:
        raise ObjalignError(f"embed.text.template_file = {str(p)!r} holds no template; put one per line")
    for i, t in enumerate(templates):
        _check_template(t, f"{p} template {i + 1}")
    return templates


def resolve_templates(mode: str = "template", template: str = "a photo of a {}.",
                      template_file: str | Path | None = None) -> tuple[str, ...]:
    """The templates a prompting ``mode`` uses (see :data:`PROMPT_MODES`)."""
    if mode == "name":
        return ("{}",)
    if mode == "template":
        return (_check_template(template, "embed.text.template"),)
    if mode == "ensemble":
        return CLIP_IMAGENET_TEMPLATES
    if mode == "file":
        if not template_file:
            raise ObjalignError("embed.text.prompts = 'file' needs embed.text.template_file: a text file with one "
                                "template per line")
        return read_template_file(template_file)
    raise ObjalignError(f"embed.text.prompts = {mode!r}: expected one of {', '.join(PROMPT_MODES)}")


def fill_templates(names: list[str], templates: tuple[str, ...] | list[str],
                   info: list[dict] | None = None) -> list[list[str]]:
    """The prompts of each category.

    Parameters
    ----------
    names : list of str, length n
    templates : sequence of str, length T
        With ``{}`` / ``{name}`` (the name), ``{definition}`` and ``{synonym}`` (see :data:`NAME_FIELDS`).
    info : list of dict, length n, optional
        Per category ``definition`` (str) and ``synonyms`` (list of str); without it (or without a key)
        ``{definition}`` and ``{synonym}`` take the name.

    Returns
    -------
    list of list of str
        ``prompts[i]``: template ``j`` with category ``i``, in template order; a template with ``{synonym}``
        gives one prompt per synonym. Without ``{synonym}`` every row has ``T`` prompts.
    """
    if info is None and not uses_category_info(templates) and not any("{name}" in t for t in templates):
        return [[t.replace("{}", n) for t in templates] for n in names]
    rows = []
    for i, n in enumerate(names):
        extra = (info[i] if info is not None else None) or {}
        definition = str(extra.get("definition") or "").strip() or n
        synonyms = [s for s in extra.get("synonyms") or [] if s] or [n]
        row = []
        for t in templates:
            for syn in (synonyms if "{synonym}" in t else [n]):
                values = {"{}": n, "{name}": n, "{definition}": definition, "{synonym}": syn}
                row.append(_FIELD.sub(lambda m, v=values: v[m.group(0)], t))
        rows.append(row)
    return rows


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def embed_prompts(encoder, names: list[str], templates, normalize: bool = True,
                  layers: list[int] | None = None, info: list[dict] | None = None) -> np.ndarray:
    """Embed category names with templates.

    Parameters
    ----------
    encoder : TextEncoder
        ``encode(list[str]) -> (n, dim)``.
    names : list of str, length n_names
    templates : sequence of str, length T
        One template: its embedding (L2-normalised if ``normalize``). Several: the mean of the L2-normalised
        embeddings of the ``T`` prompts, renormalised if ``normalize``.
    normalize : bool
    layers : list of int, optional
        Model layer numbers (``encoder.encode_layers``): the ensemble and the normalisation apply to each layer
        on its own.
    info : list of dict, length n_names, optional
        Definitions and synonyms for ``{definition}`` / ``{synonym}`` (see :func:`fill_templates`); a category
        whose templates give several prompts (synonyms) gets their ensemble mean.

    Returns
    -------
    (n_names, dim) float32, or (n_names, len(layers), dim) with ``layers``
    """
    templates = tuple(templates)
    rows = fill_templates(names, templates, info)
    prompts = [p for row in rows for p in row]
    e = encoder.encode(prompts) if layers is None else encoder.encode_layers(prompts, list(layers))
    e = np.asarray(e, dtype=np.float32)
    counts = {len(row) for row in rows}
    if len(counts) == 1:
        e = e.reshape(len(names), counts.pop(), *e.shape[1:])
        out = e[:, 0] if e.shape[1] == 1 else _l2(e).mean(axis=1)
    else:  # synonyms: a different number of prompts per category
        ends = np.cumsum([len(row) for row in rows])
        out = np.stack([g[0] if len(g) == 1 else _l2(g).mean(axis=0) for g in np.split(e, ends[:-1])])
    if normalize:
        out = _l2(out)
    return np.ascontiguousarray(out, dtype=np.float32)
