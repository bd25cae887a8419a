"""Ground truth of a synthetic slide: QuPath-style GeoJSON, read back and rasterised at any downsample.

The file is a GeoJSON ``FeatureCollection`` whose features are the tumor regions as QuPath writes
annotations (``objectType: annotation``, ``classification: {name: "Tumor", color: [r, g, b]}``, a uuid
``id``), in level-0 pixel coordinates (x right, y down). Two foreign members that QuPath ignores carry
what scoring needs besides: ``tissue`` (a MultiPolygon of the tissue pieces) and ``slide`` (size, mpp,
seed, areas). Rasterising uses the renderer's own rule (a pixel counts when its centre is inside), so
the mask at downsample 1 is exactly the set of pixels drawn as tumor.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pathoflash.errors import PathoflashError

from .geometry import EdgeSet, Ring, ring_area
from .layout import SlideLayout

#: Bumped whenever the same seed would draw different pixels; caches of generated slides can key on it.
GENERATOR_VERSION = 1
TUMOR_CLASS = "Tumor"
TUMOR_COLOR = (200, 0, 0)
_UUID_NAMESPACE = uuid.UUID("5c3a1f0e-1d7b-4b8e-9a62-3f1a2b7c9d40")


class TruthFileError(PathoflashError, ValueError):
    """A ground-truth GeoJSON file is missing or malformed."""


@dataclass(frozen=True, slots=True, eq=False)
class TruthPolygon:
    """One annotated region: exterior ring and holes, each ``(N, 2)`` float64 (x, y) level-0 px, open."""

    exterior: Ring
    holes: tuple[Ring, ...] = field(default=())

    @property
    def area(self) -> float:
        return ring_area(self.exterior) - sum(ring_area(h) for h in self.holes)

    @property
    def rings(self) -> tuple[Ring, ...]:
        return (self.exterior, *self.holes)


def truth_path_for(slide_path: str | Path) -> Path:
    """Where the ground truth of a slide lives: ``OUT.svs`` → ``OUT.truth.geojson``."""
    p = Path(slide_path)
    return p.with_name(p.stem + ".truth.geojson")


def _ring_coords(ring: Ring) -> list[list[float]]:
    closed = np.concatenate([ring, ring[:1]])
    return [[float(x), float(y)] for x, y in closed]


def truth_document(layout: SlideLayout) -> dict[str, Any]:
    """The GeoJSON FeatureCollection (as a dict) for a layout."""
    features = []
    for i, ring in enumerate(layout.tumors):
        features.append(
            {
                "type": "Feature",
                "id": str(uuid.uuid5(_UUID_NAMESPACE, f"{layout.seed}/tumor/{i}")),
                "geometry": {"type": "Polygon", "coordinates": [_ring_coords(ring)]},
                "properties": {
                    "objectType": "annotation",
                    "name": f"Tumor {i + 1}",
                    "classification": {"name": TUMOR_CLASS, "color": list(TUMOR_COLOR)},
                    "isLocked": False,
                },
            }
        )
    tissue_area = layout.tissue_area
    return {
        "type": "FeatureCollection",
        "features": features,
        "tissue": {"type": "MultiPolygon", "coordinates": [[_ring_coords(r)] for r in layout.pieces]},
        "slide": {
            "width": layout.width,
            "height": layout.height,
            "mpp": layout.mpp,
            "seed": layout.seed,
            "tissue_area_px": round(tissue_area, 1),
            "tumor_area_px": round(layout.tumor_area, 1),
            "tumor_fraction_of_tissue": round(layout.tumor_area / tissue_area, 4) if tissue_area else 0.0,
            "generator": "pathoflash.sample_data",
            "generator_version": GENERATOR_VERSION,
        },
    }


def write_truth(path: Path, layout: SlideLayout) -> None:
    """Write the ground truth of ``layout`` to ``path`` (temporary name, then rename)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(truth_document(layout), separators=(",", ":")))
    partial.replace(path)


