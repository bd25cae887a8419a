"""Closed rings of ``(x, y)`` points: signed area, point in ring, and many rings packed in one array.

The packed form (:class:`Rings`) lets the region pipeline work in whole-array numpy passes: taking,
reversing and closing rings, bounding-box and point-in-ring tests in batches, and matching holes to the
smallest exterior that encloses them (:func:`assign_holes`).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


def signed_area(ring: np.ndarray) -> float:
    """Shoelace area of a closed ring of ``(x, y)`` (positive when counter-clockwise in a y-up frame)."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def point_in_ring(x: float, y: float, ring: np.ndarray) -> bool:
    """Even-odd ray casting: whether ``(x, y)`` lies inside the closed ring."""
    x0, y0 = ring[:-1, 0], ring[:-1, 1]
    x1, y1 = ring[1:, 0], ring[1:, 1]
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return bool(np.count_nonzero(crosses & (x < x_at)) % 2)


@dataclass(frozen=True, slots=True, eq=False)
class Rings:
    """Rings packed end to end: ring ``i`` is ``points[firsts[i] : firsts[i] + sizes[i]]``.

    ``points`` is a C-ordered ``(n, 2)`` float64 array of ``(x, y)``, so a ring sliced out of it has the
    same memory layout as a ring array of its own (and :func:`signed_area` gives the same bits for both).
    """

    points: np.ndarray
    sizes: np.ndarray

    @classmethod
    def pack(cls, rings: Sequence[np.ndarray]) -> Rings:
        if not rings:
            return cls(np.empty((0, 2)), np.empty(0, dtype=np.intp))
        points = np.ascontiguousarray(np.concatenate(rings), dtype=np.float64)
        return cls(points, np.array([len(ring) for ring in rings], dtype=np.intp))

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def firsts(self) -> np.ndarray:
        return np.cumsum(self.sizes) - self.sizes

    @property
    def lasts(self) -> np.ndarray:
        return np.cumsum(self.sizes) - 1

    def split(self) -> list[np.ndarray]:
        """The rings as views into ``points``."""
        bounds = [0, *np.cumsum(self.sizes).tolist()]
        return [self.points[a:b] for a, b in itertools.pairwise(bounds)]

    def take(self, index: np.ndarray) -> Rings:
        """The rings ``index`` (in that order)."""
        sizes = self.sizes[index]
        return Rings(self.points[_ranges(self.firsts[index], sizes)], sizes)

    def reversed(self) -> Rings:
        """Every ring with its points in reverse order."""
        ends = np.repeat(self.lasts + self.firsts, self.sizes)  # last + first of each point's ring
        return Rings(self.points[ends - np.arange(len(self.points))], self.sizes)

    def closed(self) -> Rings:
        """Rings whose last point differs from the first get the first point appended."""
        firsts = self.firsts
        is_open = (self.points[firsts] != self.points[self.lasts]).any(axis=1)
        if not is_open.any():
            return self
        points = np.insert(self.points, self.lasts[is_open] + 1, self.points[firsts[is_open]], axis=0)
        return Rings(points, self.sizes + is_open)

    def signed_areas(self) -> np.ndarray:
        """:func:`signed_area` of every ring: BLAS dot products per ring, so exactly the same numbers."""
        return np.array([signed_area(ring) for ring in self.split()], dtype=np.float64)


