"""Time the synthetic-slide generator: ``python -m pathoflash.sample_data.bench [--workers N] [CASE …]``.

A case is ``WIDTHxHEIGHT[@TISSUE]`` (``TISSUE`` the tissue fraction, default: the generator's own).
For each it prints wall time, level-0 megapixels per second (whole slide and tissue only) and the
process's peak resident memory so far.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from .generate import write_sample_slide

DEFAULT_CASES = ("8192x8192@0.45", "32768x32768@0.01", "32768x32768")


def _peak_rss_mb() -> float:
    """Peak resident memory of this process image (VmHWM), or -1 where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return -1.0


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (worker processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _parse(case: str) -> tuple[int, int, float | None]:
    size, _, tissue = case.partition("@")
    w, _, h = size.partition("x")
    return int(w), int(h), float(tissue) if tissue else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=list(DEFAULT_CASES))
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--mpp", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for case in args.cases:
            width, height, tissue = _parse(case)
            path = Path(tmp) / f"bench-{width}x{height}.svs"
            start, cpu = time.perf_counter(), _cpu_seconds()
            slide = write_sample_slide(
                path,
                seed=args.seed,
                size=(width, height),
                mpp=args.mpp,
                tissue_fraction=tissue,
                workers=args.workers,
            )
            wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
            mpx = width * height / 1e6
            print(
                f"{case:>20}: {wall:7.1f} s wall, {cpu:7.1f} s CPU, {mpx / wall:7.1f} Mpx/s ({mpx / cpu:6.1f} per CPU-s) "
                f"({slide.tissue_fraction * mpx / wall:6.1f} Mpx/s of tissue, {slide.tissue_fraction:.1%} tissue), "
                f"{args.workers} workers, peak RSS {_peak_rss_mb():.0f} MB, file {path.stat().st_size / 1e6:.0f} MB",
                flush=True,
            )
            path.unlink()


if __name__ == "__main__":
    main()
