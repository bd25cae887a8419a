"""Lower pyramid levels built while level 0 streams past, without ever holding level 0.

Each level below 0 is a raw RGB file in a temporary folder: rows arrive top to bottom, are appended to
the file, and every 4 rows are averaged (4 x 4 box) into the next level's rows. Only a few rows are ever
held per level; the files are read back strip by strip when their TIFF pages are written. Plain file I/O
(no memory map) keeps the written data in the page cache, not in the process's resident memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray

U8 = NDArray[np.uint8]

FACTOR = 4


def level_sizes(width: int, height: int, max_top: int = 1024) -> list[tuple[int, int]]:
    """``(width, height)`` of every level: each 4x smaller (rounded up) until one fits in ``max_top``."""
    sizes = [(width, height)]
    while max(sizes[-1]) > max_top:
        w, h = sizes[-1]
        sizes.append((math.ceil(w / FACTOR), math.ceil(h / FACTOR)))
    return sizes


def downsample(rows: U8, out_width: int) -> U8:
    """4 x 4 box average of ``rows`` (r, w, c), r a multiple of 4; edges padded by replication."""
    r, w, channels = rows.shape
    need = out_width * FACTOR
    if w < need:
        rows = np.concatenate([rows, np.repeat(rows[:, -1:], need - w, axis=1)], axis=1)
    elif w > need:
        rows = rows[:, :need]
    wide = rows.astype(np.uint16)  # 16 x 255 fits
    cols = wide[0::4] + wide[1::4] + wide[2::4] + wide[3::4]  # (r/4, need, 3)
    groups = cols.reshape(r // FACTOR, out_width, FACTOR, channels)
    sums = groups[:, :, 0] + groups[:, :, 1] + groups[:, :, 2] + groups[:, :, 3]
    return ((sums + 8) >> 4).astype(np.uint8)


class LevelSink:
    """Appends the rows of one level to a raw file and feeds their 4x reduction to the next level."""

    def __init__(self, path: Path, width: int, height: int, below: LevelSink | None) -> None:
        self.path = path
        self.width = width
        self.height = height
        self.below = below
        self.rows_written = 0
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._carry = np.zeros((0, width, 3), dtype=np.uint8)

    def write(self, rows: U8) -> None:
        rows = rows[: self.height - self.rows_written]
        if rows.shape[1] != self.width:
            raise ValueError(f"level rows are {rows.shape[1]} px wide, expected {self.width}")
        self._file.write(np.ascontiguousarray(rows).tobytes())
        self.rows_written += rows.shape[0]
        if self.below is not None:
            pending = np.concatenate([self._carry, rows]) if self._carry.size else rows
            usable = (pending.shape[0] // FACTOR) * FACTOR
            if usable:
                self.below.write(downsample(pending[:usable], self.below.width))
            self._carry = pending[usable:].copy()

    def close(self) -> None:
        """Flush the last partial group of rows (padded by replication) and close the file and those below."""
        if self.rows_written != self.height:
            raise ValueError(f"level got {self.rows_written} rows, expected {self.height}")
        if self.below is not None:
            if self._carry.shape[0]:
                pad = FACTOR - self._carry.shape[0]
                last = np.repeat(self._carry[-1:], pad, axis=0)
                self.below.write(downsample(np.concatenate([self._carry, last]), self.below.width))
            self._carry = np.zeros((0, self.width, 3), dtype=np.uint8)
            self.below.close()
        self._file.close()


def read_strips(path: Path, width: int, height: int, strip_rows: int) -> Iterator[U8]:
    """The rows of a level file, ``strip_rows`` at a time (the last strip may be shorter)."""
    row_bytes = width * 3
    with open(path, "rb") as f:
        for r0 in range(0, height, strip_rows):
            n = min(strip_rows, height - r0)
            data = f.read(n * row_bytes)
            if len(data) != n * row_bytes:
                raise OSError(f"{path}: level file ended early at row {r0}")
            yield np.frombuffer(data, dtype=np.uint8).reshape(n, width, 3)


def read_level(path: Path, width: int, height: int) -> U8:
    """A whole (small) level file as one array."""
    return np.fromfile(path, dtype=np.uint8, count=width * height * 3).reshape(height, width, 3)