def _ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + n) for s, n in zip(starts, sizes)])`` without the loop."""
    offsets = np.cumsum(sizes) - sizes
    return np.arange(int(sizes.sum())) + np.repeat(starts - offsets, sizes)


def _chunks(weights: np.ndarray, budget: int) -> list[slice]:
    """Consecutive slices of ``weights`` with a total of about ``budget`` each (at least one item each)."""
    total = np.cumsum(weights)
    if not total.size:
        return []
    cuts = np.searchsorted(total, np.arange(budget, int(total[-1]), budget), side="right")
    bounds = np.unique(np.concatenate([[0], cuts, [len(weights)]]))
    return [slice(a, b) for a, b in itertools.pairwise(bounds.tolist())]


#: Work per numpy pass (bounding-box tests, ring edges) in the batched point-in-ring tests.
_BATCH = 1 << 22


def _bbox_candidates(points: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(point, box)`` with the point inside the (closed) box ``[lo, hi]``, point-major, boxes
    ascending.

    Boxes are listed in the cells of a grid of about one cell per box that they overlap, and each point is
    tested against the boxes listed in its cell only. Cell numbers grow with the coordinates (``floor`` of
    monotone arithmetic), so a point in a box lies in one of the box's cells: no pair is missed.
    """
    cells = max(1, math.isqrt(len(lo)))
    origin = lo.min(axis=0)
    size = np.maximum((hi.max(axis=0) - origin) / cells, np.finfo(np.float64).tiny)

    def cell(xy: np.ndarray) -> np.ndarray:
        return np.clip(np.floor((xy - origin) / size), 0, cells - 1).astype(np.intp)

    first, last = cell(lo), cell(hi)
    span = last - first + 1  # (boxes, 2) cells per box along x and y
    count = span[:, 0] * span[:, 1]
    box = np.repeat(np.arange(len(lo)), count)
    k = _ranges(np.zeros(len(lo), dtype=np.intp), count)  # each listing's number within its box
    listed_x, listed_y = first[box, 0] + k % span[box, 0], first[box, 1] + k // span[box, 0]
    order = np.lexsort((box, listed_y * cells + listed_x))
    box, listed = box[order], (listed_y * cells + listed_x)[order]
    at = cell(points)
    at = at[:, 1] * cells + at[:, 0]
    begin, end = np.searchsorted(listed, at, side="left"), np.searchsorted(listed, at, side="right")
    point = np.repeat(np.arange(len(points)), end - begin)
    box = box[_ranges(begin, end - begin)]
    x, y = points[point, 0], points[point, 1]
    inside = (lo[box, 0] <= x) & (x <= hi[box, 0]) & (lo[box, 1] <= y) & (y <= hi[box, 1])
    return point[inside], box[inside]


def _points_in_rings(points: np.ndarray, rings: Rings, which: np.ndarray) -> np.ndarray:
    """:func:`point_in_ring` of ``points[k]`` in ring ``which[k]`` for every ``k``, in batched numpy passes.

    The same arithmetic as :func:`point_in_ring` edge by edge, so the same answers, ties included.
    """
    edges = rings.sizes[which] - 1
    inside = np.zeros(len(which), dtype=bool)
    for part in _chunks(edges, _BATCH):
        counts = edges[part]
        starts = np.cumsum(counts) - counts
        i = _ranges(rings.firsts[which[part]], counts)  # each edge's first vertex
        x0, y0 = rings.points[i, 0], rings.points[i, 1]
        x1, y1 = rings.points[i + 1, 0], rings.points[i + 1, 1]
        x, y = np.repeat(points[part, 0], counts), np.repeat(points[part, 1], counts)
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside[part] = np.logical_xor.reduceat(crosses & (x < x_at), starts)
    return inside


def assign_holes(exteriors: Rings, areas: np.ndarray, holes: Rings) -> np.ndarray:
    """For each hole, the smallest exterior that contains its first point, or −1 (islands in holes are
    exteriors themselves).

    Candidates are the exteriors whose bounding box holds the point; ``areas`` are the exteriors'
    :func:`signed_area`. Where two enclosing candidates have the same area the first in
    ``np.argsort(areas[candidates])`` wins, as in a loop over candidates smallest first.
    """
    owner = np.full(len(holes), -1, dtype=np.intp)
    if not len(exteriors) or not len(holes):
        return owner
    firsts = exteriors.firsts
    lo = np.minimum.reduceat(exteriors.points, firsts, axis=0)  # (n, 2) bounding boxes
    hi = np.maximum.reduceat(exteriors.points, firsts, axis=0)
    points = holes.points[holes.firsts]
    hole, shell = _bbox_candidates(points, lo, hi)
    encloses = _points_in_rings(points[hole], exteriors, shell)
    hole_in, shell_in = hole[encloses], shell[encloses]
    order = np.lexsort((areas[shell_in], hole_in))  # per hole, smallest enclosing exterior first
    hole_in, shell_in = hole_in[order], shell_in[order]
    leading = np.ones(len(hole_in), dtype=bool)
    leading[1:] = hole_in[1:] != hole_in[:-1]
    owner[hole_in[leading]] = shell_in[leading]
    leader = np.maximum.accumulate(np.where(leading, np.arange(len(hole_in)), 0))
    tied = ~leading & (areas[shell_in] == areas[shell_in[leader]])
    for h in np.unique(hole_in[tied]).tolist():  # equal areas (never seen in practice): argsort decides
        candidates, enclosing = shell[hole == h], encloses[hole == h]
        first = next(k for k in np.argsort(areas[candidates]).tolist() if enclosing[k])
        owner[h] = candidates[first]
    for x, y in points[owner < 0].tolist():
        log.debug("dropping a hole with no enclosing region at (%.1f, %.1f)", x, y)
    return owner
