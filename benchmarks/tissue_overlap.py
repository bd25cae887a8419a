"""Does what process_slide starts beside tissue detection slow it down?

Times ``plan_grid`` (tissue detection and the tile grid) on one slide alone, with the writer processes
starting (``WriterProcesses``), with the viewer's background being read (what ``SlidePictures`` reads, two
threads), and with both, as ``pipeline._run`` starts them; the four alternate for ``--rounds`` rounds and the
table shows medians. (Starting both only once the grid was planned moved the cost into tiling instead:
RESULTS.md, end to end, session 7.)

    python benchmarks/tissue_overlap.py SLIDE [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pathoflash.heatmap import viewer_mpp_for
from pathoflash.outputs import WriterProcesses
from pathoflash.slide import open_slide
from pathoflash.tiling import plan_grid
from pathoflash.viewer_image import read_background

MODES = ("alone", "processes", "pictures", "both")


def one(path: Path, mode: str, mpp: float) -> tuple[float, float]:
    """Seconds of plan_grid, and seconds until everything started beside it had finished."""
    with contextlib.ExitStack() as stack:
        slide = stack.enter_context(open_slide(path))
        start = time.perf_counter()
        if mode in ("processes", "both"):
            stack.enter_context(WriterProcesses())
        background = None
        if mode in ("pictures", "both"):
            pool = stack.enter_context(ThreadPoolExecutor(1))
            at = viewer_mpp_for(slide.dimensions, slide.mpp)
            background = pool.submit(read_background, slide, at, workers=2)
        t0 = time.perf_counter()
        plan_grid(slide, mpp=mpp)
        tissue = time.perf_counter() - t0
        if background is not None:
            background.result()
    return tissue, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slide", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mpp", type=float, default=0.5)
    args = parser.parse_args()
    one(args.slide, "alone", args.mpp)  # warm the page cache and the imports
    times: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            times[mode].append(one(args.slide, mode, args.mpp))
    print(f"{'beside plan_grid':18} {'plan_grid s':>12} {'all done s':>11}")
    for mode, runs in times.items():
        tissue = statistics.median(t for t, _ in runs)
        done = statistics.median(d for _, d in runs)
        print(f"{mode:18} {tissue:12.3f} {done:11.3f}   ({', '.join(f'{t:.2f}' for t, _ in runs)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
