"""Tissue detection on a low-resolution view of a slide.

The mask is computed from a thumbnail at ``mpp`` µm/px (8 by default, so a 2 × 2 cm slide is a
2500 × 2500 image). A pixel is tissue when it is coloured (stained) after white-balancing against the slide's
own background, and is neither pen ink nor black:

- white or grey glass, whatever its tint, has almost no chroma once divided by the background colour;
- faint tissue keeps a little chroma: a hysteresis threshold keeps faint pixels connected to clearly
  stained ones (Otsu's threshold, kept within a band);
- blue, green and black pen marks: haematoxylin and eosin both leave red above green, ink does not
  (blue and green ink have green ≥ red), and black ink and scanner borders are dark and colourless;
- specks are removed and small holes (lumina, fat) are filled, scaled in µm² not pixels.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from .errors import SlideReadError, TileReadError
from .slide import Slide

log = logging.getLogger(__name__)

#: Chroma (HSV saturation after white balance) of faintly stained tissue, above glass and JPEG noise.
CHROMA_FAINT = 0.04
#: Band within which Otsu's threshold for clearly stained tissue is kept.
CHROMA_STRONG_RANGE = (0.08, 0.2)
#: Green above red by this much (0–255) marks blue or green ink, never H&E.
INK_GREEN_OVER_RED = 15
#: Black (scanner borders, black ink): brightest channel below DARK_MAX and channels within DARK_SPREAD
#: of each other. Dense, dark haematoxylin is just as dark but clearly coloured, so it stays tissue.
DARK_MAX = 60
DARK_SPREAD = 25
#: Mask pixels dropped around ink and black areas (their edges blend into colours that look stained).
INK_RIM_PX = 2
#: Tissue pieces smaller than this are specks (dust, debris); holes smaller than this are filled.
MIN_TISSUE_AREA_UM2 = 5_000.0
MAX_HOLE_AREA_UM2 = 50_000.0


@dataclass(frozen=True, slots=True, eq=False)
class TissueMask:
    """A boolean tissue mask of a whole slide, ``mask[y, x]``, at ``mpp`` µm per mask pixel.

    Mask pixel ``(y, x)`` covers the physical square ``[x, x + 1) · mpp`` by ``[y, y + 1) · mpp`` µm from
    the slide's top-left corner, so any grid at any resolution can be tested against it.
    """

    mask: np.ndarray
    mpp: float

    def __post_init__(self) -> None:
        if self.mask.ndim != 2 or self.mask.dtype != np.bool_:
            raise ValueError(f"mask must be a 2-D bool array, got {self.mask.dtype} {self.mask.shape}")
        if not (math.isfinite(self.mpp) and self.mpp > 0):
            raise ValueError(f"mask mpp must be positive, got {self.mpp}")

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.mask.shape[0]), int(self.mask.shape[1]))

    @property
    def tissue_fraction(self) -> float:
        """Fraction of the slide area that is tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def fraction(self, x0: float, y0: float, w: float, h: float, mpp: float) -> float:
        """Tissue fraction of the rectangle ``(x0, y0, w, h)`` given in pixels at ``mpp`` µm/px.

        The part of the rectangle outside the slide does not count (a tile hanging over the slide's edge
        is judged by what lies on the slide). Mask pixels count when their centre is inside the rectangle.
        """
        return float(self.fractions(np.array([x0]), np.array([y0]), w, h, mpp)[0])

    def fractions(self, x0: np.ndarray, y0: np.ndarray, w: float, h: float, mpp: float) -> np.ndarray:
        """Vectorised :meth:`fraction` for many rectangles of one size (e.g. every tile of a grid)."""
        s = mpp / self.mpp  # mask pixels per pixel at ``mpp``
        mh, mw = self.shape
        # Mask pixel j is counted when its centre j + 0.5 lies in [x0·s, (x0 + w)·s).
        cx0 = np.clip(np.ceil(np.asarray(x0, np.float64) * s - 0.5), 0, mw).astype(np.int64)
        cx1 = np.clip(np.ceil((np.asarray(x0, np.float64) + w) * s - 0.5), 0, mw).astype(np.int64)
        cy0 = np.clip(np.ceil(np.asarray(y0, np.float64) * s - 0.5), 0, mh).astype(np.int64)
        cy1 = np.clip(np.ceil((np.asarray(y0, np.float64) + h) * s - 0.5), 0, mh).astype(np.int64)
        integral = np.zeros((mh + 1, mw + 1), np.int64)
        integral[1:, 1:] = self.mask.cumsum(0, dtype=np.int64).cumsum(1)
        inside = integral[cy1, cx1] - integral[cy0, cx1] - integral[cy1, cx0] + integral[cy0, cx0]
        area = (cx1 - cx0) * (cy1 - cy0)
        # A rectangle smaller than one mask pixel may contain no centre: judge it by the pixel it lies in.
        small = area == 0
        if np.any(small):
            px = np.clip(np.floor((np.asarray(x0, np.float64) + w / 2) * s), 0, mw - 1).astype(np.int64)
            py = np.clip(np.floor((np.asarray(y0, np.float64) + h / 2) * s), 0, mh - 1).astype(np.int64)
            on_slide = (np.asarray(x0) * s < mw) & (np.asarray(y0) * s < mh)
            inside = np.where(small, self.mask[py, px] & on_slide, inside)
            area = np.where(small, 1, area)
        return inside / area


