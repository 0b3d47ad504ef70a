"""Prompting a text encoder with category names: bare name, one template, CLIP's 80-template ensemble, or a
template file. An ensemble embeds every template, L2-normalises each embedding, averages per category and
(with ``normalize``) renormalises the mean, as in CLIP's ImageNet zero-shot notebook.
"""

from __future__ import annotations

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


def _check_template(template: str, where: str) -> str:
    if "{}" not in template:
        raise ObjalignError(f"{where} = {template!r} has no '{{}}' where the category name goes; "
                            "use e.g. 'a photo of a {}.' or '{}' for the bare name")
    return template


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


def fill_templates(names: list[str], templates: tuple[str, ...] | list[str]) -> list[list[str]]:
    """``prompts[i][j]`` = template ``j`` with category ``i``'s name."""
    return [[t.replace("{}", n) for t in templates] for n in names]


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def embed_prompts(encoder, names: list[str], templates, normalize: bool = True,
                  layers: list[int] | None = None) -> np.ndarray:
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

    Returns
    -------
    (n_names, dim) float32, or (n_names, len(layers), dim) with ``layers``
    """
    templates = tuple(templates)
    prompts = [p for row in fill_templates(names, templates) for p in row]
    e = encoder.encode(prompts) if layers is None else encoder.encode_layers(prompts, list(layers))
    e = np.asarray(e, dtype=np.float32)
    e = e.reshape(len(names), len(templates), *e.shape[1:])
    if len(templates) == 1:
        out = e[:, 0]
    else:
        out = _l2(e).mean(axis=1)
    if normalize:
        out = _l2(out)
    return np.ascontiguousarray(out, dtype=np.float32)
