"""Polygon geometry in level-0 pixel coordinates: exact scanline rasterising, point tests, shapes.

A set of closed rings (polygons, holes, several pieces) is kept as one :class:`EdgeSet`; inside means an odd
number of ring crossings (even-odd rule), so holes and disjoint pieces need no special casing. The
renderer and the ground-truth rasteriser use the same code, so a pixel is tumor in the image exactly when
its centre lies inside a truth polygon.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
Ring = NDArray[np.float64]  # (N, 2) vertices (x, y), not repeated at the end

_MAX_CROSSING_CELLS = 4_000_000  # rows x edges evaluated at once


@dataclass(frozen=True, slots=True, eq=False)
class EdgeSet:
    """The non-horizontal edges of closed rings, with their y-extents for fast row selection."""

    x1: F64
    y1: F64
    x2: F64
    y2: F64
    y_min: F64
    y_max: F64
    x_min: F64
    bbox: tuple[float, float, float, float]  # x_min, y_min, x_max, y_max (empty set: all zero)

    @classmethod
    def from_rings(cls, rings: Sequence[Ring]) -> EdgeSet:
        starts = [np.asarray(r, dtype=np.float64) for r in rings if len(r) >= 3]
        if not starts:
            empty = np.zeros(0, dtype=np.float64)
            return cls(empty, empty, empty, empty, empty, empty, empty, (0.0, 0.0, 0.0, 0.0))
        p = np.concatenate(starts)
        q = np.concatenate([np.roll(r, -1, axis=0) for r in starts])
        keep = p[:, 1] != q[:, 1]
        p, q = p[keep], q[keep]
        allp = np.concatenate(starts)
        bbox = (
            float(allp[:, 0].min()),
            float(allp[:, 1].min()),
            float(allp[:, 0].max()),
            float(allp[:, 1].max()),
        )
        return cls(
            x1=p[:, 0].copy(),
            y1=p[:, 1].copy(),
            x2=q[:, 0].copy(),
            y2=q[:, 1].copy(),
            y_min=np.minimum(p[:, 1], q[:, 1]),
            y_max=np.maximum(p[:, 1], q[:, 1]),
            x_min=np.minimum(p[:, 0], q[:, 0]),
            bbox=bbox,
        )

    @property
    def empty(self) -> bool:
        return self.x1.size == 0

    def overlaps(self, x0: float, y0: float, x1: float, y1: float) -> bool:
        """Whether the axis-aligned box ``[x0, x1) x [y0, y1)`` meets the bounding box of the rings."""
        bx0, by0, bx1, by1 = self.bbox
        return not self.empty and x0 <= bx1 and bx0 < x1 and y0 <= by1 and by0 < y1

    def rasterize(
        self, x0: float, y0: float, width: int, height: int, downsample: float = 1.0
    ) -> NDArray[np.bool_]:
        """Inside-mask of pixels whose centres ``(x0 + (c + .5) d, y0 + (r + .5) d)`` lie in the rings."""
        out = np.zeros((height, width), dtype=np.bool_)
        if self.empty or width <= 0 or height <= 0:
            return out
        rows_per_chunk = max(1, _MAX_CROSSING_CELLS // max(1, self.x1.size))
        for r0 in range(0, height, rows_per_chunk):
            r1 = min(height, r0 + rows_per_chunk)
            out[r0:r1] = self._rasterize_rows(x0, y0, width, r0, r1, downsample)
        return out

    def _rasterize_rows(
        self, x0: float, y0: float, width: int, r0: int, r1: int, d: float
    ) -> NDArray[np.bool_]:
        yc = y0 + (np.arange(r0, r1, dtype=np.float64) + 0.5) * d
        x_right = x0 + width * d
        sel = np.flatnonzero((self.y_max > yc[0]) & (self.y_min <= yc[-1]) & (self.x_min < x_right))
        n_rows = r1 - r0
        if sel.size == 0:
            return np.zeros((n_rows, width), dtype=np.bool_)
        ex1, ey1, ex2, ey2 = self.x1[sel], self.y1[sel], self.x2[sel], self.y2[sel]
        ylo, yhi = self.y_min[sel], self.y_max[sel]
        crosses = (ylo[None, :] <= yc[:, None]) & (yc[:, None] < yhi[None, :])
        row_i, edge_i = np.nonzero(crosses)
        slope = (ex2 - ex1) / (ey2 - ey1)
        xc = ex1[edge_i] + (yc[row_i] - ey1[edge_i]) * slope[edge_i]
        # pixel c is right of the crossing when x0 + (c + .5) d > xc
        col = np.floor((xc - x0) / d - 0.5).astype(np.int64) + 1
        np.clip(col, 0, width, out=col)
        toggles = np.bincount(row_i * (width + 1) + col, minlength=n_rows * (width + 1))
        parity = np.cumsum(toggles.reshape(n_rows, width + 1)[:, :width], axis=1) & 1
        return parity.astype(np.bool_)

    def contains(self, px: F64, py: F64) -> NDArray[np.bool_]:
        """Even-odd point-in-polygon test for points ``(px, py)`` (1-D arrays)."""
        px = np.asarray(px, dtype=np.float64).ravel()
        py = np.asarray(py, dtype=np.float64).ravel()
        out = np.zeros(px.shape, dtype=np.bool_)
        if self.empty or px.size == 0:
            return out
        bx0, by0, bx1, by1 = self.bbox
        cand = np.flatnonzero((px >= bx0) & (px <= bx1) & (py >= by0) & (py <= by1))
        if cand.size == 0:
            return out
        sel = np.flatnonzero(
            (self.y_max > py[cand].min()) & (self.y_min <= py[cand].max()) & (self.x_min < px[cand].max())
        )
        ex1, ey1, ex2, ey2 = self.x1[sel], self.y1[sel], self.x2[sel], self.y2[sel]
        ylo, yhi = self.y_min[sel], self.y_max[sel]
        slope = (ex2 - ex1) / (ey2 - ey1)
        chunk = max(1, _MAX_CROSSING_CELLS // max(1, sel.size))
        for i0 in range(0, cand.size, chunk):
            idx = cand[i0 : i0 + chunk]
            x = px[idx][:, None]
            y = py[idx][:, None]
            crosses = (ylo[None, :] <= y) & (y < yhi[None, :])
            xc = ex1[None, :] + (y - ey1[None, :]) * slope[None, :]
            out[idx] = (np.count_nonzero(crosses & (xc < x), axis=1) & 1).astype(np.bool_)
        return out


def ring_area(ring: Ring) -> float:
    """Unsigned area of a simple ring (shoelace formula)."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))


