"""PathoFlash: whole-slide images in, tumor heatmaps out.

The public API is imported lazily so that ``pathoflash info`` / ``tile`` start without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "open_slide": "pathoflash.slide",
    "Slide": "pathoflash.slide",
    "SlideInfo": "pathoflash.slide",
    "tile_slide": "pathoflash.tiling",
    "TileGrid": "pathoflash.tiling",
    "TileStore": "pathoflash.store",
    "detect_tissue": "pathoflash.tissue",
    "TissueMask": "pathoflash.tissue",
    "load_model": "pathoflash.model.checkpoint",
    "load_encoder": "pathoflash.model.timm_compat",
    "Model": "pathoflash.model.checkpoint",
    "predict": "pathoflash.api",
    "Heatmap": "pathoflash.heatmap",
    "PathoflashError": "pathoflash.errors",
    "SlideError": "pathoflash.errors",
    "SlideNotFoundError": "pathoflash.errors",
    "SlideReadError": "pathoflash.errors",
    "UnsupportedSlideError": "pathoflash.errors",
    "MissingMppError": "pathoflash.errors",
    "TileReadError": "pathoflash.errors",
    "StoreError": "pathoflash.errors",
    "CheckpointError": "pathoflash.errors",
    "ConfigError": "pathoflash.errors",
}

__all__ = [
    "CheckpointError",
    "ConfigError",
    "Heatmap",
    "MissingMppError",
    "Model",
    "PathoflashError",
    "Slide",
    "SlideError",
    "SlideInfo",
    "SlideNotFoundError",
    "SlideReadError",
    "StoreError",
    "TileGrid",
    "TileReadError",
    "TileStore",
    "TissueMask",
    "UnsupportedSlideError",
    "__version__",
    "detect_tissue",
    "load_encoder",
    "load_model",
    "open_slide",
    "predict",
    "tile_slide",
]

if TYPE_CHECKING:  # pragma: no cover
    from .errors import (
        CheckpointError,
        ConfigError,
        MissingMppError,
        PathoflashError,
        SlideError,
        SlideNotFoundError,
        SlideReadError,
        StoreError,
        TileReadError,
        UnsupportedSlideError,
    )
    from .slide import Slide, SlideInfo, open_slide


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pathoflash' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
