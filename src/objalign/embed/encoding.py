"""Building the run's encoders and the inputs they embed: encoder specs and layers, prompts, the vision store's
key fields and the crops' background (shared by the object, image and vocabulary stores of the ``embed`` stage).
"""

from __future__ import annotations

import numpy as np

from objalign.config import RunConfig
from objalign.crops.render import BACKGROUNDS
from objalign.embed.store import STORAGE_DTYPES
from objalign.encoders import TEXT_ENCODERS, VISION_ENCODERS
from objalign.encoders.layers import check_layer_spec, no_layers_error, resolve_layers
from objalign.encoders.prompts import embed_prompts, fill_templates, resolve_templates, uses_category_info
from objalign.errors import ObjalignError
from objalign.tables import content_hash


def quiet_transformers() -> None:
    """transformers prints a per-tensor "Loading weights" bar for every model; our own bar is enough."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - the encoder itself will report the missing extra
        pass


def check_encoder_names(cfg: RunConfig) -> None:
    """Fail on an unknown encoder name before any model is loaded."""

    vision = VISION_ENCODERS.entry(cfg.embed.vision.name)
    text = TEXT_ENCODERS.entry(cfg.embed.text.name)
    v, t = cfg.embed.vision, cfg.embed.text
    parity_vision = [k for k, val in (("checkpoint", v.checkpoint), ("preprocess", v.preprocess),
                                      ("pos_interpolation", v.pos_interpolation))
                     if val not in (None, "default", "auto")]
    if parity_vision and not vision.target.endswith(":HFDinov2"):

        raise ObjalignError(f"embed.vision.{parity_vision[0]} applies to DINOv2 encoders (facebook/dinov2-*, "
                            f"dinov2_vit*14), not {v.name!r}; unset it or pick a DINOv2 encoder")
    parity_text = [k for k, val in (("checkpoint", t.checkpoint), ("dtype", t.dtype)) if val not in (None, "float32")]
    if parity_text == ["dtype"] and text.target.endswith(":HFLanguageModelText"):
        parity_text = []  # a language model may run in half precision too
    if parity_text and not text.target.endswith(":HFClipText"):

        raise ObjalignError(f"embed.text.{parity_text[0]} applies to CLIP text encoders (openai/clip-*, clip_vit_*), "
                            f"not {t.name!r}; unset it or pick a CLIP text encoder")
    text_templates(cfg)  # a bad template or template file fails before any model loads
    if cfg.embed.vision.executor not in ("thread", "process"):

        raise ObjalignError(f"embed.vision.executor = {cfg.embed.vision.executor!r}: expected 'thread' or 'process'")
    if cfg.embed.vision.batch_size < 1 or cfg.embed.shard_size < 1:

        raise ObjalignError(f"embed.vision.batch_size = {cfg.embed.vision.batch_size}, embed.shard_size = "
                            f"{cfg.embed.shard_size}: both must be at least 1")


def check_layers(cfg: RunConfig) -> None:
    """Fail with one line, before any model loads, on ``embed.*.layers`` that cannot be served: a malformed
    value, an encoder that cannot expose hidden states, or a layer number outside the model's blocks (when the
    count is known without loading it: the shipped defaults, DINOv2's releases, a local transformers folder or
    the hub cache; otherwise the same check runs once the model is loaded, before anything is embedded). Also
    checks ``embed.text.pooling`` and ``embed.storage_dtype``."""

    if cfg.embed.storage_dtype not in STORAGE_DTYPES:
        raise ObjalignError(f"embed.storage_dtype = {cfg.embed.storage_dtype!r}: expected one of "
                            f"{', '.join(STORAGE_DTYPES)}")
    t = cfg.embed.text
    if t.pooling != "default" and not TEXT_ENCODERS.entry(t.name).target.endswith(":HFLanguageModelText"):
        raise ObjalignError(f"embed.text.pooling = {t.pooling!r} applies to hf-lm: language models, not {t.name!r}; "
                            "use pooling: default")
    for side, registry, sc in (("vision", VISION_ENCODERS, cfg.embed.vision), ("text", TEXT_ENCODERS, t)):
        where = f"embed.{side}.layers"
        if check_layer_spec(sc.layers, where) == "last":
            continue
        factory, bound = registry.load(sc.name)
        if getattr(factory, "supports_layers", None) is False:  # a plain factory function: known once built
            raise no_layers_error(sc.name, side)
        extra = {"checkpoint": sc.checkpoint} if getattr(sc, "checkpoint", None) else {}
        count = getattr(factory, "layer_count", None)
        n = count(**bound, model_path=sc.model_path, **extra) if count else None
        if n is not None:
            resolve_layers(sc.layers, n, sc.name, where)


def model_layers(encoder, spec, side: str) -> list[int] | None:
    """The positive layer numbers ``spec`` (``embed.<side>.layers``) asks of a loaded ``encoder``, None for
    ``last``; one error line for a layer out of range or an encoder without hidden states."""

    if check_layer_spec(spec, f"embed.{side}.layers") == "last":
        return None
    return resolve_layers(spec, encoder.n_layers, encoder.name, f"embed.{side}.layers")


def vision_encoder_spec(cfg: RunConfig, device: str | None = None):
    """How to build the configured vision encoder, in this process or a worker's (a picklable ``Spec``)."""

    v = cfg.embed.vision
    extra = {"image_size": v.image_size} if v.image_size else {}
    # parity settings (docs/parity.md) reach only the encoders that take them
    extra.update({k: val for k, val in (("checkpoint", v.checkpoint), ("preprocess", v.preprocess),
                                        ("pos_interpolation", v.pos_interpolation))
                  if val not in (None, "default", "auto")})
    return VISION_ENCODERS.spec(v.name, pooling=v.pooling, model_path=v.model_path, device=device or v.device,
                                dtype=v.dtype, **extra)


