"""``pathoflash train``: train a tumor heatmap model on annotated or synthetic slides.

Registered on :data:`pathoflash.cli.app` when :mod:`pathoflash.cli` is imported. The command parses its
options into :class:`pathoflash.training.TrainOptions`, calls :func:`pathoflash.training.train` and prints
where the model and its report are; all the work lives in the library.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from .cli import SlideMppOpt, _console, _parse_size, app, handle_errors


@contextmanager
def _bars() -> Iterator[Callable[[str], Callable[[int, int], None]]]:
    """One rich progress display on stderr; yields ``bar(description) -> update(done, total)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = _console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:

        def bar(description: str) -> Callable[[int, int], None]:
            task: list[Any] = []

            def update(done: int, total: int) -> None:
                if not task:
                    task.append(progress.add_task(description, total=total))
                progress.update(task[0], completed=done, total=total)

            return update

        yield bar


DATA = "Data"
MODEL = "Model"
OPTIM = "Optimisation"


def _command_line(ctx: typer.Context) -> str:
    """The ``pathoflash train …`` line as given (rebuilt from the parsed options, so it is right however the
    command was invoked: console script, ``python -m pathoflash`` or a test runner)."""
    parts = ["pathoflash", ctx.info_name or "train"]
    for param in ctx.command.params:
        name = param.name or ""
        source = ctx.get_parameter_source(name)
        if param.param_type_name != "option" or source is None or source.name != "COMMANDLINE":
            continue
        value = ctx.params.get(name)
        flag = max(param.opts, key=len)
        if getattr(param, "is_flag", False):
            secondary = getattr(param, "secondary_opts", [])
            parts.append(flag if value or not secondary else max(secondary, key=len))
        elif isinstance(value, list | tuple):
            for item in value:
                parts += [flag, str(item)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


@app.command()
@handle_errors
def train(
    ctx: typer.Context,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Model file to write (.safetensors); the report goes beside it."),
    ],
    slides: Annotated[
        list[Path] | None,
        typer.Option(
            "--slides",
            help="Training slide files or folders (repeatable); each slide needs <stem>.truth.geojson or <stem>.geojson.",
            rich_help_panel=DATA,
        ),
    ] = None,
    annotations: Annotated[
        Path | None,
        typer.Option(
            "--annotations",
            help="Folder with <stem>.geojson annotation files (QuPath export).",
            rich_help_panel=DATA,
        ),
    ] = None,
    synthetic: Annotated[
        int,
        typer.Option(
            "--synthetic",
            min=0,
            help="Generate N synthetic training slides (seeds SEED … SEED+N-1).",
            rich_help_panel=DATA,
        ),
    ] = 0,
    synthetic_size: Annotated[
        str,
        typer.Option(
            "--synthetic-size", help="Synthetic slide size WIDTHxHEIGHT (level-0 px).", rich_help_panel=DATA
        ),
    ] = "8192x8192",
    synthetic_mpp: Annotated[
        float,
        typer.Option(
            "--synthetic-mpp",
            min=0.05,
            max=20.0,
            help="Synthetic slide resolution (µm/px).",
            rich_help_panel=DATA,
        ),
    ] = 0.25,
    synthetic_dir: Annotated[
        Path | None,
        typer.Option(
            "--synthetic-dir",
            help="Where generated slides go (reused when present); default: beside --out.",
            rich_help_panel=DATA,
        ),
    ] = None,
    val_slides: Annotated[
        list[Path] | None,
        typer.Option(
            "--val-slides",
            help="Held-out annotated slides or folders for the report (repeatable).",
            rich_help_panel=DATA,
        ),
    ] = None,
    val_synthetic: Annotated[
        int,
        typer.Option(
            "--val-synthetic",
            min=0,
            help="Generate N held-out synthetic slides (seeds after the training ones).",
            rich_help_panel=DATA,
        ),
    ] = 0,
    slide_mpp: SlideMppOpt = None,
    seed: Annotated[
        int,
        typer.Option("--seed", min=0, help="Seed of everything: weights, region draws, synthetic slides."),
    ] = 0,
    encoder: Annotated[
        Path | None,
        typer.Option(
            "--encoder",
            exists=True,
            dir_okay=False,
            help="timm ViT checkpoint to start from (.safetensors/.pth/.bin).",
            rich_help_panel=MODEL,
        ),
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch",
            help="timm architecture of --encoder (default: read from its shapes).",
            rich_help_panel=MODEL,
        ),
    ] = None,
    freeze_encoder: Annotated[
        bool,
        typer.Option(
            "--freeze-encoder", help="Train only the head (needs --encoder).", rich_help_panel=MODEL
        ),
    ] = False,
    width: Annotated[
        int, typer.Option("--width", min=8, help="Fresh ViT: token width.", rich_help_panel=MODEL)
    ] = 192,
    depth: Annotated[
        int, typer.Option("--depth", min=1, help="Fresh ViT: blocks.", rich_help_panel=MODEL)
    ] = 4,
    heads: Annotated[
        int, typer.Option("--heads", min=1, help="Fresh ViT: attention heads.", rich_help_panel=MODEL)
    ] = 3,
    patch: Annotated[
        int, typer.Option("--patch", min=4, help="Fresh ViT: patch size in px.", rich_help_panel=MODEL)
    ] = 16,
    head_hidden: Annotated[
        int,
        typer.Option(
            "--head-hidden", min=0, help="Hidden units of the dense head (0: linear).", rich_help_panel=MODEL
        ),
    ] = 64,
    region: Annotated[
        int, typer.Option("--region", help="Region side in px at --mpp.", rich_help_panel=MODEL)
    ] = 1024,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="Attention: auto (Triton kernel on CUDA), triton, sdpa or eager.",
            rich_help_panel=MODEL,
        ),
    ] = "auto",
    mpp: Annotated[
        float, typer.Option("--mpp", help="Model resolution (µm/px).", rich_help_panel=MODEL)
    ] = 0.5,
    name: Annotated[
        str, typer.Option("--name", help="Model name (recorded with every result).", rich_help_panel=MODEL)
    ] = "pathoflash-model",
    epochs: Annotated[
        int, typer.Option("--epochs", min=1, help="Epochs (a checkpoint after each).", rich_help_panel=OPTIM)
    ] = 1,
    steps: Annotated[
        int, typer.Option("--steps", min=1, help="Steps per epoch.", rich_help_panel=OPTIM)
    ] = 100,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Regions per step.", rich_help_panel=OPTIM)
    ] = 8,
    lr: Annotated[
        float,
        typer.Option("--lr", help="Peak learning rate (AdamW, warm-up then cosine).", rich_help_panel=OPTIM),
    ] = 1e-3,
    device: Annotated[
        str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.", rich_help_panel=OPTIM)
    ] = "auto",
    workers: Annotated[
        int,
        typer.Option(
            "--workers", min=1, help="Reader threads and slide-generating processes.", rich_help_panel=OPTIM
        ),
    ] = 4,
    time_limit: Annotated[
        float | None,
        typer.Option(
            "--time-limit",
            help="Stop training after this many seconds (checkpoint and report still written).",
            rich_help_panel=OPTIM,
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Report JSON path (default: <out>.report.json).")
    ] = None,
) -> None:
    """Train a tumor heatmap model on annotated slides (QuPath GeoJSON) or generated synthetic slides."""
    from .training import ArchOptions, SyntheticSet, TrainOptions, train

    size = _parse_size(synthetic_size)
    options = TrainOptions(
        out=out,
        slides=tuple(slides or ()),
        annotations=annotations,
        synthetic=SyntheticSet(synthetic, seed, size, synthetic_mpp) if synthetic else None,
        val_slides=tuple(val_slides or ()),
        val_synthetic=SyntheticSet(val_synthetic, seed + synthetic, size, synthetic_mpp)
        if val_synthetic
        else None,
        synthetic_dir=synthetic_dir,
        slide_mpp=slide_mpp,
        arch=ArchOptions(width=width, depth=depth, heads=heads, patch_size=patch),
        encoder=encoder,
        encoder_arch=arch,
        freeze_encoder=freeze_encoder,
        head_hidden=head_hidden,
        mpp=mpp,
        region=region,
        backend=backend,
        name=name,
        epochs=epochs,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        workers=workers,
        time_limit=time_limit,
        report=report,
        command=_command_line(ctx),
    )
    with _bars() as bar:
        on_slides, on_step = bar("synthetic slides"), bar("training steps")
        result = train(options, progress=lambda p: on_step(p.step, p.total_steps), data_progress=on_slides)
    losses = ", ".join(f"{v:.4f}" for v in result.epoch_losses)
    stopped = " (time limit reached)" if result.stopped_early else ""
    typer.echo(f"trained {result.steps} steps in {result.seconds:.0f} s{stopped}; loss per epoch: {losses}")
    if result.evaluation is not None:
        for score in result.evaluation.slides:
            typer.echo(f"  {score.slide}: pixel AUROC {score.auroc:.4f}, Dice {score.dice:.4f} (in tissue)")
        typer.echo(
            f"held-out mean: AUROC {result.evaluation.mean_auroc:.4f}, Dice {result.evaluation.mean_dice:.4f}"
        )
    typer.echo(f"model  {result.model_path} ({result.model_id})")
    typer.echo(f"report {result.report_path}")
