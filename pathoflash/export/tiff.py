"""``heatmap.tif``: the colour-mapped heatmap as a tiled pyramidal TIFF in the slide's frame.

Layout (what OpenSlide's generic-TIFF reader, and so QuPath's OpenSlide server, expects):

* every level is a top-level tiled IFD (512 × 512 tiles by default: a quarter as many tiles to sample,
  encode and index as 256-px ones, 40 % faster on a 1.6-Gpx slide); level 0 first, then each further level
  halves the previous one and carries ``NewSubfileType = reduced-resolution image``;
* 8-bit palette colour (one byte per pixel: the probability quantised to 0…254, 255 = no data, with the
  colour map as the TIFF ColorMap), Deflate-compressed and lossless. Compared with RGB this writes a third
  of the bytes and compresses about three times faster; libtiff (so OpenSlide and QuPath) expands it to RGB;
* ``XResolution``/``YResolution`` in pixels per centimetre, so OpenSlide reports ``openslide.mpp-x/y``.

By default level 0 has exactly the slide's level-0 size and mpp, so a pixel of the TIFF and of the slide at
the same coordinates show the same place (QuPath annotations and the GeoJSON line up). ``base_mpp`` writes
a coarser base over the same physical extent instead (declared mpp = extent / size).

Nothing full-size is ever built: each tile is sampled from the small heatmap (nearest neighbour where the
level is finer than the heatmap, block averages where it is coarser) and encoded on the fly; tiles without
any heatmap data all point at one shared encoded blank tile. No-data pixels are white, like slide background.

The data tiles of a tile row are sampled together, up to :data:`_RUN` per pool task (where the level is finer
than the heatmap, one output row per heatmap row, then repeated), and deflated straight from that array: a
task and a GIL round trip per tile, and a ``bytes`` copy of each, cost more than the deflate itself. The
block averages of the coarse levels are computed on the pool while level 0 is encoded.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..slide import available_cpus
from .atomic import atomic_path
from .colormap import LUT_SIZE, NO_DATA_RGB, viridis_lut
from .sampling import gather, nanmean_reduce, reduction_factors, source_indices

if TYPE_CHECKING:  # pragma: no cover
    from ..heatmap import Heatmap, PathLike

log = logging.getLogger(__name__)

_ZLIB_LEVEL = 2
_AHEAD = 256  # tiles encoded ahead of the writer; bounds how many encoded tiles wait in memory
_RUN = 16  # data tiles sampled and encoded in one task (16 level-0 tiles of 512 px: 4 MB at once)
_BIGTIFF_BYTES = 2**32 - 2**28  # switch to BigTIFF well before a classic TIFF's 4 GiB offsets run out
#: Bytes buffered before the file is written: each write lets go of the GIL and then waits for it while the pool's
#: threads hold it (up to the switch interval); with the default 8 KiB that was ~1,000 waits for a 9 MB file.
_WRITE_BUFFER = 8 << 20


@dataclass(frozen=True, slots=True)
class TiffLevel:
    """One pyramid level: its size and the level-0 size of one of its pixels."""

    width: int
    height: int
    pixel_size: tuple[float, float]  # level-0 pixels per level pixel (x, y)


#: Palette index of pixels without a probability (white).
NO_DATA_INDEX = 255
_LEVELS = 254  # probabilities map to indices 0…254


def palette_index(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities → uint8 palette indices ``round(p · 254)``; NaN → :data:`NO_DATA_INDEX`."""
    finite = np.isfinite(probabilities)
    index = np.full(probabilities.shape, NO_DATA_INDEX, dtype=np.uint8)
    index[finite] = np.rint(np.clip(probabilities[finite], 0.0, 1.0) * _LEVELS).astype(np.uint8)
    return index


def tiff_palette() -> np.ndarray:
    """``(256, 3)`` uint8 RGB of each palette index: the colour map resampled to 255 steps, then white."""
    lut = viridis_lut()
    steps = np.rint(np.arange(_LEVELS + 1) * (LUT_SIZE - 1) / _LEVELS).astype(np.intp)
    return np.concatenate([lut[steps], np.asarray([NO_DATA_RGB], dtype=np.uint8)])


def tiff_colormap() -> np.ndarray:
    """The TIFF ColorMap tag: ``(3, 256)`` uint16, 8-bit colours scaled by 257."""
    return tiff_palette().T.astype(np.uint16) * 257


