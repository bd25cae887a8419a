"""TileCache: the model's regions copied from the tiler's tiles equal the store's, and gaps fall back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pathoflash.pipeline import TileCache
from pathoflash.tiling import tile_slide


def test_regions_from_the_cache_equal_the_store_s(synthetic_slides: list, tmp_path: Path) -> None:
    held: dict[tuple[int, int], np.ndarray] = {}
    store = tile_slide(
        synthetic_slides[1].path, tmp_path / "tiles.zarr", mpp=1.0, tile_size=128,
        on_tile=lambda row, col, tile: held.__setitem__((row, col), tile),
    )  # fmt: skip
    grid = store.grid
    cache = TileCache(grid)
    for (row, col), tile in held.items():
        cache.put(row, col, tile)
    assert 0 < len(grid.tissue_tiles) < grid.rows * grid.cols  # both tissue and background are covered
    rng = np.random.default_rng(0)
    boxes = [
        (-50, -30, 300, 200),
        (grid.width - 100, grid.height - 60, 400, 300),
        (0, 0, grid.width, grid.height),
    ]
    boxes += [
        (int(rng.integers(-100, grid.width)), int(rng.integers(-100, grid.height)), int(rng.integers(1, 500)),
         int(rng.integers(1, 500)))
        for _ in range(40)
    ]  # fmt: skip
    for box in boxes:
        got = cache.read_region(*box)
        assert got is not None, box
        np.testing.assert_array_equal(got, store.read_region(*box), err_msg=str(box))


def test_a_tissue_tile_it_lacks_sends_the_read_to_the_store(synthetic_slides: list, tmp_path: Path) -> None:
    store = tile_slide(synthetic_slides[1].path, tmp_path / "tiles.zarr", mpp=1.0, tile_size=128)
    grid = store.grid
    cache = TileCache(grid)  # nothing put: every tissue tile is missing
    row, col = grid.tissue_tiles[0]
    assert cache.read_region(col * 128, row * 128, 64, 64) is None
    background = next(
        (r, c) for r in range(grid.rows) for c in range(grid.cols) if (r, c) not in set(grid.tissue_tiles)
    )
    region = cache.read_region(background[1] * 128, background[0] * 128, 128, 128)
    assert region is not None and (region == 255).all()


def test_dropped_rows_are_not_kept() -> None:
    class Grid:
        tile_size, width, height = 4, 16, 16
        tissue_tiles = tuple((r, c) for r in range(4) for c in range(4))

    cache = TileCache(Grid())
    for r in range(4):
        for c in range(4):
            cache.put(r, c, np.full((4, 4, 3), r, np.uint8))
    cache.drop_rows_below(2)
    assert cache.read_region(0, 0, 4, 4) is None  # row 0 dropped
    assert (cache.read_region(0, 8, 16, 8) == np.repeat([2, 3], 4)[:, None, None]).all()
    cache.put(1, 0, np.zeros((4, 4, 3), np.uint8))  # below the floor: not taken again
    assert cache.read_region(0, 4, 4, 4) is None
