"""Chunks and pyramid written from many threads at once: the store does not depend on the thread count."""

from __future__ import annotations

import os
import random
import shutil
import sys
import threading
from pathlib import Path

import pytest

import pathoflash as pf
from pathoflash.store import PyramidBuilder, TileStore


def _chunk_bytes(store: TileStore) -> dict[str, bytes]:
    """Every chunk file of every level, by path relative to the store."""
    return {
        str(p.relative_to(store.path)): p.read_bytes()
        for level in range(store.level_count)
        for p in (store.path / str(level)).rglob("*")
        if p.is_file() and p.name != "zarr.json"
    }


@pytest.fixture(scope="module")
def one_thread_store(tmp_path_factory: pytest.TempPathFactory, cmu1: Path) -> TileStore:
    return pf.tile_slide(cmu1, tmp_path_factory.mktemp("one") / "tiles.zarr", workers=1)


def test_many_threads_write_the_same_bytes_as_one(
    tmp_path: Path, cmu1: Path, one_thread_store: TileStore
) -> None:
    seen: list[tuple[int, int]] = []
    many = pf.tile_slide(
        cmu1, tmp_path / "many.zarr", workers=8, on_tile=lambda r, c, _t: seen.append((r, c))
    )
    assert seen == list(many.grid.tissue_tiles)  # still row-major, each once
    expected = _chunk_bytes(one_thread_store)
    assert len(expected) > len(many.grid.tissue_tiles)  # pyramid chunks are compared too
    assert _chunk_bytes(many) == expected
    if sys.platform == "linux":  # chunks went in as unnamed files, not by rename (no silent fallback)
        assert all(many.level_files(n)._anonymous_temporaries for n in range(many.level_count))


def test_pyramid_builder_takes_children_from_many_threads_in_any_order(
    tmp_path: Path, one_thread_store: TileStore
) -> None:
    root = tmp_path / "copy.zarr"
    shutil.copytree(one_thread_store.path, root)
    store = TileStore.open(root)
    expected = _chunk_bytes(store)
    for level in range(1, store.level_count):
        shutil.rmtree(root / str(level) / "c", ignore_errors=True)
    tiles = list(store.grid.tissue_tiles)
    level0 = store.level_files(0)
    pyramid = PyramidBuilder(store, tiles, set(tiles))
    pyramid.start()
    order = tiles[:]
    random.Random(0).shuffle(order)
    errors: list[BaseException] = []

    def add(share: list[tuple[int, int]]) -> None:
        try:
            for key in share:
                pyramid.add(*key, level0.read(*key))
        except BaseException as exc:  # re-raised below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(order[i::16],)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    pyramid.finish()
    assert pyramid.held_chunks == 0
    assert _chunk_bytes(store) == expected


def test_without_o_tmpfile_chunks_are_renamed_into_place(
    tmp_path: Path, cmu1: Path, one_thread_store: TileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "O_TMPFILE", raising=False)  # as on macOS, Windows or a file system without it
    store = pf.tile_slide(cmu1, tmp_path / "renamed.zarr", workers=4)
    assert _chunk_bytes(store) == _chunk_bytes(one_thread_store)
    assert not list(store.path.rglob("*.pathoflash-tmp"))


def test_chunk_files_get_the_usual_permissions(tmp_path: Path, one_thread_store: TileStore) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    chunk = next(p for p in (one_thread_store.path / "0").rglob("*") if p.is_file() and p.name.isdigit())
    assert chunk.stat().st_mode == plain.stat().st_mode
