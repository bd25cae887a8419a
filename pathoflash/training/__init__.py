"""Training PathoFlash models on slides with tumor annotations (or on generated synthetic slides).

``train(TrainOptions(...)) -> TrainResult`` runs everything (``pathoflash train`` on the command line):

- :mod:`.slides`: annotated slides (slide + QuPath GeoJSON) found on disk, or generated synthetic ones;
- :mod:`.regions`: per-patch targets at the model's resolution and class-balanced region sampling;
- :mod:`.dataset`: region pixels and targets, batch by batch, read ahead on threads;
- :mod:`.build`: the model to train (fresh ViT or timm encoder + dense head);
- :mod:`.loop`: the optimisation, checkpoints after every epoch;
- :mod:`.report`: pixel AUROC and Dice on held-out slides through the inference path.

Importing this package does not import torch; ``train`` and the modules that need torch load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .options import ArchOptions, SyntheticSet, TrainOptions

if TYPE_CHECKING:  # pragma: no cover
    from .loop import TrainProgress, TrainResult, train
    from .report import EvaluationReport, SlideScore, evaluate_slides
    from .slides import AnnotatedSlide, find_annotated_slides, generate_synthetic

_LAZY = {
    "train": "loop",
    "TrainResult": "loop",
    "TrainProgress": "loop",
    "EvaluationReport": "report",
    "SlideScore": "report",
    "evaluate_slides": "report",
    "AnnotatedSlide": "slides",
    "find_annotated_slides": "slides",
    "generate_synthetic": "slides",
}

__all__ = [
    "AnnotatedSlide",
    "ArchOptions",
    "EvaluationReport",
    "SlideScore",
    "SyntheticSet",
    "TrainOptions",
    "TrainProgress",
    "TrainResult",
    "evaluate_slides",
    "find_annotated_slides",
    "generate_synthetic",
    "train",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pathoflash.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
