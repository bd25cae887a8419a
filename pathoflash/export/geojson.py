"""QuPath-importable GeoJSON: tumor regions as annotations (with holes), optional per-pixel tile objects.

QuPath's importer (File → Import objects, or drag and drop) reads a ``FeatureCollection`` of ``Feature``\\ s:

* ``id`` — a UUID string (QuPath ≥ 0.4 keeps it as the object id);
* ``geometry`` — ``Polygon`` / ``MultiPolygon`` in full-resolution (level-0) pixel coordinates, origin at
  the top-left of the image;
* ``properties.objectType`` — ``annotation`` | ``detection`` | ``tile`` | ``cell``;
* ``properties.classification`` — ``{"name": str, "color": [r, g, b]}``;
* ``properties.measurements`` — a flat ``{name: number}`` map (QuPath ≥ 0.4; older versions wrote a list).

Rings are closed and follow RFC 7946's right-hand rule applied to the coordinate numbers: exterior rings
have positive signed (shoelace) area, holes negative. Regions come from marching squares
(:func:`skimage.measure.find_contours`) on the probabilities at the threshold, so edges are interpolated
between pixel centres; islands inside holes become separate annotations.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from .atomic import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from ..heatmap import Heatmap, PathLike

log = logging.getLogger(__name__)

TUMOR_CLASS = "Tumor"
TUMOR_COLOR = (200, 0, 0)
MEASUREMENT = "tumor_probability"
#: Above this many tile objects QuPath gets slow; we still write them but say so.
MANY_TILES = 500_000
_ID_NAMESPACE = uuid.UUID("6f0b5c1e-3a52-4f0e-9d7e-7a1c2f3d4e5b")


@dataclass(frozen=True, slots=True, eq=False)
class Region:
    """One tumor region in heatmap pixel-edge coordinates (pixel ``(r, c)`` spans ``[c, c+1) × [r, r+1)``).

    ``exterior`` and each hole are closed ``(n, 2)`` arrays of ``(x, y)``; the exterior has positive signed
    area, holes negative.
    """

    exterior: np.ndarray
    holes: tuple[np.ndarray, ...]

    @property
    def area(self) -> float:
        """Area in heatmap pixels (exterior minus holes)."""
        return signed_area(self.exterior) + sum(signed_area(h) for h in self.holes)


def signed_area(ring: np.ndarray) -> float:
    """Shoelace area of a closed ring of ``(x, y)`` (positive when counter-clockwise in a y-up frame)."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def point_in_ring(x: float, y: float, ring: np.ndarray) -> bool:
    """Even-odd ray casting: whether ``(x, y)`` lies inside the closed ring."""
    x0, y0 = ring[:-1, 0], ring[:-1, 1]
    x1, y1 = ring[1:, 0], ring[1:, 1]
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return bool(np.count_nonzero(crosses & (x < x_at)) % 2)


