"""Cell nuclei as a vectorised batch of irregular ellipses, drawn into a tile by stamping.

Every nucleus is a pure function of the slide seed and its grid cell, so two tiles that both see a nucleus
straddling their border draw the same nucleus. Stamps of similar size are evaluated together as one
``(n, S, S)`` array and accumulated with ``np.bincount`` (overlapping nuclei add hematoxylin, as stained
material does), so a tile with a few hundred nuclei costs a handful of numpy passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True, eq=False)
class Nuclei:
    """A batch of nuclei; lengths are px, angles radians, ``density`` is hematoxylin concentration."""

    cx: F64
    cy: F64
    a: F32  # semi-axis along ``angle``
    b: F32  # semi-axis across
    angle: F32
    density: F32
    harm2: F32  # outline irregularity: 2nd and 3rd angular harmonics (relative amplitude, phase)
    phase2: F32
    harm3: F32
    phase3: F32
    rim: F32  # extra darkness at the nuclear membrane
    chromatin: F32  # contrast of chromatin texture (0 = smooth)

    def __len__(self) -> int:
        return int(self.cx.size)

    def select(self, keep: NDArray[np.bool_]) -> Nuclei:
        return Nuclei(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})

    @staticmethod
    def concat(batches: Sequence[Nuclei]) -> Nuclei:
        parts = [b for b in batches if len(b)]
        if not parts:
            return empty_nuclei()
        return Nuclei(**{f.name: np.concatenate([getattr(b, f.name) for b in parts]) for f in fields(Nuclei)})

    @classmethod
    def build(
        cls,
        cx: F64,
        cy: F64,
        a: F32 | float,
        b: F32 | float,
        angle: F32 | float,
        density: F32 | float,
        *,
        harm2: F32 | float = 0.0,
        phase2: F32 | float = 0.0,
        harm3: F32 | float = 0.0,
        phase3: F32 | float = 0.0,
        rim: F32 | float = 0.0,
        chromatin: F32 | float = 0.0,
    ) -> Nuclei:
        """A batch from per-nucleus arrays or scalars shared by all (lengths px, angles radians)."""
        n = np.shape(cx)

        def f32(v: F32 | float) -> F32:
            return np.ascontiguousarray(np.broadcast_to(np.asarray(v, dtype=np.float32), n))

        return cls(
            cx=np.asarray(cx, dtype=np.float64),
            cy=np.asarray(cy, dtype=np.float64),
            a=f32(a),
            b=f32(b),
            angle=f32(angle),
            density=f32(density),
            harm2=f32(harm2),
            phase2=f32(phase2),
            harm3=f32(harm3),
            phase3=f32(phase3),
            rim=f32(rim),
            chromatin=f32(chromatin),
        )

    @property
    def extent(self) -> F32:
        """Upper bound of each nucleus's distance from its centre (px)."""
        return self.a * (1.0 + self.harm2 + self.harm3)


def empty_nuclei() -> Nuclei:
    f64 = np.zeros(0, dtype=np.float64)
    f32 = np.zeros(0, dtype=np.float32)
    return Nuclei(f64, f64, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32)


def irregular_radius(
    dx: F32, dy: F32, a: F32, b: F32, angle: F32, harm2: F32, phase2: F32, harm3: F32, phase3: F32
) -> F32:
    """Normalised radius of points ``(dx, dy)`` from a centre: 1 on the irregular ellipse's outline.

    The outline is an ellipse whose radius is modulated by its 2nd and 3rd angular harmonics, written with
    Chebyshev identities (cos 2φ = (u² - v²)/r² …) so no arctangent is needed.
    """
    c = np.cos(angle)
    s = np.sin(angle)
    u = (dx * c + dy * s) / a
    v = (dy * c - dx * s) / b
    uu = u * u
    vv = v * v
    r2 = uu + vv + np.float32(1e-6)
    r = np.sqrt(r2)
    inv2 = 1.0 / r2
    inv3 = inv2 / r
    shape = (
        1.0
        + harm2 * ((uu - vv) * inv2 * np.cos(phase2) + 2.0 * u * v * inv2 * np.sin(phase2))
        + harm3 * (u * (uu - 3.0 * vv) * inv3 * np.cos(phase3) + v * (3.0 * uu - vv) * inv3 * np.sin(phase3))
    )
    return np.asarray(r / shape, dtype=np.float32)


