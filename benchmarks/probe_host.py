"""Device debugging: host time of each stage of our forward+backward, with and without direct launches.

Session 20 found our forward+backward call host-bound at (2, 16, 4100, 64): more host time per call than GPU
time (ATTENTION_NOTES "Session 20", item 4). Each stage here is timed on the host while a long sleep kernel
keeps the GPU busy, so no call ever waits for the GPU (checked: the sleep must still be running when the
calls are queued, or the row is marked). Every stage runs twice, Triton's launches (``kernel[grid]``,
checked descriptors) and ``pathoflash.kernels.launch``'s direct ones (descriptors built unchecked), and the
GPU time and ``do_bench`` of a whole call beside it:

    python3 benchmarks/probe_host.py [--shapes 2x16x4100x64,4x8x4096x128] [--dtype bf16] [--calls 30]
        [--profile] [--torch-profile] [--compare s21|s22]

``--compare s22`` turns session 22's cuts off and on instead (see ``_fast_paths``), e.g. at a batch-1
ViT-S call: ``--compare s22 --shapes 1x6x4096x64``.

``--ladder`` times each layer of a forward and of a backward call instead (every function with the one it
calls, down to Triton's launcher and one TMA encode), with all cuts on: where a call's host time goes.
``--threads`` times ``_backward`` (and two small workloads) on the main thread, looped on another thread, and
handed to another thread one call at a time, as autograd's engine runs each backward.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import triton
from pathoflash.kernels import attention, attention_hopper, attention_hopper_bwd, flash_attention, launch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention

SLEEP_CYCLES = 200_000_000  # ~0.1 s on an H100: longer than any batch of calls below


def host_us(fn: Callable[[], object], calls: int) -> tuple[float, bool]:
    """Host microseconds per call of one batch of ``calls`` calls while the GPU sleeps; False if the batch
    outlasted the sleep (then a call may have waited for the GPU)."""
    torch.cuda._sleep(SLEEP_CYCLES)
    asleep = torch.cuda.Event()
    asleep.record()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    took = (time.perf_counter() - start) / calls * 1e6
    clean = not asleep.query()
    torch.cuda.synchronize()
    return took, clean


def gpu_us(fn: Callable[[], object], calls: int) -> float:
    """GPU microseconds per call of ``fn``, all calls queued behind a sleep before the first one runs."""
    fn()
    torch.cuda.synchronize()
    torch.cuda._sleep(SLEEP_CYCLES)
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / calls * 1e3


_DESCRIPTOR_DEFAULTS = attention_hopper._DESCRIPTOR_DEFAULTS


COMPARE = "s21"  # which cuts the table turns off and on (--compare)


def _fast_paths(enabled: bool) -> None:
    """The compared cuts on or off. s21: direct launches and unchecked descriptors against Triton's launch and
    checked descriptors. s22: calls without a graph skipping ``Function.apply`` and None second pieces at
    unsplit head dims, against autograd's apply and both pieces encoded (session 21's cuts on in both)."""
    attention._fwd_plans.clear()  # plans bind launches (launch.Site) to what these switches chose
    attention._bwd_plans.clear()
    if COMPARE == "s22":
        attention._skip_apply_without_grad = enabled
        attention_hopper._unsplit_tails_as_none = enabled
        return
    launch.ENABLED = enabled
    attention_hopper._DESCRIPTOR_DEFAULTS = _DESCRIPTOR_DEFAULTS if enabled else None


def stages(shape: tuple[int, ...], dtype: torch.dtype) -> dict[str, Callable[[], object]]:
    q, k, v = (torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
    do = torch.randn(shape, device="cuda", dtype=dtype)
    scale = shape[3] ** -0.5
    with torch.no_grad():
        o, lse = attention._forward(q, k, v, scale)
    qd, kd, vd = q.detach(), k.detach(), v.detach()
    acc = attention_hopper_bwd.dq_accumulator(qd).zero_()
    delta = attention._delta(o, do, None, zero=acc)
    dq, dk, dv = (torch.empty_like(t) for t in (qd, kd, vd))
    attention_hopper.hopper_forward(qd, kd, vd, o, lse, scale)  # chooses the candidate
    cfg = attention_hopper._chosen[attention.choice_key(q, k)]

    def cudnn_fwdbwd() -> object:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            out = scaled_dot_product_attention(q, k, v)
        return torch.autograd.grad(out, (q, k, v), do)

    def cudnn_fwd() -> object:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION), torch.no_grad():
            return scaled_dot_product_attention(q, k, v)

    def no_grad_fwd() -> object:
        with torch.no_grad():
            return flash_attention(q, k, v)

    class Passthrough(torch.autograd.Function):  # the autograd engine's own cost, for a Python Function
        @staticmethod
        def forward(ctx: object, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return torch.empty_like(q)

        @staticmethod
        def backward(ctx: object, do: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return do, do, do

    def function_only() -> object:  # no input checks of flash_attention, no slice of the output
        o, _ = attention._FlashAttentionFunction.apply(q, k, v, scale)
        return torch.autograd.grad(o, (q, k, v), do)

    graph_out = flash_attention(q, k, v)

    def backward_only() -> object:  # the autograd engine and our Function's backward, on a kept graph
        return torch.autograd.grad(graph_out, (q, k, v), do, retain_graph=True)

    return {
        "bwd only, kept graph": backward_only,
        "fwd+bwd, Function.apply": function_only,
        "fwd+bwd, empty Function": lambda: torch.autograd.grad(Passthrough.apply(q, k, v), (q, k, v), do),
        "fwd+bwd (autograd.grad)": lambda: torch.autograd.grad(flash_attention(q, k, v), (q, k, v), do),
        "fwd, inputs need grad": lambda: flash_attention(q, k, v),
        "fwd, no grad": no_grad_fwd,
        "_backward (4 launches)": lambda: attention._backward(qd, kd, vd, o, lse, do, None, scale),
        "hopper_forward (cfg)": lambda: attention_hopper.hopper_forward(qd, kd, vd, o, lse, scale, cfg),
        "hopper_backward": lambda: attention_hopper_bwd.hopper_backward(
            qd, kd, vd, do, lse, delta, dk, dv, scale, dq_acc=acc
        ),
        "_delta": lambda: attention._delta(o, do, None, zero=acc),
        "_dq_cast": lambda: attention._dq_cast(
            acc, scale, dq, attention_hopper_bwd.BackwardConfig().fragments(dq.shape[3])
        ),
        "descriptor() x1": lambda: attention_hopper.descriptor(qd, 128),
        "cuDNN fwd+bwd": cudnn_fwdbwd,
        "cuDNN fwd, no grad": cudnn_fwd,
    }


def _captured_launch(call: Callable[[], object]) -> list[tuple[object, tuple, tuple, dict]]:
    """The ``launch(fn, grid, *args, **kwargs)`` calls ``call`` makes through our kernels' modules."""
    seen: list[tuple[object, tuple, tuple, dict]] = []
    modules = (attention, attention_hopper, attention_hopper_bwd)
    originals = [m.launch for m in modules]

    def capture(fn: object, grid: tuple, *args: object, **kwargs: object) -> None:
        seen.append((fn, grid, args, kwargs))
        launch.launch(fn, grid, *args, **kwargs)

    for m in modules:
        m.launch = capture  # type: ignore[attr-defined]
    try:
        call()
    finally:
        for m, original in zip(modules, originals, strict=True):
            m.launch = original  # type: ignore[attr-defined]
    return seen


