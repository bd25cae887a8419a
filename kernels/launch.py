"""Launch a compiled Triton or Gluon kernel again without Triton's per-call argument binding.

``kernel[grid](*args, **kwargs)`` binds every argument on every call: it specialises each one (type, 16-byte
alignment, an int equal to 1), hashes the whole specialisation (a Gluon tensor descriptor hashes its layout)
into a cache key, looks the compiled kernel up and only then launches it. At the small shapes of a
forward+backward call that is a large part of the host time, which exceeded the GPU time (H100, session 20,
``benchmarks/ATTENTION_NOTES.md``).

:func:`launch` keeps the compiled kernel under a key of its own that is finer than Triton's: every int by
value, every float as a float, every tensor by dtype and 16-byte alignment, every descriptor by dtype, block
shape and layout, every constexpr and option by value, and the device. Two calls with equal keys therefore
get the same compiled kernel from Triton too, so a key seen before is launched directly
(``CompiledKernel.run``, the call ``JITFunction.run`` makes; the same in Triton 3.6 and 3.8). Anything else
goes through ``kernel[grid]``: a new key (whose compiled kernel is then kept, up to :data:`MAX_KERNELS`), an
argument of a type it does not know, launch hooks (a profiler), the interpreter's functions, or
``PATHOFLASH_DIRECT_LAUNCH=0``.

:class:`Site` goes further for a caller that knows every call of a site is launched alike (attention.py's
plans, keyed on shapes, strides, dtype, device and alignment): no key at all, the first call's compiled kernel
launched for every later one.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import triton
from triton import knobs
from triton.runtime.jit import JITFunction

ENABLED = os.environ.get("PATHOFLASH_DIRECT_LAUNCH", "1") != "0"
# Compile options every kernel launched here is compiled with. Floating-point contraction (a·b + c as one FMA)
# is what the kernels were written and timed with and Triton's default up to 3.9, which warns that the default
# turns to off in 3.10 (``TRITON_DEFAULT_FP_FUSION``): a multiply and an add where the softmax has one FMA.
# ``TRITON_FORCE_DISABLE_FP_FUSION=1`` still turns it off.
OPTIONS: dict[str, Any] = {"enable_fp_fusion": True}
MAX_KERNELS = 256  # compiled kernels kept; past that many the cache starts over

_compiled: dict[tuple[Any, ...], Any] = {}
_param_names: dict[Any, tuple[tuple[str, ...], tuple[Any, ...]]] = {}
_UNKNOWN = object()


def _arg_key(arg: Any) -> Any:
    """What Triton may specialise ``arg`` on, or finer; ``_UNKNOWN`` for a type this module does not key."""
    kind = type(arg)
    if kind is int or kind is str:  # str: a constexpr, specialised by value
        return arg
    if kind is float:
        return float
    if kind is bool:
        return (bool, arg)
    if arg is None:
        return None
    if isinstance(arg, torch.Tensor):
        return (arg.dtype, arg.data_ptr() % 16 == 0)
    layout = getattr(arg, "layout", None)
    base = getattr(arg, "base", None)
    if layout is not None and isinstance(base, torch.Tensor):  # a Gluon host tensor descriptor
        return (base.dtype, tuple(arg.block_shape), layout, getattr(arg, "padding", None))
    return _UNKNOWN


def _names_and_defaults(fn: Any) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """The kernel's parameters in order and their defaults (``_UNKNOWN`` where there is none)."""
    found = _param_names.get(fn)
    if found is None:
        params = fn.signature.parameters.values()
        found = (
            tuple(p.name for p in params),
            tuple(_UNKNOWN if p.default is p.empty else p.default for p in params),
        )
        _param_names[fn] = found
    return found


def _ordered(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any] | None:
    """Every parameter's value in the kernel's order (constexprs included, as ``JITFunction.run`` passes
    them), or None if one is missing."""
    names, defaults = _names_and_defaults(fn)
    values = list(args)
    for name, default in zip(names[len(args) :], defaults[len(args) :], strict=True):
        value = kwargs.get(name, default)
        if value is _UNKNOWN:
            return None
        values.append(value)
    return values


def _current_stream(device: int) -> int:
    """The raw CUDA stream Triton would launch on (torch's current stream of ``device``)."""
    return int(triton.runtime.driver.active.get_current_stream(device))


def _hooked() -> bool:
    """Whether a launch hook is set (a profiler): such launches go through Triton, which calls it."""
    if getattr(knobs.runtime, "add_stages_inspection_hook", None) is not None:  # 3.8: custom pipelines
        return True
    for hook in (knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook):
        # Triton 3.6 and 3.8 keep a chain of hooks there, empty unless one is added; anything else counts as set
        if hook is not None and getattr(hook, "calls", True):
            return True
    return False