def draw_nuclei(
    nuclei: Nuclei,
    x0: int,
    y0: int,
    width: int,
    height: int,
    chromatin_field: Callable[[int, int, int, int], F32],
) -> tuple[F32, F32]:
    """Hematoxylin density and nuclear coverage (both ``(height, width)``) of ``nuclei`` in a window.

    ``chromatin_field(x0, y0, w, h)`` returns a [0, 1] texture for a window; it modulates the density inside
    each nucleus in proportion to the nucleus's ``chromatin`` contrast.
    """
    if len(nuclei) == 0:
        zeros = np.zeros((height, width), dtype=np.float32)
        return zeros, zeros.copy()
    stamp_r = np.ceil(nuclei.extent + 1.5).astype(np.int64)
    stamp_r = ((stamp_r + 3) // 4) * 4  # buckets of similar stamp size
    pad = 2 * int(stamp_r.max()) + 2  # every stamp that meets the window lies inside the canvas
    cw = width + 2 * pad
    ch = height + 2 * pad
    fx = np.floor(nuclei.cx)
    fy = np.floor(nuclei.cy)
    off_x = (fx + 0.5 - nuclei.cx).astype(np.float32)
    off_y = (fy + 0.5 - nuclei.cy).astype(np.float32)
    base_col = fx.astype(np.int64) - x0 + pad
    base_row = fy.astype(np.int64) - y0 + pad
    idx_parts: list[NDArray[np.int64]] = []
    dens_parts: list[F32] = []
    cover_parts: list[F32] = []
    contrast_parts: list[F32] = []
    for radius in np.unique(stamp_r):
        sel = np.flatnonzero(stamp_r == radius)
        rad = int(radius)
        # drop nuclei whose stamp cannot reach the window
        col0 = base_col[sel] - rad
        row0 = base_row[sel] - rad
        reach = (col0 + 2 * rad >= pad) & (col0 < pad + width) & (row0 + 2 * rad >= pad) & (row0 < pad + height)
        sel, col0, row0 = sel[reach], col0[reach], row0[reach]
        if sel.size == 0:
            continue
        steps = np.arange(-rad, rad + 1, dtype=np.float32)

        def col(v: NDArray[np.generic], s: NDArray[np.int64] = sel) -> F32:
            return np.asarray(v[s], dtype=np.float32)[:, None, None]

        dx = steps[None, None, :] + col(off_x)
        dy = steps[None, :, None] + col(off_y)
        re = irregular_radius(
            dx,
            dy,
            col(nuclei.a),
            col(nuclei.b),
            col(nuclei.angle),
            col(nuclei.harm2),
            col(nuclei.phase2),
            col(nuclei.harm3),
            col(nuclei.phase3),
        )
        alpha = np.clip((1.0 - re) * col(nuclei.b) + 0.5, 0.0, 1.0)
        rim = np.clip(1.0 - np.abs(re - 0.84) * 7.0, 0.0, 1.0)
        dens = alpha * col(nuclei.density) * (1.0 + col(nuclei.rim) * rim)
        inside = alpha > 0.0
        size = 2 * rad + 1
        flat = (row0[:, None, None] + np.arange(size)[None, :, None]) * cw + (
            col0[:, None, None] + np.arange(size)[None, None, :]
        )
        idx_parts.append(flat[inside])
        dens_parts.append(dens[inside])
        cover_parts.append(alpha[inside])
        contrast_parts.append(np.broadcast_to(col(nuclei.chromatin), inside.shape)[inside])
    if not idx_parts:
        zeros = np.zeros((height, width), dtype=np.float32)
        return zeros, zeros.copy()
    idx = np.concatenate(idx_parts)
    dens_all = np.concatenate(dens_parts)
    contrast = np.concatenate(contrast_parts)
    texture = chromatin_field(x0 - pad, y0 - pad, cw, ch).ravel()[idx]
    dens_all *= np.maximum(1.0 + contrast * (texture - 0.5) * 2.0, 0.15)
    hema = np.bincount(idx, weights=dens_all, minlength=cw * ch).reshape(ch, cw)
    cover = np.bincount(idx, weights=np.concatenate(cover_parts), minlength=cw * ch).reshape(ch, cw)
    window = (slice(pad, pad + height), slice(pad, pad + width))
    return hema[window].astype(np.float32), np.minimum(cover[window], 1.0).astype(np.float32)


def cell_grid(x0: float, y0: float, x1: float, y1: float, cell: float) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Integer indices (flattened) of the square cells of size ``cell`` px meeting ``[x0, x1) x [y0, y1)``."""
    i0, i1 = math.floor(x0 / cell), math.floor(x1 / cell)
    j0, j1 = math.floor(y0 / cell), math.floor(y1 / cell)
    ii, jj = np.meshgrid(np.arange(i0, i1 + 1, dtype=np.int64), np.arange(j0, j1 + 1, dtype=np.int64))
    return ii.ravel(), jj.ravel()
