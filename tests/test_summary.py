"""summary.json: areas, fractions and provenance computed from a heatmap with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pathoflash.heatmap import Heatmap

PIXEL_MM2 = (8.0 / 1000) ** 2


def known_heatmap(**kwargs: object) -> Heatmap:
    """100 × 100 heatmap: 2,000 NaN pixels, 3,000 tissue pixels at 0.2, two tumor blocks (600 + 400) at ≥ 0.5."""
    p = np.full((100, 100), 0.2, dtype=np.float32)
    p[:20] = np.nan
    p[30:50, 10:40] = 0.9  # 600 px
    p[60:80, 60:80] = 0.5  # 400 px, exactly at the threshold: counts as tumor
    p[95, 95] = 0.49
    return Heatmap(probabilities=p, mpp=8.0, slide_dimensions=(1600, 1600), slide_mpp=(0.5, 0.5), **kwargs)  # type: ignore[arg-type]


def test_summary_numbers() -> None:
    summary = known_heatmap(model_id="demo-v1").summary(threshold=0.5, unreadable_tiles=3)
    assert summary["tissue_pixels"] == 8000 and summary["tumor_pixels"] == 1000
    assert summary["tissue_area_mm2"] == pytest.approx(8000 * PIXEL_MM2)
    assert summary["tumor_area_mm2"] == pytest.approx(1000 * PIXEL_MM2)
    assert summary["tumor_fraction"] == pytest.approx(1000 / 8000)
    assert summary["max_probability"] == pytest.approx(0.9)
    expected_mean = (600 * 0.9 + 400 * 0.5 + 0.49 + (8000 - 1001) * 0.2) / 8000
    assert summary["mean_probability"] == pytest.approx(expected_mean, abs=1e-5)
    assert summary["tumor_regions"] == 2
    assert summary["unreadable_tiles"] == 3
    assert summary["model_id"] == "demo-v1"
    assert summary["threshold"] == 0.5 and summary["mpp"] == 8.0
    assert summary["heatmap_shape"] == [100, 100]


def test_threshold_changes_the_tumor_area() -> None:
    heatmap = known_heatmap()
    assert heatmap.summary(threshold=0.6)["tumor_pixels"] == 600
    assert heatmap.summary(threshold=0.45)["tumor_pixels"] == 1001
    assert heatmap.summary(threshold=0.95)["tumor_regions"] == 0


def test_tissue_mask_limits_the_tissue() -> None:
    mask = np.zeros((50, 50), dtype=bool)  # 16 µm/px: one mask pixel per 2 × 2 heatmap pixels
    mask[:, :25] = True  # the left half
    summary = known_heatmap(tissue_mask=mask, tissue_mask_mpp=16.0).summary()
    assert summary["tissue_pixels"] == 80 * 50
    assert summary["tumor_pixels"] == 600  # the right-hand block is off the tissue


def test_no_tissue_gives_nulls_not_errors() -> None:
    heatmap = Heatmap(
        probabilities=np.full((4, 4), np.nan, dtype=np.float32),
        mpp=8.0,
        slide_dimensions=(64, 64),
        slide_mpp=(0.5, 0.5),
    )
    summary = heatmap.summary()
    assert summary["tissue_area_mm2"] == 0 and summary["tumor_fraction"] is None
    assert summary["max_probability"] is None and summary["tumor_regions"] == 0


def test_summary_json_file(tmp_path: Path) -> None:
    heatmap = known_heatmap(model_id="m")
    path = tmp_path / "out" / "summary.json"
    returned = heatmap.to_summary(path, threshold=0.5, unreadable_tiles=1)
    on_disk = json.loads(path.read_text(encoding="utf-8"))
    assert on_disk == returned
    assert on_disk["schema"] == "pathoflash.summary/1"
    assert not list(path.parent.glob(".*.tmp"))


def test_bad_arguments() -> None:
    heatmap = known_heatmap()
    with pytest.raises(ValueError, match="threshold"):
        heatmap.summary(threshold=1.5)
    with pytest.raises(ValueError, match="unreadable_tiles"):
        heatmap.summary(unreadable_tiles=-1)
