"""The reference pipeline's own checkpoint files, converted to the transformers classes objalign runs.

``load_original(path, arch)`` reads an original file safely (``torch.load(weights_only=True)``; a TorchScript
archive only with an official SHA-256), renames every key with a strict published key map, checks the
architecture read from the tensors against ``arch``, and caches the result as safetensors (``save_pretrained``)
so the conversion runs once. ``find_original(arch)`` looks where the reference code leaves its files.

- ``sam_vit_{h,l,b}``: segment-anything's ``sam_vit_h_4b8939.pth`` ... -> ``SamModel``
- ``dinov2_vit{s,b,l,g}14[_reg4]``: torch hub's ``dinov2_vitl14_pretrain.pth`` ... -> ``Dinov2Model`` /
  ``Dinov2WithRegistersModel``
- ``clip_vit_{b32,b16,l14}``: OpenAI's ``~/.cache/clip/ViT-B-32.pt`` ... -> ``CLIPTextModelWithProjection``

The family names ``sam``, ``dinov2`` and ``clip`` take the architecture from the file as it is (tests use them
with tiny random originals).
"""

from __future__ import annotations

import os
from pathlib import Path

from objalign.checkpoints import clip, dinov2, sam
from objalign.checkpoints._io import cache_dir_for, check_file, is_torchscript, read_state_dict, read_torchscript
from objalign.checkpoints.keymap import apply_rules
from objalign.errors import ObjalignError, did_you_mean

__all__ = ["load_original", "find_original", "arch_family", "arch_from_file_name", "ARCHS"]


def _families():

    return {"sam": sam, "dinov2": dinov2, "clip": clip}


def _all_archs() -> dict[str, str]:
    return {name: fam for fam, mod in _families().items() for name in mod.ARCHS}


class _Archs:
    """Lazy ``{arch: family}`` view (importing it does not import torch)."""

    def __iter__(self):
        return iter(_all_archs())

    def __contains__(self, name):
        return name in _all_archs()


ARCHS = _Archs()


def arch_family(arch: str) -> str:
    """``sam`` / ``dinov2`` / ``clip`` for an arch name or a family name, else one line listing the names."""
    if arch in ("sam", "dinov2", "clip"):
        return arch
    archs = _all_archs()
    if arch not in archs:

        raise ObjalignError(f"unknown checkpoint arch {arch!r}{did_you_mean(arch, archs)} (known: {', '.join(archs)}, "
                            "or the family names sam, dinov2, clip to take the architecture from the file)")
    return archs[arch]


def arch_from_file_name(path: str | os.PathLike) -> str | None:
    """The arch an official file name implies (``dinov2_vitl14_pretrain.pth`` -> ``dinov2_vitl14``), or ``None``."""
    import re


    name = Path(path).name
    m = re.search(r"dinov2_vit[sblg]14(?:_reg4)?|sam_vit_[hlb]", name)
    if m:
        return m.group(0)
    return next((arch for arch, official in clip.FILE_NAMES.items() if name == official), None)


def search_paths(arch: str) -> list[Path]:
    """Where the reference code leaves ``arch``'s file: torch hub's ``checkpoints/`` (DINOv2; SAM too, with the
    working directory and ``./checkpoints``), ``~/.cache/clip`` (CLIP)."""

    family = arch_family(arch)
    if family == "clip":
        return [Path(os.path.expanduser("~/.cache/clip")) / clip.FILE_NAMES[arch]]
    try:
        import torch

        hub = Path(torch.hub.get_dir()) / "checkpoints"
    except ImportError:  # pragma: no cover - torch is needed to load anything anyway
        hub = Path(os.environ.get("TORCH_HOME", os.path.expanduser("~/.cache/torch"))) / "hub" / "checkpoints"
    if family == "dinov2":
        return [hub / dinov2.file_name(arch)]
    name = sam.FILE_NAMES[arch]
    return [Path.cwd() / name, Path.cwd() / "checkpoints" / name, hub / name]