def simplify_ring(ring: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas–Peucker on a closed ring (first point = last), vectorised per split; keeps the closure.

    The ring is first split at the vertex farthest from its start, so both halves have a proper chord. Rings
    of up to 16 points (specks of a few pixels, where per-split overhead dominates and nothing is gained) are
    returned as they are.
    """
    n = len(ring)
    if n <= 16:
        return ring
    keep = np.zeros(n, dtype=bool)
    keep[0] = keep[-1] = True
    far = int(np.argmax(np.hypot(*(ring - ring[0]).T)))
    keep[far] = True
    stack = [(0, far), (far, n - 1)]
    while stack:
        start, end = stack.pop()
        if end - start < 2:
            continue
        a, b = ring[start], ring[end]
        inner = ring[start + 1 : end]
        ab = b - a
        length = float(np.hypot(*ab))
        if length == 0.0:
            distance = np.hypot(*(inner - a).T)
        else:  # distance to the chord's line
            distance = np.abs(ab[0] * (inner[:, 1] - a[1]) - ab[1] * (inner[:, 0] - a[0])) / length
        i = int(np.argmax(distance))
        if distance[i] > tolerance:
            split = start + 1 + i
            keep[split] = True
            stack.append((start, split))
            stack.append((split, end))
    return ring[keep]


def _assign_holes(exteriors: list[np.ndarray], holes: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Give each hole to the smallest exterior that contains it (islands in holes are exteriors themselves)."""
    holes_of: list[list[np.ndarray]] = [[] for _ in exteriors]
    if not exteriors or not holes:
        return holes_of
    areas = np.array([signed_area(e) for e in exteriors])
    lo = np.array([e.min(axis=0) for e in exteriors])  # (n, 2) bounding boxes
    hi = np.array([e.max(axis=0) for e in exteriors])
    for hole in holes:
        hx, hy = float(hole[0, 0]), float(hole[0, 1])
        candidates = np.flatnonzero((lo[:, 0] <= hx) & (hx <= hi[:, 0]) & (lo[:, 1] <= hy) & (hy <= hi[:, 1]))
        for i in candidates[np.argsort(areas[candidates])]:  # smallest first: the innermost enclosing shell
            if point_in_ring(hx, hy, exteriors[i]):
                holes_of[i].append(hole)
                break
        else:
            log.debug("dropping a hole with no enclosing region at (%.1f, %.1f)", hx, hy)
    return holes_of


def tumor_regions(
    probabilities: np.ndarray, threshold: float, *, simplify: float = 0.25, min_area: float = 0.0
) -> list[Region]:
    """Contours of ``probabilities ≥ threshold`` as regions with holes (heatmap pixel-edge coordinates).

    NaN counts as 0. ``simplify`` is the Douglas–Peucker tolerance and ``min_area`` the smallest ring area
    kept, both in heatmap pixels.
    """
    from skimage.measure import find_contours

    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    filled = np.nan_to_num(np.asarray(probabilities, dtype=np.float32), nan=0.0)
    if not (filled >= threshold).any():
        return []
    padded = np.pad(filled, 1, constant_values=0.0)  # closes every contour
    # 'high': contours wind counter-clockwise (in row/col) around values above the level, clockwise around
    # holes; in (x, y) = (col, row) that makes exteriors negative and holes positive before we flip them.
    contours = find_contours(padded, threshold, fully_connected="low", positive_orientation="high")
    exteriors: list[np.ndarray] = []
    holes: list[np.ndarray] = []
    for contour in contours:
        # (row, col) in padded index space → (x, y) in pixel-edge space: −1 for the pad, +0.5 to the centre.
        ring = contour[:, ::-1] - 0.5
        if simplify > 0:
            ring = simplify_ring(ring, simplify)
        if not np.array_equal(ring[0], ring[-1]):
            ring = np.vstack([ring, ring[:1]])
        if len(ring) < 4:
            continue
        area = signed_area(ring)
        if abs(area) <= min_area or area == 0.0:
            continue
        if area < 0:
            exteriors.append(ring[::-1].copy())  # make it positive
        else:
            holes.append(ring[::-1].copy())  # make it negative
    holes_of = _assign_holes(exteriors, holes)
    regions = [Region(e, tuple(h)) for e, h in zip(exteriors, holes_of, strict=True)]
    regions.sort(key=lambda r: -r.area)
    return regions


def _ring_to_level0(ring: np.ndarray, heatmap: Heatmap) -> list[list[float]]:
    sx, sy = heatmap.pixel_size
    ox, oy = heatmap.origin
    xy = np.empty_like(ring, dtype=np.float64)
    xy[:, 0] = ox + ring[:, 0] * sx
    xy[:, 1] = oy + ring[:, 1] * sy
    out: list[list[float]] = np.round(xy, 2).tolist()
    out[-1] = out[0]  # exactly closed after rounding
    return out


def _feature_ids(heatmap: Heatmap, threshold: float) -> Iterator[str]:
    """Deterministic UUIDs: the same heatmap and threshold give the same file (reruns compare equal)."""
    digest = hashlib.sha256(heatmap.probabilities.tobytes())
    digest.update(f"{heatmap.model_id}|{threshold}|{heatmap.origin}|{heatmap.mpp}".encode())
    seed = digest.hexdigest()
    index = 0
    while True:
        yield str(uuid.uuid5(_ID_NAMESPACE, f"{seed}:{index}"))
        index += 1


def region_features(
    heatmap: Heatmap, threshold: float = 0.5, *, simplify: float = 0.25
) -> list[dict[str, Any]]:
    """Tumor regions as QuPath annotation features (level-0 coordinates)."""
    ids = _feature_ids(heatmap, threshold)
    features = []
    for region in tumor_regions(heatmap.probabilities, threshold, simplify=simplify):
        rings = [_ring_to_level0(region.exterior, heatmap)] + [
            _ring_to_level0(h, heatmap) for h in region.holes
        ]
        features.append(
            {
                "type": "Feature",
                "id": next(ids),
                "geometry": {"type": "Polygon", "coordinates": rings},
                "properties": {
                    "objectType": "annotation",
                    "name": f"{TUMOR_CLASS} (p ≥ {threshold:g})",
                    "classification": {"name": TUMOR_CLASS, "color": list(TUMOR_COLOR)},
                    "measurements": {"area_um2": round(region.area * heatmap.mpp**2, 1)},
                },
            }
        )
    return features


def _tile_features(heatmap: Heatmap, ids: Iterator[str]) -> Iterator[dict[str, Any]]:
    sx, sy = heatmap.pixel_size
    ox, oy = heatmap.origin
    tissue = heatmap.tissue()
    rows, cols = np.nonzero(tissue)
    if rows.size > MANY_TILES:
        log.warning("writing %d tile objects; QuPath may be slow to import them", rows.size)
    values = heatmap.probabilities[rows, cols]
    for r, c, p in zip(rows.tolist(), cols.tolist(), values.tolist(), strict=True):
        x0, y0 = round(ox + c * sx, 2), round(oy + r * sy, 2)
        x1, y1 = round(ox + (c + 1) * sx, 2), round(oy + (r + 1) * sy, 2)
        yield {
            "type": "Feature",
            "id": next(ids),
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
            },
            "properties": {"objectType": "tile", "measurements": {MEASUREMENT: round(p, 4)}},
        }


