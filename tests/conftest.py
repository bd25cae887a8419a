"""Shared fixtures: the real CMU-1 slide, a copy with one corrupt JPEG tile, and tiled TIFFs made to order."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
CMU1 = FIXTURES / "CMU-1-Small-Region.svs"
#: CMU-1-Small-Region level 0 is stored as 240 × 240 JPEG tiles; this one gets corrupted.
CORRUPT_SVS_TILE = (5, 4)  # (row, col) of the 240-px SVS tile
CMU1_TILE = 240

Colour = tuple[int, int, int]
PINK: Colour = (222, 140, 190)
PURPLE: Colour = (110, 60, 150)


@pytest.fixture
def exact_float32():
    """float32 matmuls without TF32 on the GPU while a test runs: the references must be exact."""
    import torch

    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = previous


@pytest.fixture(scope="session")
def cmu1() -> Path:
    """The real Aperio slide (2220 × 2967, 0.499 µm/px, 20×)."""
    assert CMU1.is_file(), f"missing test fixture {CMU1}"
    return CMU1


@pytest.fixture(scope="session")
def corrupt_svs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CMU-1 with the first bytes of one level-0 JPEG tile zeroed: OpenSlide fails on that tile only."""
    import tifffile

    path = tmp_path_factory.mktemp("corrupt") / "corrupt.svs"
    shutil.copy(CMU1, path)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        cols = -(-page.imagewidth // page.tilewidth)
        offset = page.dataoffsets[CORRUPT_SVS_TILE[0] * cols + CORRUPT_SVS_TILE[1]]
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\0" * 64)
    return path


def corrupt_grid_tiles(tile_size: int = 256) -> set[tuple[int, int]]:
    """Grid tiles (at CMU-1's own resolution) that overlap the corrupted SVS tile."""
    r, c = CORRUPT_SVS_TILE
    x0, y0, x1, y1 = c * CMU1_TILE, r * CMU1_TILE, (c + 1) * CMU1_TILE, (r + 1) * CMU1_TILE
    return {
        (row, col)
        for row in range(y0 // tile_size, (y1 - 1) // tile_size + 1)
        for col in range(x0 // tile_size, (x1 - 1) // tile_size + 1)
    }


# -- tiled TIFFs made to order ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Shape:
    """A filled rectangle or disk in level-0 pixels; ``textured`` adds nuclei-like dark dots."""

    kind: str  # "rect" | "disk"
    box: tuple[float, float, float, float]  # rect: x0, y0, x1, y1; disk: cx, cy, r, unused
    colour: Colour
    textured: bool = False

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        if self.kind == "rect":
            return self.box
        cx, cy, r, _ = self.box
        return (cx - r, cy - r, cx + r, cy + r)

    def cover(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Inside-mask on the grid of pixel centres ``xs`` (columns) × ``ys`` (rows)."""
        if self.kind == "rect":
            x0, y0, x1, y1 = self.box
            return ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
        cx, cy, r, _ = self.box
        return ((ys - cy) ** 2)[:, None] + ((xs - cx) ** 2)[None, :] < r * r


def rect(x0: float, y0: float, x1: float, y1: float, colour: Colour = PINK, textured: bool = True) -> Shape:
    return Shape("rect", (x0, y0, x1, y1), colour, textured)


def disk(cx: float, cy: float, r: float, colour: Colour = PINK, textured: bool = True) -> Shape:
    return Shape("disk", (cx, cy, r, 0.0), colour, textured)


def paint(
    shapes: Sequence[Shape], x0: float, y0: float, w: int, h: int, ds: float, background: Colour | None
):
    """Pixels ``(h, w, 3)`` of a level with downsample ``ds`` whose top-left is level-0 ``(x0, y0)``;
    ``None`` when nothing is drawn there and the background is transparent (a sparse tile)."""
    xs = x0 + (np.arange(w) + 0.5) * ds
    ys = y0 + (np.arange(h) + 0.5) * ds
    touching = [
        shape
        for shape in shapes
        if not (
            shape.bounds[0] > xs[-1]
            or shape.bounds[2] < xs[0]
            or shape.bounds[1] > ys[-1]
            or shape.bounds[3] < ys[0]
        )
    ]
    if not touching and background is None:
        return None
    out = np.empty((h, w, 3), np.uint8)
    out[...] = np.asarray(background if background is not None else (255, 255, 255), np.uint8)
    drawn = False
    for shape in touching:
        inside = shape.cover(xs, ys)
        if not inside.any():
            continue
        drawn = True
        out[inside] = shape.colour
        if shape.textured:
            dots = inside & ((((np.floor(ys / 12) * 3)[:, None] + (np.floor(xs / 12) * 7)[None, :]) % 5) == 0)
            out[dots] = PURPLE
    if not drawn and background is None:
        return None
    return out


def write_tiff(
    path: Path,
    *,
    size: tuple[int, int],
    shapes: Sequence[Shape] = (),
    mpp: float | None = 0.5,
    downsamples: Sequence[int] = (1,),
    background: Colour | None = None,
    tile: int = 256,
    compression: str | None = "jpeg",
) -> Path:
    """A generic tiled (pyramidal) TIFF that OpenSlide opens; empty tiles are left out (sparse) when
    ``background`` is None, so gigapixel test slides are small and quick to write."""
    import imagecodecs
    import tifffile

    def tiles(w: int, h: int, ds: int):
        for ty in range(0, h, tile):
            for tx in range(0, w, tile):
                pixels = paint(shapes, tx * ds, ty * ds, tile, tile, ds, background)
                if pixels is None:
                    yield b""
                elif compression == "jpeg":
                    yield imagecodecs.jpeg_encode(pixels, level=90)
                else:
                    yield pixels.tobytes()

    width, height = size
    extra = {} if mpp is None else {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for n, ds in enumerate(downsamples):
            w, h = width // ds, height // ds
            tif.write(
                tiles(w, h, ds),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression=compression,
                subfiletype=0 if n == 0 else 1,
                **extra,
            )
    return path


@pytest.fixture
def make_tiff(tmp_path: Path) -> Callable[..., Path]:
    """``make_tiff(name, size=(w, h), shapes=[...], mpp=0.5, downsamples=(1, 4), ...)`` → path."""

    def make(name: str = "slide.tif", **kwargs) -> Path:
        return write_tiff(tmp_path / name, **kwargs)

    return make


# -- synthetic H&E slides (pathoflash.sample_data) ---------------------------------------------------
SYNTHETIC_SEEDS = (1, 2, 3)


@pytest.fixture(scope="session")
def synthetic_slides(tmp_path_factory: pytest.TempPathFactory) -> list:
    """Three small synthetic slides (2048 × 2048 px at 0.5 µm/px), seed 1 without pen marks."""
    from pathoflash.sample_data import write_sample_slide

    folder = tmp_path_factory.mktemp("synthetic")
    return [
        write_sample_slide(
            folder / f"synthetic-{seed}.svs", seed=seed, size=(2048, 2048), mpp=0.5, pen_marks=seed != 1
        )
        for seed in SYNTHETIC_SEEDS
    ]
