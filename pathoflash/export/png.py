"""``heatmap.png``: the slide thumbnail with the heatmap blended in, a colour bar and a scale bar."""

from __future__ import annotations

import functools
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..slide import available_cpus
from .atomic import atomic_path
from .colormap import colorize, viridis_lut
from .sampling import GridSampler, nanmean_reduce, reduction_factors

if TYPE_CHECKING:  # pragma: no cover
    from PIL import ImageDraw, ImageFont

    from ..heatmap import Heatmap, PathLike

log = logging.getLogger(__name__)

#: Longer side of the picture drawn when no thumbnail is given (heatmap alone on white).
BARE_MAX_SIDE = 1024
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


def blend(thumbnail: np.ndarray, probabilities: np.ndarray, opacity: float) -> np.ndarray:
    """Alpha-blend colour-mapped ``probabilities`` over ``thumbnail`` where they are finite.

    Computed in strips of rows on up to :func:`~pathoflash.slide.available_cpus` threads (numpy releases
    the GIL): 0.7 s on one thread for a 2048² thumbnail, and the PNG is on the slide's critical path.
    """
    out = np.empty(thumbnail.shape, dtype=np.uint8)

    def strip(rows: slice) -> None:
        out[rows] = _blend_rows(thumbnail[rows], probabilities[rows], opacity)

    strips = [slice(y, y + _BLEND_STRIP) for y in range(0, thumbnail.shape[0], _BLEND_STRIP)]
    with ThreadPoolExecutor(max(1, min(len(strips), available_cpus())), thread_name_prefix="blend") as pool:
        list(pool.map(strip, strips))
    return out


def _blend_rows(thumbnail: np.ndarray, probabilities: np.ndarray, opacity: float) -> np.ndarray:
    colours = colorize(probabilities).astype(np.float32)
    base = thumbnail.astype(np.float32)
    mixed = base * (1.0 - opacity) + colours * opacity
    has_value = np.isfinite(probabilities)[..., None]
    return np.where(has_value, np.rint(mixed), base).astype(np.uint8)


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
    from PIL import Image, ImageDraw

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
    blended = blend(base, probabilities, opacity)

    font_size = int(min(28, max(12, round(max(width, height) / 60))))
    panel_w = max(110, font_size * 6)
    canvas = Image.new("RGBA", (width + panel_w, max(height, font_size * 16)), (*_PANEL, 255))
    canvas.paste(Image.fromarray(blended).convert("RGBA"), (0, 0))
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    _draw_scale_bar(draw, (width, height), pixel_mpp[0], font_size)
    _draw_colour_bar(draw, (width, 0, width + panel_w, canvas.size[1]), font_size, opacity)
    composed = Image.alpha_composite(canvas, overlay).convert("RGB")
    return np.asarray(composed)


def write_png(
    heatmap: Heatmap,
    path: PathLike,
    thumbnail: np.ndarray | None,
    *,
    thumbnail_mpp: tuple[float, float] | None = None,
    opacity: float = 0.5,
) -> Path:
    """Render :func:`render_png` and save it (atomically) as PNG, with the mpp as PNG text metadata."""
    from PIL import Image, PngImagePlugin

    picture = render_png(heatmap, thumbnail, thumbnail_mpp=thumbnail_mpp, opacity=opacity)
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "pathoflash")
    info.add_text("Description", f"tumor heatmap overlay; model={heatmap.model_id or 'unknown'}")
    with atomic_path(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG", pnginfo=info, optimize=False, compress_level=3)
    log.info("wrote %s (%dx%d)", path, picture.shape[1], picture.shape[0])
    return Path(path)


__all__ = ["blend", "heatmap_on_grid", "length_label", "nice_length", "render_png", "write_png"]
