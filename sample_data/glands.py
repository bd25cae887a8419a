"""Glands: normal ones (a lumen ringed by an epithelial layer of basal, columnar nuclei) in benign tissue,
and small irregular lumens scattered through tumor (disordered, cribriform-like architecture).

Glands live on a coarse grid of cells, at most one per cell, each drawn from hashes of its cell, so every
tile finds the same glands. A gland exists only where its whole outline lies in the right region (benign
tissue for normal glands, tumor for tumor lumens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np
from numpy.typing import NDArray

from .layout import SlideLayout
from .noise import substream, uniform, uniforms
from .nuclei import Placements, cell_grid, irregular_radius, no_placements

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

# sizes in µm
_NORMAL_CELL = 130.0
_NORMAL_P = 0.7
_NORMAL_LUMEN = (8.0, 28.0)
_NORMAL_EPITHELIUM = (10.0, 14.0)
_TUMOR_CELL = 55.0
_TUMOR_P = 0.3
_TUMOR_LUMEN = (4.0, 12.0)
_NUCLEUS_SPACING = 5.0
_CHECK_POINTS = 10


@dataclass(frozen=True, slots=True, eq=False)
class Glands:
    """A batch of glands (lengths in px); ``thickness`` 0 marks a bare tumor lumen."""

    cx: F64
    cy: F64
    a: F32
    b: F32
    angle: F32
    harm2: F32
    phase2: F32
    harm3: F32
    phase3: F32
    thickness: F32
    key_i: NDArray[np.int64]
    key_j: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.cx.size)

    def select(self, keep: NDArray[np.bool_]) -> Glands:
        return Glands(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})

    @property
    def extent(self) -> F32:
        return self.a * (1.0 + self.harm2 + self.harm3) + self.thickness

    def radius(self, dx: F32, dy: F32, index: int | slice = slice(None)) -> F32:
        """Normalised lumen radius (1 on the lumen outline) of offsets from the gland centres."""
        return irregular_radius(
            dx,
            dy,
            self.a[index],
            self.b[index],
            self.angle[index],
            self.harm2[index],
            self.phase2[index],
            self.harm3[index],
            self.phase3[index],
        )


class GlandModel:
    """Finds, classifies and paints the glands of one slide."""

    def __init__(self, layout: SlideLayout) -> None:
        self.layout = layout
        self.px_per_um = 1.0 / layout.mpp
        self._salt_normal = substream(layout.seed, "glands.normal")
        self._salt_tumor = substream(layout.seed, "glands.tumor")
        self._salt_nuclei = substream(layout.seed, "glands.nuclei")
        self.max_extent = (_NORMAL_LUMEN[1] * 1.25 + _NORMAL_EPITHELIUM[1]) * self.px_per_um

    def near(self, x0: float, y0: float, x1: float, y1: float) -> Glands:
        """All glands whose outline (or epithelial ring) may reach ``[x0, x1) x [y0, y1)``."""
        m = self.max_extent + 2.0
        parts = [self._normal(x0 - m, y0 - m, x1 + m, y1 + m)]
        if self.layout.tumor_edges.overlaps(x0 - m, y0 - m, x1 + m, y1 + m):
            parts.append(self._tumor(x0 - m, y0 - m, x1 + m, y1 + m))
        g = Glands(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Glands)})
        ext = g.extent
        keep = (g.cx + ext >= x0) & (g.cx - ext < x1) & (g.cy + ext >= y0) & (g.cy - ext < y1)
        return g.select(keep)

    def _candidates(
        self,
        salt: int,
        cell_um: float,
        p: float,
        lumen: tuple[float, float],
        box: tuple[float, float, float, float],
    ) -> Glands:
        cell = cell_um * self.px_per_um
        ii, jj = cell_grid(*box, cell)
        present = uniform(salt, ii, jj, 0) < p
        ii, jj = ii[present], jj[present]

        def u(k: int) -> F32:
            return uniform(salt, ii, jj, k)

        a = (lumen[0] + (lumen[1] - lumen[0]) * u(1) ** 1.5) * self.px_per_um
        return Glands(
            cx=(ii + 0.5 + (u(2) - 0.5) * 0.4) * cell,
            cy=(jj + 0.5 + (u(3) - 0.5) * 0.4) * cell,
            a=a,
            b=a * (0.45 + 0.55 * u(4)),
            angle=u(5) * np.float32(math.pi),
            harm2=np.zeros_like(a),
            phase2=u(6) * np.float32(2 * math.pi),
            harm3=np.zeros_like(a),
            phase3=u(7) * np.float32(2 * math.pi),
            thickness=np.zeros_like(a),
            key_i=ii,
            key_j=jj,
        )

    def _normal(self, x0: float, y0: float, x1: float, y1: float) -> Glands:
        layout = self.layout
        if not layout.tissue_edges.overlaps(x0, y0, x1, y1):
            return _empty()
        g = self._candidates(self._salt_normal, _NORMAL_CELL, _NORMAL_P, _NORMAL_LUMEN, (x0, y0, x1, y1))
        if not len(g):
            return g
        u8 = uniform(self._salt_normal, g.key_i, g.key_j, 8)
        u9 = uniform(self._salt_normal, g.key_i, g.key_j, 9)
        u10 = uniform(self._salt_normal, g.key_i, g.key_j, 10)
        t_lo, t_hi = _NORMAL_EPITHELIUM
        g = replace(
            g, harm2=0.12 * u8, harm3=0.08 * u9, thickness=(t_lo + (t_hi - t_lo) * u10) * self.px_per_um
        )
        px, py = _ring_points(g, 12.0 * self.px_per_um)
        ok = layout.tissue_edges.contains(px, py) & ~layout.tumor_edges.contains(px, py)
        return g.select(np.asarray(ok.reshape(len(g), -1).all(axis=1)))

    def _tumor(self, x0: float, y0: float, x1: float, y1: float) -> Glands:
        g = self._candidates(self._salt_tumor, _TUMOR_CELL, _TUMOR_P, _TUMOR_LUMEN, (x0, y0, x1, y1))
        if not len(g):
            return g
        u8 = uniform(self._salt_tumor, g.key_i, g.key_j, 8)
        u9 = uniform(self._salt_tumor, g.key_i, g.key_j, 9)
        g = replace(g, harm2=0.1 + 0.25 * u8, harm3=0.05 + 0.15 * u9)
        px, py = _ring_points(g, 6.0 * self.px_per_um)
        ok = self.layout.tumor_edges.contains(px, py)
        return g.select(np.asarray(ok.reshape(len(g), -1).all(axis=1)))

    def paint(
        self, glands: Glands, x0: int, y0: int, width: int, height: int
    ) -> tuple[F32, NDArray[np.bool_]]:
        """Lumen coverage (0..1, anti-aliased) and normal epithelium mask of a window."""
        lumen = np.zeros((height, width), dtype=np.float32)
        epithelium = np.zeros((height, width), dtype=np.bool_)
        for k in range(len(glands)):
            ext = float(glands.extent[k]) + 1.0
            c0 = max(0, math.floor(glands.cx[k] - ext) - x0)
            c1 = min(width, math.ceil(glands.cx[k] + ext) - x0 + 1)
            r0 = max(0, math.floor(glands.cy[k] - ext) - y0)
            r1 = min(height, math.ceil(glands.cy[k] + ext) - y0 + 1)
            if c0 >= c1 or r0 >= r1:
                continue
            dx = (x0 + np.arange(c0, c1) + 0.5 - glands.cx[k]).astype(np.float32)[None, :]
            dy = (y0 + np.arange(r0, r1) + 0.5 - glands.cy[k]).astype(np.float32)[:, None]
            re = glands.radius(dx, dy, k)
            dist = np.sqrt(dx * dx + dy * dy)
            boundary = dist / np.maximum(re, 1e-6)
            cover = np.clip(boundary - dist + 0.5, 0.0, 1.0)
            view = lumen[r0:r1, c0:c1]
            np.maximum(view, cover, out=view)
            if glands.thickness[k] > 0:
                epithelium[r0:r1, c0:c1] |= (dist < boundary + glands.thickness[k]) & (cover < 1.0)
        return lumen, epithelium

    def nuclei(self, glands: Glands, stamps: OrientedStamps) -> Placements:
        """The epithelial nuclei of normal glands: a single basal row, long axis across the ring."""
        batches = [self._ring_nuclei(glands, int(k), stamps) for k in np.flatnonzero(glands.thickness > 0)]
        return Placements.concat(batches) if batches else no_placements()

    def _ring_nuclei(self, glands: Glands, k: int, stamps: OrientedStamps) -> Placements:
        theta = np.linspace(0.0, 2 * math.pi, 181)
        ct = np.cos(theta).astype(np.float32)
        st = np.sin(theta).astype(np.float32)
        ell = 1.0 / glands.radius(ct, st, k)  # lumen radius along each direction
        bx, by = ell * ct, ell * st
        arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(bx), np.diff(by)))])
        perimeter = float(arc[-1])
        n = max(6, round(perimeter / (_NUCLEUS_SPACING * self.px_per_um)))
        i = np.arange(n, dtype=np.int64)
        u = uniforms(self._salt_nuclei, 3, glands.key_i[k], glands.key_j[k], i)
        s = (i + 0.5 + 0.3 * (u[0] - 0.5)) / n * perimeter
        th = np.interp(s, arc, theta)
        tx = np.interp(s, arc[1:], np.diff(bx))
        ty = np.interp(s, arc[1:], np.diff(by))
        normal_angle = np.arctan2(-tx, ty)  # outward normal of the lumen outline
        depth = np.interp(s, arc, ell) + float(glands.thickness[k]) * (0.55 + 0.2 * (u[1] - 0.5))
        return Placements.build(
            glands.cx[k] + depth * np.cos(th),
            glands.cy[k] + depth * np.sin(th),
            stamps.pick(normal_angle, u[2]),
        )


@dataclass(frozen=True, slots=True)
class OrientedStamps:
    """A run of library stamps: ``bins`` orientations over [0, π), ``variants`` shapes each."""

    start: int
    bins: int
    variants: int

    def pick(self, angle: F64 | F32, u: F32) -> NDArray[np.int64]:
        """Stamp numbers for nuclei at ``angle`` (radians), choosing the shape variant by ``u`` in [0, 1)."""
        b = np.rint(np.mod(angle, math.pi) / (math.pi / self.bins)).astype(np.int64) % self.bins
        v = np.minimum((u * self.variants).astype(np.int64), self.variants - 1)
        return self.start + b * self.variants + v


def _ring_points(g: Glands, pad: float) -> tuple[F64, F64]:
    """Points just outside each gland's outer outline, (len(g) * _CHECK_POINTS,) each, plus its centre."""
    phi = np.linspace(0.0, 2 * math.pi, _CHECK_POINTS - 1, endpoint=False)
    reach = (g.extent + pad)[:, None]
    px = np.concatenate([g.cx[:, None], g.cx[:, None] + reach * np.cos(phi)], axis=1)
    py = np.concatenate([g.cy[:, None], g.cy[:, None] + reach * np.sin(phi)], axis=1)
    return px.ravel(), py.ravel()


def _empty() -> Glands:
    f64 = np.zeros(0, dtype=np.float64)
    f32 = np.zeros(0, dtype=np.float32)
    i64 = np.zeros(0, dtype=np.int64)
    return Glands(f64, f64, f32, f32, f32, f32, f32, f32, f32, f32, i64, i64)
