"""Score a heatmap against ground-truth tumor polygons: pixel AUROC and Dice, inside tissue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U with tied ranks); NaN when one class is absent."""
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)
    u = ranks[labels].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    predicted, truth = np.asarray(predicted, dtype=bool), np.asarray(truth, dtype=bool)
    total = int(predicted.sum() + truth.sum())
    return 1.0 if total == 0 else float(2 * np.logical_and(predicted, truth).sum() / total)


def score_heatmap(
    heatmap: Any,
    truth_path: str | Path,
    *,
    slide_mpp: float,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Pixel AUROC and Dice of ``heatmap`` (``.probabilities`` and ``.mpp``) against a truth GeoJSON.

    Only heatmap pixels with a value (tissue that the model saw) and, when the truth file carries tissue
    polygons, inside the true tissue, are scored. ``slide_mpp`` is the level-0 resolution the polygons use.
    """
    from .sample_data import tissue_truth_mask, truth_mask

    probabilities = np.asarray(heatmap.probabilities, dtype=np.float32)
    downsample = float(heatmap.mpp) / slide_mpp
    tumor = truth_mask(truth_path, probabilities.shape, downsample)
    scored = np.isfinite(probabilities)
    tissue = tissue_truth_mask(truth_path, probabilities.shape, downsample)
    if tissue.any():
        scored &= tissue
    values, labels = probabilities[scored], tumor[scored]
    return {
        "auroc": auroc(values, labels),
        "dice": dice(values >= threshold, labels),
        "pixels": float(scored.sum()),
        "tumor_fraction": float(labels.mean()) if labels.size else float("nan"),
    }
