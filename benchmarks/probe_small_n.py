"""Device debugging: does any kernel configuration touch memory out of bounds at small N?

Every candidate configuration of the forward, dK/dV and dQ kernels runs in its own process under
``compute-sanitizer --tool memcheck`` with PyTorch's caching allocator off (each tensor its own cudaMalloc, so
an access past a tensor's end is an error the sanitizer sees, not a read of a neighbour's memory).

    python3 benchmarks/probe_small_n.py [--n 1,2,33] [--d 64] [--layout contiguous|strided] [--kinds dkdv,auto]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

CHILD = r"""
import sys, torch
from pathoflash.kernels import attention as A
kind, i, n, d, layout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
dev = torch.device("cuda")
def make():
    if layout == "strided":  # every other column of a wider tensor, as in the GPU tests
        return torch.randn(1, 2, n, 2 * d, device=dev, dtype=torch.bfloat16)[..., ::2]
    return torch.randn(1, 2, n, d, device=dev, dtype=torch.bfloat16)
q, k, v = make(), make(), make()
do = torch.randn(1, n, 2, d, device=dev, dtype=torch.bfloat16).transpose(1, 2)
fwd = A.candidate_configs(A.FWD_CONFIGS, dev, d)
dkdv = A.candidate_configs(A.DKDV_CONFIGS, dev, d)
dq = A.candidate_configs(A.DQ_CONFIGS, dev, d)
if kind == "auto":
    o, lse = A._forward(q, k, v, d ** -0.5)
    A._backward(q, k, v, o, lse, do, None, d ** -0.5)
    cfg = "autotuned"
elif kind == "fwd":
    cfg = fwd[i]
    o, lse = A._forward(q, k, v, d ** -0.5, cfg)
else:
    o, lse = A._forward(q, k, v, d ** -0.5, fwd[0])
    cfg = (dkdv[i], dq[0]) if kind == "dkdv" else (dkdv[0], dq[i])
    A._backward(q, k, v, o, lse, do, None, d ** -0.5, cfg)
torch.cuda.synchronize()
print("OK", cfg)
"""


def _cases(d: int, kinds: set[str]) -> list[tuple[str, int]]:
    import torch
    from pathoflash.kernels import attention as A

    dev = torch.device("cuda")
    sizes = {
        "fwd": len(A.candidate_configs(A.FWD_CONFIGS, dev, d)),
        "dkdv": len(A.candidate_configs(A.DKDV_CONFIGS, dev, d)),
        "dq": len(A.candidate_configs(A.DQ_CONFIGS, dev, d)),
    }
    cases = [(kind, i) for kind, count in sizes.items() for i in range(count)] + [("auto", 0)]
    return [(kind, i) for kind, i in cases if kind in kinds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", default="1,2,33")
    parser.add_argument("--d", default="64")
    parser.add_argument("--layout", default="contiguous", choices=["contiguous", "strided"])
    parser.add_argument("--kinds", default="fwd,dkdv,dq,auto")
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--no-sanitizer", action="store_true")
    args = parser.parse_args()
    env = {**os.environ, "PYTORCH_NO_CUDA_MEMORY_CACHING": "1", "CUDA_LAUNCH_BLOCKING": "1"}
    prefix = [] if args.no_sanitizer else ["compute-sanitizer", "--tool", "memcheck", "--print-limit", "3"]

    def probe(case: tuple[str, int, int, int]) -> str:
        kind, i, n, d = case
        cmd = [*prefix, sys.executable, "-c", CHILD, kind, str(i), str(n), str(d), args.layout]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        except subprocess.TimeoutExpired:
            return f"{kind:5s} {i} N={n} D={d}: timeout"
        text = proc.stdout + proc.stderr
        errors = [line for line in text.splitlines() if "Invalid" in line or "Error" in line]
        ok = proc.returncode == 0 and "ERROR SUMMARY: 0 errors" in text if prefix else proc.returncode == 0
        status = "ok" if ok else "FAULT"
        detail = proc.stdout.strip().splitlines()[-1:] if ok else errors[:4] or text.splitlines()[-6:]
        return f"{kind:5s} {i} N={n} D={d}: {status} {detail}"

    cases = [
        (kind, i, n, d)
        for d in map(int, args.d.split(","))
        for n in map(int, args.n.split(","))
        for kind, i in _cases(d, set(args.kinds.split(",")))
    ]
    with ThreadPoolExecutor(args.jobs) as pool:
        for line in pool.map(probe, cases):
            print(line, flush=True)


if __name__ == "__main__":
    main()