def _direct(fn: object, grid: tuple, args: tuple, kwargs: dict) -> tuple[Callable[[], object], Any]:
    """Triton's launcher of one captured launch, called as ``launch.launch`` calls it; and the args it gets."""
    key = launch._key(fn, args, kwargs)
    compiled = launch._compiled[key]
    values = launch._ordered(fn, args, kwargs)
    stream = launch._current_stream(torch.cuda.current_device())
    grid3 = (*grid, 1, 1)[:3]

    def run() -> object:
        return compiled.run(
            *grid3, stream, compiled.function, compiled.packed_metadata, None, None, None, *values
        )

    return run, compiled


def ladder(shape: tuple[int, ...], dtype: torch.dtype) -> dict[str, Callable[[], object]]:
    """Each layer of a forward call (no graph) and of a backward, outermost first."""
    import inspect

    from triton.backends.nvidia import driver as nv_driver

    q, k, v = (torch.randn(shape, device="cuda", dtype=dtype) for _ in range(3))
    do = torch.randn(shape, device="cuda", dtype=dtype)
    scale = shape[3] ** -0.5
    o, lse = attention._forward(q, k, v, scale)
    cfg = attention_hopper._chosen[attention.choice_key(q, k)]
    (fwd_launch,) = _captured_launch(lambda: attention_hopper.hopper_forward(q, k, v, o, lse, scale, cfg))
    fwd_run, fwd_compiled = _direct(*fwd_launch)
    descs = [a for a in fwd_launch[2] if hasattr(a, "block_shape")]
    metas = getattr(fwd_compiled.metadata, "tensordesc_meta", None) or [None] * len(descs)
    n_params = len(inspect.signature(nv_driver.make_tensordesc_arg).parameters)
    extra = (None,) * (n_params - 2)

    dq, dk, dv = (torch.empty_like(t) for t in (q, k, v))
    acc = attention_hopper_bwd.dq_accumulator(q).zero_()
    delta = attention._delta(o, do, None, zero=acc)
    attention._backward(q, k, v, o, lse, do, None, scale)  # chooses Gluon or Triton's backward
    gluon = attention._gluon_backward(q, k, v, o, lse, do, None, dq, dk, dv, scale)
    assert gluon is not None, "the Gluon backward is not the one chosen here"
    planned = hasattr(attention, "_fwd_plans")  # False: code from before session 24's plans, as a baseline
    fwd_plan: Any = attention._fwd_plans[attention._signature(q, k, v)] if planned else None
    bwd_launches = _captured_launch(
        lambda: attention_hopper_bwd.hopper_backward(q, k, v, do, lse, delta, dk, dv, scale, dq_acc=acc)
    )
    bwd_run, _ = _direct(*bwd_launches[-1])
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    kept = flash_attention(qg, kg, vg)

    def cudnn_fwd() -> object:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION), torch.no_grad():
            return scaled_dot_product_attention(q, k, v)

    layers: dict[str, Callable[[], object]] = {
        "cuDNN fwd, no grad": cudnn_fwd,
        "flash_attention, no grad": lambda: flash_attention(q, k, v),
        ". _check_inputs+_backend": lambda: (attention._check_inputs(q, k, v), attention._check_backend(q)),
        ". _forward_padded": lambda: attention._forward_padded(q, k, v, scale),
        ". . _forward": lambda: attention._forward(q, k, v, scale),
        ". . . allocate o, lse": lambda: (
            torch.empty((shape[0], shape[2], shape[1], shape[3]), device=q.device, dtype=dtype).permute(
                0, 2, 1, 3
            ),
            torch.empty(shape[:3], device=q.device, dtype=torch.float32),
        ),
        ". . . _gluon_forward": lambda: attention._gluon_forward(q, k, v, o, lse, scale),
        ". . . . hopper_usable": lambda: attention_hopper.hopper_usable(q, k, v),
        ". . . . hopper_forward": lambda: attention_hopper.hopper_forward(q, k, v, o, lse, scale),
        ". . . . . hopper_forward(cfg)": lambda: attention_hopper.hopper_forward(q, k, v, o, lse, scale, cfg),
        ". . . . . . 4 piece_descriptors": lambda: [
            attention_hopper.piece_descriptors(t, 128) for t in (q, k, v, o)
        ],
        ". . . . . . launch.launch": lambda: launch.launch(
            fwd_launch[0], fwd_launch[1], *fwd_launch[2], **fwd_launch[3]
        ),
        ". . . . . . . launch._key": lambda: launch._key(fwd_launch[0], fwd_launch[2], fwd_launch[3]),
        ". . . . . . . Triton's launcher": fwd_run,
        ". . . . . . . . make_tensordesc_arg x4": lambda: [
            nv_driver.make_tensordesc_arg(d, m, *extra) for d, m in zip(descs, metas, strict=True)
        ],
        "torch.cuda.current_device()": torch.cuda.current_device,
        "o[..., :D]": lambda: o[..., : shape[3]],
        "bwd only, kept graph": lambda: torch.autograd.grad(kept, (qg, kg, vg), do, retain_graph=True),
        ". _backward": lambda: attention._backward(q, k, v, o, lse, do, None, scale),
        ". . empty_like x3": lambda: (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)),
        ". . _gluon_backward (lookup)": lambda: attention._gluon_backward(
            q, k, v, o, lse, do, None, dq, dk, dv, scale
        ),
        ". . plan call": (lambda: gluon(q, k, v, o, lse, do, None, dq, dk, dv, scale)) if planned else gluon,
        ". . . acc = dq_accumulator": lambda: attention_hopper_bwd.dq_accumulator(q),
        ". . . _delta": lambda: attention._delta(o, do, None, zero=acc),
        ". . . hopper_backward": lambda: attention_hopper_bwd.hopper_backward(
            q, k, v, do, lse, delta, dk, dv, scale, dq_acc=acc
        ),
        ". . . . Triton's launcher": bwd_run,
        ". . . _dq_cast": lambda: attention._dq_cast(
            acc, scale, dq, attention_hopper_bwd.BackwardConfig().fragments(dq.shape[3])
        ),
    }
    if planned:
        layers[". . . . ForwardPlan call"] = lambda: fwd_plan(q, k, v, o, lse, scale)
        layers[". . . . . _forward_args"] = lambda: attention_hopper._forward_args(
            fwd_plan.cfg, q, k, v, o, lse, scale
        )
        layers[". . . BackwardPlan call"] = lambda: gluon.kernel(q, k, v, do, lse, delta, dk, dv, scale, acc)
    return layers


