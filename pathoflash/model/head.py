"""The dense tumor head: one logit per patch token.

Every patch token has already seen the whole region through attention, so the head is per token:
``norm`` (LayerNorm) → ``fc1`` → GELU → ``fc2`` with ``hidden > 0``, or ``norm`` → ``fc`` with ``hidden == 0``.
``sigmoid`` of the logit is the tumor probability of that patch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True, slots=True)
class HeadConfig:
    """Width of the encoder tokens going in, and of the hidden layer (0: a single linear layer)."""

    embed_dim: int
    hidden: int = 0
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.embed_dim < 1 or self.hidden < 0:
            raise ConfigError(
                f"invalid head: embed_dim {self.embed_dim} must be ≥ 1, hidden {self.hidden} ≥ 0"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown head configuration keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)


class DenseHead(nn.Module):
    """(B, gh, gw, D) patch tokens → (B, gh, gw) tumor logits."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.norm_eps)
        if config.hidden:
            self.fc1 = nn.Linear(config.embed_dim, config.hidden)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(config.hidden, 1)
        else:
            self.fc = nn.Linear(config.embed_dim, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.norm(tokens)
        out = self.fc2(self.act(self.fc1(x))) if self.config.hidden else self.fc(x)
        return out.squeeze(-1)


__all__ = ["DenseHead", "HeadConfig"]