def radial_blob(
    rng: np.random.Generator,
    centre: tuple[float, float],
    radius: float,
    *,
    n_vertices: int,
    roughness: float,
    n_harmonics: int,
    decay: float = 1.3,
    elongation: float = 1.0,
    angle: float = 0.0,
) -> Ring:
    """An irregular closed blob: a circle whose log-radius is a random Fourier series, then stretched."""
    phi = np.linspace(0.0, 2.0 * np.pi, n_vertices, endpoint=False)
    k = np.arange(1, n_harmonics + 1, dtype=np.float64)
    amp = roughness * rng.normal(size=(2, n_harmonics)) / k**decay
    log_r = amp[0] @ np.cos(np.outer(k, phi)) + amp[1] @ np.sin(np.outer(k, phi))
    r = radius * np.exp(log_r - log_r.mean())
    x = r * np.cos(phi) * np.sqrt(elongation)
    y = r * np.sin(phi) / np.sqrt(elongation)
    ca, sa = np.cos(angle), np.sin(angle)
    return np.stack([centre[0] + x * ca - y * sa, centre[1] + x * sa + y * ca], axis=1)


def smooth_curve(control: F64, n_points: int) -> F64:
    """A Catmull-Rom spline through ``control`` points (M, 2), sampled at ``n_points`` points."""
    pts = np.concatenate([control[:1], control, control[-1:]])
    n_seg = len(control) - 1
    t = np.linspace(0.0, n_seg, n_points)
    seg = np.minimum(t.astype(np.int64), n_seg - 1)
    u = (t - seg)[:, None]
    p0, p1, p2, p3 = pts[seg], pts[seg + 1], pts[seg + 2], pts[seg + 3]
    return np.asarray(
        0.5
        * (
            2 * p1
            + (-p0 + p2) * u
            + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u**2
            + (-p0 + 3 * p1 - 3 * p2 + p3) * u**3
        ),
        dtype=np.float64,
    )


def polyline_distance(px: F64, py: F64, line: F64) -> F64:
    """Distance from points ``(px, py)`` (any shape) to the polyline ``line`` (M, 2)."""
    a = line[:-1]
    b = line[1:]
    ab = b - a
    len2 = np.maximum((ab**2).sum(axis=1), 1e-12)
    shape = np.shape(px)
    x = np.asarray(px, dtype=np.float64).reshape(-1, 1)
    y = np.asarray(py, dtype=np.float64).reshape(-1, 1)
    t = np.clip(((x - a[:, 0]) * ab[:, 0] + (y - a[:, 1]) * ab[:, 1]) / len2, 0.0, 1.0)
    dx = x - (a[:, 0] + t * ab[:, 0])
    dy = y - (a[:, 1] + t * ab[:, 1])
    return np.asarray(np.sqrt((dx * dx + dy * dy).min(axis=1)).reshape(shape), dtype=np.float64)