def run_threads(shape: tuple[int, ...], dtype: torch.dtype, calls: int, batches: int) -> None:
    """Why Python runs slower inside autograd's backward: the same ``_backward`` (and a pure-Python loop, and
    a torch-op loop) timed on the main thread, in a loop on another thread, and handed to another thread one
    call at a time (as the engine's device thread gets each backward)."""
    import queue
    import threading

    q, k, v, do = (torch.randn(shape, device="cuda", dtype=dtype) for _ in range(4))
    scale = shape[3] ** -0.5
    o, lse = attention._forward(q, k, v, scale)
    x = torch.randn(16, device="cuda")

    def python_only() -> object:
        total = 0
        for i in range(400):
            total += i * 3 % 7
        return total

    def torch_ops() -> object:
        return [x.view(4, 4).t()[..., :2] for _ in range(20)]

    work = {
        "_backward": lambda: attention._backward(q, k, v, o, lse, do, None, scale),
        "python loop (400 adds)": python_only,
        "20 views of a CUDA tensor": torch_ops,
    }
    jobs: queue.SimpleQueue = queue.SimpleQueue()
    done: queue.SimpleQueue = queue.SimpleQueue()

    def worker() -> None:
        torch.cuda.set_device(q.device)
        while True:
            job = jobs.get()
            if job is None:
                return
            job()
            done.put(None)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()

    def handed(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> None:
            jobs.put(fn)
            done.get()

        return run

    def looped(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> None:  # one hand-off for `calls` calls: a timed batch is one call of this
            jobs.put(lambda: [fn() for _ in range(calls)])
            done.get()

        return run

    print(f"{'work':28s} {'main':>7s} {'loop, thread':>12s} {'handed':>7s}  min host us per call")
    for name, fn in work.items():
        rows = []
        for way, batch in ((fn, calls), (looped(fn), 1), (handed(fn), calls)):
            for _ in range(3):
                way()
            torch.cuda.synchronize()
            # a batch of `batch` calls of `way` is `calls` calls of fn either way
            times = [host_us(way, batch)[0] * batch / calls for _ in range(batches)]
            rows.append(min(times))
        print(f"{name:28s} {rows[0]:7.1f} {rows[1]:12.1f} {rows[2]:7.1f}")
    jobs.put(None)


def run_ladder(shape: tuple[int, ...], dtype: torch.dtype, calls: int, batches: int) -> None:
    layers = ladder(shape, dtype)
    print(f"{'layer':40s} {'min':>7s} {'median':>7s}  host us per call")
    for name, fn in layers.items():
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        times, clean = [], True
        for _ in range(batches):
            us, ok = host_us(fn, calls)
            times.append(us)
            clean &= ok
        print(
            f"{name:40s} {min(times):7.1f} {statistics.median(times):7.1f}"
            f"{'' if clean else '  (a batch outlasted the sleep)'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="2x16x4100x64,4x8x4096x128")
    parser.add_argument("--dtype", default="bf16", choices=["fp16", "bf16"])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--batches", type=int, default=9)
    parser.add_argument("--profile", action="store_true", help="cProfile a call and _backward too")
    parser.add_argument("--no-table", action="store_true", help="skip the stage table")
    parser.add_argument("--ladder", action="store_true", help="time each layer of a call instead")
    parser.add_argument("--threads", action="store_true", help="time _backward on and off the main thread")
    parser.add_argument("--torch-profile", action="store_true", help="torch.profiler's CPU table of a call")
    parser.add_argument(
        "--compare", choices=["s21", "s22"], default="s21", help="the cuts to turn off and on"
    )
    args = parser.parse_args()
    global COMPARE
    COMPARE = args.compare
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, {args.dtype}"
    )
    for text in args.shapes.split(","):
        shape = tuple(map(int, text.split("x")))
        if args.threads:
            print(f"\n{text}: threads, {args.batches} batches of {args.calls} calls")
            run_threads(shape, dtype, args.calls, args.batches)
            continue
        if args.ladder:
            print(f"\n{text}: the ladder, {args.batches} batches of {args.calls} calls")
            run_ladder(shape, dtype, args.calls, args.batches)
            continue
        runs = stages(shape, dtype)
        print(f"\n{text}: host us per call, min and median of {args.batches} batches of {args.calls} calls")
        off, on = ("Triton launch", "direct") if COMPARE == "s21" else ("before s22", "s22 cuts")
        print(f"{'stage':26s} {off:>17s} {on:>17s} {'min ratio':>9s}")
        for name, fn in runs.items() if not args.no_table else ():
            times: dict[bool, list[float]] = {False: [], True: []}
            clean = True
            for enabled in (False, True):  # compile and warm both ways
                _fast_paths(enabled)
                for _ in range(3):
                    fn()
            torch.cuda.synchronize()
            for _ in range(args.batches):  # the two ways alternate, so drifts of the host hit both
                for enabled in (False, True):
                    _fast_paths(enabled)
                    us, ok = host_us(fn, args.calls)
                    times[enabled].append(us)
                    clean &= ok
            low = {e: min(t) for e, t in times.items()}
            mid = {e: statistics.median(t) for e, t in times.items()}
            print(
                f"{name:26s} {low[False]:8.1f} {mid[False]:8.1f} {low[True]:8.1f} {mid[True]:8.1f}"
                f" {low[True] / low[False]:6.2f}{'' if clean else '  (a batch outlasted the sleep)'}"
            )
        for name in ("fwd+bwd (autograd.grad)", "cuDNN fwd+bwd"):
            for enabled in (False, True):
                _fast_paths(enabled)
                gpu = gpu_us(runs[name], args.calls)
                bench = triton.testing.do_bench(runs[name], warmup=25, rep=200, return_mode="median") * 1e3
                print(f"{name:26s} direct={enabled!s:5s} GPU {gpu:7.1f} us  do_bench {bench:7.1f} us")
        _fast_paths(True)
        _split_backward(runs["bwd only, kept graph"], args.calls)
        if args.torch_profile:
            _torch_profile(runs["fwd+bwd (autograd.grad)"])
        if args.profile:
            for name in ("fwd, no grad", "_backward (4 launches)", "hopper_backward"):
                print(f"\ncProfile of {name!r}, 60 calls, direct launches, the GPU asleep")
                _profile(runs[name])


def _split_backward(backward_only: Callable[[], object], calls: int) -> None:
    """Where a backward call's host time goes: the engine, our Function's backward, the ``_backward`` in it."""
    spent = {"Function.backward": 0.0, "_backward": 0.0}
    function = attention._FlashAttentionFunction
    original_backward, original_inner = function.__dict__["backward"], attention._backward

    def timed(name: str, fn: Callable[..., object]) -> Callable[..., object]:
        def run(*a: object, **kw: object) -> object:
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] += time.perf_counter() - start

        return run

    function.backward = staticmethod(timed("Function.backward", function.backward))  # type: ignore[assignment]
    attention._backward = timed("_backward", original_inner)  # type: ignore[assignment]
    try:
        for _ in range(3):
            backward_only()
        spent.update({name: 0.0 for name in spent})
        total, clean = host_us(backward_only, calls)
    finally:
        function.backward, attention._backward = original_backward, original_inner  # type: ignore[method-assign]
    inner = {name: t / calls * 1e6 for name, t in spent.items()}
    print(
        f"bwd only, split: {total:.1f} us a call{'' if clean else ' (outlasted the sleep)'}; in Function.backward"
        f" {inner['Function.backward']:.1f}, of which _backward {inner['_backward']:.1f}; the engine the rest"
    )


def _torch_profile(fn: Callable[[], object]) -> None:
    """torch.profiler's CPU view of 20 calls, the autograd thread included: what the engine spends time on."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    torch.cuda._sleep(SLEEP_CYCLES)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(20):
            fn()
    torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=60))
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=20, max_name_column_width=60))


def _profile(fn: Callable[[], object]) -> None:
    profile = cProfile.Profile()
    torch.cuda._sleep(SLEEP_CYCLES)
    profile.enable()
    for _ in range(60):
        fn()
    profile.disable()
    torch.cuda.synchronize()
    pstats.Stats(profile).sort_stats("tottime").print_stats(45)


if __name__ == "__main__":
    main()
