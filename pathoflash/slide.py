"""A whole-slide image: OpenSlide underneath, numpy RGB out, mpp parsed once.

``Slide`` keeps openslide-python's small surface (``level_count``, ``level_dimensions``,
``level_downsamples``, ``read_region(level-0 location, level, size)``) but returns ``(h, w, 3)`` uint8
arrays composited onto white, carries a typed ``mpp``, and survives OpenSlide's latched errors by reopening
its handle and retrying once.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import struct
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import (
    MissingMppError,
    SlideError,
    SlideNotFoundError,
    SlideReadError,
    TileReadError,
    UnsupportedSlideError,
)
from .resample import box_reduce, resample

log = logging.getLogger(__name__)

#: File endings of formats OpenSlide 4 reads (lower case, with the dot).
SLIDE_SUFFIXES = (
    ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm", ".czi",
)  # fmt: skip

_MAX_THUMBNAIL_FAILURES = 64  # unreadable pieces of a thumbnail before giving up on the slide
_MPP_RANGE = (0.01, 100.0)  # µm/px; anything outside is a metadata error, not a microscope


@dataclass(frozen=True, slots=True)
class SlideInfo:
    """What ``pathoflash info`` reports: the slide's geometry and metadata, parsed once."""

    path: str
    format: str
    dimensions: tuple[int, int]
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: tuple[float, float] | None
    mpp_source: str
    objective_power: float | None
    associated_images: tuple[str, ...]
    file_size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "dimensions": list(self.dimensions),
            "level_count": len(self.level_dimensions),
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": list(self.level_downsamples),
            "mpp": None if self.mpp is None else list(self.mpp),
            "mpp_source": self.mpp_source,
            "objective_power": self.objective_power,
            "associated_images": list(self.associated_images),
            "file_size": self.file_size,
        }


def _check_path(path: Path) -> None:
    try:
        path.stat()
    except OSError as exc:
        if path.is_symlink():
            cause = "symbolic link loop" if exc.errno == errno.ELOOP else "broken symbolic link"
            raise SlideNotFoundError(cause, path=path) from None
        if exc.errno == errno.ENOENT:
            raise SlideNotFoundError("no such file", path=path) from None
        raise SlideReadError(f"cannot access file ({exc.strerror or exc})", path=path) from None
    if path.is_dir():
        raise SlideNotFoundError(
            "is a directory, not a slide file (MIRAX/VMS: pass the .mrxs/.vms file)", path=path
        )
    if not path.is_file():
        raise UnsupportedSlideError("not a regular file (device, pipe or socket)", path=path)
    if path.stat().st_size == 0:
        raise SlideReadError("file is empty (0 bytes)", path=path)
    if not os.access(path, os.R_OK):
        raise SlideReadError("permission denied", path=path)


def _open_handle(path: Path) -> Any:
    import openslide

    try:
        return openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError:
        raise _unsupported(path) from None
    except openslide.OpenSlideError as exc:
        raise SlideReadError(f"corrupt or truncated slide ({exc})", path=path) from None
    except OSError as exc:  # e.g. the C library failing to read a truncated file
        raise SlideReadError(f"cannot read slide ({exc.strerror or exc})", path=path) from None


_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x1f\x8b", "a gzip-compressed file; decompress it first"),
    (0, b"PK\x03\x04", "a ZIP archive; extract the slide from it first"),
    (0, b"7z\xbc\xaf", "a 7-Zip archive; extract the slide from it first"),
    (0, b"\x89PNG", "a PNG image, not a whole-slide image"),
    (0, b"\xff\xd8\xff", "a JPEG image, not a whole-slide image"),
    (0, b"GIF8", "a GIF image, not a whole-slide image"),
    (0, b"BM", "a BMP image, not a whole-slide image"),
    (0, b"%PDF", "a PDF document, not a whole-slide image"),
    (128, b"DICM", "a DICOM file OpenSlide cannot read as a whole-slide image (not a WSI instance?)"),
)
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _unsupported(path: Path) -> SlideError:
    """Why OpenSlide rejected a file, in words: truncated TIFF, not tiled, an archive, a photo …"""
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError as exc:
        return SlideReadError(f"cannot read file ({exc.strerror or exc})", path=path)
    if head[:4] in _TIFF_MAGIC:
        return _diagnose_tiff(path)
    for offset, magic, what in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return UnsupportedSlideError(what, path=path)
    suffix = path.suffix.lower()
    if suffix and suffix not in SLIDE_SUFFIXES:
        return UnsupportedSlideError(f"'{suffix}' is not a slide format OpenSlide reads", path=path)
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return UnsupportedSlideError("a text file, not a whole-slide image", path=path)
    return UnsupportedSlideError("not a whole-slide image in a format OpenSlide reads", path=path)


