"""Dask orchestration of PathoFlash runs (the only package that knows about Dask)."""

from .batch import RunReport, run_batch, slide_task
from .cluster import WorkerSpec, plan_workers, start_client, visible_gpus

__all__ = [
    "RunReport",
    "WorkerSpec",
    "plan_workers",
    "run_batch",
    "slide_task",
    "start_client",
    "visible_gpus",
]
