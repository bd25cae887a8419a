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
