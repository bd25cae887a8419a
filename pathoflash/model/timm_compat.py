"""Load timm-style ViT state dicts (``.safetensors``, ``.pth``, ``.bin`` or a dict) into our ViT.

What the tensors show is read from them: patch size, width, depth, MLP kind and width, class/register tokens,
layer scale, qkv/proj biases, qk-norm, pre-/final norm, the position grid. What they cannot show comes from the
named timm architecture (``arch``): the number of heads, the MLP activation, the norm epsilon. Without ``arch``
the heads follow ``config.HEADS_BY_EMBED_DIM`` (the timm ViT of that width), else a head width of 64; the
activation is GELU for a plain MLP and SiLU for SwiGLU; epsilon is timm's 1e-6.

Classifier keys that ``forward_features`` never uses (``head.*``, ``fc_norm.*``, ``attn_pool.*``) are dropped
with a log line. Any other mismatch raises :class:`~pathoflash.errors.CheckpointError` listing the keys.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from .attention import AttentionBackend
from .config import ViTConfig, arch_config, default_num_heads
from .vit import VisionTransformer

_log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
CheckpointSource = str | Path | Mapping[str, Any]

CLASSIFIER_PREFIXES: tuple[str, ...] = ("head.", "fc_norm.", "attn_pool.")
"""Keys of timm's pooling/classifier, unused by ``forward_features`` and dropped on load."""

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "teacher")
_MAX_LISTED = 12


