import threading
import time

import pytest

from pathoflash.row_gate import TileRowGate


def test_rows_open_when_their_tiles_are_done() -> None:
    gate = TileRowGate(3, [(0, 0), (0, 1), (2, 0)])
    assert gate.rows_ready(1, 1)  # row 1 has no pending tiles
    assert not gate.rows_ready(0, 1)
    gate.tile_done(0, 1)
    gate.tile_done(0, 0)
    assert gate.rows_ready(0, 1)
    assert not gate.rows_ready(0, 2)


def test_waiter_is_released_by_the_last_tile_of_its_rows() -> None:
    gate = TileRowGate(2, [(1, 0), (1, 1)])
    released = threading.Event()

    def wait() -> None:
        gate.wait_rows(0, 1)
        released.set()

    thread = threading.Thread(target=wait)
    thread.start()
    gate.tile_done(1, 0)
    time.sleep(0.05)
    assert not released.is_set()
    gate.tile_done(1, 1)
    thread.join(timeout=5)
    assert released.is_set()


def test_tiler_error_reaches_the_waiter_and_timeout_is_reported() -> None:
    gate = TileRowGate(1, [(0, 0)])
    with pytest.raises(TimeoutError):
        gate.wait_rows(0, 0, timeout=0.01)
    gate.finish(RuntimeError("decoder died"))
    with pytest.raises(RuntimeError, match="decoder died"):
        gate.wait_rows(0, 0)


def test_finish_without_error_releases_everything() -> None:
    gate = TileRowGate(2, [(0, 0), (1, 0)])
    gate.finish()
    gate.wait_rows(0, 1, timeout=1)
