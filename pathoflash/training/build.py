"""The model a training run starts from: a fresh ViT, or a timm encoder checkpoint, plus a fresh dense head."""

from __future__ import annotations

import logging

import torch

from ..model.config import ViTConfig
from ..model.predictor import Model, ModelInfo, Preprocessing
from ..model.timm_compat import load_encoder
from ..model.vit import VisionTransformer
from .options import TrainOptions

log = logging.getLogger(__name__)


def fresh_encoder_config(options: TrainOptions) -> ViTConfig:
    """A small ViT without class token for ``options.region``-px regions (its native position grid)."""
    arch = options.arch
    grid = options.region // arch.patch_size
    return ViTConfig(
        patch_size=arch.patch_size,
        embed_dim=arch.width,
        depth=arch.depth,
        num_heads=arch.heads,
        mlp_hidden=round(arch.width * arch.mlp_ratio),
        class_token=False,
        pos_grid=(grid, grid),
    )


def build_model(options: TrainOptions) -> Model:
    """Encoder (fresh, seeded by the caller's torch RNG, or loaded from ``options.encoder``) + fresh head.

    With ``freeze_encoder`` the encoder's parameters do not train.
    """
    if options.encoder is not None:
        encoder = load_encoder(options.encoder, arch=options.encoder_arch)
        if options.region % encoder.patch_size:
            from ..errors import ConfigError

            raise ConfigError(
                f"--region {options.region} is not a multiple of the encoder's patch size {encoder.patch_size}"
            )
        log.info(
            "encoder from %s (width %d, depth %d)",
            options.encoder,
            encoder.config.embed_dim,
            encoder.config.depth,
        )
    else:
        encoder = VisionTransformer(fresh_encoder_config(options))
    preprocessing = Preprocessing(mpp=options.mpp, region=options.region)
    info = ModelInfo(name=options.name)
    model = Model.from_encoder(
        encoder, head_hidden=options.head_hidden, preprocessing=preprocessing, info=info
    )
    model.set_backend(options.backend)  # type: ignore[arg-type]  # checked by TrainOptions
    if options.freeze_encoder:
        for parameter in model.encoder.parameters():
            parameter.requires_grad_(False)
    return model.float().train()


def parameter_groups(model: Model, weight_decay: float) -> list[dict[str, object]]:
    """AdamW groups: weight decay on matrices only (not on norms, biases, positions or tokens)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        tokens = name.endswith(("pos_embed", "cls_token", "reg_token"))
        (no_decay if parameter.ndim < 2 or tokens else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


__all__ = ["build_model", "fresh_encoder_config", "parameter_groups"]
