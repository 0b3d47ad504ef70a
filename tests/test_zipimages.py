"""ZipImageReader: images read straight from a COCO-style zip, from threads and processes."""

from __future__ import annotations

import io
import multiprocessing
import pickle
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from objalign.data.zipimages import ZipImageError, ZipImageReader


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    rng = np.random.default_rng(0)
    rgb = {f"{i:012d}.png": rng.integers(0, 256, size=(10 + i, 13 + i, 3), dtype=np.uint8) for i in range(6)}
    gray = rng.integers(0, 256, size=(7, 9), dtype=np.uint8)
    rgba = rng.integers(0, 256, size=(5, 6, 4), dtype=np.uint8)
    members = {f"train2017/{k}": _encode(v, "PNG") for k, v in rgb.items()}
    members["train2017/gray.png"] = _encode(gray, "PNG")
    members["train2017/alpha.png"] = _encode(rgba, "PNG")
    members["train2017/photo.jpg"] = _encode(rgb["000000000003.png"], "JPEG")
    members["train2017/notes.txt"] = b"not an image"
    members["train2017/broken.jpg"] = b"\xff\xd8\xff\xe0 truncated jpeg"
    path = tmp_path_factory.mktemp("zip") / "train2017.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train2017/", b"")
        for name, data in members.items():
            zf.writestr(name, data)
    return {"path": path, "rgb": rgb, "gray": gray, "rgba": rgba, "members": members}


def test_open_returns_the_stored_pixels_as_rgb(archive):
    with ZipImageReader(archive["path"]) as reader:
        assert reader.prefix == "train2017/"
        for name, pixels in archive["rgb"].items():
            image = reader.open(name)  # the annotation's file_name, without the folder
            assert image.mode == "RGB" and image.size == (pixels.shape[1], pixels.shape[0])
            np.testing.assert_array_equal(np.asarray(image), pixels)
            np.testing.assert_array_equal(np.asarray(reader.open("train2017/" + name)), pixels)  # full name
        gray = np.asarray(reader.open("gray.png"))
        assert gray.shape == (7, 9, 3)
        np.testing.assert_array_equal(gray, np.repeat(archive["gray"][:, :, None], 3, axis=2))
        np.testing.assert_array_equal(np.asarray(reader.open("alpha.png")), archive["rgba"][:, :, :3])
        jpeg = np.asarray(reader.open("photo.jpg"))
        want = np.asarray(Image.open(io.BytesIO(archive["members"]["train2017/photo.jpg"])).convert("RGB"))
        np.testing.assert_array_equal(jpeg, want)


def test_read_bytes_names_and_membership(archive):
    reader = ZipImageReader(archive["path"])
    assert reader.read_bytes("gray.png") == archive["members"]["train2017/gray.png"]
    assert reader.member_name("gray.png") == "train2017/gray.png"
    names = reader.names()
    assert "train2017/notes.txt" not in names and "train2017/" not in names
    assert sorted(names) == sorted(n for n in archive["members"] if not n.endswith(".txt"))
    assert len(reader) == len(names)
    assert "000000000001.png" in reader and "missing.png" not in reader
    reader.close()


def test_prefix_can_be_given_or_disabled(archive):
    assert ZipImageReader(archive["path"], prefix="train2017").member_name("gray.png") == "train2017/gray.png"
    with pytest.raises(ZipImageError, match=r"looked for 'gray.png'\)"):
        ZipImageReader(archive["path"], prefix="").member_name("gray.png")


def test_missing_member_is_a_clear_error(archive):
    reader = ZipImageReader(archive["path"])
    with pytest.raises(ZipImageError, match=r"image '000000999999.jpg' is not in .*train2017\.zip") as info:
        reader.open("000000999999.jpg")
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    assert "'train2017/000000999999.jpg'" in str(info.value)


@pytest.mark.parametrize("name", ["notes.txt", "broken.jpg"])
def test_member_that_is_not_an_image_is_a_clear_error(archive, name):
    with pytest.raises(ZipImageError, match=rf"member 'train2017/{name}' of .* is not a readable image"):
        ZipImageReader(archive["path"]).open(name)


