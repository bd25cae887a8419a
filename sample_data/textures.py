"""Periodic fine-scale textures of one slide, made once and then read by slicing or gathering.

Micron-scale texture (chromatin granules, cytoplasmic grain, collagen streaks) is far too
fine to evaluate procedurally per pixel at speed, and too fine for its periodicity to show: each is a
seamless periodic random field built in the Fourier domain, indexed by absolute pixel position modulo
its period, so neighbouring tiles agree. Collagen comes in a few orientations, blended and warped by
the renderer so that fibres wave and turn across the slide.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray
from scipy import fft

F32 = NDArray[np.float32]
T = TypeVar("T", bound=np.generic)

_WINDOW = 1024 + 256  # windows up to this size are plain slices of a pre-tiled copy


def _periodic_field(
    rng: np.random.Generator, period: int, sigma_along: float, sigma_across: float, angle: float
) -> F32:
    """A zero-mean, unit-variance periodic Gaussian random field with an (anisotropic) Gaussian spectrum."""
    fy, fx = np.meshgrid(np.fft.fftfreq(period), np.fft.rfftfreq(period), indexing="ij")
    c, s = math.cos(angle), math.sin(angle)
    f_along = fx * c + fy * s
    f_across = fy * c - fx * s
    transfer = np.exp(-2.0 * math.pi**2 * ((sigma_along * f_along) ** 2 + (sigma_across * f_across) ** 2))
    white = rng.standard_normal(size=(period, period), dtype=np.float32)
    field = fft.irfft2(fft.rfft2(white) * transfer.astype(np.float32), s=(period, period))
    field -= field.mean()
    field /= field.std() + 1e-12
    return field.astype(np.float32)


def pretile(field: NDArray[T], extra: int = _WINDOW) -> NDArray[T]:
    """The periodic ``field`` repeated to ``period + extra`` on a side, so any window is a slice."""
    period = field.shape[0]
    reps = 1 + math.ceil(extra / period)
    tiled = np.tile(field, (reps, reps) + (1,) * (field.ndim - 2))
    return np.ascontiguousarray(tiled[: period + extra, : period + extra])


class Textures:
    """The periodic textures of one slide at ``mpp`` µm/px."""

    def __init__(self, rng: np.random.Generator, mpp: float) -> None:
        px = 1.0 / mpp
        self.fine_period = 256
        self.fibre_period = 1024 if px > 2.5 else 512
        chromatin = _periodic_field(rng, self.fine_period, 0.45 * px, 0.45 * px, 0.0)
        grain = _periodic_field(rng, self.fine_period, 1.2 * px, 1.2 * px, 0.0)
        self._chromatin = pretile(0.5 + 0.22 * chromatin)
        self._grain = pretile(0.5 + 0.2 * grain)
        base_angle = rng.uniform(0, math.pi)
        self.fibre_angles = base_angle + np.array([0.0, math.pi / 2])
        fibres = [
            _periodic_field(rng, self.fibre_period, 14.0 * px, 1.6 * px, float(a))
            + 0.35 * _periodic_field(rng, self.fibre_period, 5.0 * px, 0.35 * px, float(a))
            for a in self.fibre_angles
        ]
        self.fibres = [f.ravel() for f in fibres]

    @staticmethod
    def window(tiled: NDArray[T], period: int, x0: int, y0: int, w: int, h: int) -> NDArray[T]:
        """The ``(h, w, …)`` window at ``(x0, y0)`` of a :func:`pretile`-d periodic field (a view if small)."""
        ry, rx = y0 % period, x0 % period
        if w <= _WINDOW and h <= _WINDOW:
            return tiled[ry : ry + h, rx : rx + w]
        rows = (y0 + np.arange(h)) % period
        cols = (x0 + np.arange(w)) % period
        return tiled[rows[:, None], cols[None, :]]

    def chromatin(self, x0: int, y0: int, w: int, h: int) -> F32:
        """Granular nuclear texture around 0.5 (h, w)."""
        return self.window(self._chromatin, self.fine_period, x0, y0, w, h)

    def grain(self, x0: int, y0: int, w: int, h: int) -> F32:
        """Cytoplasmic grain around 0.5 (h, w)."""
        return self.window(self._grain, self.fine_period, x0, y0, w, h)

    def fibre_samples(self, x: NDArray[np.int32], y: NDArray[np.int32]) -> list[F32]:
        """The collagen streaks of each orientation at integer positions (any shape)."""
        mask = self.fibre_period - 1
        idx = y & mask
        idx *= self.fibre_period
        idx += x & mask
        return [np.take(f, idx) for f in self.fibres]