def _tiff_directories_end(path: Path, size: int) -> int:
    """The byte just past the TIFF's last directory (IFD), following the chain from the header.

    Returns a number larger than ``size`` when a directory lies (partly) beyond the end of the file.
    """
    with open(path, "rb") as handle:
        header = handle.read(16)
        order = "<" if header[:2] == b"II" else ">"
        big = header[2:4] in (b"+\x00", b"\x00+")
        offset = struct.unpack(order + ("Q" if big else "I"), header[8:16] if big else header[4:8])[0]
        count_fmt, entry_size, next_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
        end = 0
        seen: set[int] = set()
        while offset and offset not in seen and len(seen) < 10_000:
            seen.add(offset)
            count_size = struct.calcsize(count_fmt)
            if offset + count_size > size:
                return offset + count_size
            handle.seek(offset)
            (count,) = struct.unpack(order + count_fmt, handle.read(count_size))
            next_pos = offset + count_size + count * entry_size
            next_size = struct.calcsize(next_fmt)
            if next_pos + next_size > size:
                return next_pos + next_size
            handle.seek(next_pos)
            (offset,) = struct.unpack(order + next_fmt, handle.read(next_size))
            end = max(end, next_pos + next_size)
        return end


def _diagnose_tiff(path: Path) -> SlideError:
    import tifffile

    size = path.stat().st_size
    try:
        directories_end = _tiff_directories_end(path, size)
    except (OSError, struct.error) as exc:
        return SlideReadError(f"damaged TIFF header ({exc})", path=path)
    if directories_end > size:
        return SlideReadError(
            f"truncated TIFF: its directory runs to byte {directories_end:,} but the file has {size:,} bytes "
            "(incomplete copy or download?)",
            path=path,
        )
    try:
        with tifffile.TiffFile(path) as tif:
            pages = list(tif.pages)
            end = max(
                (
                    int(o) + int(n)
                    for page in pages
                    for o, n in zip(page.dataoffsets, page.databytecounts, strict=False)
                ),
                default=0,
            )
            tiled = any(getattr(page, "is_tiled", False) for page in pages)
    except Exception as exc:  # tifffile raises many types on damaged files; all mean "unreadable TIFF"
        return SlideReadError(f"damaged or truncated TIFF ({exc})", path=path)
    if end > size:
        return SlideReadError(
            f"truncated TIFF: image data runs to byte {end:,} but the file has {size:,} bytes "
            "(incomplete copy or download?)",
            path=path,
        )
    if not tiled:
        return UnsupportedSlideError(
            "a plain (untiled) TIFF image, not a whole-slide image; OpenSlide reads tiled pyramidal TIFFs",
            path=path,
        )
    return UnsupportedSlideError("a TIFF that OpenSlide does not recognise as a whole-slide image", path=path)


