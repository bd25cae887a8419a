"""One forward+backward of ours and of cuDNN inside a profiler range, for Nsight Compute (ncu).

Compilation, the first-call choice and warm-up run before ``cudaProfilerStart``, so with
``--profile-from-start off`` ncu sees only the kernels of the calls under test (one of each method, in order):

    ncu --profile-from-start off --clock-control none --set full -o $OUT/bwd \\
        python3 benchmarks/profile_ncu.py --shape 1,8,16384,128 --dtype bf16 [--methods ours,cudnn] [--fwd-only]
    ncu --import $OUT/bwd.ncu-rep --page details > $OUT/bwd.txt

``--clock-control none`` leaves the card's clocks alone (the device README: never change them), so the
numbers are at whatever clock the card runs, as in the timings. Without ncu the script only runs the calls.
"""

from __future__ import annotations

import argparse

import torch
from pathoflash.kernels import flash_attention
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _call(method: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, do: torch.Tensor | None) -> None:
    if method == "ours":
        out = flash_attention(q, k, v)
    else:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            out = scaled_dot_product_attention(q, k, v)
    if do is not None:
        out.backward(do)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1,8,16384,128", help="B,H,N,D")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--methods", default="ours,cudnn")
    parser.add_argument("--fwd-only", action="store_true", help="the forward alone, without grad")
    parser.add_argument("--warmup", type=int, default=5, help="calls of each method before the profiled one")
    args = parser.parse_args()
    shape = tuple(int(x) for x in args.shape.split(","))
    dtype = DTYPES[args.dtype]
    methods = args.methods.split(",")
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(shape, device="cuda", dtype=dtype, generator=gen) for _ in range(4))
    grad = not args.fwd_only
    for x in (q, k, v):
        x.requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        for method in methods:
            for _ in range(args.warmup):
                _call(method, q, k, v, do if grad else None)
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStart()
        for method in methods:
            _call(method, q, k, v, do if grad else None)
            torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStop()
    print(f"profiled {methods} at {shape} {args.dtype} {'forward' if args.fwd_only else 'forward+backward'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
