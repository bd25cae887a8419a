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
from collections.abc import Iterator, Sequence
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


#: Rings of at most this many points are not simplified (specks of a few pixels: nothing to gain).
SMALL_RING_POINTS = 16


def simplify_ring(ring: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas–Peucker on one closed ring (first point = last); :func:`simplify_rings` with a single ring."""
    return simplify_rings([ring], tolerance)[0]


def simplify_rings(rings: Sequence[np.ndarray], tolerance: float) -> list[np.ndarray]:
    """Douglas–Peucker on closed rings (first point = last), all rings at once; keeps the closure.

    Each ring is first split at the vertex farthest from its start, so both halves have a proper chord.
    Then every open segment of every ring is split in one numpy pass at its vertex farthest from the chord
    (the first such vertex on ties) if that one is more than ``tolerance`` away, until none splits: the
    number of passes is the recursion depth, not the number of segments, which is what makes thousands of
    contours cheap. Against a chord of zero length (a repeated point) the distance is to that point. Rings
    of up to :data:`SMALL_RING_POINTS` points are returned as they are; the others as new arrays.
    """
    out = list(rings)
    todo = [i for i, ring in enumerate(out) if len(ring) > SMALL_RING_POINTS]
    if not todo:
        return out
    points = np.concatenate([out[i] for i in todo])
    x, y = np.ascontiguousarray(points.T)  # contiguous coordinates gather faster than the columns
    sizes = np.array([len(out[i]) for i in todo])
    firsts = np.cumsum(sizes) - sizes  # index of each ring's first point in ``points``
    lasts = firsts + sizes - 1
    far = _farthest_from_start(x, y, firsts, sizes)
    keep = np.zeros(len(points), dtype=bool)
    keep[firsts] = keep[lasts] = keep[far] = True
    starts, ends = np.concatenate([firsts, far]), np.concatenate([far, lasts])
    while True:
        has_inner = ends - starts >= 2  # segments with vertices between their ends
        starts, ends = starts[has_inner], ends[has_inner]
        if not starts.size:
            break
        split, at = _farthest_from_chords(x, y, starts, ends, tolerance)
        keep[at] = True
        starts, ends = np.concatenate([starts[split], at]), np.concatenate([at, ends[split]])
    kept = np.split(points[keep], np.cumsum(np.add.reduceat(keep, firsts))[:-1])
    for i, ring in zip(todo, kept, strict=True):
        out[i] = ring
    return out


def _group_argmax(
    values: np.ndarray, firsts: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum of each consecutive non-empty group of ``values`` and the index of its first occurrence.

    ``firsts`` are the groups' first indices (increasing) and ``groups`` each value's group number; ties go
    to the first index, as with :func:`numpy.argmax`.
    """
    peak = np.maximum.reduceat(values, firsts)
    at_peak = np.flatnonzero(values == peak[groups])  # increasing, so grouped in order
    leading = np.ones(len(at_peak), dtype=bool)
    leading[1:] = groups[at_peak[1:]] != groups[at_peak[:-1]]
    index = np.zeros(len(firsts), dtype=np.intp)  # stays 0 for a NaN peak, which no value equals
    index[groups[at_peak[leading]]] = at_peak[leading]
    return peak, index


def _farthest_from_start(x: np.ndarray, y: np.ndarray, firsts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Index of each ring's vertex farthest from the ring's first point (the first one on ties)."""
    ring_of = np.repeat(np.arange(len(firsts)), sizes)
    start_of = firsts[ring_of]
    _, far = _group_argmax(np.hypot(x - x[start_of], y - y[start_of]), firsts, ring_of)
    return far


def _farthest_from_chords(
    x: np.ndarray, y: np.ndarray, starts: np.ndarray, ends: np.ndarray, tolerance: float
) -> tuple[np.ndarray, np.ndarray]:
    """One Douglas–Peucker pass over the segments from ``starts`` to ``ends`` (each with an inner vertex).

    Returns which segments split (their farthest inner vertex is more than ``tolerance`` from the chord)
    and, for those, the index of that vertex (the first one on ties).
    """
    counts = ends - starts - 1  # inner vertices per segment
    firsts = np.cumsum(counts) - counts  # each segment's first inner vertex in the flat arrays below
    segment_of = np.repeat(np.arange(len(starts)), counts)
    inner = np.arange(len(segment_of)) + np.repeat(starts + 1 - firsts, counts)  # vertex indices
    ax, ay = x[starts], y[starts]
    abx, aby = x[ends] - ax, y[ends] - ay
    length = np.hypot(abx, aby)
    chord = length != 0.0
    dx, dy = x[inner] - ax[segment_of], y[inner] - ay[segment_of]
    cross = abx[segment_of] * dy
    cross -= aby[segment_of] * dx
    distance = np.abs(cross) / np.where(chord, length, 1.0)[segment_of]  # to the chord's line
    if not chord.all():
        point = ~chord[segment_of]
        distance[point] = np.hypot(dx[point], dy[point])  # zero-length chord: distance to its point
    peak, at = _group_argmax(distance, firsts, segment_of)
    split = peak > tolerance
    return split, inner[at[split]]


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
    # (row, col) in padded index space → (x, y) in pixel-edge space: −1 for the pad, +0.5 to the centre.
    rings = [contour[:, ::-1] - 0.5 for contour in contours]
    if simplify > 0:
        rings = simplify_rings(rings, simplify)
    exteriors: list[np.ndarray] = []
    holes: list[np.ndarray] = []
    for ring in rings:
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
