"""A/B of ``tile_slide`` between a baseline checkout and this working tree, over a ``--workers`` sweep.

    git archive <commit> pathoflash | tar -x -C /tmp/pf-base      # the baseline's package, once
    python benchmarks/tiling_ab.py --base /tmp/pf-base --workers 1,2,4 --rounds 6

Each run is a fresh subprocess running the same child as ``benchmarks/tiling.py`` (grid planned first, then
``tile_slide`` timed: decoding, chunks, pyramid, completion), with ``PYTHONPATH`` pointing at the baseline or
at this tree. Rounds alternate which side goes first, so drifting load on a shared machine hits both alike.
Prints every run and, per worker count, the medians of tiles/s and CPU ms per tile (``rusage``, all threads,
kernel time included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tiling import PATHOFLASH_CHILD

HERE = Path(__file__).resolve().parent.parent


def _run(pythonpath: Path, job: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    result = subprocess.run(
        [sys.executable, "-c", PATHOFLASH_CHILD, json.dumps(job)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=tempfile.gettempdir(),  # not this tree: the import must come from PYTHONPATH
    )
    if result.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="folder holding the baseline's pathoflash/")
    default_slide = Path(tempfile.gettempdir()) / "pathoflash-bench" / "sample-40000x40000-seed0.svs"
    parser.add_argument("--slide", type=Path, default=default_slide)
    parser.add_argument("--workers", default="2", help="comma-separated thread counts, e.g. 1,2,4,16")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--mpp", type=float, default=0.5)
    parser.add_argument("--tile-size", type=int, default=256)
    args = parser.parse_args()
    if not (args.base / "pathoflash" / "__init__.py").is_file():
        raise SystemExit(f"{args.base} holds no pathoflash/ package")
    if not args.slide.is_file():
        raise SystemExit(f"no slide at {args.slide} (benchmarks/tiling.py makes one)")
    sides = {"base": args.base, "new": HERE}
    print(f"slide {args.slide}; base {args.base}; new {HERE}; {os.cpu_count()} CPUs")
    print("\n| workers | round | side | seconds | tiles/s | CPU ms/tile |")
    print("|---:|---:|---|---:|---:|---:|")
    summary = []
    for workers in (int(w) for w in args.workers.split(",")):
        rows: dict[str, list[dict]] = {side: [] for side in sides}
        for round_no in range(1, args.rounds + 1):
            order = list(sides) if round_no % 2 else list(sides)[::-1]
            for side in order:
                with tempfile.TemporaryDirectory(dir=args.slide.parent) as scratch:
                    job = {"slide": str(args.slide), "out": str(Path(scratch) / "tiles.zarr"), "mpp": args.mpp,
                           "tile_size": args.tile_size, "workers": workers, "codec": "lz4", "decoder": "auto"}  # fmt: skip
                    row = _run(sides[side], job)
                rows[side].append(row)
                print(
                    f"| {workers} | {round_no} | {side} | {row['seconds']:.2f} | "
                    f"{row['tiles'] / row['seconds']:.0f} | {1e3 * row['cpu_seconds'] / row['tiles']:.2f} |",
                    flush=True,
                )
        for side, runs in rows.items():
            rate = statistics.median(r["tiles"] / r["seconds"] for r in runs)
            cpu = statistics.median(1e3 * r["cpu_seconds"] / r["tiles"] for r in runs)
            summary.append(f"| {workers} | {side} | {rate:.0f} | {cpu:.2f} |")
    print(
        f"\nmedians over {args.rounds} rounds\n\n| workers | side | tiles/s | CPU ms/tile |\n|---:|---|---:|---:|"
    )
    print("\n".join(summary))
    print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
