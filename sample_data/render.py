"""Render any window of a synthetic H&E slide from its layout.

The image is built the way light passes through a stained section (Beer-Lambert): each pixel gets a
hematoxylin and an eosin concentration, scaled by the local section thickness (doubled in folds); the
transmitted light ``255 · exp(-(h·H + e·E + glass))`` is read from a per-slide lookup table, and pen ink
multiplies in its own transmission. What sets the concentrations:

- stroma: eosin along wavy collagen fibres with pale clefts, sparse spindle-shaped fibroblast nuclei
  aligned with the fibres, scattered (here and there clustered) small dark lymphocytes;
- normal glands: a pale lumen ringed by pink epithelium with one row of basal, columnar nuclei;
- tumor: sheets and nests of crowded, enlarged, pleomorphic, hyperchromatic nuclei with coarse chromatin
  and nucleoli, amphophilic cytoplasm, thin desmoplastic septa and small irregular lumens.

A window's pixels depend only on the layout and absolute positions, so tiles rendered separately (in any
order, by any thread) join without seams.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .geometry import polyline_distance
from .glands import GlandModel, Glands, OrientedStamps
from .layout import PenStroke, SlideLayout
from .noise import F32, F64, fbm, gaussian, smooth_field, substream, uniforms, value_noise
from .nuclei import NucleusShapes, Placements, StampLibrary, cell_grid, draw_nuclei, no_placements
from .textures import Textures, pretile

U8 = NDArray[np.uint8]
U32 = NDArray[np.uint32]
Mask = NDArray[np.bool_]

BACKGROUND_PERIOD = 256  # the glass noise repeats with this period, so blank tiles are all alike

# µm
_TUMOR_CELL = 10.5  # spacing of tumor nuclei
_STROMA_CELL = 14.0
_LYMPH_CELL = 16.0
_NEST_THRESHOLD = 0.34  # tumor nest field below this is stroma (desmoplastic septa)
_FOLD_FACTOR = 2.0  # a fold is two layers of section

# concentration lookup table: 1/256 steps, hematoxylin up to 8, eosin up to 4
_LUT_STEP = 256.0
_LUT_H = 2048
_LUT_E = 1024


class TileRenderer:
    """Renders windows of one slide; holds only read-only state, so threads may share it."""

    def __init__(self, layout: SlideLayout) -> None:
        self.layout = layout
        self.px_per_um = 1.0 / layout.mpp
        self.glands = GlandModel(layout)
        seed = layout.seed
        names = (
            "fibre.warp.x",
            "fibre.warp.y",
            "fibre.weight",
            "stroma.density",
            "nest",
            "thickness",
            "ink",
            "lymph.cluster",
        )
        self._salt = {name: substream(seed, name) for name in names}
        self._salt_tumor = substream(seed, "nuclei.tumor")
        self._salt_stroma = substream(seed, "nuclei.stroma")
        self._salt_lymph = substream(seed, "nuclei.lymph")
        rng = np.random.default_rng([seed & 0xFFFFFFFF, seed >> 32, 0x61A55])
        self.textures = Textures(rng, layout.mpp)
        self.library, self._kinds = _nucleus_library(rng, self.px_per_um)
        self._pad = math.ceil(self.library.reach) + 2  # how far around a window nuclei are looked for
        stain = layout.stain
        self._lut = _transmission_lut(
            stain.hematoxylin * stain.hematoxylin_scale, stain.eosin * stain.eosin_scale, stain.background_od
        )
        self._glass_rgbx = pretile(_pack(glass_pattern(layout)))

    # ------------------------------------------------------------------ public

    def background_tile(self, size: int = BACKGROUND_PERIOD) -> U8:
        """A ``size`` x ``size`` window of bare glass at the origin (every blank tile of the slide)."""
        return background_tile(self.layout, size)

    def is_background(self, x0: int, y0: int, width: int, height: int) -> bool:
        """True when the window is certainly bare glass (then it equals :meth:`background_tile` tiles)."""
        return not self.layout.touches(x0, y0, x0 + width, y0 + height)

    def render(self, x0: int, y0: int, width: int, height: int) -> U8:
        """RGB pixels of the level-0 window at ``(x0, y0)``, shape ``(height, width, 3)``."""
        return _unpack(self.render_packed(x0, y0, width, height))

    def render_rgbx(self, x0: int, y0: int, width: int, height: int) -> U8:
        """Like :meth:`render`, as ``(height, width, 4)`` RGBX bytes (the 4th is padding): no repacking."""
        return self.render_packed(x0, y0, width, height).view(np.uint8).reshape(height, width, 4)

    def render_packed(self, x0: int, y0: int, width: int, height: int) -> U32:
        """The window as one uint32 per pixel holding R, G, B, 0 bytes in memory order."""
        rgbx = self._glass(x0, y0, width, height).copy()
        if self.layout.touches_tissue(x0, y0, x0 + width, y0 + height):
            pad = self._pad
            around = self.layout.tissue_edges.rasterize(x0 - pad, y0 - pad, width + 2 * pad, height + 2 * pad)
            tissue = around[pad : pad + height, pad : pad + width]
            rows = np.flatnonzero(tissue.any(axis=1))
            if rows.size:  # nothing is drawn outside the tissue but ink: stain only its bounding box
                cols = np.flatnonzero(tissue.any(axis=0))
                r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
                box = (slice(r0, r1), slice(c0, c1))
                hema, eosin = self._tissue(
                    x0 + c0, y0 + r0, c1 - c0, r1 - r0, around[r0 : r1 + 2 * pad, c0 : c1 + 2 * pad]
                )
                index = (hema * _LUT_STEP + 0.5).astype(np.int32)
                np.minimum(index, _LUT_H - 1, out=index)
                e_index = (eosin * _LUT_STEP + 0.5).astype(np.int32)
                np.minimum(e_index, _LUT_E - 1, out=e_index)
                index *= _LUT_E
                index += e_index
                rgbx[box] = np.where(tissue[box], np.take(self._lut, index), rgbx[box])
        for k, pen in enumerate(self.layout.pens):
            self._apply_ink(rgbx, pen, k, x0, y0)
        return np.ascontiguousarray(rgbx)

    # ------------------------------------------------------------------ tissue

    def _tissue(self, x0: int, y0: int, w: int, h: int, tissue_around: Mask) -> tuple[F32, F32]:
        """Hematoxylin and eosin concentrations (thickness and folds applied) of a window with tissue.

        ``tissue_around`` is the tissue mask of the window grown by ``self._pad`` on every side: nuclei
        near the window are placed by looking up masks of that larger window.
        """
        layout = self.layout
        pad = self._pad
        big = (x0 - pad, y0 - pad, w + 2 * pad, h + 2 * pad)
        inner = (slice(pad, pad + h), slice(pad, pad + w))
        tumor_around: Mask | None = None
        if layout.tumor_edges.overlaps(big[0], big[1], big[0] + big[2], big[1] + big[3]):
            tumor_around = layout.tumor_edges.rasterize(*big) & tissue_around
        glands = self.glands.near(big[0], big[1], big[0] + big[2], big[1] + big[3])
        lumen_around = epithelium_around = None
        if len(glands):
            lumen_around, epithelium_around = self.glands.paint(glands, *big)
        regions = _RegionLookup(big[0], big[1], tissue_around, tumor_around, lumen_around, epithelium_around)

        fibre = self._fibre(x0, y0, w, h)
        eosin = fibre * fibre
        eosin *= 0.6
        eosin += 0.05
        eosin *= self._field(self._stroma_density, x0, y0, w, h, 25.0)
        hema = 0.03 + 0.05 * fibre
        tumor = None if tumor_around is None else tumor_around[inner]
        if tumor is not None and tumor.any():
            nest = self._field(self._nest, x0, y0, w, h, 3.0)
            sheet = tumor & (nest > _NEST_THRESHOLD)
            grain = self.textures.grain(x0, y0, w, h)
            eosin = np.where(sheet, 0.22 + 0.16 * grain, np.where(tumor, eosin * 0.85, eosin))
            hema = np.where(sheet, 0.16 + 0.08 * grain, hema)
        if lumen_around is not None and epithelium_around is not None:
            lumen, epithelium = lumen_around[inner], epithelium_around[inner]
            grain = self.textures.grain(x0 + 97, y0 + 31, w, h)
            eosin = np.where(epithelium, 0.30 + 0.1 * grain, eosin)
            hema = np.where(epithelium, 0.09, hema)
            eosin = eosin * (1.0 - lumen) + lumen * (0.06 * grain)
            hema = hema * (1.0 - lumen)

        nuclei = self._nuclei(big[0], big[1], big[0] + big[2], big[1] + big[3], glands, regions)
        if len(nuclei):
            nuc_hema, cover = draw_nuclei(nuclei, self.library, x0, y0, w, h, self.textures.chromatin)
            hema = hema + nuc_hema
            cover *= -0.45
            cover += 1.0
            eosin = eosin * cover

        thickness = self._field(self._thickness, x0, y0, w, h, 40.0)
        if layout.fold_edges.overlaps(x0, y0, x0 + w, y0 + h):
            folded = layout.fold_edges.rasterize(x0, y0, w, h)
            thickness = np.where(folded, thickness * _FOLD_FACTOR, thickness)
        hema *= thickness
        eosin *= thickness
        return hema.astype(np.float32, copy=False), eosin.astype(np.float32, copy=False)

    def _field(self, fn: Callable[[F64, F64], F32], x0: int, y0: int, w: int, h: int, step_um: float) -> F32:
        return smooth_field(fn, x0, y0, w, h, max(1.0, step_um * self.px_per_um))

    def _um(self, x: F64, y: F64) -> tuple[F64, F64]:
        mpp = self.layout.mpp
        return x * mpp, y * mpp

    def _fibre(self, x0: int, y0: int, w: int, h: int) -> F32:
        """Wavy collagen bundles in [0, 1]: two crossing streak orientations, blended and warped smoothly."""
        warp = self._field(self._fibre_warp, x0, y0, w, h, 6.0)  # (2, h, w)
        ix = np.rint(warp[0] + (x0 + np.arange(w, dtype=np.float32))[None, :]).astype(np.int32)
        iy = np.rint(warp[1] + (y0 + np.arange(h, dtype=np.float32))[:, None]).astype(np.int32)
        first, second = self.textures.fibre_samples(ix, iy)
        weight = self._field(self._fibre_weight, x0, y0, w, h, 16.0)
        first -= second
        first *= weight
        first += second  # weight · first + (1 - weight) · second
        first *= 0.7
        first += 0.5
        return np.clip(first, 0.0, 1.0, out=first)

    def _fibre_warp(self, x: F64, y: F64) -> F32:
        """Displacement (px, two channels) that makes the fibres wave."""
        xu, yu = self._um(x, y)
        amp = np.float32(28.0 * self.px_per_um)
        wx = fbm(xu / 70.0, yu / 70.0, self._salt["fibre.warp.x"], 2) - 0.5
        wy = fbm(xu / 70.0, yu / 70.0, self._salt["fibre.warp.y"], 2) - 0.5
        return np.stack([wx * amp, wy * amp], axis=-1)

    def _fibre_weight(self, x: F64, y: F64) -> F32:
        """Share of the first fibre orientation: mostly 0 or 1, changing over a few hundred µm."""
        xu, yu = self._um(x, y)
        v = value_noise(xu / 220.0, yu / 220.0, self._salt["fibre.weight"])
        return np.clip((v - 0.5) * 4.0 + 0.5, 0.0, 1.0)

    def _fibre_direction(self, x: F64, y: F64) -> F32:
        """Dominant fibre direction (radians) at points."""
        first = self._fibre_weight(x, y) >= 0.5
        angles = self.textures.fibre_angles
        return np.where(first, np.float32(angles[0]), np.float32(angles[1])).astype(np.float32)

    def _stroma_density(self, x: F64, y: F64) -> F32:
        """Loose to dense collagen, varying over a few hundred µm."""
        xu, yu = self._um(x, y)
        return 0.65 + 0.6 * fbm(xu / 180.0, yu / 180.0, self._salt["stroma.density"], 2)

    def _nest(self, x: F64, y: F64) -> F32:
        """Tumor nests (high) and the desmoplastic septa between them (below the threshold)."""
        xu, yu = self._um(x, y)
        # a lattice turned off the image axes, so nest outlines show no horizontal or vertical runs
        u = 0.8 * xu - 0.6 * yu
        v = 0.6 * xu + 0.8 * yu
        return fbm(u / 60.0, v / 60.0, self._salt["nest"], 3, gain=0.45)

    def _thickness(self, x: F64, y: F64) -> F32:
        xu, yu = self._um(x, y)
        return 0.82 + 0.36 * fbm(xu / 500.0, yu / 500.0, self._salt["thickness"], 2)

    # ------------------------------------------------------------------ nuclei

    def _nuclei(
        self, x0: float, y0: float, x1: float, y1: float, glands: Glands, regions: _RegionLookup
    ) -> Placements:
        parts = [self._tumor_nuclei(x0, y0, x1, y1, regions), *self._stromal_nuclei(x0, y0, x1, y1, regions)]
        if len(glands):
            parts.append(self.glands.nuclei(glands, self._kinds.gland))
        return Placements.concat(parts)

    def _regions(self, cx: F64, cy: F64, regions: _RegionLookup) -> tuple[Mask, Mask, Mask, Mask]:
        """For points: (in tissue, in a tumor sheet, in a lumen, in a normal gland)."""
        tissue, tumor, lumen, gland = regions.at(cx, cy)
        sheet = tumor & tissue
        if sheet.any():
            sheet[sheet] = self._nest(cx[sheet], cy[sheet]) > _NEST_THRESHOLD
        return tissue, sheet, lumen, gland

    def _tumor_nuclei(self, x0: float, y0: float, x1: float, y1: float, regions: _RegionLookup) -> Placements:
        """Crowded, enlarged, pleomorphic, hyperchromatic nuclei with coarse chromatin and nucleoli."""
        if not self.layout.tumor_edges.overlaps(x0, y0, x1, y1):
            return no_placements()
        cell = _TUMOR_CELL * self.px_per_um
        ii, jj = cell_grid(x0, y0, x1, y1, cell)
        u = uniforms(self._salt_tumor, 10, ii, jj)
        cx = (ii + 0.5 + (u[1] - 0.5) * 0.75) * cell
        cy = (jj + 0.5 + (u[2] - 0.5) * 0.75) * cell
        _, sheet, lumen, _ = self._regions(cx, cy, regions)
        keep = (u[0] < 0.93) & sheet & ~lumen
        u, cx, cy = u[:, keep], cx[keep], cy[keep]
        kinds = self._kinds
        dark = u[4] < 0.04  # the odd mitosis or smudged, very hyperchromatic nucleus
        stamp = np.where(dark, kinds.dark.pick(u[3]), kinds.tumor.pick(u[3]))
        nuclei = Placements.build(cx, cy, stamp)
        has = (u[7] < 0.55) & ~dark  # a nucleolus: one small dark dot off the centre
        off_r = 0.45 * self.library.b[stamp[has]] * u[8][has]
        off_t = 2 * math.pi * u[9][has]
        nucleoli = Placements.build(
            cx[has] + off_r * np.cos(off_t),
            cy[has] + off_r * np.sin(off_t),
            kinds.nucleolus.pick(u[7][has] / 0.55),
        )
        return Placements.concat([nuclei, nucleoli])

    def _stromal_nuclei(
        self, x0: float, y0: float, x1: float, y1: float, regions: _RegionLookup
    ) -> list[Placements]:
        """Spindle fibroblast nuclei along the fibres, and lymphocytes (sparse, sometimes clustered)."""
        px = self.px_per_um
        kinds = self._kinds
        out = []
        cell = _STROMA_CELL * px
        ii, jj = cell_grid(x0, y0, x1, y1, cell)
        u = uniforms(self._salt_stroma, 7, ii, jj)
        present = u[0] < 0.3
        u = u[:, present]
        cx = (ii[present] + u[1]) * cell
        cy = (jj[present] + u[2]) * cell
        tissue, sheet, lumen, gland = self._regions(cx, cy, regions)
        keep = tissue & ~sheet & ~lumen & ~gland
        u, cx, cy = u[:, keep], cx[keep], cy[keep]
        if cx.size:
            angle = self._fibre_direction(cx, cy) + 0.25 * gaussian(u[3], u[4])
            out.append(Placements.build(cx, cy, kinds.spindle.pick(angle, u[5])))
        cell = _LYMPH_CELL * px
        ii, jj = cell_grid(x0, y0, x1, y1, cell)
        u = uniforms(self._salt_lymph, 6, ii, jj)
        cx = (ii + u[1]) * cell
        cy = (jj + u[2]) * cell
        xu, yu = self._um(cx, cy)
        cluster = fbm(xu / 160.0, yu / 160.0, self._salt["lymph.cluster"], 2)
        present = u[0] < 0.03 + 0.9 * np.clip((cluster - 0.62) / 0.15, 0.0, 1.0)
        u, cx, cy = u[:, present], cx[present], cy[present]
        tissue, sheet, lumen, gland = self._regions(cx, cy, regions)
        keep = tissue & ~lumen & ~gland & (~sheet | (u[3] < 0.15))
        u, cx, cy = u[:, keep], cx[keep], cy[keep]
        if cx.size:
            out.append(Placements.build(cx, cy, kinds.lymph.pick(u[4])))
        return out

    # ------------------------------------------------------------------ glass, ink

    def _glass(self, x0: int, y0: int, w: int, h: int) -> U32:
        return self.textures.window(self._glass_rgbx, BACKGROUND_PERIOD, x0, y0, w, h)

    def _apply_ink(self, rgbx: U32, pen: PenStroke, k: int, x0: int, y0: int) -> None:
        """Multiply in the transmission of a marker stroke, where it crosses the window."""
        h, w = rgbx.shape
        x1, y1 = x0 + w, y0 + h
        bx0, by0, bx1, by1 = pen.bbox
        if not (x0 <= bx1 and bx0 < x1 and y0 <= by1 and by0 < y1):
            return
        line = pen.line
        near = np.flatnonzero(
            (line[:, 0] > x0 - pen.width)
            & (line[:, 0] < x1 + pen.width)
            & (line[:, 1] > y0 - pen.width)
            & (line[:, 1] < y1 + pen.width)
        )
        if near.size == 0:
            return
        part = line[max(0, near[0] - 1) : min(len(line), near[-1] + 2)]
        half = pen.width / 2
        edge = 4.0 * self.px_per_um
        salt = self._salt["ink"] + k

        def coverage(x: F64, y: F64) -> F32:
            d = polyline_distance(x, y, part)
            xu, yu = self._um(x, y)
            streak = fbm(xu / 40.0, yu / 40.0, salt, 3)
            return np.asarray(np.clip((half - d) / edge, 0.0, 1.0) * (0.45 + 0.55 * streak), dtype=np.float32)

        ink = self._field(coverage, x0, y0, w, h, 2.0)
        inked = ink > 0.0
        if inked.any():
            transmission = np.exp(-ink[inked][:, None] * pen.ink_od.astype(np.float32))
            under = _unpack(rgbx[inked])
            rgbx[inked] = _pack(np.clip(under * transmission + 0.5, 0, 255).astype(np.uint8))


def glass_pattern(layout: SlideLayout) -> U8:
    """One period of the bare glass as scanned: the glass colour plus faint sensor noise, (P, P, 3)."""
    seed = layout.seed
    rng = np.random.default_rng([seed & 0xFFFFFFFF, seed >> 32, 0x61A55, 1])
    noise = rng.normal(0.0, 1.1, size=(BACKGROUND_PERIOD, BACKGROUND_PERIOD, 3))
    glass_rgb = 255.0 * np.exp(-layout.stain.background_od)
    return np.clip(glass_rgb + noise + 0.5, 0, 255).astype(np.uint8)


def background_tile(layout: SlideLayout, size: int = BACKGROUND_PERIOD) -> U8:
    """A ``size`` x ``size`` window of bare glass at the origin; every blank tile whose corner sits on a
    multiple of the period looks exactly like it."""
    pattern = glass_pattern(layout)
    reps = -(-size // BACKGROUND_PERIOD)
    return np.ascontiguousarray(np.tile(pattern, (reps, reps, 1))[:size, :size])


def _pack(rgb: U8) -> U32:
    """``(..., 3)`` uint8 RGB → ``(...)`` uint32 holding R, G, B, 0 bytes in memory order."""
    rgbx = np.zeros((*rgb.shape[:-1], 4), dtype=np.uint8)
    rgbx[..., :3] = rgb
    return rgbx.view(np.uint32)[..., 0]


def _unpack(rgbx: U32) -> U8:
    """Inverse of :func:`_pack`, contiguous ``(..., 3)`` uint8."""
    return np.ascontiguousarray(np.ascontiguousarray(rgbx).view(np.uint8).reshape(*rgbx.shape, 4)[..., :3])


def _transmission_lut(hema: F64, eosin: F64, glass_od: F64) -> U32:
    """Packed RGB for every quantised (hematoxylin, eosin) concentration pair, ``(_LUT_H * _LUT_E,)``."""
    h = (np.arange(_LUT_H, dtype=np.float32) / _LUT_STEP)[:, None, None]
    e = (np.arange(_LUT_E, dtype=np.float32) / _LUT_STEP)[None, :, None]
    od = h * hema.astype(np.float32) + e * eosin.astype(np.float32) + glass_od.astype(np.float32)
    return _pack(np.clip(255.0 * np.exp(-od) + 0.5, 0, 255).astype(np.uint8)).ravel()


@dataclass(frozen=True, slots=True)
class StampRun:
    """A run of ``count`` interchangeable library stamps starting at ``start``."""

    start: int
    count: int

    def pick(self, u: F32) -> NDArray[np.int64]:
        """Stamp numbers chosen by uniforms ``u`` in [0, 1)."""
        return self.start + np.minimum((u * self.count).astype(np.int64), self.count - 1)


@dataclass(frozen=True, slots=True)
class _Kinds:
    """Where each kind of nucleus sits in the stamp library."""

    tumor: StampRun
    dark: StampRun
    lymph: StampRun
    nucleolus: StampRun
    spindle: OrientedStamps
    gland: OrientedStamps


def _nucleus_library(rng: np.random.Generator, px: float) -> tuple[StampLibrary, _Kinds]:
    """This slide's nucleus shapes and stains (sizes in µm converted to px at ``px`` px/µm)."""
    n_tumor, n_dark, n_lymph, n_nucleolus = 384, 32, 32, 8
    bins = 24
    n_spindle, n_gland = 6, 4

    def u(n: int) -> F64:
        return rng.uniform(size=n)

    def tumor_shapes(n: int, density: F64 | float, chromatin: F64 | float) -> NucleusShapes:
        radius = np.clip(4.4 * np.exp(0.22 * rng.normal(size=n)), 2.9, 8.5) * px
        aspect = np.sqrt(1.0 + 0.75 * u(n) ** 1.5)
        return NucleusShapes.build(
            radius * aspect,
            radius / aspect,
            u(n) * math.pi,
            harm2=0.16 * u(n),
            phase2=2 * math.pi * u(n),
            harm3=0.11 * u(n),
            phase3=2 * math.pi * u(n),
            rim=0.3 + 0.3 * u(n),
            density=density,
            chromatin=chromatin,
        )

    tumor = tumor_shapes(n_tumor, 1.15 + 0.45 * u(n_tumor), 0.55 + 0.35 * u(n_tumor))
    dark = tumor_shapes(n_dark, 2.1, 0.2)
    r = (2.6 + 0.8 * u(n_lymph)) * px
    lymph = NucleusShapes.build(
        r * 1.06,
        r / 1.06,
        u(n_lymph) * math.pi,
        harm2=0.05 * u(n_lymph),
        phase2=2 * math.pi * u(n_lymph),
        rim=0.1,
        density=1.45 + 0.25 * u(n_lymph),
        chromatin=0.15,
    )
    r = (0.55 + 0.45 * (np.arange(n_nucleolus) + 0.5) / n_nucleolus) * px
    nucleolus = NucleusShapes.build(r, r, 0.0, density=0.7)
    n = bins * n_spindle
    spindle = NucleusShapes.build(
        (4.5 + 3.0 * u(n)) * px,
        (1.0 + 0.6 * u(n)) * px,
        np.repeat(np.arange(bins) * (math.pi / bins), n_spindle) + rng.normal(0, 0.04, n),
        harm2=0.08 * u(n),
        phase2=2 * math.pi * u(n),
        harm3=0.06 * u(n),
        phase3=2 * math.pi * u(n),
        rim=0.1,
        density=0.85 + 0.25 * u(n),
        chromatin=0.3,
    )
    n = bins * n_gland
    size = 1.0 + 0.08 * rng.normal(size=n)
    gland = NucleusShapes.build(
        3.6 * px * size,
        2.1 * px * size,
        np.repeat(np.arange(bins) * (math.pi / bins), n_gland),
        harm2=0.05 * u(n),
        phase2=2 * math.pi * u(n),
        rim=0.25,
        density=0.95 + 0.2 * u(n),
        chromatin=0.3,
    )
    library = StampLibrary(NucleusShapes.concat([tumor, dark, lymph, nucleolus, spindle, gland]))
    starts = np.cumsum([0, n_tumor, n_dark, n_lymph, n_nucleolus, bins * n_spindle])
    kinds = _Kinds(
        tumor=StampRun(int(starts[0]), n_tumor),
        dark=StampRun(int(starts[1]), n_dark),
        lymph=StampRun(int(starts[2]), n_lymph),
        nucleolus=StampRun(int(starts[3]), n_nucleolus),
        spindle=OrientedStamps(int(starts[4]), bins, n_spindle),
        gland=OrientedStamps(int(starts[5]), bins, n_gland),
    )
    return library, kinds


