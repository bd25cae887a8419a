"""The heatmap as an array in a Zarr v3 group (e.g. the slide's ``tiles.zarr``), geometry in its attrs.

Attrs of the ``heatmap`` array: ``mpp`` (µm per pixel), ``origin`` (level-0 x, y of the top-left),
``slide_dimensions``, ``slide_mpp``, ``model_id``, ``scale`` (level-0 px per pixel, or null), ``kind = "pathoflash.heatmap"``. NaN (the fill value)
marks pixels without a probability. A tissue mask, when the heatmap has one, is stored next to it as
``<name>_tissue_mask`` with its own ``mpp`` attr.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import zarr

    from ..heatmap import Heatmap, PathLike

KIND = "pathoflash.heatmap"
#: Attributes a heatmap array must carry to be read back (``kind`` may be absent, e.g. when another writer
#: stored the array with these attributes).
_REQUIRED = ("mpp", "slide_dimensions", "slide_mpp")
_CHUNK = 1024


def _group(store: PathLike | zarr.Group, mode: str) -> zarr.Group:
    import zarr

    if isinstance(store, zarr.Group):
        return store
    if isinstance(store, str | os.PathLike):
        return zarr.open_group(store=Path(store), mode=mode, zarr_format=3)  # type: ignore[arg-type]
    raise TypeError(f"expected a path or a zarr.Group, got {type(store).__name__}")


def write_zarr(heatmap: Heatmap, store: PathLike | zarr.Group, *, name: str = "heatmap") -> zarr.Array:
    """Write (or overwrite) ``name`` in the group; returns the array."""
    group = _group(store, "a")
    rows, cols = heatmap.shape
    array = group.create_array(
        name,
        shape=(rows, cols),
        chunks=(min(rows, _CHUNK), min(cols, _CHUNK)),
        dtype="float32",
        fill_value=np.nan,
        overwrite=True,
        dimension_names=("y", "x"),
    )
    array[...] = heatmap.probabilities
    array.attrs.update(
        {
            "kind": KIND,
            "mpp": heatmap.mpp,
            "origin": list(heatmap.origin),
            "slide_dimensions": list(heatmap.slide_dimensions),
            "slide_mpp": list(heatmap.slide_mpp),
            "model_id": heatmap.model_id,
            "scale": None if heatmap.scale is None else list(heatmap.scale),
        }
    )
    mask_name = f"{name}_tissue_mask"
    if heatmap.tissue_mask is not None:
        mask = heatmap.tissue_mask
        mask_array = group.create_array(
            mask_name,
            shape=mask.shape,
            chunks=(min(mask.shape[0], _CHUNK), min(mask.shape[1], _CHUNK)),
            dtype="bool",
            fill_value=False,
            overwrite=True,
            dimension_names=("y", "x"),
        )
        mask_array[...] = mask
        mask_array.attrs.update({"kind": "pathoflash.tissue_mask", "mpp": heatmap.tissue_mask_mpp})
    elif mask_name in group:
        del group[mask_name]  # a stale mask from an earlier heatmap must not be read back with this one
    return array


def read_zarr(store: PathLike | zarr.Group, *, name: str = "heatmap") -> Heatmap:
    """Read a heatmap written by :func:`write_zarr`."""
    import zarr

    from ..errors import StoreError
    from ..heatmap import Heatmap

    group = _group(store, "r")
    if name not in group:
        raise StoreError(f"no {name!r} array in this Zarr group", path=_path_of(store))
    array = group[name]
    if not isinstance(array, zarr.Array):
        raise StoreError(f"{name!r} is a group, not a heatmap array", path=_path_of(store))
    attrs = dict(array.attrs)
    missing = [key for key in _REQUIRED if key not in attrs]
    if ("kind" in attrs and attrs["kind"] != KIND) or missing:
        raise StoreError(
            f"{name!r} is not a PathoFlash heatmap (kind={attrs.get('kind')!r}, missing attrs {missing})",
            path=_path_of(store),
        )
    mask, mask_mpp = None, None
    mask_name = f"{name}_tissue_mask"
    if mask_name in group:
        mask_array = group[mask_name]
        assert isinstance(mask_array, zarr.Array)
        mask = np.asarray(mask_array[...], dtype=bool)
        mask_mpp = float(mask_array.attrs["mpp"])  # type: ignore[arg-type]
    return Heatmap(
        probabilities=np.asarray(array[...], dtype=np.float32),
        mpp=float(attrs["mpp"]),  # type: ignore[arg-type]
        origin=tuple(attrs.get("origin") or (0.0, 0.0)),  # type: ignore[arg-type]
        slide_dimensions=tuple(attrs["slide_dimensions"]),  # type: ignore[arg-type]
        slide_mpp=tuple(attrs["slide_mpp"]),  # type: ignore[arg-type]
        model_id=attrs.get("model_id"),  # type: ignore[arg-type]
        tissue_mask=mask,
        tissue_mask_mpp=mask_mpp,
        scale=None if attrs.get("scale") is None else tuple(attrs["scale"]),  # type: ignore[arg-type]
    )


def _path_of(store: object) -> Path | None:
    return Path(store) if isinstance(store, str | os.PathLike) else None


__all__ = ["KIND", "read_zarr", "write_zarr"]