def _load(truth_path: str | Path) -> dict[str, Any]:
    path = Path(truth_path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise TruthFileError("ground-truth file not found", path=path) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TruthFileError(f"not a readable GeoJSON file ({exc})", path=path) from exc
    if not isinstance(doc, dict) or doc.get("type") not in ("FeatureCollection", "Feature"):
        raise TruthFileError("expected a GeoJSON FeatureCollection", path=path)
    return doc


def _polygons(geometry: dict[str, Any] | None, path: Path) -> list[TruthPolygon]:
    if not geometry:
        return []
    kind = geometry.get("type")
    coords = geometry.get("coordinates")
    try:
        if kind == "Polygon":
            groups = [coords]
        elif kind == "MultiPolygon":
            groups = list(coords or [])
        elif kind == "GeometryCollection":
            return [p for g in geometry.get("geometries", []) for p in _polygons(g, path)]
        else:
            return []  # points and lines carry no area
        out = []
        for rings in groups:
            if not isinstance(rings, list):
                raise TypeError("a polygon must be a list of rings")
            arrays = [_open_ring(np.asarray(r, dtype=np.float64)[:, :2]) for r in rings]
            if arrays and len(arrays[0]) >= 3:
                out.append(TruthPolygon(arrays[0], tuple(a for a in arrays[1:] if len(a) >= 3)))
        return out
    except (TypeError, ValueError, IndexError) as exc:
        raise TruthFileError(f"malformed {kind} coordinates ({exc})", path=path) from exc


def _open_ring(ring: NDArray[np.float64]) -> NDArray[np.float64]:
    if len(ring) > 1 and np.array_equal(ring[0], ring[-1]):
        return ring[:-1]
    return ring


def _class_name(feature: dict[str, Any]) -> str | None:
    props = feature.get("properties") or {}
    cls = props.get("classification")
    if isinstance(cls, dict):
        name = cls.get("name")
        return str(name) if name is not None else None
    return str(cls) if cls is not None else None


def read_truth(truth_path: str | Path, classification: str | None = TUMOR_CLASS) -> list[TruthPolygon]:
    """The annotated polygons of a GeoJSON file whose classification is ``classification``.

    Matching is case-insensitive; ``None`` returns every polygon whatever its class. Works on any
    QuPath-style export, not only on files this package wrote.
    """
    path = Path(truth_path)
    doc = _load(path)
    features = doc.get("features", []) if doc.get("type") == "FeatureCollection" else [doc]
    out: list[TruthPolygon] = []
    for feature in features:
        if not isinstance(feature, dict):
            raise TruthFileError("a feature is not an object", path=path)
        name = _class_name(feature)
        if classification is not None and (name is None or name.lower() != classification.lower()):
            continue
        out += _polygons(feature.get("geometry"), path)
    return out


def read_tissue(truth_path: str | Path) -> list[TruthPolygon]:
    """The tissue pieces recorded in a ground-truth file written by this package."""
    path = Path(truth_path)
    doc = _load(path)
    if "tissue" not in doc:
        raise TruthFileError("no 'tissue' member: not a ground-truth file written by pathoflash", path=path)
    return _polygons(doc["tissue"], path)


def rasterize_polygons(
    polygons: Sequence[TruthPolygon], shape: tuple[int, int], downsample: float = 1.0
) -> NDArray[np.bool_]:
    """Mask ``shape`` (rows, cols): pixel (r, c) is set when level-0 point ((c+.5)d, (r+.5)d) is inside."""
    rows, cols = int(shape[0]), int(shape[1])
    if rows < 0 or cols < 0:
        raise ValueError(f"mask shape must be non-negative, got {shape}")
    if not downsample > 0:
        raise ValueError(f"downsample must be positive, got {downsample}")
    mask = np.zeros((rows, cols), dtype=np.bool_)
    for polygon in polygons:  # one at a time, so overlapping annotations unite rather than cancel
        edges = EdgeSet.from_rings(polygon.rings)
        x0, y0, x1, y1 = edges.bbox
        c0, c1 = max(0, int(x0 / downsample) - 1), min(cols, int(x1 / downsample) + 2)
        r0, r1 = max(0, int(y0 / downsample) - 1), min(rows, int(y1 / downsample) + 2)
        if c0 < c1 and r0 < r1:
            mask[r0:r1, c0:c1] |= edges.rasterize(
                c0 * downsample, r0 * downsample, c1 - c0, r1 - r0, downsample
            )
    return mask


def truth_mask(truth_path: str | Path, shape: tuple[int, int], downsample: float = 1.0) -> NDArray[np.bool_]:
    """Tumor mask of shape ``(rows, cols)`` at ``downsample`` from level 0 (pixel centres inside)."""
    return rasterize_polygons(read_truth(truth_path), shape, downsample)


def tissue_truth_mask(
    truth_path: str | Path, shape: tuple[int, int], downsample: float = 1.0
) -> NDArray[np.bool_]:
    """Tissue mask of shape ``(rows, cols)`` at ``downsample`` from level 0 (pixel centres inside)."""
    return rasterize_polygons(read_tissue(truth_path), shape, downsample)
