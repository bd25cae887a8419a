"""Device debugging: the error of every kernel configuration against a float32 reference at one shape.

python3 benchmarks/probe_accuracy.py [--n 300] [--d 40] [--layout contiguous|strided]
"""

from __future__ import annotations

import argparse

import torch
from pathoflash.kernels import attention as A
from pathoflash.kernels.reference import attention_reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--d", type=int, default=40)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    dev, dtype, n, d = torch.device("cuda"), getattr(torch, args.dtype), args.n, args.d
    torch.manual_seed(0)
    q, k, v, do = (torch.randn(1, 2, n, d, device=dev, dtype=dtype) for _ in range(4))
    qf, kf, vf = (x.float().requires_grad_() for x in (q, k, v))
    ref_o, _ = attention_reference(qf, kf, vf)
    ref = dict(zip(("dq", "dk", "dv"), torch.autograd.grad(ref_o, (qf, kf, vf), do.float()), strict=True))
    ref["o"] = ref_o.detach()
    scale = d**-0.5
    fwd = A.candidate_configs(A.FWD_CONFIGS, dev, d)
    dkdv = A.candidate_configs(A.DKDV_CONFIGS, dev, d)
    dq = A.candidate_configs(A.DQ_CONFIGS, dev, d)
    print("meta", A.head_split(d), flush=True)
    for cfg in fwd:
        o, _ = A._forward(q, k, v, scale, cfg)
        print("fwd ", cfg, f"o {(o.float() - ref['o']).abs().max().item():.3e}", flush=True)
    o, lse = A._forward(q, k, v, scale, fwd[0])
    for i, cfg in enumerate(dkdv):
        g = A._backward(q, k, v, o, lse, do, None, scale, (cfg, dq[0]))
        errs = {
            name: (x.float() - ref[name]).abs().max().item()
            for name, x in zip(("dq", "dk", "dv"), g, strict=True)
        }
        print("dkdv", i, cfg, {k_: f"{e:.3e}" for k_, e in errs.items()}, flush=True)
    for i, cfg in enumerate(dq):
        g = A._backward(q, k, v, o, lse, do, None, scale, (dkdv[0], cfg))
        print("dq  ", i, cfg, f"dq {(g[0].float() - ref['dq']).abs().max().item():.3e}", flush=True)
    print("scale of dq/dk/dv:", {k_: f"{x.abs().max().item():.3e}" for k_, x in ref.items()})


if __name__ == "__main__":
    main()
