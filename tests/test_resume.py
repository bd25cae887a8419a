"""SIGKILL in the middle of ``pathoflash tile``, then rerun: only missing chunks are written and the store
ends byte-identical to an uninterrupted run."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import disk, rect, write_tiff

import pathoflash as pf
from pathoflash.store import UNREADABLE_JOURNAL


@pytest.fixture(scope="module")
def big_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6144 × 6144 px at 0.5 µm/px, mostly tissue: ~550 tiles, a few seconds to tile on one thread."""
    shapes = [rect(300, 300, 5900, 5900), disk(3000, 3000, 900, (150, 70, 160))]
    return write_tiff(
        tmp_path_factory.mktemp("resume") / "big.tif",
        size=(6144, 6144),
        shapes=shapes,
        downsamples=(1, 4, 16),
        background=(242, 242, 242),
    )


def _level0_chunks(store: Path) -> int:
    return sum(1 for p in (store / "0" / "c" / "0").glob("*/*") if p.name.isdigit())


def _arrays(store: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(store, mode="r")
    return {name: np.asarray(array[...]) for name, array in group.arrays()}


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path, big_slide: Path) -> None:
    reference = pf.tile_slide(big_slide, tmp_path / "reference" / "tiles.zarr", workers=2)
    total = len(reference.grid.tissue_tiles)
    assert total > 450

    out = tmp_path / "killed"
    store = out / "big" / "tiles.zarr"
    command = [
        sys.executable,
        "-m",
        "pathoflash",
        "tile",
        str(big_slide),
        "--out",
        str(out),
        "--workers",
        "1",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if (store / "0").is_dir() and _level0_chunks(store) >= total // 4:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "tiling finished before it could be killed"
    done_at_kill = _level0_chunks(store)
    assert 0 < done_at_kill < total
    assert not json.loads((store / "zarr.json").read_text())["attributes"]["pathoflash"]["complete"]
    # What a kill can leave: a temporary chunk file, a journal line cut short.
    row, col = reference.grid.tissue_tiles[-1]
    (store / "0" / "c" / "0" / str(row)).mkdir(parents=True, exist_ok=True)
    (store / "0" / "c" / "0" / str(row) / f".{col}.deadbeef.pathoflash-tmp").write_bytes(b"half a chu")
    (store / UNREADABLE_JOURNAL).write_text('{"row": 1, "col"')

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    resumed = re.search(r"resumed: (\d+) tiles were already there", rerun.stdout)
    assert resumed is not None, rerun.stdout
    assert int(resumed.group(1)) == done_at_kill  # only the missing chunks were decoded

    final = pf.TileStore.open(store)
    assert final.is_complete and final.unreadable_tiles == ()
    assert not list(store.rglob("*.pathoflash-tmp")) and not (store / UNREADABLE_JOURNAL).exists()
    expected, actual = _arrays(reference.path), _arrays(store)
    assert expected.keys() == actual.keys()
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)
    ours = final.attrs
    theirs = reference.attrs
    ours["grid"].pop("tissue_mask", None)
    assert ours == theirs


def test_resume_after_a_kill_during_the_pyramid(tmp_path: Path, big_slide: Path) -> None:
    """Level-0 done but parents missing (killed between writes): the pyramid is completed from disk."""
    store_path = tmp_path / "tiles.zarr"
    reference = pf.tile_slide(big_slide, store_path, workers=2)
    expected = _arrays(store_path)
    # Simulate: the kill came after all level-0 chunks but before some pyramid chunks and the marker.
    removed = 0
    for level in range(1, reference.level_count):
        for chunk in sorted((store_path / str(level) / "c" / "0").glob("*/*"))[::2]:
            chunk.unlink()
            removed += 1
    meta = json.loads((store_path / "zarr.json").read_text())
    meta["attributes"]["pathoflash"]["complete"] = False
    (store_path / "zarr.json").write_text(json.dumps(meta))
    assert removed > 0
    again = pf.tile_slide(big_slide, store_path, workers=2)
    assert again.last_report is not None and again.last_report.tiles_decoded == 0
    actual = _arrays(store_path)
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)
