"""Slides with tumor annotations: found beside the slides, in an annotations folder, or generated.

An annotated slide is a slide file plus a QuPath-style GeoJSON whose ``Tumor`` polygons are in level-0 pixels
(what QuPath exports, what ``pathoflash run`` writes as ``heatmap.geojson`` and what the synthetic-slide
generator writes as ``<stem>.truth.geojson``). For ``slide.svs`` the annotation file is the first of
``slide.truth.geojson`` and ``slide.geojson`` found beside the slide, then in the annotations folder.

This module does not import torch.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, SlideNotFoundError
from .options import SyntheticSet

log = logging.getLogger(__name__)

ANNOTATION_SUFFIXES = (".truth.geojson", ".geojson")


@dataclass(frozen=True, slots=True)
class AnnotatedSlide:
    """A slide file and its tumor annotations; ``slide_mpp`` overrides the slide's resolution metadata,
    ``seed`` is set for generated slides."""

    path: Path
    annotations: Path
    slide_mpp: float | None = None
    seed: int | None = None

    @property
    def name(self) -> str:
        return self.path.stem

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"slide": str(self.path), "annotations": str(self.annotations)}
        if self.seed is not None:
            out["seed"] = self.seed
        return out


def annotation_for(slide: Path, annotations: Path | None = None) -> Path | None:
    """The annotation file of ``slide`` (see the module docstring), or ``None``."""
    folders = [slide.parent] + ([annotations] if annotations is not None else [])
    for folder in folders:
        for suffix in ANNOTATION_SUFFIXES:
            candidate = folder / (slide.stem + suffix)
            if candidate.is_file():
                return candidate
    return None


def find_annotated_slides(
    sources: Sequence[Path], *, annotations: Path | None = None, slide_mpp: float | None = None
) -> list[AnnotatedSlide]:
    """Slide files and folders → annotated slides; every slide must have annotations.

    Raises :class:`~pathoflash.errors.SlideNotFoundError` for a missing path or a folder without slides and
    :class:`~pathoflash.errors.ConfigError` naming the slides that have no annotation file.
    """
    from ..inputs import collect_slides
    from ..slide import SLIDE_SUFFIXES

    if annotations is not None and not annotations.is_dir():
        raise SlideNotFoundError("annotations folder not found", path=annotations)
    found: list[AnnotatedSlide] = []
    missing: list[Path] = []
    for source in sources:
        source = Path(source)
        if not source.exists():
            raise SlideNotFoundError("no such file or folder", path=source)
        items = collect_slides([source], slide_mpp=slide_mpp)
        if source.is_dir() and not items:
            raise SlideNotFoundError(
                f"no slide files in this folder ({' '.join(SLIDE_SUFFIXES)})", path=source
            )
        for item in items:
            truth = annotation_for(item.path, annotations)
            if truth is None:
                missing.append(item.path)
            else:
                found.append(AnnotatedSlide(item.path, truth, item.slide_mpp))
    if missing:
        shown = ", ".join(str(p) for p in missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        where = f" or in {annotations}" if annotations is not None else ""
        raise ConfigError(
            f"{len(missing)} slide(s) have no tumor annotations (<stem>.truth.geojson or <stem>.geojson beside "
            f"the slide{where}): {shown}"
        )
    return found


def synthetic_name(seed: int, spec: SyntheticSet) -> str:
    """File name of a generated slide; it names everything the pixels depend on (the generator's version
    too), so a file of that name can be reused."""
    from ..sample_data import GENERATOR_VERSION

    width, height = spec.size
    return f"synthetic-g{GENERATOR_VERSION}-s{seed}-{width}x{height}-{spec.mpp:g}mpp.svs"


def _write_one(path: Path, seed: int, size: tuple[int, int], mpp: float) -> Path:
    from ..sample_data import write_sample_slide

    return write_sample_slide(path, seed=seed, size=size, mpp=mpp, workers=1).path


def generate_synthetic(
    spec: SyntheticSet,
    folder: Path,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[AnnotatedSlide]:
    """Write (or reuse) the slides of ``spec`` in ``folder``, ``workers`` processes at a time (default: the
    machine's cores); returns them in seed order."""
    from ..sample_data import truth_path_for

    folder.mkdir(parents=True, exist_ok=True)
    slides = [
        AnnotatedSlide(
            folder / synthetic_name(seed, spec),
            truth_path_for(folder / synthetic_name(seed, spec)),
            seed=seed,
        )
        for seed in spec.seeds
    ]
    todo = [s for s in slides if not (s.path.is_file() and s.annotations.is_file())]
    if len(todo) < len(slides):
        log.info("reusing %d synthetic slide(s) in %s", len(slides) - len(todo), folder)
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    done = len(slides) - len(todo)
    if progress is not None:
        progress(done, len(slides))
    if todo and n_workers == 1:
        for slide in todo:
            _write_one(slide.path, int(slide.seed or 0), spec.size, spec.mpp)
            done += 1
            if progress is not None:
                progress(done, len(slides))
    elif todo:
        # spawn, not fork: the parent may hold threads (torch, OpenSlide) that a forked child would inherit
        with ProcessPoolExecutor(
            max_workers=n_workers, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            futures = [pool.submit(_write_one, s.path, int(s.seed or 0), spec.size, spec.mpp) for s in todo]
            for future in futures:
                future.result()
                done += 1
                if progress is not None:
                    progress(done, len(slides))
    log.info("%d synthetic slide(s) of %d×%d px at %g µm/px in %s", len(slides), *spec.size, spec.mpp, folder)
    return slides


__all__ = [
    "ANNOTATION_SUFFIXES",
    "AnnotatedSlide",
    "annotation_for",
    "find_annotated_slides",
    "generate_synthetic",
    "synthetic_name",
]
