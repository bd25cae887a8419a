"""``pathoflash.kernels.launch``: a compiled kernel is launched directly only under a key Triton would map to
the same compiled kernel. CPU only: Triton's launch itself is stood in for; the GPU tests run the real one."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
import triton.language as tl
from pathoflash.kernels import launch as fast
from triton import knobs
from triton.runtime.jit import JITFunction


def _kernel(x, n, scale, FLAG: tl.constexpr, BLOCK: tl.constexpr = 16):  # type: ignore[no-untyped-def]
    pass


class _Compiled:
    """Stands in for Triton's CompiledKernel: records direct launches."""

    function = "function-handle"
    packed_metadata = "packed-metadata"

    def __init__(self) -> None:
        self.launches: list[tuple[Any, ...]] = []

    def run(self, *args: Any) -> None:
        self.launches.append(args)


class _Kernel(JITFunction):
    """A real JITFunction whose ``run`` (what ``kernel[grid](...)`` calls) records the call instead of
    compiling and returns one compiled kernel per call, as Triton returns the kernel it launched."""

    def __init__(self) -> None:
        super().__init__(_kernel)
        self.triton_calls: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []
        self.compiled: list[_Compiled] = []

    def run(self, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> _Compiled:  # type: ignore[override]
        self.triton_calls.append((grid, args, kwargs))
        self.compiled.append(_Compiled())
        return self.compiled[-1]


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> _Kernel:
    monkeypatch.setattr(fast, "ENABLED", True)
    monkeypatch.setattr(fast, "_compiled", {})
    monkeypatch.setattr(fast, "_current_stream", lambda device: 1234)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    return _Kernel()


def test_a_key_seen_before_is_launched_directly_with_every_parameter_in_order(kernel: _Kernel) -> None:
    x = torch.zeros(64)
    fast.launch(kernel, (7,), x, 100, 0.5, FLAG=True)
    assert len(kernel.triton_calls) == 1 and kernel.triton_calls[0][0] == (7,)
    fast.launch(kernel, (9, 2), x, 100, 0.25, FLAG=True)  # another float and grid: the same kernel
    assert len(kernel.triton_calls) == 1
    (direct,) = kernel.compiled[0].launches
    # grid padded to three dims, the stream, the handle, the metadata, no launch metadata or hooks, then every
    # parameter in the kernel's order, constexprs and defaults included (as JITFunction.run passes them)
    expected = (9, 2, 1, 1234, "function-handle", "packed-metadata", None, None, None, x, 100, 0.25, True, 16)
    assert direct == expected


@pytest.mark.parametrize(
    "change",
    ["int", "int one", "alignment", "dtype", "constexpr", "bool for int", "option"],
)
def test_anything_triton_specialises_on_makes_a_new_key(kernel: _Kernel, change: str) -> None:
    x = torch.zeros(64)
    first = (x, 32, 0.5)
    second = {
        "int": (x, 48, 0.5),
        "int one": (x, 1, 0.5),
        "alignment": (x[1:], 32, 0.5),  # 4 bytes off a 16-byte boundary
        "dtype": (x.half(), 32, 0.5),
        "constexpr": first,
        "bool for int": (x, 32, 0.5),
        "option": first,
    }[change]
    fast.launch(kernel, (1,), *first, FLAG=1)
    changed_kwargs: dict[str, dict[str, Any]] = {
        "constexpr": {"FLAG": 1, "BLOCK": 32},
        "bool for int": {"FLAG": True},
        "option": {"FLAG": 1, "num_warps": 8},
    }
    kwargs = changed_kwargs.get(change, {"FLAG": 1})
    fast.launch(kernel, (1,), *second, **kwargs)
    assert len(kernel.triton_calls) == 2, change
    assert not kernel.compiled[0].launches
    fast.launch(kernel, (1,), *second, **kwargs)  # now seen: direct, on the kernel that call compiled
    assert len(kernel.triton_calls) == 2 and len(kernel.compiled[1].launches) == 1


def test_unknown_arguments_hooks_and_the_switch_go_through_triton(
    kernel: _Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = torch.zeros(64)
    for _ in range(2):
        fast.launch(kernel, (1,), x, [3], 0.5, FLAG=1)  # a list: a type the key does not know
    assert len(kernel.triton_calls) == 2
    fast.launch(kernel, (1,), x, 3, 0.5, FLAG=1)
    hook = lambda metadata: None  # noqa: E731
    knobs.runtime.launch_enter_hook.add(hook)
    try:
        fast.launch(kernel, (1,), x, 3, 0.5, FLAG=1)
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    assert len(kernel.triton_calls) == 4
    monkeypatch.setattr(fast, "ENABLED", False)
    fast.launch(kernel, (1,), x, 3, 0.5, FLAG=1)
    assert len(kernel.triton_calls) == 5
    monkeypatch.setattr(fast, "ENABLED", True)
    fast.launch(kernel, (1,), x, 3, 0.5, FLAG=1)
    assert len(kernel.triton_calls) == 5 and len(kernel.compiled[2].launches) == 1


def test_the_kept_kernels_are_bounded(kernel: _Kernel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast, "MAX_KERNELS", 2)
    x = torch.zeros(64)
    for n in (16, 32, 16, 48):  # 48 is a third key: the cache starts over with it
        fast.launch(kernel, (1,), x, n, 0.5, FLAG=1)
    assert len(kernel.triton_calls) == 3 and len(fast._compiled) == 1
    fast.launch(kernel, (1,), x, 48, 0.5, FLAG=1)  # kept
    fast.launch(kernel, (1,), x, 16, 0.5, FLAG=1)  # dropped: through Triton again
    assert len(kernel.triton_calls) == 4


def test_an_interpreted_kernel_is_called_as_is() -> None:
    calls = []

    class Interpreted:  # what triton.jit makes under TRITON_INTERPRET=1: not a JITFunction
        def __getitem__(self, grid: tuple[int, ...]):  # type: ignore[no-untyped-def]
            return lambda *args, **kwargs: calls.append((grid, args, kwargs))

    fast.launch(Interpreted(), (3,), 1, 2, FLAG=1)
    fast.launch(Interpreted(), (3,), 1, 2, FLAG=1)
    assert calls == [((3,), (1, 2), {"enable_fp_fusion": True, "FLAG": 1})] * 2


def test_equal_keys_mean_equal_triton_specialisations(kernel: _Kernel) -> None:
    """The safety of the direct launch: wherever two arguments get equal keys, Triton's own specialisation of
    them (type, 16-byte alignment, ints equal to 1, i32 or i64) is equal too."""
    native = pytest.importorskip("triton._C.libtriton").native_specialize_impl
    gluon = pytest.importorskip("triton.experimental.gluon.nvidia.hopper")
    from triton.backends.nvidia.compiler import CUDABackend
    from triton.experimental.gluon import language as gl

    base = torch.zeros(2, 4, 256, 64, dtype=torch.bfloat16)

    def desc(t: torch.Tensor, rows: int) -> Any:
        layout = gl.NVMMASharedLayout.get_default_for([1, 1, rows, 64], gl.bfloat16)
        return gluon.TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, rows, 64], layout)

    args: list[Any] = [
        0, 1, 2, 15, 16, 17, 32, 2**31 - 1, 2**31, 2**31 + 16, 2**40, -1, -16,
        True, False, 0.5, 1.0, 2.0, None,
        base, base[:, :, 8:], base[..., 1:], base.half(), base.float(), base.float()[..., 2:],
        desc(base, 128), desc(base[:1], 128), desc(base, 64), desc(base.transpose(1, 2).contiguous(), 128),
    ]  # fmt: skip
    equal_keys = 0
    for a, b in itertools.combinations(args, 2):
        if fast._key(kernel, (a,), {}) == fast._key(kernel, (b,), {}):  # what launch() keys them by
            equal_keys += 1
            spec_a = native(CUDABackend, a, False, True, True)
            spec_b = native(CUDABackend, b, False, True, True)
            assert spec_a == spec_b, (a, b)
    assert equal_keys >= 5  # floats, descriptors of other shapes, tensors of other offsets: compared above