def _float_property(props: Mapping[str, str], key: str) -> float | None:
    try:
        value = float(props[key])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _mpp_from_properties(props: Mapping[str, str]) -> tuple[tuple[float, float] | None, str]:
    mx, my = _float_property(props, "openslide.mpp-x"), _float_property(props, "openslide.mpp-y")
    if mx is not None or my is not None:
        mx = mx if mx is not None else my
        my = my if my is not None else mx
        assert mx is not None and my is not None
        return (mx, my), "openslide"
    # Generic TIFFs: resolution tags in pixels per centimetre (3) or inch (2).
    unit = props.get("tiff.ResolutionUnit", "").lower()
    per_unit_um = {"centimeter": 1e4, "3": 1e4, "inch": 25400.0, "2": 25400.0}.get(unit)
    rx, ry = _float_property(props, "tiff.XResolution"), _float_property(props, "tiff.YResolution")
    if per_unit_um is not None and rx is not None:
        ry = ry if ry is not None else rx
        mpp = (per_unit_um / rx, per_unit_um / ry)
        if all(_MPP_RANGE[0] <= m <= _MPP_RANGE[1] for m in mpp):
            return mpp, "tiff-resolution"
    return None, "missing"


def _validate_mpp(mpp: float | tuple[float, float], path: Path) -> tuple[float, float]:
    pair = (float(mpp), float(mpp)) if isinstance(mpp, int | float) else (float(mpp[0]), float(mpp[1]))
    for m in pair:
        if not (math.isfinite(m) and _MPP_RANGE[0] <= m <= _MPP_RANGE[1]):
            raise MissingMppError(
                f"mpp {m} µm/px is out of range {_MPP_RANGE}; pass --slide-mpp with the scan resolution",
                path=path,
            )
    return pair


