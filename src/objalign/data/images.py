"""Reading dataset images: decode a file (or a zip member) to ``(H, W, 3)`` uint8 RGB.

An image source has ``load(file_name) -> (H, W, 3) uint8`` and ``describe(file_name) -> str`` (where it was
looked for, for messages). :class:`FolderImages` reads files under a folder, :class:`ZipImages` members of a
zip archive.

A dataset file never makes objalign read outside its image folder or archive: a ``file_name`` that is absolute
or climbs out with ``..`` is refused (:func:`file_name_problem`, checked when the dataset is loaded), and
:class:`FolderImages` also refuses a name whose resolved path (symbolic links followed) leaves the folder.
"""

from __future__ import annotations

import posixpath
from pathlib import Path, PureWindowsPath

import numpy as np

from objalign.data.zipimages import ZipImageReader
from objalign.errors import ObjalignError

#: Modes PIL decodes to that are not 8-bit RGB and need more than ``convert("RGB")``.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class ImagePathError(ObjalignError):
    """A ``file_name`` that would read outside the image folder (or archive); the message names it."""


def file_name_problem(file_name) -> str | None:
    """Why ``file_name`` cannot name an image inside the image folder or archive, or ``None`` when it can.

    Refused: a non-string or empty name, a NUL byte, an absolute path (``/etc/passwd``, ``C:\\x``, ``\\\\host\\x``)
    and a name whose ``..`` components climb out of the folder (``../../escape.jpg``); backslashes count as
    separators. Purely lexical: no file is touched.
    """
    if not isinstance(file_name, str) or not file_name.strip():
        return f"file_name {file_name!r} is empty or not a string"
    if "\x00" in file_name:
        return f"file_name {file_name!r} contains a NUL byte"
    name = file_name.replace("\\", "/")
    if name.startswith("/") or PureWindowsPath(file_name).drive:
        return f"file_name {file_name!r} is an absolute path; it must be relative to the image folder"
    norm = posixpath.normpath(name)
    if norm == ".":
        return f"file_name {file_name!r} names the image folder itself, not a file in it"
    if norm == ".." or norm.startswith("../"):
        return f"file_name {file_name!r} leaves the image folder"
    return None


def to_rgb(im) -> np.ndarray:
    """A decoded PIL image -> ``(H, W, 3)`` uint8 RGB.

    8-bit modes (L, LA, P, RGBA, CMYK, YCbCr, ...) go through ``convert("RGB")`` (alpha dropped, CMYK
    converted); 16-bit and 32-bit grayscale are scaled by their maximum to 0..255 (not clipped, which would
    make most 16-bit images white).
    """
    if im.mode in _WIDE_MODES:
        arr = np.asarray(im, dtype=np.float64)
        if arr.ndim == 3:
            arr = arr[..., 0]
        finite = np.isfinite(arr)
        arr = np.where(finite, arr, 0.0)
        lo = min(float(arr.min()), 0.0)
        top = max(float(arr.max()) - lo, 1.0)
        arr = np.round(255.0 * (arr - lo) / top).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3)`` uint8 RGB (grayscale, CMYK, palette, 16-bit all converted).

    A truncated file raises (``OSError``) instead of being padded with grey.
    """
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return to_rgb(im)


class FolderImages:
    """Images as files under a folder: ``load(file_name) -> (H, W, 3) uint8``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def describe(self, file_name: str) -> str:
        return str(self.root / file_name)

    def path(self, file_name: str) -> Path:
        """The resolved path of ``file_name``, which must stay inside the folder (symbolic links followed).

        Raises
        ------
        ImagePathError
            ``file_name`` is absolute, climbs out with ``..`` or resolves (through a link) outside the folder.
        """
        problem = file_name_problem(file_name)
        if problem is None:
            root = self.root.resolve()
            path = (root / file_name).resolve()
            if path == root or not path.is_relative_to(root):
                problem = f"file_name {file_name!r} resolves to {path}, outside the image folder {root}"
        if problem is not None:
            raise ImagePathError(f"{problem}; fix the annotation file (objalign reads only inside data.images)")
        return path

    def load(self, file_name: str) -> np.ndarray:
        return load_rgb(self.path(file_name))


class ZipImages:
    """Images read straight from a zip archive (``images_from_zip: true``), thread- and process-safe."""

    def __init__(self, zip_path: str | Path):

        self.path = Path(zip_path)
        self.reader = ZipImageReader(zip_path)

    def describe(self, file_name: str) -> str:
        return f"{self.path}:{file_name}"

    def load(self, file_name: str) -> np.ndarray:
        problem = file_name_problem(file_name)
        if problem is not None:
            raise ImagePathError(f"{problem}; fix the annotation file (objalign reads only members of {self.path})")
        with self.reader.open(file_name) as im:
            return to_rgb(im)


class MultiImages:
    """Images spread over several folders and zip archives (``data.images`` a list; Objects365's ``patchN``
    folders; COCO's ``train2017`` and ``val2017`` archives for LVIS): each ``file_name`` is read from the first
    source that holds it, tried in the order given.

    Parameters
    ----------
    sources : list of FolderImages or ZipImages
        At least one.
    """

    def __init__(self, sources: list):
        if not sources:
            raise ObjalignError("data.images = []: give at least one image folder or zip archive")
        self.sources = list(sources)

    def __getstate__(self) -> dict:
        return {"sources": self.sources}

    def __setstate__(self, state: dict) -> None:
        self.sources = state["sources"]

    def _holder(self, file_name: str):
        for src in self.sources:
            if isinstance(src, ZipImages):
                if file_name in src.reader:
                    return src
            elif (src.root / file_name).is_file():
                return src
        return None

    def describe(self, file_name: str) -> str:
        src = self._holder(file_name)
        if src is not None:
            return src.describe(file_name)
        return f"{file_name} in none of {', '.join(where(s) for s in self.sources)}"

    def load(self, file_name: str) -> np.ndarray:
        problem = file_name_problem(file_name)
        if problem is not None:
            raise ImagePathError(f"{problem}; fix the annotation file (objalign reads only inside data.images)")
        src = self._holder(file_name)
        if src is None:
            raise FileNotFoundError(f"image {file_name!r} is in none of {', '.join(where(s) for s in self.sources)}; "
                                    "add the folder or zip that holds it to data.images")
        return src.load(file_name)


def where(source) -> str:
    """The folder or archive path of an image source, for messages."""
    return str(source.path if isinstance(source, ZipImages) else source.root)


def open_image_source(path: Path):
    """A :class:`ZipImages` for a ``.zip`` file, else a :class:`FolderImages`."""
    path = Path(path)
    return ZipImages(path) if path.suffix.lower() == ".zip" and path.is_file() else FolderImages(path)
