"""heatmap.geojson against QuPath's GeoJSON import conventions.

QuPath (qupath-core ``PathObjectTypeAdapters``/``ROITypeAdapters``) reads a FeatureCollection of Features:
``id`` a UUID string, ``geometry`` Polygon/MultiPolygon in full-resolution pixel coordinates (origin top left),
``properties.objectType`` in annotation/detection/tile/cell, ``classification`` ``{name, color: [r, g, b]}``
and ``measurements`` as a flat ``{name: number}`` map. Geometry must be valid for JTS: closed rings of at least
4 positions, no self-intersections, holes inside their shell. QuPath itself (Java) is not available to the
tests, so :func:`check_qupath_geojson` checks all of that directly.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_export_contours import KINDS, random_probabilities

from pathoflash.export import contours, geojson
from pathoflash.export.geojson import point_in_ring, signed_area, simplify_ring, simplify_rings, tumor_regions
from pathoflash.export.geojson_text import feature_id_chars, polygon_coordinates_json
from pathoflash.export.rings import Rings
from pathoflash.heatmap import Heatmap

OBJECT_TYPES = {"annotation", "detection", "tile", "cell"}


# ---- a checker for QuPath's conventions ---------------------------------------------------------------
def _segments_cross(a: np.ndarray, b: np.ndarray, *, same_ring: bool) -> bool:
    """Whether any segment of closed ring ``a`` properly intersects any of ring ``b`` (touching ends of
    neighbouring segments of the same ring excluded)."""
    p, p2 = a[:-1], a[1:]
    q, q2 = b[:-1], b[1:]

    def orient(o: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        return (s[..., 0] - o[..., 0]) * (t[..., 1] - o[..., 1]) - (s[..., 1] - o[..., 1]) * (
            t[..., 0] - o[..., 0]
        )

    P, P2 = p[:, None, :], p2[:, None, :]
    Q, Q2 = q[None, :, :], q2[None, :, :]
    d1, d2 = orient(P, P2, Q), orient(P, P2, Q2)
    d3, d4 = orient(Q, Q2, P), orient(Q, Q2, P2)
    proper = (d1 * d2 < 0) & (d3 * d4 < 0)
    if same_ring:
        n = len(p)
        i, j = np.indices((n, n))
        adjacent = (abs(i - j) <= 1) | (abs(i - j) == n - 1)
        proper &= ~adjacent
    return bool(proper.any())


def check_ring(ring: list[list[float]]) -> np.ndarray:
    assert len(ring) >= 4, "a linear ring needs at least 4 positions"
    assert ring[0] == ring[-1], "ring not closed"
    arr = np.asarray(ring, dtype=np.float64)
    assert arr.shape[1] == 2 and np.isfinite(arr).all()
    assert not _segments_cross(arr, arr, same_ring=True), "self-intersecting ring"
    return arr


def check_polygon(rings: list[list[list[float]]]) -> tuple[np.ndarray, list[np.ndarray]]:
    shell = check_ring(rings[0])
    assert signed_area(shell) > 0, "exterior ring must have positive signed area (right-hand rule)"
    holes = [check_ring(r) for r in rings[1:]]
    for hole in holes:
        assert signed_area(hole) < 0, "holes must have negative signed area"
        assert all(point_in_ring(x, y, shell) for x, y in hole[:-1]), "hole vertex outside its shell"
        assert not _segments_cross(hole, shell, same_ring=False), "hole crosses its shell"
    for i, a in enumerate(holes):
        for b in holes[i + 1 :]:
            assert not _segments_cross(a, b, same_ring=False), "holes cross each other"
    return shell, holes


def check_qupath_geojson(doc: dict[str, Any]) -> list[dict[str, Any]]:
    assert doc["type"] == "FeatureCollection"
    features = doc["features"]
    assert isinstance(features, list)
    ids = set()
    for feature in features:
        assert feature["type"] == "Feature"
        ids.add(str(uuid.UUID(feature["id"])))  # QuPath: UUID.fromString(id)
        geometry = feature["geometry"]
        assert geometry["type"] in {"Polygon", "MultiPolygon"}
        polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
        for rings in polygons:
            check_polygon(rings)
        props = feature["properties"]
        assert props["objectType"] in OBJECT_TYPES
        if "classification" in props:
            cls = props["classification"]
            assert isinstance(cls["name"], str) and cls["name"]
            assert len(cls["color"]) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in cls["color"])
        if "measurements" in props:
            m = props["measurements"]
            assert isinstance(m, dict)
            assert all(
                isinstance(k, str) and isinstance(v, int | float) and math.isfinite(v) for k, v in m.items()
            )
    assert len(ids) == len(features), "feature ids must be unique"
    return features


# ---- synthetic heatmaps -------------------------------------------------------------------------------
def ring_heatmap() -> np.ndarray:
    """A 'tumor' square with a hole holding an island, a separate blob, and no tissue (NaN) on the left."""
    p = np.full((60, 80), 0.05, dtype=np.float32)
    p[10:50, 20:60] = 0.9  # shell, 40×40
    p[20:40, 30:50] = 0.2  # hole, 20×20
    p[26:34, 36:44] = 0.95  # island in the hole, 8×8
    p[5:12, 66:74] = 0.8  # separate blob, 7×8
    p[:, :8] = np.nan
    return p


def make_heatmap(p: np.ndarray, **kwargs: Any) -> Heatmap:
    rows, cols = p.shape
    defaults: dict[str, Any] = dict(mpp=8.0, slide_mpp=(0.5, 0.5), slide_dimensions=(cols * 16, rows * 16))
    defaults.update(kwargs)
    return Heatmap(probabilities=p, **defaults)


def load(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ---- tests ----------------------------------------------------------------------------------------------
def test_regions_have_holes_islands_and_pixel_areas() -> None:
    regions = tumor_regions(ring_heatmap(), 0.5, simplify=0.0)
    assert len(regions) == 3
    shell, island, blob = sorted(regions, key=lambda r: -signed_area(r.exterior))
    assert len(shell.holes) == 1 and not island.holes and not blob.holes
    # Edges are interpolated between pixel centres: the 0.8-vs-0.05 blob's edge sits 0.1 px inside the pixel
    # edge ((0.8 − 0.5) / 0.75 = 0.4 of the centre distance), the 0.9/0.95 regions' within 0.05 px.
    assert shell.area == pytest.approx(40 * 40 - 20 * 20, rel=0.02)
    assert island.area == pytest.approx(8 * 8, rel=0.05)
    assert blob.area == pytest.approx((7 - 0.2) * (8 - 0.2), rel=0.02)
    # The shell's outline follows pixel edges x ∈ [20, 60], y ∈ [10, 50] (to within the interpolation).
    x, y = shell.exterior[:, 0], shell.exterior[:, 1]
    assert x.min() == pytest.approx(20, abs=0.1) and x.max() == pytest.approx(60, abs=0.1)
    assert y.min() == pytest.approx(10, abs=0.1) and y.max() == pytest.approx(50, abs=0.1)
    hx, hy = shell.holes[0][:, 0], shell.holes[0][:, 1]
    assert hx.min() == pytest.approx(30, abs=0.2) and hx.max() == pytest.approx(50, abs=0.2)
    assert hy.min() == pytest.approx(20, abs=0.2) and hy.max() == pytest.approx(40, abs=0.2)


def test_geojson_follows_qupath_conventions(tmp_path: Path) -> None:
    heatmap = make_heatmap(ring_heatmap(), model_id="synthetic")
    path = heatmap.to_geojson(tmp_path / "heatmap.geojson", threshold=0.5)
    features = check_qupath_geojson(load(path))
    assert len(features) == 3
    for feature in features:
        props = feature["properties"]
        assert props["objectType"] == "annotation"
        assert props["classification"]["name"] == "Tumor"
    with_hole = [f for f in features if len(f["geometry"]["coordinates"]) == 2]
    assert len(with_hole) == 1
    # Level-0 coordinates: 16 level-0 px per heatmap px; the shell spans pixel edges 20..60 → 320..960.
    shell = np.asarray(with_hole[0]["geometry"]["coordinates"][0])
    assert shell[:, 0].min() == pytest.approx(320, abs=2) and shell[:, 0].max() == pytest.approx(960, abs=2)
    assert shell[:, 1].min() == pytest.approx(160, abs=2) and shell[:, 1].max() == pytest.approx(800, abs=2)
    area_um2 = with_hole[0]["properties"]["measurements"]["area_um2"]
    assert area_um2 == pytest.approx((40 * 40 - 20 * 20) * 64, rel=0.03)


def test_coordinates_use_origin_and_non_integer_scale(tmp_path: Path) -> None:
    p = np.zeros((30, 30), dtype=np.float32)
    p[10:20, 5:15] = 1.0
    heatmap = make_heatmap(p, slide_mpp=(0.499, 0.25), origin=(100.0, 40.0), slide_dimensions=(1000, 1000))
    sx, sy = 8.0 / 0.499, 8.0 / 0.25
    features = check_qupath_geojson(load(heatmap.to_geojson(tmp_path / "h.geojson")))
    (feature,) = features
    ring = np.asarray(feature["geometry"]["coordinates"][0])
    assert ring[:, 0].min() == pytest.approx(100 + 5 * sx, abs=0.05 * sx)
    assert ring[:, 0].max() == pytest.approx(100 + 15 * sx, abs=0.05 * sx)
    assert ring[:, 1].min() == pytest.approx(40 + 10 * sy, abs=0.05 * sy)
    assert ring[:, 1].max() == pytest.approx(40 + 20 * sy, abs=0.05 * sy)


def test_tile_objects_carry_probabilities(tmp_path: Path) -> None:
    p = ring_heatmap()
    heatmap = make_heatmap(p)
    features = check_qupath_geojson(load(heatmap.to_geojson(tmp_path / "h.geojson", tiles=True)))
    tiles = [f for f in features if f["properties"]["objectType"] == "tile"]
    assert len(tiles) == int(np.isfinite(p).sum())
    seen = set()
    for tile in tiles:
        ring = np.asarray(tile["geometry"]["coordinates"][0])
        x0, y0 = ring.min(axis=0)
        assert ring.max(axis=0) - ring.min(axis=0) == pytest.approx([16, 16])
        row, col = int(y0 // 16), int(x0 // 16)
        assert (x0, y0) == (col * 16, row * 16)
        value = tile["properties"]["measurements"]["tumor_probability"]
        assert np.isfinite(p[row, col]) and value == pytest.approx(float(p[row, col]), abs=1e-4)
        seen.add((row, col))
    assert len(seen) == len(tiles)


def test_tiles_respect_the_tissue_mask(tmp_path: Path) -> None:
    p = np.full((20, 20), 0.3, dtype=np.float32)
    mask = np.zeros((40, 40), dtype=bool)  # 4 µm/px: 2 mask px per heatmap px
    mask[:, :20] = True  # left half of the slide is tissue
    heatmap = make_heatmap(p, tissue_mask=mask, tissue_mask_mpp=4.0)
    features = check_qupath_geojson(load(heatmap.to_geojson(tmp_path / "h.geojson", tiles=True)))
    tiles = [f for f in features if f["properties"]["objectType"] == "tile"]
    assert len(tiles) == 20 * 10
    assert max(np.asarray(t["geometry"]["coordinates"][0])[:, 0].max() for t in tiles) == 160


def test_nothing_above_threshold_gives_an_empty_collection(tmp_path: Path) -> None:
    heatmap = make_heatmap(np.full((10, 10), 0.2, dtype=np.float32))
    doc = load(heatmap.to_geojson(tmp_path / "h.geojson", threshold=0.5))
    assert check_qupath_geojson(doc) == []


def test_noisy_heatmap_polygons_stay_valid_after_simplification(tmp_path: Path) -> None:
    from skimage.filters import gaussian

    rng = np.random.default_rng(3)
    p = gaussian(rng.random((70, 90)), sigma=2.5).astype(np.float32)
    p = (p - p.min()) / (p.max() - p.min())
    p[rng.random(p.shape) < 0.02] = np.nan  # scattered unreadable pixels
    heatmap = make_heatmap(p)
    features = check_qupath_geojson(load(heatmap.to_geojson(tmp_path / "h.geojson", threshold=0.55)))
    assert len(features) >= 3
    # Every annotation vertex lies in level-0 bounds of the heatmap.
    for f in features:
        for ring in f["geometry"]["coordinates"]:
            r = np.asarray(ring)
            assert (r >= 0).all() and (r[:, 0] <= 90 * 16).all() and (r[:, 1] <= 70 * 16).all()


def test_output_is_deterministic(tmp_path: Path) -> None:
    heatmap = make_heatmap(ring_heatmap(), model_id="m")
    a = heatmap.to_geojson(tmp_path / "a.geojson", tiles=True).read_bytes()
    b = heatmap.to_geojson(tmp_path / "b.geojson", tiles=True).read_bytes()
    assert a == b
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_bad_threshold_is_rejected(tmp_path: Path) -> None:
    heatmap = make_heatmap(ring_heatmap())
    with pytest.raises(ValueError, match="threshold"):
        heatmap.to_geojson(tmp_path / "h.geojson", threshold=0.0)
    assert not (tmp_path / "h.geojson").exists()


def test_checker_catches_broken_geometry() -> None:
    """The convention checker must fail on what QuPath/JTS would reject or misread."""
    good: list[list[float]] = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]
    check_polygon([good])
    with pytest.raises(AssertionError, match="closed"):
        check_ring([*good[:-1], [0, 1]])
    with pytest.raises(AssertionError, match="self-intersecting"):
        check_ring([[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]])
    with pytest.raises(AssertionError, match="positive"):
        check_polygon([good[::-1]])
    with pytest.raises(AssertionError, match="outside"):
        check_polygon([good, [[20, 20], [20, 25], [25, 25], [25, 20], [20, 20]]])


def test_simplify_ring_keeps_corners_and_stays_within_tolerance() -> None:
    t = np.linspace(0, 2 * np.pi, 400)
    ring = np.stack([50 + 30 * np.cos(t) + 0.05 * np.sin(37 * t), 50 + 20 * np.sin(t)], axis=1)
    ring[-1] = ring[0]
    simple = simplify_ring(ring, 0.25)
    assert np.array_equal(simple[0], simple[-1]) and 8 < len(simple) < 100
    # Every dropped vertex is within the tolerance of the simplified outline.
    a, b = simple[:-1], simple[1:]
    ab = b - a
    for p in ring:
        t_ = np.clip(((p - a) * ab).sum(1) / (ab * ab).sum(1), 0, 1)
        assert np.min(np.hypot(*(a + t_[:, None] * ab - p).T)) <= 0.25 + 1e-9
    side = np.linspace(0, 10, 11)[:-1]  # a 10 × 10 square with a vertex every unit: 41 points
    zeros, tens = np.zeros(10), np.full(10, 10.0)
    square = np.concatenate(
        [np.c_[side, zeros], np.c_[tens, side], np.c_[10 - side, tens], np.c_[zeros, 10 - side], [[0.0, 0.0]]]
    )
    corners = simplify_ring(square, 0.1)
    assert {tuple(p) for p in corners.tolist()} == {(0, 0), (10, 0), (10, 10), (0, 10)}


# ---- batch simplification against a plain recursive Douglas–Peucker --------------------------------------
def reference_simplify(ring: np.ndarray, tolerance: float, seen: set[str] | None = None) -> np.ndarray:
    """Douglas–Peucker on one closed ring, one vertex at a time: the oracle for :func:`simplify_rings`.

    The same rules as the implementation (split first at the vertex farthest from the start, the first
    maximum wins, distance to the point of a zero-length chord, ``> tolerance``, rings of ≤ 16 points
    untouched), in plain recursion. ``seen`` collects which special cases ("tie", "zero chord") came up.
    """
    n = len(ring)
    if n <= 16:
        return ring
    pts = ring.tolist()

    def farthest(candidates: range, distance: Any) -> tuple[float, int]:
        best, at = -1.0, -1
        for k in candidates:
            d = float(distance(pts[k]))
            if d == best and seen is not None:
                seen.add("tie")
            if d > best:  # strictly: the first maximum wins
                best, at = d, k
        return best, at

    def split(i: int, j: int) -> None:
        if j - i < 2:
            return
        (ax, ay), (bx, by) = pts[i], pts[j]
        length = float(np.hypot(bx - ax, by - ay))
        if length == 0.0:
            if seen is not None:
                seen.add("zero chord")
            best, at = farthest(range(i + 1, j), lambda p: np.hypot(p[0] - ax, p[1] - ay))
        else:
            best, at = farthest(
                range(i + 1, j), lambda p: abs((bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax)) / length
            )
        if best > tolerance:
            keep.add(at)
            split(i, at)
            split(at, j)

    keep = {0, n - 1}
    x0, y0 = pts[0]
    _, far = farthest(range(n), lambda p: np.hypot(p[0] - x0, p[1] - y0))
    keep.add(far)
    split(0, far)
    split(far, n - 1)
    return ring[sorted(keep)]


def closed(points: np.ndarray) -> np.ndarray:
    return np.vstack([points, points[:1]])


def random_rings(rng: np.random.Generator) -> list[np.ndarray]:
    """Rings that exercise the edge cases: walks, noisy circles, repeated points, collinear runs and lattice
    coordinates (exact ties), chords of zero length, and every size around the 16-point passthrough."""
    rings = []
    for _ in range(60):  # random walks, some long
        rings.append(closed(np.cumsum(rng.normal(size=(int(rng.integers(3, 400)), 2)), axis=0)))
    for _ in range(60):  # circles with noise
        t = np.sort(rng.random(int(rng.integers(3, 300)))) * 2 * np.pi
        r = rng.uniform(1, 50) + rng.normal(scale=rng.uniform(0, 2), size=t.size)
        rings.append(closed(np.c_[r * np.cos(t), r * np.sin(t)]))
    for _ in range(80):  # half-pixel lattice walks: collinear runs, repeated points, equal distances
        steps = rng.integers(-1, 2, size=(int(rng.integers(3, 200)), 2)) * 0.5
        rings.append(closed(np.cumsum(steps, axis=0)))
    for _ in range(40):  # every point repeated a few times
        base = np.cumsum(rng.normal(size=(int(rng.integers(3, 60)), 2)), axis=0)
        rings.append(closed(np.repeat(base, rng.integers(1, 4, size=len(base)), axis=0)))
    for _ in range(20):  # out and back along the same path
        path = np.cumsum(rng.integers(-2, 3, size=(int(rng.integers(2, 40)), 2)), axis=0).astype(float)
        rings.append(np.vstack([[0.0, 0.0], path, path[-2::-1], [0.0, 0.0]]))
    for _ in range(20):
        # A closed ring only meets a zero-length chord when it is a single point (a copy of a chord's end lies
        # on its line, so it is never split at). An open one that ends at its farthest point does: out to
        # (20, 0), then once round a loop inside the circle of radius 20 back to (20, 0).
        out_x = np.sort(rng.uniform(0, 18, size=int(rng.integers(1, 30))))
        t = np.sort(rng.uniform(0, 2 * np.pi, size=int(rng.integers(1, 60))))
        r = rng.uniform(0.5, 3)
        rings.append(
            np.concatenate(
                [
                    [[0.0, 0.0]],
                    np.c_[out_x, rng.uniform(-1, 1, size=out_x.size)],
                    [[20.0, 0.0]],
                    np.c_[20 - r + r * np.cos(t), r * np.sin(t)],
                    [[20.0, 0.0]],
                ]
            )
        )
    rings.append(np.zeros((30, 2)))  # a single point
    # A square with unit-spaced (collinear) sides.
    corners = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
    ends = np.roll(corners, -1, axis=0)
    sides = [np.linspace(a, b, 10, endpoint=False) for a, b in zip(corners, ends, strict=True)]
    rings.append(closed(np.concatenate(sides)))
    for n in range(3, 18):  # around the passthrough boundary (n counts the closing point)
        for _ in range(4):
            rings.append(closed(rng.normal(size=(n - 1, 2)) * 3))
    return rings


@pytest.mark.parametrize("tolerance", [0.0, 0.05, 0.25, 1.0, 4.0])
def test_simplify_rings_matches_the_recursive_reference(tolerance: float) -> None:
    rng = np.random.default_rng(11)
    rings = random_rings(rng)
    seen: set[str] = set()
    expected = [reference_simplify(ring, tolerance, seen) for ring in rings]
    got = simplify_rings(rings, tolerance)
    assert len(got) == len(rings)
    for ring, want, have in zip(rings, expected, got, strict=True):
        assert np.array_equal(have, want), (
            f"{len(ring)}-point ring: kept {len(have)} vertices, expected {len(want)}"
        )
        assert np.array_equal(simplify_ring(ring, tolerance), want)
        if len(ring) <= 16:
            assert have is ring  # passed through untouched
    assert {"tie", "zero chord"} <= seen  # the random rings did exercise the special cases


def test_simplify_rings_handles_nothing_to_do() -> None:
    assert simplify_rings([], 0.25) == []
    small = [closed(np.eye(2)), closed(np.arange(30.0).reshape(15, 2))]
    assert all(a is b for a, b in zip(simplify_rings(small, 0.25), small, strict=True))


@pytest.mark.parametrize(("simplify", "min_area"), [(0.25, 0.0), (0.6, 2.0)])
def test_tumor_regions_same_with_batch_and_reference_simplification(
    monkeypatch: pytest.MonkeyPatch, simplify: float, min_area: float
) -> None:
    from skimage.filters import gaussian

    rng = np.random.default_rng(5)
    p = gaussian(rng.random((160, 220)), sigma=2.0).astype(np.float32)
    p = (p - p.min()) / (p.max() - p.min())
    p[rng.random(p.shape) < 0.01] = np.nan
    batch = tumor_regions(p, 0.5, simplify=simplify, min_area=min_area)
    monkeypatch.setattr(
        geojson, "simplify_rings", lambda rings, tolerance: [reference_simplify(r, tolerance) for r in rings]
    )
    reference = tumor_regions(p, 0.5, simplify=simplify, min_area=min_area)
    assert len(batch) > 20 and any(r.holes for r in batch)
    assert len(batch) == len(reference)
    for a, b in zip(batch, reference, strict=True):
        assert np.array_equal(a.exterior, b.exterior)
        assert len(a.holes) == len(b.holes)
        assert all(np.array_equal(h, g) for h, g in zip(a.holes, b.holes, strict=True))


# ---- the vectorised pipeline against plain per-ring references -------------------------------------------
def reference_tumor_regions(p: np.ndarray, threshold: float, simplify: float, min_area: float) -> list[Any]:
    """tumor_regions one ring at a time: skimage's contours, each hole tested against its candidate shells."""
    filled = np.nan_to_num(p, nan=0.0)
    if not (filled >= threshold).any():
        return []
    rings = contours._skimage_rings(np.pad(filled, 1), threshold)
    if simplify > 0:
        rings = simplify_rings(rings, simplify)
    exteriors, holes = [], []
    for ring in rings:
        if not np.array_equal(ring[0], ring[-1]):
            ring = np.vstack([ring, ring[:1]])
        area = signed_area(ring) if len(ring) >= 4 else 0.0
        if abs(area) > min_area and area != 0.0:
            (exteriors if area < 0 else holes).append(ring[::-1].copy())
    areas = [signed_area(e) for e in exteriors]
    holes_of: list[list[np.ndarray]] = [[] for _ in exteriors]
    for hole in holes:
        x, y = hole[0]
        boxes = [
            i for i, e in enumerate(exteriors) if (e.min(0) <= hole[0]).all() and (hole[0] <= e.max(0)).all()
        ]
        for i in sorted(boxes, key=areas.__getitem__):  # smallest first
            if point_in_ring(x, y, exteriors[i]):
                holes_of[i].append(hole)
                break
    regions = [geojson.Region(e, tuple(h)) for e, h in zip(exteriors, holes_of, strict=True)]
    regions.sort(key=lambda r: -r.area)
    return regions


