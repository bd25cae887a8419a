"""Marching-squares contours of a heatmap at a threshold, as closed rings in pixel-edge coordinates.

:func:`contour_rings` gives, point for point, the rings :func:`skimage.measure.find_contours` gives on the
zero-padded heatmap, assembled from one array of segments rather than skimage's loop over them; where
skimage's result would depend on that loop (a contour point exactly on a pixel centre), it asks skimage.
"""

from __future__ import annotations

import numpy as np

from .rings import Rings

# Marching squares, the same contours as skimage.measure.find_contours(fully_connected="low",
# positive_orientation="high") on a padded image, assembled with numpy instead of a loop over segments.
#
# Square corners: ul = 1, ur = 2, ll = 4, lr = 8 (set where the value is above the level). Edges of a
# square: 0 top, 1 bottom, 2 left, 3 right. Segments per case, low values on the left, as
# skimage._find_contours_cy._get_contour_segments emits them with vertex_connect_high=False.
_TOP, _BOTTOM, _LEFT, _RIGHT = 0, 1, 2, 3
_SEGMENTS: dict[int, tuple[tuple[int, int], ...]] = {
    1: ((_TOP, _LEFT),),
    2: ((_RIGHT, _TOP),),
    3: ((_RIGHT, _LEFT),),
    4: ((_LEFT, _BOTTOM),),
    5: ((_TOP, _BOTTOM),),
    6: ((_RIGHT, _TOP), (_LEFT, _BOTTOM)),
    7: ((_RIGHT, _BOTTOM),),
    8: ((_BOTTOM, _RIGHT),),
    9: ((_TOP, _LEFT), (_BOTTOM, _RIGHT)),
    10: ((_BOTTOM, _TOP),),
    11: ((_BOTTOM, _LEFT),),
    12: ((_LEFT, _RIGHT),),
    13: ((_TOP, _RIGHT),),
    14: ((_LEFT, _TOP),),
}


def _segment_table() -> np.ndarray:
    """``(16, 2, 2)``: per case, up to two segments' (from, to) edges; −1 where there is none."""
    table = np.full((16, 2, 2), -1, dtype=np.intp)
    for case, segments in _SEGMENTS.items():
        table[case, : len(segments)] = segments
    return table


_SEGMENT_TABLE = _segment_table()


