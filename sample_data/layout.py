"""The slide-level plan of a synthetic slide, drawn from its seed before any pixel is rendered.

A :class:`SlideLayout` holds everything larger than a tile: the tissue pieces, the tumor regions inside some
of them (these polygons *are* the ground truth), folds, pen strokes and the stain of this slide. Everything
smaller (nuclei, glands, fibres) is generated per tile by the renderer from hashes of absolute positions.
All coordinates are level-0 pixels, x to the right and y down.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from skimage import measure

from .geometry import EdgeSet, Ring, radial_blob, ring_area, smooth_curve

log = logging.getLogger(__name__)

F64 = NDArray[np.float64]

# Reference optical densities (RGB, per unit concentration), before the per-slide jitter.
_HEMATOXYLIN = (0.55, 0.76, 0.36)
_EOSIN = (0.12, 0.86, 0.48)
_INKS = {
    "blue": (1.45, 0.84, 0.22),
    "green": (1.25, 0.42, 0.85),
    "black": (1.55, 1.55, 1.40),
}


@dataclass(frozen=True, slots=True, eq=False)
class Stain:
    """Per-slide stain: unit OD vectors of hematoxylin and eosin, their strengths, and the glass colour."""

    hematoxylin: F64  # (3,) unit vector
    eosin: F64  # (3,) unit vector
    hematoxylin_scale: float
    eosin_scale: float
    background_od: F64  # (3,) optical density of bare glass


@dataclass(frozen=True, slots=True, eq=False)
class PenStroke:
    """A marker stroke on the glass: centre line, width and ink."""

    line: F64  # (M, 2) centre line
    width: float  # px
    ink_od: F64  # (3,)
    bbox: tuple[float, float, float, float]


@dataclass(frozen=True, slots=True, eq=False)
class SlideLayout:
    """Slide-level geometry and stain of one synthetic slide."""

    width: int
    height: int
    mpp: float
    seed: int
    pieces: tuple[Ring, ...]
    tumors: tuple[Ring, ...]
    folds: tuple[Ring, ...]
    pens: tuple[PenStroke, ...]
    stain: Stain
    tissue_edges: EdgeSet
    tumor_edges: EdgeSet
    fold_edges: EdgeSet
    piece_boxes: tuple[tuple[float, float, float, float], ...]  # x0, y0, x1, y1 of each piece

    @property
    def tissue_area(self) -> float:
        return sum(ring_area(r) for r in self.pieces)

    @property
    def tumor_area(self) -> float:
        return sum(ring_area(r) for r in self.tumors)

    def touches_tissue(self, x0: float, y0: float, x1: float, y1: float) -> bool:
        """Whether the box ``[x0, x1) x [y0, y1)`` meets the bounding box of some tissue piece."""
        return any(_boxes_meet(box, x0, y0, x1, y1) for box in self.piece_boxes)

    def touches(self, x0: float, y0: float, x1: float, y1: float) -> bool:
        """Whether anything but bare glass may be drawn in the box ``[x0, x1) x [y0, y1)``."""
        return self.touches_tissue(x0, y0, x1, y1) or any(
            _boxes_meet(p.bbox, x0, y0, x1, y1) for p in self.pens
        )


def _boxes_meet(box: tuple[float, float, float, float], x0: float, y0: float, x1: float, y1: float) -> bool:
    bx0, by0, bx1, by1 = box
    return x0 <= bx1 and bx0 < x1 and y0 <= by1 and by0 < y1


def default_tissue_fraction(width: int, height: int) -> float:
    """Fraction of the slide covered by tissue when none is asked for.

    Small slides are mostly tissue; beyond ~64 Mpx the tissue area grows only with the slide's side, so a
    gigapixel slide is mostly glass (as a biopsy on a large scan is) and renders quickly.
    """
    area = float(width) * float(height)
    return float(np.clip(0.45 * math.sqrt(64e6 / area), 0.03, 0.45)) if area > 64e6 else 0.45


def make_layout(
    seed: int,
    width: int,
    height: int,
    mpp: float,
    *,
    tissue_fraction: float,
    tumor: bool = True,
    folds: bool = True,
    pen_marks: bool = True,
) -> SlideLayout:
    """Draw the slide-level layout of seed ``seed`` for a ``width`` x ``height`` slide at ``mpp`` µm/px."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, seed >> 32, 0x1A7])
    pieces = _tissue_pieces(rng, width, height, mpp, tissue_fraction)
    tissue_edges = EdgeSet.from_rings(pieces)
    tumors = _tumor_regions(rng, pieces, mpp) if tumor else []
    fold_rings = _folds(rng, pieces, mpp) if folds else []
    pens = _pen_strokes(rng, pieces, tumors, width, height, mpp) if pen_marks else []
    stain = _stain(rng)
    layout = SlideLayout(
        width=width,
        height=height,
        mpp=mpp,
        seed=seed,
        pieces=tuple(pieces),
        tumors=tuple(tumors),
        folds=tuple(fold_rings),
        pens=tuple(pens),
        stain=stain,
        tissue_edges=tissue_edges,
        tumor_edges=EdgeSet.from_rings(tumors),
        fold_edges=EdgeSet.from_rings(fold_rings),
        piece_boxes=tuple(
            (float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max()))
            for p in pieces
        ),
    )
    log.debug(
        "layout seed=%d: %d pieces, %d tumor regions (%.1f%% of tissue), %d folds, %d pen strokes",
        seed,
        len(pieces),
        len(tumors),
        100.0 * layout.tumor_area / max(layout.tissue_area, 1.0),
        len(fold_rings),
        len(pens),
    )
    return layout


