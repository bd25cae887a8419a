"""One slide's outputs (DESIGN.md's output folder), with everything that does not need the heatmap made early.

The exports are the tail of a slide: nothing can be written before the model's last region. So the slide's
own pictures are prepared while the tiler and the model still run (:class:`SlidePictures`):

* the background: the whole slide read coarse (:func:`pathoflash.viewer_image.read_background`), as soon as
  the slide is open;
* the PNG's thumbnail, reduced from the background (or, where the background is too coarse, from the
  viewer's image);
* the viewer's whole-slide image: the background upsampled onto the store pyramid level's frame as soon as
  the tile grid is planned, and the store's tissue pasted over it as soon as the tiler has finished.

Its JPEG levels (0.65–0.76 s on 16 threads for a 2-Gpx slide, 2026-11-25; their tiles have since been
encoded without holding the GIL) are encoded only once the heatmap exists, by the viewer's export: encoded
while the model finished, they slowed the model's last regions by 0.4 s (H100 host, 2026-11-25). Beside the
other exports they are expected to end before the TIFF; that ordering was not measured on a GPU.

What is left once the heatmap exists is written concurrently by :func:`write_outputs`: the heatmap blended
over the thumbnail, the GeoJSON contours, the TIFF, the viewer page around the ready levels, the summary.
The PNG, the GeoJSON and the TIFF are written in processes of their own (:class:`WriterProcesses`, started
when the slide opens, so their start-up is paid while the model runs): as threads of one process they fought
over its GIL, the GeoJSON busy in Python while the TIFF, the PNG and the viewer's JPEG tiles needed it back
after every call into C (:mod:`pathoflash.export.process`). On a 16-vCPU H200 host (2026-11-26,
``benchmarks/exports.py``, a 45,000² slide, with the faster TIFF and viewer levels) the export phase took
0.88 s in threads and 0.53 s with the GeoJSON and the TIFF in processes (the PNG's own process came after).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .export.process import WriterProcess
from .heatmap import png_mpp_for, viewer_mpp_for
from .options import RunOptions
from .slide import available_cpus
from .viewer_image import canvas, level_mpp, paste_tiles, read_background, viewer_level

#: Imported while the tissue is detected: the tiler's first need (~0.35 s, GIL-held).
_EARLY_IMPORTS = ("zarr",)
#: Imported once the tiles are done, before the exports start, so that no two export threads import one
#: package at once: two threads importing one package can see it half-initialised (scipy raised ImportError
#: so). Not earlier, for the same reason: tissue detection imports scipy and scikit-image meanwhile.
_EXPORT_IMPORTS = ("skimage.measure:find_contours", "tifffile")


#: Exports written in a process of their own, and the modules each process imports while it waits.
#: Everything a writer's first call would import lazily belongs here: a first GeoJSON without
#: scipy.sparse.csgraph imported took 0.49 s against 0.05 s warm, a first PNG without Pillow's plugins 0.49
#: against 0.36 s (this 2-core box, 2026-11-26).
_OWN_PROCESS = {
    "heatmap.png": (
        "pathoflash.export.png",
        "PIL.Image",
        "PIL.ImageDraw",
        "PIL.ImageFont",
        "PIL.PngImagePlugin",
        "PIL.BmpImagePlugin",
        "PIL.GifImagePlugin",
        "PIL.JpegImagePlugin",
        "PIL.PpmImagePlugin",
        "subprocess",
        "locale",
    ),
    "heatmap.geojson": ("pathoflash.export.geojson", "scipy.sparse", "scipy.sparse.csgraph"),
    "heatmap.tif": ("pathoflash.export.tiff", "tifffile", "imagecodecs"),
}


@dataclass(frozen=True, slots=True)
class _Background:
    image: np.ndarray
    mpp: float
    thumbnail: np.ndarray | None  # the PNG's thumbnail, where the background is fine enough for it


@dataclass(frozen=True, slots=True)
class _Viewer:
    image: np.ndarray
    mpp: tuple[float, float]
    thumbnail: np.ndarray | None  # the PNG's thumbnail, where the background was too coarse for it


class SlidePictures:
    """The slide's own images for the outputs, made on background threads while the heatmap is computed.

    Start it when the slide is open; call :meth:`grid_ready` with the tile grid and :meth:`tiles_ready`
    once the tile store holds every tile (a :class:`~pathoflash.pipeline.TilingListener`).
    :meth:`thumbnail` and :meth:`viewer_levels` wait for what they need. Use it as a context manager:
    leaving it waits for (or, after an error, cancels) the remaining work.
    """

    def __init__(
        self, slide: Any, timings: dict[str, float], export_imports: tuple[str, ...] = _EXPORT_IMPORTS
    ) -> None:
        """``export_imports``: the modules of the exports written in this process, imported once the tiles
        are done (none where every export that needs them has a process of its own: an import holds the GIL
        for its whole run, and just then the model reads its last regions)."""
        self._slide, self._timings = slide, timings
        self._export_imports = export_imports
        self._png_mpp = png_mpp_for(slide.dimensions, slide.mpp)
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="pictures")
        self._pool.submit(_import_quietly, _EARLY_IMPORTS)
        self._background = self._pool.submit(self._read_background)
        self._canvas: Future[tuple[int, np.ndarray]] | None = None
        self._viewer: Future[_Viewer] | None = None
        self._imports: Future[None] | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> SlidePictures:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=exc_type is not None)

    def grid_ready(self, grid: Any) -> None:
        """Start the viewer image's background, upsampled onto its store level's frame (once)."""
        with self._lock:
            if self._canvas is None:
                self._canvas = self._pool.submit(self._make_canvas, grid)

    def tiles_ready(self, store_path: Path) -> None:
        """Start the viewer image from the finished store at ``store_path`` (once)."""
        with self._lock:
            if self._viewer is None:
                if self._export_imports:
                    self._imports = self._pool.submit(_import_quietly, self._export_imports)
                self._viewer = self._pool.submit(self._make_viewer, store_path)

    def wait_for_imports(self) -> None:
        """Wait until the exports' modules are imported (so no two export threads import one at once)."""
        if self._imports is not None:
            self._imports.result()

    def thumbnail(self) -> tuple[np.ndarray, float]:
        """The PNG's whole-slide thumbnail and its µm/px."""
        background = self._background.result()
        if background.thumbnail is not None:
            return background.thumbnail, self._png_mpp
        thumbnail = self._viewer_result().thumbnail
        assert thumbnail is not None  # made by _make_viewer whenever the background is too coarse
        return thumbnail, self._png_mpp

    def viewer_levels(self, workers: int | None = None) -> Any:
        """The viewer's slide image as encoded JPEG levels (:class:`~pathoflash.export.viewer.SlideLevels`).

        Encoded here, on the caller's thread and ``workers`` helpers (default
        :func:`~pathoflash.slide.available_cpus`).
        """
        from .export.viewer import encode_slide_levels

        viewer = self._viewer_result()
        t0 = time.perf_counter()
        workers = workers or available_cpus()
        levels = encode_slide_levels(viewer.image, viewer.mpp, self._slide.mpp, workers=workers)
        self._timings["viewer levels"] = time.perf_counter() - t0
        return levels

    def _viewer_result(self) -> _Viewer:
        if self._viewer is None:
            raise RuntimeError("SlidePictures.tiles_ready() was not called")
        return self._viewer.result()

    def _read_background(self) -> _Background:
        slide = self._slide
        image, mpp = read_background(slide, viewer_mpp_for(slide.dimensions, slide.mpp), workers=2)
        thumbnail = coarser(image, mpp, self._png_mpp, slide) if mpp <= self._png_mpp else None
        return _Background(image, mpp, thumbnail)

    def _make_canvas(self, grid: Any) -> tuple[int, np.ndarray]:
        slide, background = self._slide, self._background.result()
        level = viewer_level(grid, slide.mpp)
        return level, canvas(grid, level, background.image, slide.dimensions, workers=available_cpus())

    def _make_viewer(self, store_path: Path) -> _Viewer:
        from .store import TileStore

        t0 = time.perf_counter()
        slide, background = self._slide, self._background.result()
        store = TileStore.open(store_path)
        if self._canvas is None:  # grid_ready was not called: make it now
            self.grid_ready(store.grid)
        assert self._canvas is not None
        level, image = self._canvas.result()
        image = paste_tiles(store, level, image)
        image_mpp = level_mpp(store.grid, slide.mpp, level)
        self._timings["viewer image"] = time.perf_counter() - t0
        thumbnail = None
        if background.thumbnail is None:
            thumbnail = coarser(image, image_mpp[0], self._png_mpp, slide)
        return _Viewer(image, image_mpp, thumbnail)


