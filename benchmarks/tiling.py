"""Tiling throughput and memory: ``tile_slide`` against bare OpenSlide ``read_region``, in one run.

    python benchmarks/tiling.py                       # a 40000 × 40000 synthetic slide (1.6 Gpx), made once
    python benchmarks/tiling.py --slide my.svs --workers 4

Both sides read exactly the same tissue tiles, from the same pyramid level and with the same number of
threads; each runs in a fresh subprocess so that peak RSS (``VmHWM``) is its own:

- ``openslide``: ``np.asarray(OpenSlide.read_region(...))`` on a thread pool, nothing else — the
  ceiling for decoding;
- ``pathoflash``: ``pf.tile_slide`` with the same grid: decoding, resampling, encoding and writing every
  chunk of the Zarr store and its pyramid, atomically. Tissue detection is timed separately. Its default
  decoder reads JPEG-tiled TIFF levels from the raw tile bytes (``pathoflash.jpeg_tiles``);
- ``pathoflash-openslide``: the same with ``decoder="openslide"`` (every tile through OpenSlide), to show
  what the raw-JPEG path changes (``--sides openslide,pathoflash`` leaves it out).

It also times the chunk codecs on real tiles of the slide (why the store uses Blosc-LZ4).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_SIZE = (40_000, 40_000)
SIDES = ("openslide", "pathoflash", "pathoflash-openslide")

# Runs in a subprocess: bare OpenSlide over the given tiles.
OPENSLIDE_CHILD = """
import json, resource, sys, time
from concurrent.futures import ThreadPoolExecutor
import numpy as np, openslide
job = json.loads(sys.argv[1])
slide = openslide.OpenSlide(job["slide"])
cpu0 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
level, size = job["level"], tuple(job["read_size"])
def read(location):
    return np.asarray(slide.read_region(tuple(location), level, size)).shape
start = time.perf_counter()
with ThreadPoolExecutor(job["workers"]) as pool:
    for _ in pool.map(read, job["locations"]):
        pass
seconds = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"seconds": seconds, "tiles": len(job["locations"]), "peak_rss_mb": hwm / 1024,
                  "cpu_seconds": usage.ru_utime + usage.ru_stime - cpu0}))
"""

# Runs in a subprocess: pathoflash end to end (tissue, grid, tiles, store, pyramid).
PATHOFLASH_CHILD = """
import json, resource, sys, time
import zarr  # imported once per process by the first store; not part of a tile's cost
import pathoflash as pf
from pathoflash.tiling import plan_grid
job = json.loads(sys.argv[1])
start = time.perf_counter()
with pf.open_slide(job["slide"]) as slide:
    grid = plan_grid(slide, mpp=job["mpp"], tile_size=job["tile_size"])
    planned = time.perf_counter()
    cpu0 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    store = pf.tile_slide(slide, job["out"], grid=grid, workers=job["workers"], codec=job["codec"],
                          decoder=job["decoder"])
done = time.perf_counter()
usage = resource.getrusage(resource.RUSAGE_SELF)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"seconds": done - planned, "tissue_seconds": planned - start,
                  "tiles": len(store.grid.tissue_tiles), "peak_rss_mb": hwm / 1024,
                  "cpu_seconds": usage.ru_utime + usage.ru_stime - cpu0,
                  "levels": store.level_count, "unreadable": len(store.unreadable_tiles)}))