def _n_vertices(radius_px: float, mpp: float) -> int:
    """Enough vertices for ~10 µm edges, bounded."""
    perimeter_um = 2.0 * math.pi * radius_px * mpp * 1.4
    return int(np.clip(perimeter_um / 10.0, 96, 6000))


def _round(ring: F64) -> Ring:
    return np.round(ring, 2)


def _fit_into(ring: F64, box: tuple[float, float, float, float]) -> F64:
    """Centre ``ring``'s bounding box in ``box`` and shrink it (never grow) until it fits."""
    x0, y0, x1, y1 = box
    lo, hi = ring.min(axis=0), ring.max(axis=0)
    mid = (lo + hi) / 2
    scale = min(1.0, (x1 - x0) / max(hi[0] - lo[0], 1e-9), (y1 - y0) / max(hi[1] - lo[1], 1e-9))
    return np.asarray((ring - mid) * scale + np.array([(x0 + x1) / 2, (y0 + y1) / 2]), dtype=np.float64)


def _tissue_pieces(
    rng: np.random.Generator, width: int, height: int, mpp: float, fraction: float
) -> list[Ring]:
    """A few separate, irregular pieces of tissue, one per cell of a coarse grid over the slide."""
    if min(width, height) < 1536:
        n = 1
    elif max(width, height) < 12_000:
        n = int(rng.integers(2, 4))
    else:
        n = int(rng.integers(2, 6))
    cols, rows = min(
        ((c, math.ceil(n / c)) for c in range(1, n + 1)),
        key=lambda cr: (cr[0] * cr[1] - n) + 0.5 * abs(math.log((width / cr[0]) / (height / cr[1]))),
    )
    cells = [(c, r) for r in range(rows) for c in range(cols)]
    chosen = [cells[i] for i in rng.permutation(len(cells))[:n]]
    cell_w, cell_h = width / cols, height / rows
    shares = rng.uniform(0.7, 1.3, size=n)
    shares = shares / shares.sum() * n / (cols * rows)  # a share of its cell's area
    pieces: list[Ring] = []
    for (c, r), share in zip(chosen, shares, strict=True):
        jitter_x, jitter_y = rng.uniform(-0.03, 0.03, size=2)
        box = (
            (c + 0.05 + jitter_x) * cell_w,
            (r + 0.05 + jitter_y) * cell_h,
            (c + 0.95 + jitter_x) * cell_w,
            (r + 0.95 + jitter_y) * cell_h,
        )
        radius = math.sqrt(fraction * width * height * share / math.pi)
        aspect = max(cell_w, cell_h) / min(cell_w, cell_h)
        elongation = float(np.clip(aspect * rng.uniform(0.75, 1.15), 1.0, 3.0))
        along = 0.0 if cell_w >= cell_h else math.pi / 2
        ring = radial_blob(
            rng,
            (0.0, 0.0),
            radius,
            n_vertices=_n_vertices(radius * math.sqrt(elongation), mpp),
            roughness=0.3,
            n_harmonics=96,
            decay=1.5,
            elongation=elongation,
            angle=along + float(rng.normal(0, 0.25)),
        )
        pieces.append(_round(_fit_into(ring, box)))
    return pieces


def _tumor_regions(rng: np.random.Generator, pieces: list[Ring], mpp: float) -> list[Ring]:
    """A few irregular tumor regions inside some (not all) pieces, 15-35% of the tissue in total."""
    n = len(pieces)
    n_with = 1 if n == 1 else int(rng.integers(1, n))
    order = rng.permutation(n)[:n_with]
    areas = np.array([ring_area(p) for p in pieces])
    budget = float(rng.uniform(0.15, 0.35)) * float(areas.sum())
    chosen_area = float(areas[order].sum())
    tumors: list[Ring] = []
    for idx in order:
        piece_budget = min(budget * areas[idx] / chosen_area, 0.7 * areas[idx])
        n_blobs = int(rng.integers(1, 3))
        found = _tumors_in_piece(rng, pieces[idx], piece_budget * rng.dirichlet([3.0] * n_blobs), mpp)
        if found and sum(ring_area(t) for t in found) < 0.5 * piece_budget:  # clipped hard: try once more
            found = _tumors_in_piece(rng, pieces[idx], np.array([piece_budget]), mpp)
        tumors += found
    return tumors


