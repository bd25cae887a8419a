"""The tile store: a Zarr v3 group holding a slide's tissue tiles at the target mpp, viewable as OME-Zarr.

Layout of ``tiles.zarr`` (see DESIGN.md)::

    zarr.json            group; attributes ``ome`` (OME-NGFF 0.5 multiscales) and ``pathoflash``
                         (source provenance, grid, mpp, codec, completion, unreadable tiles)
    0/ 1/ 2/ …           image pyramid, (c, y, x) uint8; level 0 at the grid's mpp, each next level 2× coarser
                         (2 × 2 box mean); chunk = one tile (3, T, T); fill value 255 (white); only chunks
                         that hold tissue are written
    tissue_mask/         bool (y, x) at its own mpp (attribute ``mpp``)
    heatmap/             float32 tumor probabilities, written later by inference (attributes ``mpp`` …)
    .pathoflash-unreadable.jsonl   journal of unreadable tiles while a run is in progress

Chunks are encoded here (Blosc-LZ4, the codec recorded in the array metadata) and written atomically — to an
unnamed ``O_TMPFILE`` linked in when done, where Linux offers it, else to a temporary name then renamed — so
a chunk file either exists whole or not at all, even after SIGKILL; a resumed run trusts existing chunk
files. Writing is thread-safe: ``tile_slide`` writes chunks from all its threads at once. Writing chunk files directly instead of through ``zarr.Array.__setitem__`` costs about
0.3 ms per tile instead of about 2–3 ms (measured, benchmarks/RESULTS.md), which matters when writing must
hide behind decoding on a few cores. A test checks that the bytes equal what zarr writes itself.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError, StoreError

if TYPE_CHECKING:
    import zarr

    from .slide import Slide
    from .tiling import TileGrid, TilingReport
    from .tissue import TissueMask

log = logging.getLogger(__name__)

STORE_FORMAT = 1
UNREADABLE_JOURNAL = ".pathoflash-unreadable.jsonl"
#: Chunk codecs a store can be written with; the default is picked by measurement (benchmarks/RESULTS.md).
CHUNK_CODECS = ("lz4", "zstd", "none")
DEFAULT_CODEC = "lz4"
FILL = 255
TISSUE_MASK = "tissue_mask"
HEATMAP = "heatmap"
_TMP_SUFFIX = ".pathoflash-tmp"
#: How long ``TileStore.open(path, wait=True)`` waits for another thread or process to create the store.
OPEN_WAIT_S = 600.0


# -- values -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SourceInfo:
    """Where a store's pixels came from; ``size`` and ``mtime_ns`` tell whether the file has changed."""

    path: str
    size: int
    mtime_ns: int
    format: str
    dimensions: tuple[int, int]
    mpp: tuple[float, float]
    mpp_source: str

    @classmethod
    def from_slide(cls, slide: Slide) -> SourceInfo:
        return cls(
            path=str(slide.path.resolve()),
            size=int(slide.file_size),
            mtime_ns=int(slide.file_mtime_ns),
            format=slide.format,
            dimensions=slide.dimensions,
            mpp=slide.mpp,
            mpp_source=slide.mpp_source,
        )

    def same_file(self, other: SourceInfo) -> bool:
        """True when ``other`` describes the same, unchanged slide file (its path may have moved)."""
        return (self.size, self.mtime_ns, self.dimensions) == (other.size, other.mtime_ns, other.dimensions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "mtime": self.mtime_ns / 1e9,
            "format": self.format,
            "dimensions": list(self.dimensions),
            "mpp": list(self.mpp),
            "mpp_source": self.mpp_source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SourceInfo:
        return cls(
            path=str(data["path"]),
            size=int(data["size"]),
            mtime_ns=int(data["mtime_ns"]),
            format=str(data["format"]),
            dimensions=(int(data["dimensions"][0]), int(data["dimensions"][1])),
            mpp=(float(data["mpp"][0]), float(data["mpp"][1])),
            mpp_source=str(data["mpp_source"]),
        )


@dataclass(frozen=True, slots=True)
class StoredHeatmap:
    """A heatmap read back from a store: ``probabilities[y, x]`` at ``mpp`` µm per heatmap pixel."""

    probabilities: np.ndarray
    mpp: float
    attrs: dict[str, Any] = field(default_factory=dict)


def level_shapes(width: int, height: int, tile_size: int) -> list[tuple[int, int]]:
    """``(height, width)`` of each pyramid level: halve (rounding up) until one tile holds the image."""
    shapes = [(height, width)]
    while max(shapes[-1]) > tile_size:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def ome_metadata(name: str, mpp: float, level_count: int) -> dict[str, Any]:
    """OME-NGFF 0.5 ``ome`` attributes for an RGB (c, y, x) pyramid at ``mpp`` µm/px.

    Level ``n`` pixel ``i`` averages level-0 pixels ``[i·2ⁿ, (i + 1)·2ⁿ)``, so its centre sits
    ``(2ⁿ − 1)/2`` level-0 pixels further than ``i·2ⁿ``: that is the translation.
    """
    datasets = []
    for level in range(level_count):
        factor = 2**level
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [1.0, mpp * factor, mpp * factor]}]
        if level:
            shift = mpp * (factor - 1) / 2
            transforms.append({"type": "translation", "translation": [0.0, shift, shift]})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    window = {"start": 0, "end": 255, "min": 0, "max": 255}
    channels = [
        {"label": label, "color": color, "window": window, "active": True, "coefficient": 1.0,
         "family": "linear", "inverted": False}
        for label, color in (("red", "FF0000"), ("green", "00FF00"), ("blue", "0000FF"))
    ]  # fmt: skip
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": name,
                "axes": [
                    {"name": "c", "type": "channel"},
                    {"name": "y", "type": "space", "unit": "micrometer"},
                    {"name": "x", "type": "space", "unit": "micrometer"},
                ],
                "datasets": datasets,
                "type": "mean",
                "metadata": {"description": "2x2 box mean per level", "method": "pathoflash.store"},
            }
        ],
        "omero": {"channels": channels, "rdefs": {"model": "color", "defaultZ": 0, "defaultT": 0}},
    }


