"""``heatmap.png``: the slide thumbnail with the heatmap blended in, a colour bar and a scale bar."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..slide import available_cpus
from .atomic import atomic_path
from .colormap import LUT_SIZE, colorize, viridis_lut
from .png_file import write_png_file
from .sampling import GridSampler, nanmean_reduce, reduction_factors

if TYPE_CHECKING:  # pragma: no cover
    from PIL import ImageDraw, ImageFont

    from ..heatmap import Heatmap, PathLike

log = logging.getLogger(__name__)

#: Longer side of the picture drawn when no thumbnail is given (heatmap alone on white).
BARE_MAX_SIDE = 1024
#: zlib level of ``heatmap.png`` (as it was with Pillow's ``compress_level=3``).
PNG_LEVEL = 3
_TEXT = (30, 30, 30)
_PANEL = (255, 255, 255)


def heatmap_on_grid(heatmap: Heatmap, size: tuple[int, int], pixel_mpp: tuple[float, float]) -> np.ndarray:
    """The heatmap resampled onto a whole-slide grid of ``size = (w, h)`` pixels of ``pixel_mpp`` µm."""
    out_px = (pixel_mpp[0] / heatmap.slide_mpp[0], pixel_mpp[1] / heatmap.slide_mpp[1])
    hm_px = heatmap.pixel_size
    ky, kx = reduction_factors(out_px, hm_px)
    source = nanmean_reduce(heatmap.probabilities, ky, kx)
    sampler = GridSampler(source, (hm_px[0] * kx, hm_px[1] * ky), heatmap.origin, out_px)
    return sampler.window(0, 0, size[0], size[1], np.nan)


_BLEND_STRIP = 128  # rows per strip of :func:`blend`


def blend(
    thumbnail: np.ndarray, probabilities: np.ndarray, opacity: float, out: np.ndarray | None = None
) -> np.ndarray:
    """Alpha-blend colour-mapped ``probabilities`` over ``thumbnail`` where they are finite (into ``out``).

    Computed in strips of rows on up to :func:`~pathoflash.slide.available_cpus` threads (numpy releases
    the GIL): the PNG is on the slide's critical path.
    """
    if out is None:
        out = np.empty(thumbnail.shape, dtype=np.uint8)

    def strip(rows: slice) -> None:
        out[rows] = _blend_rows(thumbnail[rows], probabilities[rows], opacity)

    strips = [slice(y, y + _BLEND_STRIP) for y in range(0, thumbnail.shape[0], _BLEND_STRIP)]
    with ThreadPoolExecutor(max(1, min(len(strips), available_cpus())), thread_name_prefix="blend") as pool:
        list(pool.map(strip, strips))
    return out


def blend_reference(thumbnail: np.ndarray, probabilities: np.ndarray, opacity: float) -> np.ndarray:
    """What :func:`blend` computes, in float32 arithmetic per pixel (kept for the tests)."""
    colours = colorize(probabilities).astype(np.float32)
    base = thumbnail.astype(np.float32)
    mixed = base * (1.0 - opacity) + colours * opacity
    has_value = np.isfinite(probabilities)[..., None]
    return np.where(has_value, np.rint(mixed), base).astype(np.uint8)


_NO_VALUE = 255  # the colour byte that marks "no value" in :func:`_blend_rows` (the colour map stops at 253)


@functools.cache
def _blend_table(opacity: float) -> np.ndarray:
    """``table[colour << 8 | base]``: :func:`blend_reference`'s float32 mix of one colour and one thumbnail
    byte; colour 255 (never in the colour map) stands for "no value" and keeps the thumbnail byte."""
    base = np.arange(256, dtype=np.float32)[None, :]
    colour = np.arange(256, dtype=np.float32)[:, None]
    table = np.rint(base * (1.0 - opacity) + colour * opacity).astype(np.uint8)
    table[_NO_VALUE] = np.arange(256, dtype=np.uint8)
    table.setflags(write=False)
    return table.ravel()


@functools.cache
def _palette_words() -> np.ndarray:
    """The colour map with a no-value colour (255, 255, 255) at index 256, one uint32 (R, G, B, 0) per entry."""
    lut = viridis_lut()
    assert lut.max() < _NO_VALUE, "the colour map must leave byte 255 free for the no-value marker"
    palette = np.zeros((LUT_SIZE + 1, 4), dtype=np.uint8)
    palette[:LUT_SIZE, :3] = lut
    palette[LUT_SIZE, :3] = _NO_VALUE
    return palette.view(np.uint32).ravel()


def _blend_rows(thumbnail: np.ndarray, probabilities: np.ndarray, opacity: float) -> np.ndarray:
    """:func:`blend_reference` by table look-up: each output byte is a function of one colour byte and one
    thumbnail byte (65,536 pairs, computed once per opacity), 2× faster than the float32 arithmetic."""
    p = np.asarray(probabilities, dtype=np.float32)  # quantised as colorize does
    index = np.where(np.isfinite(p), np.rint(np.clip(p, 0.0, 1.0) * (LUT_SIZE - 1)), LUT_SIZE)
    words = _palette_words().take(index.astype(np.uint16))
    colours = words.view(np.uint8).reshape(*words.shape, 4)[..., :3]
    key = colours.astype(np.uint16)
    key <<= 8
    key |= thumbnail
    return _blend_table(opacity).take(key)


def nice_length(max_um: float) -> float:
    """The largest 1/2/5 × 10^k µm not above ``max_um``."""
    exponent = math.floor(math.log10(max_um))
    for mantissa in (5.0, 2.0, 1.0):
        if mantissa * 10**exponent <= max_um:
            return mantissa * 10**exponent
    return 10 ** (exponent - 1) * 5.0


def length_label(um: float, *, micro: str = "µ") -> str:
    """``"500 µm"`` / ``"2 mm"``; ``micro`` replaces the µ sign where a font lacks it."""
    if um >= 1000:
        return f"{um / 1000:g} mm"
    return f"{um:g} {micro}m"


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans where the system has it (it has µ), else Pillow's built-in font."""
    from PIL import ImageFont

    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        pass
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _has_glyph(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, char: str) -> bool:
    """Whether ``char`` renders as itself rather than the font's missing-glyph box."""
    return bytes(font.getmask(char)) != bytes(font.getmask("\ue000"))


