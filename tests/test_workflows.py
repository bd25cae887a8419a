"""The batch pipeline through Dask: bad slides among good ones, reruns, SIGKILL resume, a dying worker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pathoflash.workflows import run_batch

from pathoflash.inputs import collect_slides
from pathoflash.options import RunOptions

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer ViT with a 256-px region: the pipeline's plumbing, not its accuracy, is tested."""
    import torch

    from pathoflash.model.checkpoint import save_model
    from pathoflash.model.config import ViTConfig
    from pathoflash.model.predictor import Model, ModelInfo, Preprocessing
    from pathoflash.model.vit import VisionTransformer

    torch.manual_seed(0)
    config = ViTConfig(embed_dim=32, depth=1, num_heads=2, mlp_hidden=64, pos_grid=(16, 16))
    model = Model.from_encoder(
        VisionTransformer(config, backend="sdpa"),
        preprocessing=Preprocessing(region=256),
        info=ModelInfo(name="tiny-test"),
    )
    with torch.no_grad():  # spread the outputs, so different tissue gives clearly different maps
        model.head.fc.weight.mul_(20)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(model, path)
    return path


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from pathoflash.sample_data import write_sample_slide

    folder = tmp_path_factory.mktemp("slides")
    made = [
        write_sample_slide(folder / f"s{seed}.svs", seed=seed, size=(1536, 1280), mpp=0.5, pen_marks=False)
        for seed in (11, 12, 13)
    ]
    return [Path(m.path) for m in made]


def _options(model: Path) -> RunOptions:
    return RunOptions(model=str(model), device="cpu", workers=1)


def _heatmap(out: Path, slide_id: str) -> np.ndarray:
    from pathoflash.store import TileStore

    return TileStore.open(out / slide_id / "tiles.zarr").read_heatmap().probabilities


def test_bad_slide_does_not_stop_the_batch_and_rerun_skips(
    tmp_path: Path, slides: list[Path], tiny_model: Path
) -> None:
    bad = tmp_path / "broken.svs"
    bad.write_bytes(os.urandom(4096))
    items = collect_slides([slides[0], bad, tmp_path / "missing.svs"])
    report = run_batch(items, tmp_path / "out", _options(tiny_model))
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    status = {s["id"]: s for s in run["slides"]}
    assert status["s11"]["status"] == "ok"
    assert status["broken"]["status"] == "failed" and "broken.svs" in status["broken"]["error"]
    assert status["missing"]["status"] == "failed" and "no such file" in status["missing"]["error"]
    assert run["versions"]["torch"] and run["options"]["mpp"] == 0.5
    for name in ("heatmap.png", "heatmap.geojson", "heatmap.tif", "viewer.html", "summary.json", "done.json"):
        assert (tmp_path / "out" / "s11" / name).is_file(), name
    assert len(report.failed) == 2

    again = run_batch(collect_slides([slides[0]]), tmp_path / "out", _options(tiny_model))
    assert again.slides["s11"]["status"] == "skipped"


def _run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "pathoflash", *args], env=env, **kwargs)


