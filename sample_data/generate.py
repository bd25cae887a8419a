"""``write_sample_slide``: a synthetic H&E whole-slide image with its ground truth, from a seed."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont
from skimage.transform import resize

from pathoflash.errors import ConfigError

from .layout import SlideLayout, default_tissue_fraction, make_layout
from .render import BACKGROUND_PERIOD, TileRenderer, background_tile
from .svs_writer import SvsSpec, write_svs
from .truth import truth_path_for, write_truth

log = logging.getLogger(__name__)

U8 = NDArray[np.uint8]

MAX_SIDE = 500_000
_TILE = 256
_BLOCK = 512
_PROCESSES_FROM_PX = 48e6
assert _TILE % BACKGROUND_PERIOD == 0, "blank tiles must all look alike"


@dataclass(frozen=True, slots=True)
class SampleSlide:
    """A written synthetic slide: the SVS file, its ground truth, and what it was made from."""

    path: Path
    truth_path: Path
    size: tuple[int, int]  # (width, height) level-0 px
    mpp: float
    seed: int
    tissue_fraction: float = 0.0  # of the slide's area
    tumor_fraction: float = 0.0  # of the tissue's area


def write_sample_slide(
    path: str | Path,
    *,
    seed: int = 0,
    size: tuple[int, int] = (8192, 8192),
    mpp: float = 0.25,
    pen_marks: bool = True,
    folds: bool = True,
    tumor: bool = True,
    progress: Callable[[int, int], None] | None = None,
    tissue_fraction: float | None = None,
    quality: int = 85,
    workers: int | None = None,
) -> SampleSlide:
    """Write a synthetic H&E slide to ``path`` (pyramidal JPEG Aperio SVS) and its ground truth beside it.

    ``size`` is ``(width, height)`` in level-0 pixels at ``mpp`` µm/px (0.25 → 40x, 0.5 → 20x). The ground
    truth goes to ``<stem>.truth.geojson``: tumor polygons in level-0 px (see :mod:`.truth`). The same
    seed and arguments give the same pixels. ``tissue_fraction`` is the share of the slide covered by
    tissue (default: 0.45 up to 64 Mpx, then falling with the slide's side, so gigapixel slides are mostly
    glass and quick to make). ``progress(done, total)`` is called as tiles are written; ``workers`` render
    threads (default: up to 4, by CPU count).
    """
    out = Path(path)
    width, height = _check(seed, size, mpp, quality, tissue_fraction, out)
    fraction = default_tissue_fraction(width, height) if tissue_fraction is None else float(tissue_fraction)
    n_workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    if n_workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    out.parent.mkdir(parents=True, exist_ok=True)

    layout = make_layout(
        seed, width, height, mpp, tissue_fraction=fraction, tumor=tumor, folds=folds, pen_marks=pen_marks
    )
    spec = SvsSpec(
        width=width,
        height=height,
        mpp=mpp,
        tile_size=_TILE,
        block_size=_BLOCK,
        quality=quality,
        name=out.stem,
        comment=f"synthetic H&E, pathoflash.sample_data seed {seed}",
    )

    truth = truth_path_for(out)
    # processes pay ~2 s each to start, and win only when there is a lot of tissue to draw
    drawn_px = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in layout.piece_boxes)
    processes = n_workers > 1 and drawn_px > _PROCESSES_FROM_PX
    log.debug(
        "rendering %.0f Mpx of tissue boxes with %d %s",
        drawn_px / 1e6,
        n_workers,
        "processes" if processes else "threads",
    )
    write_svs(
        out,
        spec,
        partial(_block_renderer, layout),
        background_tile(layout, _TILE),
        label=_label(seed, out.stem),
        macro=lambda thumb: _macro(thumb, _label(seed, out.stem)),
        workers=n_workers,
        processes=processes,
        progress=progress,
    )
    write_truth(truth, layout)
    slide = SampleSlide(
        path=out,
        truth_path=truth,
        size=(width, height),
        mpp=mpp,
        seed=seed,
        tissue_fraction=layout.tissue_area / (width * height),
        tumor_fraction=layout.tumor_area / layout.tissue_area if layout.tissue_area else 0.0,
    )
    log.info(
        "sample slide %s: %dx%d at %.3f µm/px, seed %d, tissue %.1f%% of slide, tumor %.1f%% of tissue",
        out,
        width,
        height,
        mpp,
        seed,
        100 * slide.tissue_fraction,
        100 * slide.tumor_fraction,
    )
    return slide


def sample_layout(
    *,
    seed: int = 0,
    size: tuple[int, int] = (8192, 8192),
    mpp: float = 0.25,
    pen_marks: bool = True,
    folds: bool = True,
    tumor: bool = True,
    tissue_fraction: float | None = None,
) -> SlideLayout:
    """The layout ``write_sample_slide`` would use (for rendering windows without writing a file)."""
    width, height = int(size[0]), int(size[1])
    fraction = default_tissue_fraction(width, height) if tissue_fraction is None else float(tissue_fraction)
    return make_layout(
        seed, width, height, mpp, tissue_fraction=fraction, tumor=tumor, folds=folds, pen_marks=pen_marks
    )


def _block_renderer(layout: SlideLayout) -> Callable[[int, int, int, int], U8 | None]:
    """``render_block`` for the SVS writer: ``None`` for bare glass, RGBX pixels otherwise."""
    renderer = TileRenderer(layout)

    def render_block(x0: int, y0: int, w: int, h: int) -> U8 | None:
        if renderer.is_background(x0, y0, w, h):
            return None
        return renderer.render_rgbx(x0, y0, w, h)

    return render_block


def _check(
    seed: int, size: tuple[int, int], mpp: float, quality: int, tissue_fraction: float | None, out: Path
) -> tuple[int, int]:
    if not isinstance(seed, int | np.integer) or not 0 <= int(seed) < 2**63:
        raise ConfigError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"size must be (width, height) in pixels, got {size!r}") from exc
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise ConfigError(f"size must be between 1 and {MAX_SIDE} px a side, got {width}x{height}")
    if not (isinstance(mpp, int | float) and 0.05 <= float(mpp) <= 20.0) or math.isnan(mpp):
        raise ConfigError(f"mpp must be between 0.05 and 20 µm/px, got {mpp!r}")
    if not 1 <= quality <= 100:
        raise ConfigError(f"JPEG quality must be between 1 and 100, got {quality}")
    if tissue_fraction is not None and not 0.0 < tissue_fraction <= 0.8:
        raise ConfigError(f"tissue_fraction must be in (0, 0.8], got {tissue_fraction}")
    if out.is_dir():
        raise ConfigError("output path is a directory; give a file name such as sample.svs", path=out)
    return width, height


def _label(seed: int, name: str) -> U8:
    """The slide label: a 2-D code pattern from the seed and a few lines of text."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, seed >> 32, 0x1ABE1])
    img = Image.new("RGB", (400, 420), (250, 250, 246))
    draw = ImageDraw.Draw(img)
    cells = rng.random((14, 14)) < 0.5
    cells[:, 0] = cells[-1, :] = True  # the finder edges of a data-matrix-like code
    for (r, c), on in np.ndenumerate(cells):
        if on:
            draw.rectangle([40 + c * 12, 30 + r * 12, 51 + c * 12, 41 + r * 12], fill=(20, 20, 20))
    font = ImageFont.load_default()
    for i, line in enumerate(("PathoFlash synthetic H&E", f"seed {seed}", name[:40], "not for diagnosis")):
        draw.text((40, 220 + 36 * i), line, fill=(10, 10, 10), font=font)
    return np.asarray(img, dtype=np.uint8)


def _macro(thumbnail: U8, label: U8) -> U8:
    """A photo-like overview of the whole glass slide: label at the left, the section on the glass."""
    h, w = 431, 1280
    macro = np.full((h, w, 3), (214, 216, 218), dtype=np.uint8)
    lab = resize(label, (h - 40, round(label.shape[1] * (h - 40) / label.shape[0])), preserve_range=True)
    macro[20 : 20 + lab.shape[0], 20 : 20 + lab.shape[1]] = np.rint(lab).astype(np.uint8)
    area_x0 = 40 + lab.shape[1]
    avail_w, avail_h = w - area_x0 - 30, h - 40
    scale = min(avail_w / thumbnail.shape[1], avail_h / thumbnail.shape[0])
    th, tw = max(1, int(thumbnail.shape[0] * scale)), max(1, int(thumbnail.shape[1] * scale))
    small = np.rint(resize(thumbnail, (th, tw), anti_aliasing=True, preserve_range=True)).astype(np.uint8)
    y0 = (h - th) // 2
    x0 = area_x0 + (avail_w - tw) // 2
    macro[y0 : y0 + th, x0 : x0 + tw] = small
    return macro


__all__ = ["SampleSlide", "sample_layout", "write_sample_slide"]
