"""viewer.html: the embedded data (size budget, escaping) and, in headless Chromium, that it renders.

The browser tests load the file from ``file://`` with networking disabled, let the page run (virtual time),
and read back the DOM (``--dump-dom``) or a screenshot. The page marks ``<body data-pf-ready="1">`` after its
first complete draw and writes any script error into ``#pf-errors`` (``data-pf-error="1"``).
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pathoflash as pf
from pathoflash.export import viewer
from pathoflash.export.colormap import viridis_lut
from pathoflash.export.viewer import (
    encode_slide_levels,
    heatmap_bytes,
    jpeg_bytes,
    pack_heatmap,
    render_html,
    viewer_data,
    write_viewer,
)
from pathoflash.heatmap import Heatmap

CMU1 = Path(__file__).parent / "fixtures" / "CMU-1-Small-Region.svs"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
WINDOW = (1000, 700)
TUMOR_P = 0.73


@pytest.fixture(scope="module")
def cmu1_viewer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Heatmap, Path]:
    """CMU-1 with a heatmap: NaN at the top, background 0.05, a 0.73 block and a p = 1 block."""
    with pf.open_slide(CMU1) as slide:
        rows = int(np.ceil(slide.dimensions[1] * slide.mpp[1] / 8))
        cols = int(np.ceil(slide.dimensions[0] * slide.mpp[0] / 8))
        p = np.full((rows, cols), 0.05, dtype=np.float32)
        p[:15] = np.nan
        p[40:80, 30:70] = TUMOR_P  # 1,600 px
        p[100:130, 80:120] = 1.0  # 1,200 px
        heatmap = Heatmap(
            probabilities=p,
            mpp=8.0,
            slide_dimensions=slide.dimensions,
            slide_mpp=slide.mpp,
            model_id="test-model",
        )
        path = heatmap.to_html(tmp_path_factory.mktemp("viewer") / "viewer.html", slide, thumbnail_mpp=1.0)
    return heatmap, path


# ---- without a browser ------------------------------------------------------------------------------------
def embedded_data(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    match = re.search(r'<script type="application/json" id="pf-data">(.*?)</script>', text, re.S)
    assert match, "data block missing"
    return json.loads(match.group(1))


def test_viewer_embeds_pyramid_and_heatmap(cmu1_viewer: tuple[Heatmap, Path]) -> None:
    heatmap, path = cmu1_viewer
    text = path.read_text(encoding="utf-8")
    assert (
        "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text
    )  # nothing to fetch
    data = embedded_data(path)
    levels = data["levels"]
    assert levels[0]["px"] == pytest.approx([1.0 / 0.499] * 2)  # finest = the 1 µm/px thumbnail
    assert all(b["px"][0] == pytest.approx(2 * a["px"][0]) for a, b in itertools.pairwise(levels))
    assert max(levels[-1]["width"], levels[-1]["height"]) <= 1024
    uris = [u for level in levels for u in level["tiles"] if u]
    assert uris and all(u.startswith("data:image/jpeg;base64,") for u in uris)
    q = np.frombuffer(zlib.decompress(base64.b64decode(data["heatmap"]["data"])), dtype=np.uint8)
    assert q.size == heatmap.probabilities.size
    assert data["heatmap"]["px"] == pytest.approx(list(heatmap.pixel_size))
    assert data["lut"] == viridis_lut().tolist()


def test_heatmap_bytes_quantise_and_mark_no_data() -> None:
    p = np.array([[0.0, 0.5, 1.0, np.nan]], dtype=np.float32)
    heatmap = Heatmap(probabilities=p, mpp=8.0, slide_dimensions=(64, 16), slide_mpp=(0.5, 0.5))
    assert list(heatmap_bytes(heatmap)) == [0, 127, 254, 255]


def test_size_budget_drops_fine_levels_not_the_overview(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    thumbnail = rng.integers(0, 200, (3000, 4000, 3), dtype=np.uint8)  # noise: JPEG cannot shrink it
    heatmap = Heatmap(
        probabilities=rng.random((375, 500), dtype=np.float32), mpp=8.0,
        slide_dimensions=(8000, 6000), slide_mpp=(0.5, 0.5),
    )  # fmt: skip
    data = viewer_data(heatmap, thumbnail, thumbnail_mpp=(1.0, 1.0), max_bytes=3_000_000)
    page = render_html(data, "t")
    assert len(page.encode()) <= 3_000_000
    assert 1 <= len(data["levels"]) < 3  # 4000 px → 2000 → 1000: the finest levels had to go
    assert max(data["levels"][-1]["width"], data["levels"][-1]["height"]) <= 1024


def test_levels_encoded_ahead_on_threads_give_the_same_page(
    cmu1_viewer: tuple[Heatmap, Path], tmp_path: Path
) -> None:
    """The pipeline JPEG-tiles the slide image while the heatmap is computed: the page must not change."""
    heatmap, path = cmu1_viewer
    with pf.open_slide(CMU1) as slide:
        image = slide.thumbnail_at_mpp(1.0)
    levels = encode_slide_levels(image, (1.0, 1.0), heatmap.slide_mpp, workers=3)
    assert [lv["width"] for lv in levels.levels] == sorted(
        lv["width"] for lv in levels.levels
    )  # coarse → fine
    ahead = heatmap.to_html(tmp_path / "ahead.html", levels, title=None)
    assert ahead.read_text(encoding="utf-8") == path.read_text(encoding="utf-8")


def test_untrusted_text_cannot_break_out(tmp_path: Path) -> None:
    evil = "</script><script>alert(1)</script>"
    heatmap = Heatmap(
        probabilities=np.zeros((4, 4), dtype=np.float32), mpp=8.0, slide_dimensions=(64, 64), slide_mpp=(0.5, 0.5),
        model_id=evil,
    )  # fmt: skip
    path = heatmap.to_html(tmp_path / "v.html", np.full((32, 32, 3), 200, dtype=np.uint8), title=f"<b>{evil}")
    text = path.read_text(encoding="utf-8")
    assert "<script>alert(1)" not in text
    assert html.escape(f"<b>{evil}") in text
    assert embedded_data(path)["model_id"] == evil


# ---- in Chromium --------------------------------------------------------------------------------------------
def chromium(
    tmp_path: Path, url: str, *mode: str, expect_errors: bool = False
) -> subprocess.CompletedProcess[str]:
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    args = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
        f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=10000", *mode, url,
    ]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    if not expect_errors:
        assert "Uncaught" not in result.stderr, result.stderr[-2000:]
    return result


def dump_dom(tmp_path: Path, page: Path, fragment: str = "", *, expect_errors: bool = False) -> str:
    return chromium(tmp_path, page.as_uri() + fragment, "--dump-dom", expect_errors=expect_errors).stdout


def body_attrs(dom: str) -> str:
    match = re.search(r"<body([^>]*)>", dom)
    assert match
    return match.group(1)


def element_text(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert match, element_id
    return html.unescape(match.group(1))


def centre_of(heatmap: Heatmap, row: int, col: int) -> tuple[float, float]:
    x0, y0, x1, y1 = heatmap.level0_bounds(row, col)
    return (x0 + x1) / 2, (y0 + y1) / 2


@pytest.mark.browser
def test_viewer_renders_and_reads_probability_under_pointer(
    cmu1_viewer: tuple[Heatmap, Path], tmp_path: Path
) -> None:
    heatmap, page = cmu1_viewer
    x, y = centre_of(heatmap, 60, 50)  # inside the 0.73 block
    dom = dump_dom(tmp_path, page, f"#x={x}&y={y}&zoom=0.5&probe=center")
    attrs = body_attrs(dom)
    assert 'data-pf-ready="1"' in attrs, dom[-3000:]
    assert "data-pf-error" not in attrs, element_text(dom, "pf-errors")
    assert element_text(dom, "pf-errors") == ""
    readout = re.search(r'id="pf-readout" data-probability="([0-9.]*)"', dom)
    assert readout and readout.group(1) == f"{round(TUMOR_P * 254) / 254:.3f}"
    assert element_text(dom, "pf-readout").startswith(f"p = {TUMOR_P:.2f}")
    # The live tumor area at the default threshold agrees with summary.json.
    summary = heatmap.summary(threshold=0.5)
    assert element_text(dom, "pf-area").startswith(f"p ≥ 0.50: {summary['tumor_area_mm2']:.2f} mm²")
    assert f"{100 * summary['tumor_fraction']:.1f}% of tissue" in element_text(dom, "pf-area")


@pytest.mark.browser
def test_viewer_reports_no_tissue_and_threshold_from_the_url(
    cmu1_viewer: tuple[Heatmap, Path], tmp_path: Path
) -> None:
    heatmap, page = cmu1_viewer
    x, y = centre_of(heatmap, 5, 20)  # NaN rows at the top
    dom = dump_dom(tmp_path, page, f"#x={x}&y={y}&zoom=0.5&probe=center&threshold=0.9&opacity=0.25")
    assert 'data-pf-ready="1"' in body_attrs(dom)
    assert element_text(dom, "pf-readout").startswith("no tissue")
    assert element_text(dom, "pf-area").startswith(
        f"p ≥ 0.90: {1200 * 64e-6:.2f} mm²"
    )  # only the p = 1 block
    assert element_text(dom, "pf-threshold-value") == "0.90"
    assert element_text(dom, "pf-opacity-value") == "25%"


@pytest.mark.browser
def test_viewer_screenshot_shows_slide_and_heatmap(cmu1_viewer: tuple[Heatmap, Path], tmp_path: Path) -> None:
    _, page = cmu1_viewer
    shot = tmp_path / "viewer.png"
    chromium(tmp_path, page.as_uri() + "#opacity=1&threshold=0.5", f"--screenshot={shot}")
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000  # H&E texture, not a blank page
    lut = viridis_lut()
    pixels = pixels[:, : WINDOW[0] - 280]  # leave out the legend (its colour bar holds every LUT colour)
    # Opacity 1, threshold 0.5: the two blocks in their exact colours; the 0.05 background not drawn.
    yellow = np.all(pixels == lut[255], axis=-1).sum()
    tumor = np.all(pixels == lut[round(round(TUMOR_P * 254) * 255 / 254)], axis=-1).sum()
    background = np.all(pixels == lut[round(round(0.05 * 254) * 255 / 254)], axis=-1).sum()
    # At fit zoom (~0.21 CSS px per level-0 px) a heatmap pixel is ~3.4 screen px: 1,200 px → ~14k screen px.
    assert yellow > 5000 and tumor > 8000 and background == 0
    assert yellow < tumor


@pytest.mark.browser
def test_script_errors_are_caught_and_shown(cmu1_viewer: tuple[Heatmap, Path], tmp_path: Path) -> None:
    """The error capture the other tests rely on works: corrupt the heatmap data and the page says so."""
    _, page = cmu1_viewer
    text = page.read_text(encoding="utf-8")
    broken = re.sub(
        r'("encoding":"zlib-base64-uint8","data":")([A-Za-z0-9+/]{8})', r"\1AAAAAAAA", text, count=1
    )
    assert broken != text
    bad = tmp_path / "broken.html"
    bad.write_text(broken, encoding="utf-8")
    dom = dump_dom(tmp_path, bad, expect_errors=True)
    assert 'data-pf-error="1"' in body_attrs(dom)
    assert element_text(dom, "pf-errors").strip()
    assert 'data-pf-ready="1"' not in body_attrs(dom)


@pytest.mark.browser
def test_viewer_decodes_noisy_heatmaps_exactly(tmp_path: Path) -> None:
    """Random probabilities barely compress (stored and dynamic-Huffman blocks); the page's own inflater,
    which checks the stream's Adler-32, must recover every byte: the live counts match Python's."""
    rng = np.random.default_rng(7)
    p = rng.random((300, 400), dtype=np.float32)
    p[rng.random(p.shape) < 0.3] = np.nan
    heatmap = Heatmap(probabilities=p, mpp=8.0, slide_dimensions=(6400, 4800), slide_mpp=(0.5, 0.5))
    page = heatmap.to_html(
        tmp_path / "noisy.html", np.full((480, 640, 3), 230, dtype=np.uint8), thumbnail_mpp=5.0
    )
    dom = dump_dom(tmp_path, page, "#threshold=0.3")
    assert 'data-pf-ready="1"' in body_attrs(dom) and element_text(dom, "pf-errors") == ""
    q = np.frombuffer(heatmap_bytes(heatmap), dtype=np.uint8)
    tissue = q != 255
    tumor = tissue & (q >= np.ceil(0.3 * 254))
    expected = f"p ≥ 0.30: {tumor.sum() * 64e-6:.2f} mm² · {100 * tumor.sum() / tissue.sum():.1f}% of tissue"
    assert element_text(dom, "pf-area") == expected


def test_levels_on_threads_are_the_levels_on_one_thread() -> None:
    """The 2× reductions run in row strips and the tiles are cut on the encoding threads: same levels."""
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (2603, 1201, 3), dtype=np.uint8)  # odd sides: the halvings cut an edge
    threaded = encode_slide_levels(image, (1.0, 1.0), (0.5, 0.5), workers=3)
    single = encode_slide_levels(image, (1.0, 1.0), (0.5, 0.5), workers=1)
    assert [lv["height"] for lv in single.levels] == [650, 1301, 2603]
    assert threaded.levels == single.levels and threaded.mpp == single.mpp


@pytest.mark.parametrize("shape", [(512, 512), (1, 1), (7, 300), (333, 17)])
def test_jpeg_tiles_are_pillows_jpeg(shape: tuple[int, int]) -> None:
    """The tiles come from imagecodecs (no GIL held); they must be the JPEG Pillow writes, views included."""
    rng = np.random.default_rng(sum(shape))
    image = np.clip(rng.normal(190, 25, (shape[0] + 9, shape[1] + 5, 3)), 0, 255).astype(np.uint8)
    tile = image[4 : 4 + shape[0], 2 : 2 + shape[1]]  # a strided view, as the levels' tiles are
    ours = jpeg_bytes(tile)
    pillows = viewer._pillow_jpeg(tile)
    with Image.open(io.BytesIO(ours)) as a, Image.open(io.BytesIO(pillows)) as b:
        assert a.format == "JPEG" and a.size == (shape[1], shape[0])
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert ours == pillows  # same libjpeg-turbo settings (true with this environment's builds)


def test_the_page_is_the_same_with_pillows_jpeg_and_a_packed_heatmap_made_ahead(
    cmu1_viewer: tuple[Heatmap, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    heatmap, path = cmu1_viewer
    with pf.open_slide(CMU1) as slide:
        image = slide.thumbnail_at_mpp(1.0)
    monkeypatch.setattr(viewer, "_imagecodecs_jpeg", lambda: False)
    levels = encode_slide_levels(image, (1.0, 1.0), heatmap.slide_mpp, workers=2)
    page = write_viewer(
        heatmap, tmp_path / "v.html", levels, thumbnail_mpp=levels.mpp, packed_heatmap=pack_heatmap(heatmap)
    )
    assert page.read_text(encoding="utf-8") == path.read_text(encoding="utf-8")
