"""Read images straight from a zip archive (``images_from_zip: true``), safely from threads and processes.

COCO's image archives hold ``train2017/000000000009.jpg`` while the annotations name the file
``000000000009.jpg``; :class:`ZipImageReader` accepts either spelling (it detects the archive's single top-level
folder and tries ``<folder>/<file_name>`` when ``file_name`` itself is not a member).

Concurrency
-----------
A file handle has one file position, so sharing it between threads serialises them and sharing it across
:func:`os.fork` corrupts reads (parent and child move the same offset). The reader therefore keeps **one
file handle per thread and per process**, opened lazily on first use, and reads members through it itself
(local header, then the stored or deflated bytes, then the CRC-32 check). The archive's central directory
(the member table: about 60 MiB and half a second to parse for train2017.zip's 118,287 members) is parsed
**once per process** and shared read-only by its threads, instead of once per thread as one
:class:`zipfile.ZipFile` per thread would. After a fork the child drops the file handles it inherited (an
``os.register_at_fork`` hook) and opens its own, keeping the parsed table; pickling (``spawn``/``forkserver``
workers, Ray tasks) sends only the archive path and the member prefix, and the receiving process parses the
table on first use. :meth:`ZipImageReader.close` closes the handles this process opened.
"""

from __future__ import annotations

import bz2
import io
import os
import struct
import threading
import weakref
import zipfile
import zlib
from pathlib import Path

from objalign.errors import ObjalignError

__all__ = ["IMAGE_EXTENSIONS", "ZipImageError", "ZipImageReader"]

#: File name endings counted as images by :meth:`ZipImageReader.names`.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # the zip local file header, 30 bytes
_READERS: weakref.WeakSet = weakref.WeakSet()


class ZipImageError(ObjalignError):
    """An archive or member that cannot be read as an image; the message names it and the fix."""


def _after_fork_in_child() -> None:
    for reader in list(_READERS):
        reader._forget_handles()


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
    Thread and process safe: one file handle per thread and per process, one parsed member table per
    process (see the module notes). Members may be stored, deflated or bzip2-compressed (COCO's are stored or
    deflated). Pixels are returned as stored: EXIF orientation is not applied, because COCO boxes and masks
    refer to the stored pixel grid.
    """

    def __init__(self, zip_path: str | os.PathLike, prefix: str = "auto"):
        self.zip_path = Path(zip_path)
        if not self.zip_path.is_file():
            raise ZipImageError(
                f"image archive {self.zip_path} does not exist; download it (objalign data coco2017 "
                f"--no-extract) or set images_from_zip: false"
            )
        self._lock = threading.Lock()
        self._members: dict[str, zipfile.ZipInfo] | None = None
        self._forget_handles()
        members = self._table()
        if prefix == "auto":
            prefix = _common_folder(list(members))
        elif prefix and not prefix.endswith("/"):
            prefix += "/"
        self.prefix = prefix
        _READERS.add(self)

    # -- member table and handles -----------------------------------------------------------------

    def _table(self) -> dict[str, zipfile.ZipInfo]:
        """Member name -> ZipInfo, parsed from the central directory once per process."""
        members = self._members
        if members is None:
            with self._lock:
                if self._members is None:
                    try:
                        with zipfile.ZipFile(self.zip_path) as zf:
                            self._members = {info.filename: info for info in zf.infolist()}
                    except (zipfile.BadZipFile, OSError) as exc:
                        raise ZipImageError(
                            f"{self.zip_path} is not a readable zip archive ({exc}); download it again or point "
                            f"images_from_zip at the right file"
                        ) from None
                members = self._members
        return members

    def _forget_handles(self) -> None:
        """Drop every handle without closing it (at construction and, in a forked child, the parent's)."""
        self._lock = threading.Lock()
        self._local = threading.local()
        self._handles: list = []
        self._pid = os.getpid()

    def _file(self):
        """This thread's binary file handle on the archive, opened on first use."""
        if self._pid != os.getpid():  # forked without the hook having run
            self._forget_handles()
        handle = getattr(self._local, "handle", None)
        if handle is None:
            try:
                handle = open(self.zip_path, "rb")  # noqa: SIM115 - closed by close()
            except OSError as exc:
                raise ZipImageError(
                    f"cannot open image archive {self.zip_path}: {exc.strerror}; check the path and permissions"
                ) from None
            self._local.handle = handle
            with self._lock:
                self._handles.append(handle)
        return handle

    def close(self) -> None:
        """Close every file handle this process opened; the reader reopens them if used again."""
        with self._lock:
            handles, self._handles = self._handles, []
            self._local = threading.local()
        for handle in handles:
            handle.close()

    def __enter__(self) -> ZipImageReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"zip_path": self.zip_path, "prefix": self.prefix}

    def __setstate__(self, state: dict) -> None:
        self.zip_path = state["zip_path"]
        self.prefix = state["prefix"]
        self._members = None
        self._forget_handles()
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
        members = self._table()
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
            name
            for name, info in self._table().items()
            if not info.is_dir() and name.lower().endswith(IMAGE_EXTENSIONS)
        ]

    def __len__(self) -> int:
        return len(self.names())

    def read_bytes(self, file_name: str) -> bytes:
        """The stored bytes of ``file_name``, decompressed, with their CRC-32 checked.

        Raises
        ------
        ZipImageError
            The member is missing or corrupt.
        """
        return self._read(self.member_name(file_name))

    def _read(self, member: str) -> bytes:
        info = self._table()[member]
        fh = self._file()
        try:
            fh.seek(info.header_offset)
            header = fh.read(_LOCAL_HEADER.size)
            if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
                raise _Bad("bad local file header")
            name_len, extra_len = _LOCAL_HEADER.unpack(header)[-2:]
            fh.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
            raw = fh.read(info.compress_size)
            if len(raw) != info.compress_size:
                raise _Bad(f"{len(raw)} of {info.compress_size} bytes, the archive is truncated")
            if info.flag_bits & 0x1:
                raise _Bad("the member is encrypted")
            if info.compress_type == zipfile.ZIP_STORED:
                data = raw
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                data = zlib.decompress(raw, -15)
            elif info.compress_type == zipfile.ZIP_BZIP2:
                data = bz2.decompress(raw)
            else:
                raise ZipImageError(
                    f"member {member!r} of {self.zip_path} uses zip compression method {info.compress_type}, "
                    f"which is not supported; re-zip the images stored or deflated"
                )
            if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
                raise _Bad("Bad CRC-32 or size")
        except (_Bad, zlib.error, OSError, EOFError, ValueError) as exc:
            raise ZipImageError(
                f"member {member!r} of {self.zip_path} is corrupt ({exc}); download the archive again"
            ) from None
        return data

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


class _Bad(Exception):
    """A member that fails its checks (internal; reported as :class:`ZipImageError`)."""


def _common_folder(names: list[str]) -> str:
    """``"folder/"`` when every member lies under one top-level folder, else ``""``."""
    tops = {name.split("/", 1)[0] for name in names if "/" in name.rstrip("/")}
    loose = [name for name in names if "/" not in name.rstrip("/")]
    if len(tops) == 1 and all(name.rstrip("/") in tops for name in loose):
        return tops.pop() + "/"
    return ""
