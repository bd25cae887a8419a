"""Check and time the Hopper Gluon backward (``attention_hopper_bwd.py``) on its own, without the forward.

    python benchmarks/probe_hopper_bwd.py check            # errors against float32 at odd lengths, both dtypes
    python benchmarks/probe_hopper_bwd.py time [--json F]  # backward-only TFLOP/s: gluon, triton, cuDNN
    python benchmarks/probe_hopper_bwd.py pieces           # the O(N) kernels around it: µs, TB/s

``time`` measures the backward alone (2.5 × the forward's 4·B·H·N²·D), each method on the same inputs, with
``triton.testing.do_bench`` medians; the methods alternate per shape so drift does not favour one. Every
method is its whole backward: ours with the delta preprocess and dQ's zeroing and cast, cuDNN's autograd
backward. ``--kernel-only`` adds the Gluon kernel alone (with its zeroing) on a precomputed delta.
(Before session 9 the Gluon rows computed delta with four torch operations: ~10 % slower at 4,096 tokens.)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import torch
import triton
from pathoflash.kernels import attention
from pathoflash.kernels.attention_hopper_bwd import BackwardConfig, dq_accumulator, hopper_backward
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = [
    (4, 16, 4096, 64), (1, 16, 16384, 64), (4, 8, 4096, 128), (1, 8, 16384, 128), (4, 16, 4096, 80),
    (2, 16, 4100, 64),
]  # fmt: skip
DTYPES = [torch.bfloat16, torch.float16]
KERNEL_ONLY = False  # --kernel-only
TRITON = True  # --no-triton leaves Triton's backward (slow to autotune) out
CHECK = [
    (1, 1, 1, 64),
    (1, 2, 7, 128),
    (2, 3, 130, 64),
    (2, 2, 100, 64),  # an even number of query blocks (9c25984's pipelined loop took them in pairs)
    (1, 2, 1000, 64),
    (1, 2, 257, 128),
    (2, 3, 4097, 64),
    (1, 2, 4100, 128),
    (3, 5, 4097, 128),  # more key tiles than SMs: the persistent kernel runs several per CTA
    (2, 16, 2100, 128),
    (3, 16, 2100, 64),
    (2, 16, 2048, 64),
    (2, 3, 4097, 80),  # head dims split in two column pieces: 64 + 16, 64 + 32, 32 + 16
    (1, 2, 257, 80),
    (1, 3, 1000, 96),
    (2, 2, 777, 48),
]


def _inputs(shape: tuple[int, int, int, int], dtype: torch.dtype, qkv: bool = False) -> list[torch.Tensor]:
    b, h, n, d = shape
    if qkv:
        return list(torch.randn(b, n, 3, h, d, device="cuda", dtype=dtype).permute(2, 0, 3, 1, 4))
    return [torch.randn(shape, device="cuda", dtype=dtype) for _ in range(3)]


def _gluon(q, k, v, o, lse, do, scale, cfg: BackwardConfig | None = None):  # type: ignore[no-untyped-def]
    """The whole backward as ``attention._backward`` runs it with this configuration: delta by the Triton
    preprocess kernel (which zeroes the float32 dQ), the Gluon kernel, dQ scaled and cast by a Triton kernel."""
    cfg = cfg or BackwardConfig()
    acc = dq_accumulator(q, cfg)
    delta = attention._delta(o, do, None, zero=acc)
    dk, dv, dq = torch.empty_like(k), torch.empty_like(v), torch.empty_like(q)
    hopper_backward(q, k, v, do, lse, delta, dk, dv, scale, cfg, dq_acc=acc)
    attention._dq_cast(acc, scale, dq, cfg.fragments(q.shape[3]))
    return dq, dk, dv


def check(configs: list[BackwardConfig | None]) -> bool:
    ok = True
    for dtype in (torch.bfloat16, torch.float16):
        for i, shape in enumerate(CHECK):
            torch.manual_seed(i)
            q, k, v = _inputs(shape, dtype, qkv=i % 2 == 0)
            do = torch.randn(shape, device="cuda", dtype=dtype)
            scale = shape[3] ** -0.5
            o, lse = attention._forward(q, k, v, scale)
            with attention_variant(False):
                triton_grads = attention._backward(q, k, v, o, lse, do, None, scale)
            ref = [x.float().detach().requires_grad_() for x in (q, k, v)]
            out = torch.softmax(ref[0] @ ref[1].transpose(-1, -2) * scale, -1) @ ref[2]
            exact = torch.autograd.grad(out, ref, do.float())
            for n_cfg, cfg in enumerate(configs):
                if n_cfg and shape[3] not in (64, 128):  # the variants differ at head dims 64 and 128 only
                    continue
                got = _gluon(q, k, v, o, lse, do, scale, cfg)
                for name, g, t, e in zip("qkv", got, triton_grads, exact, strict=True):
                    err = (g.float() - e).abs().max().item()
                    err_t = (t.float() - e).abs().max().item()
                    bad = not err <= 2 * err_t + 2e-4 * e.abs().max().item() + 1e-5
                    ok &= not bad
                    print(
                        f"{dtype} {shape} {cfg or 'default'} d{name}: gluon {err:.2e} triton {err_t:.2e}"
                        f" {'FAIL' if bad else ''}"
                    )
    print("check", "passed" if ok else "FAILED", flush=True)
    return ok


class attention_variant:  # a context manager, named as one
    def __init__(self, gluon_bwd: bool | None) -> None:
        self.value = gluon_bwd

    def __enter__(self) -> None:
        self.previous = attention._gluon_bwd_override, attention._fused_override
        attention._gluon_bwd_override, attention._fused_override = self.value, False

    def __exit__(self, *exc: object) -> None:
        attention._gluon_bwd_override, attention._fused_override = self.previous


def _time_shape(
    shape: tuple[int, int, int, int], dtype: torch.dtype, configs: list[BackwardConfig | None]
) -> dict:
    q, k, v = _inputs(shape, dtype)
    do = torch.randn(shape, device="cuda", dtype=dtype)
    scale = shape[3] ** -0.5
    o, lse = attention._forward(q, k, v, scale)
    runs: dict[str, Callable[[], object]] = {}
    for cfg in configs:

        def gluon_bwd(cfg: BackwardConfig | None = cfg) -> object:
            return _gluon(q, k, v, o, lse, do, scale, cfg)

        runs[f"gluon {cfg}"] = gluon_bwd

    if KERNEL_ONLY:
        delta = attention._delta(o, do, None)
        dk, dv = torch.empty_like(k), torch.empty_like(v)
        runs["kernel"] = lambda: hopper_backward(q, k, v, do, lse, delta, dk, dv, scale)

    def triton_bwd() -> object:
        with attention_variant(False):
            return attention._backward(q, k, v, o, lse, do, None, scale)

    if TRITON:
        runs["triton"] = triton_bwd
    qr, kr, vr = (x.detach().requires_grad_() for x in (q, k, v))
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        out = torch.nn.functional.scaled_dot_product_attention(qr, kr, vr)
    runs["cudnn"] = lambda: torch.autograd.grad(out, (qr, kr, vr), do, retain_graph=True)
    flop = 2.5 * 4 * shape[0] * shape[1] * shape[2] ** 2 * shape[3]
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()
    for _ in range(3):  # in alternation: a drift of the clock favours none
        for name, run in runs.items():
            times[name].append(triton.testing.do_bench(run, warmup=25, rep=100))
    row: dict = {"dtype": str(dtype), "shape": shape}
    for name, t in times.items():
        row[name] = flop / sorted(t)[1] / 1e9
    first = next(iter(times))
    print(
        f"{dtype} {shape}: " + ", ".join(f"{n} {row[n]:.0f}" for n in times)
        + f"  gluon/cudnn {row[first] / row['cudnn']:.2f}"
        + (f"  gluon/triton {row[first] / row['triton']:.2f}" if TRITON else ""),
        flush=True,
    )  # fmt: skip
    return row


def _pieces_shape(shape: tuple[int, int, int, int]) -> dict:
    o = torch.randn(shape, device="cuda", dtype=DTYPES[0])
    do, dq = torch.randn_like(o), torch.empty_like(o)
    acc = torch.zeros(shape, device="cuda", dtype=torch.float32)
    half, acc_bytes = o.numel() * o.element_size(), acc.numel() * 4
    runs = {
        "delta": (lambda: attention._delta(o, do, None), 2 * half),
        "zeros": (lambda: torch.zeros(shape, device="cuda", dtype=torch.float32), acc_bytes),
        "delta+zero": (lambda: attention._delta(o, do, None, zero=acc), 2 * half + acc_bytes),
        "torch.mul": (lambda: torch.mul(acc, 0.1, out=dq), acc_bytes + half),
        "_dq_cast": (lambda: attention._dq_cast(acc, 0.1, dq), acc_bytes + half),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(3):
        for name, (run, _) in runs.items():
            times[name].append(triton.testing.do_bench(run, warmup=25, rep=100))
    row: dict = {"shape": shape}
    for name, (_, nbytes) in runs.items():
        ms = sorted(times[name])[1]
        row[name] = ms * 1e3
        print(f"{shape} {name:11s} {ms * 1e3:6.1f} us {nbytes / ms / 1e9:5.2f} TB/s", flush=True)
    old = row["delta"] + row["zeros"] + row["torch.mul"]
    print(f"{shape} before {old:.1f} us, now {row['delta+zero'] + row['_dq_cast']:.1f} us", flush=True)
    return row


def pieces() -> list[dict]:
    """The backward's O(N) work around the Gluon kernel, as shipped (delta zeroing dQ's accumulator, dQ's
    Triton scale-and-cast) and as before session 12 (delta, torch.zeros, torch.mul): µs and TB/s."""
    return [_pieces_shape(shape) for shape in SHAPES]


def time_all(configs: list[BackwardConfig | None]) -> list[dict]:
    rows = []
    for dtype in DTYPES:
        for shape in SHAPES:
            rows.append(_time_shape(shape, dtype, configs))
            torch.cuda.empty_cache()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["check", "time", "pieces"])
    parser.add_argument("--stages", default="", help="comma list of ring depths to time (default: 2)")
    parser.add_argument("--shapes", default="", help="BxHxNxD,… (default: the issue's shapes)")
    parser.add_argument("--configs", default="", help='more BackwardConfig variants, e.g. "dq_halves=0"')
    parser.add_argument("--dtypes", default="bf16,fp16")
    parser.add_argument("--kernel-only", action="store_true", help="also time the Gluon kernel alone")
    parser.add_argument("--no-triton", action="store_true", help="leave Triton's backward out of `time`")
    parser.add_argument("--json")
    args = parser.parse_args()
    configs: list[BackwardConfig | None] = [None]
    if args.stages:
        configs = [BackwardConfig(stages=int(s)) for s in args.stages.split(",")]
    for spec in filter(None, args.configs.split(";")):  # boolean fields: "dq_halves=0;…"
        configs.append(
            BackwardConfig(**{k: bool(int(v)) for k, v in (kv.split("=") for kv in spec.split(","))})
        )
    if args.what == "check":
        return 0 if check(configs) else 1
    if args.what == "pieces":
        DTYPES[:] = [{"bf16": torch.bfloat16, "fp16": torch.float16}[d] for d in args.dtypes.split(",")]
        if args.shapes:
            SHAPES[:] = [tuple(int(x) for x in t.split("x")) for t in args.shapes.split(",")]  # type: ignore[misc]
        result = pieces()
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(result, fh, indent=1, default=str)
        return 0
    print(configs)
    global KERNEL_ONLY, TRITON
    KERNEL_ONLY, TRITON = args.kernel_only, not args.no_triton
    DTYPES[:] = [{"bf16": torch.bfloat16, "fp16": torch.float16}[d] for d in args.dtypes.split(",")]
    if args.shapes:
        dims = [[int(x) for x in t.split("x")] for t in args.shapes.split(",")]
        SHAPES[:] = [(b, h, n, d) for b, h, n, d in dims]
    rows = time_all(configs)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