def _tumors_in_piece(rng: np.random.Generator, piece: Ring, targets: F64, mpp: float) -> list[Ring]:
    """Irregular blobs clipped to the piece (less a margin), traced as polygons from a coarse raster."""
    x_lo, y_lo = piece.min(axis=0)
    x_hi, y_hi = piece.max(axis=0)
    extent = max(x_hi - x_lo, y_hi - y_lo)
    step = min(max(3.0 / mpp, extent / 1200.0), extent / 60.0)
    margin = min(30.0 / mpp, 0.05 * extent)  # tumor keeps off the piece's edge
    spacing = min(40.0 / mpp, 0.06 * extent)  # and off other tumors
    cols = math.ceil((x_hi - x_lo) / step) + 2
    rows = math.ceil((y_hi - y_lo) / step) + 2
    gx0, gy0 = x_lo - step, y_lo - step
    inside = EdgeSet.from_rings([piece]).rasterize(gx0, gy0, cols, rows, step)
    depth = ndimage.distance_transform_edt(inside) * step  # px from the piece's edge
    free = depth > margin
    rings: list[Ring] = []
    for target in targets:
        if not free.any():
            break
        candidates = np.argwhere(free & (depth >= np.quantile(depth[free], 0.5)))
        r, c = candidates[int(rng.integers(len(candidates)))]
        centre = (gx0 + (c + 0.5) * step, gy0 + (r + 0.5) * step)
        base = radial_blob(
            rng,
            (0.0, 0.0),
            1.0,
            n_vertices=256,
            roughness=0.45,
            n_harmonics=24,
            decay=1.1,
            elongation=float(rng.uniform(1.0, 2.2)),
            angle=float(rng.uniform(0, math.pi)),
        )
        radius = math.sqrt(target / math.pi)
        region = np.zeros_like(free)
        for _ in range(6):  # grow or shrink until the clipped blob has the wanted area
            blob = np.stack([centre[0] + base[:, 0] * radius, centre[1] + base[:, 1] * radius], axis=1)
            region = EdgeSet.from_rings([blob]).rasterize(gx0, gy0, cols, rows, step) & free
            labels, n_labels = ndimage.label(region)
            if n_labels > 1:  # keep the piece that holds the centre's side
                sizes = ndimage.sum_labels(region, labels, index=np.arange(1, n_labels + 1))
                region = labels == 1 + int(np.argmax(sizes))
            region = ndimage.binary_fill_holes(region)
            area = float(region.sum()) * step * step
            if area <= 0 or abs(area / target - 1.0) < 0.08:
                break
            radius *= float(np.clip(math.sqrt(target / area), 0.6, 1.6))
        if region.sum() < 16:
            continue
        contours = measure.find_contours(np.pad(region, 1).astype(np.float32), 0.5)
        ring_rc = max(contours, key=len)[:-1] - 1.0
        ring = np.stack([gx0 + (ring_rc[:, 1] + 0.5) * step, gy0 + (ring_rc[:, 0] + 0.5) * step], axis=1)
        smooth = _chaikin(_chaikin(ring))
        closed = measure.approximate_polygon(np.concatenate([smooth, smooth[:1]]), tolerance=0.5)
        rings.append(_round(closed[:-1]))
        # the next region keeps its distance from this one
        free &= ndimage.distance_transform_edt(~region) * step > spacing
    return rings


def _chaikin(ring: F64) -> F64:
    """One round of corner cutting: softens the marching-squares facets of a traced outline."""
    nxt = np.roll(ring, -1, axis=0)
    return np.stack([0.75 * ring + 0.25 * nxt, 0.25 * ring + 0.75 * nxt], axis=1).reshape(-1, 2)


def _folds(rng: np.random.Generator, pieces: list[Ring], mpp: float) -> list[Ring]:
    """A band of doubled-over section across one piece (two on slides with many pieces)."""
    n_folds = 1 if len(pieces) < 4 else 2
    folds: list[Ring] = []
    for idx in rng.permutation(len(pieces))[:n_folds]:
        piece = pieces[idx]
        centre = piece.mean(axis=0)
        extent = float(np.linalg.norm(piece.max(axis=0) - piece.min(axis=0)))
        length = extent * rng.uniform(0.35, 0.7)
        theta = rng.uniform(0, math.pi)
        direction = np.array([math.cos(theta), math.sin(theta)])
        normal = np.array([-direction[1], direction[0]])
        offset = centre + normal * rng.uniform(-0.15, 0.15) * extent
        t = np.linspace(-0.5, 0.5, 5)
        control = offset + np.outer(t * length, direction) + np.outer(rng.normal(0, 0.04, 5) * length, normal)
        line = smooth_curve(control, 160)
        tangent = np.gradient(line, axis=0)
        tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
        side = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
        s = np.linspace(0.0, 1.0, len(line))
        half_width = rng.uniform(25.0, 70.0) / mpp * np.sin(np.pi * s) ** 0.5
        ring = np.concatenate([line + side * half_width[:, None], (line - side * half_width[:, None])[::-1]])
        folds.append(_round(ring))
    return folds


