"""heatmap.tif read back by OpenSlide (what QuPath's OpenSlide server uses) and checked with tifffile."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

import pathoflash as pf
from pathoflash.export.colormap import NO_DATA_RGB, viridis_lut
from pathoflash.export.tiff import tiff_palette
from pathoflash.heatmap import Heatmap

CMU1 = Path(__file__).parent / "fixtures" / "CMU-1-Small-Region.svs"
CMU1_SIZE = (2220, 2967)
CMU1_MPP = 0.499


def colour_of(p: float) -> tuple[int, int, int]:
    """The TIFF's colour for probability ``p``: palette index round(254 p), i.e. the colour map at that step."""
    r, g, b = tiff_palette()[round(p * 254)]
    return int(r), int(g), int(b)


def test_palette_is_the_colour_map() -> None:
    palette, lut = tiff_palette(), viridis_lut()
    assert palette.shape == (256, 3)
    assert (
        (palette[0] == lut[0]).all() and (palette[254] == lut[255]).all() and (palette[127] == lut[128]).all()
    )
    assert tuple(palette[255]) == NO_DATA_RGB


def cmu1_heatmap() -> Heatmap:
    """A heatmap over CMU-1's frame (8 µm/px → 16.03 level-0 px per heatmap px): a ramp, NaN at the top."""
    rows, cols = int(np.ceil(CMU1_SIZE[1] * CMU1_MPP / 8)), int(np.ceil(CMU1_SIZE[0] * CMU1_MPP / 8))
    p = np.tile(np.linspace(0, 1, cols, dtype=np.float32), (rows, 1))
    p[:20] = np.nan
    return Heatmap(
        probabilities=p, mpp=8.0, slide_dimensions=CMU1_SIZE, slide_mpp=(CMU1_MPP, CMU1_MPP), model_id="t"
    )


def read_pixel(slide: openslide.OpenSlide, x: int, y: int, level: int = 0) -> tuple[int, int, int]:
    rgba = np.asarray(slide.read_region((x, y), level, (1, 1)))[0, 0]
    assert rgba[3] == 255
    return int(rgba[0]), int(rgba[1]), int(rgba[2])


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Heatmap, Path]:
    heatmap = cmu1_heatmap()
    path = heatmap.to_tiff(tmp_path_factory.mktemp("tiff") / "heatmap.tif")
    return heatmap, path


def test_openslide_opens_it_in_the_slide_frame(written: tuple[Heatmap, Path]) -> None:
    _, path = written
    with openslide.OpenSlide(str(path)) as tif, openslide.OpenSlide(str(CMU1)) as svs:
        assert tif.properties["openslide.vendor"] == "generic-tiff"
        assert tif.dimensions == svs.dimensions == CMU1_SIZE
        assert float(tif.properties["openslide.mpp-x"]) == pytest.approx(CMU1_MPP, rel=1e-6)
        assert float(tif.properties["openslide.mpp-y"]) == pytest.approx(CMU1_MPP, rel=1e-6)
        assert tif.level_count >= 4
        for level, downsample in enumerate(tif.level_downsamples):
            assert downsample == pytest.approx(2**level, rel=0.01)
        w, h = tif.level_dimensions[-1]
        assert max(w, h) <= 512
    with pf.open_slide(path) as slide:  # our own reader agrees
        assert slide.mpp == pytest.approx((CMU1_MPP, CMU1_MPP))


