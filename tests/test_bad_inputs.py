"""Bad files a lab will hit: each fails with a clear error through the API and one line on the CLI.

Decisions worth knowing:
- The format is detected from the file's content, not its name: a real slide named ``.txt`` opens fine,
  and a JPEG named ``.svs`` is reported as a JPEG image.
- A truncated TIFF/SVS is reported as truncated (with byte counts), not as "unsupported".
- Unreadable thumbnail parts count as tissue, so their tiles are tried and reported, not silently dropped.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import rect
from typer.testing import CliRunner

import pathoflash as pf
from pathoflash.cli import app
from pathoflash.errors import (
    ConfigError,
    MissingMppError,
    SlideNotFoundError,
    SlideReadError,
    StoreError,
    UnsupportedSlideError,
)

Maker = Callable[[Path, Path], Path]  # (tmp_path, cmu1) -> the bad input


def _nonexistent(tmp: Path, cmu1: Path) -> Path:
    return tmp / "missing.svs"


def _directory(tmp: Path, cmu1: Path) -> Path:
    (tmp / "folder.svs").mkdir()
    return tmp / "folder.svs"


def _empty(tmp: Path, cmu1: Path) -> Path:
    (tmp / "empty.svs").write_bytes(b"")
    return tmp / "empty.svs"


def _truncated(n: int) -> Maker:
    def make(tmp: Path, cmu1: Path) -> Path:
        path = tmp / f"truncated-{n}.svs"
        path.write_bytes(cmu1.read_bytes()[:n])
        return path

    return make


def _random(tmp: Path, cmu1: Path) -> Path:
    path = tmp / "random.svs"
    path.write_bytes(np.random.default_rng(7).bytes(50_000))
    return path


def _text_as_svs(tmp: Path, cmu1: Path) -> Path:
    path = tmp / "notes.svs"
    path.write_text("patient 12, slide 3\n" * 20)
    return path


def _png_as_svs(tmp: Path, cmu1: Path) -> Path:
    import imagecodecs

    path = tmp / "picture.svs"
    path.write_bytes(imagecodecs.png_encode(np.full((64, 64, 3), 200, np.uint8)))
    return path


def _jpeg_photo(tmp: Path, cmu1: Path) -> Path:
    import imagecodecs

    path = tmp / "photo.jpg"
    path.write_bytes(imagecodecs.jpeg_encode(np.full((64, 64, 3), 90, np.uint8)))
    return path


def _gzip(tmp: Path, cmu1: Path) -> Path:
    path = tmp / "slide.svs.gz"
    path.write_bytes(gzip.compress(cmu1.read_bytes()[:200_000]))
    return path


def _plain_tiff(tmp: Path, cmu1: Path) -> Path:
    import tifffile

    path = tmp / "plain.tif"
    tifffile.imwrite(path, np.full((300, 300, 3), 200, np.uint8), photometric="rgb")  # strips, not tiles
    return path


def _symlink_loop(tmp: Path, cmu1: Path) -> Path:
    a, b = tmp / "loop-a.svs", tmp / "loop-b.svs"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def _broken_symlink(tmp: Path, cmu1: Path) -> Path:
    link = tmp / "dangling.svs"
    link.symlink_to(tmp / "gone.svs")
    return link


def _fifo(tmp: Path, cmu1: Path) -> Path:
    path = tmp / "pipe.svs"
    os.mkfifo(path)
    return path


BAD_INPUTS: list[tuple[str, Maker, type[Exception], str]] = [
    ("nonexistent", _nonexistent, SlideNotFoundError, "no such file"),
    ("directory", _directory, SlideNotFoundError, "is a directory"),
    ("empty", _empty, SlideReadError, "empty"),
    ("truncated-header", _truncated(8), SlideReadError, "truncated TIFF"),
    ("truncated-1MB", _truncated(1_000_000), SlideReadError, "truncated TIFF"),
    ("truncated-tail", _truncated(1_938_955 - 1_000), SlideReadError, "truncated TIFF"),
    ("random-bytes", _random, UnsupportedSlideError, "not a whole-slide image"),
    ("text-named-svs", _text_as_svs, UnsupportedSlideError, "text file"),
    ("png-named-svs", _png_as_svs, UnsupportedSlideError, "PNG image"),
    ("jpeg-photo", _jpeg_photo, UnsupportedSlideError, "JPEG image"),
    ("gzip", _gzip, UnsupportedSlideError, "gzip"),
    ("untiled-tiff", _plain_tiff, UnsupportedSlideError, "untiled"),
    ("symlink-loop", _symlink_loop, SlideNotFoundError, "symbolic link loop"),
    ("broken-symlink", _broken_symlink, SlideNotFoundError, "broken symbolic link"),
    ("fifo", _fifo, UnsupportedSlideError, "not a regular file"),
]


@pytest.mark.parametrize(("name", "make", "error", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_api_error(tmp_path: Path, cmu1: Path, name: str, make: Maker, error: type[Exception], message: str):
    path = make(tmp_path, cmu1)
    with pytest.raises(error, match=message) as caught:
        pf.open_slide(path)
    assert isinstance(caught.value, pf.PathoflashError)
    assert str(path) in str(caught.value)
    with pytest.raises(error):
        pf.tile_slide(path, tmp_path / "out" / "tiles.zarr")
    assert not (tmp_path / "out" / "tiles.zarr").exists()


@pytest.mark.parametrize(("name", "make", "error", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
@pytest.mark.parametrize("command", ["info", "tile"])
def test_cli_one_line(
    tmp_path: Path, cmu1: Path, name: str, make: Maker, error: type, message: str, command: str
):
    path = make(tmp_path, cmu1)
    args = [command, str(path)] + (["--out", str(tmp_path / "out")] if command == "tile" else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == [lines[0]] and lines[0].startswith(f"error: {path}: ")
    assert (
        message if (name, command) != ("directory", "tile") else "no slide files in this folder"
    ) in lines[0]
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--debug", "info", str(tmp_path / "missing.svs")])
    assert result.exit_code == 1
    assert isinstance(result.exception, SlideNotFoundError)


def test_real_slide_with_a_wrong_extension_is_read_by_content(tmp_path: Path, cmu1: Path) -> None:
    renamed = tmp_path / "slide.txt"
    shutil.copy(cmu1, renamed)
    with pf.open_slide(renamed) as slide:
        assert slide.format == "aperio"
    result = CliRunner().invoke(app, ["info", str(renamed)])
    assert result.exit_code == 0, result.output
    assert "aperio" in result.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of permissions")
def test_unreadable_permission(tmp_path: Path, cmu1: Path) -> None:
    path = tmp_path / "locked.svs"
    shutil.copy(cmu1, path)
    path.chmod(0)
    with pytest.raises(SlideReadError, match="permission denied"):
        pf.open_slide(path)


def test_missing_mpp_fails_tiling_until_slide_mpp_is_given(tmp_path: Path, make_tiff) -> None:
    path = make_tiff("no-mpp.tif", size=(1024, 1024), shapes=[rect(100, 100, 900, 900)], mpp=None)
    info = CliRunner().invoke(app, ["info", str(path)])
    assert info.exit_code == 0 and "unknown" in info.stdout
    with pytest.raises(MissingMppError, match="--slide-mpp"):
        pf.tile_slide(path, tmp_path / "a" / "tiles.zarr")
    failed = CliRunner().invoke(app, ["tile", str(path), "--out", str(tmp_path / "cli")])
    assert failed.exit_code == 1
    assert failed.stderr.startswith(
        f"error: {path}: slide has no microns-per-pixel metadata; pass --slide-mpp"
    )
    fixed = CliRunner().invoke(app, ["tile", str(path), "--out", str(tmp_path / "cli"), "--slide-mpp", "0.5"])
    assert fixed.exit_code == 0, fixed.output
    store = pf.TileStore.open(tmp_path / "cli" / "no-mpp" / "tiles.zarr")
    assert store.source.mpp_source == "override" and store.mpp == 0.5
    assert len(store.grid.tissue_tiles) > 0


def test_output_location_that_is_not_ours_is_refused(tmp_path: Path, cmu1: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    with pytest.raises(StoreError, match="not a folder"):
        pf.tile_slide(cmu1, a_file)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "results.csv").write_text("precious")
    with pytest.raises(StoreError, match="not a PathoFlash tile store"):
        pf.tile_slide(cmu1, foreign)
    assert (foreign / "results.csv").read_text() == "precious"
    result = CliRunner().invoke(app, ["tile", str(cmu1), "--out", str(a_file)])
    assert result.exit_code == 1 and result.stderr.startswith("error: ")


def test_bad_options(tmp_path: Path, cmu1: Path) -> None:
    with pytest.raises(ConfigError, match="multiple of 16"):
        pf.tile_slide(cmu1, tmp_path / "t.zarr", tile_size=100)
    with pytest.raises(ConfigError, match="--mpp"):
        pf.tile_slide(cmu1, tmp_path / "t.zarr", mpp=-1)
    with pytest.raises(ConfigError, match="--workers"):
        pf.tile_slide(cmu1, tmp_path / "t.zarr", workers=0)
    result = CliRunner().invoke(app, ["tile", str(cmu1), "--out", str(tmp_path), "--tile-size", "100"])
    assert result.exit_code == 1 and "multiple of 16" in result.stderr
    result = CliRunner().invoke(app, ["tile", str(cmu1), "--out", str(tmp_path), "--mpp", "0"])
    assert result.exit_code == 2  # rejected by the argument parser itself


def test_one_bad_slide_does_not_stop_the_others(tmp_path: Path, cmu1: Path) -> None:
    bad = tmp_path / "bad.svs"
    bad.write_bytes(b"not a slide at all")
    result = CliRunner().invoke(app, ["tile", str(bad), str(cmu1), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert f"error: {bad}: " in result.stderr
    assert "1 of 2 inputs failed" in result.stderr
    assert pf.TileStore.open(tmp_path / "out" / "CMU-1-Small-Region" / "tiles.zarr").is_complete
