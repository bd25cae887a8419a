"""Anti-aliased resampling of RGB tiles, fast for the common integer factors."""

from __future__ import annotations

import numpy as np

_INTEGER_TOLERANCE = 1e-3


def resample(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an ``(h, w, c)`` uint8 image to ``size = (width, height)`` with anti-aliasing.

    Integer reductions (2×, 4× …) are box filters (exact area averages, no Python loops); other factors
    go through scikit-image's Gaussian pre-filter and bilinear interpolation.
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
    from skimage.transform import resize

    out = resize(
        image,
        (out_h, out_w) + image.shape[2:],
        order=1,
        anti_aliasing=fy > 1 or fx > 1,
        preserve_range=True,
    )
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def box_reduce(image: np.ndarray, ky: int, kx: int) -> np.ndarray:
    """Average ``ky × kx`` blocks of an ``(h, w, c)`` uint8 image whose sides are multiples of the block."""
    if ky == 1 and kx == 1:
        return image
    h, w = image.shape[:2]
    blocks = image.reshape(h // ky, ky, w // kx, kx, *image.shape[2:])
    summed = blocks.sum(axis=(1, 3), dtype=np.uint32)
    return ((summed + (ky * kx) // 2) // (ky * kx)).astype(np.uint8)
