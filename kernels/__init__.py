"""Triton kernels of PathoFlash, installed as ``pathoflash.kernels``."""

from .attention import AttentionBackendError, AttentionInputError, flash_attention

__all__ = ["AttentionBackendError", "AttentionInputError", "flash_attention"]
