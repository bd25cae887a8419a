"""The viewer's whole-slide image from the tile store over a coarse background (pathoflash.viewer_image)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pathoflash import viewer_image
from pathoflash.slide import open_slide
from pathoflash.store import TileStore
from pathoflash.tiling import tile_slide


@pytest.fixture(scope="module")
def cmu1_store(cmu1: Path, tmp_path_factory: pytest.TempPathFactory) -> TileStore:
    return tile_slide(cmu1, tmp_path_factory.mktemp("store") / "tiles.zarr", mpp=0.5, workers=2)


def test_level_is_the_finest_within_budget_and_no_finer_than_one_micron(
    cmu1: Path, cmu1_store: TileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    grid = cmu1_store.grid
    with open_slide(cmu1) as slide:
        level = viewer_image.viewer_level(grid, slide.mpp, cmu1_store.level_count)
        assert level == 1  # 0.5 µm/px tiles: level 1 is the first at ≥ 1 µm/px
        assert viewer_image.level_mpp(grid, slide.mpp, level)[0] == pytest.approx(2 * grid.mpp, rel=0.01)
        monkeypatch.setattr(viewer_image, "VIEWER_MAX_PIXELS", 200 * 200)
        coarse = viewer_image.viewer_level(grid, slide.mpp, cmu1_store.level_count)
        h, w = cmu1_store.array(coarse).shape[1:]
        assert h * w <= 200 * 200 and coarse == math.ceil(math.log2(max(grid.width, grid.height) / 200))


def test_background_is_read_at_a_slide_level_of_its_own() -> None:
    pyramid = SimpleNamespace(mpp=(0.25, 0.25), level_downsamples=(1.0, 4.0, 16.0))
    assert viewer_image.background_mpp(pyramid, 1.6) == 4.0  # not 3.2 from the 1 µm/px level
    assert viewer_image.background_mpp(pyramid, 1.9) == 4.0
    assert viewer_image.background_mpp(pyramid, 2.5) == 5.0  # nothing coarse enough: read at 2×
    single = SimpleNamespace(mpp=(0.5, 0.5), level_downsamples=(1.0,))
    assert viewer_image.background_mpp(single, 1.0) == 2.0


def test_tissue_comes_from_the_store_and_the_rest_from_the_background(
    cmu1: Path, cmu1_store: TileStore
) -> None:
    level = 1
    with open_slide(cmu1) as slide:
        mpp = viewer_image.level_mpp(cmu1_store.grid, slide.mpp, level)
        background, background_at = viewer_image.read_background(slide, mpp[0])
        assert background_at == viewer_image.background_mpp(slide, mpp[0])
        image = viewer_image.compose(cmu1_store, level, background, slide.dimensions)
        direct = slide.thumbnail_at_mpp(mpp[0])
    h, w = cmu1_store.array(level).shape[1:]
    assert image.shape == (h, w, 3) and image.dtype == np.uint8

    # Where a written level-0 tile lies, the pixels are the store's own, exactly.
    t, span = cmu1_store.grid.tile_size, 2**level
    stored = cmu1_store.read_region(0, 0, w, h, level=level)
    row, col = cmu1_store.grid.tissue_tiles[len(cmu1_store.grid.tissue_tiles) // 2]
    block = np.s_[row * t // span : (row + 1) * t // span, col * t // span : (col + 1) * t // span]
    np.testing.assert_array_equal(image[block], stored[block])

    # Everywhere the image shows the same slide as a direct read at that resolution.
    ch, cw = min(h, direct.shape[0]), min(w, direct.shape[1])
    difference = np.abs(image[:ch, :cw].astype(int) - direct[:ch, :cw].astype(int)).mean()
    assert difference < 6, difference
    # And the background is the slide's, not the store's white fill for never-written tiles.
    untouched = np.ones((h, w), bool)
    for r, c in cmu1_store.grid.tissue_tiles:
        untouched[r * t // span : (r + 1) * t // span, c * t // span : (c + 1) * t // span] = False
    assert untouched[:ch, :cw].any()
    assert not (image[:ch, :cw][untouched[:ch, :cw]] == 255).all()


def test_threaded_resize_matches_one_pass() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (301, 233, 3), dtype=np.uint8)
    whole = viewer_image._resize(image, (466, 602), 1)
    strips = viewer_image._resize(image, (466, 602), 5)
    assert whole.shape == strips.shape == (602, 466, 3)
    assert np.abs(whole.astype(int) - strips.astype(int)).max() <= 1  # seams: rounding of the box edges


@pytest.mark.parametrize("grid_first", [True, False], ids=["grid-then-tiles", "tiles-only"])
def test_slide_pictures_match_the_direct_composition(
    cmu1: Path, cmu1_store: TileStore, grid_first: bool
) -> None:
    from pathoflash.export.viewer import encode_slide_levels
    from pathoflash.heatmap import png_mpp_for, viewer_mpp_for
    from pathoflash.outputs import SlidePictures, coarser

    timings: dict[str, float] = {}
    with open_slide(cmu1) as slide, SlidePictures(slide, timings) as pictures:
        with pytest.raises(RuntimeError, match="tiles_ready"):
            pictures.viewer_levels()
        if grid_first:
            pictures.grid_ready(cmu1_store.grid)
        pictures.tiles_ready(cmu1_store.path)
        levels = pictures.viewer_levels()
        thumbnail, thumbnail_mpp = pictures.thumbnail()

        background, background_at = viewer_image.read_background(
            slide, viewer_mpp_for(slide.dimensions, slide.mpp)
        )
        level = viewer_image.viewer_level(cmu1_store.grid, slide.mpp, cmu1_store.level_count)
        direct = viewer_image.compose(cmu1_store, level, background, slide.dimensions)
        png_mpp = png_mpp_for(slide.dimensions, slide.mpp)
        source, source_mpp = (background, background_at) if background_at <= png_mpp else (direct, None)
        expected_thumbnail = coarser(
            source, source_mpp or viewer_image.level_mpp(cmu1_store.grid, slide.mpp, level)[0], png_mpp, slide
        )
    assert thumbnail_mpp == png_mpp
    np.testing.assert_array_equal(thumbnail, expected_thumbnail)
    direct_levels = encode_slide_levels(
        direct, viewer_image.level_mpp(cmu1_store.grid, slide.mpp, level), slide.mpp
    )
    assert levels.mpp == direct_levels.mpp and levels.levels == direct_levels.levels
    assert {"viewer image", "viewer levels"} <= timings.keys()
