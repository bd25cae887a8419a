"""The raw-JPEG read path (pathoflash.jpeg_tiles) against OpenSlide, and its fallbacks.

Tolerances were measured on these slides (libjpeg-turbo on both sides): at reduction 1 the two paths agree
exactly; at reduction 2 libjpeg's DCT-domain halving differs from OpenSlide + a 2 × 2 box mean by a mean of
0.1–0.6 levels on H&E-like slides (max ~20) and ~1.4 on the hard-edged test drawings (max ~31).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import CORRUPT_SVS_TILE, PINK, corrupt_grid_tiles, disk, rect

import pathoflash as pf
from pathoflash.errors import ConfigError, TileReadError
from pathoflash.jpeg_tiles import JpegTileError, JpegTiles, jpeg_tiles_for
from pathoflash.tiling import plan_grid, read_tile

#: Reduction 1: the same libjpeg-turbo decodes the same bytes.
MAX_DIFF_FULL = 1
#: Reduction 2, H&E-like content: mean and max abs difference from OpenSlide + 2 × 2 box mean.
MEAN_DIFF_HALF, MAX_DIFF_HALF = 1.0, 40


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


@pytest.fixture(scope="session")
def synthetic_svs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic 40× SVS (0.25 µm/px, YCbCr JPEG tiles without shared tables, two levels)."""
    from pathoflash.sample_data import write_sample_slide

    path = tmp_path_factory.mktemp("jpeg-tiles") / "synthetic.svs"
    write_sample_slide(path, seed=4, size=(1536, 1280), mpp=0.25)
    return path


def test_reader_maps_levels_to_tiled_pages(cmu1: Path, synthetic_svs: Path) -> None:
    with pf.open_slide(cmu1) as slide:
        tiles = jpeg_tiles_for(slide)
        assert tiles is not None and tiles is jpeg_tiles_for(slide)  # one reader per slide
        (level,) = tiles.levels
        assert level is not None and (level.width, level.height, level.tile_width) == (2220, 2967, 240)
        assert level.prefix.startswith(b"\xff\xee")  # photometric RGB: Adobe "no transform" marker added
    with pf.open_slide(synthetic_svs) as slide:
        tiles = jpeg_tiles_for(slide)
        assert tiles is not None and len(tiles.levels) == slide.level_count == 2
        for level, dims in zip(tiles.levels, slide.level_dimensions, strict=True):
            assert level is not None and (level.width, level.height) == dims and level.prefix == b""
        # Aperio page order: level 0, stripped thumbnail, level 1, label, macro.
        assert [lvl.page for lvl in tiles.levels if lvl is not None] == [0, 2]


@pytest.mark.parametrize(
    "region",
    [(0, 0, 512, 512), (101, 57, 480, 360), (2020, 2767, 512, 512), (-64, -32, 256, 256)],
    ids=["aligned", "unaligned", "past-edges", "before-origin"],
)
def test_full_resolution_matches_openslide_on_cmu1(cmu1: Path, region: tuple[int, int, int, int]) -> None:
    x, y, w, h = region
    with pf.open_slide(cmu1) as slide:
        tiles = jpeg_tiles_for(slide)
        assert tiles is not None
        fast = tiles.read_region(0, (x, y), (w, h), 1)
        reference = slide.read_region((x, y), 0, (w, h))
    assert fast is not None
    assert _diff(fast, reference).max() <= MAX_DIFF_FULL
    width, height = 2220, 2967
    if x + w > width:
        assert (fast[:, width - x :] == 255).all()
    if y + h > height:
        assert (fast[height - y :] == 255).all()
    if x < 0:
        assert (fast[:, :-x] == 255).all()