def find_original(arch: str) -> Path:
    """The first existing file of :func:`search_paths`, or one line naming where it looked."""
    paths = search_paths(arch)
    for p in paths:
        if p.is_file():
            return p
    raise ObjalignError(f"no original {arch} checkpoint found (looked at {', '.join(str(p) for p in paths)}); "
                        "pass its path (crop.sam_checkpoint / embed.vision.checkpoint / embed.text.checkpoint)")


def _read(path: Path, family: str, what: str) -> tuple[dict, tuple[str, str | None] | None]:
    """The state dict, and for an official CLIP archive ``(release, arch)``."""

    if family == "clip" and is_torchscript(path):

        state_dict, release = read_torchscript(path, clip.OFFICIAL_SHA256, what)
        return state_dict, (release, clip.RELEASE_ARCH.get(release))
    return read_state_dict(path, what), None


def load_original(path: str | os.PathLike, arch: str, cache_dir: str | os.PathLike | None = None,
                  use_cache: bool = True):
    """Load an original checkpoint file as the matching transformers model (float32, eval mode, on the CPU).

    Parameters
    ----------
    path : path-like
        The original file (see the module table).
    arch : str
        ``sam_vit_h``, ``dinov2_vitl14``, ``clip_vit_b32``, ... (checked against the file), or a family name
        ``sam`` / ``dinov2`` / ``clip`` (architecture read from the file).
    cache_dir : path-like, optional
        Root of the conversion cache (default ``$OBJALIGN_CACHE/converted`` or ``~/.cache/objalign/converted``).
    use_cache : bool, default True
        Reuse / write the safetensors conversion.

    Returns
    -------
    transformers.PreTrainedModel
        ``SamModel``, ``Dinov2Model`` / ``Dinov2WithRegistersModel`` or ``CLIPTextModelWithProjection``. Its
        ``config.objalign_source`` names the original file and ``config.objalign_arch`` the arch.

    Raises
    ------
    ObjalignError
        One line naming the file and the first offending key: unreadable or truncated file, not a state dict,
        another architecture, a key the map does not know, a TorchScript archive with an unknown hash.
    """

    family = arch_family(arch)
    module = _families()[family]
    what = {"sam": "SAM", "dinov2": "DINOv2", "clip": "CLIP"}[family]
    path = check_file(path, what)
    where = f"{what} checkpoint '{path}'"
    cached = cache_dir_for(path, arch, cache_dir) if use_cache else None
    if cached is not None and (cached / "config.json").is_file() and (cached / "model.safetensors").is_file():
        model = _load_cached(cached, family)
        if model is not None:
            model.config.objalign_source, model.config.objalign_arch = str(path), arch
            return model
    state_dict, implied = _read(path, family, what)
    if implied is not None and arch != family and implied[1] != arch:
        release, right = implied
        raise ObjalignError(f"{where} is OpenAI's official {release} release, not {arch}; "
                            + (f"set the arch to {right}" if right else "objalign converts the ViT text towers only"))

    converted, source_of = apply_rules(state_dict, module.RULES, where)
    fields, source = module.infer(state_dict, where)
    if arch != family:
        for name, want in module.ARCHS[arch].items():
            if fields.get(name) != want:
                raise ObjalignError(f"{where} does not hold {arch}: {name} = {fields.get(name)} (from key "
                                    f"{source.get(name, name)!r}) where {arch} has {want}; the file belongs to another "
                                    "architecture: pass the matching arch")
    model = module.build(converted, source_of, fields, where)
    model.config.objalign_source = str(path)
    model.config.objalign_arch = arch
    if cached is not None:
        _save_cached(model, cached)
    return model


def _load_cached(folder: Path, family: str):
    """The cached conversion, or ``None`` when it cannot be read (then it is converted again)."""
    from transformers import AutoModel, CLIPTextModelWithProjection, SamModel

    cls = {"sam": SamModel, "dinov2": AutoModel, "clip": CLIPTextModelWithProjection}[family]
    try:
        return cls.from_pretrained(str(folder), local_files_only=True).eval()
    except (OSError, ValueError, RuntimeError):
        return None


def _save_cached(model, folder: Path) -> None:
    """``save_pretrained`` into a temporary sibling, then an atomic rename (concurrent runs never see half)."""
    import shutil
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first: its copy is as good
            shutil.rmtree(tmp, ignore_errors=True)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
