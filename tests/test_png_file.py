"""png_file: a PNG deflated in independent pieces is one valid zlib stream that Pillow and zlib read back."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from pathoflash.export import png_file
from pathoflash.export.png_file import adler32_combine, filter_rows, write_png_file, zlib_header


def _chunks(path: Path) -> list[tuple[bytes, bytes]]:
    data = path.read_bytes()
    assert data[:8] == png_file.SIGNATURE
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks.append((kind, body))
        pos += 12 + length
    return chunks


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("shape", [(1, 1), (37, 23), (200, 61)])
def test_a_png_of_several_deflate_pieces_reads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape: tuple[int, int], workers: int
) -> None:
    monkeypatch.setattr(png_file, "PIECE_BYTES", 500)  # a few rows per piece: many pieces
    rng = np.random.default_rng(sum(shape))
    picture = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    picture[: shape[0] // 2] //= 16  # something to compress
    path = tmp_path / "p.png"
    write_png_file(path, picture, level=3, workers=workers)
    with Image.open(path) as image:
        assert image.mode == "RGB" and image.size == (shape[1], shape[0])
        assert np.array_equal(np.asarray(image), picture)
    chunks = _chunks(path)
    idat = [body for kind, body in chunks if kind == b"IDAT"]
    assert len(idat) == -(-shape[0] // max(1, 500 // (shape[1] * 3 + 1)))  # one IDAT per piece
    stream = b"".join(idat)
    assert stream[:2] == zlib.compress(b"", 3)[:2]
    assert zlib.decompress(stream) == filter_rows(picture, 0, shape[0]).tobytes()  # Adler-32 checked too
    assert [kind for kind, _ in chunks] == [b"IHDR", *[b"IDAT"] * len(idat), b"IEND"]


def test_the_pieces_do_not_depend_on_the_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(png_file, "PIECE_BYTES", 4000)
    picture = np.random.default_rng(1).integers(0, 256, (300, 70, 3), dtype=np.uint8)
    write_png_file(tmp_path / "one.png", picture, workers=1)
    write_png_file(tmp_path / "four.png", picture, workers=4)
    assert (tmp_path / "one.png").read_bytes() == (tmp_path / "four.png").read_bytes()


def test_up_filter_rows_undo_to_the_picture() -> None:
    picture = np.random.default_rng(2).integers(0, 256, (9, 5, 3), dtype=np.uint8)
    rows = np.concatenate([filter_rows(picture, 0, 4), filter_rows(picture, 4, 9)])
    assert np.all(rows[:, 0] == 2)
    undone = np.cumsum(rows[:, 1:].astype(np.int64), axis=0) % 256  # Up: each row adds the one above
    assert np.array_equal(undone.reshape(picture.shape), picture)


def test_adler32_of_a_concatenation_from_its_parts() -> None:
    rng = np.random.default_rng(3)
    for _ in range(300):
        a = rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes()
        b = rng.integers(0, 256, int(rng.integers(0, 70_000)), dtype=np.uint8).tobytes()
        assert adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(a + b)


@pytest.mark.parametrize("level", range(10))
def test_zlib_header_is_zlibs(level: int) -> None:
    assert zlib_header(level) == zlib.compress(b"abc", level)[:2]


def test_text_chunks_are_the_ones_pillow_writes(tmp_path: Path) -> None:
    text = {"Software": "pathoflash", "Description": "model=µ-net", "Comment": "snowman ☃ (not Latin-1)"}
    picture = np.zeros((4, 6, 3), dtype=np.uint8)
    write_png_file(tmp_path / "ours.png", picture, text=text)
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    Image.fromarray(picture).save(tmp_path / "pillow.png", pnginfo=info)
    ours = [c for c in _chunks(tmp_path / "ours.png") if c[0] != b"IDAT"]
    pillows = [c for c in _chunks(tmp_path / "pillow.png") if c[0] != b"IDAT"]
    assert ours == pillows
    assert [kind for kind, _ in ours] == [b"IHDR", b"tEXt", b"tEXt", b"iTXt", b"IEND"]
    with Image.open(tmp_path / "ours.png") as image:
        assert image.text == text


def test_only_rgb_bytes_are_accepted(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_png_file(tmp_path / "x.png", np.zeros((2, 2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(h, w, 3\)"):
        write_png_file(tmp_path / "x.png", np.zeros((2, 2, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="pixel"):
        write_png_file(tmp_path / "x.png", np.zeros((0, 2, 3), dtype=np.uint8))