def interleave(out: np.ndarray, planes: np.ndarray) -> None:
    """Copy ``(3, h, w)`` colour planes into the ``(h, w, 3)`` image ``out``.

    One plane at a time: about 5× faster than assigning the transposed view, whose innermost loop runs
    over the 3 channels.
    """
    for c in range(planes.shape[0]):
        out[:, :, c] = planes[c]


# -- chunk files --------------------------------------------------------------------------------------
class ChunkFiles:
    """Encode, write (atomically) and decode the chunk files of one pyramid level."""

    def __init__(self, root: Path, array: zarr.Array, tile_size: int):

        self.root = root
        self.tile_size = tile_size
        self.shape = (int(array.shape[1]), int(array.shape[2]))
        self._encoding = array.metadata.chunk_key_encoding  # type: ignore[union-attr]
        self._codec = _numcodecs_codec(array)
        self._made_dirs: set[Path] = set()
        self._anonymous_temporaries = True

    def path(self, row: int, col: int) -> Path:
        return self.root / self._encoding.encode_chunk_key((0, row, col))

    def exists(self, row: int, col: int) -> bool:
        return self.path(row, col).is_file()

    def write(self, row: int, col: int, chunk: np.ndarray, *, in_place: bool = False) -> None:
        """Write a ``(3, T, T)`` uint8 chunk; pixels beyond the image edge are set to the fill value.

        ``in_place``: set those pixels in ``chunk`` itself instead of in a copy (the caller owns it and
        wants it to equal what the file holds). Safe to call from several threads at once.
        """
        t = self.tile_size
        assert chunk.shape == (3, t, t) and chunk.dtype == np.uint8, chunk.shape
        h, w = self.shape
        over_y, over_x = (row + 1) * t - h, (col + 1) * t - w
        if over_y > 0 or over_x > 0:
            if not in_place:
                chunk = chunk.copy()
            if over_y > 0:
                chunk[:, t - over_y :] = FILL
            if over_x > 0:
                chunk[:, :, t - over_x :] = FILL
        chunk = np.ascontiguousarray(chunk)
        data = chunk.tobytes() if self._codec is None else self._codec.encode(chunk)
        target = self.path(row, col)
        if target.parent not in self._made_dirs:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(target.parent)
        if not (self._anonymous_temporaries and self._link_new(target, data)):
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}{_TMP_SUFFIX}")
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)

    def _link_new(self, target: Path, data: bytes) -> bool:
        """Write ``data`` to an unnamed file in ``target``'s folder (Linux ``O_TMPFILE``) and link it in as
        ``target``; False (nothing written) where that is not possible or ``target`` exists.

        Same atomicity as write-then-rename — the name appears only with the whole file behind it, and a
        kill leaves nothing behind — but with one change to the folder instead of two (create, rename).
        Threads writing chunks of one grid row share that folder, and on ext4 two of them doing
        create + rename there cost ~2× the CPU per file and less throughput than one (measured,
        benchmarks/RESULTS.md); with an unnamed file they scale.
        """
        try:
            folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return False
        try:
            fd = os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o666, dir_fd=folder)
        except (AttributeError, OSError) as exc:  # not Linux, or the file system has no O_TMPFILE
            log.debug("%s: no unnamed temporary files (%s); writing chunks by rename", self.root, exc)
            self._anonymous_temporaries = False
            os.close(folder)
            return False
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            # linkat(…, AT_SYMLINK_FOLLOW) through /proc (dst_dir_fd makes Python call linkat, not link)
            os.link(f"/proc/self/fd/{fd}", target.name, dst_dir_fd=folder)
        except FileExistsError:
            return False  # rewriting an existing chunk: replace it by rename
        except OSError as exc:  # e.g. no /proc
            log.debug("%s: cannot link unnamed files (%s); writing chunks by rename", self.root, exc)
            self._anonymous_temporaries = False
            return False
        finally:
            os.close(fd)
            os.close(folder)
        return True

    def read(self, row: int, col: int) -> np.ndarray | None:
        """The ``(3, T, T)`` chunk, or ``None`` if it was never written (all fill)."""
        try:
            data = self.path(row, col).read_bytes()
        except FileNotFoundError:
            return None
        t = self.tile_size
        raw = data if self._codec is None else self._codec.decode(data)
        return np.frombuffer(raw, dtype=np.uint8).reshape(3, t, t)


