"""Reading the reference pipeline's checkpoint files safely, and caching their conversions as safetensors.

``.pth`` / ``.pt`` state dicts are read with ``torch.load(weights_only=True)`` (no code runs); a TorchScript
archive (OpenAI CLIP's ``.pt`` files) is read with ``torch.jit.load`` only after its SHA-256 matched an official
release. Every failure is one :class:`~objalign.errors.ObjalignError` line naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

from objalign.errors import ObjalignError

#: Bump when a key map or a converted config changes, so stale conversions are not reused.
CONVERSION_VERSION = 1


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def check_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as an existing, non-empty file, or one line saying what is wrong."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ObjalignError(f"{what} checkpoint '{p}' does not exist; pass the path of the original file")
    if p.stat().st_size == 0:
        raise ObjalignError(f"{what} checkpoint '{p}' is empty; download it again")
    return p


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding ``<root>/code/`` or ``<root>/constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for n in names)


def read_state_dict(path: Path, what: str) -> dict:
    """Load a plain state dict (``{name: tensor}``) with ``torch.load(weights_only=True)``.

    Raises
    ------
    ObjalignError
        The file is truncated or not a torch file, holds something other than a mapping of tensors, or is a
        TorchScript archive (those go through :func:`read_torchscript`).
    """
    import torch

    if is_torchscript(path):
        raise ObjalignError(f"{what} checkpoint '{path}' is a TorchScript archive, not a state dict; "
                            "only OpenAI CLIP archives with an official SHA-256 are read (text arch clip_*)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zips, pickles with code, random bytes: many exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ObjalignError(f"{what} checkpoint '{path}' cannot be read as a weights-only torch file "
                            f"({type(exc).__name__}: {first}); it is truncated or not a checkpoint: "
                            "download it again") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise ObjalignError(f"{what} checkpoint '{path}' holds a {type(obj).__name__}, not a state dict "
                            "(a mapping of parameter names to tensors)")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ObjalignError(f"{what} checkpoint '{path}' is not a state dict: entry {key!r} holds a "
                                f"{type(value).__name__}, not a tensor")
    return obj


def read_torchscript(path: Path, official: dict[str, str], what: str) -> tuple[dict, str]:
    """The state dict of a TorchScript archive whose SHA-256 is one of ``official`` (``{sha256: release}``).

    Returns
    -------
    state_dict : dict of str to torch.Tensor
    release : str
        The official release the hash identifies (e.g. ``ViT-B/32``).
    """
    import torch

    digest = sha256_file(path)
    if digest not in official:
        raise ObjalignError(
            f"{what} checkpoint '{path}' is a TorchScript archive whose SHA-256 {digest[:16]}... matches no official "
            "release, so it is not loaded (loading TorchScript runs code from the file); if you trust it, convert "
            "it yourself: python -c \"import torch; m = torch.jit.load('FILE', map_location='cpu'); "
            "torch.save(m.state_dict(), 'FILE.state_dict.pt')\" and pass FILE.state_dict.pt")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ObjalignError(f"{what} checkpoint '{path}' has an official hash but cannot be loaded "
                            f"({type(exc).__name__}); download it again") from None
    return {k: v.detach().clone() for k, v in module.state_dict().items()}, official[digest]


def cache_root() -> Path:
    """Where converted checkpoints go: ``$OBJALIGN_CACHE`` or ``~/.cache/objalign``, then ``converted/``."""
    base = os.environ.get("OBJALIGN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "objalign")
    return Path(base) / "converted"


def cache_dir_for(path: Path, arch: str, root: str | os.PathLike | None = None) -> Path:
    """The conversion cache folder of one source file: keyed by its resolved path, size, mtime and ``arch``."""
    st = path.stat()
    ident = json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns, arch, CONVERSION_VERSION])
    stem = path.name.split(".")[0]
    digest = hashlib.sha256(ident.encode()).hexdigest()[:12]
    return Path(root if root is not None else cache_root()) / f"{stem}-{arch}-{digest}"
