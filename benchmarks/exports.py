"""The export phase of one slide: each export alone, then all of them as ``write_outputs`` writes them.

No slide is read: the benchmark builds what the exports receive once the heatmap exists, sized for a
generated ``--size``² slide at 0.25 µm/px (issue 5's 45,000² slide by default):

* the heatmap at 8 µm/px (1,407² for 45,000²): smooth tumour blobs over ~14 % tissue, NaN elsewhere, with
  per-pixel noise as a model's output has (~10,000 tumour regions: the GeoJSON's real work);
* the PNG's thumbnail at :func:`~pathoflash.heatmap.png_mpp_for` (2,048² px);
* the viewer's slide image at the tile store's level the pipeline takes for it (:func:`viewer_image_mpp`:
  2 µm/px, 5,625² px; ``--viewer-mpp`` to change): noisy glass, as the sample slides' (so no tile is
  blank), with stained texture where the heatmap has tissue. Its JPEG levels are encoded inside the
  viewer's export, as :meth:`SlidePictures.viewer_levels` does in the pipeline.

The GeoJSON and the TIFF go through :class:`~pathoflash.outputs.WriterProcesses` as in the pipeline
(started once, before the first round), or in threads with ``--in-threads`` or where the code under test
has no such class (a baseline checkout on ``PYTHONPATH``).

Prints one table: the median seconds of each export alone, of each inside the concurrent phase (its
``export <name>`` timing) and of the whole concurrent phase, over ``--repeat`` rounds.

    python benchmarks/exports.py [--size 45000] [--repeat 3] [--keep DIR] [--in-threads]
    PYTHONPATH=/tmp/pf-base python benchmarks/exports.py      # a baseline: git archive <commit> pathoflash

It runs from the system's temporary folder: before 48f0def a writer process imported the pathoflash of its
working directory first, so a baseline run from the checkout wrote its PNG, GeoJSON and TIFF with the
checkout's code.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from pathoflash.export.viewer import encode_slide_levels
from pathoflash.heatmap import VIEWER_FINEST_MPP, VIEWER_MAX_PIXELS, Heatmap, png_mpp_for
from pathoflash.options import RunOptions
from pathoflash.outputs import _EXPORT_IMPORTS, _import_quietly, write_outputs
from pathoflash.slide import available_cpus

try:
    from pathoflash.outputs import WriterProcesses
except ImportError:  # a baseline from before the writer processes
    WriterProcesses = None  # type: ignore[assignment,misc]

SLIDE_MPP = 0.25
HEATMAP_MPP = 8.0
EXPORTS = ("heatmap.png", "heatmap.geojson", "heatmap.tif", "viewer.html", "summary.json")


def make_heatmap(size: int, seed: int = 0) -> Heatmap:
    """Noisy tumour blobs over ~14 % tissue of a ``size``² slide; NaN outside the tissue."""
    rng = np.random.default_rng(seed)
    n = math.ceil(size * SLIDE_MPP / HEATMAP_MPP)
    tissue = ndimage.gaussian_filter(rng.random((n, n)), n / 35)
    tissue = tissue > np.quantile(tissue, 0.86)
    tumor = ndimage.gaussian_filter(rng.random((n, n)), n / 94)
    logits = (tumor - np.quantile(tumor, 0.7)) * 400 + rng.normal(0.0, 1.0, (n, n))  # a model's pixel noise
    probabilities = 1 / (1 + np.exp(-logits))
    return Heatmap(
        probabilities=np.where(tissue, probabilities, np.nan).astype(np.float32),
        mpp=HEATMAP_MPP,
        slide_dimensions=(size, size),
        slide_mpp=(SLIDE_MPP, SLIDE_MPP),
        model_id="bench",
    )


def viewer_image_mpp(size: int, tile_mpp: float = RunOptions().mpp) -> float:
    """µm/px of the viewer's image in the pipeline: the finest 2× level of the tile store (tiles at
    ``tile_mpp``) within the viewer's pixel budget and no finer than ~1 µm/px
    (:func:`pathoflash.viewer_image.viewer_level`)."""
    mpp = tile_mpp
    while (size * SLIDE_MPP / mpp) ** 2 > VIEWER_MAX_PIXELS or mpp < VIEWER_FINEST_MPP * 0.95:
        mpp *= 2
    return mpp


def slide_image(heatmap: Heatmap, mpp: float, seed: int = 1) -> np.ndarray:
    """The slide at ``mpp`` µm/px: glass with sensor noise, stained texture over the heatmap's tissue."""
    rng = np.random.default_rng(seed)
    side = max(1, math.floor(heatmap.slide_dimensions[0] * SLIDE_MPP / mpp))
    period = 256
    glass = np.clip(np.array([236.0, 234.0, 238.0]) + rng.normal(0, 1.1, (period, period, 3)), 0, 255)
    reps = -(-side // period)
    image = np.tile(glass.astype(np.uint8), (reps, reps, 1))[:side, :side]
    rows = np.minimum((np.arange(side) + 0.5) * mpp / heatmap.mpp, heatmap.shape[0] - 1).astype(np.intp)
    tissue = heatmap.tissue()[rows][:, rows]
    stain = np.clip(np.array([200.0, 120.0, 170.0]) + rng.normal(0, 18, (period, period, 3)), 0, 255).astype(
        np.uint8
    )
    image[tissue] = np.tile(stain, (reps, reps, 1))[:side, :side][tissue]
    return image


class _Pictures:
    """What ``write_outputs`` asks of :class:`~pathoflash.outputs.SlidePictures`, from ready images."""

    def __init__(
        self, heatmap: Heatmap, thumbnail: np.ndarray, viewer: np.ndarray, viewer_mpp: float
    ) -> None:
        self._heatmap, self._thumbnail, self._viewer = heatmap, thumbnail, viewer
        self.viewer_mpp = viewer_mpp
        self.timings: dict[str, float] = {}

    def wait_for_imports(self) -> None:
        _import_quietly(_EXPORT_IMPORTS)

    def thumbnail(self) -> tuple[np.ndarray, float]:
        return self._thumbnail, png_mpp_for(self._heatmap.slide_dimensions, self._heatmap.slide_mpp)

    def viewer_levels(self, workers: int | None = None) -> Any:
        mpp = self.viewer_mpp
        t0 = time.perf_counter()
        levels = encode_slide_levels(
            self._viewer, (mpp, mpp), self._heatmap.slide_mpp, workers=workers or available_cpus()
        )
        self.timings["viewer levels"] = time.perf_counter() - t0
        return levels


class _Slide:
    def __init__(self, heatmap: Heatmap) -> None:
        self.path = Path("bench.svs")
        self.mpp = heatmap.slide_mpp


def _alone(heatmap: Heatmap, pictures: _Pictures, out: Path) -> dict[str, Callable[[], object]]:
    options = RunOptions()

    def viewer() -> object:
        return heatmap.to_html(out / "viewer.html", pictures.viewer_levels(), threshold=options.threshold)

    return {
        "heatmap.png": lambda: heatmap.to_png(
            out / "heatmap.png", pictures.thumbnail()[0], thumbnail_mpp=pictures.thumbnail()[1]
        ),
        "heatmap.geojson": lambda: heatmap.to_geojson(
            out / "heatmap.geojson", threshold=options.threshold, tiles=options.geojson_tiles
        ),
        "heatmap.tif": lambda: heatmap.to_tiff(out / "heatmap.tif"),
        "viewer.html": viewer,
        "summary.json": lambda: heatmap.to_summary(out / "summary.json", threshold=options.threshold),
    }


def _threads() -> str:
    """The threads each export gets inside ``write_outputs`` (the PNG's: its blend and deflate pools)."""
    try:
        from pathoflash.outputs import export_threads
    except ImportError:  # a baseline from before the split
        return "threads: every pool takes every CPU"
    tiff, viewer = export_threads(available_cpus())
    return (
        f"threads: TIFF {tiff}, viewer levels {viewer}, PNG up to {available_cpus()}, GeoJSON 1, "
        f"summary 1 (alone: every pool takes every CPU)"
    )


def _processes(args: argparse.Namespace) -> Any:
    assert WriterProcesses is not None
    return WriterProcesses(args.processes.split(",")) if args.processes else WriterProcesses()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=45000, help="level-0 side of the slide (0.25 µm/px)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are printed")
    parser.add_argument("--keep", type=Path, help="write the outputs here (default: a temporary folder)")
    parser.add_argument(
        "--in-threads", action="store_true", help="write every export in a thread (no writer processes)"
    )
    parser.add_argument(
        "--processes", help="comma-separated exports written in their own process (default: the pipeline's)"
    )
    parser.add_argument(
        "--viewer-mpp", type=float, help="µm/px of the viewer's image (default: as the pipeline)"
    )
    parser.add_argument("--switch-interval", type=float, help="sys.setswitchinterval for the whole run (s)")
    args = parser.parse_args()

    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    if args.keep:
        args.keep = args.keep.resolve()
    os.chdir(tempfile.gettempdir())  # no pathoflash here for a baseline's writer processes to pick up
    t0 = time.perf_counter()
    heatmap = make_heatmap(args.size)
    dims, mpp = heatmap.slide_dimensions, heatmap.slide_mpp
    thumbnail = slide_image(heatmap, png_mpp_for(dims, mpp))
    viewer_mpp = args.viewer_mpp or viewer_image_mpp(args.size)
    viewer = slide_image(heatmap, viewer_mpp)
    pictures = _Pictures(heatmap, thumbnail, viewer, viewer_mpp)
    pictures.wait_for_imports()
    print(
        f"heatmap {heatmap.shape[0]}x{heatmap.shape[1]} ({np.isfinite(heatmap.probabilities).mean():.1%} "
        f"tissue), thumbnail {thumbnail.shape[1]}x{thumbnail.shape[0]}, viewer image "
        f"{viewer.shape[1]}x{viewer.shape[0]} at {viewer_mpp:g} µm/px; writer processes: "
        f"{'none' if args.in_threads or WriterProcesses is None else args.processes or 'default'}; made in {time.perf_counter() - t0:.1f} s; "
        f"{available_cpus()} CPUs, Python {sys.version.split()[0]}; {_threads()}",
        flush=True,
    )

    alone: dict[str, list[float]] = {name: [] for name in (*EXPORTS, "viewer levels")}
    together: dict[str, list[float]] = {name: [] for name in (*EXPORTS, "viewer levels", "phase")}
    with (
        tempfile.TemporaryDirectory(prefix="pf-exports-") as scratch,
        contextlib.nullcontext()
        if args.in_threads or WriterProcesses is None
        else _processes(args) as processes,
    ):
        out = args.keep or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        writers = _alone(heatmap, pictures, out)
        for _ in range(args.repeat):
            for name, write in writers.items():
                t = time.perf_counter()
                write()
                alone[name].append(time.perf_counter() - t)
            alone["viewer levels"].append(pictures.timings["viewer levels"])
            timings: dict[str, float] = {}
            t = time.perf_counter()
            extra = () if processes is None else (processes,)
            write_outputs(heatmap, _Slide(heatmap), out, RunOptions(), 0, pictures, timings, *extra)  # type: ignore[arg-type]
            together["phase"].append(time.perf_counter() - t)
            for name in EXPORTS:
                together[name].append(timings[f"export {name}"])
            together["viewer levels"].append(pictures.timings["viewer levels"])

    print(f"\nmedian of {args.repeat} rounds, seconds\n")
    print("| export | alone | in write_outputs |")
    print("|---|---:|---:|")
    for name in (*EXPORTS, "viewer levels"):
        print(f"| {name} | {statistics.median(alone[name]):.3f} | {statistics.median(together[name]):.3f} |")
    print(
        f"| **export phase (write_outputs)** | {sum(statistics.median(alone[n]) for n in EXPORTS):.3f} (sum) "
        f"| **{statistics.median(together['phase']):.3f}** |"
    )
    print(f"\nphase rounds: {', '.join(f'{s:.3f}' for s in together['phase'])}")


if __name__ == "__main__":
    main()
