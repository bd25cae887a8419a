"""Triton kernels of PathoFlash, installed as ``pathoflash.kernels``."""

from . import attention_op  # noqa: F401  (registers torch.ops.pathoflash.* for torch.compile)
from .attention import AttentionBackendError, AttentionInputError, flash_attention

__all__ = ["AttentionBackendError", "AttentionInputError", "flash_attention"]
