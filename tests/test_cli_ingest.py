"""``pathoflash info`` / ``tile`` / ``sample`` as a user runs them, and their start-up cost."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import corrupt_grid_tiles
from typer.testing import CliRunner

import pathoflash as pf
from pathoflash.cli import app

runner = CliRunner()


def test_info_table_and_json(cmu1: Path) -> None:
    table = runner.invoke(app, ["info", str(cmu1)])
    assert table.exit_code == 0, table.output
    for text in ("aperio", "2220 × 2967", "0.499", "20×", "label, macro, thumbnail"):
        assert text in table.stdout
    as_json = runner.invoke(app, ["info", str(cmu1), "--json"])
    data = json.loads(as_json.stdout)
    assert data["dimensions"] == [2220, 2967] and data["mpp"] == [0.499, 0.499]
    assert data["objective_power"] == 20.0 and data["format"] == "aperio"
    override = json.loads(runner.invoke(app, ["info", str(cmu1), "--json", "--slide-mpp", "0.25"]).stdout)
    assert override["mpp"] == [0.25, 0.25] and override["mpp_source"] == "override"


def test_tile_writes_out_slide_tiles_zarr_and_resumes(tmp_path: Path, cmu1: Path) -> None:
    out = tmp_path / "out"
    first = runner.invoke(app, ["tile", str(cmu1), "--out", str(out), "--workers", "2"])
    assert first.exit_code == 0, first.output
    store_path = out / "CMU-1-Small-Region" / "tiles.zarr"
    assert f"{store_path}:" in first.stdout and "tissue tiles of 12×9" in first.stdout
    store = pf.TileStore.open(store_path)
    assert store.is_complete and store.grid.tile_size == 256
    again = runner.invoke(app, ["tile", str(cmu1), "--out", str(out)])
    assert again.exit_code == 0 and "already complete" in again.stdout
    other = runner.invoke(app, ["tile", str(cmu1), "--out", str(out), "--mpp", "1", "--tile-size", "128"])
    assert other.exit_code == 0, other.output
    rebuilt = pf.TileStore.open(store_path)
    assert rebuilt.grid.tile_size == 128 and rebuilt.mpp == pytest.approx(0.998)


def test_tile_a_folder_of_synthetic_slides(tmp_path: Path, synthetic_slides) -> None:
    folder = tmp_path / "slides"
    folder.mkdir()
    for sample in synthetic_slides:
        shutil.copy(sample.path, folder / sample.path.name)
    result = runner.invoke(app, ["tile", str(folder), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    for sample in synthetic_slides:
        store = pf.TileStore.open(tmp_path / "out" / sample.path.stem / "tiles.zarr")
        assert store.is_complete and store.source.format == "aperio"
        assert store.mpp == 0.5 and store.grid.scale == (1.0, 1.0)
        assert 4 <= len(store.grid.tissue_tiles) < store.grid.tile_count


def test_unreadable_tiles_are_reported_and_strict_fails(tmp_path: Path, corrupt_svs: Path) -> None:
    lenient = runner.invoke(app, ["tile", str(corrupt_svs), "--out", str(tmp_path / "a"), "--workers", "2"])
    assert lenient.exit_code == 0, lenient.output
    expected = sorted(corrupt_grid_tiles(256))
    warning = next(line for line in lenient.stderr.splitlines() if line.startswith("warning:"))
    assert f"{len(expected)} unreadable tiles" in warning
    assert all(f"({r}, {c})" in warning for r, c in expected)
    strict = runner.invoke(app, ["tile", str(corrupt_svs), "--out", str(tmp_path / "b"), "--strict"])
    assert strict.exit_code == 1
    (line,) = [line for line in strict.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: {corrupt_svs}: tile (row ") and "strict" in line


def test_sample_writes_a_slide_and_its_truth(tmp_path: Path) -> None:
    out = tmp_path / "demo.svs"
    result = runner.invoke(app, ["sample", str(out), "--seed", "5", "--size", "1024x768", "--mpp", "0.5"])
    assert result.exit_code == 0, result.output
    with pf.open_slide(out) as slide:
        assert slide.dimensions == (1024, 768) and slide.mpp == (0.5, 0.5)
    assert (tmp_path / "demo.truth.geojson").is_file()
    bad = runner.invoke(app, ["sample", str(tmp_path / "x.svs"), "--size", "big"])
    assert bad.exit_code == 2 and "WIDTHxHEIGHT" in bad.output


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ["info", "tile"])
def test_info_and_tile_never_import_torch(tmp_path: Path, cmu1: Path, command: str) -> None:
    args = [command, str(cmu1)] + (["--out", str(tmp_path)] if command == "tile" else [])
    code = (
        "import sys\n"
        "from pathoflash.cli import main\n"
        f"sys.argv = ['pathoflash', *{args!r}]\n"
        "try:\n    main()\n"
        "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
    )
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().endswith("NO-TORCH")


def test_cli_starts_well_under_a_second() -> None:
    """CPU time, not wall time: CI shares its cores, which stretches wall time but not the work done."""
    code = (
        "import time; t = time.process_time()\n"
        "import pathoflash.cli, pathoflash.slide, pathoflash.tiling, pathoflash.store\n"
        "print(time.process_time() - t)\n"
    )
    best = min(float(_run_python(code).stdout) for _ in range(3))
    assert best < 0.5, f"imports took {best:.2f} s of CPU"
