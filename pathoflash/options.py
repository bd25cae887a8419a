"""Run options shared by the API, the CLI and the Dask workflows (one frozen value, checked once)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How slides become heatmaps.

    Attributes:
        mpp: target resolution of the tiles and the model input, µm/px.
        tile_size: tile side in pixels (one Zarr chunk per tile).
        region: side of one model region in pixels (a 1024-px region of 16-px patches is 4,096 tokens);
            ``None`` takes the model's own.
        margin: context around each region's kept centre, in pixels (no seams); ``None``: min(128, region/4).
        batch_size: regions per model call.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``/``cuda:N``.
        threshold: tumor probability at which GeoJSON annotations are drawn.
        workers: tiling threads per slide, each reading and writing tiles (``None``: sized to the machine).
        strict: fail a slide with unreadable tiles instead of skipping them.
        model: model checkpoint path; ``None`` is the bundled default model.
        geojson_tiles: also write one QuPath ``tile`` object per heatmap pixel with its probability
            (for QuPath's measurement maps; large: one feature per 16-px patch of tissue).
    """

    mpp: float = 0.5
    tile_size: int = 256
    region: int | None = None
    margin: int | None = None
    batch_size: int = 4
    device: str = "auto"
    threshold: float = 0.5
    workers: int | None = None
    strict: bool = False
    model: str | None = None
    geojson_tiles: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mpp) and 0.05 <= self.mpp <= 50):
            raise ConfigError(f"--mpp {self.mpp} is outside 0.05–50 µm/px")
        if not 32 <= self.tile_size <= 4096:
            raise ConfigError(f"--tile-size {self.tile_size} is outside 32–4096 px")
        if self.region is not None and not 64 <= self.region <= 8192:
            raise ConfigError(f"--region {self.region} is outside 64–8192 px")
        if self.margin is not None and self.margin < 0:
            raise ConfigError(f"margin {self.margin} must be ≥ 0")
        if self.batch_size < 1:
            raise ConfigError(f"batch size {self.batch_size} must be ≥ 1")
        if not (self.device in DEVICES or self.device.startswith("cuda:")):
            raise ConfigError(f"--device {self.device!r}: use auto, cpu, cuda or cuda:N")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"--threshold {self.threshold} must lie strictly between 0 and 1")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers {self.workers} must be ≥ 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
