"""JSON text laid out in numpy: many numbers, coordinates and ids written at once as character arrays.

Each helper gives byte for byte what :func:`json.dumps` (or ``repr``/``str``) writes for the same values:
rows of ASCII codes, 0 in unused columns, joined with the zeros dropped. The GeoJSON writer uses them for
region coordinates and tile objects.
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections.abc import Sequence

import numpy as np

#: Coordinates below this (in magnitude; slides are far smaller) are written by
#: :func:`polygon_coordinates_json`, where ``repr`` of a value rounded to hundredths is its plain decimal.
PLAIN_DECIMAL_LIMIT = 1e12


def _decimal_chars(scaled: np.ndarray, negative: np.ndarray, decimals: int) -> np.ndarray:
    """``repr`` of the floats nearest to ``±scaled / 10**decimals`` as ASCII codes, ``(n, width)`` uint8
    with 0 in unused columns: sign, integer digits, ``.``, the decimals without trailing zeros (one kept).

    ``scaled`` are non-negative int64. While the value is far from the float spacing (below
    :data:`PLAIN_DECIMAL_LIMIT` for hundredths), no shorter decimal rounds to the same float, so this
    decimal is what ``repr`` (and :func:`json.dumps`) writes.
    """
    whole, fraction = np.divmod(scaled[:, None], 10**decimals)  # (n, 1) each
    width = len(str(int(whole.max()))) if whole.size else 1
    place = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)  # place values of the integer digits
    decimal_place = 10 ** np.arange(decimals - 1, -1, -1, dtype=np.int64)  # 10, 1 for hundredths
    chars = np.zeros((len(scaled), 1 + width + 1 + decimals), dtype=np.uint8)
    chars[:, 0] = np.where(negative, ord("-"), 0)
    leading_zero = (whole < place) & (place > 1)
    chars[:, 1 : width + 1] = np.where(leading_zero, 0, whole // place % 10 + ord("0"))
    chars[:, width + 1] = ord(".")
    trailing_zero = fraction % (decimal_place * 10) == 0  # nothing but zeros from this decimal on
    trailing_zero[:, 0] = False  # "1.0", not "1."
    chars[:, width + 2 :] = np.where(trailing_zero, 0, fraction // decimal_place % 10 + ord("0"))
    return chars


def _hundredths_chars(values: np.ndarray) -> np.ndarray:
    """``repr`` of values rounded to hundredths by :func:`numpy.round` (see :func:`_decimal_chars`)."""
    return _decimal_chars(np.abs(np.rint(values * 100.0)).astype(np.int64), np.signbit(values), 2)


def round4_chars(probabilities: np.ndarray) -> np.ndarray:
    """``repr(round(float(p), 4))`` of float32 values in [0, 1] (see :func:`_decimal_chars`).

    A float32 times 10⁴ is exact in float64 (24 + 14 bits), so :func:`numpy.rint` rounds the exact value
    half to even, as ``round`` does.
    """
    scaled = np.rint(probabilities.astype(np.float64) * 1e4).astype(np.int64)
    return _decimal_chars(scaled, np.zeros(len(scaled), dtype=bool), 4)


def ascii_codes(text: str) -> np.ndarray:
    """``(len(text),)`` uint8: the ASCII codes of ``text``."""
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8)


def ascii_rows(strings: Sequence[str]) -> np.ndarray:
    """``(n, longest)`` uint8: each string's ASCII codes, 0 after its end."""
    width = max((len(s) for s in strings), default=0)
    return np.frombuffer("".join(s.ljust(width, "\0") for s in strings).encode("ascii"), np.uint8).reshape(
        len(strings), width
    )


def joined_rows(columns: Sequence[np.ndarray], n: int) -> str:
    """Text of ``n`` rows laid side by side from ``(n, k)`` blocks or ``(k,)`` constants, zeros dropped."""
    blocks = [np.broadcast_to(c, (n, c.shape[-1])) for c in columns]
    rows = np.concatenate(blocks, axis=1, dtype=np.uint8, casting="unsafe")  # character codes
    return rows[rows != 0].tobytes().decode("ascii")


def polygon_coordinates_json(xy: np.ndarray, ring_sizes: np.ndarray, ring_counts: np.ndarray) -> list[str]:
    """Each polygon's ``coordinates`` as :func:`json.dumps` writes them (compact), without a loop over points.

    ``xy`` are the points of all rings (values from ``geojson._level0_points``), ``ring_sizes`` the points per
    ring and ``ring_counts`` the rings per polygon. Every point is one row of characters — what comes before
    it (``[[`` opening a polygon, ``,[`` a ring, ``,`` a point), ``[x,y]``, what closes after it (``]`` a
    ring, ``]]`` a polygon) — with 0 in unused columns; dropping the zeros leaves the text.
    """
    n = len(xy)
    if not n:
        return []
    ring_firsts = np.cumsum(ring_sizes) - ring_sizes
    polygon_firsts = ring_firsts[np.cumsum(ring_counts) - ring_counts]
    opens_ring = np.zeros(n, dtype=bool)
    opens_ring[ring_firsts] = True
    opens_polygon = np.zeros(n, dtype=bool)
    opens_polygon[polygon_firsts] = True
    closes_ring, closes_polygon = np.roll(opens_ring, -1), np.roll(opens_polygon, -1)
    x, y = _hundredths_chars(xy[:, 0]), _hundredths_chars(xy[:, 1])
    rows = np.concatenate(
        [
            np.where(opens_polygon, ord("["), ord(","))[:, None],
            np.where(opens_ring, ord("["), 0)[:, None],
            np.full((n, 1), ord("[")),
            x,
            np.full((n, 1), ord(",")),
            y,
            np.full((n, 1), ord("]")),
            np.where(closes_ring, ord("]"), 0)[:, None],
            np.where(closes_polygon, ord("]"), 0)[:, None],
        ],
        axis=1,
        dtype=np.uint8,
        casting="unsafe",  # character codes
    )
    used = rows != 0
    text = rows[used].tobytes().decode("ascii")
    ends = np.cumsum(np.count_nonzero(used, axis=1))[np.r_[polygon_firsts[1:], n] - 1].tolist()
    return [text[a:b] for a, b in itertools.pairwise([0, *ends])]


#: Namespace of the deterministic (UUID 5) feature ids.
ID_NAMESPACE = uuid.UUID("6f0b5c1e-3a52-4f0e-9d7e-7a1c2f3d4e5b")
_HEX = ascii_codes("0123456789abcdef")


def feature_id_chars(seed: str, first: int, count: int) -> np.ndarray:
    """Ids ``first … first + count − 1`` of ``geojson._feature_ids`` as ``(count, 36)`` ASCII codes.

    One SHA-1 per id in Python (``uuid.uuid5``'s hash); the version and variant bits and the hex text in
    numpy.
    """
    prefix = ID_NAMESPACE.bytes + f"{seed}:".encode()
    digests = b"".join([hashlib.sha1(prefix + b"%d" % i).digest() for i in range(first, first + count)])
    raw = np.frombuffer(digests, dtype=np.uint8).reshape(count, 20)[:, :16].copy()
    raw[:, 6] = raw[:, 6] & 0x0F | 0x50  # version 5
    raw[:, 8] = raw[:, 8] & 0x3F | 0x80  # RFC 4122 variant
    hex_digits = _HEX[np.stack([raw >> 4, raw & 0x0F], axis=2).reshape(count, 32)]
    return np.insert(hex_digits, [8, 12, 16, 20], ord("-"), axis=1)
