"""End-to-end benchmark: one generated gigapixel slide from file to every output, against its parts.

Prints one table. Each measurement runs in its own subprocess so peak RSS and warm caches do not leak:

- ``decode``   tile_slide alone: decode the tissue tiles (threads) and write the Zarr store
- ``encode``   the model alone over the same tissue regions, fed from memory (host→device copies included)
- ``e2e``      process_slide: tiles + model overlapped, then every export (PNG, GeoJSON, TIFF, viewer, summary)
- ``naive``    a sequential loop: read each region from the slide → model → write its heatmap core

Goals (issue 5): e2e ≤ 1.2 × max(decode, encode) and ≥ 3 × faster than naive.
With ``--gpus N`` it also runs a batch of ``--batch`` slides through ``pathoflash.workflows.run_batch`` with 1 and
with N GPUs (one Dask worker per GPU) and reports slides/hour (issue 6).

    python benchmarks/e2e.py --size 45000x45000 --workdir /tmp/e2e [--model M] [--gpus N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class GpuBusy:
    """Samples GPU utilisation (NVML) every 50 ms in a thread; ``fraction`` = mean busy share."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuBusy:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no NVML (CPU run): report nothing rather than a made-up number
            return self

        def loop() -> None:
            while not self._stop.wait(0.05):
                self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def fraction(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def _load(model_path: str | None, device: str) -> Any:
    from pathoflash.inference import resolve_device
    from pathoflash.model.checkpoint import load_model

    model = load_model(model_path)
    return model.to(resolve_device(device)).eval()


def _regions_with_tissue(slide_path: Path, model: Any, mpp: float) -> tuple[Any, list[Any], Any]:
    from pathoflash.inference import plan_regions
    from pathoflash.slide import open_slide
    from pathoflash.tiling import plan_grid

    slide = open_slide(slide_path)
    grid = plan_grid(slide, mpp=mpp)
    plan = plan_regions(grid.width, grid.height, patch_size=model.patch_size, region=model.region_size)
    keep = [r for r in plan if grid.has_tissue(*r.core_box)]
    return slide, keep, grid


def _fresh(path: Path) -> Path:
    """``path`` with nothing left from an earlier run: a store or slide folder found there would be resumed
    or skipped, and its stage would time next to nothing (a second run in one --workdir did so)."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    return path


def stage_decode(args: argparse.Namespace) -> dict[str, Any]:
    from pathoflash.tiling import tile_slide

    out = _fresh(Path(args.workdir) / "decode.zarr")
    t = time.perf_counter()
    store = tile_slide(args.slide, out, mpp=args.mpp, workers=args.workers)
    seconds = time.perf_counter() - t
    tiles = len(store.grid.tissue_tiles)
    return {"seconds": seconds, "tiles": tiles, "tiles_per_s": tiles / seconds, "peak_rss_mb": _peak_rss_mb()}


def stage_encode(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from pathoflash.inference import run_batch

    model = _load(args.model, args.device)
    _, regions, grid = _regions_with_tissue(Path(args.slide), model, args.mpp)
    size = model.region_size
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (args.batch_size, size, size, 3), dtype=np.uint8)
    run_batch(model, batch)  # warm-up: compile kernels, autotune
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    with GpuBusy() as busy:
        for start in range(0, len(regions), args.batch_size):
            n = min(args.batch_size, len(regions) - start)
            run_batch(model, batch[:n])
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    tiles = len(grid.tissue_tiles)
    return {"seconds": seconds, "regions": len(regions), "tiles": tiles, "tiles_per_s": tiles / seconds,
            "gpu_busy": busy.fraction, "peak_rss_mb": _peak_rss_mb()}  # fmt: skip


def stage_e2e(args: argparse.Namespace) -> dict[str, Any]:
    from pathoflash.inputs import SlideInput
    from pathoflash.options import RunOptions
    from pathoflash.pipeline import process_slide

    model = _load(args.model, args.device)
    from pathoflash.inference import run_batch

    run_batch(model, np.full((1, model.region_size, model.region_size, 3), 200, np.uint8))  # warm-up
    options = RunOptions(mpp=args.mpp, device=args.device, workers=args.workers, batch_size=args.batch_size)
    out = _fresh(Path(args.workdir) / "e2e")
    t = time.perf_counter()
    with GpuBusy() as busy:
        result = process_slide(SlideInput(Path(args.slide), "slide"), out, options, model=model)
    seconds = time.perf_counter() - t
    if result.status != "ok":
        raise SystemExit(f"e2e failed: {result.error}")
    return {"seconds": seconds, "tiles": result.tiles, "tiles_per_s": result.tiles / seconds,
            "timings": result.timings, "gpu_busy": busy.fraction, "peak_rss_mb": _peak_rss_mb()}  # fmt: skip


def stage_naive(args: argparse.Namespace) -> dict[str, Any]:
    from pathoflash.inference import run_batch

    model = _load(args.model, args.device)
    slide, regions, grid = _regions_with_tissue(Path(args.slide), model, args.mpp)
    run_batch(model, np.full((1, model.region_size, model.region_size, 3), 200, np.uint8))
    scale = args.mpp / slide.mpp[0]
    heatmap = np.full(((grid.height + 15) // 16, (grid.width + 15) // 16), np.nan, np.float32)
    t = time.perf_counter()
    for region in regions:
        pixels = slide.read_at_mpp(
            (round(region.x * scale), round(region.y * scale)), (region.width, region.height), args.mpp
        )
        tokens = run_batch(model, pixels[None])[0]
        heatmap[region.out_slices] = region.core(tokens)
    seconds = time.perf_counter() - t
    tiles = len(grid.tissue_tiles)
    return {"seconds": seconds, "regions": len(regions), "tiles": tiles, "tiles_per_s": tiles / seconds,
            "peak_rss_mb": _peak_rss_mb()}  # fmt: skip


def stage_batch(args: argparse.Namespace) -> dict[str, Any]:
    from pathoflash.workflows import run_batch as run_dask_batch

    from pathoflash.inputs import collect_slides
    from pathoflash.options import RunOptions

    slides = sorted(Path(args.workdir).glob("batch-*.svs"))
    options = RunOptions(
        mpp=args.mpp, device="auto", workers=args.workers, batch_size=args.batch_size, model=args.model
    )
    out = _fresh(Path(args.workdir) / f"batch-out-{args.gpus_now}")
    t = time.perf_counter()
    report = run_dask_batch(collect_slides(slides), out, options, workers=args.gpus_now)
    seconds = time.perf_counter() - t
    done = [r for r in report.slides.values() if r["status"] == "ok"]
    return {
        "seconds": seconds,
        "slides": len(done),
        "slides_per_hour": len(done) / seconds * 3600,
        "steady_slides_per_hour": steady_rate(done),
        "workers": len({r["worker"] for r in done}),
    }


def steady_rate(records: list[dict[str, Any]]) -> float | None:
    """Slides/hour once every worker is warm: slides finished after the last worker's first slide.

    A worker's first slide also pays for its process start, the model load and the kernels' compile and
    autotune; a night's batch of hundreds of slides pays that once per worker, a short benchmark batch would
    count it against every slide.
    """
    firsts: dict[str, float] = {}
    for r in records:
        firsts[r["worker"]] = min(firsts.get(r["worker"], r["finished"]), r["finished"])
    warm = max(firsts.values(), default=0.0)
    later = [r["finished"] for r in records if r["finished"] > warm]
    if not later:
        return None
    return len(later) / (max(later) - warm) * 3600


STAGES = {
    "decode": stage_decode,
    "encode": stage_encode,
    "e2e": stage_e2e,
    "naive": stage_naive,
    "batch": stage_batch,
}


def _run_stage(name: str, args: argparse.Namespace, extra: list[str] | None = None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--stage", name, "--slide", str(args.slide), "--workdir", args.workdir,
           "--mpp", str(args.mpp), "--batch-size", str(args.batch_size), "--device", args.device,
           *(["--workers", str(args.workers)] if args.workers else []),
           *(["--model", args.model] if args.model else []), *(extra or [])]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"stage {name} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", default="45000x45000", help="level-0 size of the generated slide (0.25 µm/px)"
    )
    parser.add_argument("--slide", type=Path, help="use this slide instead of generating one")
    parser.add_argument("--workdir", default="/tmp/pathoflash-e2e")
    parser.add_argument("--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument("--mpp", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None, help="decode threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--stages", default="decode,encode,e2e,naive")
    parser.add_argument("--gpus", type=int, default=0, help="also run a batch with 1 and N GPUs (issue 6)")
    parser.add_argument("--batch", type=int, default=16, help="slides in the --gpus batch")
    parser.add_argument("--json", type=Path, help="write all numbers here too")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--gpus-now", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stage:
        print(json.dumps(STAGES[args.stage](args), default=float))
        return

    from pathoflash.sample_data import write_sample_slide

    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    if args.slide is None:
        w, h = (int(v) for v in args.size.split("x"))
        args.slide = Path(args.workdir) / f"slide-{w}x{h}.svs"
        if not args.slide.is_file():
            t = time.perf_counter()
            write_sample_slide(args.slide, seed=7, size=(w, h), mpp=0.25, workers=os.cpu_count())
            print(
                f"generated {args.slide} ({w * h / 1e9:.2f} Gpx) in {time.perf_counter() - t:.0f} s",
                flush=True,
            )
    results: dict[str, Any] = {}
    for name in filter(None, args.stages.split(",")):
        results[name] = _run_stage(name, args)
        print(f"{name}: {results[name]}", flush=True)
    if args.gpus:
        for i in range(args.batch):
            path = Path(args.workdir) / f"batch-{i}.svs"
            if not path.is_file():
                write_sample_slide(path, seed=100 + i, size=(16384, 16384), mpp=0.25, workers=os.cpu_count())
        for n in sorted({1, args.gpus}):
            results[f"batch_{n}gpu"] = _run_stage("batch", args, ["--gpus-now", str(n)])
            print(f"batch {n} GPU: {results[f'batch_{n}gpu']}", flush=True)

    import platform

    import torch

    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "CPU"
    print(f"\nslide {args.slide.name}, model {args.model or 'bundled'}, card {card}, torch {torch.__version__}, "
          f"date {time.strftime('%Y-%m-%d')}")  # fmt: skip
    print(f"{'stage':8s} {'seconds':>9s} {'tiles/s':>9s} {'GPU busy':>9s} {'peak RSS MB':>12s}")
    for name in ("decode", "encode", "e2e", "naive"):
        if name in results:
            r = results[name]
            busy = "" if r.get("gpu_busy") is None else f"{r['gpu_busy']:.0%}"
            print(
                f"{name:8s} {r['seconds']:9.1f} {r['tiles_per_s']:9.0f} {busy:>9s} {r['peak_rss_mb']:12.0f}"
            )
    if "timings" in results.get("e2e", {}):  # where the end-to-end seconds went (process_slide's timings)
        parts = results["e2e"]["timings"]
        print(
            "e2e parts: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items() if not k.startswith("export "))
        )
        print("  exports (concurrent): " + ", ".join(
            f"{k[7:]} {v:.2f}" for k, v in parts.items() if k.startswith("export ")))  # fmt: skip
    if {"decode", "encode", "e2e"} <= results.keys():
        bound = max(results["decode"]["seconds"], results["encode"]["seconds"])
        print(f"e2e / max(decode, encode) = {results['e2e']['seconds'] / bound:.2f}  (goal ≤ 1.2)")
    if {"e2e", "naive"} <= results.keys():
        print(f"naive / e2e = {results['naive']['seconds'] / results['e2e']['seconds']:.2f}  (goal ≥ 3)")
    for key, r in results.items():
        if key.startswith("batch_"):
            steady = r.get("steady_slides_per_hour")
            print(
                f"{key}: {r['slides']} slides on {r.get('workers', '?')} workers in {r['seconds']:.0f} s = "
                f"{r['slides_per_hour']:.0f} slides/hour; once warm "
                + ("n/a" if steady is None else f"{steady:.0f} slides/hour")
            )
    one, many = results.get("batch_1gpu"), results.get(f"batch_{args.gpus}gpu")
    if one and many and args.gpus > 1:
        for label, key in (("wall", "slides_per_hour"), ("once warm", "steady_slides_per_hour")):
            if one.get(key) and many.get(key):
                ratio = many[key] / one[key]
                print(
                    f"scaling ({label}): {ratio:.2f}x with {args.gpus} GPUs (goal >= {0.9 * args.gpus:.1f}x)"
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
