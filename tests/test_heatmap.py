"""The Heatmap value object: validation, geometry in the slide frame, tissue, Zarr round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

import pathoflash as pf
from pathoflash.errors import StoreError
from pathoflash.heatmap import Heatmap


def simple(p: np.ndarray | None = None, **kwargs: object) -> Heatmap:
    if p is None:
        p = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    defaults: dict[str, object] = dict(mpp=8.0, slide_dimensions=(64, 48), slide_mpp=(0.5, 0.5))
    defaults.update(kwargs)
    return Heatmap(probabilities=p, **defaults)  # type: ignore[arg-type]


def test_public_name() -> None:
    assert pf.Heatmap is Heatmap


def test_probabilities_become_contiguous_float32() -> None:
    p = np.linspace(0, 1, 12).reshape(4, 3).T  # float64, not C-contiguous
    heatmap = simple(p)
    assert heatmap.probabilities.dtype == np.float32 and heatmap.probabilities.flags.c_contiguous
    assert heatmap.shape == (3, 4)
    np.testing.assert_allclose(heatmap.probabilities, p, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p": np.zeros(5, dtype=np.float32)}, "2-D"),
        ({"p": np.full((2, 2), 1.5, dtype=np.float32)}, r"\[0, 1\]"),
        ({"p": np.array([[0.5, np.inf]], dtype=np.float32)}, "inf"),
        ({"mpp": 0.0}, "mpp"),
        ({"slide_dimensions": (0, 10)}, "slide_dimensions"),
        ({"slide_mpp": (0.5, -1.0)}, "slide_mpp"),
        ({"origin": (np.nan, 0.0)}, "origin"),
        ({"tissue_mask": np.ones((2, 2), dtype=bool)}, "tissue_mask_mpp"),
        ({"scale": (0.0, 1.0)}, "scale"),
    ],
)
def test_invalid_inputs_are_rejected(kwargs: dict[str, object], message: str) -> None:
    kwargs = dict(kwargs)
    p = kwargs.pop("p", None)
    with pytest.raises(ValueError, match=message):
        simple(p, **kwargs)  # type: ignore[arg-type]


def test_frozen() -> None:
    heatmap = simple()
    with pytest.raises(AttributeError):
        heatmap.mpp = 4.0  # type: ignore[misc]


def test_geometry_in_level0_pixels() -> None:
    heatmap = simple(slide_mpp=(0.25, 0.5), origin=(10.0, 20.0))
    assert heatmap.pixel_size == (32.0, 16.0)
    assert heatmap.level0_bounds(1, 2) == (10 + 64, 20 + 16, 10 + 96, 20 + 32)
    assert heatmap.pixel_area_mm2 == pytest.approx(64e-6)
    snapped = simple(scale=(16.0, 16.0), slide_mpp=(0.499, 0.499))  # a grid snapped to a whole reduction
    assert snapped.pixel_size == (16.0, 16.0)


def test_tissue_uses_mask_and_nan() -> None:
    p = np.full((4, 6), 0.5, dtype=np.float32)
    p[0, 0] = np.nan
    # Mask at 4 µm/px (8 level-0 px): 2 × 2 mask pixels per heatmap pixel (16 level-0 px).
    mask = np.zeros((8, 12), dtype=bool)
    mask[:, :6] = True  # heatmap columns 0–2
    heatmap = simple(p, slide_dimensions=(96, 64), tissue_mask=mask, tissue_mask_mpp=4.0)
    expected = np.zeros((4, 6), dtype=bool)
    expected[:, :3] = True
    expected[0, 0] = False
    np.testing.assert_array_equal(heatmap.tissue(), expected)
    # With an origin shift of one heatmap pixel the mask lines up one column further left.
    shifted = simple(p, slide_dimensions=(96, 64), tissue_mask=mask, tissue_mask_mpp=4.0, origin=(16.0, 0.0))
    assert shifted.tissue()[0].tolist() == [False, True, False, False, False, False]
    assert shifted.tissue()[1].tolist() == [True, True, False, False, False, False]
    assert simple(p).tissue().sum() == p.size - 1


def test_zarr_round_trip(tmp_path: Path) -> None:
    p = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
    p[1, 2] = np.nan
    mask = np.zeros((12, 16), dtype=bool)
    mask[2:10, 3:12] = True
    heatmap = simple(
        p, slide_dimensions=(128, 96), origin=(1.5, 2.5), tissue_mask=mask, tissue_mask_mpp=4.0,
        model_id="model-abc", scale=(16.0, 16.0),
    )  # fmt: skip
    store = tmp_path / "tiles.zarr"
    array = heatmap.to_zarr(store)
    assert array.dtype == np.float32 and array.shape == (6, 8)
    back = Heatmap.from_zarr(store)
    np.testing.assert_array_equal(back.probabilities, heatmap.probabilities)
    assert (back.mpp, back.origin, back.slide_dimensions, back.slide_mpp, back.model_id, back.scale) == (
        8.0, (1.5, 2.5), (128, 96), (0.5, 0.5), "model-abc", (16.0, 16.0),
    )  # fmt: skip
    assert back.tissue_mask is not None and back.tissue_mask_mpp == 4.0
    np.testing.assert_array_equal(back.tissue_mask, mask)
    # The group is plain Zarr v3 that any reader sees.
    group = zarr.open_group(store, mode="r")
    assert group.metadata.zarr_format == 3
    assert group["heatmap"].attrs["mpp"] == 8.0


def test_zarr_into_existing_group_and_overwrite(tmp_path: Path) -> None:
    group = zarr.open_group(tmp_path / "s.zarr", mode="w", zarr_format=3)
    group.create_array("image", shape=(4, 4), dtype="uint8")
    masked = simple(tissue_mask=np.ones((3, 4), dtype=bool), tissue_mask_mpp=16.0)
    masked.to_zarr(group)
    plain = simple(np.zeros((2, 2), dtype=np.float32))
    plain.to_zarr(group)  # overwrites, and drops the old tissue mask
    back = Heatmap.from_zarr(group)
    assert back.shape == (2, 2) and back.tissue_mask is None
    assert "image" in group


def test_from_zarr_errors(tmp_path: Path) -> None:
    group = zarr.open_group(tmp_path / "s.zarr", mode="w", zarr_format=3)
    with pytest.raises(StoreError, match="no 'heatmap'"):
        Heatmap.from_zarr(group)
    array = group.create_array("heatmap", shape=(2, 2), dtype="float32")
    with pytest.raises(StoreError, match=r"not a PathoFlash heatmap.*'slide_mpp'"):
        Heatmap.from_zarr(group)
    array.attrs.update(
        {"kind": "something else", "mpp": 8.0, "slide_dimensions": [32, 32], "slide_mpp": [0.5, 0.5]}
    )
    with pytest.raises(StoreError, match="kind='something else'"):
        Heatmap.from_zarr(group)
    # Written by another writer with the geometry attrs but no kind: readable.
    del array.attrs["kind"]
    assert Heatmap.from_zarr(group).shape == (2, 2)


def test_suggested_resolutions() -> None:
    big = simple(slide_dimensions=(100_000, 80_000), slide_mpp=(0.25, 0.25))
    assert max(big.extent_um()) / big.png_mpp() == pytest.approx(2048)
    viewer_mpp = big.viewer_mpp()
    assert (25_000 / viewer_mpp) * (20_000 / viewer_mpp) <= 48_000_000 * 1.001
    small = simple(slide_dimensions=(2000, 2000), slide_mpp=(0.5, 0.5))
    assert small.viewer_mpp() == 1.0  # never finer than 1 µm/px
