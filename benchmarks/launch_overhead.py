"""Per-call host time of flash_attention (launch overhead) against its GPU time, Gluon and Triton forward.

    python3 benchmarks/launch_overhead.py [--shape 4x6x4097x64]

Small models call attention once per layer on modest tensors, so a slow launch leaves the GPU idle.
"""

from __future__ import annotations

import argparse
import time

import torch
from pathoflash.kernels import attention, flash_attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", default="4x6x4097x64")
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
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
    attention._gluon_override = None


if __name__ == "__main__":
    main()
