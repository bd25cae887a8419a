"""What a training run needs, as frozen values checked once: the data (annotated slides or synthetic ones),
the model (a fresh small ViT or a timm encoder), and the optimisation.

This module does not import torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True, slots=True)
class SyntheticSet:
    """``count`` synthetic slides from :func:`pathoflash.sample_data.write_sample_slide` with seeds
    ``first_seed, first_seed + 1, …``, each ``size`` = (width, height) level-0 px at ``mpp`` µm/px."""

    count: int
    first_seed: int = 0
    size: tuple[int, int] = (8192, 8192)
    mpp: float = 0.25

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ConfigError(f"synthetic slide count must be ≥ 0, got {self.count}")
        if self.first_seed < 0:
            raise ConfigError(f"synthetic seeds must be ≥ 0, got {self.first_seed}")
        if len(self.size) != 2 or min(self.size) < 256:
            raise ConfigError(f"synthetic slide size must be at least 256 × 256 px, got {self.size}")
        if not (math.isfinite(self.mpp) and 0.05 <= self.mpp <= 20):
            raise ConfigError(f"synthetic slide mpp must be 0.05–20 µm/px, got {self.mpp}")

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.first_seed, self.first_seed + self.count))


@dataclass(frozen=True, slots=True)
class ArchOptions:
    """A fresh ViT to train from scratch (ignored when an encoder checkpoint is given)."""

    width: int = 192
    depth: int = 4
    heads: int = 3
    patch_size: int = 16
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        if min(self.width, self.depth, self.heads, self.patch_size) < 1:
            raise ConfigError(
                f"--width/--depth/--heads/--patch must be positive, got {self.width}/{self.depth}/"
                f"{self.heads}/{self.patch_size}"
            )
        if self.width % self.heads:
            raise ConfigError(f"--width {self.width} is not divisible by --heads {self.heads}")
        if not self.mlp_ratio > 0:
            raise ConfigError(f"MLP ratio must be positive, got {self.mlp_ratio}")


@dataclass(frozen=True, slots=True)
class TrainOptions:
    """One training run.

    Data: ``slides`` (slide files or folders; each slide needs a QuPath GeoJSON with ``Tumor`` annotations,
    ``<stem>.truth.geojson`` or ``<stem>.geojson`` beside it or in ``annotations``) and/or ``synthetic``
    slides generated into ``synthetic_dir`` first; held-out slides for the report likewise (``val_slides``,
    ``val_synthetic``).

    Model: a fresh ViT (``arch``) or a timm encoder checkpoint (``encoder``, optional ``encoder_arch``), with a
    dense head of ``head_hidden`` units; images at ``mpp`` µm/px in regions of ``region`` px; attention
    ``backend`` (``auto``: PathoFlash's Triton kernel on CUDA, PyTorch's SDPA on the CPU).

    Optimisation: ``epochs`` × ``steps`` steps of ``batch_size`` regions, AdamW at ``lr`` (warm-up, cosine
    decay), bfloat16 autocast on CUDA. ``time_limit`` (seconds) ends training early at a step boundary (the
    last checkpoint and the report are still written). The model is saved to ``out`` after every epoch.
    """

    out: Path
    slides: tuple[Path, ...] = ()
    annotations: Path | None = None
    synthetic: SyntheticSet | None = None
    val_slides: tuple[Path, ...] = ()
    val_synthetic: SyntheticSet | None = None
    synthetic_dir: Path | None = None
    slide_mpp: float | None = None
    # model
    arch: ArchOptions = field(default_factory=ArchOptions)
    encoder: Path | None = None
    encoder_arch: str | None = None
    freeze_encoder: bool = False
    head_hidden: int = 64
    mpp: float = 0.5
    region: int = 1024
    backend: str = "auto"
    name: str = "pathoflash-model"
    # optimisation
    epochs: int = 1
    steps: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: float = 0.05
    seed: int = 0
    device: str = "auto"
    workers: int = 4
    time_limit: float | None = None
    storage_dtype: str = "float16"
    eval_batch_size: int = 4
    report: Path | None = None
    command: str = ""
    cache_pixels: int = 100_000_000

    def __post_init__(self) -> None:
        problems = []
        if Path(self.out).suffix != ".safetensors":
            problems.append(f"--out {self.out} must end in .safetensors")
        if not self.slides and (self.synthetic is None or self.synthetic.count == 0):
            problems.append("no training data: give --slides or --synthetic N")
        if not (math.isfinite(self.mpp) and 0.05 <= self.mpp <= 50):
            problems.append(f"--mpp {self.mpp} is outside 0.05–50 µm/px")
        if self.slide_mpp is not None and not 0.01 <= self.slide_mpp <= 100:
            problems.append(f"--slide-mpp {self.slide_mpp} is outside 0.01–100 µm/px")
        if not 64 <= self.region <= 8192:
            problems.append(f"--region {self.region} is outside 64–8192 px")
        patch = self.arch.patch_size
        if self.encoder is None and self.region % patch:
            problems.append(f"--region {self.region} is not a multiple of the patch size {patch}")
        if self.backend not in ("auto", "triton", "sdpa", "eager"):
            problems.append(f"--backend {self.backend!r}: use auto, triton, sdpa or eager")
        if self.head_hidden < 0:
            problems.append(f"--head-hidden {self.head_hidden} must be ≥ 0")
        for name in ("epochs", "steps", "batch_size", "eval_batch_size", "workers"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"--lr {self.lr} must be positive")
        if not 0 <= self.weight_decay < 1:
            problems.append(f"weight decay {self.weight_decay} must be in [0, 1)")
        if not 0 <= self.warmup < 1:
            problems.append(f"warm-up fraction {self.warmup} must be in [0, 1)")
        if self.seed < 0:
            problems.append(f"--seed {self.seed} must be ≥ 0")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            problems.append(f"--device {self.device!r}: use auto, cpu, cuda or cuda:N")
        if self.time_limit is not None and not self.time_limit > 0:
            problems.append(f"--time-limit {self.time_limit} must be positive")
        if self.storage_dtype not in ("float32", "float16", "bfloat16"):
            problems.append(f"storage dtype {self.storage_dtype!r}: use float32, float16 or bfloat16")
        if self.freeze_encoder and self.encoder is None:
            problems.append("--freeze-encoder needs a pretrained --encoder checkpoint")
        if self.cache_pixels < 0:
            problems.append(f"cache size {self.cache_pixels} must be ≥ 0 pixels")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps

    @property
    def report_path(self) -> Path:
        """Where the JSON report goes: ``report``, else ``<out stem>.report.json`` beside the model."""
        if self.report is not None:
            return Path(self.report)
        out = Path(self.out)
        return out.with_name(out.name.removesuffix(".safetensors") + ".report.json")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (paths as strings), recorded in the model file and the report."""
        raw = asdict(self)

        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [plain(v) for v in value]
            return value

        return {k: plain(v) for k, v in raw.items()}


__all__ = ["ArchOptions", "SyntheticSet", "TrainOptions"]