@functools.cache
def _deflate_encoder() -> Callable[[bytes | np.ndarray], bytes]:
    """zlib-format Deflate (TIFF compression 8): zlib-ng from imagecodecs when built in (≈ 4× faster)."""
    try:
        import imagecodecs

        if imagecodecs.ZLIBNG.available:
            return lambda data: bytes(imagecodecs.zlibng_encode(data, level=_ZLIB_LEVEL))  # type: ignore[arg-type]
    except (ImportError, AttributeError):
        log.debug("imagecodecs zlib-ng unavailable; using zlib")
    return lambda data: zlib.compress(data, _ZLIB_LEVEL)  # type: ignore[arg-type]


def _deflate(data: bytes | np.ndarray) -> bytes:
    """Deflate ``data`` (bytes or a C-contiguous array, read in place)."""
    return _deflate_encoder()(data)


def pyramid_levels(
    slide_dimensions: tuple[int, int], base_size: tuple[int, int], tile_size: int
) -> list[TiffLevel]:
    """Level 0 at ``base_size``, then halves until the whole image fits in one tile."""
    width, height = base_size
    scale = (slide_dimensions[0] / width, slide_dimensions[1] / height)
    levels = [TiffLevel(width, height, scale)]
    factor = 1
    while max(width, height) > tile_size:
        factor *= 2
        width, height = math.ceil(width / 2), math.ceil(height / 2)
        levels.append(TiffLevel(width, height, (scale[0] * factor, scale[1] * factor)))
    return levels


def base_size_for(heatmap: Heatmap, base_mpp: float | None) -> tuple[int, int]:
    """Level-0 size of the TIFF: the slide's, or the same extent at ``base_mpp`` µm/px."""
    if base_mpp is None:
        return heatmap.slide_dimensions
    if not (math.isfinite(base_mpp) and base_mpp > 0):
        raise ValueError(f"base_mpp must be positive, got {base_mpp}")
    w_um, h_um = heatmap.extent_um()
    return max(1, round(w_um / base_mpp)), max(1, round(h_um / base_mpp))


def _tile_span(index: np.ndarray) -> tuple[int, int]:
    """First and last valid source index of one tile's index vector, or (0, −1) when it has none."""
    valid = index[index >= 0]
    return (int(valid[0]), int(valid[-1])) if valid.size else (0, -1)


def _any_in_spans(flags: np.ndarray, lo: np.ndarray, hi: np.ndarray, axis: int) -> np.ndarray:
    """Whether ``flags`` holds any True in each index span ``lo[k] … hi[k]`` along ``axis`` (one pass).

    Spans are in increasing order and may share their end index with the next one's start; an empty span
    (``hi < lo``) gives False.
    """
    n = flags.shape[axis]
    padded = np.concatenate([flags, np.zeros_like(flags.take([0], axis=axis))], axis=axis)
    valid = hi >= lo
    bounds = np.empty(2 * lo.size, dtype=np.intp)  # [lo₀, hi₀+1, lo₁, hi₁+1, …]: the even slots are the spans
    bounds[0::2] = np.where(valid, lo, n)
    bounds[1::2] = np.where(valid, hi + 1, n)
    spans = np.logical_or.reduceat(padded, bounds, axis=axis).take(np.arange(0, bounds.size, 2), axis=axis)
    shape = [1] * flags.ndim
    shape[axis] = lo.size
    return spans & valid.reshape(shape)


@dataclass(frozen=True, slots=True, eq=False)
class _Source:
    """The heatmap as the levels of one reduction sample it: block-averaged by ``(ky, kx)`` (none where the
    level is finer than the heatmap), as palette indices, and where it has data."""

    index: np.ndarray
    has_data: np.ndarray
    reduction: tuple[int, int]
    #: ``index`` with a last row and column of no-data, which index −1 (off the heatmap) takes.
    padded: np.ndarray


def _source(heatmap: Heatmap, ky: int, kx: int) -> _Source:
    reduced = nanmean_reduce(heatmap.probabilities, ky, kx)
    index = palette_index(reduced)
    padded = np.full((index.shape[0] + 1, index.shape[1] + 1), NO_DATA_INDEX, dtype=index.dtype)
    padded[:-1, :-1] = index
    return _Source(index, np.isfinite(reduced), (ky, kx), padded)


