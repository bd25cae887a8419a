"""Our model file format, timm checkpoint files, and the errors for checkpoints that do not fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import pathoflash as pf
from pathoflash.errors import CheckpointError, ConfigError
from pathoflash.model.checkpoint import read_metadata, save_model
from pathoflash.model.config import ViTConfig
from pathoflash.model.head import DenseHead, HeadConfig
from pathoflash.model.predictor import Model, ModelInfo, Preprocessing
from pathoflash.model.timm_compat import load_encoder, read_state_dict
from pathoflash.model.vit import VisionTransformer

CONFIG = ViTConfig(
    patch_size=16, embed_dim=128, depth=2, num_heads=2, mlp_hidden=256, layer_scale=True, reg_tokens=2,
    no_embed_class=True, pos_grid=(4, 4),
)  # fmt: skip


def small_model(seed: int = 0, head_hidden: int = 32) -> Model:
    torch.manual_seed(seed)
    encoder = VisionTransformer(CONFIG, backend="sdpa")
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            if name.endswith("gamma"):
                param.fill_(0.5)
    head = DenseHead(HeadConfig(embed_dim=128, hidden=head_hidden))
    preprocessing = Preprocessing(mpp=0.5, mean=(0.7, 0.6, 0.75), std=(0.15, 0.2, 0.1), region=256)
    info = ModelInfo(name="tiny", description="test model", training={"seed": seed, "slides": ["a", "b"]})
    return Model(encoder, head, preprocessing, info).eval()


def images(n: int = 2, height: int = 64, width: int = 96, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def test_round_trip_keeps_weights_config_preprocessing_and_info(tmp_path):
    model = small_model()
    path = save_model(model, tmp_path / "tiny.safetensors")
    loaded = pf.load_model(path)
    assert isinstance(loaded, pf.Model)
    assert loaded.encoder.config == CONFIG and loaded.head.config == model.head.config
    assert loaded.preprocessing == model.preprocessing
    assert loaded.info.name == "tiny" and loaded.info.training == {"seed": 0, "slides": ["a", "b"]}
    assert loaded.info.id.startswith("tiny-") and len(loaded.info.id) == len("tiny-") + 12
    assert (loaded.model_id, loaded.region_size, loaded.mpp, loaded.patch_size) == (
        loaded.info.id,
        256,
        0.5,
        16,
    )
    assert small_model().model_id == "tiny"  # never saved: the name
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    probs = loaded.predict_tokens(images())
    assert probs.shape == (2, 4, 6) and probs.dtype == torch.float32
    torch.testing.assert_close(probs, model.predict_tokens(images()), rtol=0, atol=0)
    assert not loaded.training and all(p.requires_grad for p in loaded.parameters())


def test_id_is_stable_for_equal_weights_and_differs_otherwise(tmp_path):
    first = read_metadata(save_model(small_model(0), tmp_path / "a.safetensors"))["model"]["id"]
    again = read_metadata(save_model(small_model(0), tmp_path / "b.safetensors"))["model"]["id"]
    other = read_metadata(save_model(small_model(1), tmp_path / "c.safetensors"))["model"]["id"]
    assert first == again != other


def test_half_precision_storage_loads_as_float32(tmp_path):
    model = small_model()
    path = save_model(model, tmp_path / "half.safetensors", dtype=torch.float16)
    full = save_model(model, tmp_path / "full.safetensors")
    assert path.stat().st_size < 0.6 * full.stat().st_size
    loaded = pf.load_model(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    torch.testing.assert_close(
        loaded.predict_tokens(images()), model.predict_tokens(images()), atol=5e-3, rtol=0
    )


def test_predict_tokens_accepts_normalised_tensors_and_rejects_other_input():
    model = small_model()
    raw = images()
    x = model.normalize(raw)
    assert x.shape == (2, 3, 64, 96)
    torch.testing.assert_close(model.predict_tokens(x), model.predict_tokens(torch.from_numpy(raw)))
    with pytest.raises(ValueError, match="uint8"):
        model.predict_tokens(raw.astype(np.float32))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model.predict_tokens(images(height=60))


def test_default_model_missing_is_a_clear_error(monkeypatch, tmp_path):
    from pathoflash.model import checkpoint

    monkeypatch.setattr(checkpoint, "DEFAULT_MODEL_FILE", tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match="default model"):
        pf.load_model()


def test_bare_encoder_file_is_refused_with_a_hint(tmp_path):
    encoder_file = tmp_path / "encoder.safetensors"
    save_file(small_model().encoder.state_dict(), str(encoder_file))
    with pytest.raises(CheckpointError, match="load_encoder"):
        pf.load_model(encoder_file)
    with pytest.raises(CheckpointError, match="load_encoder"):
        pf.load_model(_touch(tmp_path / "weights.pth"))
    with pytest.raises(CheckpointError, match="not found"):
        pf.load_model(tmp_path / "nothing.safetensors")


def _touch(path):
    path.write_bytes(b"x")
    return path


def test_model_file_whose_tensors_disagree_with_its_metadata_lists_the_keys(tmp_path):
    model = small_model()
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "head.fc2.bias"}
    state["head.extra"] = torch.zeros(3)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path), metadata=_metadata_of(tmp_path, model))
    with pytest.raises(CheckpointError) as info:
        pf.load_model(path)
    message = str(info.value)
    assert "1 missing keys [head.fc2.bias]" in message and "1 unexpected keys [head.extra]" in message
    assert str(path) in message


def test_bad_metadata_values_are_checkpoint_errors(tmp_path):
    model = small_model()
    metadata = _metadata_of(tmp_path, model)
    encoder = json.loads(metadata["encoder"])
    encoder["num_heads"] = 3  # 128 is not divisible by 3
    metadata["encoder"] = json.dumps(encoder)
    path = tmp_path / "heads.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="divisible"):
        pf.load_model(path)
    metadata["format_version"] = "99"
    save_file({"x": torch.zeros(1)}, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="version"):
        pf.load_model(path)


def _metadata_of(tmp_path, model: Model) -> dict[str, str]:
    from safetensors import safe_open

    good = save_model(model, tmp_path / "good.safetensors")
    with safe_open(str(good), framework="pt") as handle:
        return dict(handle.metadata())


# --- timm-style encoder checkpoints ----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".bin"])
def test_load_encoder_reads_every_file_kind(tmp_path, suffix):
    encoder = small_model().encoder
    state = {k: v.contiguous() for k, v in encoder.state_dict().items()}
    path = tmp_path / f"encoder{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    loaded = pf.load_encoder(path)
    assert loaded.config == CONFIG
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_features(x), encoder.forward_features(x), rtol=0, atol=0)


def test_load_encoder_does_not_alias_the_callers_tensors():
    encoder = small_model().encoder
    state = encoder.state_dict()
    loaded = load_encoder(state)
    with torch.no_grad():
        loaded.pos_embed.add_(1.0)
    assert not torch.equal(loaded.pos_embed, encoder.pos_embed)


def test_classifier_keys_are_dropped_but_other_extras_are_listed():
    state = dict(small_model().encoder.state_dict())
    state["head.weight"], state["head.bias"] = torch.zeros(10, 128), torch.zeros(10)
    load_encoder(state)  # classifier keys are not part of forward_features
    state["blocks.0.attn.rel_pos"] = torch.zeros(7)
    del state["blocks.1.norm2.bias"]
    with pytest.raises(CheckpointError) as info:
        load_encoder(state)
    message = str(info.value)
    assert "1 missing keys [blocks.1.norm2.bias]" in message
    assert "1 unexpected keys [blocks.0.attn.rel_pos]" in message


def test_named_arch_deeper_than_the_checkpoint_lists_the_missing_blocks():
    config = ViTConfig(patch_size=16, embed_dim=384, depth=2, num_heads=6, mlp_hidden=1536)
    state = VisionTransformer(config).state_dict()
    with pytest.raises(CheckpointError) as info:
        load_encoder(state, arch="vit_small_patch16_224")
    message = str(info.value)
    assert "vit_small_patch16_224" in message and "120 missing keys" in message
    assert "blocks.10.attn.proj.bias" in message and "more" in message


def test_named_arch_of_another_width_and_explicit_config_shape_mismatch():
    state = small_model().encoder.state_dict()
    with pytest.raises(CheckpointError, match=r"width-128 ViT.*vit_base_patch16_224 is width 768"):
        load_encoder(state, arch="vit_base_patch16_224")
    wider = ViTConfig(**{**CONFIG.to_dict(), "pos_grid": (5, 5)})
    with pytest.raises(CheckpointError, match=r"shape mismatches \[pos_embed: checkpoint \(1, 16, 128\)"):
        load_encoder(state, arch=wider)
    with pytest.raises(ConfigError, match="unknown architecture"):
        load_encoder(state, arch="resnet50")


def test_unreadable_and_non_vit_checkpoints(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"definitely not safetensors")
    with pytest.raises(CheckpointError, match="cannot read checkpoint") as info:
        load_encoder(junk)
    assert info.value.path == junk
    with pytest.raises(CheckpointError, match="patch_embed"):
        load_encoder({"conv1.weight": torch.zeros(8, 3, 3, 3)})
    with pytest.raises(CheckpointError, match="not tensors"):
        read_state_dict({"a": torch.zeros(1), "b": "text"})
    with pytest.raises(CheckpointError, match="not found"):
        load_encoder(tmp_path / "missing.pth")