def test_pixel_colours_match_probabilities(written: tuple[Heatmap, Path]) -> None:
    heatmap, path = written
    sx, sy = heatmap.pixel_size
    with openslide.OpenSlide(str(path)) as tif:
        for row, col in [(25, 0), (25, 69), (100, 137), (180, 30), (60, 110)]:
            x, y = int((col + 0.5) * sx), int((row + 0.5) * sy)
            assert read_pixel(tif, x, y) == colour_of(float(heatmap.probabilities[row, col])), (row, col)
        # No data (NaN rows at the top) is white, like slide background.
        assert read_pixel(tif, 500, 100) == NO_DATA_RGB
        # Pixel-exact block edges: the level-0 pixel just left/right of a heatmap column edge.
        edge = 50 * sx
        y = int(30.5 * sy)
        assert read_pixel(tif, int(np.floor(edge - 0.5)), y) == colour_of(
            float(heatmap.probabilities[30, 49])
        )
        assert read_pixel(tif, int(np.ceil(edge + 0.5)), y) == colour_of(float(heatmap.probabilities[30, 50]))
        # Level 1 (2× reduced): still nearest to the heatmap pixel it lies in.
        x1, y1 = int((100 + 0.5) * sx / 2), int((90 + 0.5) * sy / 2)
        assert read_pixel(tif, x1 * 2, y1 * 2, level=1) == colour_of(float(heatmap.probabilities[90, 100]))
        # The coarsest level averages heatmap pixels: a smooth ramp stays a ramp (left darker than right).
        last = tif.level_count - 1
        w, h = tif.level_dimensions[last]
        d = tif.level_downsamples[last]
        strip = np.asarray(tif.read_region((0, int(h * 0.8 * d)), last, (w, 1)))[0, :, :3].astype(int)
        brightness = strip.sum(axis=1)
        assert brightness[w // 10] < brightness[w // 2] < brightness[w - w // 10]


def test_tiff_layout_is_what_openslide_generic_tiff_reads(written: tuple[Heatmap, Path]) -> None:
    _, path = written
    with tifffile.TiffFile(path) as tif:
        pages = tif.pages
        assert len(pages) >= 4
        for index, page in enumerate(pages):
            assert isinstance(page, tifffile.TiffPage)
            assert page.is_tiled and (page.tilewidth, page.tilelength) == (512, 512)
            assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
            assert page.photometric == tifffile.PHOTOMETRIC.PALETTE
            assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
            assert page.subfiletype == (0 if index == 0 else tifffile.FILETYPE.REDUCEDIMAGE)
            assert not page.subifds  # levels are top-level IFDs
        level0 = pages[0].asarray()
    assert level0.shape == (CMU1_SIZE[1], CMU1_SIZE[0]) and level0.dtype == np.uint8
    # The stored values are the quantised probabilities themselves (255 = no data).
    heatmap = cmu1_heatmap()
    sx, sy = heatmap.pixel_size
    for row, col in [(30, 10), (150, 100)]:
        expected = round(float(heatmap.probabilities[row, col]) * 254)
        assert level0[int((row + 0.5) * sy), int((col + 0.5) * sx)] == expected
    assert level0[100, 100] == 255


def test_coarser_base_keeps_the_physical_frame(tmp_path: Path) -> None:
    heatmap = cmu1_heatmap()
    path = heatmap.to_tiff(tmp_path / "coarse.tif", base_mpp=2.0)
    with openslide.OpenSlide(str(path)) as tif:
        w, h = tif.dimensions
        assert (w, h) == (round(CMU1_SIZE[0] * CMU1_MPP / 2.0), round(CMU1_SIZE[1] * CMU1_MPP / 2.0))
        mpp_x, mpp_y = float(tif.properties["openslide.mpp-x"]), float(tif.properties["openslide.mpp-y"])
        # Same physical extent as the slide (to well under a pixel).
        assert w * mpp_x == pytest.approx(CMU1_SIZE[0] * CMU1_MPP, rel=1e-6)
        assert h * mpp_y == pytest.approx(CMU1_SIZE[1] * CMU1_MPP, rel=1e-6)
        # 4 µm/px base pixels: heatmap pixel (row, col) centre is at ((col + 0.5) · 4, …).
        row, col = 120, 77
        assert read_pixel(tif, int((col + 0.5) * 8 / mpp_x), int((row + 0.5) * 8 / mpp_y)) == colour_of(
            float(heatmap.probabilities[row, col])
        )


def test_big_mostly_empty_slide_is_fast_and_small(tmp_path: Path) -> None:
    """A 40k × 30k slide with a small tissue island: blank tiles are shared, nothing full-size is built."""
    rows, cols = 30_000 * 0.25 // 8, 40_000 * 0.25 // 8
    p = np.full((int(rows), int(cols)), np.nan, dtype=np.float32)
    p[100:140, 200:260] = 0.7
    heatmap = Heatmap(probabilities=p, mpp=8.0, slide_dimensions=(40_000, 30_000), slide_mpp=(0.25, 0.25))
    start = time.perf_counter()
    path = heatmap.to_tiff(tmp_path / "big.tif", workers=2)
    elapsed = time.perf_counter() - start
    assert elapsed < 20, f"took {elapsed:.1f} s"
    # Blank tiles share one data block: the file is mostly its tile offset tables (18.5k tiles at level 0).
    assert path.stat().st_size < 600_000
    with tifffile.TiffFile(path) as tf:
        offsets = tf.pages[0].dataoffsets
        assert len(set(offsets)) < 100 < len(offsets)
    with openslide.OpenSlide(str(path)) as tif:
        assert tif.dimensions == (40_000, 30_000)
        assert read_pixel(tif, int(230.5 * 32), int(120.5 * 32)) == colour_of(0.7)
        assert read_pixel(tif, 35_000, 25_000) == NO_DATA_RGB


def test_origin_offset_shifts_the_image(tmp_path: Path) -> None:
    p = np.full((10, 10), 0.25, dtype=np.float32)
    heatmap = Heatmap(
        probabilities=p, mpp=8.0, slide_dimensions=(400, 300), slide_mpp=(0.5, 0.5), origin=(100.0, 50.0)
    )
    with openslide.OpenSlide(str(heatmap.to_tiff(tmp_path / "o.tif"))) as tif:
        assert read_pixel(tif, 99, 60) == NO_DATA_RGB
        assert read_pixel(tif, 101, 60) == colour_of(0.25)
        assert read_pixel(tif, 120, 49) == NO_DATA_RGB
        assert read_pixel(tif, 259, 209) == colour_of(0.25)
        assert read_pixel(tif, 261, 120) == NO_DATA_RGB


def test_bad_options_are_rejected(tmp_path: Path) -> None:
    heatmap = cmu1_heatmap()
    with pytest.raises(ValueError, match="tile_size"):
        heatmap.to_tiff(tmp_path / "a.tif", tile_size=100)
    with pytest.raises(ValueError, match="base_mpp"):
        heatmap.to_tiff(tmp_path / "a.tif", base_mpp=-1.0)
    assert not list(tmp_path.iterdir())


def odd_heatmap(seed: int) -> Heatmap:
    """A heatmap that lines up with nothing: non-integer scale, an origin offset, NaN patches and edges."""
    rng = np.random.default_rng(seed)
    p = rng.random((77, 131)).astype(np.float32)
    p[rng.random(p.shape) < 0.6] = np.nan
    p[:, :9] = np.nan
    return Heatmap(
        probabilities=p,
        mpp=7.3,
        slide_dimensions=(3100, 1900),
        slide_mpp=(0.2631, 0.2631),
        origin=(37.5, -20.0),
    )


@pytest.mark.parametrize(("seed", "tile_size"), [(0, 512), (1, 128), (2, 48)])
def test_tiles_sampled_in_runs_are_the_tiles_sampled_one_by_one(seed: int, tile_size: int) -> None:
    """Every level's data tiles from ``encode_run`` (a row of tiles at once) match the per-tile reference, and
    the tiles marked as holding data are exactly those whose samples are not all no-data."""
    from pathoflash.export import tiff
    from pathoflash.export.sampling import gather

    heatmap = odd_heatmap(seed)
    for level in tiff.pyramid_levels(heatmap.slide_dimensions, heatmap.slide_dimensions, tile_size):
        key = tiff.reduction_factors(level.pixel_size, heatmap.pixel_size)
        tiles = tiff._LevelTiles(heatmap, level, tile_size, tiff._source(heatmap, *key))
        t = tile_size
        for i in range(tiles.n_rows):
            for j in range(tiles.n_cols):
                sampled = gather(
                    tiles.index, tiles.rows[i * t : (i + 1) * t], tiles.cols[j * t : (j + 1) * t], 255
                )
                assert tiles.tile_has_data[i, j] == (sampled != tiff.NO_DATA_INDEX).any()
            columns = np.flatnonzero(tiles.tile_has_data[i])
            for run in (columns, columns[::2]):  # runs need not be contiguous
                assert tiles.encode_run(i, run) == [tiles.encode((i, j)) for j in run]


def test_the_file_is_the_one_written_tile_by_tile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Byte for byte the file of the per-tile path (one pool task and one ``bytes`` copy per tile)."""
    from pathoflash.export import tiff

    heatmap = odd_heatmap(3)
    fast = tiff.write_tiff(heatmap, tmp_path / "runs.tif", tile_size=128, workers=3).read_bytes()

    def one_by_one(self: tiff._LevelTiles, pool: object) -> object:
        for i in range(self.n_rows):
            for j in range(self.n_cols):
                yield self.encode((i, j)) if self.tile_has_data[i, j] else b""

    monkeypatch.setattr(tiff._LevelTiles, "encoded", one_by_one)
    assert tiff.write_tiff(heatmap, tmp_path / "tiles.tif", tile_size=128, workers=3).read_bytes() == fast