def test_corrupt_member_is_a_clear_error(tmp_path, archive):
    data = archive["path"].read_bytes()
    needle = archive["members"]["train2017/000000000002.png"]
    at = data.index(needle) + len(needle) // 2
    bad = tmp_path / "bad.zip"
    bad.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:])
    with pytest.raises(ZipImageError, match=r"member 'train2017/000000000002.png' .* is corrupt .*CRC"):
        ZipImageReader(bad).read_bytes("000000000002.png")


def test_bad_archive_paths(tmp_path):
    with pytest.raises(ZipImageError, match=r"image archive .*nope\.zip does not exist"):
        ZipImageReader(tmp_path / "nope.zip")
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"<html>not a zip</html>")
    with pytest.raises(ZipImageError, match=r"fake\.zip is not a readable zip archive"):
        ZipImageReader(fake)


def test_threads_get_their_own_handle(archive):
    reader = ZipImageReader(archive["path"])
    names = list(archive["rgb"]) * 20
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(
            lambda n: (np.asarray(reader.open(n)), id(reader._file()), threading.get_ident()), names
        ))
    for name, (pixels, _, _) in zip(names, results):
        np.testing.assert_array_equal(pixels, archive["rgb"][name])
    handles = {h for _, h, _ in results}
    assert reader._members is not None and len(reader._members) == len(archive["members"]) + 1  # one table
    assert len(handles) == len({t for _, _, t in results}) == len({(h, t) for _, h, t in results})
    assert len(reader._handles) == len(handles)
    assert all(h.fileno() >= 0 for h in reader._handles)
    reader.close()
    assert reader._handles == []
    np.testing.assert_array_equal(np.asarray(reader.open("000000000000.png")), archive["rgb"]["000000000000.png"])


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2])
def test_compressed_members_match_zipfile(tmp_path, archive, method):
    path = tmp_path / "packed.zip"
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in archive["members"].items():
            zf.writestr(name, data)
        zf.writestr("train2017/big.bin", bytes(range(256)) * 4000)  # compresses well
    reader = ZipImageReader(path)
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            assert reader.read_bytes(name) == zf.read(name)
    np.testing.assert_array_equal(np.asarray(reader.open("000000000005.png")), archive["rgb"]["000000000005.png"])


def test_unsupported_compression_is_a_clear_error(tmp_path, archive):
    path = tmp_path / "lzma.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_LZMA) as zf:
        zf.writestr("a.png", archive["members"]["train2017/gray.png"])
    with pytest.raises(ZipImageError, match=r"compression method 14, which is not supported; re-zip"):
        ZipImageReader(path).open("a.png")


def test_pickles_without_handles(archive):
    reader = ZipImageReader(archive["path"])
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.prefix == reader.prefix and clone.zip_path == reader.zip_path and clone._handles == []
    np.testing.assert_array_equal(np.asarray(clone.open("000000000004.png")), archive["rgb"]["000000000004.png"])


def _child_reads(reader, names, conn):
    inherited = len(reader._handles) if reader._members is not None else -1  # table kept, handles dropped
    digests = [np.asarray(reader.open(n)).tobytes() for n in names]
    conn.send((inherited, digests))
    conn.close()


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_forked_child_opens_its_own_handle(archive):
    reader = ZipImageReader(archive["path"])
    names = list(archive["rgb"])
    reader.open(names[0])  # the parent holds an open handle at fork time
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    child = ctx.Process(target=_child_reads, args=(reader, names, child_end))
    child.start()
    # the parent keeps reading while the child does: a shared file offset would garble one of them
    mine = [np.asarray(reader.open(n)).tobytes() for n in names * 5]
    inherited, theirs = parent_end.recv()
    child.join(20)
    assert child.exitcode == 0
    assert inherited == 0  # the fork hook dropped the parent's handle in the child
    assert theirs == [archive["rgb"][n].tobytes() for n in names]
    assert mine == [archive["rgb"][n].tobytes() for n in names * 5]
