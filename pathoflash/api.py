"""``pf.predict``: one slide to a :class:`~pathoflash.heatmap.Heatmap`, no cluster needed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .options import RunOptions
from .pipeline import Progress, compute_heatmap
from .slide import Slide, open_slide

if TYPE_CHECKING:  # pragma: no cover
    from .heatmap import Heatmap


def predict(
    slide_or_path: Slide | str | os.PathLike[str],
    model: Any = None,
    *,
    mpp: float = 0.5,
    device: str = "auto",
    slide_mpp: float | None = None,
    store: str | os.PathLike[str] | None = None,
    region: int | None = None,
    batch_size: int = 4,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Heatmap:
    """Tumor heatmap of one slide.

    ``model`` is a loaded model, a checkpoint path, or ``None`` for the bundled default model. Tiles go to
    the Zarr tile store ``store`` (kept, and resumed on the next call) or to a temporary one that is deleted
    afterwards. ``slide_mpp`` overrides the slide's resolution metadata.
    """
    from .model.checkpoint import load_model

    if model is None or isinstance(model, str | os.PathLike):
        model = load_model(None if model is None else str(model))
    options = RunOptions(mpp=mpp, device=device, region=region, batch_size=batch_size, workers=workers)
    opened = open_slide(slide_or_path, mpp=slide_mpp)
    try:
        if store is not None:
            heatmap, _ = compute_heatmap(opened, Path(store), model, options, progress=progress)
            return heatmap
        with tempfile.TemporaryDirectory(prefix="pathoflash-") as tmp:
            heatmap, _ = compute_heatmap(opened, Path(tmp) / "tiles.zarr", model, options, progress=progress)
            return heatmap
    finally:
        if opened is not slide_or_path:
            opened.close()
