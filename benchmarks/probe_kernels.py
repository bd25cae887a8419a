"""Which GPU kernels an attention call launches, with their launch shape (grid, block, registers, shared memory).

    python3 benchmarks/probe_kernels.py [--shapes "4,8,4096,128;..."] [--methods ours,cudnn] [--json F]

Runs each method under torch.profiler (CUPTI) and prints, per kernel it launched: name, grid, block, registers
per thread, static + dynamic shared memory, and the median duration over the profiled calls. Forward only, bf16.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F
from pathoflash.kernels import flash_attention
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}


def call(method: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if method == "ours":
        flash_attention(q, k, v)
        return
    with sdpa_kernel(BACKENDS[method]):
        F.scaled_dot_product_attention(q, k, v)


def kernels_of(method: str, shape: tuple[int, ...], calls: int) -> list[dict[str, Any]]:
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    for _ in range(3):  # tuning, compilation and descriptor caches out of the window
        call(method, q, k, v)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            call(method, q, k, v)
        torch.cuda.synchronize()
    seen: dict[str, dict[str, Any]] = {}
    times: dict[str, list[float]] = defaultdict(list)
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        times[event.name].append(event.device_time)
        seen.setdefault(event.name, {"name": event.name})
    # launch shapes live only in the exported trace's args
    path = "/tmp/probe_kernels_trace.json"
    prof.export_chrome_trace(path)
    with open(path) as fh:
        trace = json.load(fh)
    for item in trace.get("traceEvents", []):
        if item.get("cat") == "kernel" and item.get("name") in seen:
            args = item.get("args", {})
            seen[item["name"]].update(
                grid=args.get("grid"), block=args.get("block"), registers=args.get("registers per thread"),
                smem=(args.get("shared memory") or 0) + (args.get("static shared memory") or 0),
                cluster=args.get("cluster"),
            )  # fmt: skip
    return [
        dict(info, us=statistics.median(times[name]), launches=len(times[name]))
        for name, info in seen.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", default="4,8,4096,128;1,8,16384,128;4,16,4096,64")
    parser.add_argument("--methods", default="ours,cudnn")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    for text in args.shapes.split(";"):
        shape = tuple(int(x) for x in text.split(","))
        for method in args.methods.split(","):
            for info in kernels_of(method, shape, args.calls):
                rows.append(dict(info, method=method, shape=shape))
                print(
                    f"{method:6s} {shape!s:22s} {info['us']:9.1f} us x{info['launches']:<3d} grid={info.get('grid')} "
                    f"block={info.get('block')} regs={info.get('registers')} smem={info.get('smem')} "
                    f"cluster={info.get('cluster')}  {info['name'][:110]}",
                    flush=True,
                )
    print(
        f"torch {torch.__version__}, {torch.cuda.get_device_name()}, cuDNN {torch.backends.cudnn.version()}"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