@pytest.mark.parametrize("simplify", [0.0, 0.25, 1.0])
def test_tumor_regions_match_the_per_ring_reference(simplify: float) -> None:
    rng = np.random.default_rng(22)
    with_holes = 0
    for i in range(60):
        p = random_probabilities(rng, KINDS[i % 4])
        threshold = float(rng.choice([0.5, 0.35, 0.65]))
        plain = reference_tumor_regions(p, threshold, simplify, 0.0)
        ring_areas = sorted(
            {abs(signed_area(r)) for region in plain for r in (region.exterior, *region.holes)}
        )
        for min_area in [0.0, 1.5, *ring_areas[len(ring_areas) // 2 :][:1]]:  # one exactly at a ring's area
            expected = reference_tumor_regions(p, threshold, simplify, min_area)
            packed = geojson._region_rings(p, threshold, simplify=simplify, min_area=min_area)
            assert packed.areas.tolist() == [r.area for r in expected]  # the same sums, the same floats
            got = packed.regions()
            assert len(got) == len(expected)
            for a, b in zip(got, expected, strict=True):
                assert np.array_equal(a.exterior, b.exterior) and a.area == b.area
                assert len(a.holes) == len(b.holes)
                assert all(np.array_equal(h, g) for h, g in zip(a.holes, b.holes, strict=True))
            with_holes += any(r.holes for r in got)
    assert with_holes > 20


def test_region_areas_add_up_holes_as_region_area_does() -> None:
    rng = np.random.default_rng(29)
    exterior_areas = rng.uniform(1, 1e4, size=50)
    region_of = np.sort(rng.integers(0, 50, size=400))  # holes grouped by region, most regions with several
    hole_areas = -rng.uniform(0, 1, size=400) * exterior_areas[region_of] / 8
    areas = geojson._region_areas(exterior_areas, hole_areas, region_of)
    expected = [
        float(e) + sum(h for h, r in zip(hole_areas.tolist(), region_of.tolist(), strict=True) if r == i)
        for i, e in enumerate(exterior_areas.tolist())
    ]
    assert areas.tolist() == expected


def test_exteriors_and_holes_decide_as_the_rings_own_areas() -> None:
    rng = np.random.default_rng(24)
    rings = random_rings(rng)
    rings += [np.vstack([r, r[-2::-1]]) for r in rings[:30]]  # out and back: area exactly 0 (or nearly)
    rings = [r for r in rings if len(r) >= 4]
    packed = Rings.pack(rings)
    areas = np.array([signed_area(r) for r in rings])
    flipped = np.array([signed_area(r[::-1].copy()) for r in rings])
    for min_area in [0.0, 1.0, float(np.abs(areas[7])), float(np.median(np.abs(areas)))]:
        exterior, hole = geojson._exteriors_and_holes(packed, flipped, min_area)
        kept = ~((np.abs(areas) <= min_area) | (areas == 0.0))
        assert exterior.tolist() == np.flatnonzero(kept & (areas < 0)).tolist()
        assert hole.tolist() == np.flatnonzero(kept & (areas > 0)).tolist()
    # The bound holds: the reversed ring's area is within twice of minus the ring's.
    assert (np.abs(areas + flipped) <= 2 * geojson._area_error(packed)).all()


def test_coordinates_text_is_what_json_dumps_writes() -> None:
    rng = np.random.default_rng(25)
    values = np.concatenate(
        [
            rng.uniform(-1e4, 1e4, 400),
            rng.uniform(-0.02, 0.02, 100),  # rounds to 0.0, -0.0, ±0.01
            np.round(rng.uniform(0, 5e5, 100)),  # whole numbers
            rng.uniform(1e9, 9e11, 50),  # many digits
            [0.0, -0.0, 0.1, 0.05, 10.0, 100.5, -0.004, 999.995, 1.005],
        ]
    )
    rng.shuffle(values)
    values = values[: len(values) // 2 * 2]
    xy = geojson._level0_points(
        Rings(values.reshape(-1, 2), np.array([len(values) // 2])),
        make_heatmap(np.zeros((2, 2), np.float32), scale=(1.0, 1.0)),
    )  # rounded to hundredths as in the file, first point repeated last
    sizes = np.array([5, 4, 7, len(xy) - 16])
    counts = np.array([2, 1, 1])
    expected = [json.dumps(c, separators=(",", ":")) for c in geojson._polygon_coordinates(xy, sizes, counts)]
    assert polygon_coordinates_json(xy, sizes, counts) == expected
    assert "-0.0" in "".join(expected)


def test_feature_id_chars_are_uuid5_ids() -> None:
    heatmap = make_heatmap(ring_heatmap(), model_id="ids")
    seed = geojson._id_seed(heatmap, 0.5)
    ids = geojson._feature_ids(heatmap, 0.5)
    expected = [next(ids) for _ in range(300)]
    chars = feature_id_chars(seed, 100, 200)
    assert [bytes(row).decode() for row in chars] == expected[100:]
    assert feature_id_chars(seed, 0, 0).shape == (0, 36)


@pytest.mark.parametrize("origin", [(0.0, 0.0), (-37.25, 1234.567)])
def test_file_is_json_dumps_of_the_features(tmp_path: Path, origin: tuple[float, float]) -> None:
    """The text written in numpy equals the plain writer: json.dumps of region_features and tile dicts."""
    from skimage.filters import gaussian

    p = gaussian(np.random.default_rng(27).random((90, 70)), sigma=1.5).astype(np.float32)
    p = (p - p.min()) / (p.max() - p.min())
    p[:5, :] = np.nan
    heatmap = make_heatmap(p, origin=origin, slide_mpp=(0.4999, 0.25), model_id="plain")
    path = heatmap.to_geojson(tmp_path / "h.geojson", threshold=0.6, tiles=True)
    regions = geojson.region_features(heatmap, 0.6)
    ids = geojson._feature_ids(heatmap, 0.6)
    for _ in regions:
        next(ids)
    features = [*regions, *geojson._tile_features(heatmap, ids)]
    assert len(regions) > 5 and any(len(f["geometry"]["coordinates"]) > 1 for f in regions)
    expected = (
        '{"type":"FeatureCollection","features":[\n'
        + ",\n".join(json.dumps(f, separators=(",", ":"), ensure_ascii=False) for f in features)
        + "\n]}\n"
    )
    assert path.read_text(encoding="utf-8") == expected