def _key(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
    """The key of this launch (see the module's docstring), or None if an argument has a type it does not key.

    The common types are tested inline: this runs on every launch, where a call per argument costs."""
    parts: list[Any] = [fn, torch.cuda.current_device(), knobs.runtime.debug]
    append = parts.append
    for arg in (*args, *kwargs.values()):
        kind = type(arg)
        if kind is int:
            append(arg)
        elif kind is torch.Tensor:
            append((arg.dtype, arg.data_ptr() % 16 == 0))
        else:
            part = _arg_key(arg)
            if part is _UNKNOWN:
                return None
            append(part)
    parts.extend(kwargs)  # the names, in the call's order (fixed per call site)
    return tuple(parts)


def launch(fn: Any, grid: tuple[int, ...], *args: Any, **kwargs: Any) -> None:
    """``fn[grid](*args, **OPTIONS, **kwargs)``, launched directly when these arguments' key has been launched
    before."""
    if not ENABLED or not isinstance(fn, JITFunction) or _hooked():  # the interpreter's functions are not
        fn[grid](*args, **OPTIONS, **kwargs)
        return
    key = _key(fn, args, kwargs)
    compiled = None if key is None else _compiled.get(key)
    if compiled is None:
        compiled = fn[grid](*args, **OPTIONS, **kwargs)  # compiles or finds it, and launches
        if key is not None and compiled is not None and hasattr(compiled, "run"):
            if len(_compiled) >= MAX_KERNELS:
                _compiled.clear()  # a model has a few shapes: past that many, start over
            _compiled[key] = compiled
        return
    values = _ordered(fn, args, kwargs)
    if values is None:
        fn[grid](*args, **OPTIONS, **kwargs)
        return
    stream = _current_stream(key[1])  # type: ignore[index]
    grid_y = grid[1] if len(grid) > 1 else 1
    grid_z = grid[2] if len(grid) > 2 else 1
    # No launch metadata and no hooks: what JITFunction.run passes amounts to that when no hook is set.
    compiled.run(
        grid[0], grid_y, grid_z, stream, compiled.function, compiled.packed_metadata, None, None, None, *values,
    )  # fmt: skip


class Site:
    """One launch site whose every call Triton would compile alike: the same kernel, grid, constexprs and
    options (given here, once), and positional arguments that differ from call to call only in what Triton
    does not specialise on: tensor and descriptor data (same dtypes, 16-byte alignment, block shapes and
    layouts), float values. Ints must be equal in every call. The caller guarantees it, by keying its sites on
    whatever fixes those (attention.py's plans: shapes, strides, dtype, device, alignment of the data).

    The first call launches through ``kernel[grid]`` and keeps the compiled kernel; later calls launch it
    directly, with no key to compute (at a small forward, ~10 µs of host time less than :func:`launch`).
    Launch hooks, the switch off, or another ``knobs.runtime.debug`` than the first call's go through Triton.
    """

    __slots__ = ("_compiled", "_debug", "_device", "_grid3", "_tail", "fn", "grid", "static")

    def __init__(self, fn: Any, grid: tuple[int, ...], **static: Any) -> None:
        self.fn, self.grid, self.static = fn, grid, {**OPTIONS, **static}
        self._compiled: Any = None
        self._grid3 = (*grid, 1, 1)[:3]
        self._tail: tuple[Any, ...] = ()
        self._device = 0
        self._debug: Any = None

    def __call__(self, *args: Any) -> None:
        compiled = self._compiled
        if compiled is None or not ENABLED or _hooked() or knobs.runtime.debug != self._debug:
            self._through_triton(args)
            return
        x, y, z = self._grid3
        compiled.run(
            x, y, z, _current_stream(self._device), compiled.function, compiled.packed_metadata, None, None, None,
            *args, *self._tail,
        )  # fmt: skip

    def _through_triton(self, args: tuple[Any, ...]) -> None:
        compiled = self.fn[self.grid](*args, **self.static)
        if self._compiled is not None or not ENABLED or not isinstance(self.fn, JITFunction) or _hooked():
            return
        values = _ordered(self.fn, args, self.static)
        if values is None or compiled is None or not hasattr(compiled, "run"):
            return
        self._tail = tuple(values[len(args) :])
        self._device = torch.cuda.current_device()
        self._debug = knobs.runtime.debug
        self._compiled = compiled
