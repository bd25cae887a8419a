"""heatmap.png read back with PIL: blended colours where the heatmap has values, colour bar, scale bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import pathoflash as pf
from pathoflash.export.colormap import viridis_lut
from pathoflash.export.png import (
    _compose,
    _draw_colour_bar,
    _draw_scale_bar,
    blend,
    blend_reference,
    heatmap_on_grid,
    length_label,
    nice_length,
    render_png,
)
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


@pytest.mark.parametrize("opacity", [0.0, 0.25, 0.5, 0.77, 1.0])
def test_blend_by_table_is_the_float32_blend(opacity: float) -> None:
    rng = np.random.default_rng(int(opacity * 100))
    thumbnail = rng.integers(0, 256, (301, 67, 3), dtype=np.uint8)
    p = rng.uniform(-0.2, 1.2, (301, 67))  # float64, and outside [0, 1]
    p[rng.random(p.shape) < 0.2] = np.nan
    p[0, :3] = (np.inf, -np.inf, 0.5 / 255)
    expected = blend_reference(thumbnail, p, opacity)
    assert np.array_equal(blend(thumbnail, p, opacity), expected)
    out = np.zeros_like(thumbnail)
    assert blend(thumbnail, p.astype(np.float32), opacity, out=out) is out
    assert np.array_equal(out, blend_reference(thumbnail, p.astype(np.float32), opacity))


def _render_on_one_canvas(
    heatmap: Heatmap, thumbnail: np.ndarray, mpp: tuple[float, float], opacity: float
) -> np.ndarray:
    """render_png as it was: the whole picture as RGBA, one overlay composited over all of it."""
    height, width = thumbnail.shape[:2]
    blended = blend_reference(thumbnail, heatmap_on_grid(heatmap, (width, height), mpp), opacity)
    font_size = int(min(28, max(12, round(max(width, height) / 60))))
    panel_w = max(110, font_size * 6)
    canvas = Image.new("RGBA", (width + panel_w, max(height, font_size * 16)), (255, 255, 255, 255))
    canvas.paste(Image.fromarray(blended).convert("RGBA"), (0, 0))
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    _draw_scale_bar(draw, (width, height), mpp[0], font_size)
    _draw_colour_bar(draw, (width, 0, width + panel_w, canvas.size[1]), font_size, opacity)
    return np.asarray(Image.alpha_composite(canvas, overlay).convert("RGB"))


@pytest.mark.parametrize(
    ("width", "height", "opacity"), [(640, 480, 0.5), (37, 25, 0.3), (90, 1300, 1.0), (1, 1, 0.5)]
)
def test_picture_is_the_one_composited_on_a_whole_canvas(width: int, height: int, opacity: float) -> None:
    rng = np.random.default_rng(width)
    p = rng.random((max(1, height // 4), max(1, width // 4))).astype(np.float32)
    p[rng.random(p.shape) < 0.3] = np.nan
    heatmap = Heatmap(
        probabilities=p, mpp=8.0, slide_dimensions=(width * 16, height * 16), slide_mpp=(0.5, 0.5)
    )
    thumbnail = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    picture = render_png(heatmap, thumbnail, thumbnail_mpp=(8.0, 8.0), opacity=opacity)
    assert np.array_equal(picture, _render_on_one_canvas(heatmap, thumbnail, (8.0, 8.0), opacity))


def test_overlapping_drawings_are_composited_as_one_layer() -> None:
    rng = np.random.default_rng(5)
    picture = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)

    def box(draw: ImageDraw.ImageDraw) -> None:
        draw.rectangle([5, 5, 50, 40], fill=(255, 255, 255, 200))

    def text(draw: ImageDraw.ImageDraw) -> None:
        draw.text((10, 10), "0.5 mm", fill=(30, 30, 30, 255))
        draw.line([40, 30, 70, 55], fill=(10, 200, 10, 128), width=3)

    def far(draw: ImageDraw.ImageDraw) -> None:
        draw.rectangle([72, 2, 78, 8], fill=(0, 0, 0, 90))

    layer = Image.new("RGBA", (80, 60), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for drawing in (box, text, far):
        drawing(draw)
    canvas = Image.fromarray(picture).convert("RGBA")
    expected = np.asarray(Image.alpha_composite(canvas, layer).convert("RGB"))
    composed = picture.copy()
    _compose(composed, [box, text, far])
    assert np.array_equal(composed, expected)
    apart = picture.copy()
    _compose(apart, [far])
    _compose(apart, [box])
    _compose(apart, [text])
    assert not np.array_equal(apart, expected)  # so the merge above is needed, not a no-op