def test_a_site_launches_its_first_compiled_kernel_directly_ever_after(kernel: _Kernel) -> None:
    """``Site``: the grid, constexprs and options given once; the first call through ``kernel[grid]``, every
    later one straight to that compiled kernel, its parameters in the kernel's order (no key computed)."""
    site = fast.Site(kernel, (5, 2), FLAG=False)
    x, y = torch.zeros(64), torch.ones(64)
    site(x, 7, 0.5)
    assert kernel.triton_calls == [((5, 2), (x, 7, 0.5), {"enable_fp_fusion": True, "FLAG": False})]
    site(y, 7, 0.25)
    site(x, 7, 0.125)
    assert len(kernel.triton_calls) == 1
    assert kernel.compiled[0].launches == [
        (5, 2, 1, 1234, "function-handle", "packed-metadata", None, None, None, y, 7, 0.25, False, 16),
        (5, 2, 1, 1234, "function-handle", "packed-metadata", None, None, None, x, 7, 0.125, False, 16),
    ]


def test_a_site_goes_through_triton_under_hooks_the_switch_or_another_debug_mode(
    kernel: _Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = fast.Site(kernel, (1,), FLAG=True, BLOCK=32)
    x = torch.zeros(64)
    site(x, 3, 0.5)
    hook = lambda metadata: None  # noqa: E731
    knobs.runtime.launch_enter_hook.add(hook)
    try:
        site(x, 3, 0.5)
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    monkeypatch.setattr(fast, "ENABLED", False)
    site(x, 3, 0.5)
    monkeypatch.setattr(fast, "ENABLED", True)
    debug = knobs.runtime.debug
    monkeypatch.setattr(knobs.runtime, "debug", not debug)
    site(x, 3, 0.5)
    assert len(kernel.triton_calls) == 4 and kernel.compiled[0].launches == []
    monkeypatch.setattr(knobs.runtime, "debug", debug)
    site(x, 3, 0.5)
    assert len(kernel.triton_calls) == 4 and kernel.compiled[0].launches[0][-3:] == (0.5, True, 32)


def test_a_site_of_an_interpreted_kernel_calls_it_every_time() -> None:
    calls = []

    class Interpreted:
        def __getitem__(self, grid: tuple[int, ...]):  # type: ignore[no-untyped-def]
            return lambda *args, **kwargs: calls.append((grid, args, kwargs))

    site = fast.Site(Interpreted(), (3,), FLAG=1)
    site(1, 2)
    site(1, 2)
    assert calls == [((3,), (1, 2), {"enable_fp_fusion": True, "FLAG": 1})] * 2


def test_every_compile_asks_for_fp_fusion_whatever_tritons_default(kernel: _Kernel) -> None:
    """a·b + c as one FMA is what the kernels were written and timed with; Triton 3.9 warns that its default
    turns to off in 3.10. Every path through ``kernel[grid]`` asks for it: a new key, an argument the key does
    not know, the switch off, and a site's first call."""
    x = torch.zeros(64)
    fast.launch(kernel, (1,), x, 3, 0.5, FLAG=1)
    fast.launch(kernel, (1,), x, [3], 0.5, FLAG=1)
    fast.Site(kernel, (1,), FLAG=1)(x, 5, 0.5)
    fast.ENABLED = False  # restored by the fixture's monkeypatch
    fast.launch(kernel, (1,), x, 7, 0.5, FLAG=1)
    assert len(kernel.triton_calls) == 4
    assert all(kwargs.get("enable_fp_fusion") is True for _, _, kwargs in kernel.triton_calls)