def test_halving_is_close_to_a_box_mean_on_cmu1(cmu1: Path) -> None:
    with pf.open_slide(cmu1) as slide:
        tiles = jpeg_tiles_for(slide)
        assert tiles is not None
        fast = tiles.read_region(0, (0, 0), (2220, 2966), 2)
        reference = slide.read_region((0, 0), 0, (2220, 2966), reduce=2)
    assert fast is not None and fast.shape == (1483, 1110, 3)
    diff = _diff(fast, reference)
    assert diff.mean() <= MEAN_DIFF_HALF and diff.max() <= MAX_DIFF_HALF


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("reduce", [1, 2])
def test_matches_openslide_on_a_synthetic_svs(synthetic_svs: Path, level: int, reduce: int) -> None:
    with pf.open_slide(synthetic_svs) as slide:
        tiles = jpeg_tiles_for(slide)
        assert tiles is not None
        width, height = slide.level_dimensions[level]
        ds = slide.level_downsamples[level]
        for x, y, w, h in [
            (0, 0, width, height),
            (2 * 37, 2 * 61, 2 * 150, 2 * 100),
            (width - 98, 6, 200, 64),
        ]:
            fast = tiles.read_region(level, (x, y), (w, h), reduce)
            reference = slide.read_region((round(x * ds), round(y * ds)), level, (w, h), reduce=reduce)
            assert fast is not None
            diff = _diff(fast, reference)
            if reduce == 1:
                assert diff.max() <= MAX_DIFF_FULL
            else:
                assert diff.mean() <= MEAN_DIFF_HALF and diff.max() <= MAX_DIFF_HALF
            if x + w > width:  # beyond the level's right edge: white
                assert (fast[:, (width - x) // reduce :] == 255).all()


def test_generic_tiff_with_missing_tiles(make_tiff) -> None:
    """Sparse tiles (no bytes) and hard edges; JFIF-tagged YCbCr tiles in a photometric-RGB TIFF."""
    path = make_tiff(
        "sparse.tif",
        size=(1500, 1000),
        shapes=[rect(100, 100, 900, 700), disk(1100, 600, 300, PINK)],
        downsamples=(1, 4),
    )
    with pf.open_slide(path) as slide:
        tiles = jpeg_tiles_for(slide)
        assert tiles is not None and slide.format == "generic-tiff"
        level0 = tiles.levels[0]
        assert level0 is not None and (level0.bytecounts == 0).any()
        for reduce in (1, 2):
            fast = tiles.read_region(0, (0, 0), (1500, 1000), reduce)
            reference = slide.read_region((0, 0), 0, (1500, 1000), reduce=reduce)
            assert fast is not None
            diff = _diff(fast, reference)
            if reduce == 1:
                assert diff.max() <= MAX_DIFF_FULL
            else:  # hard-edged drawings differ more than H&E does under DCT scaling
                assert diff.mean() <= 2 * MEAN_DIFF_HALF and diff.max() <= MAX_DIFF_HALF
        assert (fast[-100:, :40] == 255).all()  # a missing tile: white


def test_cases_the_path_leaves_to_openslide(cmu1: Path, synthetic_svs: Path) -> None:
    with pf.open_slide(cmu1) as slide:
        tiles = jpeg_tiles_for(slide)
        assert tiles is not None
        assert tiles.read_region(0, (1, 0), (64, 64), 2) is None  # odd origin for a halving
        assert tiles.read_region(0, (0, 0), (64, 66), 3) is None  # reduction 3
        assert tiles.read_region(0, (0, 2900), (64, 100), 2) is None  # straddles the odd bottom edge
        assert tiles.read_region(1, (0, 0), (64, 64), 1) is None  # no such level
        assert not tiles.applies(0, 4) and tiles.applies(0, 2)
    with pf.open_slide(synthetic_svs) as slide:
        assert JpegTiles.open(slide.path, slide.level_dimensions, "hamamatsu") is None  # not a TIFF driver
        assert JpegTiles.open(slide.path, slide.level_dimensions[:1], slide.format) is None  # levels differ


def test_non_jpeg_tiff_reads_through_openslide(make_tiff) -> None:
    path = make_tiff("raw.tif", size=(512, 512), shapes=[rect(0, 0, 300, 300)], compression=None)
    with pf.open_slide(path) as slide:
        assert jpeg_tiles_for(slide) is None
        grid = plan_grid(slide, mpp=1.0, tile_size=128)
        assert grid.integer_reduction and grid.level_scale == (2.0, 2.0)
        np.testing.assert_array_equal(
            read_tile(slide, grid, 0, 0), read_tile(slide, grid, 0, 0, decoder="openslide")
        )


def test_grid_regions_fall_back_where_the_path_does_not_apply(cmu1: Path) -> None:
    """CMU-1 is 2967 px high (odd): halved grid tiles on the bottom row come from OpenSlide, exactly."""
    with pf.open_slide(cmu1) as slide:
        grid = plan_grid(slide, mpp=1.0, tile_size=256)
        last = grid.rows - 1
        np.testing.assert_array_equal(
            read_tile(slide, grid, last, 1), read_tile(slide, grid, last, 1, decoder="openslide")
        )
        inside = read_tile(slide, grid, 2, 1)
        assert _diff(inside, read_tile(slide, grid, 2, 1, decoder="openslide")).mean() <= MEAN_DIFF_HALF


def test_corrupt_tile_raises_and_grid_reads_fall_back(corrupt_svs: Path) -> None:
    row, col = CORRUPT_SVS_TILE
    with pf.open_slide(corrupt_svs) as slide:
        tiles = jpeg_tiles_for(slide)
        assert tiles is not None
        with pytest.raises(JpegTileError, match="not a complete JPEG stream"):
            tiles.read_region(0, (col * 240, row * 240), (240, 240), 1)
        grid = plan_grid(slide, mpp=slide.mpp[0], tile_size=256)
        bad = sorted(corrupt_grid_tiles(256))
        for decoder in ("auto", "openslide"):
            with pytest.raises(TileReadError):
                read_tile(slide, grid, *bad[0], decoder=decoder)  # type: ignore[arg-type]


def test_tile_cut_short_falls_back(cmu1: Path, tmp_path: Path) -> None:
    """A tile whose end is overwritten (no EOI) is not decoded here: OpenSlide reports it as before."""
    path = tmp_path / "cut.svs"
    shutil.copy(cmu1, path)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert isinstance(page, tifffile.TiffPage)
        index = 2 * 10 + 3
        offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
    with open(path, "r+b") as handle:
        handle.seek(offset + count // 3)
        handle.write(b"\0" * (count - count // 3))
    with pf.open_slide(path) as slide:
        tiles = jpeg_tiles_for(slide)
        assert tiles is not None
        with pytest.raises(JpegTileError):
            tiles.read_region(0, (3 * 240, 2 * 240), (240, 240), 1)
        grid = plan_grid(slide, mpp=slide.mpp[0], tile_size=240)
        with pytest.raises(TileReadError):
            read_tile(slide, grid, 2, 3)


def test_tile_slide_same_store_with_either_decoder(synthetic_svs: Path, tmp_path: Path) -> None:
    stores = {
        decoder: pf.tile_slide(
            synthetic_svs,
            tmp_path / decoder / "tiles.zarr",
            mpp=0.5,
            tile_size=128,
            workers=2,
            decoder=decoder,
        )
        for decoder in ("auto", "openslide")
    }
    auto, openslide = stores["auto"], stores["openslide"]
    assert auto.grid == openslide.grid and auto.grid.level_scale == (2.0, 2.0)
    assert len(auto.grid.tissue_tiles) > 10
    assert not auto.unreadable_tiles and not openslide.unreadable_tiles
    diffs = [_diff(auto.read_tile(r, c), openslide.read_tile(r, c)) for r, c in auto.grid.tissue_tiles]
    assert max(d.mean() for d in diffs) <= MEAN_DIFF_HALF
    assert max(int(d.max()) for d in diffs) <= MAX_DIFF_HALF


def test_tile_slide_corrupt_svs_same_unreadable_tiles(corrupt_svs: Path, tmp_path: Path) -> None:
    stores = [
        pf.tile_slide(corrupt_svs, tmp_path / decoder / "tiles.zarr", mpp=0.5, workers=2, decoder=decoder)
        for decoder in ("auto", "openslide")
    ]
    auto, openslide = stores
    assert auto.unreadable_tiles == openslide.unreadable_tiles
    assert set(auto.unreadable_tiles) == corrupt_grid_tiles(256) & set(auto.grid.tissue_tiles)
    for r, c in auto.grid.tissue_tiles:  # CMU-1 at its own resolution: reduction 1, the same pixels
        assert _diff(auto.read_tile(r, c), openslide.read_tile(r, c)).max() <= MAX_DIFF_FULL


def test_unknown_decoder_is_refused(cmu1: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="decoder"):
        pf.tile_slide(cmu1, tmp_path / "tiles.zarr", decoder="nvjpeg")  # type: ignore[arg-type]


def test_closed_reader_falls_back(cmu1: Path) -> None:
    with pf.open_slide(cmu1) as slide:
        tiles = jpeg_tiles_for(slide)
        assert tiles is not None
        tiles.close()
        with pytest.raises(JpegTileError, match="closed"):
            tiles.read_region(0, (0, 0), (64, 64), 1)
        grid = plan_grid(slide, mpp=slide.mpp[0], tile_size=256)
        np.testing.assert_array_equal(
            read_tile(slide, grid, 2, 2), read_tile(slide, grid, 2, 2, decoder="openslide")
        )


def test_closing_the_slide_closes_the_reader(cmu1: Path) -> None:
    slide = pf.open_slide(cmu1)
    tiles = jpeg_tiles_for(slide)
    assert tiles is not None
    slide.close()
    with pytest.raises(JpegTileError, match="closed"):
        tiles.read_region(0, (0, 0), (64, 64), 1)


@pytest.mark.parametrize("reduce", [1, 2])
def test_direct_decoding_equals_image_open(
    cmu1: Path, synthetic_svs: Path, monkeypatch: pytest.MonkeyPatch, reduce: int
) -> None:
    """Pillow's decoder called directly (the default) and through Image.open give the same pixels."""
    import pathoflash.jpeg_tiles as jt

    for path in (cmu1, synthetic_svs):
        with pf.open_slide(path) as slide:
            tiles = jpeg_tiles_for(slide)
            assert tiles is not None
            w, h = slide.level_dimensions[0]
            direct = tiles.read_region(0, (0, 0), (w - w % 2, h - h % 2), reduce)
            monkeypatch.setattr(jt, "_direct_decoding", False)
            through_open = tiles.read_region(0, (0, 0), (w - w % 2, h - h % 2), reduce)
            monkeypatch.setattr(jt, "_direct_decoding", True)
        assert direct is not None and through_open is not None
        np.testing.assert_array_equal(direct, through_open)


def test_direct_decoding_refuses_short_and_wrong_size_streams(synthetic_svs: Path) -> None:
    import pathoflash.jpeg_tiles as jt

    with pf.open_slide(synthetic_svs) as slide:
        tiles = jpeg_tiles_for(slide)
        assert tiles is not None
        level = tiles.levels[0]
        index = int(np.argmax(level.bytecounts))
        with open(synthetic_svs, "rb") as fh:
            fh.seek(int(level.offsets[index]))
            stream = fh.read(int(level.bytecounts[index]))
    size = (level.tile_width, level.tile_height)
    assert jt._decode_direct(stream, size, 1, "t").shape == (size[1], size[0], 3)
    with pytest.raises(JpegTileError, match="ends before"):
        jt._decode_direct(stream[: len(stream) // 2], size, 1, "t")
    with pytest.raises(JpegTileError, match="ends before"):  # the image asks for more rows than the JPEG has
        jt._decode_direct(stream, (size[0] + 16, size[1] + 16), 1, "t")
    with pytest.raises(JpegTileError, match="libjpeg error"):  # smaller than the JPEG
        jt._decode_direct(stream, (size[0] - 16, size[1] - 16), 1, "t")


def test_a_pillow_without_the_internals_falls_back_to_image_open(
    synthetic_svs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pathoflash.jpeg_tiles as jt

    def missing(*args: object) -> np.ndarray:
        raise AttributeError("module 'PIL._imaging' has no attribute 'jpeg_decoder'")

    monkeypatch.setattr(jt, "_decode_direct", missing)
    monkeypatch.setattr(jt, "_direct_decoding", True)
    with pf.open_slide(synthetic_svs) as slide:
        tiles = jpeg_tiles_for(slide)
        assert tiles is not None
        got = tiles.read_region(0, (0, 0), (512, 512), 2)
        reference = slide.read_region((0, 0), 0, (512, 512), reduce=2)
    assert got is not None and _diff(got, reference).mean() <= MEAN_DIFF_HALF
    assert jt._direct_decoding is False
