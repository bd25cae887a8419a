"""Counter-based random numbers and procedural noise in absolute slide coordinates.

Everything the renderer draws must be the same no matter which tile asks for it, so randomness here is a
pure function of integer keys (seed, stream, lattice or cell position) rather than a stateful generator:
:func:`hash_u32` mixes the keys, :func:`uniform` turns them into floats, :func:`value_noise` interpolates
hashed lattice values, and :func:`smooth_field` evaluates any such function on a coarse lattice aligned to
absolute multiples of its step and interpolates it to pixels, so neighbouring tiles agree exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

_GOLDEN = 0x9E3779B9
_MIX1 = np.uint64(0x7FEB352D)
_MIX2 = np.uint64(0x846CA68B)
_LOW32 = np.uint64(0xFFFFFFFF)


def _mix(h: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """The 'lowbias32' integer finaliser on 32-bit values held in uint64 (products cannot overflow)."""
    h = h ^ (h >> np.uint64(16))
    h = (h * _MIX1) & _LOW32
    h = h ^ (h >> np.uint64(15))
    h = (h * _MIX2) & _LOW32
    return h ^ (h >> np.uint64(16))


def _as_u32(key: ArrayLike) -> NDArray[np.uint64]:
    return ((np.asarray(key, dtype=np.int64) + _GOLDEN) & 0xFFFFFFFF).astype(np.uint64)


def hash_u32(salt: int, *keys: ArrayLike) -> NDArray[np.uint64]:
    """Hash integer keys (broadcast together) under ``salt`` to uniformly distributed 32-bit values."""
    h = _mix(_as_u32(salt))
    for key in keys:
        h = _mix(h ^ _as_u32(key))
    return np.asarray(h)


def uniform(salt: int, *keys: ArrayLike) -> F32:
    """Uniform floats in [0, 1) that depend only on ``salt`` and the integer keys."""
    return (hash_u32(salt, *keys) >> np.uint64(8)).astype(np.float32) * np.float32(2.0**-24)


def uniforms(salt: int, count: int, *keys: ArrayLike) -> F32:
    """``count`` independent uniform floats per key tuple: shape ``(count, *broadcast(keys).shape)``."""
    base = hash_u32(salt, *keys)
    k = np.arange(count, dtype=np.uint64).reshape((count,) + (1,) * base.ndim)
    h = _mix(base[None, ...] ^ ((k * np.uint64(0x9E3779B9) + np.uint64(0x632BE5AB)) & _LOW32))
    return (h >> np.uint64(8)).astype(np.float32) * np.float32(2.0**-24)


def gaussian(u1: F32, u2: F32) -> F32:
    """Standard normal floats from two independent uniforms (Box-Muller)."""
    u1 = u1 * np.float32(0.999999) + np.float32(1e-7)
    return np.asarray(np.sqrt(-2.0 * np.log(u1)) * np.cos(np.float32(2.0 * np.pi) * u2), dtype=np.float32)


def substream(seed: int, name: str) -> int:
    """A salt for one named random stream of one slide seed."""
    h = int(hash_u32(seed & 0xFFFFFFFF, seed >> 32))
    for ch in name.encode():
        h = int(hash_u32(h, ch))
    return h


def value_noise(x: F64, y: F64, salt: int) -> F32:
    """Smooth noise in [0, 1] with unit lattice spacing, evaluated at points ``(x, y)`` (any shape).

    The lattice values for the bounding box of the points are hashed once and gathered, so the cost is a
    few passes over the points however they are spread.
    """
    fx0 = np.floor(x)
    fy0 = np.floor(y)
    ix = fx0.astype(np.int64)
    iy = fy0.astype(np.int64)
    tx = (x - fx0).astype(np.float32)
    ty = (y - fy0).astype(np.float32)
    tx = tx * tx * (3.0 - 2.0 * tx)
    ty = ty * ty * (3.0 - 2.0 * ty)
    ix_min = int(ix.min())
    iy_min = int(iy.min())
    nx = int(ix.max()) - ix_min + 2
    ny = int(iy.max()) - iy_min + 2
    lattice_x = np.arange(ix_min, ix_min + nx, dtype=np.int64)
    lattice_y = np.arange(iy_min, iy_min + ny, dtype=np.int64)
    table = uniform(salt, lattice_x[None, :], lattice_y[:, None]).ravel()
    base = (iy - iy_min) * nx + (ix - ix_min)
    v00 = table[base]
    v01 = table[base + 1]
    v10 = table[base + nx]
    v11 = table[base + nx + 1]
    top = v00 + (v01 - v00) * tx
    bottom = v10 + (v11 - v10) * tx
    return np.asarray(top + (bottom - top) * ty, dtype=np.float32)


def fbm(x: F64, y: F64, salt: int, octaves: int = 3, gain: float = 0.5) -> F32:
    """Fractal sum of :func:`value_noise` octaves (lattice spacing 1, 1/2, 1/4 …), normalised to [0, 1]."""
    total = np.zeros(np.shape(x), dtype=np.float32)
    weight = 1.0
    norm = 0.0
    scale = 1.0
    for octave in range(octaves):
        total += np.float32(weight) * value_noise(x * scale, y * scale, salt + 7919 * octave)
        norm += weight
        weight *= gain
        scale *= 2.0
    return total / np.float32(norm)


def _lerp_weights(start: int, count: int, step: float) -> tuple[NDArray[np.int64], F32, int, int]:
    """Linear interpolation from lattice points ``k * step`` to pixel centres ``start + i + 0.5``:
    each pixel's left lattice index (relative to the first), its weight on the right one, the first
    lattice index and the number of lattice points spanned."""
    t = (start + np.arange(count, dtype=np.float64) + 0.5) / step
    k = np.floor(t)
    frac = (t - k).astype(np.float32)
    k_int = k.astype(np.int64)
    k_min = int(k_int[0])
    return k_int - k_min, frac, k_min, int(k_int[-1]) - k_min + 2


def smooth_field(
    fn: Callable[[F64, F64], F32], x0: int, y0: int, width: int, height: int, step: float
) -> F32:
    """Evaluate ``fn(x, y)`` (level-0 pixel coordinates) on a lattice of spacing ``step`` px and interpolate.

    The lattice sits at absolute multiples of ``step``, so windows that share pixels agree on them
    exactly. Returns a ``(height, width)`` float32 array, or ``(C, height, width)`` when ``fn`` returns
    ``C`` channels in a trailing axis.
    """
    kx, fx, kx0, nx = _lerp_weights(x0, width, step)
    ky, fy, ky0, ny = _lerp_weights(y0, height, step)
    lattice_x = (kx0 + np.arange(nx, dtype=np.float64)) * step
    lattice_y = (ky0 + np.arange(ny, dtype=np.float64)) * step
    grid_x, grid_y = np.meshgrid(lattice_x, lattice_y)
    coarse = np.asarray(fn(grid_x, grid_y), dtype=np.float32)
    channels = coarse[None] if coarse.ndim == 2 else np.moveaxis(coarse, -1, 0)
    out = []
    for c in channels:  # columns on the small lattice first, then whole rows (contiguous gathers)
        left = c[:, kx]
        cols = left + (c[:, kx + 1] - left) * fx
        top = cols[ky]
        out.append(top + (cols[ky + 1] - top) * fy[:, None])
    return out[0] if coarse.ndim == 2 else np.stack(out)
