"""Slide: metadata parsed once, RGB on white, mpp handling, and surviving OpenSlide's latched errors."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import openslide
import pytest
from conftest import CMU1_TILE, CORRUPT_SVS_TILE, PINK, rect

import pathoflash as pf
from pathoflash.errors import MissingMppError, TileReadError


def test_cmu1_metadata(cmu1: Path) -> None:
    with pf.open_slide(cmu1) as slide:
        assert slide.dimensions == (2220, 2967)
        assert slide.level_count == 1
        assert slide.mpp == pytest.approx((0.499, 0.499))
        assert slide.mpp_source == "openslide"
        assert slide.objective_power == 20
        assert slide.format == "aperio"
        assert set(slide.associated_images) >= {"label", "macro", "thumbnail"}
        info = slide.info().to_dict()
    assert info["dimensions"] == [2220, 2967]
    assert info["level_count"] == 1
    assert info["file_size"] == cmu1.stat().st_size


def test_read_region_matches_openslide_and_is_white_outside(cmu1: Path) -> None:
    with pf.open_slide(cmu1) as slide:
        region = slide.read_region((1000, 1200), 0, (300, 200))
        outside = slide.read_region((2100, 2900), 0, (256, 256))
    reference = np.asarray(openslide.OpenSlide(str(cmu1)).read_region((1000, 1200), 0, (300, 200)))[..., :3]
    assert region.shape == (200, 300, 3) and region.dtype == np.uint8
    np.testing.assert_array_equal(region, reference)
    assert (outside[100:, 200:] == 255).all()  # beyond the 2220 × 2967 image
    assert (outside[:60, :100] < 250).any()  # while the part on the slide has content


def test_mpp_override_and_validation(cmu1: Path) -> None:
    with pf.open_slide(cmu1, mpp=0.25) as slide:
        assert slide.mpp == (0.25, 0.25)
        assert slide.mpp_source == "override"
    with pytest.raises(MissingMppError, match="out of range"):
        pf.open_slide(cmu1, mpp=0.0)


def test_missing_mpp_says_what_to_do(make_tiff) -> None:
    path = make_tiff("no-mpp.tif", size=(512, 512), shapes=[rect(0, 0, 300, 300)], mpp=None)
    with pf.open_slide(path) as slide:
        assert not slide.has_mpp
        assert slide.info().mpp is None
        with pytest.raises(MissingMppError, match="--slide-mpp"):
            _ = slide.mpp
    with pf.open_slide(path, mpp=0.5) as slide:
        assert slide.mpp == (0.5, 0.5)


def test_tiff_resolution_tags_give_mpp(make_tiff) -> None:
    path = make_tiff("res.tif", size=(512, 512), shapes=[rect(0, 0, 300, 300)], mpp=0.25)
    with pf.open_slide(path) as slide:
        assert slide.mpp == pytest.approx((0.25, 0.25))


def test_best_level_and_thumbnail(make_tiff) -> None:
    path = make_tiff(
        "pyr.tif",
        size=(4096, 2048),
        shapes=[rect(1024, 512, 3072, 1536, PINK, False)],
        downsamples=(1, 4, 16),
    )
    with pf.open_slide(path) as slide:
        assert slide.level_count == 3
        assert slide.best_level_for_mpp(0.5) == 0
        assert slide.best_level_for_mpp(2.0) == 1
        assert slide.best_level_for_mpp(100.0) == 2
        thumb = slide.thumbnail_at_mpp(16.0)  # 32 × level 0
    assert thumb.shape == (64, 128, 3)
    assert np.abs(thumb[32, 64].astype(int) - PINK).max() <= 6  # JPEG
    assert (thumb[2, 2] >= 250).all()


def test_corrupt_tile_raises_after_retry_and_the_rest_stays_readable(corrupt_svs: Path) -> None:
    row, col = CORRUPT_SVS_TILE
    with pf.open_slide(corrupt_svs) as slide:
        with pytest.raises(TileReadError, match="Not a JPEG file"):
            slide.read_region((col * CMU1_TILE + 5, row * CMU1_TILE + 5), 0, (64, 64))
        # The latched handle was replaced: a good tile reads fine afterwards.
        good = slide.read_region((0, 0), 0, (64, 64))
    assert good.shape == (64, 64, 3)


def test_a_bad_tile_never_fails_good_reads_on_other_threads(corrupt_svs: Path) -> None:
    """Reads share a handle that a failure latches; good reads must still succeed (private retry)."""
    row, col = CORRUPT_SVS_TILE
    bad_at = (col * CMU1_TILE + 10, row * CMU1_TILE + 10)
    errors: list[BaseException] = []
    with pf.open_slide(corrupt_svs) as slide:

        def read_bad() -> None:
            for _ in range(15):
                with pytest.raises(TileReadError):
                    slide.read_region(bad_at, 0, (32, 32))

        def read_good() -> None:
            try:
                for i in range(60):
                    slide.read_region(((i % 4) * 256, 2400), 0, (128, 128))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=read_bad)] + [threading.Thread(target=read_good) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_read_thumbnail_marks_unreadable_parts(corrupt_svs: Path) -> None:
    with pf.open_slide(corrupt_svs) as slide:
        rgb, unreadable = slide.read_thumbnail(8.0)
    assert rgb.shape[:2] == unreadable.shape
    assert 0 < unreadable.mean() < 0.1
    row, col = CORRUPT_SVS_TILE
    scale = 0.499 / 8.0
    cy, cx = int((row + 0.5) * CMU1_TILE * scale), int((col + 0.5) * CMU1_TILE * scale)
    assert unreadable[cy, cx]
    assert (rgb[unreadable] == 255).all()


def test_thumbnail_threads_read_the_same_pixels_and_failures(corrupt_svs: Path) -> None:
    """Chunks read on several threads land in the same places as one thread reads them."""
    with pf.open_slide(corrupt_svs) as slide:
        one, bad_one = slide.read_thumbnail(2.0, chunk=512, workers=1)
        many, bad_many = slide.read_thumbnail(2.0, chunk=512, workers=4)
    assert bad_one.any()
    np.testing.assert_array_equal(many, one)
    np.testing.assert_array_equal(bad_many, bad_one)
