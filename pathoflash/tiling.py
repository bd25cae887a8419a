"""The tile grid at a target resolution, reading tiles from a slide, and ``tile_slide``.

A grid covers the whole slide at ``mpp`` µm/px with square tiles of ``tile_size`` px, row-major. Tiles are
read from the coarsest pyramid level at least as fine as the target and reduced with anti-aliasing. When
the target is within :data:`SNAP_TOLERANCE` of what a level gives with a whole-number reduction (a 0.499
µm/px scan read at 0.5; a 0.2525 µm/px scan at 1.0), the grid takes that resolution instead (no needless
interpolation) and records it honestly as its ``mpp``.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError, TileReadError
from .jpeg_tiles import DECODERS, Decoder, jpeg_tiles_for
from .resample import resample_window
from .slide import Slide, available_cpus, open_slide
from .tile_stream import decode_in_order
from .tissue import TissueMask, detect_tissue

if TYPE_CHECKING:
    from .store import PyramidBuilder, TileStore

log = logging.getLogger(__name__)

#: Relative difference below which two resolutions count as equal (and a reduction as whole-number).
SNAP_TOLERANCE = 0.02
#: A tile is kept when at least this fraction of it (on the slide) is tissue.
MIN_TISSUE_FRACTION = 0.02
TILE_SIZE_RANGE = (32, 4096)


@dataclass(frozen=True, slots=True)
class TileGrid:
    """Square tiles over a whole slide at ``mpp`` µm/px; tile ``(row, col)`` starts at pixel
    ``(col · tile_size, row · tile_size)`` of a ``width × height`` image.

    ``scale`` is level-0 pixels per grid pixel ``(x, y)``: grid pixel ``(x, y)`` starts at level-0 pixel
    ``(x · scale[0], y · scale[1])``. Tiles are read from pyramid ``level``, ``level_scale`` of its pixels
    per grid pixel; ``integer_reduction`` tells whether that is a whole number (box mean, no interpolation).
    ``tissue_tiles`` lists the tiles to process, sorted row-major.
    """

    mpp: float
    tile_size: int
    width: int
    height: int
    rows: int
    cols: int
    scale: tuple[float, float]
    level: int
    level_scale: tuple[float, float]
    integer_reduction: bool
    requested_mpp: float
    tissue_tiles: tuple[tuple[int, int], ...]
    #: The mask the tissue tiles were chosen with (kept by :func:`plan_grid`; not serialised).
    tissue_mask: TissueMask | None = field(default=None, compare=False, repr=False)

    @property
    def tile_count(self) -> int:
        return self.rows * self.cols

    def tile_origin(self, row: int, col: int) -> tuple[int, int]:
        """Top-left pixel ``(x, y)`` of a tile, in grid pixels."""
        return col * self.tile_size, row * self.tile_size

    def has_tissue(self, x: int, y: int, w: int, h: int) -> bool:
        """Whether the region ``[x, x + w) × [y, y + h)`` (grid pixels) overlaps any tissue tile."""
        t = self.tile_size
        c0, c1 = max(0, x // t), min(self.cols - 1, (x + w - 1) // t)
        r0, r1 = max(0, y // t), min(self.rows - 1, (y + h - 1) // t)
        if w <= 0 or h <= 0 or c0 > c1:
            return False
        tiles = self.tissue_tiles
        for row in range(r0, r1 + 1):
            i = bisect.bisect_left(tiles, (row, c0))
            if i < len(tiles) and tiles[i] <= (row, c1):
                return True
        return False

    def to_level0(self, x: float, y: float) -> tuple[float, float]:
        """A grid-pixel position in level-0 pixels."""
        return x * self.scale[0], y * self.scale[1]

    def tile_bounds_level0(self, row: int, col: int) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` of a tile in level-0 pixels (may reach beyond the slide at the edges)."""
        x, y = self.tile_origin(row, col)
        t = self.tile_size
        return (x * self.scale[0], y * self.scale[1], (x + t) * self.scale[0], (y + t) * self.scale[1])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``tissue_tiles`` as runs ``[row, first_col, last_col + 1]`` to stay small."""
        return {
            "mpp": self.mpp,
            "tile_size": self.tile_size,
            "width": self.width,
            "height": self.height,
            "rows": self.rows,
            "cols": self.cols,
            "scale": list(self.scale),
            "level": self.level,
            "level_scale": list(self.level_scale),
            "integer_reduction": self.integer_reduction,
            "requested_mpp": self.requested_mpp,
            "tissue_tile_count": len(self.tissue_tiles),
            "tissue_tiles": _runs(self.tissue_tiles),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TileGrid:
        tiles = tuple(
            (int(r), c) for r, start, stop in data["tissue_tiles"] for c in range(int(start), int(stop))
        )
        return cls(
            mpp=float(data["mpp"]),
            tile_size=int(data["tile_size"]),
            width=int(data["width"]),
            height=int(data["height"]),
            rows=int(data["rows"]),
            cols=int(data["cols"]),
            scale=(float(data["scale"][0]), float(data["scale"][1])),
            level=int(data["level"]),
            level_scale=(float(data["level_scale"][0]), float(data["level_scale"][1])),
            integer_reduction=bool(data["integer_reduction"]),
            requested_mpp=float(data["requested_mpp"]),
            tissue_tiles=tiles,
        )


def _runs(tiles: Iterable[tuple[int, int]]) -> list[list[int]]:
    runs: list[list[int]] = []
    for r, c in sorted(tiles):
        if runs and runs[-1][0] == r and runs[-1][2] == c:
            runs[-1][2] = c + 1
        else:
            runs.append([r, c, c + 1])
    return runs


def _check_options(mpp: float, tile_size: int) -> None:
    if not (isinstance(mpp, int | float) and math.isfinite(mpp) and 0.01 <= mpp <= 100):
        raise ConfigError(f"--mpp {mpp} is not a resolution in µm/px (expected 0.01–100, e.g. 0.5)")
    lo, hi = TILE_SIZE_RANGE
    if not (isinstance(tile_size, int) and lo <= tile_size <= hi and tile_size % 16 == 0):
        raise ConfigError(f"--tile-size {tile_size} must be a multiple of 16 between {lo} and {hi}")


def _snap(factor: float) -> tuple[float, bool]:
    """A reduction factor, made whole when within tolerance of a whole number ≥ 1."""
    whole = round(factor)
    if whole >= 1 and abs(factor - whole) <= SNAP_TOLERANCE * factor:
        return float(whole), True
    return factor, False


def plan_grid(
    slide: Slide,
    *,
    mpp: float = 0.5,
    tile_size: int = 256,
    tissue: TissueMask | None = None,
    min_tissue: float = MIN_TISSUE_FRACTION,
) -> TileGrid:
    """The tile grid of ``slide`` at ``mpp`` µm/px, keeping tiles with ≥ ``min_tissue`` tissue.

    ``tissue`` defaults to :func:`detect_tissue`. Pass ``min_tissue=0`` and a mask of ones to keep every tile.
    """
    _check_options(mpp, tile_size)
    slide_mpp = slide.mpp
    # Coarsest level at least as fine as the target (within tolerance) on both axes.
    level = 0
    for n, downsample in enumerate(slide.level_downsamples):
        if all(m * downsample <= mpp * (1 + SNAP_TOLERANCE) for m in slide_mpp):
            level = n
    downsample = slide.level_downsamples[level]
    snapped = [_snap(mpp / (m * downsample)) for m in slide_mpp]
    integer = all(ok for _, ok in snapped) and snapped[0][0] == snapped[1][0]
    if integer:
        level_scale = (snapped[0][0], snapped[1][0])
    else:
        level_scale = (mpp / (slide_mpp[0] * downsample), mpp / (slide_mpp[1] * downsample))
    scale = (level_scale[0] * downsample, level_scale[1] * downsample)
    effective = (scale[0] * slide_mpp[0] + scale[1] * slide_mpp[1]) / 2
    if effective < mpp * (1 - SNAP_TOLERANCE) or level_scale[0] < 1 - SNAP_TOLERANCE:
        log.warning(
            "%s: target %.4g µm/px is finer than the scan (%.4g µm/px); tiles are upsampled",
            slide.path, mpp, slide_mpp[0],
        )  # fmt: skip
    if abs(effective - mpp) > 1e-9 * mpp:
        log.info(
            "%s: reading at %.4g µm/px (within %.0f%% of %.4g)",
            slide.path,
            effective,
            100 * SNAP_TOLERANCE,
            mpp,
        )
    w0, h0 = slide.dimensions
    width = max(1, math.ceil(w0 / scale[0] - 1e-6))
    height = max(1, math.ceil(h0 / scale[1] - 1e-6))
    rows, cols = -(-height // tile_size), -(-width // tile_size)
    if tissue is None:
        tissue = detect_tissue(slide)
    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    fractions = tissue.fractions(
        cc.ravel() * tile_size, rr.ravel() * tile_size, tile_size, tile_size, effective
    ).reshape(rows, cols)
    tiles = tuple((int(r), int(c)) for r, c in np.argwhere(fractions >= min_tissue))
    return TileGrid(
        mpp=effective,
        tile_size=tile_size,
        width=width,
        height=height,
        rows=rows,
        cols=cols,
        scale=scale,
        level=level,
        level_scale=level_scale,
        integer_reduction=integer,
        requested_mpp=float(mpp),
        tissue_tiles=tiles,
        tissue_mask=tissue,
    )


def read_grid_region(
    slide: Slide, grid: TileGrid, x: int, y: int, w: int, h: int, *, decoder: Decoder = "auto"
) -> np.ndarray:
    """Pixels ``[y, y + h) × [x, x + w)`` of the grid's image, read from the slide: ``(h, w, 3)`` uint8.

    Areas beyond the slide are white. Adjacent reads line up exactly (no seams between tiles).
    With ``decoder="auto"``, JPEG-tiled TIFF levels read at a whole-number reduction of 1 or 2 are decoded
    from the raw tile bytes (:mod:`pathoflash.jpeg_tiles`); everything else, and any region that path fails
    on, is read through OpenSlide (``decoder="openslide"``: always).
    """
    level = grid.level
    downsample = slide.level_downsamples[level]
    fx, fy = grid.level_scale
    if grid.integer_reduction:
        kx, ky = round(fx), round(fy)
        lx, ly = x * kx, y * ky
        location = (round(lx * downsample), round(ly * downsample))
        if decoder == "auto" and kx == ky:
            fast = _read_jpeg_tiles(slide, level, location, (w * kx, h * ky), kx)
            if fast is not None:
                return fast
        return slide.read_region(location, level, (w * kx, h * ky), reduce=(kx, ky))
    # Non-integer factor: read a window with a margin for the anti-aliasing filter, then resample exactly.
    sx0, sy0 = x * fx, y * fy
    mx, my = math.ceil(2 * max(fx, 1.0)) + 1, math.ceil(2 * max(fy, 1.0)) + 1
    ix0, iy0 = math.floor(sx0) - mx, math.floor(sy0) - my
    ix1, iy1 = math.ceil(sx0 + w * fx) + mx, math.ceil(sy0 + h * fy) + my
    window = slide.read_region(
        (round(ix0 * downsample), round(iy0 * downsample)), level, (ix1 - ix0, iy1 - iy0)
    )
    return resample_window(window, origin=(sx0 - ix0, sy0 - iy0), factor=(fx, fy), size=(w, h))


def _read_jpeg_tiles(
    slide: Slide, level: int, location: tuple[int, int], size: tuple[int, int], reduce: int
) -> np.ndarray | None:
    """``slide.read_region(location, level, size, reduce=reduce)`` from the raw JPEG tiles, or ``None`` when
    that path does not apply or fails (the caller then reads through OpenSlide, which reports errors)."""
    tiles = jpeg_tiles_for(slide)
    if tiles is None or not tiles.applies(level, reduce):
        return None
    # OpenSlide reads level pixel (x / downsample, y / downsample), interpolating when that is fractional:
    # only whole level pixels are the same region here.
    downsample = slide.level_downsamples[level]
    fx, fy = location[0] / downsample, location[1] / downsample
    lx, ly = round(fx), round(fy)
    if abs(fx - lx) > 1e-6 or abs(fy - ly) > 1e-6:
        return None
    try:
        return tiles.read_region(level, (lx, ly), size, reduce)
    except Exception as exc:  # corrupt or truncated tile bytes, decoder errors: OpenSlide decides
        log.debug("%s: raw-JPEG read at level %d (%d, %d) failed (%s); reading through OpenSlide",
                  slide.path, level, lx, ly, exc)  # fmt: skip
        return None


def read_tile(slide: Slide, grid: TileGrid, row: int, col: int, *, decoder: Decoder = "auto") -> np.ndarray:
    """Tile ``(row, col)`` of ``grid`` read from ``slide``: ``(T, T, 3)`` uint8, white beyond the slide."""
    x, y = grid.tile_origin(row, col)
    return read_grid_region(slide, grid, x, y, grid.tile_size, grid.tile_size, decoder=decoder)


def default_workers() -> int:
    """Tiling threads (each reads and writes tiles): the CPUs this process may use."""
    return available_cpus()


@dataclass(frozen=True, slots=True)
class TilingReport:
    """What one :func:`tile_slide` call did (also logged)."""

    tiles_total: int
    tiles_done_before: int
    tiles_decoded: int
    unreadable: int
    seconds: float
    resumed: bool
    rebuilt: bool


def tile_slide(
    slide_or_path: Slide | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    mpp: float = 0.5,
    tile_size: int = 256,
    slide_mpp: float | None = None,
    workers: int | None = None,
    strict: bool = False,
    progress: Callable[[int, int], None] | None = None,
    on_tile: Callable[[int, int, np.ndarray], None] | None = None,
    grid: TileGrid | None = None,
    tissue: TissueMask | None = None,
    on_store: Callable[[TileStore], None] | None = None,
    name: str | None = None,
    codec: str | None = None,
    decoder: Decoder = "auto",
) -> TileStore:
    """Tile a slide's tissue at ``mpp`` µm/px into a Zarr tile store at ``out`` (a ``tiles.zarr`` folder).

    Resumable: an existing store for the same, unchanged source file and options is completed (only missing
    chunks are written) or, when already complete, returned as is; a store for a changed file or other
    options is rebuilt. Each of ``workers`` threads (default: all CPUs) reads a tile and encodes and writes
    its chunk and its share of the pyramid itself, so writing scales with the threads like reading; the
    calling thread takes the finished tiles in row-major order.

    - ``progress(done, total)``: on the calling thread after each tile is in the store (``done`` counts
      tiles from earlier runs too).
    - ``on_tile(row, col, tile)``: every tile this call handles, as ``(T, T, 3)`` uint8, in row-major order,
      on the calling thread, after the tile's chunk is in the store (so a reader of the store may read it
      from then on); a slow callback holds back the threads by at most a few tiles each. Tiles from an earlier run are not decoded again and not passed (read them
      with :meth:`TileStore.read_tile`); an unreadable tile is passed as the white tile the store holds.
      The array is shared: do not modify it.
    - ``grid``: a grid from :func:`plan_grid` for this slide (skips planning; its tissue mask is reused).
      ``tissue``: a precomputed mask. ``on_store(store)``: called once the store exists, before tiling.
    - ``codec``: chunk compression of a new store, ``"lz4"`` (default, Blosc-LZ4), ``"zstd"`` (level 1,
      smaller, slower) or ``"none"`` (fastest, largest). An existing store keeps its codec.
    - ``decoder``: ``"auto"`` (default) decodes JPEG-tiled TIFF slides (Aperio SVS, generic tiled TIFF)
      read at a whole-number reduction of 1 or 2 from their raw tile bytes, libjpeg halving in the DCT
      domain, and everything else through OpenSlide; ``"openslide"`` reads every tile through OpenSlide.

    Tiles that stay unreadable after a reopen-and-retry are left white, listed in the store's attributes
    (``TileStore.unreadable_tiles``) and logged; with ``strict=True`` the first one raises
    :class:`TileReadError` instead (the store stays incomplete and resumable).
    """
    from .store import CHUNK_CODECS, DEFAULT_CODEC, PyramidBuilder, SourceInfo, TileStore, reuse_store

    started = time.perf_counter()
    if codec is not None and codec not in CHUNK_CODECS:
        raise ConfigError(f"chunk codec {codec!r} is not one of {', '.join(CHUNK_CODECS)}")
    if decoder not in DECODERS:
        raise ConfigError(f"tile decoder {decoder!r} is not one of {', '.join(DECODERS)}")
    if grid is not None:
        mpp, tile_size = grid.requested_mpp, grid.tile_size
    _check_options(mpp, tile_size)
    n_workers = default_workers() if workers is None else int(workers)
    if n_workers < 1:
        raise ConfigError(f"--workers {workers} must be at least 1")
    own_slide = not isinstance(slide_or_path, Slide) or slide_mpp is not None
    slide = open_slide(slide_or_path, mpp=slide_mpp)
    try:
        root = Path(out)
        source = SourceInfo.from_slide(slide)
        store, rebuilt = reuse_store(root, source, mpp=mpp, tile_size=tile_size, grid=grid)
        resumed = store is not None and not store.is_complete
        if store is None:
            if grid is None:
                grid = plan_grid(slide, mpp=mpp, tile_size=tile_size, tissue=tissue)
            mask = grid.tissue_mask or tissue or detect_tissue(slide)
            store = TileStore.create(
                root,
                grid=grid,
                tissue=mask,
                source=source,
                name=name or slide.path.stem,
                codec=codec or DEFAULT_CODEC,
            )
        if on_store is not None:
            on_store(store)
        if store.is_complete:
            log.info("%s: tile store is complete, nothing to do", root)
            total = len(store.grid.tissue_tiles)
            if progress is not None:
                progress(total, total)
            seconds = time.perf_counter() - started
            store.last_report = TilingReport(total, total, 0, 0, seconds, resumed=False, rebuilt=False)
            return store
        removed = store.remove_stale_temporaries()
        if removed:
            log.info("%s: removed %d partial files of an interrupted run", root, removed)
        grid = store.grid
        todo = store.missing_tiles()
        total = len(grid.tissue_tiles)
        done_before = total - len(todo)
        if resumed:
            log.info("%s: resuming, %d of %d tiles already written", root, done_before, total)
        unreadable = _stream_tiles(
            slide, store, todo, PyramidBuilder(store, grid.tissue_tiles, set(todo)),
            workers=n_workers, strict=strict, progress=progress, on_tile=on_tile,
            done_before=done_before, decoder=decoder,
        )  # fmt: skip
        store.mark_complete()
        seconds = time.perf_counter() - started
        log.log(
            logging.WARNING if store.unreadable_tiles else logging.INFO,
            "%s: %d tissue tiles (%d decoded now, %d unreadable) in %.1f s",
            root, total, len(todo) - unreadable, len(store.unreadable_tiles), seconds,
        )  # fmt: skip
        report = TilingReport(
            total, done_before, len(todo) - unreadable, unreadable, seconds, resumed, rebuilt
        )
        store.last_report = report
        return store
    finally:
        if own_slide:
            slide.close()


def _stream_tiles(
    slide: Slide,
    store: TileStore,
    todo: list[tuple[int, int]],
    pyramid: PyramidBuilder,
    *,
    workers: int,
    strict: bool,
    progress: Callable[[int, int], None] | None,
    on_tile: Callable[[int, int, np.ndarray], None] | None,
    done_before: int,
    decoder: Decoder = "auto",
) -> int:
    """Decode and write ``todo`` on ``workers`` threads; returns how many tiles were unreadable.

    Each thread does all of a tile's work while its pixels are in cache: read, (y, x, c) → (c, y, x) into a
    buffer of its own, encode, write-then-rename, 2 × 2 mean into the parent, and any parent chunk this
    completes (:class:`PyramidBuilder` is thread-safe). LZ4, file I/O, JPEG decoding and the numpy work
    release the GIL, so the write side scales with the threads like the read side: no stage runs on a
    single thread. The calling thread only takes finished tiles in row-major order (a tile's chunk is in
    the store before it gets it) to report progress, call ``on_tile``, and handle unreadable tiles — those
    reach the pyramid from here, after the strict check, so a strict failure never writes a parent.
    """
    grid = store.grid
    files = store.level_files(0)
    t = grid.tile_size
    white = np.full((t, t, 3), 255, np.uint8)
    white.flags.writeable = False
    scratch = threading.local()

    def read_and_write(key: tuple[int, int]) -> np.ndarray:
        row, col = key
        tile = read_tile(slide, grid, row, col, decoder=decoder)
        chunk: np.ndarray | None = getattr(scratch, "chunk", None)
        if chunk is None:
            chunk = scratch.chunk = np.empty((3, t, t), np.uint8)
        np.copyto(chunk, tile.transpose(2, 0, 1))  # no allocation per tile
        files.write(row, col, chunk, in_place=True)
        pyramid.add(row, col, chunk)  # done with ``chunk`` when this returns
        return tile

    pyramid.start()
    unreadable = 0
    done = done_before
    total = len(grid.tissue_tiles)
    if progress is not None:
        progress(done, total)
    tiles = decode_in_order(read_and_write, todo, workers=workers)
    try:
        for (row, col), result in tiles:
            if isinstance(result, TileReadError):
                if strict:
                    raise TileReadError(
                        f"tile (row {row}, col {col}) unreadable: {result.message} "
                        "(strict mode; without --strict it is skipped and listed)",
                        path=slide.path,
                    ) from result
                unreadable += 1
                log.info("%s: tile (%d, %d) unreadable, left white: %s", slide.path, row, col, result.message)
                store.record_unreadable(row, col, result.message)
                pyramid.add(row, col, None)
                result = white
            if on_tile is not None:
                on_tile(row, col, result)
            done += 1
            if progress is not None:
                progress(done, total)
    finally:
        tiles.close()
    pyramid.finish()
    return unreadable