def read_state_dict(checkpoint: CheckpointSource) -> StateDict:
    """Tensors of a checkpoint file (``.safetensors``; ``.pth``/``.pt``/``.bin``/``.ckpt`` via ``torch.load``
    with ``weights_only=True``) or mapping; a ``{"state_dict": …}``/``{"model": …}`` wrapper and a
    ``module.`` prefix on every key (DistributedDataParallel) are removed."""
    if isinstance(checkpoint, Mapping):
        raw: Mapping[str, Any] = checkpoint
        path = None
    else:
        path = Path(checkpoint)
        raw = _read_file(path)
    for key in _WRAPPER_KEYS:
        inner = raw.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            raw = inner
            break
    not_tensors = sorted(k for k, v in raw.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(
            f"not a state dict of tensors: entries {_listing(not_tensors)} are not tensors", path=path
        )
    state = {str(k): v for k, v in raw.items()}
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _read_file(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise CheckpointError("checkpoint file not found", path=path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors / pickle raise many types; all mean "unreadable checkpoint"
        raise CheckpointError(f"cannot read checkpoint: {exc}", path=path) from exc
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"expected a state dict, found {type(loaded).__name__}", path=path)
    return loaded


def infer_config(state: Mapping[str, torch.Tensor], arch: str | None = None) -> ViTConfig:
    """The :class:`ViTConfig` of a timm-style ViT state dict (see the module docstring for what comes from where)."""
    base = arch_config(arch) if arch is not None else None
    proj = state.get("patch_embed.proj.weight")
    if proj is None or proj.ndim != 4:
        raise CheckpointError("not a timm ViT state dict: no 4-d 'patch_embed.proj.weight'")
    embed_dim, in_chans, patch, patch_w = (int(s) for s in proj.shape)
    if patch != patch_w:
        raise CheckpointError(f"non-square patches ({patch}×{patch_w}) are not supported")
    if base is not None and (base.embed_dim, base.patch_size) != (embed_dim, patch):
        raise CheckpointError(
            f"checkpoint is a width-{embed_dim} ViT with {patch}-px patches, but {arch} is width "
            f"{base.embed_dim} with {base.patch_size}-px patches"
        )
    block_ids = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    depth = max(block_ids) + 1 if block_ids else 0
    if depth == 0:
        raise CheckpointError("not a timm ViT state dict: no 'blocks.N.*' keys")

    def has(key: str) -> bool:
        return key in state

    reg_tokens = int(state["reg_token"].shape[1]) if has("reg_token") else 0
    class_token = has("cls_token")
    num_prefix = int(class_token) + reg_tokens
    values: dict[str, Any] = {
        "patch_size": patch,
        "embed_dim": embed_dim,
        "in_chans": in_chans,
        "depth": base.depth if base is not None else depth,
        "class_token": class_token,
        "reg_tokens": reg_tokens,
        "pos_embed": has("pos_embed"),
        "pre_norm": has("norm_pre.weight"),
        "final_norm": has("norm.weight"),
        "qkv_bias": has("blocks.0.attn.qkv.bias"),
        "proj_bias": has("blocks.0.attn.proj.bias"),
        "qk_norm": has("blocks.0.attn.q_norm.weight"),
        "attn_norm": has("blocks.0.attn.norm.weight"),
        "mlp_norm": has("blocks.0.mlp.norm.weight"),
        "layer_scale": has("blocks.0.ls1.gamma"),
        "num_heads": base.num_heads if base is not None else default_num_heads(embed_dim),
        "norm_eps": base.norm_eps if base is not None else 1e-6,
    }
    if has("pos_embed"):
        values["no_embed_class"], values["pos_grid"] = _pos_layout(
            int(state["pos_embed"].shape[1]), num_prefix, None if base is None else base.no_embed_class
        )
    elif base is not None:
        values["pos_grid"] = base.pos_grid
    kind, hidden = _mlp_layout(state)
    values["mlp_kind"], values["mlp_hidden"] = kind, hidden
    if base is not None and base.mlp_kind == kind:
        values["act"] = base.act
    else:
        values["act"] = "gelu" if kind == "mlp" else "silu"
    try:
        return ViTConfig(**values)
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint implies an invalid ViT: {exc}") from exc


def _pos_layout(length: int, num_prefix: int, preferred: bool | None) -> tuple[bool, tuple[int, int]]:
    """(no_embed_class, grid) for a position table of ``length`` entries and ``num_prefix`` prefix tokens."""
    candidates = []
    for no_embed_class in (False, True):
        grid_len = length if no_embed_class else length - num_prefix
        side = math.isqrt(max(grid_len, 0))
        if grid_len > 0 and side * side == grid_len:
            candidates.append((no_embed_class, (side, side)))
    if num_prefix == 0:
        candidates = candidates[:1]
    if not candidates:
        raise CheckpointError(
            f"pos_embed has {length} entries, which with {num_prefix} prefix tokens is no square grid"
        )
    for candidate in candidates:
        if candidate[0] == preferred:
            return candidate
    return candidates[0]


def _mlp_layout(state: Mapping[str, torch.Tensor]) -> tuple[str, int]:
    gate = state.get("blocks.0.mlp.fc1_g.weight")
    if gate is not None:
        return "swiglu", int(gate.shape[0])
    fc1, fc2 = state.get("blocks.0.mlp.fc1.weight"), state.get("blocks.0.mlp.fc2.weight")
    if fc1 is None or fc2 is None:
        raise CheckpointError("not a timm ViT state dict: no 'blocks.0.mlp.fc1.weight'/'fc1_g.weight'")
    hidden, into_fc2 = int(fc1.shape[0]), int(fc2.shape[1])
    if into_fc2 == hidden:
        return "mlp", hidden
    if 2 * into_fc2 == hidden:
        return "swiglu_packed", hidden
    raise CheckpointError(f"mlp.fc1 gives {hidden} features but mlp.fc2 takes {into_fc2}: unknown MLP layout")


def materialize(state: Mapping[str, torch.Tensor], *, copy: bool) -> StateDict:
    """Tensors ready to become a module's parameters (``load_state_dict(assign=True)``): float32 for floating
    point, contiguous, on the CPU; copied when ``copy`` (the caller keeps the originals) or converted."""
    out = {}
    for key, tensor in state.items():
        value = tensor.detach().to("cpu")
        if value.is_floating_point() and value.dtype != torch.float32:
            value = value.float()
        elif copy:
            value = value.clone()
        out[key] = value.contiguous()
    return out


def check_keys(model: torch.nn.Module, state: Mapping[str, torch.Tensor], *, what: str) -> None:
    """Raise :class:`CheckpointError` listing missing/unexpected keys and shape mismatches, if any."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys {_listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys {_listing(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches {_listing(shapes)}")
    if parts:
        raise CheckpointError(f"checkpoint does not match {what}: " + "; ".join(parts))


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f", … ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"[{shown}{more}]"


def load_encoder(
    checkpoint: CheckpointSource, *, arch: str | ViTConfig | None = None, backend: AttentionBackend = "auto"
) -> VisionTransformer:
    """A timm-style ViT state dict → :class:`VisionTransformer` (fp32, CPU, eval mode).

    ``checkpoint`` is a ``.safetensors``/``.pth``/``.bin`` path or a state dict. ``arch`` is a timm
    architecture name (``"vit_large_patch16_224"``, see ``config.ARCH_NAMES``), an explicit
    :class:`ViTConfig` (used as is), or ``None`` to infer everything from the tensors' shapes.
    ``model.forward_features(x)`` then equals timm's for the same weights.
    """
    path = None if isinstance(checkpoint, Mapping) else Path(checkpoint)
    try:
        state = read_state_dict(checkpoint)
        dropped = sorted(k for k in state if k.startswith(CLASSIFIER_PREFIXES))
        if dropped:
            _log.info("ignoring %d classifier keys not used by forward_features: %s", len(dropped), dropped)
        state = {k: v for k, v in state.items() if k not in set(dropped)}
        if isinstance(arch, ViTConfig):
            config, what = arch, "the given ViTConfig"
        else:
            config = infer_config(state, arch)
            what = arch if arch is not None else "the ViT inferred from its shapes"
        with torch.device("meta"):  # no time spent on random weights that are overwritten next
            model = VisionTransformer(config, backend=backend)
        check_keys(model, state, what=what)
    except CheckpointError as exc:
        if path is not None and exc.path is None:
            raise CheckpointError(exc.message, path=path) from exc
        raise
    owned = not isinstance(checkpoint, Mapping)
    model.load_state_dict(materialize(state, copy=not owned), strict=True, assign=True)
    _log.info("loaded ViT %s", dataclasses.asdict(config))
    return model.eval()


__all__ = [
    "CLASSIFIER_PREFIXES",
    "check_keys",
    "infer_config",
    "load_encoder",
    "materialize",
    "read_state_dict",
]