class _LevelTiles:
    """Samples and encodes the tiles of one level; tiles over no heatmap data come out empty (``b""``)."""

    def __init__(self, heatmap: Heatmap, level: TiffLevel, tile_size: int, source: _Source) -> None:
        hm_px = heatmap.pixel_size
        ky, kx = source.reduction
        self.index = source.index
        self.padded = source.padded
        src_px = (hm_px[0] * kx, hm_px[1] * ky)
        t = tile_size
        self.n_rows, self.n_cols = math.ceil(level.height / t), math.ceil(level.width / t)
        # Source index under every output row/column of the level, padded to whole tiles with −1
        # (−1 = off the heatmap, or the zero padding beyond the image edge).
        self.rows = np.full(self.n_rows * t, -1, dtype=np.int64)
        self.rows[: level.height] = source_indices(
            0, level.height, level.pixel_size[1], src_px[1], heatmap.origin[1], self.index.shape[0]
        )
        self.cols = np.full(self.n_cols * t, -1, dtype=np.int64)
        self.cols[: level.width] = source_indices(
            0, level.width, level.pixel_size[0], src_px[0], heatmap.origin[0], self.index.shape[1]
        )
        # Which tiles see any heatmap data: the source spans under each tile row and column.
        r_lo, r_hi = np.array([_tile_span(self.rows[i * t : (i + 1) * t]) for i in range(self.n_rows)]).T
        c_lo, c_hi = np.array([_tile_span(self.cols[j * t : (j + 1) * t]) for j in range(self.n_cols)]).T
        by_column = _any_in_spans(source.has_data, c_lo, c_hi, axis=1)  # (source rows, tile columns)
        self.tile_has_data = _any_in_spans(by_column, r_lo, r_hi, axis=0)
        self.tile_size = t
        self.fill = NO_DATA_INDEX

    def encode(self, ij: tuple[int, int]) -> bytes:
        """Tile ``(row, column)`` sampled on its own and encoded: the reference for :meth:`encode_run`."""
        i, j = ij
        t = self.tile_size
        tile = gather(self.index, self.rows[i * t : (i + 1) * t], self.cols[j * t : (j + 1) * t], self.fill)
        return _deflate(np.ascontiguousarray(tile))

    def encode_run(self, i: int, columns: np.ndarray) -> list[bytes]:
        """The tiles at ``columns`` of tile row ``i``, sampled together and encoded (what :meth:`encode` gives
        each).

        One task per run of tiles instead of per tile: a few numpy calls build every tile of the run, then
        each is deflated straight from its contiguous block (no copy into ``bytes``). Where the level is
        finer than the heatmap, the tile rows are runs of equal output rows; only one row per run is
        gathered, then repeated. Only ``take`` builds the tiles (it lets go of the GIL; ``np.repeat`` and
        masked assignment do not): off-heatmap indices (−1) take the no-data row and column of
        ``padded``.
        """
        t = self.tile_size
        rows = self.rows[i * t : (i + 1) * t]
        new_run = np.empty(t, dtype=bool)
        new_run[0] = True
        np.not_equal(rows[1:], rows[:-1], out=new_run[1:])
        distinct = rows[new_run]  # the source row of each run of equal output rows
        run_of_row = np.cumsum(new_run) - 1  # (t,): which run each output row belongs to
        cols = self.cols.reshape(self.n_cols, t)[columns]  # (tiles, t)
        # (distinct rows, tiles, t): one sample per distinct output row of every tile.
        samples = self.padded.take(distinct, axis=0).take(cols, axis=1)
        tiles = samples.transpose(1, 0, 2).take(run_of_row, axis=1)  # (tiles, t, t), C-contiguous
        return [_deflate(tile) for tile in tiles]

    def encoded(self, pool: ThreadPoolExecutor) -> Iterator[bytes]:
        """Encoded tiles in TIFF order (row-major). The data tiles of a tile row go to ``pool`` in tasks of up
        to :data:`_RUN` tiles; up to :data:`_AHEAD` tiles encode ahead of the one being written, so the pool
        keeps working while the writer writes."""
        pending: deque[tuple[int, list[Future[list[bytes]]]]] = deque()  # (tile row, its tasks)
        ahead = 0
        for i in range(self.n_rows):
            columns = np.flatnonzero(self.tile_has_data[i])
            runs = [columns[k : k + _RUN] for k in range(0, columns.size, _RUN)]
            pending.append((i, [pool.submit(self.encode_run, i, run) for run in runs]))
            ahead += columns.size
            while ahead > _AHEAD:
                row, tasks = pending.popleft()
                ahead -= int(self.tile_has_data[row].sum())
                yield from self._row(row, tasks)
        for row, tasks in pending:
            yield from self._row(row, tasks)

    def _row(self, i: int, tasks: list[Future[list[bytes]]]) -> Iterator[bytes]:
        """Tile row ``i``'s encoded tiles in order; blank ones empty, to point at one shared blank tile later."""
        encoded = (tile for task in tasks for tile in task.result())
        for has_data in self.tile_has_data[i]:
            yield next(encoded) if has_data else b""


