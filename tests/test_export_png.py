"""heatmap.png read back with PIL: blended colours where the heatmap has values, colour bar, scale bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pathoflash as pf
from pathoflash.export.colormap import viridis_lut
from pathoflash.export.png import length_label, nice_length, render_png
from pathoflash.heatmap import Heatmap

CMU1 = Path(__file__).parent / "fixtures" / "CMU-1-Small-Region.svs"
THUMB_MPP = 4.0


@pytest.fixture(scope="module")
def cmu1() -> tuple[Heatmap, np.ndarray]:
    with pf.open_slide(CMU1) as slide:
        thumbnail = slide.thumbnail_at_mpp(THUMB_MPP)
        rows, cols = (
            int(np.ceil(slide.dimensions[1] * slide.mpp[1] / 8)),
            int(np.ceil(slide.dimensions[0] * slide.mpp[0] / 8)),
        )
        p = np.full((rows, cols), np.nan, dtype=np.float32)
        p[40:120, 20:100] = np.linspace(0, 1, 80, dtype=np.float32)[None, :]  # left→right ramp
        heatmap = Heatmap(probabilities=p, mpp=8.0, slide_dimensions=slide.dimensions, slide_mpp=slide.mpp)
    return heatmap, thumbnail


def test_png_blends_heatmap_over_thumbnail(cmu1: tuple[Heatmap, np.ndarray], tmp_path: Path) -> None:
    heatmap, thumbnail = cmu1
    path = heatmap.to_png(tmp_path / "heatmap.png", thumbnail, thumbnail_mpp=THUMB_MPP, opacity=0.5)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        picture = np.asarray(im)
    h, w = thumbnail.shape[:2]
    assert picture.shape[0] >= h and picture.shape[1] > w  # image + legend panel on the right
    # Outside the heatmap (NaN) the thumbnail is untouched (away from the scale bar at the bottom left).
    assert np.array_equal(picture[:70, :, :][:, :w], thumbnail[:70])
    # Inside: heatmap pixel (row 80, col 60) is 2×2 thumbnail pixels at 4 µm/px → thumbnail (160..161, 120..121).
    p = float(heatmap.probabilities[80, 60])
    colour = viridis_lut()[round(p * 255)].astype(float)
    expected = np.rint(thumbnail[161, 121].astype(float) * 0.5 + colour * 0.5)
    assert np.abs(picture[161, 121].astype(float) - expected).max() <= 1


def test_png_has_colour_bar_and_scale_bar(cmu1: tuple[Heatmap, np.ndarray]) -> None:
    heatmap, thumbnail = cmu1
    picture = render_png(heatmap, thumbnail, thumbnail_mpp=(THUMB_MPP, THUMB_MPP))
    h, w = thumbnail.shape[:2]
    panel = picture[:, w:]
    lut = viridis_lut()
    # The colour bar holds both ends of the colour map, top (1) above bottom (0).
    top = np.argwhere(np.all(panel == lut[255], axis=-1))
    bottom = np.argwhere(np.all(panel == lut[0], axis=-1))
    assert len(top) and len(bottom)
    assert top[:, 0].max() < bottom[:, 0].min()
    # Labels are drawn: dark text pixels in the panel, besides the bar.
    assert (panel.sum(axis=-1) < 150).sum() > 50
    # Scale bar: the longest horizontal run of pure black in the bottom-left corner has the nice length.
    corner = picture[h - 60 : h, : w // 2]
    black = np.all(corner == 0, axis=-1)
    run = max(
        np.diff(np.flatnonzero(np.diff(np.r_[0, row, 0]))).max(initial=0) if row.any() else 0 for row in black
    )
    length_um = nice_length(THUMB_MPP * w / 4)
    assert run == round(length_um / THUMB_MPP)


def test_png_without_thumbnail_shows_the_heatmap_alone(
    cmu1: tuple[Heatmap, np.ndarray], tmp_path: Path
) -> None:
    heatmap, _ = cmu1
    path = heatmap.to_png(tmp_path / "bare.png")
    with Image.open(path) as im:
        picture = np.asarray(im)
    assert max(picture.shape[:2]) >= 1024
    lut = viridis_lut()
    assert np.all(picture == lut[255], axis=-1).any()  # full-opacity colours: p = 1 at the ramp's right end


def test_png_from_a_slide_equals_png_from_its_thumbnail(
    tmp_path: Path, cmu1: tuple[Heatmap, np.ndarray]
) -> None:
    heatmap, _ = cmu1
    with pf.open_slide(CMU1) as slide:
        from_slide = heatmap.to_png(tmp_path / "a.png", slide, thumbnail_mpp=8.0)
        from_array = heatmap.to_png(tmp_path / "b.png", slide.thumbnail_at_mpp(8.0), thumbnail_mpp=8.0)
    with Image.open(from_slide) as a, Image.open(from_array) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_scale_bar_lengths_and_labels() -> None:
    assert nice_length(730) == 500
    assert nice_length(2400) == 2000
    assert nice_length(99) == 50
    assert nice_length(1.0) == 1
    assert length_label(500) == "500 µm"
    assert length_label(2000) == "2 mm"
    assert length_label(500, micro="u") == "500 um"


def test_bad_inputs_are_rejected(cmu1: tuple[Heatmap, np.ndarray], tmp_path: Path) -> None:
    heatmap, thumbnail = cmu1
    with pytest.raises(ValueError, match="opacity"):
        heatmap.to_png(tmp_path / "a.png", thumbnail, thumbnail_mpp=THUMB_MPP, opacity=2.0)
    with pytest.raises(ValueError, match="uint8"):
        heatmap.to_png(tmp_path / "a.png", thumbnail.astype(np.float32), thumbnail_mpp=THUMB_MPP)
    assert not list(tmp_path.iterdir())


def test_thumbnail_mpp_is_inferred_from_its_size(cmu1: tuple[Heatmap, np.ndarray], tmp_path: Path) -> None:
    """Without ``thumbnail_mpp`` the thumbnail is taken to cover the whole slide: pixel = extent / size."""
    heatmap, thumbnail = cmu1
    w_um, h_um = heatmap.extent_um()
    h, w = thumbnail.shape[:2]
    path = heatmap.to_png(tmp_path / "inferred.png", thumbnail)
    with Image.open(path) as im:
        inferred = np.asarray(im)
    assert np.array_equal(inferred, render_png(heatmap, thumbnail, thumbnail_mpp=(w_um / w, h_um / h)))
