"""Cell nuclei: a per-slide library of pre-rendered nucleus stamps, placed by hash, added into tiles.

A nucleus is an irregular ellipse (radius modulated by its 2nd and 3rd angular harmonics) with a darker
rim. Rendering hundreds of such shapes per tile from scratch is costly, so each slide renders a library
of a few hundred shapes per kind once (:class:`StampLibrary`); a tile then only adds stamps at their
places, scaled by each nucleus's stain density, and overlays the chromatin texture in absolute
coordinates (so identical shapes still look different). Places, stamp choices and densities are pure
functions of the slide seed and a grid cell, so tiles that share a nucleus draw it identically.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

F32 = NDArray[np.float32]
Floats = NDArray[np.floating[Any]]
F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True, slots=True, eq=False)
class NucleusShapes:
    """Shapes of nuclei (lengths px, angles radians), to be rendered into a :class:`StampLibrary`."""

    a: F32  # semi-axis along ``angle``
    b: F32  # semi-axis across
    angle: F32
    harm2: F32  # outline irregularity: 2nd and 3rd angular harmonics (relative amplitude, phase)
    phase2: F32
    harm3: F32
    phase3: F32
    rim: F32  # extra darkness at the nuclear membrane
    density: F32  # hematoxylin concentration
    chromatin: F32  # contrast of the chromatin texture (0 = smooth)

    def __len__(self) -> int:
        return int(self.a.size)

    @classmethod
    def build(
        cls,
        a: ArrayLike,
        b: ArrayLike,
        angle: ArrayLike,
        *,
        harm2: ArrayLike = 0.0,
        phase2: ArrayLike = 0.0,
        harm3: ArrayLike = 0.0,
        phase3: ArrayLike = 0.0,
        rim: ArrayLike = 0.0,
        density: ArrayLike = 1.0,
        chromatin: ArrayLike = 0.0,
    ) -> NucleusShapes:
        """Shapes from per-nucleus arrays or scalars shared by all (broadcast together)."""
        values = (a, b, angle, harm2, phase2, harm3, phase3, rim, density, chromatin)
        arrays = np.broadcast_arrays(*(np.asarray(v, dtype=np.float32) for v in values))
        return cls(*(np.ascontiguousarray(np.atleast_1d(v)) for v in arrays))

    @staticmethod
    def concat(batches: Sequence[NucleusShapes]) -> NucleusShapes:
        return NucleusShapes(
            **{f.name: np.concatenate([getattr(b, f.name) for b in batches]) for f in fields(NucleusShapes)}
        )

    @property
    def extent(self) -> F32:
        """Upper bound of each nucleus's distance from its centre (px)."""
        return self.a * (1.0 + self.harm2 + self.harm3)


@dataclass(frozen=True, slots=True, eq=False)
class Placements:
    """Nuclei placed on the slide: centre (level-0 px) and library stamp."""

    cx: F64
    cy: F64
    stamp: I64

    def __len__(self) -> int:
        return int(self.cx.size)

    @classmethod
    def build(cls, cx: ArrayLike, cy: ArrayLike, stamp: ArrayLike) -> Placements:
        return cls(
            np.asarray(cx, dtype=np.float64),
            np.asarray(cy, dtype=np.float64),
            np.asarray(stamp, dtype=np.int64),
        )

    @staticmethod
    def concat(batches: Sequence[Placements]) -> Placements:
        parts = [b for b in batches if len(b)]
        if not parts:
            return no_placements()
        return Placements(
            **{f.name: np.concatenate([getattr(b, f.name) for b in parts]) for f in fields(Placements)}
        )


def no_placements() -> Placements:
    return Placements.build(np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64))


def irregular_radius(
    dx: F32, dy: F32, a: F32, b: F32, angle: F32, harm2: F32, phase2: F32, harm3: F32, phase3: F32
) -> F32:
    """Normalised radius of points ``(dx, dy)`` from a centre: 1 on the irregular ellipse's outline.

    The outline is an ellipse whose radius is modulated by its 2nd and 3rd angular harmonics, written with
    Chebyshev identities (cos 2φ = (u² - v²)/r² …) so no arctangent is needed. Arguments broadcast.
    """
    c = np.cos(angle)
    s = np.sin(angle)
    u = dx * (c / a) + dy * (s / a)
    v = dy * (c / b) - dx * (s / b)
    return _modulated_radius(
        u,
        v,
        harm2 * np.cos(phase2),
        harm2 * np.sin(phase2),
        harm3 * np.cos(phase3),
        harm3 * np.sin(phase3),
        third=True,
    )


def _modulated_radius(
    u: Floats, v: Floats, c2: Floats, s2: Floats, c3: Floats, s3: Floats, *, third: bool
) -> F32:
    uu = u * u
    vv = v * v
    r2 = np.maximum(uu + vv, np.float32(1e-6))
    r = np.sqrt(r2)
    inv2 = 1.0 / r2
    shape = ((uu - vv) * c2 + (2.0 * u * v) * s2) * inv2
    if third:
        shape += (u * (uu - 3.0 * vv) * c3 + v * (3.0 * uu - vv) * s3) * (inv2 / r)
    shape += 1.0
    return np.asarray(r / shape, dtype=np.float32)


_CHUNK_ELEMENTS = 1 << 16  # stamp pixels evaluated per numpy pass (keeps temporaries in cache)


@dataclass(frozen=True, slots=True, eq=False)
class Stamp:
    """One rendered nucleus, cropped: ``data`` is (density, chromatin-weighted density, coverage) x
    (rows, cols); ``top``/``left`` place its corner relative to the centre pixel."""

    data: F32
    top: int
    left: int


