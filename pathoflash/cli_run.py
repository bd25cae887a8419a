"""``pathoflash run`` and ``pathoflash demo``: the batch pipeline on the command line.

Registered on :data:`pathoflash.cli.app` when :mod:`pathoflash.cli` is imported. Commands parse, call
:func:`pathoflash.workflows.run_batch` (the only Dask user) and print; all the work lives in the library.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from .cli import SlideMppOpt, _console, app, handle_errors

log = logging.getLogger("pathoflash")

DEMO_DIR = Path("pathoflash-demo")
DEMO_SIZE = (8192, 8192)  # level-0 px at 0.25 µm/px: 4096 × 4096 px at the model's 0.5 µm/px
DEMO_SEED = 20261125


def _is_console(handler: logging.Handler) -> bool:
    from rich.logging import RichHandler

    return isinstance(handler, RichHandler)


@contextmanager
def _run_log(out: Path) -> Iterator[None]:
    """Everything the library logs at INFO and above also goes to ``OUT/run.log``; the terminal keeps the
    verbosity the person asked for (``--verbose``/``--debug``)."""
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    package = logging.getLogger("pathoflash")
    previous = package.level or logging.WARNING
    # The terminal's handler sits on the root logger (cli._setup_logging); records of the package reach it by
    # propagation, so it keeps the person's level while the package logs INFO for the file.
    consoles = [(h, h.level) for h in (*package.handlers, *logging.getLogger().handlers) if _is_console(h)]
    for console, level in consoles:
        console.setLevel(max(level, previous))
    package.addHandler(handler)
    package.setLevel(min(previous, logging.INFO))
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(previous)
        for console, level in consoles:
            console.setLevel(level)
        handler.close()


@contextmanager
def _slide_bars(quiet: bool) -> Iterator[Callable[[str], Callable[[str, int, int], None] | None]]:
    """Rich bars per slide stage (tiles, regions); yields a factory ``bars(slide_id) -> progress``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = _console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=quiet or not console.is_terminal) as bar:

        def factory(slide_id: str) -> Callable[[str, int, int], None]:
            tasks: dict[str, Any] = {}

            def update(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(f"{slide_id} {stage}", total=total)
                bar.update(tasks[stage], completed=done, total=total)

            return update

        yield factory


def _print_table(report: Any, quiet: bool) -> None:
    from rich.table import Table

    console = _console()
    table = Table(title=f"PathoFlash run → {report.out}", show_lines=False)
    for column in ("slide", "status", "tiles", "tumor mm²", "max p", "time s", "error"):
        table.add_column(column, overflow="fold")
    for record in report.slides.values():
        summary = record.get("summary") or {}
        area = summary.get("tumor_area_mm2")
        max_p = summary.get("max_probability")
        table.add_row(
            record["id"],
            record["status"],
            str(record.get("tiles", "")),
            "" if area is None else f"{area:.3f}",
            "" if max_p is None else f"{max_p:.2f}",
            f"{record.get('timings', {}).get('total', 0):.1f}",
            record.get("error") or "",
        )
    if not quiet or report.failed:
        console.print(table)
    console.print(f"run.json: {report.out / 'run.json'}   log: {report.out / 'run.log'}")


def run_slides(
    sources: list[Path],
    out: Path,
    options: Any,
    *,
    formats: str | None,
    slide_mpp: float | None,
    scheduler: str | None,
    workers: int | None,
    quiet: bool,
) -> Any:
    from .inputs import collect_slides
    from .workflows import run_batch

    items = collect_slides(sources, formats=formats, slide_mpp=slide_mpp)
    if not items:
        raise typer.BadParameter(f"no slides found in {', '.join(map(str, sources))} (see --formats)")
    logging.getLogger("distributed").setLevel(logging.ERROR if quiet else logging.WARNING)
    with _run_log(out), _slide_bars(quiet) as bars:
        log.info("run: %d slide(s) → %s", len(items), out)
        report = run_batch(items, out, options, scheduler=scheduler, workers=workers, progress=bars)
    _print_table(report, quiet)
    return report


@app.command()
@handle_errors
def run(
    slides: Annotated[
        list[Path], typer.Argument(help="Slide files, folders, or a manifest .csv (path, slide_mpp, id).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    model: Annotated[
        str | None, typer.Option("--model", help="Model file; default: the bundled model.")
    ] = None,
    mpp: Annotated[float, typer.Option("--mpp", help="Target resolution for tiles and model (µm/px).")] = 0.5,
    slide_mpp: SlideMppOpt = None,
    region: Annotated[
        int | None, typer.Option("--region", help="Model region side in px (default: the model's).")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    formats: Annotated[
        str | None, typer.Option("--formats", help="File endings to pick from folders, e.g. svs,ndpi.")
    ] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Tiling threads per slide.")] = None,
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="Existing Dask scheduler, tcp://host:port.")
    ] = None,
    threshold: Annotated[
        float, typer.Option("--threshold", help="Tumor probability for GeoJSON annotations.")
    ] = 0.5,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Regions per model call.")] = 4,
    strict: Annotated[bool, typer.Option("--strict", help="Fail slides with unreadable tiles.")] = False,
    geojson_tiles: Annotated[
        bool,
        typer.Option("--geojson-tiles", help="Also per-patch QuPath tile objects with tumor_probability."),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars; table only on failures.")
    ] = False,
) -> None:
    """Slides → tile stores, heatmaps and clinician-ready exports (one folder per slide, run.json)."""
    from .options import RunOptions

    options = RunOptions(
        mpp=mpp, region=region, device=device, threshold=threshold, workers=workers, strict=strict,
        model=model, batch_size=batch_size, geojson_tiles=geojson_tiles,
    )  # fmt: skip
    report = run_slides(
        slides,
        out,
        options,
        formats=formats,
        slide_mpp=slide_mpp,
        scheduler=scheduler,
        workers=None,
        quiet=quiet,
    )
    if report.failed:
        raise typer.Exit(1)


@app.command()
@handle_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Demo folder.")] = DEMO_DIR,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Make the synthetic sample slide (if absent) and run everything on it with the bundled model."""
    from .cli import progress_bar
    from .options import RunOptions
    from .sample_data import write_sample_slide

    slide = out / "sample.svs"
    started = time.perf_counter()
    if not slide.is_file():
        out.mkdir(parents=True, exist_ok=True)
        with progress_bar("making sample slide", unit="tiles") as update:
            write_sample_slide(slide, seed=DEMO_SEED, size=DEMO_SIZE, mpp=0.25, progress=update)
        typer.echo(
            f"sample slide: {slide} ({DEMO_SIZE[0]} × {DEMO_SIZE[1]} px, 0.25 µm/px, seed {DEMO_SEED})"
        )
    report = run_slides(
        [slide], out / "results", RunOptions(device=device), formats=None, slide_mpp=None, scheduler=None,
        workers=None, quiet=quiet,
    )  # fmt: skip
    record = next(iter(report.slides.values()))
    if record["status"] == "failed":
        raise typer.Exit(1)
    for name, path in sorted(record["outputs"].items()):
        typer.echo(f"{name:16s} {path}")
    typer.echo(f"tile store       {(out / 'results' / record['id'] / 'tiles.zarr').resolve()}")
    score = _score_demo(slide, out / "results" / record["id"])
    if score:
        typer.echo(score)
    typer.echo(f"demo finished in {time.perf_counter() - started:.0f} s; open viewer.html in a browser")


def _score_demo(slide: Path, slide_dir: Path) -> str | None:
    """Compare the heatmap with the generator's ground truth (pixel AUROC and Dice inside tissue)."""
    truth = slide.with_name(slide.stem + ".truth.geojson")
    if not truth.is_file():
        return None
    from .evaluate import score_heatmap
    from .store import TileStore

    store = TileStore.open(slide_dir / "tiles.zarr")
    scores = score_heatmap(store.read_heatmap(), truth, slide_mpp=0.25)
    return f"against ground truth: pixel AUROC {scores['auroc']:.3f}, Dice {scores['dice']:.3f} (in tissue)"
