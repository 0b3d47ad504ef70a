"""Read images straight from a zip archive (``images_from_zip: true``), safely from threads and processes.

COCO's image archives hold ``train2017/000000000009.jpg`` while the annotations name the file
``000000000009.jpg``; :class:`ZipImageReader` accepts either spelling (it detects the archive's single top-level
folder and tries ``<folder>/<file_name>`` when ``file_name`` itself is not a member).

Concurrency
-----------
A :class:`zipfile.ZipFile` keeps one file position, so sharing one handle between threads serialises them
and sharing it across :func:`os.fork` corrupts reads (parent and child move the same file offset). The reader
therefore opens **one ZipFile handle per thread and per process**, lazily, on first use: threads of one
process never share a handle; after a fork the child drops the handles it inherited (an ``os.register_at_fork``
hook) and opens its own; pickling (``spawn``/``forkserver`` workers, Ray tasks) sends only the archive path
and the member prefix, never a handle. Each handle reads the archive's central directory once (about half a
second for train2017.zip's 118,287 members). :meth:`ZipImageReader.close` closes the handles this process
opened.
"""

from __future__ import annotations

import io
import os
import threading
import weakref
import zipfile
import zlib
from pathlib import Path

from objalign.errors import ObjalignError

__all__ = ["IMAGE_EXTENSIONS", "ZipImageError", "ZipImageReader"]

#: File name endings counted as images by :meth:`ZipImageReader.names`.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ZipImageError(ObjalignError):
    """An archive or member that cannot be read as an image; the message names it and the fix."""


_READERS: weakref.WeakSet = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for reader in list(_READERS):
        reader._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class ZipImageReader:
    """Open images stored in a zip archive as RGB :class:`PIL.Image.Image` objects.

    Parameters
    ----------
    zip_path : str or path-like
        The archive, e.g. ``root/downloads/train2017.zip``.
    prefix : str
        Folder prepended to names that are not members themselves. ``"auto"`` (default) uses the archive's
        single top-level folder (``"train2017/"`` for COCO), or nothing when members are not all in one
        folder; ``""`` disables the fallback.

    Raises
    ------
    ZipImageError
        The file is missing or is not a readable zip archive.

    Notes
    -----
    Thread and process safe: one ZipFile handle per thread and per process (see the module notes).
    Pixels are returned as stored: EXIF orientation is not applied, because COCO boxes and masks refer to the
    stored pixel grid.
    """

    def __init__(self, zip_path: str | os.PathLike, prefix: str = "auto"):
        self.zip_path = Path(zip_path)
        if not self.zip_path.is_file():
            raise ZipImageError(
                f"image archive {self.zip_path} does not exist; download it (objalign data coco2017 "
                f"--no-extract) or set images_from_zip: false"
            )
        self._reset()
        handle = self._handle()
        if prefix == "auto":
            prefix = _common_folder(handle.namelist())
        elif prefix and not prefix.endswith("/"):
            prefix += "/"
        self.prefix = prefix
        _READERS.add(self)

    # -- handles -------------------------------------------------------------------------------------

    def _reset(self) -> None:
        """Forget every handle (used at construction, after a fork and after unpickling)."""
        self._lock = threading.Lock()
        self._local = threading.local()
        self._handles: list[zipfile.ZipFile] = []
        self._pid = os.getpid()

    def _handle(self) -> zipfile.ZipFile:
        """This thread's ZipFile handle, opened on first use."""
        if self._pid != os.getpid():  # forked without the hook having run (should not happen)
            self._reset()
        handle = getattr(self._local, "handle", None)
        if handle is None:
            try:
                handle = zipfile.ZipFile(self.zip_path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise ZipImageError(
                    f"{self.zip_path} is not a readable zip archive ({exc}); download it again or point "
                    f"images_from_zip at the right file"
                ) from None
            self._local.handle = handle
            with self._lock:
                self._handles.append(handle)
        return handle

    def close(self) -> None:
        """Close every handle this process opened; the reader reopens handles if used again."""
        with self._lock:
            handles, self._handles = self._handles, []
        for handle in handles:
            handle.close()
        self._local = threading.local()

    def __enter__(self) -> ZipImageReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"zip_path": self.zip_path, "prefix": self.prefix}

    def __setstate__(self, state: dict) -> None:
        self.zip_path = state["zip_path"]
        self.prefix = state["prefix"]
        self._reset()
        _READERS.add(self)

    def __repr__(self) -> str:
        return f"ZipImageReader({str(self.zip_path)!r}, prefix={self.prefix!r})"

    # -- members -------------------------------------------------------------------------------------

    def member_name(self, file_name: str) -> str:
        """The archive member holding ``file_name`` (the name itself, else ``prefix + file_name``).

        Raises
        ------
        ZipImageError
            Neither spelling is a member.
        """
        members = self._handle().NameToInfo
        name = str(file_name).replace("\\", "/")
        if name in members:
            return name
        if self.prefix and self.prefix + name in members:
            return self.prefix + name
        tried = repr(name) + (f" and {self.prefix + name!r}" if self.prefix else "")
        raise ZipImageError(
            f"image {file_name!r} is not in {self.zip_path} (looked for {tried}); check the annotation's "
            f"file_name and that the archive belongs to this split"
        )

    def __contains__(self, file_name: object) -> bool:
        try:
            self.member_name(str(file_name))
        except ZipImageError:
            return False
        return True

    def names(self) -> list[str]:
        """Member names that look like images (by extension), in archive order, prefix included."""
        return [
            info.filename
            for info in self._handle().infolist()
            if not info.is_dir() and info.filename.lower().endswith(IMAGE_EXTENSIONS)
        ]

    def __len__(self) -> int:
        return len(self.names())

    def read_bytes(self, file_name: str) -> bytes:
        """The stored bytes of ``file_name`` (its CRC-32 checked).

        Raises
        ------
        ZipImageError
            The member is missing or corrupt.
        """
        return self._read(self.member_name(file_name))

    def _read(self, member: str) -> bytes:
        try:
            return self._handle().read(member)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise ZipImageError(
                f"member {member!r} of {self.zip_path} is corrupt ({exc}); download the archive again"
            ) from None

    def open(self, file_name: str):
        """Decode ``file_name`` into an RGB image.

        Parameters
        ----------
        file_name : str
            The annotation's ``file_name`` (``"000000000009.jpg"``) or the full member name.

        Returns
        -------
        PIL.Image.Image
            Mode ``"RGB"``, size ``(width, height)`` as stored (array shape ``(height, width, 3)``), fully
            loaded (independent of the archive).

        Raises
        ------
        ZipImageError
            The member is missing, corrupt, or not a readable image.
        """
        from PIL import Image, UnidentifiedImageError

        member = self.member_name(file_name)
        data = self._read(member)
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                return image.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ZipImageError(
                f"member {member!r} of {self.zip_path} is not a readable image ({exc}); check the annotation's "
                f"file_name or replace the archive"
            ) from None


def _common_folder(names: list[str]) -> str:
    """``"folder/"`` when every member lies under one top-level folder, else ``""``."""
    tops = {name.split("/", 1)[0] for name in names if "/" in name.rstrip("/")}
    loose = [name for name in names if "/" not in name.rstrip("/")]
    if len(tops) == 1 and all(name.rstrip("/") in tops for name in loose):
        return tops.pop() + "/"
    return ""
