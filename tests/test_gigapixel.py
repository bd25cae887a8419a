"""A gigapixel slide (32768 × 32768 px = 1.07 Gpx at level 0), mostly glass, in bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import PINK, disk, rect, write_tiff

import pathoflash as pf

SIZE = 32768
SHAPES = [disk(9000, 11000, 2600), rect(20000, 24000, 24000, 27000), disk(27000, 6000, 900, PINK, False)]


@pytest.fixture(scope="module")
def gigapixel_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiff(
        tmp_path_factory.mktemp("giga") / "giga.tif",
        size=(SIZE, SIZE),
        shapes=SHAPES,
        mpp=0.5,
        downsamples=(1, 4, 16, 64),
    )


def test_gigapixel_slide_tiles_in_bounded_memory(tmp_path: Path, gigapixel_slide: Path) -> None:
    out = tmp_path / "tiles.zarr"
    code = (
        "import json, sys, time\n"
        "import pathoflash as pf\n"
        "t = time.perf_counter()\n"
        f"store = pf.tile_slide({str(gigapixel_slide)!r}, {str(out)!r}, workers=2)\n"
        # VmHWM: this process's own peak RSS (ru_maxrss would include the forked pytest before exec)
        "hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'tiles': len(store.grid.tissue_tiles),\n"
        "    'peak_rss_mb': hwm / 1024}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    assert stats["peak_rss_mb"] < 1024, stats

    store = pf.TileStore.open(out)
    grid = store.grid
    assert store.is_complete and grid.mpp == 0.5 and (grid.rows, grid.cols) == (128, 128)
    assert store.level_count == 8  # 32768 → 256 px by halving
    # tissue area ≈ the painted shapes (π·2600² + 4000·3000 + π·900² px) in 256-px tiles, plus edges
    painted = (np.pi * 2600**2 + 4000 * 3000 + np.pi * 900**2) / 256**2
    assert painted < len(grid.tissue_tiles) < painted * 1.3
    chunks = {(int(p.parent.name), int(p.name)) for p in (out / "0" / "c" / "0").glob("*/*")}
    assert chunks == set(grid.tissue_tiles)
    centre = store.read_tile(11000 // 256, 9000 // 256)
    assert np.median(centre.reshape(-1, 3), axis=0)[0] > 180  # pink with purple dots
    assert (store.read_tile(0, 0) == 255).all()
    top = np.asarray(store.array(store.level_count - 1)[...])
    assert top.shape == (3, 256, 256) and (top < 250).any()