def build_vision_encoder(cfg: RunConfig, device: str | None = None):
    """The configured vision encoder (on ``device`` instead of ``embed.vision.device`` if given)."""
    quiet_transformers()
    return vision_encoder_spec(cfg, device).build()


def build_text_encoder(cfg: RunConfig):

    quiet_transformers()
    t = cfg.embed.text
    extra = {k: val for k, val in (("checkpoint", t.checkpoint), ("dtype", t.dtype), ("pooling", t.pooling))
             if val not in (None, "float32", "default")}
    return TEXT_ENCODERS.get(t.name, model_path=t.model_path, device=t.device, **extra)


def text_templates(cfg: RunConfig) -> tuple[str, ...]:
    """The prompt templates ``embed.text`` asks for (see :mod:`objalign.encoders.prompts`)."""

    t = cfg.embed.text
    return resolve_templates(t.prompts, t.template, t.template_file)


def prompts_for(names: list[str], template: str) -> list[str]:
    """Category names -> prompts (``"{}"`` is replaced by the name; a template without it is an error)."""

    return [row[0] for row in fill_templates(names, resolve_templates("template", template))]


def embed_texts(encoder, names: list[str], template: str | tuple[str, ...], normalize: bool,
                layers: list[int] | None = None, info: list[dict] | None = None) -> np.ndarray:
    """``(n_names, dim)`` float32 text embeddings of the prompts (one template, or the normalised-mean
    ensemble of several), L2-normalised if ``normalize``; ``(n_names, len(layers), dim)`` with ``layers``.
    ``info``: each name's ``definition`` and ``synonyms`` for ``{definition}`` / ``{synonym}`` templates."""

    templates = resolve_templates("template", template) if isinstance(template, str) else tuple(template)
    return embed_prompts(encoder, names, templates, normalize, layers=layers, info=info)


def category_text_info(ds, cat_ids: list[int], templates) -> list[dict] | None:
    """Each category's ``definition`` and ``synonyms`` when a template asks for them (``{definition}``,
    ``{synonym}``), else None; one line when the dataset knows none (only LVIS files carry them)."""

    if not uses_category_info(templates):
        return None
    info = getattr(ds, "category_info", None) or {}
    if not any(v.get("definition") or v.get("synonyms") for v in info.values()):
        raise ObjalignError(f"embed.text.template {list(templates)[0]!r} uses {{definition}} or {{synonym}}, but "
                            f"{getattr(ds, 'path', 'the dataset')} has no category definitions or synonyms (LVIS files "
                            "have them: data.kind: lvis); use {} or {name} instead")
    return [{"definition": info.get(c, {}).get("definition", ""), "synonyms": info.get(c, {}).get("synonyms", [])}
            for c in cat_ids]


def vision_key_fields(dataset_fingerprint: str, table: dict, fill, background: str, encoder_key: dict,
                      shard_size: int, unavailable: str | None = None) -> dict:
    """Everything that changes a vision store's content: the dataset, the sampled instances (ids, in order),
    the crops (windows, masks), fill and background, the encoder (name, revision, preprocessing, pooling,
    dtype), the shard size (which decides the batches) and, when some were, which images could not be fetched
    (:func:`~objalign.data.fetched.unavailable_key`: their rows are skipped)."""
    extra = {} if unavailable is None else {"unavailable_images": unavailable}
    return {**extra, "dataset": dataset_fingerprint,
            "instances": content_hash(table["annotation_id"]),
            "n_instances": int(len(table["annotation_id"])),
            "crops": content_hash(table["x0"], table["y0"], table["x1"], table["y1"], table["mask_rle"]),
            "fill": [int(v) for v in fill], "background": background, "encoder": encoder_key,
            "shard_size": int(shard_size)}


def resolve_background(cfg: RunConfig, ds, table: dict, max_images: int = 200) -> tuple[tuple[int, int, int], str]:
    """``(fill colour, background mode for the renderer)``; ``mean`` becomes ``fill`` with the mean colour of
    (up to ``max_images``) of the sampled images that can be read (``crop.fill`` when none can)."""

    bg = cfg.crop.background
    if bg not in BACKGROUNDS:
        raise ObjalignError(f"crop.background = {bg!r}: expected one of {', '.join(BACKGROUNDS)}")
    if bg != "mean":
        return tuple(cfg.crop.fill), bg
    source = ds.image_source()
    names = sorted(set(table["file_name"].tolist()))[:max_images]
    means = []
    for name in names:
        try:
            means.append(source.load(name).reshape(-1, 3).mean(0))
        except Exception:  # noqa: BLE001 - an unreadable image is skipped and recorded by the extraction engine
            continue
    if not means:
        return tuple(cfg.crop.fill), "fill"
    return tuple(int(round(v)) for v in np.mean(means, 0)), "fill"
