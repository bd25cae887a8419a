"""The Zarr tile store: layout, OME-NGFF metadata, pixels, pyramid, provenance, rebuilds, heatmap."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import corrupt_grid_tiles

import pathoflash as pf
from pathoflash.errors import StoreError, TileReadError
from pathoflash.store import FILL, TileStore, level_shapes


@pytest.fixture(scope="module")
def cmu1_store(tmp_path_factory: pytest.TempPathFactory, cmu1: Path) -> TileStore:
    return pf.tile_slide(cmu1, tmp_path_factory.mktemp("store") / "tiles.zarr", workers=2)


def _chunk_files(store: TileStore, level: int = 0) -> set[tuple[int, int]]:
    root = store.path / str(level) / "c" / "0"
    return {(int(p.parent.name), int(p.name)) for p in root.glob("*/*") if p.name.isdigit()}


def test_layout_and_provenance(cmu1_store: TileStore, cmu1: Path) -> None:
    store = TileStore.open(cmu1_store.path)
    assert store.is_complete and store.unreadable_tiles == ()
    assert store.mpp == pytest.approx(0.499)
    attrs = store.attrs
    assert attrs["source"]["path"] == str(cmu1.resolve())
    assert attrs["source"]["size"] == cmu1.stat().st_size
    assert attrs["source"]["mtime_ns"] == cmu1.stat().st_mtime_ns
    assert attrs["source"]["mpp"] == [0.499, 0.499]
    assert attrs["requested_mpp"] == 0.5 and attrs["mpp"] == pytest.approx(0.499)
    assert attrs["codec"] == "lz4"
    assert attrs["tiles_written"] == len(store.grid.tissue_tiles)
    image = zarr.open_array(store.path / "0", mode="r")
    assert image.shape == (3, 2967, 2220) and image.dtype == np.uint8
    assert image.chunks == (3, 256, 256) and image.fill_value == FILL
    assert image.metadata.dimension_names == ("c", "y", "x")
    # only tissue chunks are written
    assert _chunk_files(store) == set(store.grid.tissue_tiles)
    mask = store.tissue_mask
    assert mask.mpp == 8.0 and mask.shape == (185, 138)


def test_ome_ngff_05_metadata(cmu1_store: TileStore) -> None:
    meta = json.loads((cmu1_store.path / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["node_type"] == "group"
    ome = meta["attributes"]["ome"]
    assert ome["version"] == "0.5"
    (multiscale,) = ome["multiscales"]
    assert [a["name"] for a in multiscale["axes"]] == ["c", "y", "x"]
    assert [a["type"] for a in multiscale["axes"]] == ["channel", "space", "space"]
    assert all(a.get("unit") == "micrometer" for a in multiscale["axes"][1:])
    shapes = level_shapes(2220, 2967, 256)
    assert len(multiscale["datasets"]) == len(shapes) == 5
    for level, dataset in enumerate(multiscale["datasets"]):
        array = zarr.open_array(cmu1_store.path / dataset["path"], mode="r")
        assert array.shape == (3, shapes[level][0], shapes[level][1])
        scale = dataset["coordinateTransformations"][0]
        assert scale["type"] == "scale"
        assert scale["scale"] == pytest.approx([1.0, 0.499 * 2**level, 0.499 * 2**level])
        if level:
            shift = dataset["coordinateTransformations"][1]
            assert shift["type"] == "translation" and shift["translation"][1] > 0
    assert len(ome["omero"]["channels"]) == 3


def test_tiles_equal_the_slide(cmu1_store: TileStore, cmu1: Path) -> None:
    with pf.open_slide(cmu1) as slide:
        for row, col in cmu1_store.grid.tissue_tiles[::7]:
            tile = cmu1_store.read_tile(row, col)
            expected = slide.read_region((col * 256, row * 256), 0, (256, 256))
            np.testing.assert_array_equal(tile, expected)
    # and zarr itself reads the same pixels
    image = zarr.open_array(cmu1_store.path / "0", mode="r")
    row, col = cmu1_store.grid.tissue_tiles[3]
    via_zarr = np.asarray(image[:, row * 256 : (row + 1) * 256, col * 256 : (col + 1) * 256]).transpose(
        1, 2, 0
    )
    np.testing.assert_array_equal(via_zarr, cmu1_store.read_tile(row, col))


def test_read_region_is_white_outside_tissue_and_image(cmu1_store: TileStore) -> None:
    background = next(
        (r, c) for r in range(cmu1_store.grid.rows) for c in range(cmu1_store.grid.cols)
        if (r, c) not in cmu1_store.grid.tissue_tiles
    )  # fmt: skip
    assert (cmu1_store.read_tile(*background) == 255).all()
    region = cmu1_store.read_region(2100, 2900, 300, 200)
    assert region.shape == (200, 300, 3)
    assert (region[67:, :] == 255).all() and (region[:, 120:] == 255).all()
    row, col = cmu1_store.grid.tissue_tiles[10]
    inner = cmu1_store.read_region(col * 256 + 100, row * 256 + 50, 256, 256)
    np.testing.assert_array_equal(inner[:206, :156], cmu1_store.read_tile(row, col)[50:, 100:])
    np.testing.assert_array_equal(inner[206:, :156], cmu1_store.read_tile(row + 1, col)[:50, 100:])


def test_pyramid_levels_are_box_means(cmu1_store: TileStore) -> None:
    previous = np.asarray(zarr.open_array(cmu1_store.path / "0", mode="r")[...])
    for level in range(1, cmu1_store.level_count):
        current = np.asarray(zarr.open_array(cmu1_store.path / str(level), mode="r")[...])
        c, h, w = previous.shape
        padded = np.full((c, h + h % 2, w + w % 2), 255, np.uint16)
        padded[:, :h, :w] = previous
        expected = (
            padded.reshape(c, padded.shape[1] // 2, 2, padded.shape[2] // 2, 2).sum(axis=(2, 4)) + 2
        ) // 4
        np.testing.assert_array_equal(current, expected.astype(np.uint8))
        previous = current


def test_chunk_bytes_are_what_zarr_writes(cmu1_store: TileStore, tmp_path: Path) -> None:
    """Chunks are encoded by us for speed; they must be byte-identical to zarr's own encoding."""
    source = zarr.open_array(cmu1_store.path / "0", mode="r")
    copy = zarr.create_array(
        tmp_path / "copy.zarr",
        shape=source.shape,
        chunks=source.chunks,
        dtype=source.dtype,
        fill_value=FILL,
        compressors=source.compressors,
        chunk_key_encoding={"name": "default", "separator": "/"},
    )
    for row, col in [
        cmu1_store.grid.tissue_tiles[0],
        cmu1_store.grid.tissue_tiles[-1],
    ]:  # incl. an edge chunk
        sel = (slice(None), slice(row * 256, (row + 1) * 256), slice(col * 256, (col + 1) * 256))
        copy[sel] = source[sel]
        ours = (cmu1_store.path / "0" / "c" / "0" / str(row) / str(col)).read_bytes()
        theirs = (tmp_path / "copy.zarr" / "c" / "0" / str(row) / str(col)).read_bytes()
        assert ours == theirs