class _RegionLookup:
    """What is at a point, read from masks rasterised over a window grown around the one being drawn.

    A point takes the value of the pixel it falls in, so a nucleus near a tile border is classified the
    same from either tile.
    """

    def __init__(
        self,
        x0: int,
        y0: int,
        tissue: Mask,
        tumor: Mask | None,
        lumen: F32 | None,
        epithelium: Mask | None,
    ) -> None:
        self.x0, self.y0 = x0, y0
        self.shape = tissue.shape
        self.tissue = tissue
        self.tumor = tumor
        self.lumen = None if lumen is None else lumen > 0.5
        self.gland = (
            None if lumen is None or epithelium is None or self.lumen is None else epithelium | self.lumen
        )

    def at(self, cx: F64, cy: F64) -> tuple[Mask, Mask, Mask, Mask]:
        """(tissue, tumor, lumen, normal gland) at the points; points off the window are nothing."""
        col = np.floor(cx).astype(np.int64) - self.x0
        row = np.floor(cy).astype(np.int64) - self.y0
        ok = (col >= 0) & (col < self.shape[1]) & (row >= 0) & (row < self.shape[0])
        col, row = np.where(ok, col, 0), np.where(ok, row, 0)

        def look(mask: Mask | None) -> Mask:
            return np.zeros(ok.shape, dtype=np.bool_) if mask is None else mask[row, col] & ok

        return look(self.tissue), look(self.tumor), look(self.lumen), look(self.gland)