class Slide:
    """An open whole-slide image. Thread-safe for reads; use as a context manager."""

    def __init__(self, path: str | os.PathLike[str], *, mpp: float | tuple[float, float] | None = None):
        self.path = Path(path)
        _check_path(self.path)
        self._lock = threading.Lock()
        self._generation = 0
        self._handle = _open_handle(self.path)
        # Handles still in use by readers, by generation; a superseded one is closed by its last reader.
        self._handles: dict[int, Any] = {0: self._handle}
        self._readers: dict[int, int] = {}
        props = dict(self._handle.properties)
        self.properties: Mapping[str, str] = props
        self.format: str = props.get("openslide.vendor", "unknown")
        self.level_count: int = int(self._handle.level_count)
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(
            (int(w), int(h)) for w, h in self._handle.level_dimensions
        )
        self.level_downsamples: tuple[float, ...] = tuple(float(d) for d in self._handle.level_downsamples)
        self.dimensions: tuple[int, int] = self.level_dimensions[0]
        self.associated_images: tuple[str, ...] = tuple(sorted(self._handle.associated_images.keys()))
        self.objective_power = _float_property(props, "openslide.objective-power")
        if self.dimensions[0] <= 0 or self.dimensions[1] <= 0:
            raise SlideReadError("slide has no pixels", path=self.path)
        stat = self.path.stat()
        self.file_size, self.file_mtime = stat.st_size, stat.st_mtime
        self.file_mtime_ns: int = stat.st_mtime_ns
        if mpp is not None:
            self._mpp: tuple[float, float] | None = _validate_mpp(mpp, self.path)
            self.mpp_source = "override"
        else:
            found, self.mpp_source = _mpp_from_properties(props)
            self._mpp = None if found is None else _validate_mpp(found, self.path)

    # -- metadata -------------------------------------------------------------------------------------
    @property
    def mpp(self) -> tuple[float, float]:
        """Microns per pixel at level 0, ``(x, y)``. Raises :class:`MissingMppError` when unknown."""
        if self._mpp is None:
            raise MissingMppError(
                "slide has no microns-per-pixel metadata; pass --slide-mpp (Python: mpp=) with the scan "
                "resolution, e.g. --slide-mpp 0.25 for a 40× scan",
                path=self.path,
            )
        return self._mpp

    @property
    def has_mpp(self) -> bool:
        return self._mpp is not None

    def info(self) -> SlideInfo:
        return SlideInfo(
            path=str(self.path),
            format=self.format,
            dimensions=self.dimensions,
            level_dimensions=self.level_dimensions,
            level_downsamples=self.level_downsamples,
            mpp=self._mpp,
            mpp_source=self.mpp_source,
            objective_power=self.objective_power,
            associated_images=self.associated_images,
            file_size=self.file_size,
        )

    def best_level_for_mpp(self, mpp: float) -> int:
        """The coarsest level whose resolution is at least as fine as ``mpp`` (level 0 if none is)."""
        base = min(self.mpp)
        best = 0
        for level, downsample in enumerate(self.level_downsamples):
            if base * downsample <= mpp * (1 + 1e-3):
                best = level
        return best

    # -- pixels ---------------------------------------------------------------------------------------
    def read_region(
        self,
        location: tuple[int, int],
        level: int,
        size: tuple[int, int],
        *,
        reduce: int | tuple[int, int] = 1,
    ) -> np.ndarray:
        """Read ``size = (w, h)`` pixels of ``level`` at level-0 ``location = (x, y)``.

        Returns ``(h, w, 3)`` uint8 RGB; transparent pixels (outside the scanned area) become white.
        ``reduce = k`` or ``(kx, ky)`` averages ``k × k`` blocks (sides must be multiples) and returns
        ``(h // ky, w // kx, 3)``; done by PIL before the pixels become a numpy array, it costs less than
        converting the full-size region would.
        A failed read reopens the OpenSlide handle (its errors latch) and retries once; a second failure
        raises :class:`TileReadError`.
        """
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} out of range 0..{self.level_count - 1}")
        width, height = int(size[0]), int(size[1])
        if width <= 0 or height <= 0:
            raise ValueError(f"region size must be positive, got {size}")
        x, y = int(location[0]), int(location[1])
        kx, ky = (reduce, reduce) if isinstance(reduce, int) else (int(reduce[0]), int(reduce[1]))
        if kx < 1 or ky < 1 or width % kx or height % ky:
            raise ValueError(f"reduce {reduce} must be ≥ 1 and divide the region size {size}")
        handle, generation = self._acquire()
        try:
            return _pil_to_rgb_on_white(handle.read_region((x, y), level, (width, height)), kx, ky)
        except Exception as exc:  # OpenSlideError, or OSError from a latched handle
            first_error = exc
        finally:
            self._release(generation)
        log.info("%s: read failed at x=%d y=%d (%s); reopening and retrying", self.path, x, y, first_error)
        try:
            self._reopen(generation)
        except SlideError as exc:
            raise TileReadError(
                f"slide cannot be reopened after a read error: {exc.message}", path=self.path
            ) from exc
        # Retry on a private handle: the shared one may already be latched again by another thread's
        # failure, which must not make this read fail.
        try:
            private = _open_handle(self.path)
        except SlideError as exc:
            raise TileReadError(
                f"slide cannot be reopened after a read error: {exc.message}", path=self.path
            ) from exc
        try:
            return _pil_to_rgb_on_white(private.read_region((x, y), level, (width, height)), kx, ky)
        except Exception as exc:
            raise TileReadError(
                f"unreadable region at level {level} x={x} y={y} size={width}x{height}: {exc}",
                path=self.path,
            ) from exc
        finally:
            private.close()

    def _acquire(self) -> tuple[Any, int]:
        with self._lock:
            generation = self._generation
            self._readers[generation] = self._readers.get(generation, 0) + 1
            return self._handles[generation], generation

    def _release(self, generation: int) -> None:
        stale = None
        with self._lock:
            left = self._readers[generation] - 1
            self._readers[generation] = left
            if left == 0 and generation != self._generation:
                del self._readers[generation]
                stale = self._handles.pop(generation, None)
        if stale is not None:
            _close_quietly(stale)

    def _reopen(self, seen_generation: int) -> None:
        """Replace a latched shared handle; the old one is closed once no reader uses it."""
        stale = None
        with self._lock:
            if self._generation != seen_generation:
                return  # another thread already reopened
            fresh = _open_handle(self.path)
            self._generation += 1
            self._handle = fresh
            self._handles[self._generation] = fresh
            if self._readers.get(seen_generation, 0) == 0:
                self._readers.pop(seen_generation, None)
                stale = self._handles.pop(seen_generation, None)
        if stale is not None:
            _close_quietly(stale)

    def read_at_mpp(self, location: tuple[int, int], size: tuple[int, int], mpp: float) -> np.ndarray:
        """Read ``size = (w, h)`` pixels at resolution ``mpp`` whose top-left is level-0 ``location``.

        Reads from the coarsest level at least as fine as ``mpp`` and resamples with anti-aliasing.
        Areas beyond the slide come back white.
        """
        level = self.best_level_for_mpp(mpp)
        downsample = self.level_downsamples[level]
        sx, sy = (mpp / (self.mpp[0] * downsample), mpp / (self.mpp[1] * downsample))
        src_w = max(1, round(size[0] * sx))
        src_h = max(1, round(size[1] * sy))
        region = self.read_region(location, level, (src_w, src_h))
        return resample(region, size)

    def thumbnail_at_mpp(self, mpp: float, *, chunk: int = 2048, workers: int | None = None) -> np.ndarray:
        """The whole slide at a coarse resolution ``mpp``, read in chunks so memory stays bounded.

        Unreadable parts (corrupt tiles) come back white; :meth:`read_thumbnail` also says where they are.
        """
        return self.read_thumbnail(mpp, chunk=chunk, workers=workers)[0]

    def read_thumbnail(
        self, mpp: float, *, chunk: int = 2048, workers: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(rgb, unreadable)``: the whole slide at ``mpp`` µm/px and a bool mask of the parts that could
        not be read (left white).

        Reads the coarsest level at least as fine as ``mpp``, averages whole blocks of pixels chunk by
        chunk (exact, fast), then resamples the small remainder with anti-aliasing. A chunk that fails is
        split until the unreadable pieces are ~256 px; if nothing at all can be read (or too many pieces
        fail), :class:`TileReadError` is raised. Chunks are read on ``workers`` threads (default: every CPU
        this process may use).
        """
        level = self.best_level_for_mpp(mpp)
        downsample = self.level_downsamples[level]
        factor = mpp / (min(self.mpp) * downsample)
        lw, lh = self.level_dimensions[level]
        out_w, out_h = max(1, math.floor(lw / factor)), max(1, math.floor(lh / factor))
        k = max(1, min(math.floor(factor), lw, lh))
        step = max(1, chunk // k) * k
        full_w, full_h = (lw // k) * k, (lh // k) * k
        failures: list[tuple[int, int, int, int, TileReadError]] = []  # (x, y, w, h, error) left white
        reduced = np.empty((full_h // k, full_w // k, 3), np.uint8)  # filled chunk by chunk, no copies

        def read_chunk(origin: tuple[int, int]) -> None:
            x, y = origin
            w, h = min(step, full_w - x), min(step, full_h - y)
            part = self._read_lenient(level, x, y, w, h, unit=k, failures=failures)
            reduced[y // k : y // k + part.shape[0], x // k : x // k + part.shape[1]] = part

        chunks = [(x, y) for y in range(0, full_h, step) for x in range(0, full_w, step)]
        threads = min(len(chunks), workers or available_cpus())
        if threads <= 1:
            for origin in chunks:
                read_chunk(origin)
        else:  # OpenSlide decodes without the GIL: chunks in parallel, each into its own part of `reduced`
            with ThreadPoolExecutor(threads, thread_name_prefix="thumbnail") as pool:
                for _ in pool.map(read_chunk, chunks):
                    pass
        rgb = resample(reduced, (out_w, out_h))
        unreadable = np.zeros((out_h, out_w), bool)
        if failures:
            if sum(f[2] * f[3] for f in failures) >= full_w * full_h:
                raise failures[0][4]
            sx, sy = out_w / full_w, out_h / full_h
            for x, y, w, h, _ in failures:
                unreadable[
                    math.floor(y * sy) : math.ceil((y + h) * sy), math.floor(x * sx) : math.ceil((x + w) * sx)
                ] = True
            log.warning(
                "%s: %d unreadable parts of level %d (%.1f%% of the slide) in the thumbnail",
                self.path, len(failures), level, 100 * unreadable.mean(),
            )  # fmt: skip
        return rgb, unreadable

    def _read_lenient(
        self,
        level: int,
        x: int,
        y: int,
        w: int,
        h: int,
        *,
        unit: int,
        failures: list[tuple[int, int, int, int, TileReadError]],
    ) -> np.ndarray:
        """``read_region`` at level pixels ``(x, y)`` reduced by ``unit``; on failure split in two (keeping
        sides multiples of ``unit``) down to ~256 px, and return white for what stays unreadable."""
        downsample = self.level_downsamples[level]
        try:
            return self.read_region(
                (round(x * downsample), round(y * downsample)), level, (w, h), reduce=unit
            )
        except TileReadError as exc:
            if len(failures) >= _MAX_THUMBNAIL_FAILURES:
                raise
            if max(w, h) <= max(256, 2 * unit):
                failures.append((x, y, w, h, exc))
                return np.full((h // unit, w // unit, 3), 255, np.uint8)
        if w >= h:
            half = max(unit, (w // 2) // unit * unit)
            left = self._read_lenient(level, x, y, half, h, unit=unit, failures=failures)
            right = self._read_lenient(level, x + half, y, w - half, h, unit=unit, failures=failures)
            return np.concatenate([left, right], axis=1)
        half = max(unit, (h // 2) // unit * unit)
        top = self._read_lenient(level, x, y, w, half, unit=unit, failures=failures)
        bottom = self._read_lenient(level, x, y + half, w, h - half, unit=unit, failures=failures)
        return np.concatenate([top, bottom], axis=0)

    def associated_image(self, name: str) -> np.ndarray:
        handle, generation = self._acquire()
        try:
            return _pil_to_rgb_on_white(handle.associated_images[name])
        finally:
            self._release(generation)

    # -- lifetime -------------------------------------------------------------------------------------
    def close(self) -> None:
        from .jpeg_tiles import release_jpeg_tiles

        with self._lock:
            handles = list(self._handles.values())
            self._handles.clear()
        for handle in handles:
            _close_quietly(handle)
        release_jpeg_tiles(self)  # the raw-JPEG tile reader's file descriptor (tiling's fast path)

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Slide({str(self.path)!r}, {self.format}, {self.dimensions[0]}x{self.dimensions[1]}, mpp={self._mpp})"


def available_cpus() -> int:
    """CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _close_quietly(handle: Any) -> None:
    try:
        handle.close()
    except Exception as exc:  # closing a latched handle can fail; it is gone either way
        log.debug("closing an OpenSlide handle failed: %s", exc)


def _pil_to_rgb_on_white(image: Any, kx: int = 1, ky: int = 1) -> np.ndarray:
    """An OpenSlide RGBA PIL image as contiguous ``(h, w, 3)`` uint8 RGB composited onto white, averaged
    over ``kx × ky`` blocks.

    Opaque images (nearly all tiles) are converted and reduced by PIL in C before they become numpy
    arrays: copying RGB out of an RGBA array with numpy is a strided copy that costs more than decoding
    the JPEG did, and PIL reduces RGB several times faster than RGBA.
    """
    if image.mode == "RGBA" and image.getchannel("A").getextrema()[0] == 255:
        rgb = image.convert("RGB")
        return np.asarray(rgb.reduce((kx, ky)) if kx > 1 or ky > 1 else rgb)
    rgba = np.asarray(image.convert("RGBA"))
    a = rgba[..., 3:4].astype(np.uint16)
    out = ((rgba[..., :3].astype(np.uint16) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    return box_reduce(out, ky, kx)


def open_slide(
    path: str | os.PathLike[str] | Slide, *, mpp: float | tuple[float, float] | None = None
) -> Slide:
    """Open a whole-slide image. ``mpp`` overrides missing or wrong resolution metadata (µm/px)."""
    if isinstance(path, Slide):
        if mpp is None:
            return path
        path = path.path
    return Slide(path, mpp=mpp)
