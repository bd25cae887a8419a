"""How good a model is on held-out annotated slides: pixel AUROC and Dice inside tissue.

Each slide goes through the inference path every run uses (:func:`pathoflash.inference.infer_heatmap` over
the slide read at the model's mpp, regions without detected tissue skipped), and the heatmap is scored
against the annotations at heatmap resolution (a heatmap pixel is tumor when its centre lies in a ``Tumor``
polygon), only where there is tissue: the annotation file's tissue outline when it has one (synthetic ground
truth does), else the detected tissue.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluate import auroc, dice
from .slides import AnnotatedSlide

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SlideScore:
    """One held-out slide's scores; ``pixels``: heatmap pixels scored, ``seconds``: inference time."""

    slide: str
    seed: int | None
    auroc: float
    dice: float
    pixels: int
    tumor_fraction: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("auroc", "dice", "tumor_fraction"):
            out[key] = None if math.isnan(out[key]) else round(out[key], 5)
        out["seconds"] = round(self.seconds, 2)
        return out


@dataclass(frozen=True, slots=True)
class EvaluationReport:
    """Scores of every held-out slide at probability ``threshold`` (for Dice)."""

    slides: tuple[SlideScore, ...]
    threshold: float = 0.5

    def _values(self, key: str) -> list[float]:
        return [v for v in (getattr(s, key) for s in self.slides) if not math.isnan(v)]

    @property
    def mean_auroc(self) -> float:
        values = self._values("auroc")
        return float(np.mean(values)) if values else float("nan")

    @property
    def min_auroc(self) -> float:
        values = self._values("auroc")
        return float(np.min(values)) if values else float("nan")

    @property
    def mean_dice(self) -> float:
        values = self._values("dice")
        return float(np.mean(values)) if values else float("nan")

    def to_dict(self) -> dict[str, Any]:
        def number(value: float) -> float | None:
            return None if math.isnan(value) else round(value, 5)

        return {
            "threshold": self.threshold,
            "mean_auroc": number(self.mean_auroc),
            "min_auroc": number(self.min_auroc),
            "mean_dice": number(self.mean_dice),
            "slides": [s.to_dict() for s in self.slides],
        }


class SlideAtMpp:
    """A region source (``read_region(x, y, w, h)`` in px at ``mpp``) over an open slide."""

    def __init__(self, slide: Any, mpp: float) -> None:
        self.slide = slide
        self.mpp = mpp
        self.scale = mpp / float(slide.mpp[0])

    def read_region(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        location = (round(x * self.scale), round(y * self.scale))
        result: np.ndarray = self.slide.read_at_mpp(location, (w, h), self.mpp)
        return result


def slide_heatmap(
    model: Any,
    slide: AnnotatedSlide,
    *,
    device: str = "auto",
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, float]:
    """``(probabilities, slide_mpp)``: the model's heatmap of ``slide`` (NaN where regions had no tissue)."""
    from ..inference import infer_heatmap, tissue_skip
    from ..slide import open_slide
    from ..tissue import detect_tissue
    from .regions import slide_size_at

    with open_slide(slide.path, mpp=slide.slide_mpp) as opened:
        slide_mpp = float(opened.mpp[0])
        width, height = slide_size_at(opened.dimensions, slide_mpp, model.mpp)
        tissue = detect_tissue(opened)
        heatmap = infer_heatmap(
            model,
            SlideAtMpp(opened, model.mpp),
            width=width,
            height=height,
            batch_size=batch_size,
            device=device,
            skip=tissue_skip(tissue.mask, width=width, height=height),
            progress=progress,
            fill=float("nan"),
        )
    return heatmap, slide_mpp


def score_probabilities(
    probabilities: np.ndarray,
    annotations: Path,
    *,
    heatmap_mpp: float,
    slide_mpp: float,
    threshold: float = 0.5,
) -> tuple[float, float, int, float]:
    """``(auroc, dice, pixels, tumor_fraction)`` of a heatmap whose pixels are ``heatmap_mpp`` µm wide.

    Scored: finite heatmap pixels, within the annotation file's tissue outline when it has one.
    """
    from ..sample_data.truth import TruthFileError, rasterize_polygons, read_tissue, read_truth

    values = np.asarray(probabilities, dtype=np.float32)
    downsample = heatmap_mpp / slide_mpp
    tumor = rasterize_polygons(read_truth(annotations), values.shape, downsample)
    scored = np.isfinite(values)
    # Without an outline in the file, the detected tissue (the finite pixels) is what is scored.
    with contextlib.suppress(TruthFileError):
        scored &= rasterize_polygons(read_tissue(annotations), values.shape, downsample)
    kept, labels = values[scored], tumor[scored]
    fraction = float(labels.mean()) if labels.size else float("nan")
    return auroc(kept, labels), dice(kept >= threshold, labels), int(scored.sum()), fraction


def evaluate_slides(
    model: Any,
    slides: Sequence[AnnotatedSlide],
    *,
    device: str = "auto",
    batch_size: int = 4,
    threshold: float = 0.5,
) -> EvaluationReport:
    """Score ``model`` on every slide of ``slides`` (see the module docstring)."""
    scores = []
    for slide in slides:
        started = time.perf_counter()
        probabilities, slide_mpp = slide_heatmap(model, slide, device=device, batch_size=batch_size)
        seconds = time.perf_counter() - started
        value, overlap, pixels, fraction = score_probabilities(
            probabilities,
            slide.annotations,
            heatmap_mpp=model.mpp * model.patch_size,
            slide_mpp=slide_mpp,
            threshold=threshold,
        )
        score = SlideScore(slide.name, slide.seed, value, overlap, pixels, fraction, seconds)
        log.info("%s: AUROC %.4f, Dice %.4f (%d px, %.1f s)", slide.name, value, overlap, pixels, seconds)
        scores.append(score)
    return EvaluationReport(tuple(scores), threshold)


def write_report(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON to ``path`` (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    partial.replace(path)
    return path


__all__ = [
    "EvaluationReport",
    "SlideAtMpp",
    "SlideScore",
    "evaluate_slides",
    "score_probabilities",
    "slide_heatmap",
    "write_report",
]