"""


def _child(code: str, job: dict) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(job)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _ensure_slide(path: Path, size: tuple[int, int], seed: int, mpp: float) -> Path:
    if path.is_file():
        return path
    from pathoflash.sample_data import write_sample_slide

    print(f"writing {size[0]} × {size[1]} synthetic slide to {path} (once) …", flush=True)
    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_sample_slide(path, seed=seed, size=size, mpp=mpp)
    print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
    return path


def _plan(slide_path: Path, mpp: float, tile_size: int) -> tuple[dict, list[tuple[int, int]]]:
    """What the OpenSlide side must read: level, read size and level-0 locations of the tissue tiles."""
    import pathoflash as pf
    from pathoflash.tiling import plan_grid

    with pf.open_slide(slide_path) as slide:
        grid = plan_grid(slide, mpp=mpp, tile_size=tile_size)
        downsample = slide.level_downsamples[grid.level]
        dims, slide_mpp = slide.dimensions, slide.mpp
    if not grid.integer_reduction:
        raise SystemExit(
            "pick --mpp so that tiles come from a whole-number reduction (e.g. 0.5 on a 0.25 slide)"
        )
    k = round(grid.level_scale[0])
    locations = [
        [round(c * tile_size * k * downsample), round(r * tile_size * k * downsample)]
        for r, c in grid.tissue_tiles
    ]
    info = {
        "level": grid.level,
        "read_size": [tile_size * k, tile_size * k],
        "grid": f"{grid.rows}×{grid.cols}",
        "dimensions": dims,
        "slide_mpp": slide_mpp[0],
        "grid_mpp": grid.mpp,
    }
    return info, [(x, y) for x, y in locations]


def _codecs(
    slide_path: Path, locations: list[tuple[int, int]], level: int, read_size: list[int]
) -> list[dict]:
    """Encode 200 real tiles with each candidate chunk codec: time per tile and size ratio."""
    import numcodecs
    import numpy as np

    import pathoflash as pf

    with pf.open_slide(slide_path) as slide:
        step = max(1, len(locations) // 200)
        tiles = [
            np.ascontiguousarray(
                slide.read_region(loc, level, (read_size[0], read_size[1]))[:256, :256].transpose(2, 0, 1)
            )
            for loc in locations[::step][:200]
        ]
    candidates = {
        "none": None,
        "blosc-lz4 (chosen)": numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.NOSHUFFLE),
        "zstd-1": numcodecs.Zstd(level=1),
        "zstd-3": numcodecs.Zstd(level=3),
    }
    rows = []
    for name, codec in candidates.items():
        start = time.perf_counter()
        size = sum(len(t.tobytes() if codec is None else codec.encode(t)) for t in tiles)
        seconds = time.perf_counter() - start
        raw = sum(t.nbytes for t in tiles)
        rows.append({"codec": name, "ms_per_tile": 1e3 * seconds / len(tiles), "ratio": size / raw})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slide", type=Path, help="slide to use (default: a synthetic slide, made once)")
    parser.add_argument("--size", default=f"{DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}", help="synthetic slide WxH")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "pathoflash-bench")
    parser.add_argument("--mpp", type=float, default=0.5, help="target µm/px")
    parser.add_argument("--tile-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--codec", default="lz4", choices=("lz4", "zstd", "none"), help="chunk codec")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every side (medians reported)")
    parser.add_argument(
        "--sides",
        default=",".join(SIDES),
        help=f"comma-separated, of {', '.join(SIDES)} (openslide required)",
    )
    args = parser.parse_args()
    sides = tuple(side for side in SIDES if side in args.sides.split(","))
    if "openslide" not in sides or "pathoflash" not in sides:
        raise SystemExit(f"--sides must include openslide and pathoflash, got {args.sides!r}")

    width, height = (int(v) for v in args.size.lower().split("x"))
    args.cache.mkdir(parents=True, exist_ok=True)
    slide_path = args.slide or _ensure_slide(
        args.cache / f"sample-{width}x{height}-seed{args.seed}.svs", (width, height), args.seed, 0.25
    )
    info, locations = _plan(slide_path, args.mpp, args.tile_size)
    gpx = info["dimensions"][0] * info["dimensions"][1] / 1e9
    print(
        f"slide {slide_path.name}: {info['dimensions'][0]} × {info['dimensions'][1]} px ({gpx:.2f} Gpx) at "
        f"{info['slide_mpp']:.4g} µm/px; grid {info['grid']} at {info['grid_mpp']:.4g} µm/px; "
        f"{len(locations)} tissue tiles read as {info['read_size'][0]} px from level {info['level']}; "
        f"{args.workers} threads",
        flush=True,
    )
    bare_job = {"slide": str(slide_path), "level": info["level"], "read_size": info["read_size"],
                "locations": locations, "workers": args.workers}  # fmt: skip
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    print("\n| round | what | seconds | tiles/s | CPU ms/tile | peak RSS |")
    print("|---:|---|---:|---:|---:|---:|")
    for round_no in range(1, args.repeat + 1):
        # Rotate which side goes first: on a shared machine the load drifts between runs.
        shift = (round_no - 1) % len(sides)
        order = sides[shift:] + sides[:shift]
        for side in order:
            if side == "openslide":
                row = _child(OPENSLIDE_CHILD, bare_job)
            else:
                with tempfile.TemporaryDirectory(dir=args.cache) as scratch:
                    row = _child(
                        PATHOFLASH_CHILD,
                        {"slide": str(slide_path), "out": str(Path(scratch) / "tiles.zarr"), "mpp": args.mpp,
                         "tile_size": args.tile_size, "workers": args.workers, "codec": args.codec,
                         "decoder": "openslide" if side == "pathoflash-openslide" else "auto"},
                    )  # fmt: skip
                assert row["tiles"] == len(locations), (row["tiles"], len(locations))
            runs[side].append(row)
            print(
                f"| {round_no} | {side} | {row['seconds']:.1f} | {row['tiles'] / row['seconds']:.0f} | "
                f"{1e3 * row['cpu_seconds'] / row['tiles']:.1f} | {row['peak_rss_mb']:.0f} MB |",
                flush=True,
            )
    rate = {side: statistics.median(r["tiles"] / r["seconds"] for r in rows) for side, rows in runs.items()}
    cpu = {
        side: statistics.median(r["cpu_seconds"] / r["tiles"] for r in rows) for side, rows in runs.items()
    }
    rss = {side: max(r["peak_rss_mb"] for r in rows) for side, rows in runs.items()}
    ours = runs["pathoflash"][-1]
    print(
        f"\nmedians over {args.repeat} rounds: OpenSlide {rate['openslide']:.0f} tiles/s "
        f"({1e3 * cpu['openslide']:.1f} CPU ms/tile, peak RSS {rss['openslide']:.0f} MB); pathoflash "
        f"{rate['pathoflash']:.0f} tiles/s ({1e3 * cpu['pathoflash']:.1f} CPU ms/tile, peak RSS "
        f"{rss['pathoflash']:.0f} MB)\nratio pathoflash / OpenSlide: {rate['pathoflash'] / rate['openslide']:.2f}× "
        f"in tiles/s, {cpu['openslide'] / cpu['pathoflash']:.2f}× in CPU per tile (goal ≥ 0.8×); tissue "
        f"detection + grid: {ours['tissue_seconds']:.1f} s; pyramid levels: {ours['levels']}"
    )
    if "pathoflash-openslide" in rate:
        print(
            f"pathoflash with decoder='openslide': {rate['pathoflash-openslide']:.0f} tiles/s "
            f"({1e3 * cpu['pathoflash-openslide']:.1f} CPU ms/tile) → "
            f"{rate['pathoflash-openslide'] / rate['openslide']:.2f}× OpenSlide in tiles/s, "
            f"{cpu['openslide'] / cpu['pathoflash-openslide']:.2f}× in CPU per tile"
        )
    print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("\n| chunk codec | encode ms/tile | size / raw |")
    print("|---|---:|---:|")
    for row in _codecs(slide_path, locations, info["level"], info["read_size"]):
        print(f"| {row['codec']} | {row['ms_per_tile']:.2f} | {row['ratio']:.2f} |")
    import numpy
    import openslide
    import PIL.features
    import zarr

    print(
        f"\nPython {platform.python_version()}, numpy {numpy.__version__}, zarr {zarr.__version__}, "
        f"Pillow {PIL.__version__} (libjpeg-turbo {PIL.features.version('libjpeg_turbo')}), "
        f"openslide-python {openslide.__version__} / OpenSlide {openslide.__library_version__}, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})"
    )


if __name__ == "__main__":
    main()
