"""Where the work runs: an existing Dask cluster, or a local one sized to this machine.

Locally, each GPU gets one worker process that sees only its own device (``CUDA_VISIBLE_DEVICES``) and
advertises one ``GPU`` resource, so slide tasks that ask for ``{"GPU": 1}`` never share a card. Without GPUs,
one worker runs one slide at a time and that slide's decoding uses every core through its own threads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# A local cluster's scheduler always serves HTTP (health, metrics, the dashboard if bokeh is installed):
# on the loopback interface and a free port, never the fixed :8787 on every interface (two runs would collide).
_HTTP_ADDRESS = "127.0.0.1:0"

#: Environment every worker keeps: NVLink multicast stays off on shared multi-GPU hosts.
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """One local worker: its name, the devices it sees, its Dask resources and thread count."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)
    nthreads: int = 1


def visible_gpus() -> list[str]:
    """GPU ids this process may use (honours an existing ``CUDA_VISIBLE_DEVICES``)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


def plan_workers(gpus: Sequence[str], *, workers: int | None = None) -> list[WorkerSpec]:
    """One worker per GPU (pinned by ``CUDA_VISIBLE_DEVICES``); else ``workers`` CPU workers (default 1)."""
    if gpus:
        chosen = list(gpus)[: workers or len(gpus)]
        return [
            WorkerSpec(
                name=f"gpu-{gpu}",
                env={**SAFE_ENV, "CUDA_VISIBLE_DEVICES": gpu},
                resources={"GPU": 1},
            )
            for gpu in chosen
        ]
    return [WorkerSpec(name=f"cpu-{i}", env=dict(SAFE_ENV)) for i in range(workers or 1)]


def start_client(
    scheduler: str | None = None,
    *,
    workers: int | None = None,
    device: str = "auto",
    processes: bool | None = None,
) -> tuple[Any, bool]:
    """A connected ``distributed.Client`` and whether tasks should request a ``GPU`` resource.

    ``scheduler`` (``tcp://host:port``) joins an existing cluster; its workers' resources decide GPU use
    (start them with ``--resources GPU=1`` per GPU). Otherwise a local cluster follows :func:`plan_workers`:
    worker processes with GPUs, an in-process thread worker on a CPU-only machine (``processes`` overrides).
    """
    import dask

    # Importing distributed sets its loggers to INFO (a screenful per run): WARNING instead, unless the
    # caller chose a level (the CLI's --quiet chooses ERROR; someone debugging Dask may choose DEBUG).
    chosen = logging.getLogger("distributed").level
    from distributed import Client, LocalCluster, Nanny, SpecCluster

    debugging = logging.NOTSET < chosen < logging.INFO
    logging.getLogger("distributed").setLevel(chosen if debugging else max(chosen, logging.WARNING))
    dask.config.set({"distributed.scheduler.allowed-failures": 3})
    if scheduler:
        client = Client(scheduler, timeout="30s")
        info = client.scheduler_info()
        has_gpu = any(w.get("resources", {}).get("GPU") for w in info.get("workers", {}).values())
        return client, has_gpu and device != "cpu"

    gpus = [] if device == "cpu" else visible_gpus()
    specs = plan_workers(gpus, workers=workers)
    use_processes = bool(gpus) if processes is None else processes
    if not use_processes:
        cluster = LocalCluster(
            n_workers=len(specs), threads_per_worker=1, processes=False, dashboard_address=_HTTP_ADDRESS
        )
        return Client(cluster), False
    worker_specs = {
        spec.name: {
            "cls": Nanny,
            "options": {"nthreads": spec.nthreads, "env": spec.env, "resources": spec.resources},
        }
        for spec in specs
    }
    scheduler_spec = {"cls": "distributed.Scheduler", "options": {"dashboard_address": _HTTP_ADDRESS}}
    gpu_cluster = SpecCluster(workers=worker_specs, scheduler=scheduler_spec)
    log.info("local Dask cluster: %s", ", ".join(spec.name for spec in specs))
    return Client(gpu_cluster), bool(gpus)
