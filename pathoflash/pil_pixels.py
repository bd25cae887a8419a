"""A Pillow RGB image's pixels as a numpy view, without copying them while holding the GIL.

``np.asarray(image)`` goes through ``Image.tobytes``, which packs Pillow's 4-byte RGBX pixels into RGB with
the GIL held: ~90 µs for a 256² tile, on the tiling threads' hot path, where GIL time is what limits
decoding on many cores. Pillow ≥ 11.2 also exports its image memory through the Arrow C data interface
(``__arrow_c_array__``); the pixels are then read in place as an ``(h, w, 4)`` array and the ``(h, w, 3)`` view
of it is returned. The view keeps the image (and the exported array) alive. Anything unexpected — an older
Pillow, another layout, an image in several memory blocks — falls back to ``np.asarray``.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class _ArrowSchema(ctypes.Structure):
    pass


_ArrowSchema._fields_ = [
    ("format", ctypes.c_char_p),
    ("name", ctypes.c_char_p),
    ("metadata", ctypes.c_char_p),
    ("flags", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowSchema))),
    ("dictionary", ctypes.POINTER(_ArrowSchema)),
    ("release", ctypes.c_void_p),
    ("private_data", ctypes.c_void_p),
]


class _ArrowArray(ctypes.Structure):
    pass


_ArrowArray._fields_ = [
    ("length", ctypes.c_int64),
    ("null_count", ctypes.c_int64),
    ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("buffers", ctypes.POINTER(ctypes.c_void_p)),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))),
    ("dictionary", ctypes.POINTER(_ArrowArray)),
    ("release", ctypes.c_void_p),
    ("private_data", ctypes.c_void_p),
]


@functools.cache
def _capsule_pointer() -> Any:
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return get


class _Memory:
    """Exposes the exported pixel memory to numpy and keeps what owns it alive."""

    def __init__(self, address: int, shape: tuple[int, int, int], owners: tuple[object, ...]) -> None:
        self.__array_interface__ = {"version": 3, "data": (address, False), "shape": shape, "typestr": "|u1"}
        self._owners = owners


def _view(core: Any) -> np.ndarray:
    width, height = core.size
    schema_capsule, array_capsule = core.__arrow_c_schema__(), core.__arrow_c_array__()
    get = _capsule_pointer()
    schema = _ArrowSchema.from_address(get(schema_capsule, b"arrow_schema"))
    array = _ArrowArray.from_address(get(array_capsule, b"arrow_array"))
    if schema.format != b"+w:4" or schema.n_children != 1 or schema.children[0].contents.format != b"C":
        raise ValueError(f"unexpected Arrow layout {schema.format!r}")
    if array.offset or array.n_children != 1 or array.length != width * height:
        raise ValueError("unexpected Arrow array")
    child = array.children[0].contents
    if child.offset or child.n_buffers != 2 or child.length != 4 * width * height or not child.buffers[1]:
        raise ValueError("unexpected Arrow child array")
    memory = _Memory(int(child.buffers[1]), (height, width, 4), (core, schema_capsule, array_capsule))
    return np.asarray(memory)[:, :, :3]


_arrow_ok = True


def rgb_pixels(core: Any) -> np.ndarray:
    """``(h, w, 3)`` uint8 pixels of a Pillow ``RGB`` image core (``Image.core.new(...)``), read in place."""
    global _arrow_ok
    if _arrow_ok and core.mode == "RGB":
        try:
            return _view(core)
        except (AttributeError, TypeError) as exc:  # this Pillow has no Arrow export: stop trying
            _arrow_ok = False
            log.info("Pillow image memory not readable in place (%s); copying through tobytes", exc)
        except ValueError as exc:  # this image only (e.g. held in several memory blocks)
            log.debug("image copied through tobytes: %s", exc)
    from PIL import Image

    return np.asarray(Image.Image()._new(core))


__all__ = ["rgb_pixels"]
