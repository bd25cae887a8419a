"""Region inference: a large image → a tumor heatmap at one value per patch, without seams.

The image (``width`` × ``height`` px at the model's mpp) is covered by regions of ``region`` px that overlap by
``margin`` px on every side; of each region only the centre (its *core*) is kept, so every heatmap value comes
from a region in which that patch had at least ``margin`` px of context on each side, except where the image
itself ends. Near the right/bottom edge the last region is shifted back inside the image (its core grows)
rather than hanging over it. Every region has the full ``region`` size, so they batch and the model always sees the
token grid it was trained on (position embeddings resampled to another grid would shift what a position
means): an image smaller than a region on an axis, and the partial last patch, are padded white.

The pieces, for a pipeline that drives inference itself::

    plan = plan_regions(width, height, patch_size=model.patch_size)
    for region, core in predict_regions(model, source, plan):   # or: read_region + run_batch yourself
        heatmap[region.out_slices] = core

or all at once: ``heatmap = infer_heatmap(model, source, width=..., height=...)``.
A *source* is anything with ``read_region(x, y, w, h) -> (h, w, 3) uint8`` in pixels at the model's mpp.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .errors import ConfigError

_log = logging.getLogger(__name__)

WHITE = 255
DEFAULT_REGION = 1024
DEFAULT_MARGIN = 128
_READ_AHEAD = 2  # batches read ahead of the model, each on its own thread


class RegionSource(Protocol):
    def read_region(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """(h, w, 3) uint8 RGB of the image at pixel (x, y); called only inside the image, from up to two
        threads at once."""
        ...


SkipRule = Callable[[int, int, int, int], bool]
"""``skip(x, y, w, h)``: True to leave out the region whose core is that image pixel rectangle."""


class TokenPredictor(Protocol):
    """What inference needs of a model (``pathoflash.model.Model`` is one)."""

    @property
    def patch_size(self) -> int: ...

    def predict_tokens(self, images: np.ndarray) -> object:
        """(n, H, W, 3) uint8 → (n, H/p, W/p) probabilities (torch tensor or numpy array)."""
        ...


@dataclass(frozen=True, slots=True)
class Region:
    """One model input: pixels [x, x + width) × [y, y + height) of the image, of which the heatmap keeps the
    token rows ``rows`` and columns ``cols`` (half-open, in heatmap coordinates)."""

    x: int
    y: int
    width: int
    height: int
    rows: tuple[int, int]
    cols: tuple[int, int]
    patch_size: int

    @property
    def out_slices(self) -> tuple[slice, slice]:
        """Where the core goes in the heatmap."""
        return slice(*self.rows), slice(*self.cols)

    @property
    def core_slices(self) -> tuple[slice, slice]:
        """Where the core lies in this region's own (height/p, width/p) token grid."""
        top, left = self.y // self.patch_size, self.x // self.patch_size
        return (
            slice(self.rows[0] - top, self.rows[1] - top),
            slice(self.cols[0] - left, self.cols[1] - left),
        )

    @property
    def core_box(self) -> tuple[int, int, int, int]:
        """The core as an image pixel rectangle ``(x, y, w, h)`` (may pass the image edge by < one patch)."""
        p = self.patch_size
        return (
            self.cols[0] * p,
            self.rows[0] * p,
            (self.cols[1] - self.cols[0]) * p,
            (self.rows[1] - self.rows[0]) * p,
        )

    def core(self, tokens: np.ndarray) -> np.ndarray:
        """The kept part of this region's (height/p, width/p) model output."""
        return tokens[self.core_slices]


