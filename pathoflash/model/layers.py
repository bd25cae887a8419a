"""Building blocks of the ViT, with timm's parameter names: patch embedding, MLPs, layer scale."""

from __future__ import annotations

import torch
from torch import nn

from .config import Activation


def make_activation(act: Activation) -> nn.Module:
    if act == "gelu":
        return nn.GELU()
    if act == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if act == "silu":
        return nn.SiLU()
    raise ValueError(f"unknown activation {act!r}")


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` squares → ``embed_dim`` channels, as a strided convolution (``proj``)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, *, bias: bool = True) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, H/p, W/p, D). H and W must be multiples of the patch size."""
        _, _, height, width = x.shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"image size {height}×{width} is not a multiple of the patch size {p}")
        return self.proj(x).permute(0, 2, 3, 1)


class Mlp(nn.Module):
    """fc1 → activation → (norm) → fc2, like timm's ``Mlp``."""

    def __init__(
        self, dim: int, hidden: int, act: Activation, *, bias: bool = True, norm_eps: float | None = None
    ):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = make_activation(act)
        self.norm: nn.Module = nn.LayerNorm(hidden, eps=norm_eps) if norm_eps is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(self.act(self.fc1(x))))


class SwiGLU(nn.Module):
    """act(fc1_g(x)) · fc1_x(x) → (norm) → fc2, like timm's ``SwiGLU`` (separate gate and value weights)."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        act: Activation = "silu",
        *,
        bias: bool = True,
        norm_eps: float | None = None,
    ):
        super().__init__()
        self.fc1_g = nn.Linear(dim, hidden, bias=bias)
        self.fc1_x = nn.Linear(dim, hidden, bias=bias)
        self.act = make_activation(act)
        self.norm: nn.Module = nn.LayerNorm(hidden, eps=norm_eps) if norm_eps is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(self.act(self.fc1_g(x)) * self.fc1_x(x)))


class SwiGLUPacked(nn.Module):
    """One ``fc1`` of width ``hidden``: first half gate, second half value; act(gate) · value → (norm) → fc2.

    Same maths and names as timm's ``SwiGLUPacked`` (``GluMlp`` with the gate first), so ``fc2`` maps
    ``hidden // 2`` → ``dim``.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        act: Activation = "silu",
        *,
        bias: bool = True,
        norm_eps: float | None = None,
    ):
        super().__init__()
        if hidden % 2:
            raise ValueError(f"SwiGLUPacked needs an even hidden width, got {hidden}")
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = make_activation(act)
        half = hidden // 2
        self.norm: nn.Module = nn.LayerNorm(half, eps=norm_eps) if norm_eps is not None else nn.Identity()
        self.fc2 = nn.Linear(half, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(self.norm(self.act(gate) * value))


class LayerScale(nn.Module):
    """Per-channel scale ``gamma`` on a residual branch (CaiT / DINOv2)."""

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


__all__ = ["LayerScale", "Mlp", "PatchEmbed", "SwiGLU", "SwiGLUPacked", "make_activation"]
