"""Training targets of a slide, and balanced sampling of training regions from them.

Targets live at the model's resolution (``mpp``) on a grid ``k`` times finer than the patch grid (``k = 4``:
4-px cells for 16-px patches), so regions can be shifted by less than a patch and their per-patch targets
are still exact averages:

- ``tumor``: cell centre inside a ``Tumor`` annotation polygon;
- ``tissue``: cell centre inside the tissue (the ``tissue`` polygons that synthetic ground truth carries,
  else PathoFlash's tissue detection on the slide).

A patch's soft label is its tumor fraction; its loss weight follows its tissue fraction.

Regions are drawn class-balanced: half (``positive_fraction``) from positions whose region holds tumor, the
rest from tissue without tumor, each position then shifted at random by up to half the position stride. The
draws of an epoch depend only on ``(seed, epoch)``.

This module does not import torch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError
from .slides import AnnotatedSlide

if TYPE_CHECKING:  # pragma: no cover
    from ..slide import Slide

log = logging.getLogger(__name__)

SUBCELLS = 4
"""Target cells per patch side."""
MIN_TISSUE = 0.05
"""Least tissue fraction of a region worth training on."""
MIN_TUMOR_PATCHES = 0.5
"""Tumor (in patches' worth) that makes a region a positive one."""
COLOUR_GAIN = 0.10
"""Colour augmentation: each channel is scaled by 1 ± this at most …"""
COLOUR_OFFSET = 0.04
"""… and shifted by ± this at most (on the 0–1 scale)."""


@dataclass(frozen=True, slots=True, eq=False)
class SlideLabels:
    """Targets of one slide at ``mpp``: boolean ``tumor`` and ``tissue`` masks of (rows, cols) cells of
    ``cell`` px each; ``width`` × ``height`` is the slide's size in px at ``mpp``."""

    width: int
    height: int
    mpp: float
    cell: int
    tumor: NDArray[np.bool_]
    tissue: NDArray[np.bool_]

    @property
    def tumor_fraction(self) -> float:
        """Share of the tissue that is tumor."""
        tissue = int(self.tissue.sum())
        return float((self.tumor & self.tissue).sum() / tissue) if tissue else 0.0

    def patch_targets(self, x: int, y: int, size: int, patch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(tumor fraction, tissue fraction) of each patch of the ``size``-px region at ``(x, y)`` px:
        two (size/p, size/p) float32 arrays; cells beyond the slide count as glass."""
        if x % self.cell or y % self.cell:
            raise ValueError(f"region origin ({x}, {y}) is not on the {self.cell}-px target grid")
        k = patch_size // self.cell
        n = size // patch_size
        out = []
        for mask in (self.tumor, self.tissue):
            cells = _window(mask, y // self.cell, x // self.cell, n * k)
            out.append(cells.reshape(n, k, n, k).mean(axis=(1, 3), dtype=np.float32))
        return out[0], out[1]


def _window(mask: NDArray[np.bool_], row: int, col: int, size: int) -> NDArray[np.bool_]:
    """``mask[row:row+size, col:col+size]`` padded with False beyond the mask."""
    window = mask[row : row + size, col : col + size]
    if window.shape == (size, size):
        return window
    padded = np.zeros((size, size), dtype=bool)
    padded[: window.shape[0], : window.shape[1]] = window
    return padded


def slide_size_at(slide_dimensions: tuple[int, int], slide_mpp: float, mpp: float) -> tuple[int, int]:
    """A slide's (width, height) in px at ``mpp`` (at least 1 px)."""
    scale = slide_mpp / mpp
    return max(1, round(slide_dimensions[0] * scale)), max(1, round(slide_dimensions[1] * scale))


def slide_labels(slide: AnnotatedSlide, *, mpp: float, patch_size: int) -> SlideLabels:
    """Rasterise the annotations (and the tissue) of ``slide`` at ``mpp`` on cells of ``patch_size / 4`` px."""
    from ..sample_data.truth import TruthFileError, rasterize_polygons, read_tissue, read_truth
    from ..slide import open_slide

    if patch_size % SUBCELLS:
        raise ConfigError(f"patch size {patch_size} must be a multiple of {SUBCELLS} for training targets")
    cell = patch_size // SUBCELLS
    with open_slide(slide.path, mpp=slide.slide_mpp) as opened:
        slide_mpp = float(opened.mpp[0])
        width, height = slide_size_at(opened.dimensions, slide_mpp, mpp)
        shape = (math.ceil(height / cell), math.ceil(width / cell))
        downsample = cell * mpp / slide_mpp  # level-0 px per cell
        tumor = rasterize_polygons(read_truth(slide.annotations), shape, downsample)
        try:
            tissue = rasterize_polygons(read_tissue(slide.annotations), shape, downsample)
        except TruthFileError:  # a QuPath export: no tissue outline in the file, so detect it
            tissue = _detected_tissue(opened, shape, cell * mpp)
    labels = SlideLabels(width, height, mpp, cell, tumor, tissue)
    log.info(
        "%s: %d×%d px at %g µm/px, tissue %.1f%%, tumor %.1f%% of tissue",
        slide.name,
        width,
        height,
        mpp,
        100 * float(tissue.mean()),
        100 * labels.tumor_fraction,
    )
    return labels


def _detected_tissue(opened: Slide, shape: tuple[int, int], cell_um: float) -> NDArray[np.bool_]:
    from ..tissue import detect_tissue

    found = detect_tissue(opened)
    rows, cols = shape
    xs, ys = np.meshgrid(np.arange(cols, dtype=np.float64), np.arange(rows, dtype=np.float64))
    fractions = found.fractions(xs.ravel(), ys.ravel(), 1.0, 1.0, cell_um)
    return np.asarray(fractions >= 0.5).reshape(rows, cols)


@dataclass(frozen=True, slots=True)
class RegionRef:
    """One training region: ``size`` px at ``(x, y)`` (px at the model's mpp) of slide ``slide`` (an index),
    turned ``rotation`` quarter turns and mirrored when ``flip``; colour ``gain`` and ``offset`` per RGB channel
    apply to the image on the 0–1 scale before normalisation."""

    slide: int
    x: int
    y: int
    size: int
    rotation: int = 0
    flip: bool = False
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    positive: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class _Candidates:
    slide: NDArray[np.int64]
    row: NDArray[np.int64]  # in cells
    col: NDArray[np.int64]


class RegionSampler:
    """Class-balanced region draws from ``labels`` (one :class:`SlideLabels` per slide).

    Candidate positions lie on a grid of ``stride`` px (default: a quarter region); a candidate is
    positive when its region holds at least half a patch of tumor and negative when it holds none but at
    least ``MIN_TISSUE`` tissue.
    """

    def __init__(
        self,
        labels: Sequence[SlideLabels],
        *,
        region: int,
        patch_size: int,
        seed: int,
        positive_fraction: float = 0.5,
        stride: int | None = None,
    ) -> None:
        if not labels:
            raise ConfigError("no training slides")
        if region % patch_size:
            raise ConfigError(f"region {region} px is not a multiple of the patch size {patch_size}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ConfigError(f"positive fraction must be within [0, 1], got {positive_fraction}")
        self.labels = tuple(labels)
        self.region = region
        self.patch_size = patch_size
        self.seed = seed
        self.positive_fraction = positive_fraction
        self.cell = labels[0].cell
        if any(lab.cell != self.cell for lab in labels):
            raise ConfigError("all slides' targets must use the same cell size")
        self.stride_cells = max(1, (stride or region // 4) // self.cell)
        self.positives, self.negatives = self._candidates()
        if len(self.positives.slide) == 0:
            raise ConfigError(
                "no region of the training slides holds tumor: every training set needs 'Tumor' annotations"
            )
        if len(self.negatives.slide) == 0:
            log.warning("every region holds tumor: training without tumor-free regions")
        log.info(
            "region sampler: %d positive and %d negative positions on %d slide(s)",
            len(self.positives.slide),
            len(self.negatives.slide),
            len(self.labels),
        )

    def _candidates(self) -> tuple[_Candidates, _Candidates]:
        n_cells = self.region // self.cell
        min_tissue = MIN_TISSUE * n_cells * n_cells
        min_tumor = MIN_TUMOR_PATCHES * (self.patch_size // self.cell) ** 2
        pos: list[tuple[int, int, int]] = []
        neg: list[tuple[int, int, int]] = []
        for index, lab in enumerate(self.labels):
            tumor_sum = _window_sums(lab.tumor & lab.tissue, n_cells)
            tissue_sum = _window_sums(lab.tissue, n_cells)
            rows = _positions(lab.tumor.shape[0], n_cells, self.stride_cells)
            cols = _positions(lab.tumor.shape[1], n_cells, self.stride_cells)
            for r in rows:
                for c in cols:
                    if tissue_sum[r, c] < min_tissue:
                        continue
                    (pos if tumor_sum[r, c] >= min_tumor else neg).append((index, r, c))
        return _as_candidates(pos), _as_candidates(neg)

    def epoch(self, epoch: int, count: int) -> list[RegionRef]:
        """The ``count`` regions of epoch ``epoch``, in training order (same seed and epoch → same list)."""
        rng = np.random.default_rng([self.seed, epoch, 0x7E61])
        refs = []
        for _ in range(count):
            positive = len(self.negatives.slide) == 0 or rng.random() < self.positive_fraction
            pool = self.positives if positive else self.negatives
            pick = int(rng.integers(len(pool.slide)))
            slide = int(pool.slide[pick])
            lab = self.labels[slide]
            half = self.stride_cells // 2
            row = int(pool.row[pick]) + int(rng.integers(-half, half + 1))
            col = int(pool.col[pick]) + int(rng.integers(-half, half + 1))
            n_cells = self.region // self.cell
            row = min(max(row, 0), max(lab.tumor.shape[0] - n_cells, 0))
            col = min(max(col, 0), max(lab.tumor.shape[1] - n_cells, 0))
            gain = 1.0 + rng.uniform(-COLOUR_GAIN, COLOUR_GAIN, 3)
            offset = rng.uniform(-COLOUR_OFFSET, COLOUR_OFFSET, 3)
            refs.append(
                RegionRef(
                    slide=slide,
                    x=col * self.cell,
                    y=row * self.cell,
                    size=self.region,
                    rotation=int(rng.integers(4)),
                    flip=bool(rng.random() < 0.5),
                    gain=(float(gain[0]), float(gain[1]), float(gain[2])),
                    offset=(float(offset[0]), float(offset[1]), float(offset[2])),
                    positive=positive,
                )
            )
        return refs


def _window_sums(mask: NDArray[np.bool_], size: int) -> NDArray[np.int64]:
    """``out[r, c]`` = number of True cells in ``mask[r:r+size, c:c+size]`` (windows may pass the edge)."""
    rows, cols = mask.shape
    integral = np.zeros((rows + 1, cols + 1), dtype=np.int64)
    integral[1:, 1:] = mask.cumsum(0, dtype=np.int64).cumsum(1)
    r0, c0 = np.arange(rows)[:, None], np.arange(cols)[None, :]
    r1, c1 = np.minimum(r0 + size, rows), np.minimum(c0 + size, cols)
    return integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]


def _positions(length: int, size: int, stride: int) -> list[int]:
    """Window starts along an axis of ``length`` cells: every ``stride``, plus the last full window."""
    last = max(length - size, 0)
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def _as_candidates(items: list[tuple[int, int, int]]) -> _Candidates:
    array = np.asarray(items, dtype=np.int64).reshape(-1, 3)
    return _Candidates(array[:, 0], array[:, 1], array[:, 2])


__all__ = [
    "COLOUR_GAIN",
    "COLOUR_OFFSET",
    "MIN_TISSUE",
    "SUBCELLS",
    "RegionRef",
    "RegionSampler",
    "SlideLabels",
    "slide_labels",
    "slide_size_at",
]