def _zarr_compressors(codec: str) -> list[Any]:
    """The zarr v3 codec chain for a chunk codec name (after the implicit ``bytes`` codec)."""
    from zarr.codecs import BloscCodec, ZstdCodec

    if codec == "lz4":
        return [BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle", typesize=1, blocksize=0)]
    if codec == "zstd":
        return [ZstdCodec(level=1, checksum=False)]
    return []


def _numcodecs_codec(array: zarr.Array) -> Any:
    """The numcodecs codec that produces exactly the bytes of ``array``'s compressor (None: raw)."""
    import numcodecs
    from zarr.codecs import BloscCodec, ZstdCodec

    compressors = array.compressors
    if not compressors:
        return None
    (compressor,) = compressors
    if isinstance(compressor, BloscCodec):
        shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[str(compressor.shuffle.value)]
        return numcodecs.Blosc(
            cname=str(compressor.cname.value),
            clevel=compressor.clevel,
            shuffle=shuffle,
            blocksize=compressor.blocksize,
        )
    if isinstance(compressor, ZstdCodec):
        if compressor.checksum:
            raise StoreError("zstd chunks with checksums are not written by PathoFlash")
        return numcodecs.Zstd(level=compressor.level)
    raise StoreError(f"unsupported chunk compressor {compressor!r} in a tile store")


# -- the store ----------------------------------------------------------------------------------------
class TileStore:
    """An open tile store. Create one with :func:`pathoflash.tile_slide`; reopen with :meth:`open`."""

    def __init__(self, path: Path, group: zarr.Group):
        self.path = path
        self._group = group
        meta = group.attrs.get("pathoflash")
        if not isinstance(meta, dict):
            raise StoreError("not a PathoFlash tile store (no 'pathoflash' attributes)", path=path)
        if not meta.get("created"):
            raise StoreError("tile store creation was interrupted", path=path)
        if meta.get("store_format") != STORE_FORMAT:
            raise StoreError(f"tile store format {meta.get('store_format')} is not {STORE_FORMAT}", path=path)
        self._meta: dict[str, Any] = dict(meta)
        from .tiling import TileGrid

        self.grid: TileGrid = TileGrid.from_dict(self._meta["grid"])
        self.source = SourceInfo.from_dict(self._meta["source"])
        self.level_count = int(self._meta["level_count"])
        self._levels: list[ChunkFiles] | None = None
        #: What the :func:`~pathoflash.tile_slide` call that returned this store did (None after ``open``).
        self.last_report: TilingReport | None = None

    # -- opening --------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], *, wait: bool | float = False) -> TileStore:
        """Open an existing store (complete or not) for reading tiles and writing a heatmap.

        ``wait``: poll until a :func:`~pathoflash.tile_slide` running elsewhere has created the store, for
        up to ``wait`` seconds (``True``: :data:`OPEN_WAIT_S`), then raise :class:`StoreError`.
        """
        import zarr

        root = Path(path)
        if wait:
            limit = OPEN_WAIT_S if wait is True else float(wait)
            deadline = time.monotonic() + limit
            while not _looks_created(root):
                if time.monotonic() > deadline:
                    raise StoreError(f"no tile store appeared within {limit:.0f} s", path=root)
                time.sleep(0.02)
        if not (root / "zarr.json").is_file():
            raise StoreError("no tile store here (zarr.json missing)", path=root)
        try:
            group = zarr.open_group(root, mode="r+")
        except (ValueError, KeyError, OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"unreadable tile store ({exc})", path=root) from exc
        return cls(root, group)

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        grid: TileGrid,
        tissue: TissueMask,
        source: SourceInfo,
        name: str,
        codec: str = DEFAULT_CODEC,
    ) -> TileStore:
        """Create an empty store for ``grid`` at ``path`` (which must be absent or an empty folder)."""
        import zarr

        if codec not in CHUNK_CODECS:
            raise ConfigError(f"chunk codec {codec!r} is not one of {', '.join(CHUNK_CODECS)}")
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            raise StoreError("folder is not empty; refusing to write a tile store into it", path=root)
        shapes = level_shapes(grid.width, grid.height, grid.tile_size)
        # The group and its attributes come first (one atomic write), so a kill at any later point leaves
        # a folder recognisably ours; ``created`` is set once every array exists.
        group = zarr.create_group(root, zarr_format=3, attributes={"pathoflash": {"created": False}})
        t = grid.tile_size
        for level, (h, w) in enumerate(shapes):
            group.create_array(
                str(level),
                shape=(3, h, w),
                chunks=(3, t, t),
                dtype="uint8",
                fill_value=FILL,
                compressors=_zarr_compressors(codec),
                chunk_key_encoding={"name": "default", "separator": "/"},
                dimension_names=["c", "y", "x"],
            )
        mh, mw = tissue.shape
        mask = group.create_array(
            TISSUE_MASK,
            shape=(mh, mw),
            chunks=(min(mh, 2048), min(mw, 2048)),
            dtype="bool",
            fill_value=False,
            dimension_names=["y", "x"],
        )
        mask[...] = tissue.mask
        mask.attrs["mpp"] = tissue.mpp
        from . import __version__

        meta: dict[str, Any] = {
            "store_format": STORE_FORMAT,
            "version": __version__,
            "source": source.to_dict(),
            "mpp": grid.mpp,
            "requested_mpp": grid.requested_mpp,
            "tile_size": grid.tile_size,
            "level_count": len(shapes),
            "codec": codec,
            "grid": grid.to_dict(),
            "tissue_mask_mpp": tissue.mpp,
            "created": True,
            "complete": False,
            "tiles_total": len(grid.tissue_tiles),
            "unreadable_tiles": [],
        }
        group.attrs.update({"ome": ome_metadata(name, grid.mpp, len(shapes)), "pathoflash": meta})
        return cls(root, group)

    # -- metadata -------------------------------------------------------------------------------------
    @property
    def mpp(self) -> float:
        """µm per pixel of level 0 (the grid's effective mpp, after snapping near-equal resolutions)."""
        return self.grid.mpp

    @property
    def tile_size(self) -> int:
        return self.grid.tile_size

    @property
    def is_complete(self) -> bool:
        return bool(self._meta.get("complete", False))

    @property
    def unreadable_tiles(self) -> tuple[tuple[int, int], ...]:
        """``(row, col)`` of tissue tiles that stayed unreadable (left white), row-major."""
        return tuple((int(r), int(c)) for r, c, *_ in self._meta.get("unreadable_tiles", []))

    @property
    def attrs(self) -> dict[str, Any]:
        """The store's ``pathoflash`` attributes (a copy)."""
        return json.loads(json.dumps(self._meta))

    @property
    def tissue_mask(self) -> TissueMask:
        from .tissue import TissueMask

        array = self._node(TISSUE_MASK)
        return TissueMask(mask=np.asarray(array[...], dtype=bool), mpp=_float_attr(array, "mpp"))

    def array(self, level: int = 0) -> zarr.Array:
        """The zarr array of pyramid ``level`` (``(3, h, w)`` uint8)."""

        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} out of range 0..{self.level_count - 1}")
        return self._node(str(level))

    def _node(self, name: str) -> zarr.Array:
        import zarr

        node = self._group[name]
        if not isinstance(node, zarr.Array):
            raise StoreError(f"'{name}' in the tile store is not an array", path=self.path)
        return node

    def level_files(self, level: int) -> ChunkFiles:
        if self._levels is None:
            self._levels = [
                ChunkFiles(self.path / str(n), self.array(n), self.tile_size) for n in range(self.level_count)
            ]
        return self._levels[level]

    @classmethod
    def pending_tiles(
        cls, path: str | os.PathLike[str], slide: Slide, grid: TileGrid
    ) -> list[tuple[int, int]]:
        """The tiles ``tile_slide(slide, path, grid=grid)`` will decode, row-major.

        A store at ``path`` for another or changed source, other options or another grid is deleted here
        (``tile_slide`` would rebuild it anyway), so that a reader waiting with ``open(wait=...)`` only
        ever sees the store this grid is written to.
        """
        store, _ = reuse_store(
            Path(path),
            SourceInfo.from_slide(slide),
            mpp=grid.requested_mpp,
            tile_size=grid.tile_size,
            grid=grid,
        )
        if store is None:
            return list(grid.tissue_tiles)
        return [] if store.is_complete else store.missing_tiles()

    def missing_tiles(self) -> list[tuple[int, int]]:
        """Tissue tiles without a chunk file yet (row-major)."""
        files = self.level_files(0)
        return [key for key in self.grid.tissue_tiles if not files.exists(*key)]

    # -- pixels ---------------------------------------------------------------------------------------
    def has_tile(self, row: int, col: int) -> bool:
        return self.level_files(0).exists(row, col)

    def read_tile(self, row: int, col: int, *, level: int = 0) -> np.ndarray:
        """Tile ``(row, col)`` as ``(T, T, 3)`` uint8 RGB; white where nothing was written."""
        files = self.level_files(level)
        rows = -(-files.shape[0] // self.tile_size)
        cols = -(-files.shape[1] // self.tile_size)
        if not (0 <= row < rows and 0 <= col < cols):
            raise IndexError(f"tile ({row}, {col}) outside the {rows}×{cols} grid of level {level}")
        chunk = files.read(row, col)
        t = self.tile_size
        if chunk is None:
            return np.full((t, t, 3), FILL, np.uint8)
        out = np.empty((t, t, 3), np.uint8)
        interleave(out, chunk)
        return out

    def read_region(self, x: int, y: int, w: int, h: int, *, level: int = 0) -> np.ndarray:
        """Pixels ``[y, y + h) × [x, x + w)`` of ``level`` as ``(h, w, 3)`` uint8 RGB.

        Coordinates are pixels at the store's mpp (× 2**level); anything outside the image or in chunks
        never written (background) is white.
        """
        if w <= 0 or h <= 0:
            raise ValueError(f"region size must be positive, got {w}x{h}")
        files = self.level_files(level)
        height, width = files.shape
        t = self.tile_size
        out = np.full((h, w, 3), FILL, np.uint8)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
        for row in range(y0 // t, -(-y1 // t)) if y1 > y0 else ():
            for col in range(x0 // t, -(-x1 // t)) if x1 > x0 else ():
                chunk = files.read(row, col)
                if chunk is None:
                    continue
                cy0, cx0 = max(y0, row * t), max(x0, col * t)
                cy1, cx1 = min(y1, (row + 1) * t), min(x1, (col + 1) * t)
                part = chunk[:, cy0 - row * t : cy1 - row * t, cx0 - col * t : cx1 - col * t]
                interleave(out[cy0 - y : cy1 - y, cx0 - x : cx1 - x], part)
        return out

    # -- heatmap --------------------------------------------------------------------------------------
    def write_heatmap(self, probabilities: np.ndarray, mpp: float, **attrs: Any) -> None:
        """Store ``probabilities[y, x]`` (float32) at ``mpp`` µm/px as the array ``heatmap``, replacing any.

        Extra keyword arguments (JSON-serialisable: model id, origin …) become the array's attributes.
        """
        values = np.asarray(probabilities, dtype=np.float32)
        if values.ndim != 2 or values.size == 0:
            raise ValueError(f"heatmap must be a non-empty 2-D array, got shape {values.shape}")
        if not (math.isfinite(mpp) and mpp > 0):
            raise ValueError(f"heatmap mpp must be positive, got {mpp}")
        json.dumps(attrs)  # fail before touching the store if attrs cannot be stored
        h, w = values.shape
        array = self._group.create_array(
            HEATMAP,
            shape=(h, w),
            chunks=(min(h, 1024), min(w, 1024)),
            dtype="float32",
            fill_value=float("nan"),
            dimension_names=["y", "x"],
            overwrite=True,
        )
        array[...] = values
        array.attrs.update({**attrs, "mpp": float(mpp)})

    @property
    def has_heatmap(self) -> bool:
        return HEATMAP in self._group

    def read_heatmap(self) -> StoredHeatmap:
        if not self.has_heatmap:
            raise StoreError("tile store has no heatmap yet (run inference first)", path=self.path)
        array = self._node(HEATMAP)
        attrs = {k: v for k, v in array.attrs.items() if k != "mpp"}
        return StoredHeatmap(np.asarray(array[...], dtype=np.float32), _float_attr(array, "mpp"), attrs)

    # -- writing state (used by tile_slide) -----------------------------------------------------------
    def record_unreadable(self, row: int, col: int, message: str) -> None:
        """Append a tile that stayed unreadable to the journal (survives a kill; merged at completion)."""
        line = json.dumps({"row": row, "col": col, "error": message})
        with open(self.path / UNREADABLE_JOURNAL, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def _journal_unreadable(self) -> dict[tuple[int, int], str]:
        found: dict[tuple[int, int], str] = {}
        try:
            lines = (self.path / UNREADABLE_JOURNAL).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return found
        for line in lines:
            try:
                entry = json.loads(line)
                found[(int(entry["row"]), int(entry["col"]))] = str(entry["error"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill
        return found

    def mark_complete(self) -> None:
        """Record unreadable tiles (those journalled and still missing) and set the completion flag."""
        missing = {
            key: message for key, message in self._journal_unreadable().items() if not self.has_tile(*key)
        }
        unreadable = [[r, c, missing[(r, c)]] for r, c in sorted(missing)]
        written = sum(1 for key in self.grid.tissue_tiles if self.has_tile(*key))
        self._meta.update({"complete": True, "unreadable_tiles": unreadable, "tiles_written": written})
        self._group.attrs["pathoflash"] = self._meta
        (self.path / UNREADABLE_JOURNAL).unlink(missing_ok=True)

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files a killed run left behind; returns how many."""
        count = 0
        for level in range(self.level_count):
            for tmp in (self.path / str(level)).rglob(f"*{_TMP_SUFFIX}"):
                tmp.unlink(missing_ok=True)
                count += 1
        return count

    def __repr__(self) -> str:
        state = "complete" if self.is_complete else "incomplete"
        return f"TileStore({str(self.path)!r}, {self.grid.rows}x{self.grid.cols} tiles at {self.mpp:.4g} µm/px, {state})"


def _looks_created(root: Path) -> bool:
    try:
        meta = json.loads((root / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(meta.get("attributes", {}).get("pathoflash", {}).get("created"))


def _is_ours(root: Path) -> bool:
    """Whether ``root/zarr.json`` carries our attributes (so we may delete and rebuild it)."""
    try:
        meta = json.loads((root / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("attributes", {}).get("pathoflash"), dict)


def reuse_store(
    path: Path,
    source: SourceInfo,
    *,
    mpp: float,
    tile_size: int,
    grid: TileGrid | None = None,
) -> tuple[TileStore | None, bool]:
    """``(store, rebuilt)``: the store at ``path`` if it was made from this unchanged source with these
    options (and this ``grid``, if given), else ``None``; a stale or broken store of ours is deleted
    (``rebuilt`` tells). Raises :class:`StoreError` when ``path`` holds something that is not ours.
    """
    if classify_existing(path) == "absent":
        return None, False
    try:
        store = TileStore.open(path)
    except StoreError as exc:
        log.warning("%s: unusable tile store (%s); rebuilding", path, exc.message)
        remove_store(path)
        return None, True
    reasons = []
    if not store.source.same_file(source):
        reasons.append("the source file changed (size or modification time)")
    if store.source.mpp != source.mpp:
        reasons.append(f"slide mpp {store.source.mpp} → {source.mpp}")
    if store.grid.requested_mpp != mpp or store.grid.tile_size != tile_size:
        reasons.append(
            f"options changed (mpp {store.grid.requested_mpp} → {mpp}, "
            f"tile size {store.grid.tile_size} → {tile_size})"
        )
    elif grid is not None and store.grid.to_dict() != grid.to_dict():
        reasons.append("the tile grid differs")
    if reasons:
        log.warning("%s: rebuilding the tile store: %s", path, "; ".join(reasons))
        remove_store(path)
        return None, True
    return store, False


def _float_attr(array: zarr.Array, key: str) -> float:
    value = array.attrs.get(key)
    if not isinstance(value, int | float):
        raise StoreError(f"array attribute {key!r} missing or not a number")
    return float(value)


def classify_existing(path: Path) -> str:
    """What is at ``path``: ``"absent"`` (or an empty folder), ``"ours"`` (a PathoFlash store) or raise.

    A file, or a folder with other content, raises :class:`StoreError`: we never delete what we did not
    write.
    """
    if not path.exists():
        return "absent"
    if not path.is_dir():
        raise StoreError("exists and is not a folder; choose another output location", path=path)
    if _is_ours(path):
        return "ours"
    if not any(path.iterdir()):
        return "absent"
    raise StoreError(
        "folder exists and is not a PathoFlash tile store; refusing to overwrite it (choose another --out)",
        path=path,
    )


def remove_store(path: Path) -> None:
    """Delete a PathoFlash store folder (only one whose zarr.json carries our attributes)."""
    if not _is_ours(path):
        raise StoreError("refusing to delete a folder that is not a PathoFlash tile store", path=path)
    shutil.rmtree(path)


# -- pyramid ------------------------------------------------------------------------------------------
class PyramidBuilder:
    """Builds pyramid levels 1… from level-0 tiles as they arrive, holding only unfinished parent chunks.

    Chunk ``(R, C)`` of level ``n`` is the 2 × 2 box mean of chunks ``(2R…2R+1, 2C…2C+1)`` of level
    ``n − 1``. A parent is written once every child that this run produces has arrived; children already on
    disk (from an interrupted earlier run) are read back then. Arrival order is free, so the memory held
    is the parents with some but not all children — about one grid row of chunks per level for row-major
    arrival.

    :meth:`add` may be called from many threads at once, and there is no pyramid thread: each caller halves
    its own chunk and copies it into its quadrant of the parent outside any lock (quadrants do not overlap);
    only the bookkeeping (which children arrived) is under one lock, a few dictionary operations. The caller
    that delivers a parent's last child encodes and writes that parent and carries on upward, so pyramid
    work is spread over the writing threads with no serial stage.
    """

    def __init__(self, store: TileStore, tiles: Iterable[tuple[int, int]], pending: set[tuple[int, int]]):
        self._store = store
        self._t = store.tile_size
        # expected[n]: chunks of level n that hold tissue; pending[n]: those this run has to write
        expected: list[set[tuple[int, int]]] = [set(tiles)]
        pending_sets: list[set[tuple[int, int]]] = [set(pending)]
        for level in range(1, store.level_count):
            expected.append({(r // 2, c // 2) for r, c in expected[-1]})
            files = store.level_files(level)
            pending_sets.append({key for key in expected[-1] if not files.exists(*key)})
        self._expected = expected
        # waiting[n][parent]: children of that parent still to arrive from this run
        self._waiting: list[dict[tuple[int, int], int]] = [{}]
        for level in range(1, store.level_count):
            counts = {key: 0 for key in pending_sets[level]}
            for r, c in pending_sets[level - 1]:
                parent = (r // 2, c // 2)
                if parent in counts:
                    counts[parent] += 1
            self._waiting.append(counts)
        self._buffers: list[dict[tuple[int, int], np.ndarray]] = [{} for _ in range(store.level_count)]
        self._arrived: list[dict[tuple[int, int], set[tuple[int, int]]]] = [
            {} for _ in range(store.level_count)
        ]
        self._lock = threading.Lock()

    @property
    def held_chunks(self) -> int:
        """Parent chunks currently in memory."""
        with self._lock:
            return sum(len(b) for b in self._buffers)

    def start(self) -> None:
        """Write parents whose children all exist already (an earlier run died before writing them)."""
        for level in range(1, len(self._waiting)):
            with self._lock:
                ready = sorted(parent for parent, count in self._waiting[level].items() if count == 0)
            for parent in ready:
                with self._lock:
                    del self._waiting[level][parent]
                chunk = self._complete(level, parent, set(), None)
                self._deliver(level + 1, parent, _halve(chunk))

    def add(self, row: int, col: int, chunk: np.ndarray | None) -> None:
        """A level-0 chunk this run wrote (``None``: unreadable, counts as white). Thread-safe.

        ``chunk`` is only read during the call (the caller may reuse its buffer afterwards); it should be
        what the chunk file holds (fill value beyond the image edge), so that a resumed run, which reads the
        chunk back from disk, builds the same parents.
        """
        self._deliver(1, (row, col), None if chunk is None else _halve(chunk))

    def _deliver(self, level: int, child: tuple[int, int], half: np.ndarray | None) -> None:
        """Child ``child`` of level ``level − 1`` arrived as the 2 × 2 mean ``half`` (None: white)."""
        while level < len(self._waiting):
            parent = (child[0] // 2, child[1] // 2)
            with self._lock:
                if parent not in self._waiting[level]:
                    return  # parent already on disk
                buffer = None if half is None else self._buffer(level, parent)
            if buffer is not None and half is not None:
                # Outside the lock: each child owns one quadrant, and the parent is only read below once
                # every child has counted itself in (under the lock, after its copy).
                self._place(buffer, child, half)
            with self._lock:
                self._arrived[level].setdefault(parent, set()).add(child)
                self._waiting[level][parent] -= 1
                if self._waiting[level][parent]:
                    return
                del self._waiting[level][parent]
                arrived = self._arrived[level].pop(parent)
                buffer = self._buffers[level].pop(parent, None)
            chunk = self._complete(level, parent, arrived, buffer)
            level, child, half = level + 1, parent, _halve(chunk)

    def _buffer(self, level: int, parent: tuple[int, int]) -> np.ndarray:
        """The parent's chunk being assembled (created white). Call with the lock held."""
        buffer = self._buffers[level].get(parent)
        if buffer is None:
            t = self._t
            buffer = np.full((3, t, t), FILL, np.uint8)
            self._buffers[level][parent] = buffer
        return buffer

    def _place(self, buffer: np.ndarray, child: tuple[int, int], half: np.ndarray) -> None:
        h = self._t // 2
        dy, dx = (child[0] % 2) * h, (child[1] % 2) * h
        buffer[:, dy : dy + h, dx : dx + h] = half

    def _complete(
        self, level: int, parent: tuple[int, int], arrived: set[tuple[int, int]], buffer: np.ndarray | None
    ) -> np.ndarray:
        """Add the children an earlier run wrote, write the parent chunk and return it (as written)."""
        below = self._store.level_files(level - 1)
        r0, c0 = parent[0] * 2, parent[1] * 2
        for child in ((r0, c0), (r0, c0 + 1), (r0 + 1, c0), (r0 + 1, c0 + 1)):
            if child in arrived or child not in self._expected[level - 1]:
                continue
            existing = below.read(*child)  # produced by an earlier run
            if existing is not None:
                if buffer is None:
                    buffer = np.full((3, self._t, self._t), FILL, np.uint8)
                self._place(buffer, child, _halve(existing))
        if buffer is None:
            buffer = np.full((3, self._t, self._t), FILL, np.uint8)
        self._store.level_files(level).write(*parent, buffer, in_place=True)
        return buffer

    def finish(self) -> None:
        """Check that every parent was written (all expected children arrived)."""
        left = [(level, key) for level, waiting in enumerate(self._waiting) for key in waiting]
        if left:
            raise AssertionError(
                f"pyramid incomplete: {len(left)} parent chunks never finished, e.g. {left[0]}"
            )


def _halve(chunk: np.ndarray) -> np.ndarray:
    """2 × 2 box mean of a ``(3, T, T)`` uint8 chunk, rounding half up (as ``resample.box_reduce``)."""
    pairs = chunk[:, 0::2, :].astype(np.uint16)
    pairs += chunk[:, 1::2, :]
    total = pairs[:, :, 0::2] + pairs[:, :, 1::2]
    total += 2
    total //= 4
    return total.astype(np.uint8)
