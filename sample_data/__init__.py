"""Synthetic H&E whole-slide images with ground truth, for demos, tests, training and benchmarks.

``write_sample_slide`` writes a pyramidal JPEG Aperio SVS (OpenSlide reads it as vendor ``aperio`` with
mpp and objective power) and ``<stem>.truth.geojson`` beside it (tumor polygons, QuPath style, level-0
px). ``read_truth`` / ``truth_mask`` / ``tissue_truth_mask`` turn that file into polygons or masks at any
downsample for scoring heatmaps.
"""

from __future__ import annotations

from .generate import SampleSlide, sample_layout, write_sample_slide
from .truth import (
    GENERATOR_VERSION,
    TUMOR_CLASS,
    TruthFileError,
    TruthPolygon,
    read_tissue,
    read_truth,
    tissue_truth_mask,
    truth_mask,
    truth_path_for,
)

__all__ = [
    "GENERATOR_VERSION",
    "TUMOR_CLASS",
    "SampleSlide",
    "TruthFileError",
    "TruthPolygon",
    "read_tissue",
    "read_truth",
    "sample_layout",
    "tissue_truth_mask",
    "truth_mask",
    "truth_path_for",
    "write_sample_slide",
]
