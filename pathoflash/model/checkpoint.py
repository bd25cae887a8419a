"""PathoFlash's model file: one ``.safetensors`` with encoder and head weights and JSON metadata.

Tensors are named ``encoder.<timm name>`` and ``head.<name>``. The safetensors header metadata (string → string)
holds:

==================  ==========================================================================
``format``          ``"pathoflash.model"``
``format_version``  ``"1"``
``encoder``         JSON of :class:`~pathoflash.model.config.ViTConfig`
``head``            JSON of :class:`~pathoflash.model.head.HeadConfig`
``preprocessing``   JSON of :class:`~pathoflash.model.predictor.Preprocessing` (mpp, mean, std, region)
``model``           JSON ``{"name", "id", "description"}``
``training``        JSON of free training facts (data, seeds, command, metrics)
==================  ==========================================================================
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from .attention import AttentionBackend
from .config import ViTConfig
from .head import DenseHead, HeadConfig
from .predictor import Model, ModelInfo, Preprocessing
from .timm_compat import check_keys, materialize
from .vit import VisionTransformer

_log = logging.getLogger(__name__)

FORMAT = "pathoflash.model"
FORMAT_VERSION = "1"
DEFAULT_MODEL_DIR = Path(__file__).with_name("default")
DEFAULT_MODEL_FILE = DEFAULT_MODEL_DIR / "model.safetensors"


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over the model's tensors (names, dtypes, shapes, bytes) in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def save_model(model: Model, path: str | Path, *, dtype: torch.dtype | None = None) -> Path:
    """Write ``model`` to ``path`` (``.safetensors``) atomically; returns the path.

    ``dtype`` (e.g. ``torch.float16``) stores floating-point weights at lower precision; they are loaded back
    into float32. A model whose ``info.id`` is empty gets ``<name>-<12 hex digits of the weights' SHA-256>``.
    """
    from safetensors.torch import save_file

    target = Path(path)
    if target.suffix != ".safetensors":
        raise CheckpointError("model files must end in .safetensors", path=target)
    info = model.info
    if not info.id:
        info = ModelInfo(
            info.name, f"{info.name}-{weights_digest(model)[:12]}", info.description, info.training
        )
    tensors = {}
    for name, tensor in model.state_dict().items():
        data = tensor.detach().cpu()
        if dtype is not None and data.is_floating_point():
            data = data.to(dtype)
        tensors[name] = data.contiguous()
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "encoder": json.dumps(model.encoder.config.to_dict()),
        "head": json.dumps(model.head.config.to_dict()),
        "preprocessing": json.dumps(model.preprocessing.to_dict()),
        "model": json.dumps({"name": info.name, "id": info.id, "description": info.description}),
        "training": json.dumps(info.training),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        save_file(tensors, str(partial), metadata=metadata)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    _log.info("saved model %s to %s", info.id, target)
    return target


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of a PathoFlash model file (raises :class:`CheckpointError` for other files)."""
    from safetensors import safe_open

    source = Path(path)
    if not source.is_file():
        raise CheckpointError("model file not found", path=source)
    if source.suffix != ".safetensors":
        raise CheckpointError(
            "not a PathoFlash model file (those are .safetensors); for a timm encoder state dict use "
            "pf.load_encoder(path) and pf.Model.from_encoder(...)",
            path=source,
        )
    try:
        with safe_open(str(source), framework="pt") as handle:
            raw = handle.metadata() or {}
    except Exception as exc:  # safetensors raises several error types for a damaged header
        raise CheckpointError(f"cannot read safetensors header: {exc}", path=source) from exc
    if raw.get("format") != FORMAT:
        raise CheckpointError(
            "no PathoFlash metadata in this safetensors file (a bare encoder state dict?); load encoders with "
            "pf.load_encoder(path)",
            path=source,
        )
    if raw.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"model format version {raw.get('format_version')!r} is not supported (this PathoFlash reads "
            f"{FORMAT_VERSION!r})",
            path=source,
        )
    decoded: dict[str, Any] = {}
    for key in ("encoder", "head", "preprocessing", "model", "training"):
        if key not in raw:
            raise CheckpointError(f"model metadata lacks {key!r}", path=source)
        try:
            decoded[key] = json.loads(raw[key])
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"model metadata {key!r} is not valid JSON: {exc}", path=source) from exc
    return decoded


def load_model(path: str | Path | None = None, *, backend: AttentionBackend = "auto") -> Model:
    """Load a PathoFlash model file (CPU, float32, eval mode); ``None`` loads the bundled default model."""
    from safetensors.torch import load_file

    source = DEFAULT_MODEL_FILE if path is None else Path(path)
    if path is None and not source.is_file():
        raise CheckpointError(
            "the bundled default model is not installed in this build; pass a model file "
            "(pf.load_model('model.safetensors')) or train one with `pathoflash train`",
            path=source,
        )
    meta = read_metadata(source)
    try:
        with torch.device("meta"):  # the weights come from the file
            encoder = VisionTransformer(ViTConfig.from_dict(meta["encoder"]), backend=backend)
            head = DenseHead(HeadConfig.from_dict(meta["head"]))
        info = ModelInfo.from_dict({**meta["model"], "training": meta["training"]})
        model = Model(encoder, head, Preprocessing.from_dict(meta["preprocessing"]), info)
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"invalid model metadata: {exc}", path=source) from exc
    state = load_file(str(source), device="cpu")
    try:
        check_keys(model, state, what=f"its metadata ({info.name})")
    except CheckpointError as exc:
        raise CheckpointError(exc.message, path=source) from exc
    model.load_state_dict(materialize(state, copy=False), strict=True, assign=True)
    _log.info("loaded model %s from %s", info.id, source)
    return model.eval()


__all__ = [
    "DEFAULT_MODEL_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "Model",
    "ModelInfo",
    "Preprocessing",
    "load_model",
    "read_metadata",
    "save_model",
    "weights_digest",
]
