"""The ViT's configuration, and the timm architectures we know by name.

``ViTConfig`` describes everything that changes the shapes or the maths of :class:`~pathoflash.model.vit.
VisionTransformer`. It round-trips through JSON (``to_dict`` / ``from_dict``) because our checkpoint format keeps it
in the safetensors header. ``ARCHS`` maps timm architecture names to the configuration timm builds for that name
with default keyword arguments (checked against timm itself in ``tests/test_model_parity.py``).

This module does not import torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError

MlpKind = Literal["mlp", "swiglu", "swiglu_packed"]
"""``mlp``: fc1 → act → fc2 (timm ``Mlp``). ``swiglu``: separate gate and value projections ``fc1_g``/``fc1_x``
(timm ``SwiGLU``). ``swiglu_packed``: one ``fc1`` whose first half is the gate (timm ``SwiGLUPacked``, used by
DINOv2-g, UNI2-h, Virchow)."""

Activation = Literal["gelu", "gelu_tanh", "silu"]

MLP_KINDS: tuple[str, ...] = ("mlp", "swiglu", "swiglu_packed")
ACTIVATIONS: tuple[str, ...] = ("gelu", "gelu_tanh", "silu")

DEFAULT_HEAD_DIM = 64
"""Head width assumed when the number of heads cannot be read from the weights or a known width."""

HEADS_BY_EMBED_DIM: dict[int, int] = {
    192: 3,
    384: 6,
    768: 12,
    1024: 16,
    1280: 16,
    1408: 16,
    1536: 24,
    1664: 16,
}
"""Heads of the timm ViTs of each width (ViT-Ti/S/B/L/H, ViT-g/14, DINOv2-g, ViT-G). Widths not listed get
``embed_dim // DEFAULT_HEAD_DIM`` heads."""


