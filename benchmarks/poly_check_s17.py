"""Session 17 experiment: accuracy of the ping-pong forward with part of the exponentials on the FMA pipe."""
import math
import os
import sys

import torch

sys.path.insert(0, "benchmarks")
from probe_hopper import run_hopper  # noqa: E402
from pathoflash.kernels import attention_hopper as hop  # noqa: E402
from pathoflash.kernels.reference import attention_reference  # noqa: E402

mode = os.environ.get("PATHOFLASH_EXP_POLY", "0")
ok = True
torch.manual_seed(1)
for b, h, n, d in [(1, 2, 1000, 128), (2, 3, 4097, 128), (1, 4, 300, 64)]:
    for dtype in (torch.bfloat16, torch.float16):
        q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=dtype) * s for s in (2.0, 2.0, 1.0))
        scale = 1 / math.sqrt(d)
        ro, rl = attention_reference(q.double(), k.double(), v.double(), scale=scale)
        plain = (ro.to(dtype).double() - ro).abs().max().item()
        for cfg in (hop.CANDIDATES[d][0], hop.CANDIDATES[d][1]):
            o, lse = run_hopper(q, k, v, scale, cfg)
            err = (o.double() - ro).abs().max().item()
            lerr = (lse.double() - rl).abs().max().item()
            good = err <= 2 * plain + 2e-3 and lerr < 1e-3
            ok &= good
            print(f"poly={mode} {(b, h, n, d)} {str(dtype)[6:]} persistent={cfg.persistent} c={cfg.consumers}: "
                  f"err {err:.2e} plain {plain:.2e} ratio {err / plain:.2f} lse {lerr:.1e} {'ok' if good else 'BAD'}")
print("POLY CHECK", "PASSED" if ok else "FAILED")
