"""Packed rings: hole assignment, bounding-box candidates and batched point-in-ring tests against plain
per-ring loops."""

from __future__ import annotations

import numpy as np
import pytest

from pathoflash.export.rings import (
    Rings,
    _bbox_candidates,
    _points_in_rings,
    assign_holes,
    point_in_ring,
    signed_area,
)


def closed(points: np.ndarray) -> np.ndarray:
    return np.vstack([points, points[:1]])


def square(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Closed counter-clockwise (positive) square ring."""
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float64)


def reference_assign_holes(exteriors: list[np.ndarray], holes: list[np.ndarray]) -> list[int]:
    """Per hole, the first exterior in ``np.argsort`` of the candidates' areas that holds its first point."""
    areas = np.array([signed_area(e) for e in exteriors])
    lo, hi = np.array([e.min(axis=0) for e in exteriors]), np.array([e.max(axis=0) for e in exteriors])
    owner = []
    for hole in holes:
        x, y = hole[0]
        candidates = np.flatnonzero((lo[:, 0] <= x) & (x <= hi[:, 0]) & (lo[:, 1] <= y) & (y <= hi[:, 1]))
        enclosing = (
            i for i in candidates[np.argsort(areas[candidates])] if point_in_ring(x, y, exteriors[i])
        )
        owner.append(int(next(enclosing, -1)))
    return owner


def test_assign_holes_breaks_ties_in_area_as_argsort_does() -> None:
    """Exteriors of exactly equal area enclosing the same point (overlapping, so never from contours) and
    more than 16 candidates, where numpy's argsort is not a stable sort: its order decides, as before."""
    rng = np.random.default_rng(0)
    sides = rng.choice([20, 24, 28, 32], size=100).tolist()
    corners = rng.integers(0, 10, size=(100, 2)).tolist()
    exteriors = [square(x, y, x + w, y + w) for (x, y), w in zip(corners, sides, strict=True)]
    holes = [square(x, y, x + 1, y + 1)[::-1] for x, y in rng.uniform(0, 30, size=(60, 2)).tolist()]
    rings = Rings.pack(exteriors)
    owner = assign_holes(rings, rings.signed_areas(), Rings.pack(holes))
    assert owner.tolist() == reference_assign_holes(exteriors, holes)


def test_assign_holes_gives_each_hole_the_smallest_enclosing_exterior() -> None:
    exteriors = [
        square(0, 0, 100, 100),
        square(10, 10, 40, 40),
        square(60, 60, 90, 90),
        square(61, 10, 91, 40),
    ]
    # The same area as exterior 3, overlapping it: a tie only the argsort order decides (lower index first).
    exteriors.append(square(60, 10, 90, 40))
    holes = [square(20, 20, 30, 30), square(50, 50, 55, 55), square(70, 20, 80, 30), square(200, 0, 210, 10)]
    rings = Rings.pack(exteriors)
    owner = assign_holes(rings, rings.signed_areas(), Rings.pack([h[::-1] for h in holes]))
    assert owner.tolist() == [1, 0, 3, -1]


def test_bbox_candidates_and_points_in_rings_match_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pathoflash.export.rings._BATCH", 64)  # many small passes
    rng = np.random.default_rng(23)
    rings = [
        closed(np.round(np.cumsum(rng.normal(size=(int(n), 2)), axis=0) * 2) / 2 + rng.integers(0, 40, 2))
        for n in rng.integers(3, 40, size=80)
    ]
    rings.append(square(5, 5, 5, 5))  # a box of no size
    packed = Rings.pack(rings)
    lo = np.array([r.min(axis=0) for r in rings])
    hi = np.array([r.max(axis=0) for r in rings])
    # Points on the half-unit lattice: on vertices, edges and box sides as often as not.
    points = np.round(rng.uniform(-2, 45, size=(300, 2)) * 2) / 2
    points = np.concatenate([points, [[5.0, 5.0]], rings[0][:3]])
    point, box = _bbox_candidates(points, lo, hi)
    inside = (lo[None, :, :] <= points[:, None, :]).all(axis=2) & (points[:, None, :] <= hi[None, :, :]).all(
        axis=2
    )
    expected_point, expected_box = np.nonzero(inside)
    assert np.array_equal(point, expected_point) and np.array_equal(box, expected_box)
    got = _points_in_rings(points[point], packed, box)
    expected = [
        point_in_ring(x, y, rings[b]) for (x, y), b in zip(points[point].tolist(), box.tolist(), strict=True)
    ]
    assert got.tolist() == expected
    assert 0 < sum(expected) < len(expected)
