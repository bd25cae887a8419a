"""One slide, end to end: tiles → Zarr → model → heatmap → exports. No Dask here.

Decoding and the model overlap: the tiler writes tiles row by row into the store on its own threads while
the model takes regions right behind it (:mod:`pathoflash.row_gate`), copied from the tiles the tiler hands
over (:class:`TileCache`; the store where a tile is not in memory), so every tile is decoded from the slide
exactly once. A rerun with another model reads the finished store and never the slide.
The slide's own pictures for the outputs are made meanwhile (:mod:`pathoflash.outputs`). Every output is
written under a temporary name and renamed; ``done.json`` is written last, so a slide is either finished
with all its outputs or resumed next time.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import PathoflashError
from .inputs import SlideInput
from .options import RunOptions
from .outputs import SlidePictures, WriterProcesses, write_outputs
from .row_gate import TileRowGate

log = logging.getLogger(__name__)

#: ``progress(stage, done, total)`` with stage ``"tiles"`` or ``"regions"``.
Progress = Callable[[str, int, int], None]


class TilingListener(Protocol):
    """Told by :func:`compute_heatmap` how far the tiling is, so work that needs no heatmap can start."""

    def grid_ready(self, grid: Any) -> None: ...  # the tile grid (tissue found), before any tile

    def tiles_ready(self, store_path: Path) -> None: ...  # every tile is in the store


DONE_FILE = "done.json"
OUTPUT_FILES = ("heatmap.png", "heatmap.geojson", "heatmap.tif", "viewer.html", "summary.json")


@dataclass(slots=True)
class SlideResult:
    """What run.json records for one slide."""

    slide_id: str
    path: str
    status: str  # ok | failed | skipped
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    tiles: int = 0
    unreadable_tiles: int = 0
    outputs: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.slide_id,
            "path": self.path,
            "status": self.status,
            "error": self.error,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "tiles": self.tiles,
            "unreadable_tiles": self.unreadable_tiles,
            "outputs": self.outputs,
            "summary": self.summary,
        }


def write_json_atomic(path: Path, payload: Any) -> None:
    from .export.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")


def _fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime}


def _done_key(item: SlideInput, options: RunOptions, model_id: str) -> dict[str, Any]:
    return {
        "source": _fingerprint(item.path),
        "model_id": model_id,
        "mpp": options.mpp,
        "tile_size": options.tile_size,
        "threshold": options.threshold,
        "slide_mpp": item.slide_mpp,
    }


def is_finished(item: SlideInput, slide_dir: Path, options: RunOptions, model_id: str) -> bool:
    """True when ``slide_dir`` holds every output of this exact slide, model and options."""
    done = slide_dir / DONE_FILE
    if not done.is_file() or not item.path.is_file():
        return False
    try:
        recorded = json.loads(done.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if recorded.get("key") != _done_key(item, options, model_id):
        return False
    return all((slide_dir / name).is_file() for name in OUTPUT_FILES)


def process_slide(
    item: SlideInput,
    out: str | os.PathLike[str],
    options: RunOptions,
    *,
    model: Any = None,
    progress: Progress | None = None,
) -> SlideResult:
    """Run one slide to all its outputs under ``out/<slide id>/``; never raises for a bad slide.

    ``model`` is a loaded :class:`pathoflash.model.checkpoint.Model` (loaded from ``options.model`` when
    omitted). Errors become ``status="failed"`` with a one-line message; a finished slide is ``skipped``.
    """
    slide_dir = Path(out) / item.slide_id
    result = SlideResult(item.slide_id, str(item.path), "failed")
    started = time.perf_counter()
    try:
        if model is None:
            from .model.checkpoint import load_model

            model = load_model(options.model)
        if is_finished(item, slide_dir, options, model.model_id):
            result.status = "skipped"
            result.outputs = {name: str(slide_dir / name) for name in OUTPUT_FILES}
            summary_path = slide_dir / "summary.json"
            result.summary = json.loads(summary_path.read_text(encoding="utf-8"))
            return result
        slide_dir.mkdir(parents=True, exist_ok=True)
        _run(item, slide_dir, options, model, progress, result)
        result.status = "ok"
    except PathoflashError as exc:
        result.error = str(exc)
        log.error("%s", exc)
    except Exception as exc:  # one bad slide must never stop a batch: record it, with its type
        result.error = f"{item.path}: {type(exc).__name__}: {exc}"
        log.exception("slide %s failed", item.path)
    finally:
        result.timings["total"] = time.perf_counter() - started
    return result


def _run(
    item: SlideInput,
    slide_dir: Path,
    options: RunOptions,
    model: Any,
    progress: Progress | None,
    result: SlideResult,
) -> None:
    from .slide import open_slide

    with (
        open_slide(item.path, mpp=item.slide_mpp) as slide,
        WriterProcesses() as processes,
        SlidePictures(slide, result.timings, processes.export_imports) as pictures,
    ):
        heatmap, store = compute_heatmap(
            slide,
            slide_dir / "tiles.zarr",
            model,
            options,
            progress=progress,
            timings=result.timings,
            listener=pictures,
        )
        result.tiles = len(store.grid.tissue_tiles)
        result.unreadable_tiles = len(store.unreadable_tiles)
        t0 = time.perf_counter()
        result.outputs = write_outputs(
            heatmap, slide, slide_dir, options, result.unreadable_tiles, pictures, result.timings, processes
        )
        result.summary = json.loads((slide_dir / "summary.json").read_text(encoding="utf-8"))
        result.timings["export"] = time.perf_counter() - t0
    write_json_atomic(
        slide_dir / DONE_FILE, {"key": _done_key(item, options, model.model_id), "finished": time.time()}
    )


def compute_heatmap(
    slide: Any,
    store_path: Path,
    model: Any,
    options: RunOptions,
    *,
    progress: Progress | None = None,
    timings: dict[str, float] | None = None,
    listener: TilingListener | None = None,
) -> tuple[Any, Any]:
    """Tile ``slide`` into the store at ``store_path`` while the model reads regions behind the tiler.

    Returns the :class:`~pathoflash.heatmap.Heatmap` and the finished :class:`~pathoflash.store.TileStore`
    (which also holds the heatmap array). Tiles already in the store are not decoded again.
    ``listener`` hears of the grid as soon as it is planned and of the store (from the tiler's thread) as
    soon as it holds every tile, while the model may still be running.
    """
    from .inference import infer_heatmap
    from .store import TileStore
    from .tiling import plan_grid, tile_slide

    timings = {} if timings is None else timings
    region = options.region or model.region_size
    t0 = time.perf_counter()
    grid = plan_grid(slide, mpp=options.mpp, tile_size=options.tile_size)
    timings["tissue"] = time.perf_counter() - t0
    if listener is not None:
        listener.grid_ready(grid)
    gate = TileRowGate(grid.rows, TileStore.pending_tiles(store_path, slide, grid))
    cache = TileCache(grid)

    def tile_done(row: int, col: int, tile: np.ndarray) -> None:
        cache.put(row, col, tile)
        gate.tile_done(row, col)

    tiler_error: list[BaseException] = []
    opened: queue.Queue[Any] = queue.Queue(maxsize=1)  # the store once it exists, or the tiler's error

    def tile() -> None:
        t = time.perf_counter()
        try:
            tile_slide(
                slide,
                store_path,
                mpp=options.mpp,
                tile_size=options.tile_size,
                grid=grid,
                on_store=opened.put,
                workers=options.workers,
                strict=options.strict,
                progress=None if progress is None else lambda d, n: progress("tiles", d, n),
                on_tile=tile_done,
            )
            timings["tile"] = time.perf_counter() - t
            if listener is not None:
                listener.tiles_ready(store_path)
        except BaseException as exc:
            tiler_error.append(exc)
            gate.finish(exc)
            if opened.empty():
                opened.put(exc)
        else:
            gate.finish()
        finally:
            timings.setdefault("tile", time.perf_counter() - t)

    tiler = threading.Thread(target=tile, name="tiler", daemon=True)
    tiler.start()
    try:
        store = opened.get()
        if isinstance(store, BaseException):
            raise store
        t1 = time.perf_counter()
        probabilities = infer_heatmap(
            model,
            _GatedSource(store, gate, cache),
            width=grid.width,
            height=grid.height,
            region=region,
            margin=options.margin,
            batch_size=options.batch_size,
            device=options.device,
            skip=lambda x, y, w, h: not grid.has_tissue(x, y, w, h),
            progress=None if progress is None else lambda d, n: progress("regions", d, n),
            fill=float("nan"),
        )
        timings["infer"] = time.perf_counter() - t1
    finally:
        tiler.join()
    if tiler_error:
        raise tiler_error[0]
    store = TileStore.open(store_path)
    heatmap = _make_heatmap(probabilities, slide, store, model, grid)
    store.write_heatmap(probabilities, heatmap.mpp, model_id=model.model_id)
    return heatmap, store


class _GatedSource:
    """A region source that waits for the tile rows it covers, then copies them from the tiler's tiles in
    memory (:class:`TileCache`), or reads the store where the cache lacks one."""

    def __init__(self, store: Any, gate: TileRowGate, cache: TileCache) -> None:
        self._store, self._gate, self._cache = store, gate, cache
        self._tile = cache.tile_size

    def read_region(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        self._gate.wait_rows(y // self._tile, (y + h - 1) // self._tile)
        # Regions come in plan order (row-major), a few batches read ahead: tiles two region heights above
        # the furthest region asked for are not needed again.
        self._cache.drop_rows_below((y - 2 * h) // self._tile)
        region = self._cache.read_region(x, y, w, h)
        return self._store.read_region(x, y, w, h) if region is None else region


class TileCache:
    """The level-0 tiles the tiler hands over (``on_tile``), so that the model's regions are copied from
    memory instead of read back from the store (chunk files, LZ4, planes to pixels: ~6 ms a 1024² region on
    one core, while the decoder needs every core). Same pixels as :meth:`TileStore.read_region
    <pathoflash.store.TileStore.read_region>`: white outside the image and where no tissue tile is.
    Thread-safe; rows dropped with :meth:`drop_rows_below` are not taken again.
    """

    def __init__(self, grid: Any) -> None:
        self.tile_size = grid.tile_size
        self._width, self._height = grid.width, grid.height
        self._tissue = frozenset(grid.tissue_tiles)
        self._tiles: dict[tuple[int, int], np.ndarray] = {}
        self._floor = 0  # rows below this were dropped
        self._lock = threading.Lock()

    def put(self, row: int, col: int, tile: np.ndarray) -> None:
        with self._lock:
            if row >= self._floor:
                self._tiles[row, col] = tile

    def drop_rows_below(self, row: int) -> None:
        with self._lock:
            if row <= self._floor:
                return
            self._floor = row
            for key in [key for key in self._tiles if key[0] < row]:
                del self._tiles[key]

    def read_region(self, x: int, y: int, w: int, h: int) -> np.ndarray | None:
        """Pixels ``[y, y + h) × [x, x + w)`` as ``(h, w, 3)`` uint8, or None if a tissue tile under them is
        not held (dropped, unreadable, or decoded by an earlier run)."""
        from .store import FILL

        t = self.tile_size
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, self._width), min(y + h, self._height)
        parts = []
        with self._lock:
            for row in range(y0 // t, -(-y1 // t)) if y1 > y0 else ():
                for col in range(x0 // t, -(-x1 // t)) if x1 > x0 else ():
                    tile = self._tiles.get((row, col))
                    if tile is not None:
                        parts.append((row, col, tile))
                    elif (row, col) in self._tissue:
                        return None
        out = np.full((h, w, 3), FILL, np.uint8)
        for row, col, tile in parts:
            cy0, cx0 = max(y0, row * t), max(x0, col * t)
            cy1, cx1 = min(y1, (row + 1) * t), min(x1, (col + 1) * t)
            out[cy0 - y : cy1 - y, cx0 - x : cx1 - x] = tile[
                cy0 - row * t : cy1 - row * t, cx0 - col * t : cx1 - col * t
            ]
        return out


def _make_heatmap(probabilities: np.ndarray, slide: Any, store: Any, model: Any, grid: Any) -> Any:
    """The heatmap on the slide, with NaN wherever the tissue mask says background."""
    import dataclasses

    from .heatmap import Heatmap

    tissue = store.tissue_mask
    heatmap = Heatmap(
        probabilities=probabilities,
        mpp=grid.mpp * model.patch_size,  # the grid's effective mpp (snapped reductions are exact)
        scale=(grid.scale[0] * model.patch_size, grid.scale[1] * model.patch_size),
        slide_dimensions=slide.dimensions,
        slide_mpp=slide.mpp,
        tissue_mask=tissue.mask,
        tissue_mask_mpp=tissue.mpp,
        model_id=model.model_id,
    )
    masked = np.where(heatmap.tissue(), heatmap.probabilities, np.float32(np.nan))
    return dataclasses.replace(heatmap, probabilities=masked)
