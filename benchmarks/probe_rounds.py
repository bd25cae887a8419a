"""Device debugging: do our forward+backward's rounds vary with where the tensors lie?

`attention.py` saw our forward+backward at (2, 16, 4100, 64) vary by up to 25 % between rounds of one process
while cuDNN's held (runs 19 and 20); the backward alone on fixed inputs did not. Here each round times ours
(forward+backward, and forward alone) and cuDNN's forward+backward, first on the same tensors every round,
then on new ones behind a pad of random size, so that the caching allocator places them elsewhere:

    python3 benchmarks/probe_rounds.py [--shape 2x16x4100x64] [--dtype fp16] [--same 5] [--fresh 10]
"""

from __future__ import annotations

import argparse
import random
import time

import torch
import triton
from pathoflash.kernels import flash_attention
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention


def _times(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, do: torch.Tensor, rep_ms: int) -> dict:
    """do_bench medians (ms): ours forward+backward, cuDNN's forward+backward, ours forward alone; and the host
    time (ms) of a forward+backward call, ours and cuDNN's."""

    def ours() -> None:
        flash_attention(q, k, v).backward(do)

    def cudnn() -> None:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            scaled_dot_product_attention(q, k, v).backward(do)

    def ours_fwd() -> None:
        with torch.no_grad():
            flash_attention(q, k, v)

    times = {}
    for name, fn, grads in (("ours", ours, [q, k, v]), ("cudnn", cudnn, [q, k, v]), ("fwd", ours_fwd, None)):
        fn()
        times[name] = triton.testing.do_bench(fn, rep=rep_ms, grad_to_none=grads)
    for name, fn in (("host", ours), ("host_cudnn", cudnn)):  # host time per call, the GPU queue not full
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            fn()
            q.grad = k.grad = v.grad = None
        times[name] = (time.perf_counter() - start) / 10 * 1e3
        torch.cuda.synchronize()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="2x16x4100x64")
    parser.add_argument("--dtype", default="fp16", choices=["fp16", "bf16"])
    parser.add_argument("--same", type=int, default=5, help="rounds on the first tensors")
    parser.add_argument("--fresh", type=int, default=10, help="rounds on new tensors each")
    parser.add_argument("--rep-ms", type=int, default=100)
    args = parser.parse_args()
    shape = tuple(int(x) for x in args.shape.split("x"))
    dtype = torch.float16 if args.dtype == "fp16" else torch.bfloat16
    b, h, n, d = shape
    fwd_flop = 4 * b * h * n * n * d
    rng = random.Random(0)
    pads = []

    def tensors() -> list[torch.Tensor]:
        return [torch.randn(shape, device="cuda", dtype=dtype).requires_grad_(i < 3) for i in range(4)]

    q, k, v, do = tensors()
    print(f"{shape} {args.dtype}; TFLOP/s (forward+backward = 3.5 x forward)")
    print("round  placement   ours f+b  cuDNN f+b  ratio  ours fwd   host µs ours  cuDNN   q at (MiB)")
    for r in range(args.same + args.fresh):
        if r >= args.same:
            pads.append(torch.empty(rng.randint(1, 64) * 2**20 + rng.randint(0, 255) * 512, device="cuda"))
            q, k, v, do = tensors()

        times = _times(q, k, v, do, args.rep_ms)
        fb = 3.5 * fwd_flop / 1e9
        print(
            f"{r:5}  {'same' if r < args.same else 'fresh':9}  {fb / times['ours']:9.1f}  "
            f"{fb / times['cudnn']:9.1f}  {times['cudnn'] / times['ours']:5.2f}  "
            f"{fwd_flop / 1e9 / times['fwd']:8.1f}   {times['host'] * 1e3:12.0f}  {times['host_cudnn'] * 1e3:5.0f}"
            f"   {q.data_ptr() / 2**20:10.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
