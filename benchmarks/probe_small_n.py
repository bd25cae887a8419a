"""Device debugging: does a backward configuration fault at N = 1? One subprocess per configuration.

CUDA_LAUNCH_BLOCKING=1 python3 benchmarks/probe_small_n.py
"""

import os
import subprocess
import sys

CHILD = r"""
import sys, torch
from pathoflash.kernels import attention as A
i = int(sys.argv[1])
dev = torch.device("cuda")
d, n = 64, 1
dk = A.candidate_configs(A.DKDV_CONFIGS, dev, d)
dq = A.candidate_configs(A.DQ_CONFIGS, dev, d)
q, k, v, do = (torch.randn(1, 1, n, d, device=dev, dtype=torch.bfloat16) for _ in range(4))
o, lse = A._forward(q, k, v, d ** -0.5)
torch.cuda.synchronize()
cfg = None if i < 0 else (dk[i % len(dk)], dq[0]) if i < 10 else (dk[0], dq[(i - 10) % len(dq)])
A._backward(q, k, v, o, lse, do, None, d ** -0.5, cfg)
torch.cuda.synchronize()
print("OK", cfg)
"""

env = {**os.environ, "CUDA_LAUNCH_BLOCKING": "1"}
for i in (0, 1, 2, 3, 10, 11, 12, -1):
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(i)], capture_output=True, text=True, env=env, timeout=40
        )
        err = [line for line in proc.stderr.splitlines() if "Error" in line][-1:]
        print(i, "ok" if proc.returncode == 0 else "FAULT", proc.stdout.strip()[-120:], err, flush=True)
    except subprocess.TimeoutExpired:
        print(i, "timeout", flush=True)
