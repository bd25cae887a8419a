"""``train(options)``: annotated (or generated) slides → a PathoFlash model file and a JSON report.

One run: find or generate the slides, rasterise their targets, build the model (fresh ViT or a timm encoder,
plus a fresh dense head), then ``epochs`` × ``steps`` AdamW steps on class-balanced regions with per-patch
soft labels (tumor fraction) and tissue-weighted binary cross-entropy, under bfloat16 autocast on CUDA (where
attention runs on PathoFlash's Triton kernel, forward and backward). The model is saved after every epoch;
held-out slides are scored at the end through the inference path and the report is written beside the model.

Same options and seed on the same device → the same regions in the same order, and on the CPU the same
weights.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..model.checkpoint import save_model
from ..model.predictor import Model, ModelInfo
from .build import build_model, parameter_groups
from .dataset import RegionBatch, RegionLoader, SlidePixels
from .options import SyntheticSet, TrainOptions
from .regions import RegionSampler, slide_labels
from .report import EvaluationReport, evaluate_slides, write_report
from .slides import AnnotatedSlide, find_annotated_slides, generate_synthetic

log = logging.getLogger(__name__)

FINAL_LR_FRACTION = 0.05
"""The cosine schedule ends at this fraction of the peak learning rate."""
GRAD_CLIP = 1.0


@dataclass(frozen=True, slots=True)
class TrainProgress:
    """Where training stands after a step (``step`` counts from 1 over the whole run)."""

    epoch: int
    epochs: int
    step: int
    total_steps: int
    loss: float
    lr: float
    seconds: float


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What a run produced: the model file, its report, and how training went."""

    model_path: Path
    report_path: Path
    model_id: str
    steps: int
    epochs: int
    seconds: float
    epoch_losses: tuple[float, ...]
    evaluation: EvaluationReport | None
    stopped_early: bool


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_training_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; a CUDA device without CUDA is a :class:`ConfigError`."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA GPU is available here (use --device cpu)")
    return torch.device(device)