def detect_tissue(slide: Slide, *, mpp: float = 8.0) -> TissueMask:
    """Detect tissue on a thumbnail of ``slide`` at ``mpp`` µm/px (see the module docstring for how)."""
    if not (math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"tissue mask mpp must be positive, got {mpp}")
    try:
        thumbnail, unreadable = slide.read_thumbnail(mpp)
    except TileReadError as exc:
        raise SlideReadError(
            f"cannot read a low-resolution view for tissue detection (corrupt or truncated slide): {exc.message}",
            path=slide.path,
        ) from exc
    mask = tissue_mask_from_rgb(thumbnail, mpp=mpp)
    if unreadable.any():
        # Unknown is not background: keep unreadable parts so their tiles are tried, and reported if
        # they stay unreadable, instead of silently dropping tissue.
        mask |= unreadable
    log.info("%s: tissue covers %.1f%% of the slide", slide.path, 100 * float(mask.mean()))
    return TissueMask(mask=mask, mpp=mpp)


def tissue_mask_from_rgb(rgb: np.ndarray, *, mpp: float) -> np.ndarray:
    """The tissue mask of an ``(h, w, 3)`` uint8 RGB thumbnail at ``mpp`` µm/px."""
    from scipy import ndimage
    from skimage.filters import apply_hysteresis_threshold, threshold_otsu

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        raise ValueError(f"expected an (h, w, 3) RGB image, got shape {rgb.shape}")
    # Colour planes, (3, h, w): reductions over a trailing axis of 3 are several times slower in numpy.
    planes = np.moveaxis(rgb, 2, 0).astype(np.float32)
    brightest, darkest = _plane_max(planes), _plane_min(planes)
    dark = (brightest < DARK_MAX) & (brightest - darkest < DARK_SPREAD)
    ink = planes[1] - planes[0] > INK_GREEN_OVER_RED
    background = _background_colour(planes, dark)
    balanced = np.clip(planes / background[:, None, None], 0.0, 1.0)
    high = _plane_max(balanced)
    chroma = (high - _plane_min(balanced)) / np.maximum(high, 1e-3)
    # Pixels where ink or black meets glass are colour mixtures that look stained: drop a rim around them.
    excluded = ndimage.binary_dilation(ink | dark, structure=np.ones((3, 3), bool), iterations=INK_RIM_PX)
    candidates = chroma[~excluded]
    strong = CHROMA_STRONG_RANGE[0]
    if candidates.size > 16 and float(candidates.max()) > float(candidates.min()):
        strong = float(np.clip(threshold_otsu(candidates), *CHROMA_STRONG_RANGE))
    # Hysteresis: faintly stained pixels count when connected to clearly stained ones.
    mask = apply_hysteresis_threshold(np.where(excluded, 0.0, chroma), CHROMA_FAINT, strong)
    pixel_area = mpp * mpp
    mask = _drop_small_components(mask, MIN_TISSUE_AREA_UM2 / pixel_area)
    mask = ~_drop_small_components(~mask, MAX_HOLE_AREA_UM2 / pixel_area, keep_border=True)
    return np.ascontiguousarray(mask, dtype=bool)


def _drop_small_components(mask: np.ndarray, min_pixels: float, *, keep_border: bool = False) -> np.ndarray:
    """``mask`` without its 8-connected components smaller than ``min_pixels``.

    With ``keep_border`` components touching the image edge always stay (background around the tissue
    is not a hole, however small the visible part of it).
    """
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_pixels
    if keep_border:
        edges = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
        keep[np.unique(edges)] = True
    keep[0] = False
    return keep[labels]


def _plane_max(planes: np.ndarray) -> np.ndarray:
    return np.maximum(np.maximum(planes[0], planes[1]), planes[2])


def _plane_min(planes: np.ndarray) -> np.ndarray:
    return np.minimum(np.minimum(planes[0], planes[1]), planes[2])


def _background_colour(planes: np.ndarray, dark: np.ndarray) -> np.ndarray:
    """The glass colour: the median of the brightest quarter of pixels that are not black."""
    brightness = planes[0] + planes[1] + planes[2]
    usable = brightness[~dark]
    if usable.size == 0:
        return np.full(3, 255.0, np.float32)
    cut = np.percentile(usable, 75)
    background = np.median(planes[:, (brightness >= cut) & ~dark], axis=1)
    # Only trust a light background; tissue filling the whole field would make it pink.
    if background.min() < 180 or background.max() - background.min() > 40:
        return np.full(3, 255.0, np.float32)
    return np.maximum(background.astype(np.float32), 1.0)
