"""WriterProcess: calls answered from a subprocess, errors re-raised here, no process left behind."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pathoflash.export.geojson import write_geojson
from pathoflash.export.process import WriterProcess, WriterProcessError
from pathoflash.export.tiff import write_tiff
from pathoflash.heatmap import Heatmap
from pathoflash.outputs import WriterProcesses


@pytest.fixture
def process() -> WriterProcess:
    started = WriterProcess.start(["numpy"])
    assert started is not None
    with started:
        yield started
    assert started._process.poll() is not None  # ended and reaped


def test_calls_run_in_another_process(process: WriterProcess) -> None:
    assert process.call(os.getpid) != os.getpid()
    assert process.call(divmod, 17, 5) == (3, 2)
    assert process.call(print, "stdout is not the answer channel") is None
    assert process.call(sorted, [3, 1, 2], reverse=True) == [3, 2, 1]


def test_an_exception_comes_back_with_its_type_and_message(process: WriterProcess) -> None:
    with pytest.raises(ValueError, match="invalid literal for int"):
        process.call(int, "x")
    with pytest.raises(FileNotFoundError, match="no-such-file"):
        process.call(open, "/no-such-dir/no-such-file")
    assert process.call(divmod, 7, 2) == (3, 1)  # still serving


def test_it_runs_this_pathoflash_not_one_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shadow = tmp_path / "pathoflash"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('the pathoflash of the working directory')\n")
    monkeypatch.chdir(tmp_path)
    started = WriterProcess.start()
    assert started is not None
    with started:
        assert started.call(divmod, 7, 2) == (3, 1)


def test_a_dead_process_is_one_line_error(process: WriterProcess) -> None:
    with pytest.raises(WriterProcessError, match=r"exited with code 3") as info:
        process.call(os._exit, 3)
    assert "\n" not in str(info.value)


def test_killing_it_ends_a_call_in_flight() -> None:
    started = WriterProcess.start()
    assert started is not None
    errors: list[BaseException] = []

    def call() -> None:
        try:
            started.call(time.sleep, 60)
        except BaseException as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="export failed"), started:
        raise RuntimeError("export failed")  # leaving with an error kills the process
    caller.join(10)
    assert time.perf_counter() - t0 < 5
    assert started._process.poll() is not None
    assert len(errors) == 1 and isinstance(errors[0], WriterProcessError)


def test_exports_written_in_their_processes_are_the_same_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    p = rng.random((90, 70)).astype(np.float32)
    p[rng.random(p.shape) < 0.3] = np.nan
    heatmap = Heatmap(probabilities=p, mpp=8.0, slide_dimensions=(2240, 2880), slide_mpp=(0.25, 0.25))
    with WriterProcesses() as processes:
        tif = processes.call("heatmap.tif", write_tiff, heatmap, tmp_path / "a.tif")
        geojson = processes.call(
            "heatmap.geojson", write_geojson, heatmap, tmp_path / "a.geojson", threshold=0.4
        )
    assert tif.read_bytes() == write_tiff(heatmap, tmp_path / "b.tif").read_bytes()
    assert geojson.read_bytes() == write_geojson(heatmap, tmp_path / "b.geojson", threshold=0.4).read_bytes()


def test_closing_without_waiting_returns_at_once_and_the_process_still_exits() -> None:
    process = WriterProcess.start()
    assert process is not None
    child = process._process
    busy = threading.Thread(target=process.call, args=(time.sleep, 1.5))
    busy.start()  # the child is inside a 1.5 s call: closing and waiting would take that long
    time.sleep(0.2)
    started = time.perf_counter()
    process.close(wait=False)
    assert time.perf_counter() - started < 0.5
    assert child.poll() is None  # still running its call
    busy.join(10)
    assert child.wait(10) == 0  # its stdin closed: it answers, exits on its own, and the reaper collects it


@pytest.mark.parametrize("cpus", [1, 2, 4, 16, 64])
def test_the_export_pools_leave_cores_to_the_single_threaded_exports(cpus: int) -> None:
    from pathoflash.outputs import export_threads

    tiff, viewer = export_threads(cpus)
    assert tiff >= 1 and viewer >= 1
    if cpus >= 5:  # room for the GeoJSON, the PNG and this process's thread beside both pools
        assert tiff + viewer + 3 <= cpus
