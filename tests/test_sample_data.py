"""The synthetic-slide generator: OpenSlide reads what it writes, pixels and truth agree, and it scales."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import openslide
import pytest
from pathoflash.sample_data import (
    GENERATOR_VERSION,
    SampleSlide,
    TruthFileError,
    read_tissue,
    read_truth,
    sample_layout,
    tissue_truth_mask,
    truth_mask,
    truth_path_for,
    write_sample_slide,
)
from pathoflash.sample_data.render import TileRenderer

from pathoflash.errors import ConfigError

SIZE = (2304, 1792)  # level-0 px: two levels (2304 → 576), several pieces, quick to write


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> SampleSlide:
    """A 20x slide with tumor, folds and pen marks."""
    return write_sample_slide(
        tmp_path_factory.mktemp("sample") / "s.svs", seed=11, size=SIZE, mpp=0.5, workers=2
    )


@pytest.fixture(scope="module")
def clean_slide(tmp_path_factory: pytest.TempPathFactory) -> SampleSlide:
    """A 20x slide without pen marks or folds, for colour statistics."""
    return write_sample_slide(
        tmp_path_factory.mktemp("clean") / "c.svs",
        seed=5,
        size=(3072, 3072),
        mpp=0.5,
        pen_marks=False,
        folds=False,
    )


def _level0(path: Path) -> np.ndarray:
    with openslide.OpenSlide(str(path)) as osr:
        w, h = osr.dimensions
        return np.asarray(osr.read_region((0, 0), 0, (w, h)).convert("RGB"))


# -- the file --------------------------------------------------------------------------------------


def test_openslide_reads_it_as_aperio_with_mpp_and_power(slide: SampleSlide) -> None:
    assert slide.path.is_file() and slide.truth_path == truth_path_for(slide.path)
    assert slide.truth_path.name == "s.truth.geojson"
    with openslide.OpenSlide(str(slide.path)) as osr:
        props = osr.properties
        assert props["openslide.vendor"] == "aperio"
        assert float(props["openslide.mpp-x"]) == pytest.approx(0.5)
        assert float(props["openslide.mpp-y"]) == pytest.approx(0.5)
        assert props["openslide.objective-power"] == "20"
        assert osr.dimensions == SIZE
        assert osr.level_count == 2
        assert osr.level_dimensions[1] == (576, 448)
        assert osr.level_downsamples == pytest.approx((1.0, 4.0))
        assert set(osr.associated_images) == {"thumbnail", "label", "macro"}
        assert int(props["openslide.level[0].tile-width"]) == 256


def test_forty_x_at_quarter_micron_and_pyramid_of_fours(tmp_path: Path) -> None:
    s = write_sample_slide(tmp_path / "x40.svs", seed=1, size=(4500, 1100), mpp=0.25, tumor=False)
    with openslide.OpenSlide(str(s.path)) as osr:
        assert osr.properties["openslide.objective-power"] == "40"
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        assert osr.level_dimensions == ((4500, 1100), (1125, 275), (282, 69))
        assert osr.level_downsamples == pytest.approx((1.0, 4.0, 4500 / 282), rel=1e-3)
    assert read_truth(s.truth_path) == []  # tumor=False: an empty FeatureCollection
    assert s.tumor_fraction == 0.0


def test_pathoflash_slide_reads_typed_mpp(slide: SampleSlide) -> None:
    from pathoflash.slide import open_slide

    with open_slide(slide.path) as s:
        assert s.mpp == pytest.approx((0.5, 0.5))
        region = s.read_region((0, 0), 0, (64, 32))
        assert region.shape == (32, 64, 3) and region.dtype == np.uint8


def test_lower_levels_are_box_averages_of_level0(slide: SampleSlide) -> None:
    full = _level0(slide.path).astype(np.float32)
    h, w = full.shape[0] // 4 * 4, full.shape[1] // 4 * 4
    expected = full[:h, :w].reshape(h // 4, 4, w // 4, 4, 3).mean(axis=(1, 3))
    with openslide.OpenSlide(str(slide.path)) as osr:
        lw, lh = osr.level_dimensions[1]
        level1 = np.asarray(osr.read_region((0, 0), 1, (lw, lh)).convert("RGB")).astype(np.float32)
    # level 1 is averaged from the pixels before JPEG, level 0 is read back after: JPEG error only
    error = np.abs(level1[: h // 4, : w // 4] - expected).mean()
    shifted = np.abs(level1[1 : h // 4, : w // 4] - expected[:-1]).mean()
    assert error < 4.0 and error < 0.5 * shifted


def test_jpeg_colours_round_trip_through_openslide(tmp_path: Path) -> None:
    layout = sample_layout(seed=3, size=(1024, 1024), mpp=0.5, pen_marks=False)
    rendered = TileRenderer(layout).render(0, 0, 1024, 1024).astype(np.float32)
    s = write_sample_slide(tmp_path / "rt.svs", seed=3, size=(1024, 1024), mpp=0.5, pen_marks=False)
    read = _level0(s.path).astype(np.float32)
    # JPEG error only: a swapped channel or a YCbCr/RGB mix-up would be tens of levels off
    assert (np.abs(read - rendered).mean(axis=(0, 1)) < 5.0).all()
    assert np.abs(read.mean(axis=(0, 1)) - rendered.mean(axis=(0, 1))).max() < 1.0


def test_same_seed_same_bytes_other_seed_other_pixels(tmp_path: Path) -> None:
    kwargs = {"size": (1536, 1280), "mpp": 0.5}
    a = write_sample_slide(tmp_path / "a" / "s.svs", seed=7, workers=1, **kwargs)
    b = write_sample_slide(tmp_path / "b" / "s.svs", seed=7, workers=2, **kwargs)
    c = write_sample_slide(tmp_path / "c" / "s.svs", seed=8, **kwargs)
    pa, pb, pc = _level0(a.path), _level0(b.path), _level0(c.path)
    assert np.array_equal(pa, pb)
    assert hashlib.sha256(a.path.read_bytes()).digest() == hashlib.sha256(b.path.read_bytes()).digest()
    assert a.truth_path.read_text() == b.truth_path.read_text()
    assert np.abs(pa.astype(int) - pc.astype(int)).mean() > 5


def test_worker_processes_write_the_same_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathoflash.sample_data import generate

    kwargs = {"seed": 9, "size": (1536, 1024), "mpp": 0.5, "workers": 2}
    threads = write_sample_slide(tmp_path / "t" / "s.svs", **kwargs)
    monkeypatch.setattr(generate, "_PROCESSES_FROM_PX", 0)  # any tissue at all: render in processes
    procs = write_sample_slide(tmp_path / "p" / "s.svs", **kwargs)
    assert threads.path.read_bytes() == procs.path.read_bytes()


def test_tiles_join_without_seams() -> None:
    layout = sample_layout(seed=2, size=(4096, 4096), mpp=0.25, tissue_fraction=0.6)
    renderer = TileRenderer(layout)
    x0, y0 = (int(v) for v in layout.tumors[0].mean(axis=0)) if layout.tumors else (2048, 2048)
    whole = renderer.render(x0, y0, 512, 384)
    left = renderer.render(x0, y0, 200, 384)
    right = renderer.render(x0 + 200, y0, 312, 384)
    top = renderer.render(x0, y0, 512, 97)
    assert np.array_equal(whole, np.concatenate([left, right], axis=1))
    assert np.array_equal(whole[:97], top)


def test_progress_reaches_total(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    write_sample_slide(
        tmp_path / "p.svs", seed=4, size=(1400, 1300), mpp=0.5, progress=lambda d, t: calls.append((d, t))
    )
    assert calls and all(t == calls[0][1] for _, t in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == calls[0][1]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": (0, 100)},
        {"size": (10**6, 100)},
        {"size": "big"},
        {"mpp": 0.0},
        {"mpp": float("nan")},
        {"seed": -1},
        {"seed": 1.5},
        {"tissue_fraction": 0.0},
        {"quality": 0},
        {"workers": 0},
    ],
)
def test_bad_arguments_raise_config_error(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        write_sample_slide(tmp_path / "bad.svs", **kwargs)
    assert not (tmp_path / "bad.svs").exists()


# -- what the pixels show ------------------------------------------------------------------------------


def test_tumor_is_darker_more_purple_and_more_nuclear_than_stroma(clean_slide: SampleSlide) -> None:
    rgb = _level0(clean_slide.path).astype(np.float32)
    shape = rgb.shape[:2]
    tumor = truth_mask(clean_slide.truth_path, shape)
    tissue = tissue_truth_mask(clean_slide.truth_path, shape)
    benign = tissue & ~tumor
    assert tumor.sum() > 10_000 and benign.sum() > 10_000
    brightness = rgb.mean(axis=2)
    nuclear = (rgb[..., 0] < 150) & (rgb[..., 2] > rgb[..., 1] + 15)  # dark, blue over green: hematoxylin
    purple = rgb[..., 2] - rgb[..., 1]
    assert brightness[tumor].mean() < brightness[benign].mean() - 15
    assert purple[tumor].mean() > purple[benign].mean() + 10
    assert nuclear[tumor].mean() > 2.5 * nuclear[benign].mean()
    assert nuclear[tumor].mean() > 0.3
    # pink stroma: red above green by a wide margin; glass outside the tissue: bright and grey
    assert (rgb[..., 0] - rgb[..., 1])[benign].mean() > 25
    glass = ~tissue_truth_mask(clean_slide.truth_path, shape) & (np.arange(shape[1]) > 8)[None, :]
    assert brightness[glass].mean() > 225
    assert np.ptp(rgb[glass].mean(axis=0)) < 12


def test_tumor_is_not_a_global_colour_shift(clean_slide: SampleSlide) -> None:
    """Between tumor nuclei the cytoplasm stays close to benign tissue in colour."""
    rgb = _level0(clean_slide.path).astype(np.float32)
    tumor = truth_mask(clean_slide.truth_path, rgb.shape[:2])
    light = rgb.mean(axis=2) > 170
    tissue = tissue_truth_mask(clean_slide.truth_path, rgb.shape[:2])
    tumor_light = rgb[tumor & light].mean(axis=0)
    benign_light = rgb[tissue & ~tumor & light].mean(axis=0)
    assert np.abs(tumor_light - benign_light).max() < 35


# -- ground truth --------------------------------------------------------------------------------------


def test_truth_is_qupath_style_geojson_inside_the_slide(slide: SampleSlide) -> None:
    doc = json.loads(slide.truth_path.read_text())
    assert doc["type"] == "FeatureCollection" and doc["features"]
    w, h = SIZE
    for feature in doc["features"]:
        assert feature["type"] == "Feature" and isinstance(feature["id"], str)
        assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
        props = feature["properties"]
        assert props["objectType"] == "annotation"
        assert props["classification"]["name"] == "Tumor"
        assert len(props["classification"]["color"]) == 3
        ring = np.asarray(feature["geometry"]["coordinates"][0])
        assert len(ring) >= 4 and np.array_equal(ring[0], ring[-1])
        assert (ring[:, 0] >= 0).all() and (ring[:, 0] <= w).all()
        assert (ring[:, 1] >= 0).all() and (ring[:, 1] <= h).all()
    polygons = read_truth(slide.truth_path)
    assert len(polygons) == len(doc["features"])
    assert doc["slide"]["width"] == w and doc["slide"]["mpp"] == 0.5
    assert doc["slide"]["generator_version"] == GENERATOR_VERSION


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_tumor_covers_a_share_of_tissue_and_spares_a_piece(seed: int) -> None:
    layout = sample_layout(seed=seed, size=(8192, 8192), mpp=0.25)
    fraction = layout.tumor_area / layout.tissue_area
    assert 0.10 <= fraction <= 0.40
    assert len(layout.pieces) >= 2
    from pathoflash.sample_data.geometry import EdgeSet

    holders = {
        i
        for i, piece in enumerate(layout.pieces)
        for tumor in layout.tumors
        if EdgeSet.from_rings([piece]).contains(tumor[:, 0], tumor[:, 1]).all()
    }
    assert len(holders) < len(layout.pieces)  # some piece is tumor-free
    assert holders
    for tumor in layout.tumors:  # every tumor lies wholly inside one piece
        assert any(EdgeSet.from_rings([p]).contains(tumor[:, 0], tumor[:, 1]).all() for p in layout.pieces)


def test_truth_mask_rasterises_pixel_centres(tmp_path: Path) -> None:
    square = [[10, 10], [30, 10], [30, 20], [10, 20], [10, 10]]
    hole = [[14, 12], [18, 12], [18, 16], [14, 16], [14, 12]]
    other = [[0, 30], [8, 30], [8, 40], [0, 40], [0, 30]]
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [square, hole]},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Tumor", "color": [1, 2, 3]},
                },
            },
            {
                "type": "Feature",
                "geometry": {"type": "MultiPolygon", "coordinates": [[other]]},
                "properties": {"objectType": "annotation", "classification": {"name": "Stroma"}},
            },
        ],
    }
    path = tmp_path / "t.geojson"
    path.write_text(json.dumps(doc))
    mask = truth_mask(path, (40, 40))
    expected = np.zeros((40, 40), bool)
    expected[10:20, 10:30] = True
    expected[12:16, 14:18] = False
    assert np.array_equal(mask, expected)
    half = truth_mask(path, (20, 20), downsample=2.0)
    assert np.array_equal(half, expected[::2, ::2] & expected[1::2, 1::2])
    assert len(read_truth(path)) == 1 and len(read_truth(path, classification=None)) == 2
    assert read_truth(path, classification="stroma")[0].area == pytest.approx(80.0)
    with pytest.raises(TruthFileError):
        tissue_truth_mask(path, (4, 4))  # a foreign file has no tissue member


def test_truth_mask_matches_polygon_area_at_any_downsample(slide: SampleSlide) -> None:
    area = sum(p.area for p in read_truth(slide.truth_path))
    tissue_area = sum(p.area for p in read_tissue(slide.truth_path))
    w, h = SIZE
    for ds in (1.0, 4.0, 16.0):
        shape = (int(np.ceil(h / ds)), int(np.ceil(w / ds)))
        assert truth_mask(slide.truth_path, shape, ds).sum() * ds * ds == pytest.approx(area, rel=0.05)
        assert tissue_truth_mask(slide.truth_path, shape, ds).sum() * ds * ds == pytest.approx(
            tissue_area, rel=0.05
        )
    assert slide.tumor_fraction == pytest.approx(area / tissue_area)


def test_missing_or_broken_truth_file(tmp_path: Path) -> None:
    with pytest.raises(TruthFileError, match="not found"):
        read_truth(tmp_path / "nope.geojson")
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(TruthFileError):
        truth_mask(bad, (4, 4))


# -- scale -----------------------------------------------------------------------------------------------

_BIG_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathoflash.sample_data import write_sample_slide
    t = time.perf_counter()
    s = write_sample_slide(sys.argv[1], seed=3, size=(32768, 32768), mpp=0.25, tissue_fraction=0.01, workers=2)
    # VmHWM belongs to this process image (ru_maxrss can carry the parent's size over fork + exec)
    hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(time.perf_counter() - t, hwm_kb / 1024.0)
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from /proc")
def test_gigapixel_slide_in_bounded_memory(tmp_path: Path) -> None:
    out = tmp_path / "giga.svs"
    result = subprocess.run(
        [sys.executable, "-c", _BIG_SCRIPT, str(out)], capture_output=True, text=True, timeout=300, check=True
    )
    seconds, peak_mb = (float(v) for v in result.stdout.split())
    assert seconds < 240
    assert peak_mb < 600, f"peak RSS {peak_mb:.0f} MB while writing a 1.07-gigapixel slide"
    with openslide.OpenSlide(str(out)) as osr:
        assert osr.dimensions == (32768, 32768)
        assert osr.level_count == 4
        corner = np.asarray(osr.read_region((0, 0), 0, (256, 256)).convert("RGB"))
        assert corner.mean() > 225  # glass
    assert out.stat().st_size < 200e6