def test_sigkill_then_rerun_resumes_to_the_same_heatmaps(
    tmp_path: Path, slides: list[Path], tiny_model: Path
) -> None:
    reference = tmp_path / "ref"
    args = ["run", str(slides[1]), "--model", str(tiny_model), "--device", "cpu", "--workers", "1", "-q"]
    assert _run_cli([*args, "--out", str(reference)]).wait(timeout=300) == 0

    out = tmp_path / "killed"
    proc = _run_cli([*args, "--out", str(out)])
    chunks = out / "s12" / "tiles.zarr" / "0" / "c"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if chunks.is_dir() and sum(1 for _ in chunks.rglob("*") if _.is_file()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed; make the slide bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "s12" / "done.json").exists()

    assert _run_cli([*args, "--out", str(out)]).wait(timeout=300) == 0
    record = json.loads((out / "run.json").read_text())["slides"][0]
    assert record["status"] == "ok"
    np.testing.assert_allclose(_heatmap(out, "s12"), _heatmap(reference, "s12"), atol=1e-5, equal_nan=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_distributed_run_survives_a_killed_worker(
    tmp_path: Path, slides: list[Path], tiny_model: Path
) -> None:
    from distributed import Client

    local = tmp_path / "local"
    run_batch(collect_slides(slides), local, _options(tiny_model))

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_worker",
                    address,
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--no-dashboard",
                    "--host",
                    "127.0.0.1",
                    "--name",
                    f"w{i}",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for i in range(2)
        ]
        procs.extend(workers)
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
            names = {addr: info["name"] for addr, info in client.scheduler_info()["workers"].items()}

            killed: list[int] = []

            def kill_first_busy_worker() -> None:
                deadline = time.monotonic() + 180
                while time.monotonic() < deadline and not killed:
                    busy = [addr for addr, tasks in client.processing().items() if tasks]
                    started = list((tmp_path / "dist").glob("*/tiles.zarr"))
                    if busy and started:
                        victim = workers[int(str(names[busy[0]])[1:])]
                        victim.send_signal(signal.SIGKILL)
                        killed.append(victim.pid)
                        return
                    time.sleep(0.05)

            killer = threading.Thread(target=kill_first_busy_worker)
            killer.start()
            report = run_batch(
                collect_slides(slides), tmp_path / "dist", _options(tiny_model), scheduler=address
            )
            killer.join()
        assert killed, "no worker was killed mid-run"
        assert {r["status"] for r in report.slides.values()} == {"ok"}
        survivors = {r["worker"].rsplit(":", 1)[1] for r in report.slides.values()}
        assert str(killed[0]) not in survivors
        for slide in slides:
            np.testing.assert_allclose(
                _heatmap(tmp_path / "dist", slide.stem),
                _heatmap(local, slide.stem),
                atol=1e-5,
                equal_nan=True,
            )
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_tiler_failing_before_the_store_exists_fails_the_slide_at_once(
    tmp_path: Path, slides: list[Path], tiny_model: Path
) -> None:
    from pathoflash.pipeline import process_slide

    (tmp_path / "out" / "s11").mkdir(parents=True)
    (tmp_path / "out" / "s11" / "tiles.zarr").write_text("not a store")  # a file where the store must go
    started = time.monotonic()
    result = process_slide(collect_slides([slides[0]])[0], tmp_path / "out", _options(tiny_model))
    assert result.status == "failed" and "tiles.zarr" in (result.error or "")
    assert time.monotonic() - started < 60


def test_cli_run_terminal_shows_the_table_not_library_chatter(
    tiny_model: Path, slides: list[Path], tmp_path: Path
) -> None:
    """Without --verbose the terminal gets warnings, the progress and the table; INFO goes to run.log only
    (distributed sets its own loggers to INFO on import; the package logs INFO for the file)."""
    out = tmp_path / "out"
    args = ["run", str(slides[0]), "--out", str(out), "--model", str(tiny_model), "--device", "cpu"]
    proc = subprocess.run(
        [sys.executable, "-m", "pathoflash", *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    terminal = proc.stdout + proc.stderr
    assert "ok" in proc.stdout
    assert "INFO" not in terminal and "Scheduler at" not in terminal and "Start worker" not in terminal
    log = (out / "run.log").read_text(encoding="utf-8")
    assert "INFO pathoflash" in log


def test_terminal_drops_asyncio_timeouts_left_by_cluster_shutdown_only() -> None:
    import logging

    from pathoflash.cli import ShutdownNoise

    def record(name: str, message: str, exc: BaseException | None) -> logging.LogRecord:
        info = (type(exc), exc, None) if exc is not None else None
        return logging.LogRecord(name, logging.ERROR, __file__, 1, message, None, info)

    never = (
        "Future exception was never retrieved\nfuture: <Future finished exception=TimeoutError('Timeout')>"
    )
    noise = ShutdownNoise()
    assert not noise.filter(record("asyncio", never, TimeoutError("Timeout")))
    assert noise.filter(record("asyncio", never, ValueError("a real problem")))
    assert noise.filter(record("asyncio", "Task was destroyed but it is pending!", None))
    assert noise.filter(record("pathoflash.pipeline", never, TimeoutError("Timeout")))
