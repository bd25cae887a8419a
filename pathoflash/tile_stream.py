"""Threaded tile work handed back in order, with bounded memory.

OpenSlide and libjpeg release the GIL while they decode, and so do LZ4 and file writes, so a thread pool
reads (and, in ``tile_slide``, also encodes and writes) tiles in parallel. Tiles complete out of order;
:func:`decode_in_order` hands them back in the order they were asked for (row-major for a grid), keeping at
most ``window`` tiles in flight or waiting.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from .errors import TileReadError

K = TypeVar("K")
V = TypeVar("V")


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
