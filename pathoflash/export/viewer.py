"""``viewer.html``: one self-contained file (no network, works from ``file://``) to pan and zoom over the slide
with the heatmap on top, with opacity and threshold sliders and the probability under the pointer.

What is embedded, as a JSON block the script reads:

* the slide as a small JPEG pyramid — the given thumbnail and its 2× reductions down to an overview — cut
  into 512-px tiles as ``data:`` URIs (blank white tiles are left out). Levels are added from coarse to fine
  while they fit the byte budget (``max_bytes``, default 15 MB), so a huge slide loses its finest level
  rather than making a file nobody can open;
* the heatmap as one byte per pixel (``round(p · 254)``, 255 = no tissue), zlib-compressed and base64'd,
  inflated in the browser with ``DecompressionStream``;
* the colour map table, so the browser colours exactly like the PNG and TIFF.

The page script (``viewer.js``) and template (``viewer.html``) ship as package data next to this module.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import html
import io
import json
import logging
import math
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..resample import resample
from .atomic import atomic_path
from .colormap import viridis_lut

if TYPE_CHECKING:  # pragma: no cover
    from ..heatmap import Heatmap, PathLike

log = logging.getLogger(__name__)

VIEWER_TILE = 512
OVERVIEW_MAX_SIDE = 1024
JPEG_QUALITY = 80
MAX_BYTES = 15_000_000
_NO_DATA = 255
_LEVELS = 254
_BLANK_MIN = 250  # a tile whose every sample is at least this is background: not embedded


def heatmap_bytes(heatmap: Heatmap) -> bytes:
    """One byte per heatmap pixel: ``round(p · 254)`` on tissue, 255 elsewhere (row-major)."""
    tissue = heatmap.tissue()
    q = np.full(heatmap.shape, _NO_DATA, dtype=np.uint8)
    q[tissue] = np.rint(heatmap.probabilities[tissue] * _LEVELS).astype(np.uint8)
    return q.tobytes()


def pack_heatmap(heatmap: Heatmap) -> str:
    """:func:`heatmap_bytes`, zlib-compressed (level 9) and base64'd, as the page embeds it.

    Level 9 of a 2-Mpx heatmap takes ~0.08 s on one core; :func:`write_viewer` takes it ready-made so that a
    caller can compute it beside the slide's JPEG levels.
    """
    return base64.b64encode(zlib.compress(heatmap_bytes(heatmap), 9)).decode("ascii")


def _encode_tile(tile: np.ndarray) -> str | None:
    if tile.min() >= _BLANK_MIN:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(jpeg_bytes(tile)).decode("ascii")


def jpeg_bytes(tile: np.ndarray) -> bytes:
    """``tile`` (``(h, w, 3)`` uint8, any strides) as a baseline JPEG of quality :data:`JPEG_QUALITY`.

    libjpeg-turbo through imagecodecs, which lets go of the GIL for the whole encode (so the pool's threads
    encode at once) and reads the array as it is; Pillow (same library, same settings: the same bytes) holds
    the GIL for about half of its encode and copies each tile into an image first. Pillow where imagecodecs
    has no JPEG codec.
    """
    if _imagecodecs_jpeg():
        import imagecodecs

        return bytes(imagecodecs.jpeg8_encode(tile, level=JPEG_QUALITY))
    return _pillow_jpeg(tile)


def _pillow_jpeg(tile: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(tile)).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


@functools.cache
def _imagecodecs_jpeg() -> bool:
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(imagecodecs.JPEG8.available)


def _encode_crop(image: np.ndarray, row: int, col: int) -> str | None:
    """Tile ``(row, col)`` of ``image`` as a JPEG data URI (encoded from the view, on the encoding thread)."""
    t = VIEWER_TILE
    return _encode_tile(image[row * t : (row + 1) * t, col * t : (col + 1) * t])


def _level(
    image: np.ndarray, px: tuple[float, float], pool: ThreadPoolExecutor | None = None
) -> dict[str, Any]:
    height, width = image.shape[:2]
    t = VIEWER_TILE
    rows, cols = math.ceil(height / t), math.ceil(width / t)
    where = [(r, c) for r in range(rows) for c in range(cols)]

    def encode(rc: tuple[int, int]) -> str | None:
        return _encode_crop(image, *rc)

    tiles = list(pool.map(encode, where)) if pool is not None else [encode(rc) for rc in where]
    return {
        "width": width,
        "height": height,
        "px": list(px),
        "tile": t,
        "rows": rows,
        "cols": cols,
        "tiles": tiles,
    }


_HALVE_STRIP = 256  # output rows per task of :func:`_halve`


def _halve(image: np.ndarray, pool: ThreadPoolExecutor | None) -> np.ndarray:
    """``image`` reduced 2× (each pixel the mean of 2×2, the odd edge cut), in row strips on ``pool``."""
    h, w = image.shape[:2]
    half = (max(1, w // 2), max(1, h // 2))
    source = image[: half[1] * 2, : half[0] * 2]
    if pool is None or min(h, w) < 2:
        return resample(source, half)
    out = np.empty((half[1], half[0], *image.shape[2:]), dtype=image.dtype)

    def strip(y: int) -> None:
        y1 = min(y + _HALVE_STRIP, half[1])
        out[y:y1] = resample(source[2 * y : 2 * y1], (half[0], y1 - y))

    list(pool.map(strip, range(0, half[1], _HALVE_STRIP)))
    return out


def _level_bytes(level: dict[str, Any]) -> int:
    return sum(len(uri) for uri in level["tiles"] if uri)


@dataclass(frozen=True, slots=True, eq=False)
class SlideLevels:
    """The viewer's slide image, JPEG-tiled at every level, ready to embed (:func:`encode_slide_levels`).

    ``levels`` run coarse → fine; the finest is at ``mpp`` µm/px.
    """

    mpp: tuple[float, float]
    levels: tuple[dict[str, Any], ...]


def encode_slide_levels(
    thumbnail: np.ndarray,
    thumbnail_mpp: tuple[float, float],
    slide_mpp: tuple[float, float],
    *,
    workers: int = 1,
) -> SlideLevels:
    """Cut ``thumbnail`` and its 2× reductions down to an overview into JPEG tiles (on ``workers`` threads)."""
    base_px = (thumbnail_mpp[0] / slide_mpp[0], thumbnail_mpp[1] / slide_mpp[1])
    images = [(thumbnail, base_px)]
    _imagecodecs_jpeg()  # imported here, not by several encoding threads at once
    with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
        while max(images[-1][0].shape[:2]) > OVERVIEW_MAX_SIDE:
            previous, (px, py) = images[-1]
            # Each reduced pixel covers the same slide area as 2×2 of the previous level (the odd edge is cut).
            images.append((_halve(previous, pool), (px * 2, py * 2)))
        levels = tuple(_level(image, px, pool) for image, px in reversed(images))
    return SlideLevels(mpp=thumbnail_mpp, levels=levels)


def slide_pyramid(
    heatmap: Heatmap,
    thumbnail: np.ndarray | SlideLevels,
    thumbnail_mpp: tuple[float, float],
    budget: int,
) -> list[dict[str, Any]]:
    """JPEG-tiled levels, finest first, from ``thumbnail`` (``thumbnail_mpp`` µm/px) down to an overview.

    Levels are taken from coarse to fine and the finer ones dropped once ``budget`` bytes would be exceeded
    (the overview is always kept).
    """
    if not isinstance(thumbnail, SlideLevels):
        thumbnail = encode_slide_levels(thumbnail, thumbnail_mpp, heatmap.slide_mpp)
    levels: list[dict[str, Any]] = []
    used = 0
    for level in thumbnail.levels:  # coarse → fine
        nbytes = _level_bytes(level)
        if levels and used + nbytes > budget:
            log.warning(
                "viewer: leaving out the %dx%d slide level (%.1f MB) to stay within %.1f MB",
                level["width"], level["height"], nbytes / 1e6, budget / 1e6,
            )  # fmt: skip
            break
        levels.append(level)
        used += nbytes
    return levels[::-1]


def viewer_data(
    heatmap: Heatmap,
    thumbnail: np.ndarray | SlideLevels,
    *,
    thumbnail_mpp: tuple[float, float],
    threshold: float = 0.5,
    opacity: float = 0.5,
    max_bytes: int = MAX_BYTES,
    packed_heatmap: str | None = None,
) -> dict[str, Any]:
    """Everything the page script needs, JSON-ready (``packed_heatmap``: :func:`pack_heatmap`, if made)."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    packed = packed_heatmap if packed_heatmap is not None else pack_heatmap(heatmap)
    budget = max(0, max_bytes - len(packed) - 200_000)  # the rest of the page is well under 200 kB
    rows, cols = heatmap.shape
    return {
        "format": "pathoflash.viewer/1",
        "model_id": heatmap.model_id,
        "threshold": threshold,
        "opacity": opacity,
        "slide": {
            "width": heatmap.slide_dimensions[0],
            "height": heatmap.slide_dimensions[1],
            "mpp": list(heatmap.slide_mpp),
        },
        "levels": slide_pyramid(heatmap, thumbnail, thumbnail_mpp, budget),
        "heatmap": {
            "rows": rows,
            "cols": cols,
            "origin": list(heatmap.origin),
            "px": list(heatmap.pixel_size),
            "mpp": heatmap.mpp,
            "encoding": "zlib-base64-uint8",
            "data": packed,
        },
        "lut": viridis_lut().tolist(),
    }


