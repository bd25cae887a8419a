"""Device debugging: which Hopper forward configuration fails on tensors whose offsets pass 2³¹ elements?

Each (layout, configuration) runs in its own process (an illegal address poisons the CUDA context), launches
the configuration once and checks a sample of query rows of the first and last head against float32:

    python3 benchmarks/probe_offsets.py [--layouts fused,heads,batch,small] [--head-dims 128,64] [--chooser] [--warm]

Layouts (B, H, N, D):
* ``fused``: the GPU test's fused (1, 32768, 3, 256, 128) projection, q/k/v views; row offsets reach 3.2·10⁹;
* ``heads``: a fused (1, 4096, 3, 2048, D) projection: the same offsets, a 17-TFLOP call;
* ``batch``: contiguous (4, 2048, 2048, D) q/k/v: the last batch starts past 2³¹ elements;
* ``small``: a fused (1, 4096, 3, 32, D) projection (offsets below 2³¹: the control).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = r"""
import sys, torch
from pathoflash.kernels import attention_hopper as hop
from pathoflash.kernels.reference import attention_reference
layout, d, index, warm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
dtype = torch.bfloat16
if warm:  # what a test worker ran before: the GPU layout test's case 47 (head dim 48, a zero head stride)
    from pathoflash.kernels import flash_attention
    g = torch.Generator(device="cuda").manual_seed(47)
    wq = torch.randn(3, 2, 16, 48, generator=g, device="cuda").half().requires_grad_()
    wk = torch.randn(3, 1, 16, 48, generator=g, device="cuda").half().expand(3, 2, 16, 48).requires_grad_()
    wv = torch.randn(3, 2, 16, 56, generator=g, device="cuda").half()[..., :48].requires_grad_()
    wo, wl = flash_attention(wq, wk, wv, scale=0.3, return_lse=True)
    (wo.float().sum() + wl.sum()).backward()
    torch.cuda.synchronize()
gen = torch.Generator(device="cuda").manual_seed(5)

def filled(*shape):
    t = torch.empty(*shape, device="cuda", dtype=dtype)
    flat = t.view(shape[0] * shape[1], -1)
    for start in range(0, flat.shape[0], 512):
        piece = flat[start : start + 512]
        piece.copy_(torch.randn(piece.shape, generator=gen, device="cuda"))
    return t

if layout in ("fused", "heads", "small"):
    n, h = {"fused": (32768, 256), "heads": (4096, 2048), "small": (4096, 32)}[layout]
    q, k, v = filled(1, n, 3, h, d).permute(2, 0, 3, 1, 4)
else:
    q, k, v = (filled(4, 2048, 2048, d) for _ in range(3))
b, h, n, _ = q.shape
o = torch.empty((b, n, h, d), device="cuda", dtype=dtype).permute(0, 2, 1, 3)
lse = torch.empty((b, h, n), device="cuda", dtype=torch.float32)
if index < 0:  # the chooser: every candidate launched and timed, as a first call does
    hop.hopper_forward(q, k, v, o, lse, d ** -0.5)
    cfg = "chooser"
else:
    cfg = hop.CANDIDATES[d][index]
    hop._launch(q, k, v, o, lse, d ** -0.5, cfg)
torch.cuda.synchronize()
rows = torch.cat([torch.arange(0, 64), torch.arange(n - 64, n)]).cuda()
worst = 0.0  # largest error relative to the largest reference output (bf16 rounding: 0.004)
for bi, hi in ((0, 0), (b - 1, h - 1)):
    ref, _ = attention_reference(*(t[bi : bi + 1, hi : hi + 1].float() for t in (q[:, :, rows], k, v)))
    err = (o[bi : bi + 1, hi : hi + 1, rows].float() - ref).abs().max() / ref.abs().max()
    worst = max(worst, err.item())
print(f"{layout:6} D{d} {cfg}: relative error {worst:.4f}", "OK" if worst < 0.02 else "WRONG")
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", default="small,batch,heads,fused")
    parser.add_argument("--head-dims", default="128,64")
    parser.add_argument("--chooser", action="store_true", help="also run the chooser (all candidates, timed)")
    parser.add_argument("--warm", action="store_true", help="first a small call at head dim 48, in-process")
    args = parser.parse_args()
    from pathoflash.kernels import attention_hopper as hop

    failed = 0
    for layout in args.layouts.split(","):
        for d in (int(x) for x in args.head_dims.split(",")):
            if layout == "fused" and d != 128:
                continue
            for index in range(-1 if args.chooser else 0, len(hop.CANDIDATES[d])):
                child = [sys.executable, "-c", CHILD, layout, str(d), str(index), str(int(args.warm))]
                run = subprocess.run(child, capture_output=True, text=True)
                lines = (run.stdout + run.stderr).strip().splitlines()
                ok = run.returncode == 0 and lines and lines[-1].endswith("OK")
                failed += not ok
                tail = lines[-1] if ok else " | ".join(line for line in lines if "Error" in line)[-300:]
                print(f"{layout:6} D{d} candidate {index}: {'ok ' if ok else 'FAIL'} {tail}", flush=True)
                if not ok:
                    print(run.stderr[-3000:], flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
