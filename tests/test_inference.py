"""Region inference: planning, stitching without seams or off-by-ones, skipping, real models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pathoflash.errors import ConfigError
from pathoflash.inference import infer_heatmap, plan_regions, predict_regions, read_region, tissue_skip
from pathoflash.model.config import ViTConfig
from pathoflash.model.head import DenseHead, HeadConfig
from pathoflash.model.predictor import Model, Preprocessing
from pathoflash.model.vit import VisionTransformer


class PositionSource:
    """Pixels that spell out their own image coordinates; reads outside the image fail."""

    def __init__(self, width: int, height: int) -> None:
        assert width <= 4096 and height <= 4096
        self.width, self.height = width, height
        self.reads: list[tuple[int, int, int, int]] = []

    def read_region(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        assert x >= 0 and y >= 0 and w > 0 and h > 0, (x, y, w, h)
        assert x + w <= self.width and y + h <= self.height, (x, y, w, h)
        self.reads.append((x, y, w, h))
        xs, ys = np.meshgrid(np.arange(x, x + w), np.arange(y, y + h))
        return np.stack([xs % 256, ys % 256, xs // 256 + 16 * (ys // 256)], axis=-1).astype(np.uint8)


class PositionModel:
    """Outputs row·1000 + col of each patch's absolute token position, read from its top-left pixel."""

    def __init__(self, patch_size: int) -> None:
        self.patch_size = patch_size
        self.batches: list[int] = []

    def predict_tokens(self, images: np.ndarray) -> np.ndarray:
        self.batches.append(len(images))
        p = self.patch_size
        corners = images[:, ::p, ::p].astype(np.int64)
        x = corners[..., 0] + 256 * (corners[..., 2] % 16)
        y = corners[..., 1] + 256 * (corners[..., 2] // 16)
        return ((y // p) * 1000 + (x // p)).astype(np.float32)


class ContextModel:
    """Outputs each patch's distance in tokens to the nearest edge of its region."""

    def __init__(self, patch_size: int) -> None:
        self.patch_size = patch_size

    def predict_tokens(self, images: np.ndarray) -> np.ndarray:
        n, h, w = images.shape[0], images.shape[1] // self.patch_size, images.shape[2] // self.patch_size
        rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
        distance = np.minimum(np.minimum(rows, h - 1 - rows), np.minimum(cols, w - 1 - cols))
        return np.broadcast_to(distance, (n, h, w)).astype(np.float32)


def expected_positions(width: int, height: int, p: int) -> np.ndarray:
    rows, cols = math.ceil(height / p), math.ceil(width / p)
    return (np.arange(rows)[:, None] * 1000 + np.arange(cols)[None, :]).astype(np.float32)


SIZES = [  # (width, height, patch, region, margin)
    (1000, 777, 16, 256, 32),  # several regions, neither side a multiple of the patch or the step
    (4000, 3001, 16, 1024, 128),  # the defaults on a large odd image
    (100, 300, 16, 256, 32),  # narrower than one region
    (1100, 513, 14, 1024, 128),  # patch 14: region and margin round down to 1022 / 126
    (257, 257, 16, 256, 48),  # one patch more than a region
    (7, 5, 16, 1024, 128),  # smaller than a patch
]


@pytest.mark.parametrize(("width", "height", "p", "region", "margin"), SIZES)
def test_stitched_heatmap_equals_the_direct_computation(width, height, p, region, margin):
    source, model = PositionSource(width, height), PositionModel(p)
    heatmap = infer_heatmap(
        model, source, width=width, height=height, region=region, margin=margin, batch_size=3, fill=-1
    )
    assert heatmap.dtype == np.float32
    np.testing.assert_array_equal(heatmap, expected_positions(width, height, p))
    assert max(model.batches) <= 3


@pytest.mark.parametrize(("width", "height", "p", "region", "margin"), SIZES)
def test_every_value_has_the_margin_as_context_unless_the_image_ends(width, height, p, region, margin):
    heatmap = infer_heatmap(
        ContextModel(p),
        PositionSource(width, height),
        width=width,
        height=height,
        region=region,
        margin=margin,
    )
    rows, cols = heatmap.shape
    r, c = np.arange(rows)[:, None], np.arange(cols)[None, :]
    available = np.minimum(np.minimum(r, rows - 1 - r), np.minimum(c, cols - 1 - c))
    assert np.all(heatmap >= np.minimum(available, margin // p))


@pytest.mark.parametrize(("width", "height", "p", "region", "margin"), SIZES)
def test_plan_cores_tile_the_grid_once_with_equal_regions_inside_the_image(width, height, p, region, margin):
    plan = plan_regions(width, height, patch_size=p, region=region, margin=margin)
    rows, cols = plan.shape
    assert (rows, cols) == (math.ceil(height / p), math.ceil(width / p))
    cover = np.zeros(plan.shape, dtype=int)
    for piece in plan:
        assert (piece.width, piece.height) == (plan.region_width, plan.region_height)
        assert piece.width % p == 0 and piece.height % p == 0
        assert piece.width == piece.height == (region // p) * p
        assert piece.x >= 0 and piece.x + piece.width <= max(cols * p, piece.width)
        assert piece.y >= 0 and piece.y + piece.height <= max(rows * p, piece.height)
        core_rows, core_cols = piece.core_slices
        assert 0 <= core_rows.start < core_rows.stop <= piece.height // p
        assert 0 <= core_cols.start < core_cols.stop <= piece.width // p
        cover[piece.out_slices] += 1
    assert cover.min() == cover.max() == 1


def test_default_region_count_on_a_4096_square():
    # 256 tokens a side; cores of 56 + 48·3 + 56 → 5 regions a side.
    plan = plan_regions(4096, 4096, patch_size=16)
    assert len(plan) == 25 and (plan.region_width, plan.region_height) == (1024, 1024)


def test_invalid_plans_are_refused():
    with pytest.raises(ConfigError, match="twice the margin"):
        plan_regions(1000, 1000, patch_size=16, region=256, margin=128)
    with pytest.raises(ConfigError, match="positive"):
        plan_regions(0, 10, patch_size=16)


def test_skipped_regions_hold_the_fill_and_progress_counts_them():
    width, height, p = 1000, 700, 16
    plan = plan_regions(width, height, patch_size=p, region=256, margin=32)
    skipped = [plan.regions[0], plan.regions[5]]
    calls: list[tuple[int, int]] = []
    heatmap = infer_heatmap(
        PositionModel(p),
        PositionSource(width, height),
        width=width,
        height=height,
        region=256,
        margin=32,
        batch_size=2,
        skip=lambda *box: box in [piece.core_box for piece in skipped],
        progress=lambda done, total: calls.append((done, total)),
        fill=-1,
    )
    expected = expected_positions(width, height, p)
    for piece in skipped:
        expected[piece.out_slices] = -1
    np.testing.assert_array_equal(heatmap, expected)
    assert calls[0] == (2, len(plan)) and calls[-1] == (len(plan), len(plan))
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_tissue_skip_keeps_only_regions_whose_core_has_tissue():
    width, height, p = 1000, 700, 16
    plan = plan_regions(width, height, patch_size=p, region=256, margin=32)
    tissue = np.zeros((70, 100), dtype=bool)  # 10 px per mask pixel
    tissue[40, 55] = True  # image pixel (550..560, 400..410): token row 25, col 34
    skip = tissue_skip(tissue, width=width, height=height)
    kept = [piece for piece in plan if not skip(*piece.core_box)]
    assert len(kept) == 1
    rows, cols = kept[0].out_slices
    assert rows.start <= 25 < rows.stop and cols.start <= 34 < cols.stop
    source = PositionSource(width, height)
    results = list(predict_regions(PositionModel(p), source, plan, skip=skip))
    assert [piece for piece, _ in results] == kept and len(source.reads) == 1


def test_read_region_pads_the_partial_last_patch_white():
    plan = plan_regions(40, 20, patch_size=16, region=64)
    (piece,) = plan.regions
    pixels = read_region(PositionSource(40, 20), piece, width=40, height=20)
    assert pixels.shape == (64, 64, 3)
    assert (pixels[20:] == 255).all() and (pixels[:, 40:] == 255).all()

    class Wrong:
        def read_region(self, x, y, w, h):
            return np.zeros((h, w, 4), dtype=np.uint8)

    with pytest.raises(ValueError, match="expected"):
        read_region(Wrong(), piece, width=40, height=20)


def tiny_model() -> Model:
    torch.manual_seed(0)
    config = ViTConfig(patch_size=16, embed_dim=64, depth=2, num_heads=2, mlp_hidden=128, pos_grid=(4, 4))
    head = DenseHead(HeadConfig(embed_dim=64, hidden=16))
    return Model(VisionTransformer(config, backend="sdpa"), head, Preprocessing(region=128)).eval()


def test_real_model_small_image_is_one_full_region_padded_white():
    model = tiny_model()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (75, 110, 3), dtype=np.uint8)

    class ArraySource:
        def read_region(self, x, y, w, h):
            return image[y : y + h, x : x + w]

    heatmap = infer_heatmap(model, ArraySource(), width=110, height=75, region=256, device="cpu")
    padded = np.full((256, 256, 3), 255, dtype=np.uint8)  # the model always sees its whole region grid
    padded[:75, :110] = image
    direct = model.predict_tokens(padded[None])[0, :5, :7].numpy()
    assert heatmap.shape == (5, 7)
    np.testing.assert_allclose(heatmap, direct, rtol=0, atol=1e-6)


def test_real_model_many_regions_use_the_model_region_and_are_batch_size_invariant():
    model = tiny_model()
    image = np.random.default_rng(1).integers(0, 256, (300, 350, 3), dtype=np.uint8)

    class ArraySource:
        def read_region(self, x, y, w, h):
            return image[y : y + h, x : x + w]

    one = infer_heatmap(model, ArraySource(), width=350, height=300, margin=32, batch_size=1, device="cpu")
    four = infer_heatmap(model, ArraySource(), width=350, height=300, margin=32, batch_size=4, device="cpu")
    assert one.shape == (19, 22)
    assert np.all((one > 0) & (one < 1))
    np.testing.assert_allclose(one, four, rtol=0, atol=1e-5)
