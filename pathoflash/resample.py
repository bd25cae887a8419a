"""Anti-aliased resampling of RGB tiles, fast for the common integer factors."""

from __future__ import annotations

import numpy as np

_INTEGER_TOLERANCE = 1e-3


def resample(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an ``(h, w, c)`` uint8 image to ``size = (width, height)`` with anti-aliasing.

    Integer reductions (2×, 4× …) are box filters (exact area averages, no Python loops); other factors
    go through Pillow's bilinear filter, which widens with the reduction (anti-aliased) and works in uint8.
    """
    height, width = image.shape[:2]
    out_w, out_h = size
    if (out_w, out_h) == (width, height):
        return image
    fy, fx = height / out_h, width / out_w
    ky, kx = round(fy), round(fx)
    if (
        ky >= 1
        and kx >= 1
        and abs(fy - ky) < _INTEGER_TOLERANCE * ky
        and abs(fx - kx) < _INTEGER_TOLERANCE * kx
        and height >= out_h * ky
        and width >= out_w * kx
    ):
        return box_reduce(image[: out_h * ky, : out_w * kx], ky, kx)
    # Pillow resamples uint8 in C with a filter whose support grows with the reduction (anti-aliased),
    # without the float64 copies scikit-image makes: a 7000² viewer thumbnail stays ~150 MB, not ~2 GB.
    from PIL import Image

    if image.ndim == 2 or image.shape[2] in (3, 4):
        resized = Image.fromarray(np.ascontiguousarray(image)).resize(
            (out_w, out_h), Image.Resampling.BILINEAR
        )
        return np.asarray(resized)
    channels = [resample(image[..., c], size) for c in range(image.shape[2])]
    return np.stack(channels, axis=-1)


def box_reduce(image: np.ndarray, ky: int, kx: int) -> np.ndarray:
    """Average ``ky × kx`` blocks of an ``(h, w, c)`` uint8 image whose sides are multiples of the block.

    Rounds half up. Small blocks (the 2× and 4× of tile reads) add strided views, which is several times
    faster than summing a reshaped array over two axes.
    """
    if ky == 1 and kx == 1:
        return image
    h, w = image.shape[:2]
    n = ky * kx
    if n <= 16 and image.ndim == 3:
        c = image.shape[2]
        rows = image[0::ky].astype(np.uint16)
        for dy in range(1, ky):
            rows += image[dy::ky]
        grouped = rows.reshape(h // ky, w // kx, kx * c)  # the kx pixels of a block side by side
        total = grouped[:, :, :c].copy()
        for dx in range(1, kx):
            total += grouped[:, :, dx * c : (dx + 1) * c]
    else:
        blocks = image.reshape(h // ky, ky, w // kx, kx, *image.shape[2:])
        total = blocks.sum(axis=(1, 3), dtype=np.uint32)
    total += n // 2
    total //= n
    return total.astype(np.uint8)


def resample_window(
    window: np.ndarray,
    *,
    origin: tuple[float, float],
    factor: tuple[float, float],
    size: tuple[int, int],
) -> np.ndarray:
    """Resample part of a larger image to a coarser (or finer) pixel grid, seam-free across tiles.

    ``window`` is an ``(h, w, c)`` uint8 cut-out of a source image. Output pixel ``(i, j)`` covers the source
    interval ``origin + (j, i) * factor`` to ``origin + (j + 1, i + 1) * factor`` (``origin = (x, y)`` is
    measured in window pixels, ``factor = (fx, fy)`` source pixels per output pixel). Because the mapping
    is exact (no rounding of the window's position), adjacent tiles cut from the same source line up.
    Reductions are anti-aliased with a Gaussian of sigma ``(factor - 1) / 2`` (scikit-image's choice)
    before linear interpolation; the window should extend ``~2·factor`` pixels beyond the area it covers.
    """
    from scipy.ndimage import gaussian_filter1d

    out_w, out_h = size
    image = window.astype(np.float32)
    for axis, f in ((0, factor[1]), (1, factor[0])):
        sigma = (f - 1.0) / 2.0
        if sigma > 0.05:
            image = gaussian_filter1d(image, sigma, axis=axis, mode="nearest", truncate=3.0)
    ys = _linear_taps(origin[1], factor[1], out_h, image.shape[0])
    xs = _linear_taps(origin[0], factor[0], out_w, image.shape[1])
    rows = image[ys[0]] * ys[2][:, None, None] + image[ys[1]] * (1.0 - ys[2])[:, None, None]
    out = rows[:, xs[0]] * xs[2][None, :, None] + rows[:, xs[1]] * (1.0 - xs[2])[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _linear_taps(
    origin: float, factor: float, count: int, limit: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of linear interpolation at the centres of ``count`` output pixels."""
    centres = origin + (np.arange(count, dtype=np.float64) + 0.5) * factor - 0.5
    lo = np.floor(centres)
    weight_hi = (centres - lo).astype(np.float32)
    lo_idx = np.clip(lo.astype(np.int64), 0, limit - 1)
    hi_idx = np.clip(lo_idx + 1, 0, limit - 1)
    return lo_idx, hi_idx, 1.0 - weight_hi