def _level_segments(image: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Every segment of the ``level`` contour as ``(from edge, to edge)`` ids, in skimage's order.

    Edge ids: the horizontal edge right of pixel ``(r, c)`` is ``r * cols + c``, the vertical edge below it
    ``rows * cols + r * cols + c``. Squares go in row-major order, a saddle's two segments as in the table.
    """
    rows, cols = image.shape
    above = (image > level).view(np.uint8)
    case = above[:-1, :-1] | above[:-1, 1:] << 1 | above[1:, :-1] << 2 | above[1:, 1:] << 3
    squares = np.flatnonzero((case != 0) & (case != 15))
    r, c = np.divmod(squares, cols - 1)
    top = r * cols + c
    left = rows * cols + top
    edges = np.stack([top, top + cols, left, left + 1], axis=1)  # (n, 4): top, bottom, left, right
    table = _SEGMENT_TABLE[case.ravel()[squares]]  # (n, 2, 2)
    present = table[:, :, 0] >= 0
    square_of = np.nonzero(present)[0]
    ends = table[present]  # (m, 2) kinds of edge, segment order
    return edges[square_of, ends[:, 0]], edges[square_of, ends[:, 1]]


def _edge_points(image: np.ndarray, level: float, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(row, col)`` where the contour crosses each edge, interpolated as skimage does."""
    rows, cols = image.shape
    vertical = edges >= rows * cols
    start = edges - rows * cols * vertical  # the edge's top or left pixel, flat
    r, c = np.divmod(start, cols)
    flat = image.ravel()
    a, b = flat[start], flat[start + np.where(vertical, cols, 1)]
    fraction = (level - a) / (b - a)
    return np.where(vertical, r + fraction, r), np.where(vertical, c, c + fraction)


def _successors(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """For each segment, the segment that starts on the edge where it ends.

    Every crossed edge is the end of one segment and the start of one: the sorted ends and sorted starts
    are the same list, which pairs them.
    """
    by_source, by_target = np.argsort(source, kind="stable"), np.argsort(target, kind="stable")
    sources = source[by_source]
    assert np.array_equal(sources, target[by_target]), "every crossed edge ends one segment"
    assert (np.diff(sources) > 0).all(), "and starts one"
    successor = np.empty_like(by_source)
    successor[by_target] = by_source
    return successor


def _contour_walk(successor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The segments as skimage's assembly leaves them: contours (cycles of ``successor``) ordered by their
    first segment, each walked backwards from its last segment. Returns the segment order and the contour
    sizes.

    The cycles come from scipy's connected components; the walk is one depth-first pass over a single path
    that goes backwards round each contour and then on to the next contour's last segment.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components, depth_first_order

    n = len(successor)
    if not n:
        return successor, successor
    step = np.arange(n + 1)
    _, label = connected_components(
        csr_matrix((np.ones(n, np.int8), successor, step), shape=(n, n)), connection="weak"
    )
    by_label = np.argsort(label, kind="stable")
    bounds = np.flatnonzero(np.diff(label[by_label], prepend=-1))
    contours = np.argsort(np.minimum.reduceat(by_label, bounds))  # ordered by their first segment
    lasts = np.maximum.reduceat(by_label, bounds)[contours]
    sizes = np.diff(bounds, append=n)[contours]
    backwards = np.empty(n, dtype=np.intp)
    backwards[successor] = np.arange(n)
    ends = successor[lasts]  # a backward walk from a contour's last segment ends at the one after it
    backwards[ends[:-1]] = lasts[1:]
    linked = np.ones(n, dtype=bool)
    linked[ends[-1]] = False
    path = csr_matrix((np.ones(n - 1, np.int8), backwards[linked], np.cumsum(np.r_[0, linked])), shape=(n, n))
    walk = depth_first_order(path, int(lasts[0]), directed=True, return_predecessors=False)
    assert len(walk) == n, "one path through every segment"
    return walk, sizes


def _marching_squares(image: np.ndarray, level: float) -> Rings | None:
    """Closed contours of ``image > level`` as ``(x, y) = (col − 0.5, row − 0.5)``: the rings of
    :func:`_skimage_rings`, point for point, or None where skimage's result would depend on its loop.

    ``image`` (float64) must be low (≤ ``level``) all along its border, so every contour is closed. Each
    edge the contour crosses then holds one point, the end of one segment and the start of the next, unless
    a point falls on a pixel centre (a value equal to the level): then points of different edges coincide
    and skimage's joining depends on its order, so None. Otherwise skimage's assembly amounts to: contours
    ordered by their first segment, each starting at the end of its last segment and walked backwards
    (``positive_orientation="high"`` reverses it), closed by repeating that point.
    """
    source, target = _level_segments(image, level)
    row, col = _edge_points(image, level, source)  # each segment's first point
    moving = np.where(source >= image.size, row, col)  # the coordinate interpolated along the edge
    if (moving == np.floor(moving)).any():
        return None
    walk, sizes = _contour_walk(_successors(source, target))
    # Segment starts from the last segment back round to the one after it, which starts where the last
    # one ends: the contour's first point, put in front.
    starts = np.cumsum(sizes) - sizes
    walk = np.insert(walk, starts, walk[starts + sizes - 1])
    return Rings(np.stack([col[walk] - 0.5, row[walk] - 0.5], axis=1), sizes + 1)


def contour_rings(probabilities: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Closed marching-squares contours of ``probabilities ≥ threshold`` as ``(x, y)`` in pixel-edge space.

    Exteriors wind negative and holes positive (flipped later); see :func:`_skimage_rings`.
    """
    filled = np.nan_to_num(np.asarray(probabilities, dtype=np.float32), nan=0.0)
    if not (filled >= threshold).any():
        return []
    padded = np.pad(filled, 1, constant_values=0.0)  # closes every contour
    rings = _marching_squares(padded.astype(np.float64), float(threshold))
    return _skimage_rings(padded, threshold) if rings is None else rings.split()


def _skimage_rings(padded: np.ndarray, threshold: float) -> list[np.ndarray]:
    """:func:`skimage.measure.find_contours` rings; what :func:`_marching_squares` reproduces faster."""
    from skimage.measure import find_contours

    # 'high': contours wind counter-clockwise (in row/col) around values above the level, clockwise around
    # holes; in (x, y) = (col, row) that makes exteriors negative and holes positive before we flip them.
    contours = find_contours(padded, threshold, fully_connected="low", positive_orientation="high")
    # (row, col) in padded index space → (x, y) in pixel-edge space: −1 for the pad, +0.5 to the centre.
    return [contour[:, ::-1] - 0.5 for contour in contours]
