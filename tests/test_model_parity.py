"""Our ViT against timm itself: same weights in, same ``forward_features`` out (fp32, CPU).

timm models are built on the meta device and filled with our own random values (much faster than timm's
initialisers on a 2-core CPU), scaled so that every part matters: layer-scale gammas near 1 instead of 1e-5,
position/class/register embeddings of unit size, norms away from identity.
"""

from __future__ import annotations

import math

import pytest
import torch

timm = pytest.importorskip("timm")

from pathoflash.model.config import ARCH_NAMES, arch_config  # noqa: E402
from pathoflash.model.timm_compat import infer_config, load_encoder  # noqa: E402
from pathoflash.model.vit import resample_pos_embed  # noqa: E402

RTOL = 1e-4


def random_timm_vit(name: str, seed: int = 0, **kwargs: object) -> torch.nn.Module:
    model = timm.create_model(
        name, pretrained=False, num_classes=0, dynamic_img_size=True, device="meta", **kwargs
    )
    model = model.to_empty(device="cpu").eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if pname.endswith("gamma"):
                param.copy_(1.0 + 0.3 * noise)
            elif pname in ("pos_embed", "cls_token", "reg_token"):
                param.copy_(noise)
            elif param.ndim == 1 and pname.endswith("weight"):  # norms
                param.copy_(1.0 + 0.2 * noise)
            elif param.ndim == 1:  # biases
                param.copy_(0.1 * noise)
            else:
                param.copy_(noise / math.sqrt(param[0].numel()))
    return model


def assert_parity(
    reference: torch.nn.Module, ours: torch.nn.Module, size: int | tuple[int, int], batch: int = 1
):
    height, width = (size, size) if isinstance(size, int) else size
    x = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(height * 7 + width))
    with torch.no_grad():
        expected = reference.forward_features(x)
        got = ours.forward_features(x)
    assert got.shape == expected.shape
    error = ((got - expected).abs().max() / expected.abs().max()).item()
    assert error < RTOL, f"relative error {error:.2e} at {height}×{width}"


def test_vit_small_patch16_by_arch_name_native_and_larger_region():
    reference = random_timm_vit("vit_small_patch16_224")
    ours = load_encoder(reference.state_dict(), arch="vit_small_patch16_224", backend="sdpa")
    assert ours.config == arch_config("vit_small_patch16_224")
    assert_parity(reference, ours, 224, batch=2)
    assert_parity(reference, ours, 448)


def test_vit_base_patch16_inferred_from_shapes():
    reference = random_timm_vit("vit_base_patch16_224")
    ours = load_encoder(reference.state_dict(), backend="sdpa")
    assert ours.config == arch_config("vit_base_patch16_224")
    assert_parity(reference, ours, 224)
    assert_parity(reference, ours, (320, 256))


def test_vit_large_patch16_layer_scale_structure_at_large_region():
    reference = random_timm_vit("vit_large_patch16_224", depth=2, init_values=1e-5)
    ours = load_encoder(reference.state_dict(), backend="sdpa")
    assert ours.config.layer_scale and ours.config.num_heads == 16
    assert_parity(reference, ours, 448)


def test_vit_large_patch16_full_depth_with_layer_scale_by_arch_name():
    # UNI-style: timm's ViT-L/16 with layer scale added through init_values.
    reference = random_timm_vit("vit_large_patch16_224", init_values=1e-5)
    ours = load_encoder(reference.state_dict(), arch="vit_large_patch16_224", backend="sdpa")
    assert ours.config.depth == 24 and ours.config.layer_scale
    assert_parity(reference, ours, 224)


def test_dinov2_registers_patch14_downsampled_and_upsampled_positions():
    # Native grid 37×37 (518 px); 224 px shrinks it (antialiased path), 644 px grows it.
    reference = random_timm_vit("vit_small_patch14_reg4_dinov2")
    ours = load_encoder(reference.state_dict(), arch="vit_small_patch14_reg4_dinov2", backend="sdpa")
    assert (ours.config.reg_tokens, ours.config.no_embed_class, ours.config.pos_grid) == (4, True, (37, 37))
    assert_parity(reference, ours, 224)
    assert_parity(reference, ours, 644)


def test_swiglu_packed_dinov2_giant_structure():
    reference = random_timm_vit("vit_giant_patch14_dinov2", depth=2, embed_dim=384, num_heads=6, img_size=224)
    ours = load_encoder(reference.state_dict(), backend="sdpa")
    assert (ours.config.mlp_kind, ours.config.act, ours.config.mlp_hidden) == ("swiglu_packed", "silu", 2048)
    assert_parity(reference, ours, 224)
    assert_parity(reference, ours, 336)


def test_swiglu_split_weights():
    reference = random_timm_vit(
        "vit_small_patch16_224", depth=2, mlp_layer=timm.layers.SwiGLU, act_layer=torch.nn.SiLU
    )
    ours = load_encoder(reference.state_dict(), backend="eager")
    assert ours.config.mlp_kind == "swiglu"
    assert_parity(reference, ours, 224)
    assert_parity(reference, ours, 288)


def test_no_class_token_registers_with_positions_qk_norm_pre_norm_and_pooled_norm():
    # Average pooling moves timm's final norm after the pool (fc_norm): forward_features has no norm then.
    reference = random_timm_vit(
        "vit_small_patch16_224",
        depth=2,
        class_token=False,
        global_pool="avg",
        reg_tokens=2,
        qk_norm=True,
        pre_norm=True,
    )
    state = reference.state_dict()
    assert "fc_norm.weight" in state and "norm.weight" not in state
    ours = load_encoder(state, backend="eager")
    cfg = ours.config
    assert (cfg.class_token, cfg.reg_tokens, cfg.no_embed_class) == (False, 2, False)
    assert cfg.qk_norm and cfg.pre_norm and not cfg.final_norm
    assert_parity(reference, ours, 224)
    assert_parity(reference, ours, 256)


def test_arch_table_matches_timm():
    for name in ARCH_NAMES:
        reference = timm.create_model(name, pretrained=False, num_classes=0, device="meta")
        state = reference.state_dict()
        expected = arch_config(name)
        assert infer_config(state, name) == expected, name
        assert expected.num_heads == reference.blocks[0].attn.num_heads, name
        # The head table (used without arch) agrees with timm for every known width.
        assert infer_config(state).num_heads == expected.num_heads, name


@pytest.mark.parametrize(
    ("old", "new", "prefix"),
    [((14, 14), (64, 64), 1), ((37, 37), (16, 16), 0), ((37, 37), (20, 31), 5), ((16, 16), (16, 16), 1)],
)
def test_position_resampling_matches_timm(old, new, prefix):
    from timm.layers import resample_abs_pos_embed

    pos = torch.randn(1, prefix + old[0] * old[1], 32, generator=torch.Generator().manual_seed(1))
    expected = resample_abs_pos_embed(pos, new_size=list(new), old_size=list(old), num_prefix_tokens=prefix)
    got = resample_pos_embed(pos, old, new, prefix)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