class WriterProcesses:
    """A :class:`~pathoflash.export.process.WriterProcess` for each export that is written off this process's
    GIL (the PNG, the GeoJSON and the TIFF), started at once so that they are ready when the heatmap is.

    Use it as a context manager: leaving it ends the processes (kills them after an error) without waiting for
    them to exit. Where a process could not be started, its export is written in this process.
    """

    def __init__(self, names: Iterable[str] = tuple(_OWN_PROCESS)) -> None:
        """Start a process for each export of ``names`` (of :data:`_OWN_PROCESS`; the others stay here)."""
        self._processes = {name: WriterProcess.start(_OWN_PROCESS[name]) for name in names}

    def __enter__(self) -> WriterProcesses:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        for process in self._processes.values():
            if process is not None:  # after an error, kill; else let it exit without waiting for it
                process.close(kill=exc_type is not None, wait=False)

    @property
    def export_imports(self) -> tuple[str, ...]:
        """What :class:`SlidePictures` should import for the exports left to this process."""
        return () if all(p is not None for p in self._processes.values()) else _EXPORT_IMPORTS

    def call(self, name: str, function: Callable[..., Path], /, *args: Any, **kwargs: Any) -> Path:
        """``function(*args, **kwargs)`` in export ``name``'s process, or here if it has none."""
        process = self._processes.get(name)
        if process is None:
            return function(*args, **kwargs)
        return process.call(function, *args, **kwargs)  # type: ignore[no-any-return]


