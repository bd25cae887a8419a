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

The file is written in a thread beside other exports, so the work is done in whole-array numpy passes
rather than Python loops over segments, points or tiles: the contours skimage would give (point for point)
assembled from one array of segments, all rings packed in one array, holes matched to shells in batches,
and the JSON text of coordinates and tile objects laid out as character arrays. The output is byte for
byte what ``json.dumps`` of :func:`region_features` (and of the tile objects) gives.

This module assembles regions and writes the file; the pieces live beside it: :mod:`.contours` (marching
squares), :mod:`.rings` (ring geometry, packed rings, hole assignment) and :mod:`.geojson_text` (JSON text
in numpy).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from .atomic import atomic_path
from .contours import contour_rings
from .geojson_text import (
    ID_NAMESPACE,
    PLAIN_DECIMAL_LIMIT,
    ascii_codes,
    ascii_rows,
    feature_id_chars,
    joined_rows,
    polygon_coordinates_json,
    round4_chars,
)
from .rings import Rings, assign_holes, point_in_ring, signed_area

if TYPE_CHECKING:  # pragma: no cover
    from ..heatmap import Heatmap, PathLike

log = logging.getLogger(__name__)

TUMOR_CLASS = "Tumor"
TUMOR_COLOR = (200, 0, 0)
MEASUREMENT = "tumor_probability"
#: Above this many tile objects QuPath gets slow; we still write them but say so.
MANY_TILES = 500_000


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


@dataclass(frozen=True, slots=True, eq=False)
class _RegionRings:
    """Tumor regions, largest first, packed: each region's exterior ring, then its holes.

    ``ring_counts[i]`` is the number of rings of region ``i`` (1 + holes) and ``areas[i]`` its
    :attr:`Region.area`.
    """

    rings: Rings
    ring_counts: np.ndarray
    areas: np.ndarray

    def regions(self) -> list[Region]:
        rings = self.rings.split()
        firsts = (np.cumsum(self.ring_counts) - self.ring_counts).tolist()
        return [
            Region(rings[first], tuple(rings[first + 1 : first + count]))
            for first, count in zip(firsts, self.ring_counts.tolist(), strict=True)
        ]


def _region_rings(
    probabilities: np.ndarray, threshold: float, *, simplify: float, min_area: float
) -> _RegionRings:
    """What :func:`tumor_regions` returns, packed (see there)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    contours = contour_rings(probabilities, threshold)
    if simplify > 0:
        contours = simplify_rings(contours, simplify)
    rings = Rings.pack(contours).closed()
    rings = rings.take(np.flatnonzero(rings.sizes >= 4))
    flipped = rings.reversed()  # exteriors positive, holes negative
    flipped_areas = flipped.signed_areas()
    exterior, hole = _exteriors_and_holes(rings, flipped_areas, min_area)
    exteriors, holes = flipped.take(exterior), flipped.take(hole)
    owner = assign_holes(exteriors, flipped_areas[exterior], holes)
    return _pack_regions(exteriors, flipped_areas[exterior], holes, flipped_areas[hole], owner)


def _exteriors_and_holes(
    rings: Rings, flipped_areas: np.ndarray, min_area: float
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the exteriors (negative :func:`signed_area`) and holes (positive) among ``rings``, less
    those of area 0 or at most ``min_area`` in magnitude.

    ``flipped_areas`` are the areas of the reversed rings. Exactly, a ring's area is minus that of its
    reverse; computed, each is within :func:`_area_error` of exact, so the reverse's area settles every
    decision but those within twice that of a boundary. Only for those is the ring's own area computed.
    """
    area = -flipped_areas
    margin = 2.0 * _area_error(rings)
    unsure = (np.abs(area) <= margin) | (np.abs(np.abs(area) - min_area) <= margin)
    area[unsure] = rings.take(np.flatnonzero(unsure)).signed_areas()
    kept = ~((np.abs(area) <= min_area) | (area == 0.0))
    return np.flatnonzero(kept & (area < 0)), np.flatnonzero(kept & ~(area < 0))


def _area_error(rings: Rings) -> np.ndarray:
    """A bound on how far :func:`signed_area` of each ring can be from its exact area, however the dot
    products are summed: ``n·u`` of the sum of the magnitudes of the ``n`` products (ample: by 2×)."""
    x, y = rings.points[:, 0], rings.points[:, 1]
    terms = np.zeros(len(x))
    terms[:-1] = np.abs(x[:-1] * y[1:]) + np.abs(x[1:] * y[:-1])
    terms[rings.lasts] = 0.0  # no product across rings
    magnitude = np.add.reduceat(terms, rings.firsts) if len(rings) else terms[:0]
    return (rings.sizes + 2) * 2.0**-52 * magnitude + 1e-300