class StampLibrary:
    """Pre-rendered nucleus shapes, indexed by stamp number."""

    def __init__(self, shapes: NucleusShapes) -> None:
        self.stamps: list[Stamp] = _render_stamps(shapes)
        self.a = shapes.a.copy()
        self.b = shapes.b.copy()
        self.reach = max(
            (max(-s.top, -s.left, s.top + s.data.shape[1], s.left + s.data.shape[2]) for s in self.stamps),
            default=0,
        )

    def __len__(self) -> int:
        return len(self.stamps)


def _render_stamps(shapes: NucleusShapes) -> list[Stamp]:
    """Render each shape centred on a pixel centre, vectorised over shapes of similar size."""
    stamp_r = np.ceil(shapes.extent + 1.5).astype(np.int64)
    c = np.cos(shapes.angle)
    s = np.sin(shapes.angle)
    coeffs = np.stack(
        [
            c / shapes.a,
            s / shapes.a,
            c / shapes.b,
            s / shapes.b,
            shapes.harm2 * np.cos(shapes.phase2),
            shapes.harm2 * np.sin(shapes.phase2),
            shapes.harm3 * np.cos(shapes.phase3),
            shapes.harm3 * np.sin(shapes.phase3),
            shapes.b,
            shapes.rim,
            shapes.density,
            shapes.density * shapes.chromatin,
        ]
    ).astype(np.float32)
    out: list[Stamp | None] = [None] * len(shapes)
    for radius in np.unique(stamp_r):
        sel = np.flatnonzero(stamp_r == radius)
        rad = int(radius)
        steps = np.arange(-rad, rad + 1, dtype=np.float32)
        chunk = max(1, _CHUNK_ELEMENTS // (2 * rad + 1) ** 2)
        for i0 in range(0, sel.size, chunk):
            idx = sel[i0 : i0 + chunk]
            k = coeffs[:, idx][:, :, None, None]
            dx = steps[None, None, :]
            dy = steps[None, :, None]
            u = dx * k[0] + dy * k[1]
            v = dy * k[2] - dx * k[3]
            re = _modulated_radius(u, v, k[4], k[5], k[6], k[7], third=True)
            cover = np.clip((1.0 - re) * k[8] + 0.5, 0.0, 1.0)
            rim = np.clip(1.0 - np.abs(re - 0.84) * 7.0, 0.0, 1.0)
            shade = cover * (1.0 + k[9] * rim)
            data = np.stack([shade * k[10], shade * k[11], cover], axis=1)
            for j, nucleus in enumerate(idx):
                rows = np.flatnonzero(cover[j].any(axis=1))
                cols = np.flatnonzero(cover[j].any(axis=0))
                if rows.size == 0:
                    rows = cols = np.array([rad])
                r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
                out[nucleus] = Stamp(
                    np.ascontiguousarray(data[j, :, r0:r1, c0:c1]), int(r0) - rad, int(c0) - rad
                )
    return [st for st in out if st is not None]


def draw_nuclei(
    placed: Placements,
    library: StampLibrary,
    x0: int,
    y0: int,
    width: int,
    height: int,
    chromatin_field: Callable[[int, int, int, int], F32],
) -> tuple[F32, F32]:
    """Hematoxylin density and nuclear coverage (both ``(height, width)``) of placed nuclei in a window.

    Overlapping nuclei add (stained material does). ``chromatin_field(x0, y0, w, h)`` is a texture around
    0.5 that modulates each nucleus's density in proportion to its ``chromatin`` contrast.
    """
    reach = library.reach
    pad = 2 * reach + 1  # any stamp whose centre is within ``reach`` of the window fits the canvas
    canvas = np.zeros((3, height + 2 * pad, width + 2 * pad), dtype=np.float32)
    rows = np.floor(placed.cy).astype(np.int64) - y0 + pad
    cols = np.floor(placed.cx).astype(np.int64) - x0 + pad
    inside = (
        (rows >= pad - reach)
        & (rows < pad + height + reach)
        & (cols >= pad - reach)
        & (cols < pad + width + reach)
    )
    stamps = library.stamps
    for r, c, k in zip(
        rows[inside].tolist(), cols[inside].tolist(), placed.stamp[inside].tolist(), strict=True
    ):
        st = stamps[k]
        r0 = r + st.top
        c0 = c + st.left
        canvas[:, r0 : r0 + st.data.shape[1], c0 : c0 + st.data.shape[2]] += st.data
    crop = (slice(pad, pad + height), slice(pad, pad + width))
    texture = chromatin_field(x0, y0, width, height)
    d, t = canvas[0][crop], canvas[1][crop]
    hema = np.maximum(d + t * (texture - 0.5) * 2.0, 0.15 * d)
    return hema.astype(np.float32), np.minimum(canvas[2][crop], 1.0)


def cell_grid(
    x0: float, y0: float, x1: float, y1: float, cell: float
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Integer indices (flattened) of the square cells of size ``cell`` px meeting ``[x0, x1) x [y0, y1)``."""
    i0, i1 = math.floor(x0 / cell), math.floor(x1 / cell)
    j0, j1 = math.floor(y0 / cell), math.floor(y1 / cell)
    ii, jj = np.meshgrid(np.arange(i0, i1 + 1, dtype=np.int64), np.arange(j0, j1 + 1, dtype=np.int64))
    return ii.ravel(), jj.ravel()
