"""The ``pathoflash`` command line (Typer). Commands only parse, call the API and print.

Every command is registered with ``@app.command()`` and wrapped in :func:`handle_errors`, so a
:class:`~pathoflash.errors.PathoflashError` (or an ``OSError`` about a path) becomes one line
``error: <path>: <cause>`` on stderr and exit code 1; ``--debug`` shows the traceback instead. Heavy modules
(zarr, scikit-image, torch …) are imported inside the commands that need them, so ``pathoflash info`` and
``pathoflash tile`` start fast and never import torch.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer

from .errors import PathoflashError

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="pathoflash",
    help="Whole-slide images in, tumor heatmaps out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

log = logging.getLogger("pathoflash")


@dataclass(frozen=True, slots=True)
class CliState:
    """Options of the top-level ``pathoflash`` command, available to every subcommand."""

    debug: bool = False
    verbose: bool = False


_STATE: contextvars.ContextVar[CliState | None] = contextvars.ContextVar("pathoflash_cli_state", default=None)


def _state() -> CliState:
    return _STATE.get() or CliState()


def format_error(exc: BaseException) -> str:
    """One line naming the file and the cause (what ``error:`` lines and run.json record)."""
    if isinstance(exc, PathoflashError):
        return str(exc)
    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else ""
        cause = exc.strerror or str(exc)
        return f"{where}: {cause}" if where else cause
    return f"{type(exc).__name__}: {exc}"


def error_line(exc: BaseException) -> None:
    typer.echo(f"error: {format_error(exc)}", err=True)


def handle_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn our errors (and OSError) into one ``error:`` line and exit code 1, unless ``--debug``."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (PathoflashError, OSError) as exc:
            if _state().debug:
                raise
            error_line(exc)
            raise typer.Exit(1) from None

    return wrapper


@app.callback()
def _main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logging.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens (INFO).")] = False,
) -> None:
    ctx.obj = CliState(debug=debug, verbose=verbose)
    _STATE.set(ctx.obj)
    _setup_logging(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)


class ShutdownNoise(logging.Filter):
    """Drops asyncio's "Future exception was never retrieved" for a ``TimeoutError`` from the terminal.

    Closing the local Dask cluster on a loaded machine can leave such a future behind after every slide
    has finished; asyncio then prints an ERROR with a traceback that says nothing about the run. Other
    exceptions, and everything with ``--debug``, still show.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "asyncio" or not record.exc_info or record.exc_info[0] is None:
            return True
        noise = record.getMessage().startswith("Future exception was never retrieved")
        return not (noise and issubclass(record.exc_info[0], TimeoutError))


