"""A fast read path for JPEG-tiled TIFF slides (Aperio SVS, generic tiled TIFF), beside OpenSlide.

For a region read at a whole-number reduction of 1 or 2 (a 0.25 µm/px scan tiled at 0.5 µm/px), the raw JPEG
bytes of each TIFF tile under the region are read with ``os.pread`` (threads share no file position), the
page's shared ``JPEGTables`` are put back into the abbreviated stream, and Pillow decodes it — for a
reduction of 2 with ``Image.draft``, so that libjpeg scales in the DCT domain: no full-size decode, no RGBA,
no separate averaging. OpenSlide does the same decode at full size, paints it through cairo as RGBA and
leaves the averaging to us.

:class:`JpegTiles` knows the TIFF layout only, never the slide's error semantics: a region it cannot do
(:meth:`JpegTiles.read_region` returns ``None``) or fails on (raises) is read by OpenSlide instead, whose
retry-and-report path stays the one that decides what an unreadable tile is.

Known difference: OpenSlide fails a tile on libjpeg's "corrupt JPEG data" warnings; Pillow decodes through
them. A tile whose bytes are missing, cut short, or do not start with SOI and end with EOI falls back to
OpenSlide (and fails there as before), but one damaged inside its entropy-coded data decodes here as
garbled pixels instead of being reported unreadable.
"""

from __future__ import annotations

import io
import logging
import math
import os
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from .slide import Slide

log = logging.getLogger(__name__)

#: How ``read_grid_region``/``tile_slide`` decode tiles: ``"auto"`` takes this module's path where it
#: applies (falling back to OpenSlide elsewhere), ``"openslide"`` always reads through OpenSlide.
Decoder = Literal["auto", "openslide"]
DECODERS: tuple[Decoder, ...] = ("auto", "openslide")

#: OpenSlide drivers whose levels are the tiled TIFF pages of the file (largest first).
TIFF_VENDORS = ("aperio", "generic-tiff")
REDUCTIONS = (1, 2)

_JPEG = 7
_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR = 2, 6
_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"
#: Adobe APP14 with transform 0: "the three components are R, G, B, not YCbCr". TIFF's photometric RGB
#: says the same, but libjpeg reads only the stream, which (as in Aperio's tiles) often says nothing.
_ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


class JpegTileError(ValueError):
    """A tile's bytes are not a JPEG this module can decode (the caller falls back to OpenSlide)."""