@dataclass(frozen=True, slots=True)
class RegionPlan:
    """Regions covering a ``width`` × ``height`` px image; the heatmap is ``shape`` = (rows, cols) tokens."""

    width: int
    height: int
    patch_size: int
    region_width: int
    region_height: int
    margin: int
    regions: tuple[Region, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return math.ceil(self.height / self.patch_size), math.ceil(self.width / self.patch_size)

    def __len__(self) -> int:
        return len(self.regions)

    def __iter__(self) -> Iterator[Region]:
        return iter(self.regions)


def _axis(grid: int, size: int, margin: int) -> list[tuple[int, int, int]]:
    """(origin, core start, core end) in tokens along one axis of ``grid`` tokens, regions of ``size``."""
    if grid <= size:
        return [(0, 0, grid)]
    spans = [(0, 0, size - margin)]
    step = size - 2 * margin
    start = size - margin
    while True:
        origin = start - margin
        if origin + size >= grid:  # the last region: shift it back inside, its core runs to the edge
            spans.append((grid - size, start, grid))
            return spans
        spans.append((origin, start, start + step))
        start += step


def plan_regions(
    width: int,
    height: int,
    *,
    patch_size: int,
    region: int = DEFAULT_REGION,
    margin: int | None = None,
) -> RegionPlan:
    """Cover a ``width`` × ``height`` px image with overlapping regions (see the module docstring).

    ``margin`` defaults to ``min(128, region // 4)``. ``region`` and ``margin`` are rounded down to multiples
    of ``patch_size`` (1024 px with 14-px patches becomes 1022); the rounded region must exceed twice the
    rounded margin.
    """
    margin = default_margin(region) if margin is None else margin
    if width < 1 or height < 1:
        raise ConfigError(f"image size must be positive, got {width}×{height}")
    if patch_size < 1:
        raise ConfigError(f"patch size must be positive, got {patch_size}")
    size_t, margin_t = region // patch_size, max(margin, 0) // patch_size
    if size_t < 1 or size_t <= 2 * margin_t:
        raise ConfigError(
            f"region {region} px must be larger than twice the margin {margin} px "
            f"(both in whole {patch_size}-px patches)"
        )
    if (size_t * patch_size, margin_t * patch_size) != (region, margin):
        _log.debug("region/margin rounded to %d/%d px", size_t * patch_size, margin_t * patch_size)
    grid_h, grid_w = math.ceil(height / patch_size), math.ceil(width / patch_size)
    rows, cols = _axis(grid_h, size_t, margin_t), _axis(grid_w, size_t, margin_t)
    region_h = region_w = size_t * patch_size
    regions = tuple(
        Region(
            x=col_origin * patch_size,
            y=row_origin * patch_size,
            width=region_w,
            height=region_h,
            rows=(r0, r1),
            cols=(c0, c1),
            patch_size=patch_size,
        )
        for row_origin, r0, r1 in rows
        for col_origin, c0, c1 in cols
    )
    return RegionPlan(width, height, patch_size, region_w, region_h, margin_t * patch_size, regions)


def default_margin(region: int) -> int:
    """The margin used when none is given: 128 px, but at most a quarter of the region."""
    return min(DEFAULT_MARGIN, region // 4)


def read_region(source: RegionSource, region: Region, *, width: int, height: int) -> np.ndarray:
    """The region's (height, width, 3) uint8 pixels; the part beyond the image is white."""
    w = min(region.width, width - region.x)
    h = min(region.height, height - region.y)
    pixels = np.asarray(source.read_region(region.x, region.y, w, h))
    if pixels.shape != (h, w, 3) or pixels.dtype != np.uint8:
        raise ValueError(
            f"region source returned {pixels.shape} {pixels.dtype} for a {w}×{h} read; expected ({h}, {w}, 3) uint8"
        )
    if (w, h) == (region.width, region.height):
        return pixels
    out = np.full((region.height, region.width, 3), WHITE, dtype=np.uint8)
    out[:h, :w] = pixels
    return out


def run_batch(model: TokenPredictor, images: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) uint8 regions → (n, H/p, W/p) float32 probabilities on the CPU."""
    result = model.predict_tokens(images)
    if hasattr(result, "detach"):  # a torch tensor
        result = result.detach().float().cpu().numpy()
    return np.asarray(result, dtype=np.float32)


def _batches(regions: Sequence[Region], batch_size: int) -> Iterator[list[Region]]:
    for start in range(0, len(regions), batch_size):
        yield list(regions[start : start + batch_size])


def predict_regions(
    model: TokenPredictor,
    source: RegionSource,
    plan: RegionPlan,
    *,
    batch_size: int = 4,
    skip: SkipRule | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[Region, np.ndarray]]:
    """Yield ``(region, core probabilities)`` for every region of ``plan`` not skipped, in plan order.

    Reads run one batch ahead in a background thread, so decoding overlaps the model. ``skip(x, y, w, h)``
    True for a region's ``core_box`` leaves that region out (e.g. no tissue in its core). ``progress(done, total)`` is called after every
    batch, counting skipped regions as done.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be ≥ 1, got {batch_size}")
    todo = [r for r in plan.regions if skip is None or not skip(*r.core_box)]
    total, skipped = len(plan.regions), len(plan.regions) - len(todo)
    if progress is not None and skipped:
        progress(skipped, total)

    def read(batch: list[Region]) -> np.ndarray:
        return np.stack([read_region(source, r, width=plan.width, height=plan.height) for r in batch])

    batches = list(_batches(todo, batch_size))
    done = skipped
    # Two batches are read ahead, on two threads: reading a region (chunk files, LZ4, copies) costs more
    # than the model's share of it for a small model on a GPU, and much of it runs without the GIL.
    with ThreadPoolExecutor(max_workers=_READ_AHEAD, thread_name_prefix="pathoflash-read") as pool:
        pending: collections.deque[Future[np.ndarray]] = collections.deque(
            pool.submit(read, batch) for batch in batches[:_READ_AHEAD]
        )
        for index, batch in enumerate(batches):
            images = pending.popleft().result()
            if index + _READ_AHEAD < len(batches):
                pending.append(pool.submit(read, batches[index + _READ_AHEAD]))
            probabilities = run_batch(model, images)
            for region, tokens in zip(batch, probabilities, strict=True):
                yield region, region.core(tokens)
            done += len(batch)
            if progress is not None:
                progress(done, total)


def tissue_skip(tissue: np.ndarray, *, width: int, height: int) -> SkipRule:
    """A ``skip`` for :func:`predict_regions`: True for regions whose core holds no tissue.

    ``tissue`` is a boolean mask over the whole ``width`` × ``height`` px image at any resolution.
    """
    mask = np.asarray(tissue, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"tissue mask must be 2-d, got shape {mask.shape}")
    scale_y, scale_x = mask.shape[0] / height, mask.shape[1] / width

    def skip(x: int, y: int, w: int, h: int) -> bool:
        y0, y1 = math.floor(y * scale_y), math.ceil((y + h) * scale_y)
        x0, x1 = math.floor(x * scale_x), math.ceil((x + w) * scale_x)
        return not mask[y0:y1, x0:x1].any()

    return skip


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; other names pass through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def infer_heatmap(
    model: TokenPredictor,
    source: RegionSource,
    *,
    width: int,
    height: int,
    region: int | None = None,
    margin: int | None = None,
    batch_size: int = 4,
    device: str = "auto",
    skip: SkipRule | None = None,
    progress: Callable[[int, int], None] | None = None,
    fill: float = 0.0,
) -> np.ndarray:
    """Tumor probabilities of a ``width`` × ``height`` px image: (ceil(height/p), ceil(width/p)) float32.

    ``region`` defaults to the model's ``preprocessing.region`` (else 1024 px), ``margin`` to
    ``min(128, region // 4)`` px. A torch model is moved to
    ``device`` (``auto``: CUDA if available) and put in eval mode; on CUDA it runs under bfloat16 autocast.
    Skipped regions' cores hold ``fill``.
    """
    preprocessing = getattr(model, "preprocessing", None)
    size = region if region is not None else getattr(preprocessing, "region", DEFAULT_REGION)
    plan = plan_regions(width, height, patch_size=model.patch_size, region=size, margin=margin)
    to = getattr(model, "to", None)
    if callable(to):
        to(resolve_device(device))
        model.eval()  # type: ignore[attr-defined]
    heatmap = np.full(plan.shape, fill, dtype=np.float32)
    for piece, core in predict_regions(
        model, source, plan, batch_size=batch_size, skip=skip, progress=progress
    ):
        heatmap[piece.out_slices] = core
    _log.info(
        "heatmap %s from %d regions of %d×%d px", plan.shape, len(plan), plan.region_width, plan.region_height
    )
    return heatmap


__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_REGION",
    "Region",
    "RegionPlan",
    "RegionSource",
    "SkipRule",
    "TokenPredictor",
    "default_margin",
    "infer_heatmap",
    "plan_regions",
    "predict_regions",
    "read_region",
    "resolve_device",
    "run_batch",
    "tissue_skip",
]
