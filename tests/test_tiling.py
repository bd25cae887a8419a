"""The tile grid: level choice, snapping near-equal resolutions, seam-free reads, tissue tiles."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import PINK, rect

import pathoflash as pf
from pathoflash.errors import ConfigError
from pathoflash.tiling import TileGrid, plan_grid, read_grid_region, read_tile
from pathoflash.tissue import TissueMask


def _all_tissue(slide: pf.Slide) -> TissueMask:
    w, h = slide.dimensions
    mpp = slide.mpp[0] * 16
    return TissueMask(mask=np.ones((h // 16 + 1, w // 16 + 1), bool), mpp=mpp)


def test_cmu1_grid_snaps_0499_to_native(cmu1: Path) -> None:
    with pf.open_slide(cmu1) as slide:
        grid = plan_grid(slide, mpp=0.5, tile_size=256)
    assert grid.mpp == pytest.approx(0.499)  # the honest, effective resolution
    assert grid.requested_mpp == 0.5
    assert grid.integer_reduction and grid.level == 0
    assert grid.scale == (1.0, 1.0) and grid.level_scale == (1.0, 1.0)
    assert (grid.width, grid.height, grid.rows, grid.cols) == (2220, 2967, 12, 9)
    assert grid.tissue_tiles == tuple(sorted(grid.tissue_tiles))
    assert 30 < len(grid.tissue_tiles) < grid.tile_count
    assert grid.tissue_mask is not None


def test_grid_round_trips_through_json(cmu1: Path) -> None:
    import json

    with pf.open_slide(cmu1) as slide:
        grid = plan_grid(slide)
    again = TileGrid.from_dict(json.loads(json.dumps(grid.to_dict())))
    assert again == grid
    assert again.tissue_tiles == grid.tissue_tiles
    assert len(grid.to_dict()["tissue_tiles"]) < len(grid.tissue_tiles)  # stored as runs


def test_whole_number_reduction_within_tolerance(cmu1: Path) -> None:
    with pf.open_slide(cmu1) as slide:
        grid = plan_grid(slide, mpp=1.0)  # 1.0 / 0.499 = 2.004 → 2
        assert grid.integer_reduction and grid.level_scale == (2.0, 2.0)
        assert grid.mpp == pytest.approx(0.998)
        assert (grid.width, grid.height) == (1110, 1484)
        tile = read_tile(slide, grid, 2, 1, decoder="openslide")
        fast = read_tile(slide, grid, 2, 1)  # libjpeg's DCT-domain halving (see test_jpeg_tiles)
        raw = slide.read_region((256 * 2, 512 * 2), 0, (512, 512))
    expected = raw.reshape(256, 2, 256, 2, 3).astype(np.uint32).sum(axis=(1, 3))
    np.testing.assert_array_equal(tile, ((expected + 2) // 4).astype(np.uint8))
    assert np.abs(fast.astype(np.int16) - tile).mean() < 1.0


def test_non_integer_factor_is_interpolated_without_seams(cmu1: Path) -> None:
    with pf.open_slide(cmu1) as slide:
        grid = plan_grid(slide, mpp=0.7, tile_size=128)
        assert not grid.integer_reduction
        assert grid.mpp == 0.7 and grid.scale[0] == pytest.approx(0.7 / 0.499)
        big = read_grid_region(slide, grid, 256, 384, 256, 256)
        tiles = np.concatenate(
            [np.concatenate([read_tile(slide, grid, r, c) for c in (2, 3)], axis=1) for r in (3, 4)], axis=0
        )
        reference = slide.read_at_mpp(
            (round(256 * grid.scale[0]), round(384 * grid.scale[1])), (256, 256), 0.7
        )
    # Tiles cut from the same exact mapping agree with one big read to rounding.
    assert np.abs(big.astype(int) - tiles).max() <= 1
    # And with an independent resampling (skimage) up to interpolation detail.
    assert np.abs(big.astype(int) - reference).mean() < 6


def test_level_choice_in_a_pyramid(make_tiff) -> None:
    path = make_tiff(
        "pyr.tif", size=(4096, 4096), shapes=[rect(0, 0, 4096, 4096)], mpp=0.25, downsamples=(1, 4, 16)
    )
    with pf.open_slide(path) as slide:
        tissue = _all_tissue(slide)
        cases = {0.25: (0, 1.0), 0.5: (0, 2.0), 1.0: (1, 1.0), 2.0: (1, 2.0), 4.0: (2, 1.0), 8.0: (2, 2.0)}
        for mpp, (level, factor) in cases.items():
            grid = plan_grid(slide, mpp=mpp, tissue=tissue)
            assert (grid.level, grid.level_scale[0], grid.integer_reduction) == (level, factor, True), mpp
            assert grid.scale[0] == pytest.approx(mpp / 0.25)
        odd = plan_grid(slide, mpp=1.5, tissue=tissue)  # from level 1 (1.0 µm/px) by 1.5
        assert (odd.level, odd.integer_reduction, odd.mpp) == (1, False, 1.5)


def test_two_percent_snap_on_a_pyramid_level(make_tiff) -> None:
    path = make_tiff(
        "off.tif", size=(2048, 2048), shapes=[rect(0, 0, 2048, 2048)], mpp=0.2525, downsamples=(1, 4)
    )
    with pf.open_slide(path) as slide:
        grid = plan_grid(slide, mpp=1.0, tissue=_all_tissue(slide))
    assert (grid.level, grid.level_scale, grid.integer_reduction) == (1, (1.0, 1.0), True)
    assert grid.mpp == pytest.approx(1.01)


def test_upsampling_is_allowed_with_a_warning(cmu1: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pf.open_slide(cmu1) as slide, caplog.at_level(logging.WARNING, "pathoflash"):
        grid = plan_grid(slide, mpp=0.25, tissue=_all_tissue(slide))
    assert grid.mpp == pytest.approx(0.25) and "upsampled" in caplog.text


def test_edge_tiles_are_padded_white(make_tiff) -> None:
    path = make_tiff("edge.tif", size=(600, 300), shapes=[rect(0, 0, 600, 300, PINK, False)])
    with pf.open_slide(path) as slide:
        grid = plan_grid(slide, mpp=0.5, tissue=_all_tissue(slide))
        assert (grid.rows, grid.cols) == (2, 3)
        corner = read_tile(slide, grid, 1, 2)
    assert (corner[300 - 256 :, :] == 255).all() and (corner[:, 600 - 512 :] == 255).all()
    assert np.abs(corner[:40, :80].astype(int) - PINK).max() <= 6


def test_tissue_tiles_follow_the_mask(make_tiff) -> None:
    path = make_tiff("blob.tif", size=(4096, 4096), shapes=[rect(1024, 1024, 2048, 3072)], downsamples=(1, 4))
    with pf.open_slide(path) as slide:
        grid = plan_grid(slide, mpp=1.0, tile_size=256)  # 2048 × 2048 grid px, 8 × 8 tiles
    assert {r for r, _ in grid.tissue_tiles} == {2, 3, 4, 5}
    assert {c for _, c in grid.tissue_tiles} == {2, 3}
    assert grid.has_tissue(512, 512, 256, 256) and not grid.has_tissue(0, 0, 500, 500)
    assert grid.has_tissue(0, 0, 2048, 2048) and not grid.has_tissue(1100, 0, 900, 2048)


def test_options_are_validated(cmu1: Path) -> None:
    with pf.open_slide(cmu1) as slide:
        for bad in ({"tile_size": 100}, {"tile_size": 8}, {"mpp": 0}, {"mpp": float("nan")}):
            with pytest.raises(ConfigError):
                plan_grid(slide, **bad)