def _pack_regions(
    exteriors: Rings, exterior_areas: np.ndarray, holes: Rings, hole_areas: np.ndarray, owner: np.ndarray
) -> _RegionRings:
    """Regions (exterior + the holes it owns, in hole order) sorted by area, largest first (stable)."""
    assigned = np.flatnonzero(owner >= 0)
    assigned = assigned[np.argsort(owner[assigned], kind="stable")]  # grouped by region, hole order kept
    region_of = owner[assigned]
    areas = _region_areas(exterior_areas, hole_areas[assigned], region_of)
    rank = np.empty(len(exteriors), dtype=np.intp)
    rank[np.argsort(-areas, kind="stable")] = np.arange(len(exteriors))
    # Every ring's sort key: its region's rank, then the exterior (0) before the holes (1), holes in order.
    region_rank = np.concatenate([rank, rank[region_of]])
    is_hole = np.repeat([0, 1], [len(exteriors), len(assigned)])
    order = np.lexsort((np.concatenate([np.zeros(len(exteriors), np.intp), assigned]), is_hole, region_rank))
    rings = Rings(
        np.concatenate([exteriors.points, holes.take(assigned).points]),
        np.concatenate([exteriors.sizes, holes.sizes[assigned]]),
    ).take(order)
    ring_counts = 1 + np.bincount(region_of, minlength=len(exteriors))
    by_rank = np.argsort(rank)
    return _RegionRings(rings, ring_counts[by_rank], areas[by_rank])


def _region_areas(exterior_areas: np.ndarray, hole_areas: np.ndarray, region_of: np.ndarray) -> np.ndarray:
    """:attr:`Region.area` of every region: exterior plus ``sum`` of its holes' areas (holes grouped by
    region, in order), the same additions as there, so the same floats."""
    areas = exterior_areas.copy()
    bounds = np.flatnonzero(np.diff(region_of, prepend=-1, append=-1)).tolist()  # where regions change
    for start, stop in itertools.pairwise(bounds):
        areas[region_of[start]] = exterior_areas[region_of[start]] + sum(hole_areas[start:stop].tolist())
    return areas


def tumor_regions(
    probabilities: np.ndarray, threshold: float, *, simplify: float = 0.25, min_area: float = 0.0
) -> list[Region]:
    """Contours of ``probabilities ≥ threshold`` as regions with holes (heatmap pixel-edge coordinates).

    NaN counts as 0. ``simplify`` is the Douglas–Peucker tolerance and ``min_area`` the smallest ring area
    kept, both in heatmap pixels. Holes go to the smallest exterior holding their first point; regions are
    sorted by area, largest first.
    """
    return _region_rings(probabilities, threshold, simplify=simplify, min_area=min_area).regions()


def _level0_points(rings: Rings, heatmap: Heatmap) -> np.ndarray:
    """Ring points in level-0 pixels, rounded to hundredths; every ring exactly closed after rounding."""
    sx, sy = heatmap.pixel_size
    ox, oy = heatmap.origin
    xy = np.empty_like(rings.points, dtype=np.float64)
    xy[:, 0] = ox + rings.points[:, 0] * sx
    xy[:, 1] = oy + rings.points[:, 1] * sy
    xy = np.round(xy, 2)
    xy[rings.lasts] = xy[rings.firsts]
    return xy


def _polygon_coordinates(xy: np.ndarray, ring_sizes: np.ndarray, ring_counts: np.ndarray) -> list[list[Any]]:
    """Each polygon's ``coordinates`` as nested lists (rings of ``[x, y]``)."""
    points = [ring.tolist() for ring in Rings(xy, ring_sizes).split()]
    firsts = (np.cumsum(ring_counts) - ring_counts).tolist()
    return [points[first : first + count] for first, count in zip(firsts, ring_counts.tolist(), strict=True)]


def _id_seed(heatmap: Heatmap, threshold: float) -> str:
    digest = hashlib.sha256(heatmap.probabilities.tobytes())
    digest.update(f"{heatmap.model_id}|{threshold}|{heatmap.origin}|{heatmap.mpp}".encode())
    return digest.hexdigest()


def _feature_ids(heatmap: Heatmap, threshold: float) -> Iterator[str]:
    """Deterministic UUIDs: the same heatmap and threshold give the same file (reruns compare equal)."""
    seed = _id_seed(heatmap, threshold)
    for index in itertools.count():
        yield str(uuid.uuid5(ID_NAMESPACE, f"{seed}:{index}"))


def _region_properties(area: float, heatmap: Heatmap, threshold: float) -> dict[str, Any]:
    return {
        "objectType": "annotation",
        "name": f"{TUMOR_CLASS} (p ≥ {threshold:g})",
        "classification": {"name": TUMOR_CLASS, "color": list(TUMOR_COLOR)},
        "measurements": {"area_um2": round(area * heatmap.mpp**2, 1)},
    }


