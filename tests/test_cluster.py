"""GPU placement, tested with simulated devices: one worker per GPU, each seeing only its own card."""

from pathoflash.workflows.cluster import SAFE_ENV, plan_workers, visible_gpus


def test_one_worker_per_gpu_each_pinned_to_its_device() -> None:
    specs = plan_workers(["0", "1", "2", "3"])
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in specs] == ["0", "1", "2", "3"]
    assert all(s.resources == {"GPU": 1} for s in specs)
    assert len({s.name for s in specs}) == 4
    assert all(s.env[k] == v for s in specs for k, v in SAFE_ENV.items())


def test_worker_limit_and_cpu_fallback() -> None:
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in plan_workers(["4", "6"], workers=1)] == ["4"]
    cpu = plan_workers([], workers=2)
    assert len(cpu) == 2
    assert all(not s.resources and "CUDA_VISIBLE_DEVICES" not in s.env for s in cpu)


def test_visible_gpus_honours_cuda_visible_devices(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert visible_gpus() == ["2", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus() == []


def _worker_view(dask_worker=None) -> tuple[str, float]:
    import os

    from distributed import get_worker

    worker = dask_worker or get_worker()
    return os.environ.get("CUDA_VISIBLE_DEVICES", ""), worker.state.total_resources.get("GPU", 0)


def test_local_cluster_pins_one_simulated_gpu_per_worker_process(monkeypatch) -> None:
    """The real start-up path with two simulated GPUs: two worker processes, each seeing one device."""
    from pathoflash.workflows import cluster

    monkeypatch.setattr(cluster, "visible_gpus", lambda: ["0", "1"])
    client, use_gpu = cluster.start_client(device="auto")
    try:
        assert use_gpu
        views = client.run(_worker_view)
        assert sorted(views.values()) == [("0", 1), ("1", 1)]
        # Two GPU tasks at once land on different workers: a card is never shared.
        futures = [client.submit(_worker_view, resources={"GPU": 1}, pure=False) for _ in range(4)]
        assert {f.result()[0] for f in futures} <= {"0", "1"}
    finally:
        client.cluster.close()
        client.close()


def test_device_cpu_ignores_gpus_and_runs_in_process(monkeypatch) -> None:
    from pathoflash.workflows import cluster

    monkeypatch.setattr(cluster, "visible_gpus", lambda: ["0"])
    client, use_gpu = cluster.start_client(device="cpu")
    try:
        assert not use_gpu
        assert len(client.scheduler_info()["workers"]) == 1
    finally:
        client.cluster.close()
        client.close()