def prepare_inputs(model: Model, batch: RegionBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (colour-augmented, normalised (B, 3, R, R)), targets and weights, on the model's device."""
    device = model.device
    images = torch.from_numpy(batch.images).to(device, non_blocking=True)
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    gain = torch.from_numpy(batch.gain).to(device).view(-1, 3, 1, 1)
    offset = torch.from_numpy(batch.offset).to(device).view(-1, 3, 1, 1)
    x = (x * gain + offset).clamp_(0.0, 1.0)
    mean = torch.tensor(model.preprocessing.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.preprocessing.std, device=device).view(1, 3, 1, 1)
    targets = torch.from_numpy(batch.targets).to(device, non_blocking=True)
    weights = torch.from_numpy(batch.weights).to(device, non_blocking=True)
    return (x - mean) / std, targets, weights


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-patch binary cross-entropy against soft targets, averaged with ``weights``."""
    losses = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    return (losses * weights).sum() / weights.sum().clamp_min(1e-6)


def train_step(
    model: Model, optimizer: torch.optim.Optimizer, batch: RegionBatch, *, amp: bool | None = None
) -> float:
    """One optimisation step on ``batch``; returns its loss. ``amp`` (default: on for CUDA) autocasts to bf16."""
    x, targets, weights = prepare_inputs(model, batch)
    use_amp = x.device.type == "cuda" if amp is None else amp
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
        logits = model(x)
    loss = weighted_bce(logits, targets, weights)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], GRAD_CLIP)
    optimizer.step()
    return float(loss.detach())


def make_optimizer(
    model: Model, options: TrainOptions
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with linear warm-up over ``options.warmup`` of the steps, then cosine decay."""
    groups = parameter_groups(model, options.weight_decay)
    if not any(group["params"] for group in groups):
        raise ConfigError("nothing to train: every parameter is frozen")
    optimizer = torch.optim.AdamW(groups, lr=options.lr, betas=(0.9, 0.999))  # type: ignore[arg-type]
    total = options.total_steps
    warm = max(1, round(options.warmup * total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        return FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (
            1 + math.cos(math.pi * min(progress, 1.0))
        )

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def gather_slides(
    sources: tuple[Path, ...],
    synthetic: SyntheticSet | None,
    options: TrainOptions,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> list[AnnotatedSlide]:
    """Annotated slides from ``sources`` plus the generated ``synthetic`` ones."""
    slides = find_annotated_slides(
        list(sources), annotations=options.annotations, slide_mpp=options.slide_mpp
    )
    if synthetic is not None and synthetic.count:
        folder = options.synthetic_dir or Path(options.out).with_name(Path(options.out).stem + "-synthetic")
        slides += generate_synthetic(synthetic, folder, workers=options.workers, progress=progress)
    return slides


def _synthetic_facts(spec: SyntheticSet | None) -> dict[str, Any] | None:
    if spec is None or not spec.count:
        return None
    from ..sample_data import GENERATOR_VERSION

    return {
        "generator": "pathoflash.sample_data.write_sample_slide",
        "generator_version": GENERATOR_VERSION,
        "count": spec.count,
        "seeds": [spec.first_seed, spec.first_seed + spec.count - 1],
        "size": list(spec.size),
        "mpp": spec.mpp,
    }


def _training_facts(
    options: TrainOptions,
    train_slides: list[AnnotatedSlide],
    val_slides: list[AnnotatedSlide],
    state: dict[str, Any],
) -> dict[str, Any]:
    return {
        "trainer": "pathoflash train",
        "date": _dt.datetime.now(_dt.timezone.utc).date().isoformat(),
        "command": options.command,
        "seed": options.seed,
        "data": {
            "train": [s.name for s in train_slides],
            "val": [s.name for s in val_slides],
            "synthetic": _synthetic_facts(options.synthetic),
            "val_synthetic": _synthetic_facts(options.val_synthetic),
        },
        "optimisation": {
            "epochs": options.epochs,
            "steps_per_epoch": options.steps,
            "batch_size": options.batch_size,
            "lr": options.lr,
            "weight_decay": options.weight_decay,
            "freeze_encoder": options.freeze_encoder,
            "encoder": None if options.encoder is None else str(options.encoder),
        },
        **state,
    }


def _save(model: Model, options: TrainOptions, training: dict[str, Any]) -> str:
    info = ModelInfo(
        name=options.name,
        description=(
            f"tumor heatmap model trained by `pathoflash train` on {len(training['data']['train'])} annotated "
            "slide(s); see 'training' for data, command and metrics"
        ),
        training=training,
    )
    model.info = info
    dtype = getattr(torch, options.storage_dtype)
    save_model(model, options.out, dtype=None if dtype == torch.float32 else dtype)
    from ..model.checkpoint import read_metadata

    return str(read_metadata(options.out)["model"]["id"])


@dataclass(slots=True)
class _Fit:
    """How the optimisation went so far (mutable, filled in by :func:`_fit`)."""

    step: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0

    def facts(self, device: torch.device) -> dict[str, Any]:
        return {
            "epochs_done": len(self.epoch_losses),
            "steps_done": self.step,
            "epoch_losses": [round(v, 5) for v in self.epoch_losses],
            "train_seconds": round(self.seconds, 1),
            "device": _device_name(device),
        }


def _region_data(
    options: TrainOptions, slides: list[AnnotatedSlide], patch_size: int
) -> tuple[RegionSampler, RegionLoader]:
    labels = [slide_labels(s, mpp=options.mpp, patch_size=patch_size) for s in slides]
    sampler = RegionSampler(labels, region=options.region, patch_size=patch_size, seed=options.seed)
    pixels = [
        SlidePixels(s, lab, cache_pixels=options.cache_pixels) for s, lab in zip(slides, labels, strict=True)
    ]
    loader = RegionLoader(pixels, labels, patch_size=patch_size, workers=options.workers)
    loader.preload()
    return sampler, loader


def _fit(
    model: Model,
    sampler: RegionSampler,
    loader: RegionLoader,
    options: TrainOptions,
    *,
    on_epoch: Callable[[_Fit], object],
    progress: Callable[[TrainProgress], None] | None,
) -> _Fit:
    """``options.epochs`` epochs (or until ``options.time_limit``); ``on_epoch`` after each finished epoch."""
    optimizer, schedule = make_optimizer(model, options)
    fit = _Fit()
    started = time.perf_counter()
    log_every = max(1, options.total_steps // 50)
    for epoch in range(options.epochs):
        model.train()
        losses = []
        for batch in loader.batches(
            sampler.epoch(epoch, options.steps * options.batch_size), options.batch_size
        ):
            if options.time_limit is not None and time.perf_counter() - started > options.time_limit:
                fit.stopped_early = True
                break
            loss = train_step(model, optimizer, batch)
            schedule.step()
            fit.step += 1
            losses.append(loss)
            if progress is not None:
                lr, elapsed = float(schedule.get_last_lr()[0]), time.perf_counter() - started
                progress(
                    TrainProgress(epoch + 1, options.epochs, fit.step, options.total_steps, loss, lr, elapsed)
                )
            if fit.step % log_every == 0:
                log.info("step %d/%d epoch %d loss %.4f", fit.step, options.total_steps, epoch + 1, loss)
        fit.seconds = time.perf_counter() - started
        if losses:
            fit.epoch_losses.append(float(np.mean(losses)))
            on_epoch(fit)
            log.info("epoch %d: mean loss %.4f, saved %s", epoch + 1, fit.epoch_losses[-1], options.out)
        if fit.stopped_early:
            log.warning("time limit of %.0f s reached after %d steps", options.time_limit, fit.step)
            break
    return fit


def train(
    options: TrainOptions,
    *,
    progress: Callable[[TrainProgress], None] | None = None,
    data_progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Run the training ``options`` describe (see the module docstring); returns where the results are.

    Synthetic slides are generated in worker processes (``spawn``): call this from a script guarded by
    ``if __name__ == "__main__":``. ``progress`` is called after every step, ``data_progress(done, total)``
    while slides are generated.
    """
    started = time.perf_counter()
    device = resolve_training_device(options.device)
    train_slides = gather_slides(options.slides, options.synthetic, options, progress=data_progress)
    val_slides = gather_slides(options.val_slides, options.val_synthetic, options, progress=data_progress)
    overlap = {s.path.resolve() for s in train_slides} & {s.path.resolve() for s in val_slides}
    if overlap:
        raise ConfigError(
            f"{len(overlap)} slide(s) are both training and held-out slides: {sorted(overlap)[:3]}"
        )

    seed_everything(options.seed)
    model = build_model(options)
    log.info("model: %d parameters (%d trained)", sum(p.numel() for p in model.parameters()),
             sum(p.numel() for p in model.parameters() if p.requires_grad))  # fmt: skip
    sampler, loader = _region_data(options, train_slides, model.patch_size)
    model.to(device)

    def save(fit: _Fit, extra: dict[str, Any] | None = None) -> str:
        facts = _training_facts(options, train_slides, val_slides, {**fit.facts(device), **(extra or {})})
        return _save(model, options, facts)

    try:
        fit = _fit(model, sampler, loader, options, on_epoch=save, progress=progress)
    finally:
        loader.close()
    if not fit.epoch_losses:
        raise ConfigError("training stopped before the first step (is --time-limit too small?)")

    model.eval()
    evaluation = None
    if val_slides:
        evaluation = evaluate_slides(
            model, val_slides, device=str(device), batch_size=options.eval_batch_size
        )
    metrics = None if evaluation is None else evaluation.to_dict()
    model_id = save(fit, {"metrics": metrics} if metrics else None)
    report = {
        "model": str(options.out),
        "model_id": model_id,
        "options": options.to_dict(),
        "training": {
            **fit.facts(device),
            "regions_per_second": round(fit.step * options.batch_size / max(fit.seconds, 1e-9), 2),
            "stopped_early": fit.stopped_early,
        },
        "evaluation": metrics,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_report(options.report_path, report)
    return TrainResult(
        model_path=Path(options.out),
        report_path=options.report_path,
        model_id=model_id,
        steps=fit.step,
        epochs=len(fit.epoch_losses),
        seconds=fit.seconds,
        epoch_losses=tuple(fit.epoch_losses),
        evaluation=evaluation,
        stopped_early=fit.stopped_early,
    )


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


__all__ = [
    "TrainProgress",
    "TrainResult",
    "make_optimizer",
    "prepare_inputs",
    "resolve_training_device",
    "seed_everything",
    "train",
    "train_step",
    "weighted_bce",
]
