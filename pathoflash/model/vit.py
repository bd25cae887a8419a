"""A Vision Transformer whose parameters carry timm's names, so timm checkpoints load as they are.

It always behaves like timm's ``dynamic_img_size=True``: any image whose sides are multiples of the patch size
works, and the position embeddings are resampled to the token grid (bicubic, antialiased, in float32), which at
the native grid is the identity, so the output equals timm's at the model's own image size too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import Attention, AttentionBackend, check_backend
from .config import ViTConfig
from .layers import LayerScale, Mlp, PatchEmbed, SwiGLU, SwiGLUPacked


def resample_pos_embed(
    pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], num_prefix: int
) -> torch.Tensor:
    """Resample (1, prefix + gh·gw, D) position embeddings from ``old_grid`` to ``new_grid`` token rows × cols.

    The first ``num_prefix`` entries (class/register positions) are kept as they are; the grid part is
    resized as an image with bicubic interpolation (antialiased when shrinking, corners not aligned) in float32
    and cast back, the same maths as timm's ``resample_abs_pos_embed``.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    dim = grid.shape[-1]
    image = grid.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)  # (1, D, gh, gw)
    image = F.interpolate(image, size=new_grid, mode="bicubic", antialias=True, align_corners=False)
    grid = image.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1) if num_prefix else grid


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(self, config: ViTConfig, *, backend: AttentionBackend = "auto") -> None:
        super().__init__()
        dim, eps = config.embed_dim, config.norm_eps
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(
            dim,
            config.num_heads,
            qkv_bias=config.qkv_bias,
            proj_bias=config.proj_bias,
            qk_norm=config.qk_norm,
            attn_norm=config.attn_norm,
            norm_eps=eps,
            backend=backend,
        )
        self.ls1: nn.Module = LayerScale(dim, config.init_values) if config.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        mlp_cls = {"mlp": Mlp, "swiglu": SwiGLU, "swiglu_packed": SwiGLUPacked}[config.mlp_kind]
        self.mlp = mlp_cls(
            dim,
            config.mlp_hidden,
            config.act,
            bias=config.proj_bias,
            norm_eps=eps if config.mlp_norm else None,
        )
        self.ls2: nn.Module = LayerScale(dim, config.init_values) if config.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """timm-compatible ViT encoder (no classifier head).

    Parameters: ``patch_embed.proj``, ``cls_token``, ``reg_token``, ``pos_embed``, ``norm_pre``,
    ``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.*, ls2.gamma}``, ``norm``.
    """

    cls_token: nn.Parameter | None
    reg_token: nn.Parameter | None
    pos_embed: nn.Parameter | None

    def __init__(self, config: ViTConfig, *, backend: AttentionBackend = "auto") -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.patch_embed = PatchEmbed(config.patch_size, config.in_chans, dim, bias=not config.pre_norm)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if config.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, config.reg_tokens, dim)) if config.reg_tokens else None
        self.pos_embed = nn.Parameter(torch.zeros(1, config.pos_embed_len, dim)) if config.pos_embed else None
        self.norm_pre: nn.Module = (
            nn.LayerNorm(dim, eps=config.norm_eps) if config.pre_norm else nn.Identity()
        )
        self.blocks = nn.ModuleList(Block(config, backend=backend) for _ in range(config.depth))
        self.norm: nn.Module = nn.LayerNorm(dim, eps=config.norm_eps) if config.final_norm else nn.Identity()
        self.grad_checkpointing = False
        self.init_weights()

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        return self.config.num_prefix_tokens

    @property
    def backend(self) -> AttentionBackend:
        return self._attention_modules()[0].backend if self.config.depth else "auto"

    def set_backend(self, backend: AttentionBackend) -> VisionTransformer:
        """Switch every attention module to ``backend``; returns self."""
        checked = check_backend(backend)
        for module in self._attention_modules():
            module.backend = checked
        return self

    def _attention_modules(self) -> list[Attention]:
        return [m for m in self.modules() if isinstance(m, Attention)]

    def init_weights(self) -> None:
        """Fresh weights as timm initialises them (truncated normal 0.02 for linear layers and positions)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        fan_in = self.config.in_chans * self.config.patch_size**2
        nn.init.trunc_normal_(self.patch_embed.proj.weight, std=math.sqrt(1.0 / fan_in))
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.reg_token is not None:
            nn.init.normal_(self.reg_token, std=1e-6)

    def _add_positions(self, x: torch.Tensor) -> torch.Tensor:
        """(B, gh, gw, D) patch embeddings → (B, prefix + gh·gw, D) with prefix tokens and positions."""
        batch, rows, cols, dim = x.shape
        x = x.reshape(batch, rows * cols, dim)
        prefix = [t.expand(batch, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        if self.pos_embed is None:
            return torch.cat([*prefix, x], dim=1)
        cfg = self.config
        num_prefix = 0 if cfg.no_embed_class else cfg.num_prefix_tokens
        pos = resample_pos_embed(self.pos_embed, cfg.pos_grid, (rows, cols), num_prefix)
        if cfg.no_embed_class:  # positions only for patches; prefix tokens carry none
            return torch.cat([*prefix, x + pos], dim=1)
        return torch.cat([*prefix, x], dim=1) + pos

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalised images → (B, prefix + (H/p)·(W/p), D) tokens after the final norm.

        Same output as timm's ``forward_features``: class token, then register tokens, then patch tokens in
        row-major order.
        """
        x = self._add_positions(self.patch_embed(x))
        x = self.norm_pre(x)
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        out: torch.Tensor = self.norm(x)
        return out

    def forward_patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, H/p, W/p, D): the patch tokens of ``forward_features`` on their grid."""
        rows, cols = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = self.forward_features(x)[:, self.num_prefix_tokens :]
        return tokens.reshape(x.shape[0], rows, cols, tokens.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


__all__ = ["Block", "VisionTransformer", "resample_pos_embed"]
