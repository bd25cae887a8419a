"""Device debugging: host time of each stage of our forward+backward, with and without direct launches.

Session 20 found our forward+backward call host-bound at (2, 16, 4100, 64): more host time per call than GPU
time (ATTENTION_NOTES "Session 20", item 4). Each stage here is timed on the host while a long sleep kernel
keeps the GPU busy, so no call ever waits for the GPU (checked: the sleep must still be running when the
calls are queued, or the row is marked). Every stage runs twice, Triton's launches (``kernel[grid]``) and
``pathoflash.kernels.launch``'s direct ones, and the GPU time and ``do_bench`` of a whole call beside it:

    python3 benchmarks/probe_host.py [--shapes 2x16x4100x64,4x8x4096x128] [--dtype bf16] [--calls 30] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable

import torch
import triton
from pathoflash.kernels import attention, attention_hopper, attention_hopper_bwd, flash_attention, launch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention

SLEEP_CYCLES = 400_000_000  # ~0.2 s on an H100: longer than any batch of calls below


def host_us(fn: Callable[[], object], calls: int, batches: int = 5) -> tuple[float, bool]:
    """Median host microseconds per call of ``fn`` while the GPU sleeps; False if a batch outlasted the sleep."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times, clean = [], True
    for _ in range(batches):
        torch.cuda._sleep(SLEEP_CYCLES)
        asleep = torch.cuda.Event()
        asleep.record()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls * 1e6)
        clean &= not asleep.query()
        torch.cuda.synchronize()
    return statistics.median(times), clean


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


def stages(shape: tuple[int, ...], dtype: torch.dtype) -> dict[str, Callable[[], object]]:
    q, k, v = (torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
    do = torch.randn(shape, device="cuda", dtype=dtype)
    scale = shape[3] ** -0.5
    with torch.no_grad():
        o, lse = attention._forward(q, k, v, scale)
    qd, kd, vd = q.detach(), k.detach(), v.detach()
    acc = torch.zeros(shape, device="cuda", dtype=torch.float32)
    delta = attention._delta(o, do, None, zero=acc)
    dq, dk, dv = (torch.empty_like(t) for t in (qd, kd, vd))
    key = (shape[3], dtype, triton.next_power_of_2(shape[2]), triton.next_power_of_2(shape[2]))
    attention_hopper.hopper_forward(qd, kd, vd, o, lse, scale)  # chooses the candidate
    cfg = attention_hopper._chosen[key]

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

    return {
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
        "_dq_cast": lambda: attention._dq_cast(acc, scale, dq),
        "descriptor() x1": lambda: attention_hopper.descriptor(qd, 128),
        "cuDNN fwd+bwd": cudnn_fwdbwd,
        "cuDNN fwd, no grad": cudnn_fwd,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="2x16x4100x64,4x8x4096x128")
    parser.add_argument("--dtype", default="bf16", choices=["fp16", "bf16"])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--profile", action="store_true", help="cProfile a call and _backward too")
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, {args.dtype}"
    )
    for text in args.shapes.split(","):
        shape = tuple(map(int, text.split("x")))
        runs = stages(shape, dtype)
        print(
            f"\n{text}: host us per call (median of 5 batches of {args.calls}); '!' = a batch outlasted the sleep"
        )
        print(f"{'stage':26s} {'kernel[grid]':>13s} {'direct':>9s} {'ratio':>6s}")
        for name, fn in runs.items():
            row = []
            for enabled in (False, True):
                launch.ENABLED = enabled
                us, clean = host_us(fn, args.calls)
                row.append(f"{us:8.1f}{' ' if clean else '!'}")
            ratio = float(row[1][:-1]) / float(row[0][:-1])
            print(f"{name:26s} {row[0]:>13s} {row[1]:>9s} {ratio:6.2f}")
        for name in ("fwd+bwd (autograd.grad)", "cuDNN fwd+bwd"):
            for enabled in (False, True):
                launch.ENABLED = enabled
                gpu = gpu_us(runs[name], args.calls)
                bench = triton.testing.do_bench(runs[name], warmup=25, rep=200, return_mode="median") * 1e3
                print(f"{name:26s} direct={enabled!s:5s} GPU {gpu:7.1f} us  do_bench {bench:7.1f} us")
        launch.ENABLED = True
        if args.profile:
            for name in ("fwd+bwd (autograd.grad)", "_backward (4 launches)"):
                print(f"\ncProfile of {name!r}, 60 calls, direct launches, the GPU asleep")
                _profile(runs[name])


def _profile(fn: Callable[[], object]) -> None:
    profile = cProfile.Profile()
    torch.cuda._sleep(SLEEP_CYCLES)
    profile.enable()
    for _ in range(60):
        fn()
    profile.disable()
    torch.cuda.synchronize()
    pstats.Stats(profile).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
