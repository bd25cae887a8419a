"""The result of running a model over a slide: one tumor probability per model patch, placed on the slide.

A :class:`Heatmap` is small (one pixel per 16-px patch at the model's mpp, e.g. 8 µm/px) and knows where it
sits in the slide's level-0 frame, so every export (PNG, QuPath GeoJSON, pyramidal TIFF, Zarr, HTML viewer,
summary.json) can be written from it without ever building a full-resolution heatmap.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import zarr

    from .export.viewer import SlideLevels
    from .slide import Slide

PathLike = str | os.PathLike[str]

#: Default side of the PNG overlay when a thumbnail is read from a slide.
PNG_MAX_SIDE = 2048
#: Default pixel budget of the slide image embedded in viewer.html (keeps the file ≲ 15 MB).
VIEWER_MAX_PIXELS = 48_000_000
#: The viewer never embeds the slide finer than this (µm/px): about a 10× objective.
VIEWER_FINEST_MPP = 1.0


def _pair(value: float | tuple[float, float] | list[float], what: str) -> tuple[float, float]:
    pair = (
        (float(value), float(value)) if isinstance(value, int | float) else (float(value[0]), float(value[1]))
    )
    if not all(math.isfinite(v) and v > 0 for v in pair):
        raise ValueError(f"{what} must be positive and finite, got {value!r}")
    return pair


def png_mpp_for(dimensions: tuple[int, int], mpp: tuple[float, float], max_side: int = PNG_MAX_SIDE) -> float:
    """µm/px of a thumbnail of a slide (level-0 ``dimensions``, ``mpp``) whose longer side is ``max_side``."""
    return max(max(dimensions[0] * mpp[0], dimensions[1] * mpp[1]) / max_side, min(mpp))


def viewer_mpp_for(
    dimensions: tuple[int, int], mpp: tuple[float, float], max_pixels: int = VIEWER_MAX_PIXELS
) -> float:
    """µm/px of the slide image to embed in the viewer: within ``max_pixels``, no finer than 1 µm/px.

    Depends only on the slide, so the image can be read while the heatmap is still being computed.
    """
    area_um2 = dimensions[0] * mpp[0] * dimensions[1] * mpp[1]
    return max(math.sqrt(area_um2 / max_pixels), VIEWER_FINEST_MPP, min(mpp))


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Heatmap:
    """Tumor probabilities at token resolution, placed in the slide's level-0 frame.

    Attributes:
        probabilities: ``(rows, cols)`` float32 in [0, 1]; NaN where nothing was computed (no tissue).
        mpp: µm per heatmap pixel (the model mpp × patch size, e.g. 0.5 × 16 = 8.0).
        slide_dimensions: level-0 ``(width, height)`` of the slide.
        slide_mpp: level-0 µm/px ``(x, y)`` of the slide.
        origin: level-0 ``(x, y)`` of the heatmap's top-left corner (usually ``(0, 0)``).
        tissue_mask: optional bool ``(h, w)`` tissue mask of the whole slide, top-left at level-0 ``(0, 0)``
            (from a :class:`~pathoflash.tissue.TissueMask` ``tm``: ``tissue_mask=tm.mask, tissue_mask_mpp=tm.mpp``).
        tissue_mask_mpp: µm per tissue-mask pixel; required with ``tissue_mask``.
        model_id: name/version/hash of the model that made the heatmap, for provenance.
        scale: level-0 pixels per heatmap pixel ``(x, y)`` when it is not exactly ``mpp / slide_mpp``
            (e.g. ``16 × TileGrid.scale`` for a grid snapped to a whole-number reduction).
    """

    probabilities: np.ndarray
    mpp: float
    slide_dimensions: tuple[int, int]
    slide_mpp: tuple[float, float]
    origin: tuple[float, float] = (0.0, 0.0)
    tissue_mask: np.ndarray | None = None
    tissue_mask_mpp: float | None = None
    model_id: str | None = None
    scale: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        probabilities = np.asarray(self.probabilities)
        if probabilities.ndim != 2 or probabilities.size == 0:
            raise ValueError(f"probabilities must be a non-empty 2-D array, got shape {probabilities.shape}")
        if probabilities.dtype != np.float32 or not probabilities.flags.c_contiguous:
            probabilities = np.ascontiguousarray(probabilities, dtype=np.float32)
        finite = probabilities[np.isfinite(probabilities)]
        if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
            raise ValueError(
                f"probabilities must lie in [0, 1] (NaN for no data), got range "
                f"[{finite.min():.4g}, {finite.max():.4g}]"
            )
        if np.isinf(probabilities).any():
            raise ValueError("probabilities contain ±inf; use NaN for pixels without a value")
        object.__setattr__(self, "probabilities", probabilities)
        mpp = float(self.mpp)
        if not (math.isfinite(mpp) and mpp > 0):
            raise ValueError(f"mpp must be positive, got {self.mpp!r}")
        object.__setattr__(self, "mpp", mpp)
        width, height = (int(v) for v in self.slide_dimensions)
        if width <= 0 or height <= 0:
            raise ValueError(
                f"slide_dimensions must be positive (width, height), got {self.slide_dimensions!r}"
            )
        object.__setattr__(self, "slide_dimensions", (width, height))
        object.__setattr__(self, "slide_mpp", _pair(self.slide_mpp, "slide_mpp"))
        ox, oy = (float(v) for v in self.origin)
        if not (math.isfinite(ox) and math.isfinite(oy)):
            raise ValueError(f"origin must be finite, got {self.origin!r}")
        object.__setattr__(self, "origin", (ox, oy))
        if self.scale is not None:
            object.__setattr__(self, "scale", _pair(self.scale, "scale"))
        if self.tissue_mask is not None:
            mask = np.asarray(self.tissue_mask, dtype=bool)
            if mask.ndim != 2:
                raise ValueError(f"tissue_mask must be 2-D, got shape {mask.shape}")
            if self.tissue_mask_mpp is None:
                raise ValueError("tissue_mask needs tissue_mask_mpp (µm per mask pixel)")
            object.__setattr__(self, "tissue_mask", mask)
            object.__setattr__(self, "tissue_mask_mpp", _pair(self.tissue_mask_mpp, "tissue_mask_mpp")[0])

    # -- geometry ---------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the heatmap."""
        rows, cols = self.probabilities.shape
        return int(rows), int(cols)

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Size of one heatmap pixel in level-0 pixels ``(x, y)``: ``scale``, or ``mpp / slide_mpp``."""
        if self.scale is not None:
            return self.scale
        return self.mpp / self.slide_mpp[0], self.mpp / self.slide_mpp[1]

    @property
    def pixel_area_mm2(self) -> float:
        return (self.mpp / 1000.0) ** 2

    def level0_bounds(self, row: int, col: int) -> tuple[float, float, float, float]:
        """Level-0 ``(x0, y0, x1, y1)`` of heatmap pixel ``(row, col)``."""
        sx, sy = self.pixel_size
        ox, oy = self.origin
        return ox + col * sx, oy + row * sy, ox + (col + 1) * sx, oy + (row + 1) * sy

    def tissue(self) -> np.ndarray:
        """Bool ``(rows, cols)``: pixels with a probability that lie on tissue (if a tissue mask is known)."""
        computed = np.isfinite(self.probabilities)
        if self.tissue_mask is None:
            return computed
        from .export.sampling import source_indices

        assert self.tissue_mask_mpp is not None
        mask = self.tissue_mask
        rows, cols = self.shape
        sx, sy = self.pixel_size
        mask_px = (self.tissue_mask_mpp / self.slide_mpp[0], self.tissue_mask_mpp / self.slide_mpp[1])
        # Heatmap pixel centres, shifted by the heatmap origin, looked up in the mask (nearest).
        mr = source_indices(0, rows, sy, mask_px[1], -self.origin[1], mask.shape[0])
        mc = source_indices(0, cols, sx, mask_px[0], -self.origin[0], mask.shape[1])
        on_mask = mask[np.clip(mr, 0, None)[:, None], np.clip(mc, 0, None)[None, :]]
        on_mask &= (mr >= 0)[:, None] & (mc >= 0)[None, :]
        return computed & on_mask

    # -- suggested resolutions ----------------------------------------------------------------------------
    def extent_um(self) -> tuple[float, float]:
        """Physical ``(width, height)`` of the slide in µm."""
        return self.slide_dimensions[0] * self.slide_mpp[0], self.slide_dimensions[1] * self.slide_mpp[1]

    def png_mpp(self, max_side: int = PNG_MAX_SIDE) -> float:
        """µm/px of a whole-slide thumbnail whose longer side is ``max_side`` (never finer than the slide)."""
        return png_mpp_for(self.slide_dimensions, self.slide_mpp, max_side)

    def viewer_mpp(self, max_pixels: int = VIEWER_MAX_PIXELS) -> float:
        """µm/px of the finest slide image to embed in the viewer: within ``max_pixels``, no finer than 1 µm/px."""
        return viewer_mpp_for(self.slide_dimensions, self.slide_mpp, max_pixels)

    # -- exports --------------------------------------------------------------------------------------------
    def to_png(
        self,
        path: PathLike,
        thumbnail: np.ndarray | Slide | None = None,
        *,
        thumbnail_mpp: float | tuple[float, float] | None = None,
        opacity: float = 0.5,
    ) -> Path:
        """Write the slide thumbnail with the heatmap blended in, a colour bar and a scale bar (PNG).

        ``thumbnail`` is an ``(h, w, 3)`` uint8 RGB image of the whole slide at ``thumbnail_mpp`` µm/px
        (inferred from its size when omitted), or a :class:`~pathoflash.slide.Slide` to read one from, or
        ``None`` for the heatmap alone on white.
        """
        from .export.png import write_png

        image, image_mpp = self._thumbnail(thumbnail, thumbnail_mpp, self.png_mpp())
        return write_png(self, path, image, thumbnail_mpp=image_mpp, opacity=opacity)

    def to_geojson(
        self, path: PathLike, *, threshold: float = 0.5, tiles: bool = False, simplify: float = 0.25
    ) -> Path:
        """Write tumor regions (p ≥ ``threshold``) as QuPath annotations, optionally per-pixel tile objects.

        ``simplify`` is the Douglas–Peucker tolerance in heatmap pixels. Coordinates are level-0 pixels.
        """
        from .export.geojson import write_geojson

        return write_geojson(self, path, threshold=threshold, tiles=tiles, simplify=simplify)

    def to_tiff(
        self,
        path: PathLike,
        *,
        base_mpp: float | None = None,
        tile_size: int = 512,
        workers: int | None = None,
    ) -> Path:
        """Write the colour-mapped heatmap as a tiled pyramidal TIFF in the slide's frame (OpenSlide opens it).

        By default level 0 has the slide's level-0 size, so coordinates are interchangeable with the slide;
        ``base_mpp`` writes a coarser base covering the same physical extent.
        """
        from .export.tiff import write_tiff

        return write_tiff(self, path, base_mpp=base_mpp, tile_size=tile_size, workers=workers)

    def to_zarr(self, store: PathLike | zarr.Group, *, name: str = "heatmap") -> zarr.Array:
        """Store the probabilities (and tissue mask, if any) with their geometry as attrs in a Zarr v3 group."""
        from .export.zarr_array import write_zarr

        return write_zarr(self, store, name=name)

    @classmethod
    def from_zarr(cls, store: PathLike | zarr.Group, *, name: str = "heatmap") -> Heatmap:
        """Read a heatmap written by :meth:`to_zarr`."""
        from .export.zarr_array import read_zarr

        return read_zarr(store, name=name)

    def to_html(
        self,
        path: PathLike,
        thumbnail: np.ndarray | Slide | SlideLevels,
        *,
        thumbnail_mpp: float | tuple[float, float] | None = None,
        threshold: float = 0.5,
        opacity: float = 0.5,
        title: str | None = None,
    ) -> Path:
        """Write a self-contained pan/zoom viewer (one HTML file, works from ``file://`` offline).

        ``thumbnail``: the slide (read at :meth:`viewer_mpp`), its image at ``thumbnail_mpp``, or the
        :class:`~pathoflash.export.viewer.SlideLevels` already encoded from one.
        """
        from .export.viewer import SlideLevels, write_viewer

        if isinstance(thumbnail, SlideLevels):
            return write_viewer(
                self,
                path,
                thumbnail,
                thumbnail_mpp=thumbnail.mpp,
                threshold=threshold,
                opacity=opacity,
                title=title,
            )
        image, image_mpp = self._thumbnail(thumbnail, thumbnail_mpp, self.viewer_mpp())
        assert image is not None
        return write_viewer(
            self, path, image, thumbnail_mpp=image_mpp, threshold=threshold, opacity=opacity, title=title
        )

    def summary(self, *, threshold: float = 0.5, unreadable_tiles: int = 0) -> dict[str, Any]:
        """Tumor area (mm²), tumor fraction of tissue, max probability … as a JSON-ready dict."""
        from .export.summary import summarize

        return summarize(self, threshold=threshold, unreadable_tiles=unreadable_tiles)

    def to_summary(
        self, path: PathLike, *, threshold: float = 0.5, unreadable_tiles: int = 0
    ) -> dict[str, Any]:
        """Write :meth:`summary` as JSON to ``path`` (atomically) and return it."""
        from .export.summary import write_summary

        summary = self.summary(threshold=threshold, unreadable_tiles=unreadable_tiles)
        write_summary(summary, path)
        return summary

    # -- helpers --------------------------------------------------------------------------------------------
    def _thumbnail(
        self,
        thumbnail: np.ndarray | Slide | None,
        thumbnail_mpp: float | tuple[float, float] | None,
        default_mpp: float,
    ) -> tuple[np.ndarray | None, tuple[float, float] | None]:
        if thumbnail is None:
            return None, None
        if hasattr(thumbnail, "thumbnail_at_mpp"):
            mpp = default_mpp if thumbnail_mpp is None else _pair(thumbnail_mpp, "thumbnail_mpp")[0]
            image = thumbnail.thumbnail_at_mpp(mpp)
            return image, (mpp, mpp)
        image = np.asarray(thumbnail)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"thumbnail must be (h, w, 3) uint8 RGB, got {image.shape} {image.dtype}")
        if thumbnail_mpp is None:
            w_um, h_um = self.extent_um()
            return image, (w_um / image.shape[1], h_um / image.shape[0])
        return image, _pair(thumbnail_mpp, "thumbnail_mpp")

    def __repr__(self) -> str:
        rows, cols = self.shape
        return (
            f"Heatmap({rows}x{cols} at {self.mpp:g} µm/px, slide {self.slide_dimensions[0]}x"
            f"{self.slide_dimensions[1]} at {self.slide_mpp[0]:g} µm/px, model={self.model_id!r})"
        )


__all__ = ["Heatmap"]
