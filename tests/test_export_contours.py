"""Marching squares against :func:`skimage.measure.find_contours`, ring for ring and point for point."""

from __future__ import annotations

import numpy as np

from pathoflash.export import contours


def random_probabilities(rng: np.random.Generator, kind: str) -> np.ndarray:
    """Heatmaps that exercise marching squares: noise (saddles everywhere), smooth blobs, binary blobs, values
    on a grid of tenths (points exactly on pixel centres at thresholds like 0.5), NaN holes."""
    from skimage.filters import gaussian

    shape = tuple(int(n) for n in rng.integers(2, 60, size=2))
    if kind == "noise":
        p = rng.random(shape)
    elif kind == "smooth":
        p = gaussian(rng.random(shape), sigma=rng.uniform(0.7, 3.0))
        p = (p - p.min()) / max(p.max() - p.min(), 1e-9)
    elif kind == "binary":
        p = (gaussian(rng.random(shape), sigma=1.5) > 0.5) * rng.uniform(0.6, 1.0)
    else:  # "tenths"
        p = rng.integers(0, 11, size=shape) / 10
    p = p.astype(np.float32)
    p[rng.random(shape) < 0.05] = np.nan
    return p


KINDS = ("noise", "smooth", "binary", "tenths")


def test_marching_squares_gives_skimage_find_contours_rings() -> None:
    rng = np.random.default_rng(21)
    fast = fallback = 0
    for i in range(240):
        p = random_probabilities(rng, KINDS[i % 4])
        threshold = float(rng.choice([0.5, 0.3, 0.7, 0.55]))
        padded = np.pad(np.nan_to_num(p, nan=0.0), 1)
        expected = contours._skimage_rings(padded, threshold)
        rings = contours._marching_squares(padded.astype(np.float64), threshold)
        if rings is None:  # a contour point on a pixel centre: skimage's own loop decides
            fallback += 1
            assert (p == np.float32(threshold)).any()
            continue
        fast += 1
        got = rings.split()
        assert len(got) == len(expected)
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    assert fast > 150 and fallback > 5