def _text_size(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont
) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return int(right - left), int(bottom - top)


def _draw_scale_bar(
    draw: ImageDraw.ImageDraw, image_size: tuple[int, int], um_per_px: float, font_size: int
) -> tuple[float, int]:
    """Scale bar at the bottom left of the image area; returns (length µm, length px)."""
    width, height = image_size
    font = _font(font_size)
    length_um = nice_length(um_per_px * width / 4)
    length_px = max(1, round(length_um / um_per_px))
    label = length_label(length_um, micro="µ" if _has_glyph(font, "µ") else "u")
    text_w, text_h = _text_size(draw, label, font)
    margin = max(6, font_size // 2)
    bar_h = max(3, font_size // 4)
    box_w = max(length_px, text_w) + 2 * margin
    box_h = text_h + bar_h + 3 * margin
    x0, y0 = margin, height - margin - box_h
    draw.rectangle([x0, y0, x0 + box_w, y0 + box_h], fill=(255, 255, 255, 200))
    bar_y = y0 + box_h - margin - bar_h
    draw.rectangle([x0 + margin, bar_y, x0 + margin + length_px - 1, bar_y + bar_h - 1], fill=(0, 0, 0, 255))
    draw.text((x0 + margin, y0 + margin // 2), label, fill=(*_TEXT, 255), font=font)
    return length_um, length_px


def _draw_colour_bar(
    draw: ImageDraw.ImageDraw, panel_box: tuple[int, int, int, int], font_size: int, opacity: float
) -> None:
    """Vertical colour bar (1 at the top) with 0 / 0.5 / 1 ticks and a title, in ``panel_box``."""
    x0, y0, _, y1 = panel_box
    font = _font(font_size)
    small = _font(max(9, font_size * 3 // 4))
    margin = max(8, font_size // 2)
    draw.text((x0 + margin, y0 + margin), "tumor", fill=(*_TEXT, 255), font=font)
    _, line_h = _text_size(draw, "tumor", font)
    draw.text((x0 + margin, y0 + margin + line_h + 4), "probability", fill=(*_TEXT, 255), font=font)
    bar_top = y0 + 2 * margin + 2 * line_h + 12
    bar_bottom = y1 - 2 * margin - line_h
    bar_left = x0 + margin
    bar_w = max(12, font_size)
    if bar_bottom - bar_top < 20:
        return
    lut = viridis_lut()
    draw.rectangle([bar_left, bar_top, bar_left + bar_w - 1, bar_bottom], outline=(*_TEXT, 255))
    inner_top, inner_bottom = bar_top + 1, bar_bottom - 1  # the gradient fills the outline, 1 at the top
    span = inner_bottom - inner_top
    for i in range(span + 1):
        r, g, b = (int(v) for v in lut[round((1.0 - i / span) * 255)])
        draw.line([bar_left + 1, inner_top + i, bar_left + bar_w - 2, inner_top + i], fill=(r, g, b, 255))
    for value, label in ((1.0, "1"), (0.5, "0.5"), (0.0, "0")):
        y = round(bar_top + (1.0 - value) * span)
        draw.line([bar_left + bar_w, y, bar_left + bar_w + 5, y], fill=(*_TEXT, 255))
        _, th = _text_size(draw, label, font)
        draw.text((bar_left + bar_w + 8, y - th // 2 - 2), label, fill=(*_TEXT, 255), font=font)
    draw.text((bar_left, bar_bottom + margin), f"overlay {opacity:.0%}", fill=(*_TEXT, 255), font=small)


def render_png(
    heatmap: Heatmap,
    thumbnail: np.ndarray | None,
    *,
    thumbnail_mpp: tuple[float, float] | None = None,
    opacity: float = 0.5,
) -> np.ndarray:
    """The finished picture as ``(h, w, 3)`` uint8: blended image, scale bar, colour-bar panel."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    if thumbnail is None:
        w_um, h_um = heatmap.extent_um()
        mpp = max(w_um, h_um) / BARE_MAX_SIDE
        size = (max(1, round(w_um / mpp)), max(1, round(h_um / mpp)))
        base = np.full((size[1], size[0], 3), 255, dtype=np.uint8)
        pixel_mpp = (w_um / size[0], h_um / size[1])
        opacity = 1.0
    else:
        if thumbnail_mpp is None:
            raise ValueError("thumbnail_mpp is required with a thumbnail")
        base = thumbnail
        pixel_mpp = thumbnail_mpp
    height, width = base.shape[:2]
    probabilities = heatmap_on_grid(heatmap, (width, height), pixel_mpp)
    font_size = int(min(28, max(12, round(max(width, height) / 60))))
    panel_w = max(110, font_size * 6)
    size = (width + panel_w, max(height, font_size * 16))
    picture = np.empty((size[1], size[0], 3), dtype=np.uint8)
    picture[:, width:] = _PANEL
    picture[height:, :width] = _PANEL
    blend(base, probabilities, opacity, out=picture[:height, :width])
    _compose(
        picture,
        [
            lambda draw: _draw_scale_bar(draw, (width, height), pixel_mpp[0], font_size),
            lambda draw: _draw_colour_bar(draw, (width, 0, size[0], size[1]), font_size, opacity),
        ],
    )
    return picture


def _compose(picture: np.ndarray, drawings: list[Callable[[ImageDraw.ImageDraw], object]]) -> None:
    """Draw each of ``drawings`` on a transparent RGBA layer of ``picture``'s size and alpha-composite it over
    the opaque ``picture``, in place, only where it has drawn anything.

    Where a layer's alpha is 0 Pillow's composite keeps the picture's pixel, so this is the composite of the
    whole picture without converting all of it to RGBA and back. Drawings whose boxes overlap are drawn on
    one layer, in order (antialiased edges drawn over each other differ from two layers composited).
    """
    from PIL import Image, ImageDraw

    size = (picture.shape[1], picture.shape[0])

    def layer(draw_all: list[Callable[[ImageDraw.ImageDraw], object]]) -> Image.Image:
        image = Image.new("RGBA", size, (0, 0, 0, 0))
        canvas = ImageDraw.Draw(image)
        for drawing in draw_all:
            drawing(canvas)
        return image

    layers = [layer([drawing]) for drawing in drawings]
    boxes = [image.getbbox() for image in layers]
    drawn = [(image, box) for image, box in zip(layers, boxes, strict=True) if box is not None]
    if any(_overlap(a, b) for i, (_, a) in enumerate(drawn) for _, b in drawn[i + 1 :]):
        merged = layer(drawings)
        box = merged.getbbox()
        drawn = [(merged, box)] if box is not None else []
    for image, (x0, y0, x1, y1) in drawn:
        region = Image.fromarray(picture[y0:y1, x0:x1]).convert("RGBA")
        composed = Image.alpha_composite(region, image.crop((x0, y0, x1, y1))).convert("RGB")
        picture[y0:y1, x0:x1] = np.asarray(composed)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def write_png(
    heatmap: Heatmap,
    path: PathLike,
    thumbnail: np.ndarray | None,
    *,
    thumbnail_mpp: tuple[float, float] | None = None,
    opacity: float = 0.5,
) -> Path:
    """Render :func:`render_png` and save it (atomically) as PNG with text metadata (software, model).

    The file is deflated in pieces on up to :func:`~pathoflash.slide.available_cpus` threads
    (:mod:`~pathoflash.export.png_file`; Pillow deflates on one thread).
    """
    picture = render_png(heatmap, thumbnail, thumbnail_mpp=thumbnail_mpp, opacity=opacity)
    text = {
        "Software": "pathoflash",
        "Description": f"tumor heatmap overlay; model={heatmap.model_id or 'unknown'}",
    }
    with atomic_path(path) as tmp:
        write_png_file(tmp, picture, text=text, level=PNG_LEVEL, workers=available_cpus())
    log.info("wrote %s (%dx%d)", path, picture.shape[1], picture.shape[0])
    return Path(path)


__all__ = ["blend", "heatmap_on_grid", "length_label", "nice_length", "render_png", "write_png"]
