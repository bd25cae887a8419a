"""The plain attention that :func:`pathoflash.kernels.flash_attention` must agree with (tests, benchmarks).

It materialises the (B, H, N, N_kv) score matrix, so it is for short sequences or ample memory only. It
computes in the dtype it is given: upcast for a reference (float64 on CPU, float32 on GPU), or keep a low
precision to measure what a plain implementation in that precision gets wrong.
"""

from __future__ import annotations

import math

import torch


def attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(softmax(q kᵀ · scale) v, logsumexp(q kᵀ · scale))`` for (B, H, N, D) inputs, differentiable."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, N, N_kv)
    return scores.softmax(dim=-1) @ v, scores.logsumexp(dim=-1)