def test_rerun_is_a_no_op_and_a_changed_source_is_rebuilt(tmp_path: Path, cmu1: Path) -> None:
    slide = tmp_path / "slide.svs"
    slide.write_bytes(cmu1.read_bytes())
    out = tmp_path / "tiles.zarr"
    first = pf.tile_slide(slide, out, workers=2)
    assert first.last_report is not None and first.last_report.tiles_decoded == len(first.grid.tissue_tiles)
    again = pf.tile_slide(slide, out, workers=2)
    assert again.last_report is not None and again.last_report.tiles_decoded == 0
    os.utime(slide, ns=(slide.stat().st_atime_ns, slide.stat().st_mtime_ns + 10**9))
    rebuilt = pf.tile_slide(slide, out, workers=2)
    assert rebuilt.last_report is not None and rebuilt.last_report.rebuilt
    assert rebuilt.last_report.tiles_decoded == len(rebuilt.grid.tissue_tiles)
    assert rebuilt.source.mtime_ns == slide.stat().st_mtime_ns
    other_options = pf.tile_slide(slide, out, workers=2, mpp=1.0)
    assert other_options.last_report is not None and other_options.last_report.rebuilt
    assert other_options.mpp == pytest.approx(0.998)


def test_callbacks(tmp_path: Path, cmu1: Path) -> None:
    seen: list[tuple[int, int]] = []
    progress: list[tuple[int, int]] = []
    tiles: dict[tuple[int, int], np.ndarray] = {}

    def on_tile(row: int, col: int, tile: np.ndarray) -> None:
        seen.append((row, col))
        assert tile.shape == (256, 256, 3) and tile.dtype == np.uint8
        tiles[(row, col)] = tile.copy()

    store = pf.tile_slide(
        cmu1, tmp_path / "t.zarr", workers=2, on_tile=on_tile, progress=lambda d, n: progress.append((d, n))
    )
    assert seen == list(store.grid.tissue_tiles)  # row-major, each once
    for key in seen[::9]:
        np.testing.assert_array_equal(tiles[key], store.read_tile(*key))
    total = len(store.grid.tissue_tiles)
    assert progress[0] == (0, total) and progress[-1] == (total, total)
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)


