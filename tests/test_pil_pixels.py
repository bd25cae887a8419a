"""Pillow image memory read in place (pathoflash.pil_pixels)."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from PIL import Image

from pathoflash import pil_pixels


def _core(seed: int, size: tuple[int, int] = (37, 23)) -> object:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels).im, pixels


def test_pixels_match_a_copy_and_outlive_the_image() -> None:
    core, expected = _core(1)
    view = pil_pixels.rgb_pixels(core)
    assert view.shape == expected.shape and view.dtype == np.uint8
    np.testing.assert_array_equal(view, expected)
    del core
    gc.collect()
    for seed in range(2, 6):  # new images must not reuse the memory the view still shows
        _core(seed)
    np.testing.assert_array_equal(view, expected)


def test_read_in_place_on_this_pillow() -> None:
    if not hasattr(Image.Image, "__arrow_c_array__"):
        pytest.skip("this Pillow (< 11.2) has no Arrow export; rgb_pixels copies")
    core, _ = _core(7)
    view = pil_pixels.rgb_pixels(core)
    assert pil_pixels._arrow_ok and not view.flags.owndata and view.base is not None


def test_other_modes_are_copied() -> None:
    grey = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4)).im
    np.testing.assert_array_equal(pil_pixels.rgb_pixels(grey), np.arange(12, dtype=np.uint8).reshape(3, 4))