def _share_blank_tile(path: Path, blank: bytes) -> None:
    """Append one encoded blank tile and point every empty tile of every level at it.

    A slide is mostly background; storing its blank tile once instead of tens of thousands of times keeps the
    file small. Several tile offsets sharing one data block is plain TIFF (libtiff reads by offset and count).
    """
    import tifffile

    with tifffile.TiffFile(path, mode="r+") as tif:
        handle = tif.filehandle
        handle.seek(0, os.SEEK_END)
        offset = handle.tell()
        if offset % 2:  # TIFF data should start on a word boundary
            handle.write(b"\0")
            offset += 1
        handle.write(blank)
        for page in tif.pages:
            assert isinstance(page, tifffile.TiffPage)
            counts = np.asarray(page.databytecounts, dtype=np.int64)
            empty = counts == 0
            if not empty.any():
                continue
            offsets = np.asarray(page.dataoffsets, dtype=np.int64)
            offsets[empty] = offset
            counts[empty] = len(blank)
            page.tags["TileOffsets"].overwrite(offsets.tolist())
            page.tags["TileByteCounts"].overwrite(counts.tolist())


def write_tiff(
    heatmap: Heatmap,
    path: PathLike,
    *,
    base_mpp: float | None = None,
    tile_size: int = 512,
    workers: int | None = None,
) -> Path:
    """Write ``heatmap.tif`` atomically; see the module docstring for the layout."""
    import tifffile

    if tile_size < 16 or tile_size % 16:
        raise ValueError(f"tile_size must be a positive multiple of 16, got {tile_size}")
    base = base_size_for(heatmap, base_mpp)
    levels = pyramid_levels(heatmap.slide_dimensions, base, tile_size)
    blank = _deflate(np.full((tile_size, tile_size), NO_DATA_INDEX, dtype=np.uint8))
    raw_bytes = sum(lv.width * lv.height for lv in levels)
    colormap = tiff_colormap()
    workers = workers or available_cpus()  # zlib releases the GIL: tiles deflate in parallel
    description = (
        f"PathoFlash tumor heatmap; model={heatmap.model_id or 'unknown'}; "
        f"heatmap_mpp={heatmap.mpp:g}; palette index = round(254 * probability), 255 = no data; colormap=viridis"
    )
    with atomic_path(path) as tmp:
        with (
            ThreadPoolExecutor(workers) as pool,
            open(tmp, "wb", buffering=_WRITE_BUFFER) as file,
            tifffile.TiffWriter(file, bigtiff=raw_bytes > _BIGTIFF_BYTES) as tif,
        ):
            # Each distinct reduction once (levels finer than the heatmap all sample it unreduced), all
            # started before the first tile so the coarse levels' block averages compute meanwhile.
            reductions = [reduction_factors(level.pixel_size, heatmap.pixel_size) for level in levels]
            sources = {key: pool.submit(_source, heatmap, *key) for key in dict.fromkeys(reductions)}
            for index, level in enumerate(levels):
                # µm per level pixel → pixels per centimetre.
                mpp_x = heatmap.slide_mpp[0] * level.pixel_size[0]
                mpp_y = heatmap.slide_mpp[1] * level.pixel_size[1]
                tif.write(
                    _LevelTiles(heatmap, level, tile_size, sources[reductions[index]].result()).encoded(pool),
                    shape=(level.height, level.width),
                    dtype=np.uint8,
                    photometric="palette",
                    colormap=colormap,
                    tile=(tile_size, tile_size),
                    compression="adobe_deflate",
                    resolution=(1e4 / mpp_x, 1e4 / mpp_y),
                    resolutionunit="CENTIMETER",
                    subfiletype=0 if index == 0 else 1,
                    description=description if index == 0 else None,
                    metadata=None,
                    software="pathoflash",
                )
        _share_blank_tile(tmp, blank)  # after the writer has closed the file
    log.info("wrote %s: %d levels, level 0 %dx%d", path, len(levels), base[0], base[1])
    return Path(path)


__all__ = [
    "NO_DATA_INDEX",
    "TiffLevel",
    "base_size_for",
    "palette_index",
    "pyramid_levels",
    "tiff_palette",
    "write_tiff",
]
