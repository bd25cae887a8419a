"""Threaded tile decoding in order, and a write-behind thread, both with bounded memory.

OpenSlide releases the GIL while it decodes, so a thread pool decodes tiles in parallel. Tiles complete out
of order; :func:`decode_in_order` hands them back in the order they were asked for (row-major for a grid),
keeping at most ``window`` tiles in flight or waiting. :class:`WriteBehind` runs a consumer (encoding and
writing chunks) on its own thread behind a bounded queue, so writing overlaps decoding.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from .errors import TileReadError

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")
Item = TypeVar("Item")


def decode_in_order(
    read: Callable[[K], V],
    keys: Iterable[K],
    *,
    workers: int,
    window: int | None = None,
) -> Generator[tuple[K, V | TileReadError], None, None]:
    """Yield ``(key, read(key))`` for every key, in the order of ``keys``, reading on ``workers`` threads.

    A :class:`TileReadError` from ``read`` is yielded in place of the value (the caller decides whether a
    bad tile is fatal); any other exception propagates. At most ``window`` reads (default ``4 × workers``)
    are submitted ahead of the one being yielded, so memory stays bounded whatever the number of keys.
    Closing the generator early cancels the reads not yet started.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    ahead = max(workers, window if window is not None else 4 * workers)
    pending: deque[tuple[K, Future[V]]] = deque()
    key_iter = iter(keys)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pathoflash-decode") as pool:
        try:
            for key in key_iter:
                pending.append((key, pool.submit(read, key)))
                if len(pending) >= ahead:
                    key, future = pending.popleft()
                    yield key, _outcome(future)
            while pending:
                key, future = pending.popleft()
                yield key, _outcome(future)
        finally:
            for _, future in pending:
                future.cancel()


def _outcome(future: Future[Any]) -> Any:
    """The future's value, or the :class:`TileReadError` it raised."""
    try:
        return future.result()
    except TileReadError as exc:
        return exc


class WriteBehind(Generic[Item]):
    """Apply ``consume(item)`` on a background thread to items :meth:`put` from the caller's thread.

    The queue holds at most ``depth`` items, so a slow consumer slows the producer instead of growing
    memory. An exception in ``consume`` stops the thread and is re-raised by the next :meth:`put` or by
    :meth:`close`. Use as a context manager: leaving the block waits for the queue to drain.
    """

    _STOP = object()

    def __init__(self, consume: Callable[[Item], None], *, depth: int = 16, name: str = "pathoflash-write"):
        self._consume = consume
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            if self._error is not None:
                continue  # drain without work so a blocked producer wakes up and sees the error
            try:
                self._consume(item)  # type: ignore[arg-type]
            except BaseException as exc:
                log.debug("write-behind consumer failed: %r", exc)
                self._error = exc

    def put(self, item: Item) -> None:
        self._raise_if_failed()
        self._queue.put(item)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Wait until every queued item is consumed; re-raise the consumer's error if it failed."""
        if self._thread.is_alive():
            self._queue.put(self._STOP)
            self._thread.join()
        self._raise_if_failed()

    def __enter__(self) -> WriteBehind[Item]:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
            return
        # The caller failed: stop the thread after what is queued, but let the caller's error win.
        if self._thread.is_alive():
            self._queue.put(self._STOP)
            self._thread.join()