def _pen_strokes(
    rng: np.random.Generator, pieces: list[Ring], tumors: list[Ring], width: int, height: int, mpp: float
) -> list[PenStroke]:
    strokes: list[PenStroke] = []
    slide_um = min(width, height) * mpp
    stroke_width = float(np.clip(0.02 * slide_um, 40.0, 250.0)) / mpp
    ink_names = list(_INKS)
    ink = _INKS[ink_names[int(rng.choice(len(ink_names), p=[0.55, 0.35, 0.10]))]]
    # a loop drawn on the glass around a piece that holds tumor, as a pathologist marks a slide
    holders = [
        p for p in pieces if any(EdgeSet.from_rings([p]).contains(t[:1, 0], t[:1, 1])[0] for t in tumors)
    ]
    target = holders[int(rng.integers(len(holders)))] if holders else pieces[int(rng.integers(len(pieces)))]
    centre = (target.max(axis=0) + target.min(axis=0)) / 2
    radii = (target.max(axis=0) - target.min(axis=0)) / 2 * 1.1 + stroke_width
    room = np.minimum(centre, np.array([width, height]) - centre) - stroke_width  # keep the loop on the slide
    radii = np.maximum(np.minimum(radii, room / 1.12), stroke_width)
    start = rng.uniform(0, 2 * math.pi)
    sweep = rng.uniform(1.55, 1.9) * math.pi
    phi = start + np.linspace(0, sweep, 9)
    wobble = 1.0 + rng.normal(0, 0.04, size=phi.size)
    control = np.stack(
        [centre[0] + radii[0] * wobble * np.cos(phi), centre[1] + radii[1] * wobble * np.sin(phi)], axis=1
    )
    strokes.append(_stroke(smooth_curve(control, 240), stroke_width, ink, width, height))
    if rng.uniform() < 0.6:
        # a short tick on the glass beside a piece (where the slide has room for it)
        piece = pieces[int(rng.integers(len(pieces)))]
        length = rng.uniform(0.05, 0.12) * slide_um / mpp
        corner = piece.min(axis=0) - stroke_width * rng.uniform(1.0, 2.0)
        theta = rng.uniform(0, math.pi / 2)
        end = corner + length * np.array([math.cos(theta), math.sin(theta)])
        on_slide = (
            (corner >= stroke_width).all()
            and end[0] < width - stroke_width
            and end[1] < height - stroke_width
        )
        if on_slide:
            mid = (corner + end) / 2 + rng.normal(0, 0.08 * length, size=2)
            line = smooth_curve(np.stack([corner, mid, end]), 60)
            strokes.append(_stroke(line, stroke_width * rng.uniform(0.7, 1.0), ink, width, height))
    return strokes


def _stroke(
    line: F64, stroke_width: float, ink: tuple[float, float, float], width: int, height: int
) -> PenStroke:
    clipped = np.stack([np.clip(line[:, 0], 0, width), np.clip(line[:, 1], 0, height)], axis=1)
    line = np.round(clipped, 2).astype(np.float64)
    pad = stroke_width
    bbox = (
        float(line[:, 0].min() - pad),
        float(line[:, 1].min() - pad),
        float(line[:, 0].max() + pad),
        float(line[:, 1].max() + pad),
    )
    return PenStroke(line=line, width=stroke_width, ink_od=np.array(ink), bbox=bbox)


def _stain(rng: np.random.Generator) -> Stain:
    def unit(v: F64) -> F64:
        return np.asarray(v / np.linalg.norm(v), dtype=np.float64)

    hema = unit(np.array(_HEMATOXYLIN) + rng.normal(0, 0.03, 3))
    eosin = unit(np.array(_EOSIN) + rng.normal(0, 0.04, 3))
    glass = rng.uniform(0.03, 0.065) + rng.normal(0, 0.006, 3)
    return Stain(
        hematoxylin=hema,
        eosin=eosin,
        hematoxylin_scale=float(rng.uniform(0.85, 1.15)),
        eosin_scale=float(rng.uniform(0.8, 1.2)),
        background_od=np.clip(glass, 0.01, None),
    )