def test_unreadable_tiles_are_skipped_listed_or_fatal_in_strict_mode(
    tmp_path: Path, corrupt_svs: Path
) -> None:
    store = pf.tile_slide(corrupt_svs, tmp_path / "lenient.zarr", workers=2)
    expected = corrupt_grid_tiles(256)
    assert set(store.unreadable_tiles) == expected
    assert expected <= set(store.grid.tissue_tiles)  # unreadable thumbnail parts are kept as tissue
    assert store.is_complete
    assert not (_chunk_files(store) & expected)
    assert all("Not a JPEG file" in entry[2] for entry in store.attrs["unreadable_tiles"])
    assert (TileStore.open(store.path).read_tile(*sorted(expected)[0]) == 255).all()
    with pytest.raises(TileReadError, match="strict"):
        pf.tile_slide(corrupt_svs, tmp_path / "strict.zarr", workers=2, strict=True)
    assert not TileStore.open(tmp_path / "strict.zarr").is_complete


def test_heatmap_round_trip(tmp_path: Path, cmu1: Path) -> None:
    store = pf.tile_slide(cmu1, tmp_path / "h.zarr", workers=2)
    assert not store.has_heatmap
    with pytest.raises(StoreError, match="no heatmap"):
        store.read_heatmap()
    probabilities = np.random.default_rng(0).random((186, 139)).astype(np.float32)
    store.write_heatmap(probabilities, 8.0, model_id="test-model", origin=[0, 0])
    again = TileStore.open(store.path).read_heatmap()
    np.testing.assert_array_equal(again.probabilities, probabilities)
    assert again.mpp == 8.0 and again.attrs == {"model_id": "test-model", "origin": [0, 0]}
    store.write_heatmap(probabilities[:10, :10], 8.0)  # replaces
    assert TileStore.open(store.path).read_heatmap().probabilities.shape == (10, 10)
    with pytest.raises(ValueError):
        store.write_heatmap(np.zeros(5, np.float32), 8.0)


def test_open_rejects_what_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"zarr\.json missing"):
        TileStore.open(tmp_path)
    zarr.open_group(tmp_path / "foreign.zarr", mode="w")
    with pytest.raises(StoreError, match="not a PathoFlash tile store"):
        TileStore.open(tmp_path / "foreign.zarr")
    with pytest.raises(StoreError, match="within"):
        TileStore.open(tmp_path / "never", wait=0.05)


def test_pending_tiles_and_store_matching(tmp_path: Path, cmu1: Path) -> None:
    from pathoflash.tiling import plan_grid

    with pf.open_slide(cmu1) as slide:
        grid = plan_grid(slide)
        out = tmp_path / "p.zarr"
        assert TileStore.pending_tiles(out, slide, grid) == list(grid.tissue_tiles)
        store = pf.tile_slide(slide, out, grid=grid, workers=2)
        assert TileStore.pending_tiles(out, slide, grid) == []
        (store.path / "0" / "c" / "0" / str(grid.tissue_tiles[0][0]) / str(grid.tissue_tiles[0][1])).unlink()
        # an incomplete store: only the missing tile is pending
        meta = json.loads((out / "zarr.json").read_text())
        meta["attributes"]["pathoflash"]["complete"] = False
        (out / "zarr.json").write_text(json.dumps(meta))
        assert TileStore.pending_tiles(out, slide, grid) == [grid.tissue_tiles[0]]
        resumed = pf.tile_slide(slide, out, grid=grid, workers=2)
        assert resumed.last_report is not None and resumed.last_report.tiles_decoded == 1


@pytest.mark.parametrize("codec", ["zstd", "none"])
def test_other_chunk_codecs(tmp_path: Path, cmu1: Path, cmu1_store: TileStore, codec: str) -> None:
    store = pf.tile_slide(cmu1, tmp_path / f"{codec}.zarr", workers=2, codec=codec)
    assert store.attrs["codec"] == codec
    via_zarr = np.asarray(zarr.open_array(store.path / "0", mode="r")[...])
    np.testing.assert_array_equal(via_zarr, np.asarray(zarr.open_array(cmu1_store.path / "0", mode="r")[...]))
    with pytest.raises(pf.ConfigError, match="codec"):
        pf.tile_slide(cmu1, tmp_path / "bad.zarr", codec="gzip")
