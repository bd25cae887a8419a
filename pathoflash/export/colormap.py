"""A perceptual colour map for probabilities, as a small lookup table (no matplotlib).

The table is viridis-like: nine anchor colours sampled from viridis at equal steps, linearly interpolated to
256 entries. Lightness rises monotonically from dark purple (0) to yellow (1), so it reads in greyscale and
for the common colour-vision deficiencies.
"""

from __future__ import annotations

import functools

import numpy as np

#: Anchor colours at 0, 1/8, …, 1 (sRGB, 0–255).
_VIRIDIS_ANCHORS = (
    (68, 1, 84),
    (72, 40, 120),
    (62, 73, 137),
    (49, 104, 142),
    (38, 130, 142),
    (31, 158, 137),
    (53, 183, 121),
    (109, 205, 89),
    (253, 231, 37),
)

#: Probabilities are quantised to this many levels (index = round(p * 255)).
LUT_SIZE = 256

#: Colour for pixels without a probability (no tissue / not computed) in opaque RGB exports.
NO_DATA_RGB = (255, 255, 255)


@functools.cache
def viridis_lut() -> np.ndarray:
    """The ``(256, 3)`` uint8 lookup table; entry ``i`` is the colour of probability ``i / 255``."""
    anchors = np.asarray(_VIRIDIS_ANCHORS, dtype=np.float64)
    at = np.linspace(0.0, 1.0, len(anchors))
    x = np.linspace(0.0, 1.0, LUT_SIZE)
    table = np.stack([np.interp(x, at, anchors[:, c]) for c in range(3)], axis=1)
    lut = np.clip(np.rint(table), 0, 255).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def probability_index(probabilities: np.ndarray) -> np.ndarray:
    """Quantise probabilities in [0, 1] to LUT indices (int16); NaN becomes -1."""
    p = np.asarray(probabilities, dtype=np.float32)
    index = np.full(p.shape, -1, dtype=np.int16)
    finite = np.isfinite(p)
    index[finite] = np.rint(np.clip(p[finite], 0.0, 1.0) * (LUT_SIZE - 1)).astype(np.int16)
    return index


def colorize(probabilities: np.ndarray, *, no_data: tuple[int, int, int] = NO_DATA_RGB) -> np.ndarray:
    """Map probabilities ``(h, w)`` to ``(h, w, 3)`` uint8 RGB; NaN pixels get ``no_data``."""
    index = probability_index(probabilities)
    palette = np.concatenate([viridis_lut(), np.asarray([no_data], dtype=np.uint8)])
    return palette[index]  # index -1 picks the last row, the no-data colour


__all__ = ["LUT_SIZE", "NO_DATA_RGB", "colorize", "probability_index", "viridis_lut"]
