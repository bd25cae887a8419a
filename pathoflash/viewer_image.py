"""The viewer's whole-slide image, built from the tiles the pipeline already decoded.

``viewer.html`` shows the whole slide (glass, pen marks and labels too) at a few µm/px under the heatmap.
Reading that image from the slide again costs more than the tiling itself: on a 45,000² px slide at
0.25 µm/px a 48-Mpx image at 1.6 µm/px decodes 126 Mpx of the 1 µm/px level, about 1.5× the JPEG the tiler
decodes, and it competes with the tiler for the same cores. Instead:

* the tissue comes from the tile store's own 2× pyramid, at the finest level within the viewer's pixel
  budget (2 µm/px for that slide): decoded once, by the tiler;
* everything else comes from a background read from the slide's nearest pyramid level at least twice as
  coarse (4 µm/px there: 8 Mpx), upsampled. Only the parts of store chunks that came from written level-0
  tiles are pasted over it, so a chunk half over glass shows the real glass, not the store's white fill.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .heatmap import VIEWER_FINEST_MPP, VIEWER_MAX_PIXELS
from .store import FILL, TileStore, level_shapes
from .tiling import TileGrid


def viewer_level(grid: TileGrid, slide_mpp: tuple[float, float], level_count: int | None = None) -> int:
    """The finest store pyramid level within the viewer's pixel budget and no finer than ~1 µm/px.

    "~": a 0.499 µm/px scan's level 1 (0.998 µm/px) counts as 1 µm/px (5 % tolerance). ``level_count``
    defaults to every level of the grid's pyramid (what a store of that grid has).
    """
    shapes = level_shapes(grid.width, grid.height, grid.tile_size)[:level_count]
    finest = min(grid.scale[0] * slide_mpp[0], grid.scale[1] * slide_mpp[1])
    for level, (h, w) in enumerate(shapes):
        if h * w <= VIEWER_MAX_PIXELS and finest * 2**level >= VIEWER_FINEST_MPP * 0.95:
            return level
    return len(shapes) - 1


def level_mpp(grid: TileGrid, slide_mpp: tuple[float, float], level: int) -> tuple[float, float]:
    """µm/px ``(x, y)`` of store pyramid ``level``."""
    return (grid.scale[0] * slide_mpp[0] * 2**level, grid.scale[1] * slide_mpp[1] * 2**level)


def background_mpp(slide: Any, viewer_mpp: float) -> float:
    """The mpp to read the background at: a slide level's own, at least twice ``viewer_mpp`` if one is.

    Reading a level at its own resolution decodes only that level; the finest level coarse enough keeps
    the background as sharp as that allows.
    """
    base = min(slide.mpp)
    target = 2 * viewer_mpp
    coarse_enough = [base * d for d in slide.level_downsamples if base * d >= target * (1 - 1e-6)]
    return min(coarse_enough) if coarse_enough else target


def read_background(slide: Any, viewer_mpp: float, *, workers: int | None = None) -> tuple[np.ndarray, float]:
    """The whole slide at :func:`background_mpp` (RGB uint8, unreadable parts white), and that mpp."""
    mpp = background_mpp(slide, viewer_mpp)
    return slide.thumbnail_at_mpp(mpp, workers=workers), mpp


def _resize(image: np.ndarray, size: tuple[int, int], workers: int) -> np.ndarray:
    """Bilinear resize to ``size = (w, h)`` in horizontal strips on ``workers`` threads (Pillow lets go of
    the GIL): each strip maps its own box of the source, so the strips join without seams."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    source = Image.fromarray(np.ascontiguousarray(image))
    out_w, out_h = size
    sy = image.shape[0] / out_h
    bounds = np.linspace(0, out_h, max(1, min(workers, out_h // 64)) + 1).round().astype(int)

    def strip(y0: int, y1: int) -> np.ndarray:
        box = (0.0, y0 * sy, float(image.shape[1]), y1 * sy)
        return np.asarray(source.resize((out_w, y1 - y0), Image.Resampling.BILINEAR, box=box))

    with ThreadPoolExecutor(len(bounds) - 1) as pool:
        strips = list(pool.map(strip, bounds[:-1], bounds[1:]))
    return np.concatenate(strips) if len(strips) > 1 else strips[0]


def compose(
    store: TileStore,
    level: int,
    background: np.ndarray,
    slide_dimensions: tuple[int, int],
    *,
    workers: int = 1,
) -> np.ndarray:
    """Store pyramid ``level`` over ``background`` (the whole slide at any resolution), ``(h, w, 3)`` uint8.

    ``workers`` threads upsample the background.
    """
    return paste_tiles(store, level, canvas(store.grid, level, background, slide_dimensions, workers=workers))


def canvas(
    grid: TileGrid,
    level: int,
    background: np.ndarray,
    slide_dimensions: tuple[int, int],
    *,
    workers: int = 1,
) -> np.ndarray:
    """``background`` upsampled onto the frame of store pyramid ``level`` of ``grid``: the part of
    :func:`compose` that needs no tiles (most of its time), so it can be made while the tiler runs."""
    height, width = level_shapes(grid.width, grid.height, grid.tile_size)[level]
    # The background covers the slide exactly; the level may reach a little past its right and bottom edge.
    cover_w = min(width, max(1, round(slide_dimensions[0] / (grid.scale[0] * 2**level))))
    cover_h = min(height, max(1, round(slide_dimensions[1] / (grid.scale[1] * 2**level))))
    out = np.full((height, width, 3), FILL, np.uint8)
    out[:cover_h, :cover_w] = _resize(background, (cover_w, cover_h), workers)
    return out


def paste_tiles(store: TileStore, level: int, out: np.ndarray) -> np.ndarray:
    """Paste into ``out`` (a :func:`canvas` of ``level``) the parts of the store's ``level`` chunks that
    came from written level-0 tiles; returns ``out``."""
    grid = store.grid
    height, width = out.shape[:2]
    t = grid.tile_size
    span = 2**level  # level-0 tiles per chunk side
    step = t // span  # pixels per level-0 tile inside a chunk (0 when a chunk holds more tiles than pixels)
    base_files, files = store.level_files(0), store.level_files(level)
    written = np.zeros((math.ceil(grid.height / t), math.ceil(grid.width / t)), bool)
    for row, col in grid.tissue_tiles:
        written[row, col] = base_files.exists(row, col)
    for crow, ccol in sorted(
        {(row // span, col // span) for row, col in zip(*np.nonzero(written), strict=True)}
    ):
        chunk = files.read(int(crow), int(ccol))
        if chunk is None:
            continue
        children = written[crow * span : (crow + 1) * span, ccol * span : (ccol + 1) * span]
        if step == 0:
            mask = np.ones((t, t), bool)
        else:
            mask = np.zeros((t, t), bool)
            mask[: children.shape[0] * step, : children.shape[1] * step] = children.repeat(step, 0).repeat(
                step, 1
            )
        y0, x0 = int(crow) * t, int(ccol) * t
        h, w = min(t, height - y0), min(t, width - x0)
        target = out[y0 : y0 + h, x0 : x0 + w]
        for c in range(3):  # plane by plane (see pathoflash.store.interleave)
            np.copyto(target[:, :, c], chunk[c, :h, :w], where=mask[:h, :w])
    return out


__all__ = [
    "background_mpp",
    "canvas",
    "compose",
    "level_mpp",
    "paste_tiles",
    "read_background",
    "viewer_level",
]