def _write_collection(out: TextIO, features: Iterator[dict[str, Any]]) -> int:
    out.write('{"type":"FeatureCollection","features":[\n')
    count = 0
    for feature in features:
        if count:
            out.write(",\n")
        out.write(json.dumps(feature, separators=(",", ":"), ensure_ascii=False))
        count += 1
    out.write("\n]}\n")
    return count


def write_geojson(
    heatmap: Heatmap, path: PathLike, *, threshold: float = 0.5, tiles: bool = False, simplify: float = 0.25
) -> Path:
    """Write ``heatmap.geojson`` (streamed, atomically): annotations, then tile objects if ``tiles``."""
    regions = region_features(heatmap, threshold, simplify=simplify)
    # Tile ids continue after the region ids so every id in the file is distinct.
    ids = _feature_ids(heatmap, threshold)
    for _ in regions:
        next(ids)

    def features() -> Iterator[dict[str, Any]]:
        yield from regions
        if tiles:
            yield from _tile_features(heatmap, ids)

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        count = _write_collection(out, features())
    log.info("wrote %s: %d tumor regions, %d features", path, len(regions), count)
    return Path(path)


__all__ = [
    "MEASUREMENT",
    "TUMOR_CLASS",
    "TUMOR_COLOR",
    "Region",
    "point_in_ring",
    "region_features",
    "signed_area",
    "tumor_regions",
    "write_geojson",
]