@dataclass(frozen=True, slots=True)
class TiledLevel:
    """One JPEG-tiled TIFF page as a pyramid level: geometry, where each tile's bytes are, and the marker
    segments (tables, colour transform) to put after each tile's SOI."""

    page: int
    width: int
    height: int
    tile_width: int
    tile_height: int
    offsets: np.ndarray  # (rows · cols,) int64, row-major
    bytecounts: np.ndarray  # (rows · cols,) int64; 0 = a missing (sparse) tile, white
    prefix: bytes

    @property
    def cols(self) -> int:
        return -(-self.width // self.tile_width)


def _level_from_page(page: Any, index: int) -> TiledLevel | None:
    """A ``tifffile.TiffPage`` as a :class:`TiledLevel` when it is 8-bit, 3-sample, chunky, JPEG-tiled
    RGB or YCbCr; else ``None``."""
    fits = (
        page.is_tiled
        and page.compression == _JPEG
        and page.photometric in (_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR)
        and page.samplesperpixel == 3
        and page.bitspersample == 8
        and page.planarconfig == 1  # chunky (RGBRGB…), one JPEG per tile
        and page.imagedepth == 1
        and page.tiledepth == 1
        and page.tilewidth % 16 == 0
        and page.tilelength % 16 == 0
    )
    if not fits:
        return None
    width, height = int(page.imagewidth), int(page.imagelength)
    tw, th = int(page.tilewidth), int(page.tilelength)
    offsets = np.asarray(page.dataoffsets, np.int64)
    counts = np.asarray(page.databytecounts, np.int64)
    if offsets.shape != counts.shape or len(offsets) != math.ceil(width / tw) * math.ceil(height / th):
        return None
    tables = bytes(page.jpegtables or b"")
    if tables:
        if not (tables[:2] == _SOI and tables[-2:] == _EOI):
            return None
        tables = tables[2:-2]
    adobe = _ADOBE_RGB if page.photometric == _PHOTOMETRIC_RGB else b""
    return TiledLevel(index, width, height, tw, th, offsets, counts, bytes(adobe + tables))


_direct_decoding = True


def _disable_direct_decoding(exc: BaseException) -> None:
    global _direct_decoding
    _direct_decoding = False
    log.info("Pillow's JPEG decoder cannot be called directly (%s); decoding through Image.open", exc)


def _decode_direct(stream: bytes, size: tuple[int, int], k: int, what: str) -> np.ndarray:
    """Decode one JPEG tile with Pillow's libjpeg decoder at ``1/k`` scale, without ``Image.open``.

    ``Image.open`` parses every marker in Python (holding the GIL) to learn what the TIFF tags already say
    — the tile's size and that it decodes to RGB; here libjpeg reads the header itself, with the GIL
    released. Measured on this project's 2-core box (py-spy, one tiling thread, 774 tiles): the share of
    the tiling thread's time spent holding the GIL fell from 21 % to 12 % (what limits tiling on many
    cores), identical pixels; whole-tiling CPU per tile on 2 cores only ~1–4 % lower. The stream must fill
    ``size`` exactly: a smaller or larger JPEG, or one cut short, is an error.
    """
    from PIL import Image

    image = Image.core.new("RGB", size)
    decoder = Image.core.jpeg_decoder("RGB", "RGB", "", k, 0)  # mode, rawmode, jpeg mode, scale, draft
    try:
        decoder.setimage(image, (0, 0, *size))
        consumed, status = decoder.decode(stream)
    finally:
        decoder.cleanup()
    if status < 0:
        raise JpegTileError(
            f"{what}: libjpeg error {status} (size other than {size[0]}x{size[1]}, or corrupt)"
        )
    if consumed >= 0:
        raise JpegTileError(f"{what}: JPEG data ends before the image is complete")
    return np.asarray(Image.Image()._new(image))


def _check_structure(data: bytes, what: str) -> None:
    """Raise :class:`JpegTileError` unless ``data`` starts with SOI and ends with EOI.

    Pillow decodes through libjpeg's "corrupt data" warnings (garbage pixels, no error) where OpenSlide
    fails the read; a tile cut short or overwritten to its end is caught here and goes to OpenSlide.
    Damage inside the entropy-coded data is not caught (see the module notes).
    """
    if data[:2] != _SOI or data[-2:] != _EOI:
        raise JpegTileError(f"{what}: not a complete JPEG stream (SOI … EOI)")


class JpegTiles:
    """Raw-JPEG reads of a slide's TIFF levels. Thread-safe; :meth:`close` when done.

    ``levels[n]`` is OpenSlide level ``n`` or ``None`` where it is not a JPEG-tiled page this path decodes.
    """

    def __init__(self, path: Path, levels: Sequence[TiledLevel | None]) -> None:
        self.path = path
        self.levels = tuple(levels)
        self._fd = os.open(path, os.O_RDONLY)
        self._finalizer = weakref.finalize(self, os.close, self._fd)
        self._lock = threading.Lock()
        self._users = 0
        self._closing = False

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], level_dimensions: Sequence[tuple[int, int]], vendor: str
    ) -> JpegTiles | None:
        """The reader for a slide OpenSlide opened with ``level_dimensions`` via driver ``vendor``, or
        ``None`` when its levels cannot be matched to JPEG-tiled TIFF pages one for one (other formats,
        other layouts: OpenSlide reads those)."""
        import tifffile

        if vendor not in TIFF_VENDORS:
            return None
        path = Path(path)
        try:
            with tifffile.TiffFile(path) as tif:
                # OpenSlide's levels: the tiled pages, largest first (Aperio's stripped thumbnail, label
                # and macro pages are not levels).
                tiled = [
                    (n, page)
                    for n, page in enumerate(tif.pages)
                    if isinstance(page, tifffile.TiffPage) and page.is_tiled
                ]
                tiled.sort(key=lambda item: -item[1].imagewidth)
                if [(p.imagewidth, p.imagelength) for _, p in tiled] != [tuple(d) for d in level_dimensions]:
                    log.debug("%s: tiled TIFF pages do not match OpenSlide's levels", path)
                    return None
                levels = [_level_from_page(page, n) for n, page in tiled]
        except Exception as exc:  # tifffile raises many types on unusual files; OpenSlide reads them
            log.debug("%s: no raw-JPEG reads (%s)", path, exc)
            return None
        if not any(levels):
            return None
        return cls(path, levels)

    def applies(self, level: int, reduce: int) -> bool:
        """Whether regions of ``level`` at ``reduce`` can come from this path at all."""
        return 0 <= level < len(self.levels) and self.levels[level] is not None and reduce in REDUCTIONS

    def read_region(
        self, level: int, location: tuple[int, int], size: tuple[int, int], reduce: int = 1
    ) -> np.ndarray | None:
        """Pixels ``[y, y + h) × [x, x + w)`` of ``level`` (level pixels, not level 0), averaged over
        ``reduce × reduce`` blocks by libjpeg: ``(h // reduce, w // reduce, 3)`` uint8 RGB, white beyond
        the level's bounds and where a tile is missing.

        Returns ``None`` when this path does not apply to the request (level not JPEG-tiled, reduction not
        1 or 2, odd origin or size for a halving, or a halving that would straddle an odd image edge).
        Raises on unreadable or undecodable tile bytes.
        """
        (x, y), (w, h), k = location, size, reduce
        lvl = self.levels[level] if 0 <= level < len(self.levels) else None
        if lvl is None or k not in REDUCTIONS or w <= 0 or h <= 0:
            return None
        if x % k or y % k or w % k or h % k:
            return None
        if (x + w > lvl.width and lvl.width % k) or (y + h > lvl.height and lvl.height % k):
            return None  # an output pixel would mix image and beyond-the-edge white
        out = np.full((h // k, w // k, 3), 255, np.uint8)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, lvl.width), min(y + h, lvl.height)
        if x0 >= x1 or y0 >= y1:
            return out
        tw, th = lvl.tile_width, lvl.tile_height
        fd = self._acquire()
        try:
            for row in range(y0 // th, (y1 - 1) // th + 1):
                ty0, ty1 = max(y0, row * th), min(y1, (row + 1) * th)
                for col in range(x0 // tw, (x1 - 1) // tw + 1):
                    tx0, tx1 = max(x0, col * tw), min(x1, (col + 1) * tw)
                    tile = self._decode(fd, lvl, row * lvl.cols + col, k)
                    if tile is None:
                        continue  # missing tile: stays white
                    out[(ty0 - y) // k : (ty1 - y) // k, (tx0 - x) // k : (tx1 - x) // k] = tile[
                        (ty0 - row * th) // k : (ty1 - row * th) // k,
                        (tx0 - col * tw) // k : (tx1 - col * tw) // k,
                    ]
        finally:
            self._release()
        return out

    def _decode(self, fd: int, lvl: TiledLevel, index: int, k: int) -> np.ndarray | None:
        """Tile ``index`` of ``lvl`` decoded at ``1/k`` scale as ``(th // k, tw // k, 3)``, or ``None`` when
        the file has no bytes for it."""
        from PIL import Image

        count, offset = int(lvl.bytecounts[index]), int(lvl.offsets[index])
        if count == 0:
            return None
        data = os.pread(fd, count, offset)
        if len(data) != count:
            raise JpegTileError(f"tile {index} of page {lvl.page}: file ends inside the tile")
        _check_structure(data, f"tile {index} of page {lvl.page}")
        size = (lvl.tile_width // k, lvl.tile_height // k)
        stream = data[:2] + lvl.prefix + data[2:]
        if _direct_decoding:
            try:
                return _decode_direct(stream, size, k, f"tile {index} of page {lvl.page}")
            except (AttributeError, TypeError) as exc:  # a Pillow without these internals: use Image.open
                _disable_direct_decoding(exc)
        with Image.open(io.BytesIO(stream), formats=("JPEG",)) as image:
            if k > 1:
                image.draft("RGB", size)  # libjpeg's DCT scaling: decodes straight to 1/k size
            if image.mode != "RGB" or image.size != size:
                raise JpegTileError(
                    f"tile {index} of page {lvl.page}: decodes as {image.mode} {image.size}, not RGB {size}"
                )
            return np.asarray(image)

    # -- lifetime: the descriptor is closed only once no read is using it -------------------------
    def _acquire(self) -> int:
        with self._lock:
            if self._closing or not self._finalizer.alive:
                raise JpegTileError(f"{self.path}: reader is closed")
            self._users += 1
            return self._fd

    def _release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._closing:
                self._finalizer()

    def close(self) -> None:
        with self._lock:
            self._closing = True
            if self._users == 0:
                self._finalizer()


_registry: weakref.WeakKeyDictionary[Slide, JpegTiles | None] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def jpeg_tiles_for(slide: Slide) -> JpegTiles | None:
    """The :class:`JpegTiles` of ``slide``, opened on its first use and kept while the slide lives (its file
    descriptor closes when the slide is garbage-collected); ``None`` when the path does not apply."""
    with _registry_lock:
        if slide in _registry:
            return _registry[slide]
        reader = JpegTiles.open(slide.path, slide.level_dimensions, slide.format)
        _registry[slide] = reader
        return reader


def release_jpeg_tiles(slide: Slide) -> None:
    """Close ``slide``'s reader, if it has one (called by :meth:`Slide.close`); a later read opens it again."""
    with _registry_lock:
        reader = _registry.pop(slide, None)
    if reader is not None:
        reader.close()