def region_features(
    heatmap: Heatmap, threshold: float = 0.5, *, simplify: float = 0.25
) -> list[dict[str, Any]]:
    """Tumor regions as QuPath annotation features (level-0 coordinates)."""
    regions = _region_rings(heatmap.probabilities, threshold, simplify=simplify, min_area=0.0)
    xy = _level0_points(regions.rings, heatmap)
    coordinates = _polygon_coordinates(xy, regions.rings.sizes, regions.ring_counts)
    ids = _feature_ids(heatmap, threshold)
    return [
        {
            "type": "Feature",
            "id": next(ids),
            "geometry": {"type": "Polygon", "coordinates": rings},
            "properties": _region_properties(area, heatmap, threshold),
        }
        for rings, area in zip(coordinates, regions.areas.tolist(), strict=True)
    ]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _region_feature_texts(heatmap: Heatmap, threshold: float, simplify: float, seed: str) -> list[str]:
    """:func:`region_features` as compact JSON texts, ids ``0 … n − 1`` (coordinates written by numpy)."""
    regions = _region_rings(heatmap.probabilities, threshold, simplify=simplify, min_area=0.0)
    xy = _level0_points(regions.rings, heatmap)
    if np.abs(xy).max(initial=0.0) < PLAIN_DECIMAL_LIMIT:
        coordinates = polygon_coordinates_json(xy, regions.rings.sizes, regions.ring_counts)
    else:
        coordinates = [_dumps(c) for c in _polygon_coordinates(xy, regions.rings.sizes, regions.ring_counts)]
    ids = feature_id_chars(seed, 0, len(coordinates)).tobytes().decode("ascii")
    return [
        f'{{"type":"Feature","id":"{ids[36 * i : 36 * i + 36]}",'
        f'"geometry":{{"type":"Polygon","coordinates":{rings}}},'
        f'"properties":{_dumps(_region_properties(area, heatmap, threshold))}}}'
        for i, (rings, area) in enumerate(zip(coordinates, regions.areas.tolist(), strict=True))
    ]


def _tile_features(heatmap: Heatmap, ids: Iterator[str]) -> Iterator[dict[str, Any]]:
    """One QuPath tile object per heatmap pixel on tissue, row by row (what :func:`_tile_blocks` writes)."""
    sx, sy = heatmap.pixel_size
    ox, oy = heatmap.origin
    rows, cols = np.nonzero(heatmap.tissue())
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


#: Tile objects per block of text (about 300 bytes each).
_TILE_BLOCK = 1 << 16


def _tile_blocks(heatmap: Heatmap, seed: str, first_id: int) -> Iterator[tuple[str, int]]:
    """:func:`_tile_features` as compact JSON, blocks of up to :data:`_TILE_BLOCK` features joined by
    ``,\\n``, with how many each holds. Ids continue from ``first_id``.

    A tile's corners come from a table per column and per row, made with the same ``round`` as there;
    the rest is laid out in numpy, one row of characters per tile.
    """
    sx, sy = heatmap.pixel_size
    ox, oy = heatmap.origin
    rows, cols = np.nonzero(heatmap.tissue())
    if rows.size > MANY_TILES:
        log.warning("writing %d tile objects; QuPath may be slow to import them", rows.size)
    height, width = heatmap.shape
    xs = ascii_rows([_dumps(round(ox + c * sx, 2)) for c in range(width + 1)])
    ys = ascii_rows([_dumps(round(oy + r * sy, 2)) for r in range(height + 1)])
    for start in range(0, rows.size, _TILE_BLOCK):
        r, c = rows[start : start + _TILE_BLOCK], cols[start : start + _TILE_BLOCK]
        n = len(r)
        x0, x1, y0, y1 = xs[c], xs[c + 1], ys[r], ys[r + 1]
        comma, between = ascii_codes(","), ascii_codes("],[")
        columns = [
            np.where(np.arange(n) > 0, ord(","), 0)[:, None],
            np.where(np.arange(n) > 0, ord("\n"), 0)[:, None],
            ascii_codes('{"type":"Feature","id":"'),
            feature_id_chars(seed, first_id + start, n),
            ascii_codes('","geometry":{"type":"Polygon","coordinates":[[['),
            *(x0, comma, y0, between, x1, comma, y0, between, x1, comma, y1, between),
            *(x0, comma, y1, between, x0, comma, y0),
            ascii_codes(f']]]}},"properties":{{"objectType":"tile","measurements":{{{_dumps(MEASUREMENT)}:'),
            round4_chars(heatmap.probabilities[r, c]),
            ascii_codes("}}}"),
        ]
        yield joined_rows(columns, n), n


def _write_collection(out: TextIO, blocks: Iterable[tuple[str, int]]) -> int:
    """Write a FeatureCollection from blocks of feature texts (joined by ``,\\n``); returns the count."""
    out.write('{"type":"FeatureCollection","features":[\n')
    count = 0
    for text, n in blocks:
        if not n:
            continue
        if count:
            out.write(",\n")
        out.write(text)
        count += n
    out.write("\n]}\n")
    return count


def write_geojson(
    heatmap: Heatmap, path: PathLike, *, threshold: float = 0.5, tiles: bool = False, simplify: float = 0.25
) -> Path:
    """Write ``heatmap.geojson`` (streamed, atomically): annotations, then tile objects if ``tiles``."""
    seed = _id_seed(heatmap, threshold)
    regions = _region_feature_texts(heatmap, threshold, simplify, seed)
    blocks: Iterable[tuple[str, int]] = [(",\n".join(regions), len(regions))]
    if tiles:  # tile ids continue after the region ids: all distinct
        blocks = itertools.chain(blocks, _tile_blocks(heatmap, seed, first_id=len(regions)))
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        count = _write_collection(out, blocks)
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
