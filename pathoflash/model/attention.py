"""Multi-head self-attention with a per-module backend switch.

``backend`` is one of:

- ``"triton"``: PathoFlash's flash-attention kernel (``pathoflash.kernels.flash_attention``); CUDA, or CPU under
  ``TRITON_INTERPRET=1`` (slow, for tests);
- ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention`` (cuDNN / flash / memory-efficient / math,
  whichever PyTorch picks);
- ``"eager"``: the plain softmax(QKᵀ·scale)·V reference, kept for parity tests;
- ``"auto"``: ``triton`` for CUDA tensors, ``sdpa`` otherwise (decided at each call from the input's device).
"""

from __future__ import annotations

import logging
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

AttentionBackend = Literal["auto", "triton", "sdpa", "eager"]
BACKENDS: tuple[str, ...] = get_args(AttentionBackend)

_log = logging.getLogger(__name__)


def check_backend(backend: str) -> AttentionBackend:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend  # type: ignore[return-value]


def resolve_backend(backend: AttentionBackend, device: torch.device) -> AttentionBackend:
    """The concrete backend ``backend`` means for tensors on ``device``."""
    if backend == "auto":
        return "triton" if device.type == "cuda" else "sdpa"
    return backend


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float, backend: AttentionBackend
) -> torch.Tensor:
    """softmax(q·kᵀ·scale)·v for (B, H, N, D) tensors with the given (concrete or ``auto``) backend."""
    chosen = resolve_backend(backend, q.device)
    if chosen == "triton":
        from pathoflash.kernels import flash_attention

        out: torch.Tensor = flash_attention(q, k, v, scale=scale)
        return out
    if chosen == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    weights = (q * scale) @ k.transpose(-2, -1)  # (B, H, N, N)
    return weights.softmax(dim=-1) @ v


class Attention(nn.Module):
    """timm-compatible attention: ``qkv`` → (q_norm, k_norm) → attention → (norm) → ``proj``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: bool = False,
        attn_norm: bool = False,
        norm_eps: float = 1e-6,
        backend: AttentionBackend = "auto",
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.backend: AttentionBackend = check_backend(backend)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm: nn.Module = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm: nn.Module = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.norm: nn.Module = nn.LayerNorm(dim, eps=norm_eps) if attn_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, D), strided views
        q, k = self.q_norm(q), self.k_norm(k)
        out = attend(q, k, v, scale=self.scale, backend=self.backend)  # (B, H, N, D)
        out = out.transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj(self.norm(out))

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, head_dim={self.head_dim}, backend={self.backend}"


__all__ = ["BACKENDS", "Attention", "AttentionBackend", "attend", "check_backend", "resolve_backend"]