def write_outputs(
    heatmap: Any,
    slide: Any,
    slide_dir: Path,
    options: RunOptions,
    unreadable: int,
    pictures: SlidePictures,
    timings: dict[str, float],
    processes: WriterProcesses | None = None,
) -> dict[str, str]:
    """Write every output of one slide, concurrently (the image encoders and zlib release the GIL).

    The PNG, the GeoJSON and the TIFF are written in ``processes`` (in threads here without it). ``timings`` gets
    each output's seconds as ``"export <name>"``. Returns each output's path.
    """
    pictures.wait_for_imports()
    run = processes.call if processes is not None else _call_here
    tiff_workers, viewer_workers = export_threads(available_cpus())
    cls = type(heatmap)  # its writers, called by reference in the writer processes

    def png() -> Path:
        thumbnail, thumbnail_mpp = pictures.thumbnail()
        return run(
            "heatmap.png",
            cls.to_png,
            heatmap,
            slide_dir / "heatmap.png",
            thumbnail,
            thumbnail_mpp=thumbnail_mpp,
        )

    def html() -> Path:
        from .export.viewer import pack_heatmap, write_viewer

        # The heatmap's zlib level 9 (~0.08 s on one core) beside the JPEG levels, not after them.
        with ThreadPoolExecutor(1, thread_name_prefix="viewer-heatmap") as side:
            packed = side.submit(pack_heatmap, heatmap)
            levels = pictures.viewer_levels(workers=viewer_workers)
            return write_viewer(
                heatmap,
                slide_dir / "viewer.html",
                levels,
                thumbnail_mpp=levels.mpp,
                threshold=options.threshold,
                title=slide.path.name,
                packed_heatmap=packed.result(),
            )

    def summary() -> Path:
        heatmap.to_summary(
            slide_dir / "summary.json", threshold=options.threshold, unreadable_tiles=unreadable
        )
        return slide_dir / "summary.json"

    writers: dict[str, Callable[[], Path]] = {
        "heatmap.png": png,
        "heatmap.geojson": lambda: run(
            "heatmap.geojson",
            cls.to_geojson,
            heatmap,
            slide_dir / "heatmap.geojson",
            threshold=options.threshold,
            tiles=options.geojson_tiles,
        ),
        "heatmap.tif": lambda: run(
            "heatmap.tif", cls.to_tiff, heatmap, slide_dir / "heatmap.tif", workers=tiff_workers
        ),
        "viewer.html": html,
        "summary.json": summary,
    }

    def timed(name: str) -> Path:
        t0 = time.perf_counter()
        path = writers[name]()
        timings[f"export {name}"] = time.perf_counter() - t0
        return path

    with ThreadPoolExecutor(len(writers), thread_name_prefix="export") as pool:
        futures = {name: pool.submit(timed, name) for name in writers}
        return {name: str(future.result()) for name, future in futures.items()}


def export_threads(cpus: int) -> tuple[int, int]:
    """Threads for the TIFF's tiles and for the viewer's JPEG levels when all exports run at once.

    The GeoJSON is one thread in a process of its own; with every core in both pools as well (32 threads on
    16 cores) it would get about half a core. So the two pools share what it, the PNG and this process's own
    thread leave, at least one each. (The PNG was one thread when this was measured; its blend and deflate
    now take every core for their ~0.1 s.) (On the H100 host this was not
    shown to be faster or slower, within that machine's drift; the GeoJSON's slowness that prompted it was
    mostly its first call's imports, see ``_OWN_PROCESS``.)
    """
    spare = max(2, cpus - 3)
    return max(1, spare // 2), max(1, spare - spare // 2)


def _call_here(_: str, function: Callable[..., Path], /, *args: Any, **kwargs: Any) -> Path:
    return function(*args, **kwargs)


def coarser(image: np.ndarray, image_mpp: float, mpp: float, slide: Any) -> np.ndarray:
    """The whole-slide ``image`` (at ``image_mpp``) brought to the coarser ``mpp``; read from the slide if
    ``mpp`` is finer than what the image holds."""
    from .resample import resample

    if mpp < image_mpp:
        return slide.thumbnail_at_mpp(mpp)  # type: ignore[no-any-return]
    height, width = image.shape[:2]
    size = (max(1, math.floor(width * image_mpp / mpp)), max(1, math.floor(height * image_mpp / mpp)))
    return resample(image, size)


def _import_quietly(names: tuple[str, ...]) -> None:
    """Import ``names`` (``module`` or ``module:attribute``, for lazily loaded attributes) ahead of use.

    One that is missing fails later, where it is needed, with its own message.
    """
    for name in names:
        module, _, attribute = name.partition(":")
        with contextlib.suppress(ImportError, AttributeError):
            loaded = importlib.import_module(module)
            if attribute:
                getattr(loaded, attribute)


__all__ = ["SlidePictures", "WriterProcesses", "coarser", "write_outputs"]