def _setup_logging(level: int) -> None:
    """Log records of ``pathoflash`` at ``level`` and above to stderr through rich (set up once)."""
    from rich.logging import RichHandler

    logging.getLogger("pathoflash").setLevel(level)
    root = logging.getLogger()
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        handler = RichHandler(console=_console(stderr=True), show_path=False, show_time=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        if level > logging.DEBUG:
            handler.addFilter(ShutdownNoise())
        root.addHandler(handler)


def _console(*, stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


@contextmanager
def progress_bar(description: str, *, unit: str = "tiles") -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr; yields ``update(done, total)``. Hidden when stderr is not a terminal."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = _console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(f"{unit}"),
        TextColumn("[progress.percentage]{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


# -- info ---------------------------------------------------------------------------------------------
SlideArg = Annotated[Path, typer.Argument(help="A whole-slide image (.svs .ndpi .mrxs .scn .tif .dcm …).")]
SlideMppOpt = Annotated[
    float | None,
    typer.Option(
        "--slide-mpp", min=0.01, max=100.0, help="Scan resolution in µm/px; overrides the metadata."
    ),
]


@app.command()
@handle_errors
def info(
    slide: SlideArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    slide_mpp: SlideMppOpt = None,
) -> None:
    """Show a slide's dimensions, pyramid levels, resolution, objective, format and associated images."""
    from .slide import open_slide

    with open_slide(slide, mpp=slide_mpp) as opened:
        details = opened.info()
    data = details.to_dict()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    _print_info(data)


def _print_info(data: dict[str, Any]) -> None:
    from rich.table import Table

    width, height = data["dimensions"]
    mpp = data["mpp"]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("file", f"{data['path']} ({_size(data['file_size'])})")
    table.add_row("format", data["format"])
    table.add_row("dimensions", f"{width} × {height} px ({width * height / 1e6:,.1f} Mpx)")
    if mpp is None:
        table.add_row("mpp", "unknown (pass --slide-mpp to tile this slide)")
    else:
        size_mm = f"{width * mpp[0] / 1000:.2f} × {height * mpp[1] / 1000:.2f} mm"
        table.add_row("mpp", f"{mpp[0]:.4g} × {mpp[1]:.4g} µm/px ({data['mpp_source']}); {size_mm}")
    objective = data["objective_power"]
    table.add_row("objective", "unknown" if objective is None else f"{objective:g}×")
    levels = []
    for n, ((w, h), ds) in enumerate(zip(data["level_dimensions"], data["level_downsamples"], strict=True)):
        at = "" if mpp is None else f", {mpp[0] * ds:.4g} µm/px"
        levels.append(f"{n}: {w} × {h} (÷{ds:.4g}{at})")
    table.add_row("levels", "\n".join(levels))
    table.add_row("associated", ", ".join(data["associated_images"]) or "none")
    _console().print(table)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


# -- tile ---------------------------------------------------------------------------------------------
@app.command()
@handle_errors
def tile(
    slides: Annotated[
        list[Path], typer.Argument(help="Slide files, folders of slides, or a manifest .csv (column 'path').")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder; each slide goes to OUT/<slide>/tiles.zarr.")
    ],
    mpp: Annotated[
        float, typer.Option("--mpp", min=0.01, max=100.0, help="Target resolution (µm/px).")
    ] = 0.5,
    tile_size: Annotated[
        int, typer.Option("--tile-size", help="Tile side in pixels (multiple of 16).")
    ] = 256,
    slide_mpp: SlideMppOpt = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=1, help="Threads reading and writing tiles (default: all CPUs)."),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Fail a slide on its first unreadable tile instead of skipping it."),
    ] = False,
) -> None:
    """Tile the tissue of each slide into a resumable Zarr tile store (OME-Zarr, viewable in napari)."""
    from .errors import SlideNotFoundError
    from .inputs import collect_slides
    from .slide import SLIDE_SUFFIXES
    from .tiling import tile_slide

    items = collect_slides(slides, slide_mpp=slide_mpp)
    empty_folders = [p for p in slides if p.is_dir() and not any(p in item.path.parents for item in items)]
    for folder in empty_folders:
        error_line(
            SlideNotFoundError(f"no slide files in this folder ({' '.join(SLIDE_SUFFIXES)})", path=folder)
        )
    failed = len(empty_folders)
    for item in items:
        store_path = out / item.slide_id / "tiles.zarr"
        started = time.perf_counter()
        try:
            with progress_bar(item.path.name) as update:
                store = tile_slide(
                    item.path,
                    store_path,
                    mpp=mpp,
                    tile_size=tile_size,
                    slide_mpp=item.slide_mpp,
                    workers=workers,
                    strict=strict,
                    progress=update,
                    name=item.slide_id,
                )
        except (PathoflashError, OSError) as exc:
            if _state().debug:
                raise
            error_line(exc)
            failed += 1
            continue
        _print_tiled(store, store_path, time.perf_counter() - started)
    if failed:
        inputs = len(items) + len(empty_folders)
        if inputs > 1:
            typer.echo(f"{failed} of {inputs} inputs failed", err=True)
        raise typer.Exit(1)


def _print_tiled(store: Any, path: Path, seconds: float) -> None:
    grid = store.grid
    report = store.last_report
    total = len(grid.tissue_tiles)
    state = ""
    if report is not None and total and report.tiles_done_before == total:
        state = " (already complete)"
    elif report is not None and report.tiles_done_before:
        state = f" (resumed: {report.tiles_done_before} tiles were already there)"
    rate = f", {report.tiles_decoded / seconds:.0f} tiles/s" if report and report.tiles_decoded else ""
    typer.echo(
        f"{path}: {total} tissue tiles of {grid.rows}×{grid.cols}, {grid.tile_size} px at "
        f"{grid.mpp:.4g} µm/px in {seconds:.1f} s{rate}{state}"
    )
    bad = store.unreadable_tiles
    if bad:
        shown = ", ".join(f"({r}, {c})" for r, c in bad[:10]) + (" …" if len(bad) > 10 else "")
        typer.echo(
            f"warning: {store.source.path}: {len(bad)} unreadable tiles left white (row, col): {shown}; "
            "all are listed in the store's attributes (pathoflash.unreadable_tiles)",
            err=True,
        )
    if total == 0:
        typer.echo(f"warning: {store.source.path}: no tissue found; the store is empty", err=True)


# -- sample -------------------------------------------------------------------------------------------
def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(part) for part in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not WIDTHxHEIGHT, e.g. 8192x6144") from None
    if w < 256 or h < 256:
        raise typer.BadParameter(f"{text!r}: width and height must be at least 256 px")
    return w, h


@app.command()
@handle_errors
def sample(
    out: Annotated[
        Path, typer.Argument(help="Output .svs path; the ground truth goes to OUT.truth.geojson.")
    ],
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same slide).")] = 0,
    size: Annotated[str, typer.Option("--size", help="Level-0 size WIDTHxHEIGHT in pixels.")] = "8192x6144",
    mpp: Annotated[
        float, typer.Option("--mpp", min=0.05, max=10.0, help="Level-0 resolution (µm/px).")
    ] = 0.25,
) -> None:
    """Write a synthetic H&E slide (pyramidal Aperio SVS) with its tumor ground truth."""
    from .sample_data import write_sample_slide

    width, height = _parse_size(size)
    started = time.perf_counter()
    with progress_bar(out.name, unit="tiles") as update:
        written = write_sample_slide(out, seed=seed, size=(width, height), mpp=mpp, progress=update)
    path = Path(written) if isinstance(written, str | Path) else out
    truth = path.with_name(path.stem + ".truth.geojson")
    typer.echo(f"{path}: {width} × {height} px at {mpp:g} µm/px in {time.perf_counter() - started:.1f} s")
    if truth.is_file():
        typer.echo(f"{truth}: tumor ground truth")


def main() -> None:
    """Console entry point (``pathoflash``)."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


# Pipeline commands (run, demo) live in their own module and register on ``app`` when imported.
from . import cli_run, cli_train  # noqa: E402, F401

__all__ = ["app", "format_error", "handle_errors", "main", "progress_bar"]
