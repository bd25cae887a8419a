"""The batch run: one Dask task per slide, results gathered into ``run.json`` as they finish.

Each slide task runs :func:`pathoflash.pipeline.process_slide` on a worker: tiles are decoded on the
worker's threads while the model works through the slide's regions in batches on the worker's device. A
failed slide becomes a ``failed`` entry, never an exception; a worker that dies has its slide re-run on another
worker (the tile store resumes, outputs are atomic); a rerun of the whole batch skips finished slides.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pathoflash.inputs import SlideInput
from pathoflash.options import RunOptions
from pathoflash.pipeline import Progress, SlideResult, process_slide, write_json_atomic

from .cluster import start_client

log = logging.getLogger(__name__)

_MODELS: dict[tuple[str | None, str], Any] = {}
_MODELS_LOCK = threading.Lock()
#: In-process runs only: live progress callbacks by slide id (functions do not travel to other processes).
_PROGRESS: dict[str, Progress] = {}


def _model_for(path: str | None, device: str) -> Any:
    """Load each model once per worker process and keep it on that worker's device."""
    with _MODELS_LOCK:
        key = (path, device)
        if key not in _MODELS:
            from pathoflash.model.checkpoint import load_model

            _MODELS[key] = load_model(path)
        return _MODELS[key]


def slide_task(item: SlideInput, out: str, options: RunOptions) -> dict[str, Any]:
    """What a Dask worker runs for one slide: a ``run.json`` entry (never raises for a bad slide).

    The entry also says which worker ran it and when (``started``/``finished``, seconds since the epoch): what
    a throughput measurement needs, and what someone reading a slow night's ``run.json`` wants to know.
    """
    started = time.time()
    try:
        model = _model_for(options.model, options.device)
    except Exception as exc:  # a broken model fails each slide with its message, not the worker
        return SlideResult(item.slide_id, str(item.path), "failed", error=str(exc)).to_dict()
    result = process_slide(item, out, options, model=model, progress=_PROGRESS.get(item.slide_id))
    record = result.to_dict()
    record["worker"] = f"{platform.node()}:{os.getpid()}"
    record["started"] = round(started, 3)
    record["finished"] = round(time.time(), 3)
    return record


def versions() -> dict[str, str]:
    import importlib.metadata as md

    found = {"python": platform.python_version()}
    for name in (
        "pathoflash",
        "torch",
        "triton",
        "openslide-python",
        "openslide-bin",
        "zarr",
        "dask",
        "distributed",
    ):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return found


@dataclass(slots=True)
class RunReport:
    """The content of ``run.json``."""

    out: Path
    options: RunOptions
    slides: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    scheduler: str = "local"

    def to_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for record in self.slides.values():
            counts[record["status"]] = counts.get(record["status"], 0) + 1
        return {
            "started": self.started,
            "finished": self.finished,
            "scheduler": self.scheduler,
            "options": self.options.to_dict(),
            "versions": versions(),
            "counts": counts,
            "slides": list(self.slides.values()),
        }

    def save(self) -> None:
        write_json_atomic(self.out / "run.json", self.to_dict())

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.slides.values() if r["status"] == "failed"]


def run_batch(
    inputs: Sequence[SlideInput],
    out: str | os.PathLike[str],
    options: RunOptions,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    processes: bool | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    progress: Callable[[str], Progress | None] | None = None,
) -> RunReport:
    """Process ``inputs`` into ``out`` with Dask; ``run.json`` is rewritten after every slide.

    ``progress(slide_id)`` may return a per-slide :data:`~pathoflash.pipeline.Progress` callback (used only
    when the workers run in this process). ``on_result`` sees each slide's record as it finishes.
    """
    from distributed import as_completed

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = RunReport(out_dir, options, scheduler=scheduler or "local")
    for item in inputs:
        report.slides[item.slide_id] = SlideResult(item.slide_id, str(item.path), "pending").to_dict()
    report.save()
    if not inputs:
        report.finished = time.time()
        report.save()
        return report

    client, use_gpu = start_client(scheduler, workers=workers, device=options.device, processes=processes)
    in_process = scheduler is None and not use_gpu and processes is not True
    try:
        futures = {}
        for item in inputs:
            if in_process and progress is not None:
                callback = progress(item.slide_id)
                if callback is not None:
                    _PROGRESS[item.slide_id] = callback
            future = client.submit(
                slide_task,
                item,
                str(out_dir.resolve()),
                options,
                key=f"slide-{item.slide_id}-{time.time_ns()}",
                resources={"GPU": 1} if use_gpu else None,
                pure=False,
            )
            futures[future] = item
        for future in as_completed(futures):
            item = futures[future]
            try:
                record = future.result()
            except Exception as exc:  # e.g. KilledWorker: the slide killed its workers too often
                record = SlideResult(
                    item.slide_id, str(item.path), "failed", error=f"{item.path}: {type(exc).__name__}: {exc}"
                ).to_dict()
            report.slides[item.slide_id] = record
            report.save()
            if on_result is not None:
                on_result(record)
    finally:
        for item in inputs:
            _PROGRESS.pop(item.slide_id, None)
        cluster = getattr(client, "cluster", None)
        client.close()
        if cluster is not None:
            cluster.close()
    report.finished = time.time()
    report.save()
    return report
