"""``Model``: encoder + dense head + the preprocessing they were trained with.

The model takes regions at its ``preprocessing.mpp`` (uint8 RGB, NHWC) and returns one tumor probability per
patch: ``predict_tokens(images) -> (n, H/p, W/p)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .attention import AttentionBackend
from .head import DenseHead, HeadConfig
from .vit import VisionTransformer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, slots=True)
class Preprocessing:
    """How images must look for the model: resolution (µm/px), per-channel normalisation of [0, 1] RGB
    (``(x - mean) / std``), and the region side in pixels the model was trained on."""

    mpp: float = 0.5
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    region: int = 1024

    def __post_init__(self) -> None:
        problems = []
        if not self.mpp > 0:
            problems.append(f"mpp must be > 0, got {self.mpp}")
        if len(self.mean) != 3 or len(self.std) != 3:
            problems.append("mean and std need three values (R, G, B)")
        elif min(self.std) <= 0:
            problems.append(f"std must be > 0, got {self.std}")
        if self.region < 1:
            problems.append(f"region must be ≥ 1 px, got {self.region}")
        if problems:
            raise ConfigError("invalid preprocessing: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return {"mpp": self.mpp, "mean": list(self.mean), "std": list(self.std), "region": self.region}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        unknown = sorted(set(data) - {"mpp", "mean", "std", "region"})
        if unknown:
            raise ConfigError(f"unknown preprocessing keys {unknown}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Who the model is: ``name`` (human), ``id`` (stable, stored with results), free ``description`` and
    ``training`` facts (data, seeds, command, metrics)."""

    name: str = "unnamed"
    id: str = ""
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        unknown = sorted(set(data) - {"name", "id", "description", "training"})
        if unknown:
            raise ConfigError(f"unknown model info keys {unknown}")
        return cls(**data)


ImageBatch = np.ndarray | torch.Tensor


class Model(nn.Module):
    """A ViT encoder with a dense tumor head, and the preprocessing both expect."""

    def __init__(
        self,
        encoder: VisionTransformer,
        head: DenseHead,
        preprocessing: Preprocessing | None = None,
        info: ModelInfo | None = None,
    ) -> None:
        super().__init__()
        if head.config.embed_dim != encoder.config.embed_dim:
            raise ConfigError(
                f"head expects width {head.config.embed_dim} but the encoder is width {encoder.config.embed_dim}"
            )
        self.encoder = encoder
        self.head = head
        self.preprocessing = preprocessing or Preprocessing()
        self.info = info or ModelInfo()

    @classmethod
    def from_encoder(
        cls,
        encoder: VisionTransformer,
        *,
        head_hidden: int = 0,
        preprocessing: Preprocessing | None = None,
        info: ModelInfo | None = None,
    ) -> Model:
        """``encoder`` with a freshly initialised head (to be trained)."""
        head = DenseHead(HeadConfig(embed_dim=encoder.config.embed_dim, hidden=head_hidden))
        return cls(encoder, head, preprocessing, info)

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    @property
    def model_id(self) -> str:
        """``info.id`` (or the name when the model was never saved): recorded with every result."""
        return self.info.id or self.info.name

    @property
    def region_size(self) -> int:
        """Region side in pixels the model was trained on (``preprocessing.region``)."""
        return self.preprocessing.region

    @property
    def mpp(self) -> float:
        """Resolution the model expects, µm per pixel (``preprocessing.mpp``)."""
        return self.preprocessing.mpp

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def set_backend(self, backend: AttentionBackend) -> Model:
        self.encoder.set_backend(backend)
        return self

    def normalize(self, images: ImageBatch) -> torch.Tensor:
        """(n, H, W, 3) uint8 RGB → (n, 3, H, W) float32 normalised, on the model's device."""
        batch = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
        if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected (n, H, W, 3) uint8 images, got {tuple(batch.shape)} {batch.dtype}")
        device = self.device
        x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.preprocessing.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocessing.std, device=device).view(1, 3, 1, 1)
        return (x - mean) / std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) normalised images → (n, H/p, W/p) tumor logits."""
        logits: torch.Tensor = self.head(self.encoder.forward_patch_tokens(x))
        return logits

    @torch.inference_mode()
    def predict_tokens(self, images: ImageBatch, *, amp: bool | None = None) -> torch.Tensor:
        """Tumor probability of every patch: (n, H/p, W/p) float32 on the model's device.

        ``images`` are (n, H, W, 3) uint8 RGB (numpy or torch) at ``preprocessing.mpp``, or an already
        normalised float (n, 3, H, W) tensor. H and W must be multiples of the patch size. ``amp`` (default:
        on for CUDA) runs the encoder under bfloat16 autocast.
        """
        is_raw = (isinstance(images, np.ndarray) and images.dtype == np.uint8) or (
            isinstance(images, torch.Tensor) and images.dtype == torch.uint8
        )
        if is_raw:
            x = self.normalize(images)
        elif isinstance(images, torch.Tensor) and images.is_floating_point() and images.ndim == 4:
            x = images.to(self.device, torch.float32)
        else:
            raise ValueError("expected (n, H, W, 3) uint8 images or a normalised (n, 3, H, W) float tensor")
        device = x.device
        use_amp = device.type == "cuda" if amp is None else amp
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = self(x)
        return torch.sigmoid(logits.float())


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageBatch", "Model", "ModelInfo", "Preprocessing"]