@dataclass(frozen=True, slots=True)
class ViTConfig:
    """Shapes and options of a timm-compatible Vision Transformer.

    ``pos_grid`` is the token grid (rows, cols) the position embeddings were trained for (timm's
    ``img_size // patch_size``); other region sizes interpolate them. ``mlp_hidden`` is the out-features of
    ``fc1`` (for ``swiglu_packed`` that is twice the gated width, as in timm).
    """

    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_hidden: int = 3072
    mlp_kind: MlpKind = "mlp"
    act: Activation = "gelu"
    qkv_bias: bool = True
    proj_bias: bool = True
    qk_norm: bool = False
    attn_norm: bool = False
    mlp_norm: bool = False
    layer_scale: bool = False
    init_values: float = 1e-5
    class_token: bool = True
    reg_tokens: int = 0
    no_embed_class: bool = False
    pos_embed: bool = True
    pos_grid: tuple[int, int] = (14, 14)
    pre_norm: bool = False
    final_norm: bool = True
    norm_eps: float = 1e-6
    in_chans: int = 3

    def __post_init__(self) -> None:
        problems = []
        for name in ("patch_size", "embed_dim", "depth", "num_heads", "mlp_hidden", "in_chans"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.reg_tokens < 0:
            problems.append(f"reg_tokens must be >= 0, got {self.reg_tokens}")
        if self.mlp_kind not in MLP_KINDS:
            problems.append(f"mlp_kind must be one of {MLP_KINDS}, got {self.mlp_kind!r}")
        if self.act not in ACTIVATIONS:
            problems.append(f"act must be one of {ACTIVATIONS}, got {self.act!r}")
        heads_ok = isinstance(self.embed_dim, int) and isinstance(self.num_heads, int) and self.num_heads > 0
        if heads_ok and self.embed_dim % self.num_heads:
            problems.append(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.mlp_kind == "swiglu_packed" and self.mlp_hidden % 2:
            problems.append(f"swiglu_packed needs an even mlp_hidden, got {self.mlp_hidden}")
        if len(self.pos_grid) != 2 or min(self.pos_grid) < 1:
            problems.append(f"pos_grid must be two positive integers, got {self.pos_grid!r}")
        if problems:
            raise ConfigError("invalid ViT configuration: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def num_prefix_tokens(self) -> int:
        """Class token (if any) plus register tokens, in front of the patch tokens."""
        return int(self.class_token) + self.reg_tokens

    @property
    def pos_embed_len(self) -> int:
        grid = self.pos_grid[0] * self.pos_grid[1]
        return grid if self.no_embed_class else grid + self.num_prefix_tokens

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["pos_grid"] = list(self.pos_grid)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown ViT configuration keys {unknown}; known keys are {sorted(known)}")
        values = dict(data)
        if "pos_grid" in values:
            values["pos_grid"] = tuple(int(v) for v in values["pos_grid"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class _Arch:
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    img_size: int = 224
    extra: dict[str, Any] = field(default_factory=dict)

    def config(self) -> ViTConfig:
        grid = self.img_size // self.patch_size
        values: dict[str, Any] = {
            "patch_size": self.patch_size,
            "embed_dim": self.embed_dim,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "mlp_hidden": int(self.embed_dim * self.mlp_ratio),
            "pos_grid": (grid, grid),
        }
        values.update(self.extra)
        return ViTConfig(**values)


_DINOV2 = {"layer_scale": True}
_DINOV2_REG = {"layer_scale": True, "reg_tokens": 4, "no_embed_class": True}
_GIANT_GLU = {"mlp_kind": "swiglu_packed", "act": "silu"}

_ARCHS: dict[str, _Arch] = {
    "vit_tiny_patch16_224": _Arch(16, 192, 12, 3),
    "vit_tiny_patch16_384": _Arch(16, 192, 12, 3, img_size=384),
    "vit_small_patch16_224": _Arch(16, 384, 12, 6),
    "vit_small_patch16_384": _Arch(16, 384, 12, 6, img_size=384),
    "vit_base_patch16_224": _Arch(16, 768, 12, 12),
    "vit_base_patch16_384": _Arch(16, 768, 12, 12, img_size=384),
    "vit_large_patch16_224": _Arch(16, 1024, 24, 16),
    "vit_large_patch16_384": _Arch(16, 1024, 24, 16, img_size=384),
    "vit_huge_patch14_224": _Arch(14, 1280, 32, 16),
    "vit_giant_patch14_224": _Arch(14, 1408, 40, 16, mlp_ratio=48 / 11),
    "vit_small_patch14_dinov2": _Arch(14, 384, 12, 6, img_size=518, extra=_DINOV2),
    "vit_base_patch14_dinov2": _Arch(14, 768, 12, 12, img_size=518, extra=_DINOV2),
    "vit_large_patch14_dinov2": _Arch(14, 1024, 24, 16, img_size=518, extra=_DINOV2),
    "vit_giant_patch14_dinov2": _Arch(
        14, 1536, 40, 24, mlp_ratio=2.66667 * 2, img_size=518, extra={**_DINOV2, **_GIANT_GLU}
    ),
    "vit_small_patch14_reg4_dinov2": _Arch(14, 384, 12, 6, img_size=518, extra=_DINOV2_REG),
    "vit_base_patch14_reg4_dinov2": _Arch(14, 768, 12, 12, img_size=518, extra=_DINOV2_REG),
    "vit_large_patch14_reg4_dinov2": _Arch(14, 1024, 24, 16, img_size=518, extra=_DINOV2_REG),
    "vit_giant_patch14_reg4_dinov2": _Arch(
        14, 1536, 40, 24, mlp_ratio=2.66667 * 2, img_size=518, extra={**_DINOV2_REG, **_GIANT_GLU}
    ),
}

ARCH_NAMES: tuple[str, ...] = tuple(sorted(_ARCHS))


def arch_config(name: str) -> ViTConfig:
    """The configuration timm builds for architecture ``name`` with default arguments.

    A pretrained tag (``vit_large_patch16_224.augreg_in21k``) and a ``timm/`` prefix are ignored.
    """
    base = name.removeprefix("timm/").split(".", 1)[0]
    arch = _ARCHS.get(base)
    if arch is None:
        raise ConfigError(
            f"unknown architecture {name!r}; known: {', '.join(ARCH_NAMES)} "
            "(or pass arch=None to infer it from the checkpoint's tensor shapes)"
        )
    return arch.config()


def default_num_heads(embed_dim: int) -> int:
    """Heads for a ViT of width ``embed_dim`` whose architecture is not named (see ``HEADS_BY_EMBED_DIM``)."""
    heads = HEADS_BY_EMBED_DIM.get(embed_dim)
    if heads is not None:
        return heads
    if embed_dim % DEFAULT_HEAD_DIM:
        raise ConfigError(
            f"cannot guess the number of attention heads for width {embed_dim} (not a multiple of "
            f"{DEFAULT_HEAD_DIM}); name the architecture with arch=... or pass a ViTConfig"
        )
    return embed_dim // DEFAULT_HEAD_DIM


__all__ = [
    "ARCH_NAMES",
    "DEFAULT_HEAD_DIM",
    "HEADS_BY_EMBED_DIM",
    "Activation",
    "MlpKind",
    "ViTConfig",
    "arch_config",
    "default_num_heads",
]
