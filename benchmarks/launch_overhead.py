"""Per-call host time of flash_attention (launch overhead) against its GPU time, Gluon and Triton forward.

    python3 benchmarks/launch_overhead.py [--shape 4x6x4097x64]
    python3 benchmarks/launch_overhead.py --fwdbwd --shape 4x16x4096x64 [--profile]   # ours and cuDNN

``--fwdbwd`` times forward+backward three ways per method: host time per call, GPU-bound time per call (the
queue kept full), and ``triton.testing.do_bench``'s median (which flushes L2 between calls, so the GPU idles
while the host prepares the next launch: host time shows there). ``--profile`` adds cProfile's top entries.

Small models call attention once per layer on modest tensors, so a slow launch leaves the GPU idle.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable

import torch
import triton
from pathoflash.kernels import attention, flash_attention
from torch.nn.attention import SDPBackend, sdpa_kernel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", default="4x6x4097x64")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--fwdbwd", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.fwdbwd:
        fwdbwd(args)
        return
    b, h, n, d = map(int, args.shape.split("x"))
    qkv = torch.randn(b, n, 3, h, d, device="cuda", dtype=torch.bfloat16).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    print(f"{torch.cuda.get_device_name()} shape {args.shape} bf16, {args.calls} calls")
    for name, gluon in (("gluon", None), ("triton", False)):
        attention._gluon_override = gluon
        with torch.inference_mode():
            for _ in range(5):
                flash_attention(q, k, v)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.calls):
                flash_attention(q, k, v)
            host = (time.perf_counter() - start) / args.calls
            torch.cuda.synchronize()
            wall = (time.perf_counter() - start) / args.calls
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda._sleep(50_000_000)  # queue work first so the launches below are not host-bound
            begin.record()
            for _ in range(args.calls):
                flash_attention(q, k, v)
            end.record()
            end.synchronize()
            gpu = begin.elapsed_time(end) / 1000 / args.calls
        print(
            f"{name:7s} host {host * 1e6:7.1f} us/call  wall {wall * 1e6:7.1f} us/call  gpu-bound {gpu * 1e6:7.1f} us/call"
        )
        if args.profile:
            with torch.inference_mode():
                _profile(lambda: flash_attention(q, k, v))
    attention._gluon_override = None


def _three_times(step: Callable[[], object], calls: int) -> tuple[float, float, float]:
    """(host, GPU-bound, do_bench) microseconds per call of ``step``."""
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        step()
    host = (time.perf_counter() - start) / calls
    torch.cuda.synchronize()
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(200_000_000)  # queue work first so the launches below are not host-bound
    begin.record()
    for _ in range(calls):
        step()
    end.record()
    end.synchronize()
    gpu = begin.elapsed_time(end) / 1000 / calls
    bench = triton.testing.do_bench(step, warmup=25, rep=200, return_mode="median") / 1000
    return host * 1e6, gpu * 1e6, bench * 1e6


def fwdbwd(args: argparse.Namespace) -> None:
    shape = tuple(map(int, args.shape.split("x")))
    print(f"{torch.cuda.get_device_name()} shape {args.shape} forward+backward, {args.calls} calls")
    for dtype in (torch.bfloat16, torch.float16):
        _fwdbwd_dtype(shape, dtype, args)


def _fwdbwd_dtype(shape: tuple[int, ...], dtype: torch.dtype, args: argparse.Namespace) -> None:
    q, k, v = (torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
    do = torch.randn(shape, device="cuda", dtype=dtype)

    def ours() -> object:
        return torch.autograd.grad(flash_attention(q, k, v), (q, k, v), do)

    def cudnn() -> object:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return torch.autograd.grad(out, (q, k, v), do)

    for name, step in (("ours", ours), ("cudnn", cudnn)):
        host, gpu, bench = _three_times(step, args.calls)
        print(
            f"{dtype} {name:6s} host {host:7.1f} us  gpu-bound {gpu:7.1f} us  do_bench {bench:7.1f} us"
            f"  do_bench/gpu-bound {bench / gpu:.3f}", flush=True,
        )  # fmt: skip
    if args.profile:
        _profile(ours)


def _profile(step: Callable[[], object]) -> None:
    """cProfile's top entries over 50 calls, by own time and by cumulative time."""
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(50):
        step()
    profile.disable()
    torch.cuda.synchronize()
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(15)
    stats.sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
