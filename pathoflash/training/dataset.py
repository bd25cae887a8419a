"""Region pixels and targets for training, batch by batch.

Pixels come from the slide at the model's mpp through :meth:`pathoflash.slide.Slide.read_at_mpp` (the reads
inference makes too). A slide whose image at that mpp has at most ``cache_pixels`` pixels is read once into
memory (synthetic training slides are), others are read region by region. Reads run on a thread pool one
batch ahead of the model; a batch's content depends only on its :class:`~.regions.RegionRef` list, so the
data are the same whatever the number of threads.

This module does not import torch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .regions import RegionRef, SlideLabels
from .slides import AnnotatedSlide

log = logging.getLogger(__name__)

WHITE = 255
BACKGROUND_WEIGHT = 0.1
"""Loss weight of a patch without tissue (a tissue patch weighs 1)."""
_CHUNK = 2048


@dataclass(frozen=True, slots=True, eq=False)
class RegionBatch:
    """``images`` (B, R, R, 3) uint8 RGB; ``targets`` and ``weights`` (B, R/p, R/p) float32 (tumor fraction
    and loss weight of every patch); ``gain``/``offset`` (B, 3) float32 colour augmentation."""

    images: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    gain: np.ndarray
    offset: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])


class SlidePixels:
    """Pixels of one slide at ``mpp``: ``read(x, y, size)`` → (size, size, 3) uint8, white beyond the slide."""

    def __init__(self, slide: AnnotatedSlide, labels: SlideLabels, *, cache_pixels: int) -> None:
        from ..slide import open_slide

        self.slide = slide
        self.width, self.height, self.mpp = labels.width, labels.height, labels.mpp
        self._opened = open_slide(slide.path, mpp=slide.slide_mpp)
        self._scale = self.mpp / float(self._opened.mpp[0])  # level-0 px per px at mpp
        self._image: np.ndarray | None = None
        self._lock = threading.Lock()
        self.cached = self.width * self.height <= cache_pixels

    def _read_at(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        location = (round(x * self._scale), round(y * self._scale))
        return self._opened.read_at_mpp(location, (w, h), self.mpp)

    def load(self) -> None:
        """Read the whole slide into memory (only when ``cached``); safe to call from several threads."""
        with self._lock:
            if self._image is not None or not self.cached:
                return
            image = np.empty((self.height, self.width, 3), dtype=np.uint8)
            for y in range(0, self.height, _CHUNK):
                for x in range(0, self.width, _CHUNK):
                    w, h = min(_CHUNK, self.width - x), min(_CHUNK, self.height - y)
                    image[y : y + h, x : x + w] = self._read_at(x, y, w, h)
            self._image = image
            self._opened.close()

    def read(self, x: int, y: int, size: int) -> np.ndarray:
        w, h = max(0, min(size, self.width - x)), max(0, min(size, self.height - y))
        if self.cached:
            self.load()
            assert self._image is not None
            inside = self._image[y : y + h, x : x + w]
        else:
            inside = self._read_at(x, y, w, h) if w and h else np.empty((h, w, 3), np.uint8)
        if (w, h) == (size, size):
            return np.ascontiguousarray(inside)
        out = np.full((size, size, 3), WHITE, dtype=np.uint8)
        out[:h, :w] = inside
        return out

    def close(self) -> None:
        self._opened.close()


class RegionLoader:
    """Batches of regions from ``slides`` (one :class:`SlidePixels` and :class:`SlideLabels` per slide)."""

    def __init__(
        self,
        pixels: Sequence[SlidePixels],
        labels: Sequence[SlideLabels],
        *,
        patch_size: int,
        workers: int = 4,
    ) -> None:
        if len(pixels) != len(labels):
            raise ValueError("one SlidePixels per SlideLabels")
        self.pixels = tuple(pixels)
        self.labels = tuple(labels)
        self.patch_size = patch_size
        self.workers = max(1, workers)

    def load_region(self, ref: RegionRef) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image, tumor fraction, weight) of one region, turned and mirrored as ``ref`` says."""
        image = self.pixels[ref.slide].read(ref.x, ref.y, ref.size)
        tumor, tissue = self.labels[ref.slide].patch_targets(ref.x, ref.y, ref.size, self.patch_size)
        weight = BACKGROUND_WEIGHT + (1.0 - BACKGROUND_WEIGHT) * tissue
        arrays = []
        for array in (image, tumor, weight):
            turned = np.rot90(array, ref.rotation, axes=(0, 1))
            arrays.append(np.ascontiguousarray(turned[:, ::-1] if ref.flip else turned))
        return arrays[0], arrays[1], arrays[2]

    def _batch(self, refs: Sequence[RegionRef], pool: ThreadPoolExecutor) -> RegionBatch:
        parts = list(pool.map(self.load_region, refs))
        return RegionBatch(
            images=np.stack([p[0] for p in parts]),
            targets=np.stack([p[1] for p in parts]).astype(np.float32, copy=False),
            weights=np.stack([p[2] for p in parts]).astype(np.float32, copy=False),
            gain=np.asarray([r.gain for r in refs], dtype=np.float32),
            offset=np.asarray([r.offset for r in refs], dtype=np.float32),
        )

    def batches(self, refs: Sequence[RegionRef], batch_size: int) -> Iterator[RegionBatch]:
        """The regions ``refs`` in order, ``batch_size`` at a time; the next batch is read while the caller
        works on this one."""
        groups = [refs[i : i + batch_size] for i in range(0, len(refs), batch_size)]
        if not groups:
            return
        with (
            ThreadPoolExecutor(self.workers, thread_name_prefix="pathoflash-train-read") as readers,
            ThreadPoolExecutor(1, thread_name_prefix="pathoflash-train-batch") as batcher,
        ):
            pending: Future[RegionBatch] = batcher.submit(self._batch, groups[0], readers)
            for index in range(len(groups)):
                batch = pending.result()
                if index + 1 < len(groups):
                    pending = batcher.submit(self._batch, groups[index + 1], readers)
                yield batch

    def preload(self) -> None:
        """Read every cached slide into memory, in parallel."""
        cached = [p for p in self.pixels if p.cached]
        if not cached:
            return
        with ThreadPoolExecutor(self.workers, thread_name_prefix="pathoflash-train-load") as pool:
            list(pool.map(SlidePixels.load, cached))
        log.info("%d slide(s) held in memory at the model's resolution", len(cached))

    def close(self) -> None:
        for p in self.pixels:
            p.close()


__all__ = ["BACKGROUND_WEIGHT", "RegionBatch", "RegionLoader", "SlidePixels"]
