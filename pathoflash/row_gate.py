"""Let the model read a region as soon as the tile rows under it are in the store.

The tiler and the model run at the same time on one slide: tiles are decoded (threads) and written to the
Zarr store in row-major order while the model reads regions from the store behind it. A
:class:`TileRowGate` counts the tissue tiles each grid row still waits for; ``wait_rows`` blocks a reader
until its rows are complete (or the tiler has stopped, successfully or not).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable


class TileRowGate:
    """Per-row countdown of the tiles a grid still has to write."""

    def __init__(self, rows: int, pending: Iterable[tuple[int, int]]) -> None:
        self._remaining = [0] * rows
        for row, _col in pending:
            self._remaining[row] += 1
        self._finished = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()

    def tile_done(self, row: int, col: int) -> None:
        """One tile of ``row`` is in the store (or was given up as unreadable)."""
        with self._cond:
            self._remaining[row] -= 1
            if self._remaining[row] <= 0:
                self._cond.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        """The tiler stopped; every waiter is released (and sees ``error``, if any)."""
        with self._cond:
            self._finished = True
            self._error = error
            self._cond.notify_all()

    def rows_ready(self, first: int, last: int) -> bool:
        first, last = max(first, 0), min(last, len(self._remaining) - 1)
        return all(self._remaining[r] <= 0 for r in range(first, last + 1))

    def wait_rows(self, first: int, last: int, timeout: float | None = None) -> None:
        """Block until rows ``first..last`` (inclusive) are complete; re-raise the tiler's error."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._finished or self.rows_ready(first, last), timeout)
            if self._error is not None:
                raise self._error
            if not ok:
                raise TimeoutError(f"tile rows {first}..{last} not ready after {timeout} s")
