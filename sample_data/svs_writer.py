"""Write a pyramidal, JPEG-tiled TIFF in the Aperio SVS layout, streaming level 0 from a block renderer.

Page order follows Aperio: level 0 (tiled), a stripped thumbnail, the lower levels (tiled, each 4x
smaller), then the label and macro images. The first ImageDescription starts with
``Aperio Image Library`` and carries ``AppMag`` and ``MPP``, from which OpenSlide's aperio driver takes
``openslide.objective-power`` and ``openslide.mpp-x/y``. Tiles are baseline JPEG in YCbCr with 2x2 chroma
subsampling (photometric YCbCr), which OpenSlide decodes to the same RGB that was encoded.

Level 0 is rendered in square blocks by a pool of threads (or of processes, when there is much to draw),
in order, a bounded number ahead; blank blocks (the renderer says so from the layout) reuse one encoded
tile and one reduced block. The lower levels are
built on the fly into temporary raw files (see :mod:`.pyramid`), so memory stays bounded by a few rows of
blocks whatever the slide's size.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile
from numpy.typing import NDArray
from skimage.transform import resize

from .pyramid import FACTOR, LevelSink, downsample, level_sizes, read_level, read_strips

log = logging.getLogger(__name__)

U8 = NDArray[np.uint8]
Progress = Callable[[int, int], None]

APERIO_HEADER = "Aperio Image Library v12.0.15 \r\n"
_SUBSAMPLING = (2, 2)
_THUMBNAIL_SIDE = 768
_BIGTIFF_BYTES = 3_500_000_000  # switch to BigTIFF when the file could pass 4 GiB


@dataclass(frozen=True, slots=True)
class SvsSpec:
    """What the file says about itself."""

    width: int
    height: int
    mpp: float
    tile_size: int = 256
    block_size: int = 512
    quality: int = 85
    name: str = "sample"
    comment: str = ""

    @property
    def app_mag(self) -> str:
        """Nominal objective magnification: 10 µm/px at 1x, so 0.25 µm/px is 40x and 0.5 µm/px is 20x."""
        mag = 10.0 / self.mpp
        return f"{mag:.0f}" if abs(mag - round(mag)) < 0.05 else f"{mag:.1f}"

    def description(self, extra: str = "") -> str:
        w, h, t = self.width, self.height, self.tile_size
        fields = [
            f"{w}x{h} [0,0 {w}x{h}] ({t}x{t}){extra} JPEG/RGB Q={self.quality}",
            f"AppMag = {self.app_mag}",
            f"MPP = {self.mpp:.4f}",
            "ScanScope ID = PATHOFLASH-SYNTHETIC",
            f"Filename = {self.name}",
        ]
        if self.comment:
            fields.append(f"Comment = {self.comment}")
        return APERIO_HEADER + "|".join(fields)


BlockRenderer = Callable[[int, int, int, int], "U8 | None"]
RendererFactory = Callable[[], BlockRenderer]  # must pickle when rendering in processes


def write_svs(
    path: Path,
    spec: SvsSpec,
    make_renderer: RendererFactory,
    background_tile: U8,
    *,
    label: U8 | None = None,
    macro: Callable[[U8], U8] | None = None,
    workers: int = 1,
    processes: bool = False,
    progress: Progress | None = None,
) -> None:
    """Write the slide to ``path`` (atomically: a temporary name in the same folder, then a rename).

    ``make_renderer()`` returns ``render_block(x0, y0, w, h)``, which gives the level-0 RGB (or RGBX) pixels
    of a block, or ``None`` when it is bare glass, in which case every tile of it must equal
    ``background_tile`` (``tile_size`` square). Level 0 is rendered by ``workers`` threads, or with
    ``processes`` by that many worker processes (each calls ``make_renderer`` once; it must pickle).
    ``macro(thumbnail)`` makes the macro image from the slide's thumbnail.
    """
    t, b = spec.tile_size, spec.block_size
    if b % t or b % FACTOR or t % 16:
        raise ValueError(f"block size {b} must be a multiple of the tile size {t} (itself a multiple of 16)")
    if background_tile.shape != (t, t, 3):
        raise ValueError(f"background tile must be {t}x{t}x3, got {background_tile.shape}")
    sizes = level_sizes(spec.width, spec.height)
    total = sum(math.ceil(w / t) * math.ceil(h / t) for w, h in sizes)
    done = 0

    def report(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    big = spec.width * spec.height * 3 // 4 > _BIGTIFF_BYTES
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        tmp_dir = Path(tmp)
        partial = tmp_dir / path.name
        sinks = _make_sinks(tmp_dir, sizes)
        encoder = _TileEncoder(spec.quality)
        bg = _BackgroundBlock(background_tile, b, encoder)
        local: list[BlockRenderer] = []

        def renderer() -> BlockRenderer:
            if not local:
                local.append(make_renderer())
            return local[0]

        sink = sinks[0] if sinks else None
        with ExitStack() as stack:
            procs = None
            if processes and workers > 1:
                procs = stack.enter_context(_start_processes(workers, make_renderer, spec))
            pool = stack.enter_context(ThreadPoolExecutor(max(1, workers)))
            tw = stack.enter_context(tifffile.TiffWriter(partial, bigtiff=big))
            if procs is not None:
                level0 = _level0_tiles(spec, bg, sink, procs, _worker_job, workers, report)
                _write_tiled(tw, level0, spec.width, spec.height, spec, spec.description())
                procs.shutdown()
            else:
                render_block = renderer()

                def job(bx: int, by: int, reduce: bool) -> _BlockResult:
                    return _block_job(render_block, encoder, spec, bx, by, reduce)

                level0 = _level0_tiles(spec, bg, sink, pool, job, workers, report)
                _write_tiled(tw, level0, spec.width, spec.height, spec, spec.description())
            if sinks:
                sinks[0].close()
            coarsest = read_level(sinks[-1].path, *sizes[-1]) if sinks else None
            thumb = _thumbnail(coarsest if coarsest is not None else _small_level0(renderer(), spec, bg))
            th, tw_ = thumb.shape[:2]
            _write_stripped(tw, thumb, spec.quality, f"{spec.description()} -> {tw_}x{th}", subfiletype=0)
            for level, ((w, h), sink) in enumerate(zip(sizes[1:], sinks, strict=True), start=1):
                tiles = _level_tiles(sink.path, w, h, t, encoder, pool, report)
                ds = FACTOR**level
                _write_tiled(tw, tiles, w, h, spec, spec.description(f" -> {w}x{h} (downsample {ds})"))
            if label is not None:
                tw.write(
                    label,
                    photometric="rgb",
                    compression="lzw",
                    rowsperstrip=16,
                    subfiletype=1,
                    description=f"{APERIO_HEADER}label {label.shape[1]}x{label.shape[0]}",
                    metadata=None,
                )
            if macro is not None:
                image = macro(thumb)
                _write_stripped(
                    tw,
                    image,
                    spec.quality,
                    f"{APERIO_HEADER}macro {image.shape[1]}x{image.shape[0]}",
                    subfiletype=9,
                )
        os.replace(partial, path)
    log.info("wrote %s (%dx%d, %d levels)", path, spec.width, spec.height, len(sizes))


class _TileEncoder:
    def __init__(self, quality: int) -> None:
        self.quality = quality

    def __call__(self, tile: U8) -> bytes:
        """JPEG of an RGB or RGBX (padding byte ignored) tile."""
        return bytes(
            imagecodecs.jpeg8_encode(
                np.ascontiguousarray(tile),
                level=self.quality,
                colorspace="rgba" if tile.shape[-1] == 4 else "rgb",
                outcolorspace="ycbcr",
                subsampling=_SUBSAMPLING,
            )
        )


class _BackgroundBlock:
    """The encoded blank tile and the reduced blank block, made once."""

    def __init__(self, tile: U8, block: int, encoder: _TileEncoder) -> None:
        reps = block // tile.shape[0]
        self.tile = tile
        self.tile_bytes = encoder(tile)
        self.reduced = downsample(np.tile(tile, (reps, reps, 1)), block // FACTOR)


def _make_sinks(tmp_dir: Path, sizes: list[tuple[int, int]]) -> list[LevelSink]:
    """Sinks for levels 1.. (index 0 receives level 1's rows); empty for a single-level slide."""
    sinks: list[LevelSink] = []
    below: LevelSink | None = None
    for level in range(len(sizes) - 1, 0, -1):
        w, h = sizes[level]
        below = LevelSink(tmp_dir / f"level{level}.raw", w, h, below)
        sinks.append(below)
    return sinks[::-1]


_BlockResult = tuple[list[bytes] | None, U8 | None]
_Job = Callable[[int, int, bool], _BlockResult]


def _block_job(
    render_block: BlockRenderer, encoder: _TileEncoder, spec: SvsSpec, bx: int, by: int, reduce: bool
) -> _BlockResult:
    """Render block (bx, by), encode its tiles, and (if ``reduce``) its 4x reduction for level 1."""
    t, b = spec.tile_size, spec.block_size
    pixels = render_block(bx * b, by * b, b, b)
    if pixels is None:
        return None, None
    per = b // t
    tiles = [
        encoder(pixels[r * t : (r + 1) * t, c * t : (c + 1) * t]) for r in range(per) for c in range(per)
    ]
    return tiles, downsample(pixels, b // FACTOR)[..., :3] if reduce else None


_WORKER: tuple[BlockRenderer, _TileEncoder, SvsSpec] | None = None


def _init_worker(make_renderer: RendererFactory, spec: SvsSpec) -> None:
    """Set up a rendering process: its own renderer and encoder."""
    global _WORKER
    _WORKER = (make_renderer(), _TileEncoder(spec.quality), spec)


def _start_processes(workers: int, make_renderer: RendererFactory, spec: SvsSpec) -> ProcessPoolExecutor:
    """A pool of rendering processes, started now.

    Forked while this process has no other thread (safe, and no re-import of the caller's main module);
    spawned otherwise, which (as for any multiprocessing code) needs scripts to guard their entry point
    with ``if __name__ == "__main__":``.
    """
    forkable = "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1
    context = multiprocessing.get_context("fork" if forkable else "spawn")
    procs = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(make_renderer, spec)
    )
    procs.submit(_ready).result()  # with fork, every worker is started here, before any thread exists
    return procs


def _ready() -> bool:
    return _WORKER is not None


def _worker_job(bx: int, by: int, reduce: bool) -> _BlockResult:
    assert _WORKER is not None, "worker process not initialised"
    render_block, encoder, spec = _WORKER
    return _block_job(render_block, encoder, spec, bx, by, reduce)


def _level0_tiles(
    spec: SvsSpec,
    bg: _BackgroundBlock,
    sink: LevelSink | None,
    pool: Executor,
    job: _Job,
    workers: int,
    report: Callable[[int], None],
) -> Iterator[bytes]:
    """Level-0 tiles in TIFF order, rendered block by block a bounded number ahead; feeds level 1."""
    t, b = spec.tile_size, spec.block_size
    per = b // t
    n_tx, n_ty = math.ceil(spec.width / t), math.ceil(spec.height / t)
    n_bx, n_by = math.ceil(spec.width / b), math.ceil(spec.height / b)
    reduce = sink is not None

    pending: deque[Future[_BlockResult]] = deque()
    coords = ((bx, by) for by in range(n_by) for bx in range(n_bx))
    ahead = max(2, 2 * workers) + n_bx
    for bx, by in coords:
        pending.append(pool.submit(job, bx, by, reduce))
        if len(pending) >= ahead:
            break
    for by in range(n_by):
        row: list[_BlockResult] = []
        for _ in range(n_bx):
            row.append(pending.popleft().result())
            nxt = next(coords, None)
            if nxt is not None:
                pending.append(pool.submit(job, *nxt, reduce))
        # bookkeeping before the last yield: tifffile closes this generator once it has all the tiles
        if sink is not None:
            strip = np.concatenate([bg.reduced if red is None else red for _, red in row], axis=1)
            sink.write(strip[:, : sink.width])
        report(min(per, n_ty - by * per) * n_tx)
        for r in range(per):
            ty = by * per + r
            if ty >= n_ty:
                break
            for bx, (tiles, _) in enumerate(row):
                for c in range(per):
                    if bx * per + c < n_tx:
                        yield bg.tile_bytes if tiles is None else tiles[r * per + c]


def _level_tiles(
    path: Path,
    width: int,
    height: int,
    t: int,
    encoder: _TileEncoder,
    pool: ThreadPoolExecutor,
    report: Callable[[int], None],
) -> Iterator[bytes]:
    n_tx = math.ceil(width / t)
    for strip in read_strips(path, width, height, t):
        padded = np.zeros((t, n_tx * t, 3), dtype=np.uint8)
        padded[: strip.shape[0], :width] = strip
        if strip.shape[0] < t:
            padded[strip.shape[0] :, :width] = strip[-1:]
        padded[:, width:] = padded[:, width - 1 : width]
        encoded = list(pool.map(encoder, [padded[:, c * t : (c + 1) * t] for c in range(n_tx)]))
        report(n_tx)
        yield from encoded


def _write_tiled(
    tw: tifffile.TiffWriter, tiles: Iterator[bytes], w: int, h: int, spec: SvsSpec, desc: str
) -> None:
    px_per_cm = 1e4 / spec.mpp * (w / spec.width)
    tw.write(
        tiles,
        shape=(h, w, 3),
        dtype=np.uint8,
        tile=(spec.tile_size, spec.tile_size),
        compression="jpeg",
        photometric="rgb",
        subsampling=_SUBSAMPLING,
        description=desc,
        metadata=None,
        resolution=(px_per_cm, px_per_cm),
        resolutionunit="CENTIMETER",
        software=False,
    )


def _write_stripped(tw: tifffile.TiffWriter, image: U8, quality: int, desc: str, *, subfiletype: int) -> None:
    tw.write(
        np.ascontiguousarray(image),
        photometric="rgb",
        compression="jpeg",
        compressionargs={"level": quality},
        subsampling=_SUBSAMPLING,
        rowsperstrip=16,
        subfiletype=subfiletype,
        description=desc,
        metadata=None,
        software=False,
    )


def _thumbnail(image: U8) -> U8:
    h, w = image.shape[:2]
    scale = min(1.0, _THUMBNAIL_SIDE / max(h, w))
    if scale >= 1.0:
        return image
    out_h, out_w = max(1, round(h * scale)), max(1, round(w * scale))
    small = resize(image, (out_h, out_w), anti_aliasing=True, preserve_range=True)
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def _small_level0(render_block: BlockRenderer, spec: SvsSpec, bg: _BackgroundBlock) -> U8:
    """The whole level 0 of a single-level (at most 1024 px) slide, for its thumbnail."""
    b, t = spec.block_size, spec.tile_size
    out = np.zeros((math.ceil(spec.height / b) * b, math.ceil(spec.width / b) * b, 3), dtype=np.uint8)
    blank = np.tile(bg.tile, (b // t, b // t, 1))
    for y0 in range(0, spec.height, b):
        for x0 in range(0, spec.width, b):
            pixels = render_block(x0, y0, b, b)
            out[y0 : y0 + b, x0 : x0 + b] = blank if pixels is None else pixels[..., :3]
    return out[: spec.height, : spec.width]