def render_html(data: dict[str, Any], title: str) -> str:
    """Fill the template: title (escaped), script, and the JSON (with ``<`` escaped so it cannot end the tag)."""
    package = resources.files(__package__)
    template = (package / "viewer.html").read_text(encoding="utf-8")
    script = (package / "viewer.js").read_text(encoding="utf-8")
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    page = template.replace("__PF_TITLE__", html.escape(title)).replace("/*__PF_SCRIPT__*/", script)
    return page.replace("__PF_DATA__", payload)


def write_viewer(
    heatmap: Heatmap,
    path: PathLike,
    thumbnail: np.ndarray | SlideLevels,
    *,
    thumbnail_mpp: tuple[float, float] | None,
    threshold: float = 0.5,
    opacity: float = 0.5,
    title: str | None = None,
    max_bytes: int = MAX_BYTES,
    packed_heatmap: str | None = None,
) -> Path:
    """Write ``viewer.html`` atomically (``packed_heatmap``: :func:`pack_heatmap` of ``heatmap``, if made)."""
    if thumbnail_mpp is None:
        raise ValueError("thumbnail_mpp is required")
    data = viewer_data(
        heatmap,
        thumbnail,
        thumbnail_mpp=thumbnail_mpp,
        threshold=threshold,
        opacity=opacity,
        max_bytes=max_bytes,
        packed_heatmap=packed_heatmap,
    )
    name = title or f"Tumor heatmap{f' — {heatmap.model_id}' if heatmap.model_id else ''}"
    page = render_html(data, name)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info("wrote %s (%.1f MB, %d slide levels)", path, len(page) / 1e6, len(data["levels"]))
    return Path(path)


__all__ = [
    "MAX_BYTES",
    "SlideLevels",
    "encode_slide_levels",
    "heatmap_bytes",
    "jpeg_bytes",
    "pack_heatmap",
    "render_html",
    "slide_pyramid",
    "viewer_data",
    "write_viewer",
]
