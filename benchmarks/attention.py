"""Attention on the GPU: PathoFlash's Triton flash attention against PyTorch's best, in one run.

For bf16 and fp16, forward and forward+backward, at the issue's (B, H, N, D) shapes, it prints TFLOP/s
(forward 4·B·H·N²·D, forward+backward 3.5× that) and the peak extra memory of:

    ours       pathoflash.kernels.flash_attention (autotuned; pointer loads, split head dims)
    ours_tma   the same kernels forced onto the tensor-descriptor (TMA) path
    ours_pad   ours with non-power-of-two head dims padded instead of split (80 → 128)
    cudnn      torch SDPA, cuDNN backend
    flash      torch SDPA, FlashAttention-2 backend
    efficient  torch SDPA, memory-efficient backend
    flex       torch.compile(FlexAttention)

Times are medians of ``triton.testing.do_bench``; inputs are fresh random (B, H, N, D) tensors. ``--rounds R``
measures the methods of each row in alternation R times (every other round in reverse order) and keeps each
method's median round, so a drift of the GPU clock between one method's measurement and the next does not decide
the ratio. At the long head-dim-128 rows an H100 runs at its 700 W cap: the clock swings between ~1.3 and
~1.95 GHz from one 200 ms sample to the next (session 29's clock log), so a single round there can move ±5 %.

    python3 benchmarks/attention.py [--methods ours,cudnn,...] [--dtypes bf16,fp16] [--modes fwd,fwdbwd]
        [--shapes 4x16x4096x64,...] [--rounds 5] [--precompile] [--explore] [--json PATH]

``--precompile`` compiles every candidate kernel configuration in parallel processes first (the autotuner
then finds them in Triton's cache); ``--explore`` also times explicit kernel configurations, warp
specialisation included, at three shapes, to inform the candidate tables in ``kernels/attention.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
import triton
from pathoflash.kernels import attention
from pathoflash.kernels.attention import KernelConfig
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = [
    (4, 16, 4096, 64),
    (1, 16, 16384, 64),
    (1, 16, 65536, 64),
    (4, 8, 4096, 128),
    (1, 8, 16384, 128),
    (4, 16, 4096, 80),
    (2, 16, 4100, 64),
]
METHODS = (
    "ours", "ours_triton", "ours_twopass", "ours_atomic", "ours_tma", "ours_pad", "cudnn", "flash", "efficient",
    "flex",
)  # fmt: skip
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("fwd", "fwdbwd")
EXPLORE_SHAPES = [(4, 16, 4096, 64), (4, 8, 4096, 128), (4, 16, 4096, 80)]


@dataclass(frozen=True, slots=True)
class Result:
    method: str
    dtype: str
    mode: str
    shape: tuple[int, int, int, int]
    ms: float | None
    tflops: float | None
    peak_extra_mib: float | None
    max_abs_diff_vs_ours: float | None = None
    error: str | None = None


def flops(shape: tuple[int, int, int, int], mode: str) -> float:
    b, h, n, d = shape
    fwd = 4.0 * b * h * n * n * d
    return fwd if mode == "fwd" else 3.5 * fwd


@contextlib.contextmanager
def variant(
    tma: bool | None,
    split: bool | None = None,
    gluon: bool | None = None,
    fused: bool | None = None,
    dq_atomic: int | None = None,
    gluon_bwd: bool | None = None,
) -> Iterator[None]:
    """Force the Triton kernels' TMA path and head-dim split, the Hopper Gluon forward, the one-pass backward
    and its dQ adds (1 atomic adds, 2 TMA reduce-adds), and the Hopper Gluon backward on or off. None keeps the
    library's own choice."""
    names = (
        "_tma_override", "_split_override", "_gluon_override", "_fused_override", "_dq_atomic_override",
        "_gluon_bwd_override",
    )  # fmt: skip
    previous = tuple(getattr(attention, name) for name in names)
    for name, value in zip(names, (tma, split, gluon, fused, dq_atomic, gluon_bwd), strict=True):
        setattr(attention, name, value)
    try:
        yield
    finally:
        for name, value in zip(names, previous, strict=True):
            setattr(attention, name, value)


_flex_compiled: Any = None


def method_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    from pathoflash.kernels import flash_attention

    if name.startswith("ours"):  # measure() sets the variant's switches around it
        return flash_attention
    if name == "flex":
        global _flex_compiled
        if _flex_compiled is None:
            import torch._dynamo
            from torch.nn.attention.flex_attention import flex_attention

            # Every (dtype, shape, mode) is a recompilation; past dynamo's default limit (8) it silently
            # runs flex_attention eagerly (unfused, O(N²) memory): run 4 measured that, not FlexAttention.
            for limit in ("cache_size_limit", "recompile_limit"):
                if hasattr(torch._dynamo.config, limit):
                    setattr(torch._dynamo.config, limit, 256)
            _flex_compiled = torch.compile(flex_attention, dynamic=False)
        return _flex_compiled
    backend = {
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
    }[name]

    def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v)

    return sdpa


REP_MS = 200  # do_bench's repetition time per measurement (--rep-ms)


def median_ms(fn: Callable[[], Any], grad_to_none: list[torch.Tensor] | None = None) -> float:
    return float(
        triton.testing.do_bench(fn, warmup=25, rep=REP_MS, grad_to_none=grad_to_none, return_mode="median")
    )


def peak_extra_mib(fn: Callable[[], Any], inputs: list[torch.Tensor]) -> float:
    for x in inputs:
        x.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    extra = (torch.cuda.max_memory_allocated() - base) / 2**20
    for x in inputs:
        x.grad = None
    return extra


def measure(
    name: str, dtype_name: str, mode: str, shape: tuple[int, int, int, int], reference: torch.Tensor | None
) -> tuple[Result, torch.Tensor | None]:
    dtype = DTYPES[dtype_name]
    gen = torch.Generator(device="cuda").manual_seed(1234)
    q, k, v = (torch.randn(shape, device="cuda", dtype=dtype, generator=gen) for _ in range(3))
    fn = method_fn(name)
    # "ours" is the library's default; ours_twopass and ours_atomic differ from it only in the backward (the
    # Triton two-kernel one, and Triton's one pass with atomic dQ adds); the others are about the Triton
    # forward kernel, so they turn the Gluon forward off. Only "ours" takes the Gluon backward.
    gluon = None if name in ("ours", "ours_twopass", "ours_atomic") else False
    fused = {"ours_twopass": False, "ours_atomic": True}.get(name)
    dq_atomic = 1 if name == "ours_atomic" else None
    gluon_bwd = None if name == "ours" else False
    with variant(
        True if name == "ours_tma" else None, False if name == "ours_pad" else None, gluon, fused, dq_atomic,
        gluon_bwd,
    ):  # fmt: skip
        return _measure(fn, name, dtype_name, mode, shape, reference, q, k, v, gen)


def _measure(
    fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    name: str,
    dtype_name: str,
    mode: str,
    shape: tuple[int, int, int, int],
    reference: torch.Tensor | None,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gen: torch.Generator,
) -> tuple[Result, torch.Tensor | None]:
    try:
        if mode == "fwd":

            def run() -> torch.Tensor:
                with torch.no_grad():
                    return fn(q, k, v)

            out = run()  # compile / autotune outside the timing
            diff = None if reference is None else (out.float() - reference.float()).abs().max().item()
            ms = median_ms(run)
            mem = peak_extra_mib(run, [])
            result = Result(name, dtype_name, mode, shape, ms, flops(shape, mode) / ms / 1e9, mem, diff)
            return result, out if name == "ours" else None
        for x in (q, k, v):
            x.requires_grad_(True)
        do = torch.randn(shape, device="cuda", dtype=q.dtype, generator=gen)

        def run_fb() -> None:
            fn(q, k, v).backward(do)

        run_fb()
        ms = median_ms(run_fb, grad_to_none=[q, k, v])
        mem = peak_extra_mib(run_fb, [q, k, v])
        return Result(name, dtype_name, mode, shape, ms, flops(shape, mode) / ms / 1e9, mem), None
    except Exception as exc:  # a backend that refuses a shape is a result, not a crash
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        return Result(name, dtype_name, mode, shape, None, None, None, error=message), None


def tuning_snapshot() -> dict[str, Any]:
    """The autotuners' chosen configuration per key (sequence-length bucket, head dim, TMA, dtypes)."""
    out: dict[str, Any] = {}
    for label, tuned in (
        ("fwd", attention._attn_fwd_tuned),
        ("dkdv", attention._attn_bwd_dkdv_tuned),
        ("dq", attention._attn_bwd_dq_tuned),
        ("fused", attention._attn_bwd_fused_tuned),
    ):
        out[label] = {str(key): str(KernelConfig.of(cfg)) for key, cfg in tuned.cache.items()}
    # The Gluon kernels' choices, keyed (head dim, dtype, query, key and batch × heads buckets).
    out["gluon_bwd"] = {str(key): gluon for key, gluon in attention._gluon_bwd_chosen.items()}
    with contextlib.suppress(ImportError):  # a Triton without Gluon's Hopper module
        from pathoflash.kernels import attention_hopper

        out["hopper_fwd"] = {str(key): str(cfg) for key, cfg in attention_hopper._chosen.items()}
    return out


def last_timings() -> dict[str, dict[str, float]]:
    out = {}
    for label, tuned in (
        ("fwd", attention._attn_fwd_tuned),
        ("dkdv", attention._attn_bwd_dkdv_tuned),
        ("dq", attention._attn_bwd_dq_tuned),
        ("fused", attention._attn_bwd_fused_tuned),
    ):
        timings = getattr(tuned, "configs_timings", None) or {}
        out[label] = {str(KernelConfig.of(c)): _first(t) for c, t in timings.items()}
    return out


def _first(t: Any) -> float:
    return float(t[0] if isinstance(t, list | tuple) else t)


# ----------------------------------------------------------------------------------------------------------
# Precompiling candidate configurations in parallel
# ----------------------------------------------------------------------------------------------------------


def _explore_fwd_configs(head_dim: int) -> list[KernelConfig]:
    if head_dim <= 64:
        rows = [(128, 64, 4, 3), (128, 128, 8, 3), (128, 64, 8, 3), (128, 128, 4, 2), (128, 128, 8, 4),
                (128, 64, 4, 4), (64, 64, 4, 3), (128, 32, 4, 3), (64, 128, 4, 3)]  # fmt: skip
        ws = [(128, 64, 4, 3), (128, 128, 8, 3), (128, 128, 4, 2)]
    else:
        rows = [(128, 64, 8, 3), (128, 128, 8, 2), (128, 128, 8, 3), (128, 64, 8, 2), (128, 64, 4, 3),
                (128, 32, 4, 3), (64, 64, 4, 3), (64, 128, 4, 2), (128, 64, 8, 4)]  # fmt: skip
        ws = [(128, 64, 8, 3), (128, 128, 8, 2), (128, 64, 4, 3)]
    return [KernelConfig(*r) for r in rows] + [KernelConfig(*r, warp_specialize=True) for r in ws]


def _explore_bwd_configs(head_dim: int) -> tuple[list[KernelConfig], list[KernelConfig]]:
    dkdv = [(64, 128, 8, 3), (32, 128, 4, 3), (64, 128, 4, 3), (64, 64, 4, 3), (64, 128, 8, 2), (32, 128, 8, 3),
            (128, 128, 8, 2), (32, 64, 4, 4)]  # fmt: skip
    dq = [(128, 64, 8, 3), (128, 32, 4, 3), (128, 64, 4, 3), (64, 64, 4, 3), (128, 64, 8, 2), (128, 128, 8, 2),
          (64, 128, 4, 3), (128, 32, 8, 3)]  # fmt: skip
    return [KernelConfig(*r) for r in dkdv], [KernelConfig(*r) for r in dq]


Task = tuple[str, tuple[int, int, int, int], str, bool, "bool | None", KernelConfig]
VARIANTS = {  # (tma, split, backward kernels) of the Triton kernels each method runs
    "ours": (False, None, ("fused2",)), "ours_triton": (False, None, ("fused2",)),
    "ours_twopass": (False, None, ("dkdv", "dq")), "ours_atomic": (False, None, ("fused1",)),
    "ours_tma": (True, None, ("fused2",)), "ours_pad": (False, False, ("fused2",)),
}  # fmt: skip


def _compile_one(task: Task) -> str:
    kind, shape, dtype_name, use_tma, split, config = task
    b, h, _, d = shape
    n = 256  # strides stay multiples of 16 for every tuned head dim, so the specialisation matches
    dtype = DTYPES[dtype_name]
    q, k, v, do, dx = (torch.empty((b, h, n, d), device="cuda", dtype=dtype) for _ in range(5))
    o = torch.empty((b, n, h, d), device="cuda", dtype=dtype).permute(0, 2, 1, 3)
    lse = torch.empty((b, h, n), device="cuda", dtype=torch.float32)
    delta = torch.empty_like(lse)
    launch = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    start = time.perf_counter()
    label = f"{kind} d{d} {dtype_name} tma={use_tma} split={split} {config}"
    try:
        with variant(use_tma, split):
            if kind == "fwd":
                args, meta = attention._fwd_launch(q, k, v, o, lse, 1.0, use_tma)
                attention._attn_fwd_kernel.warmup(*args, grid=(1,), **meta, **config.kwargs(True), **launch)
            elif kind in ("dkdv", "fused1", "fused2"):
                dq_atomic = 0 if kind == "dkdv" else int(kind[-1])
                dq_acc = None if kind == "dkdv" else torch.empty((b, h, n, d), device="cuda")
                args, meta = attention._dkdv_launch(
                    q, k, v, do, lse, delta, dx, dx, dq_acc, dq_atomic, 1.0, use_tma
                )
                attention._attn_bwd_dkdv_kernel.warmup(
                    *args, grid=(1,), **meta, **config.kwargs(False), **launch
                )
            else:
                args, meta = attention._dq_launch(q, k, v, do, lse, delta, dx, 1.0, use_tma)
                attention._attn_bwd_dq_kernel.warmup(
                    *args, grid=(1,), **meta, **config.kwargs(False), **launch
                )
    except Exception as exc:
        return f"{label}: FAILED {type(exc).__name__}: {exc}"[:300]
    return f"{label}: {time.perf_counter() - start:.1f}s"


# What tests/test_flash_attention_gpu.py runs beyond the benchmark's own kernels: (variant, head dim, dtypes).
TEST_KERNELS = [("ours", d, ("bf16", "fp16")) for d in (32, 48, 64, 80, 96, 128)] + [
    ("ours_tma", d, ("bf16",)) for d in (64, 80)
]


def _tasks_for(method: str, d: int, dtype_name: str, shape: tuple[int, int, int, int]) -> list[Task]:
    if method not in VARIANTS or (method == "ours_pad" and not attention.head_split(d)[2]):
        return []
    use_tma, split, backward = VARIANTS[method]
    device = torch.device("cuda")
    tables = {
        "fwd": attention.FWD_CONFIGS, "dkdv": attention.DKDV_CONFIGS, "dq": attention.DQ_CONFIGS,
        "fused1": attention.FUSED_CONFIGS, "fused2": attention.FUSED_CONFIGS,
    }  # fmt: skip
    return [
        (kind, shape, dtype_name, use_tma, split, config)
        for kind in ("fwd", *backward)
        for config in attention.candidate_configs(tables[kind], device, d)
    ]


def precompile(
    shapes: list[tuple[int, int, int, int]], dtypes: list[str], methods: list[str], explore: bool, tests: bool
) -> None:
    tasks: list[Task] = []
    for d in sorted({s[3] for s in shapes}):
        shape = next(s for s in shapes if s[3] == d)
        tasks += [
            t for dtype_name in dtypes for method in methods for t in _tasks_for(method, d, dtype_name, shape)
        ]
    if tests:
        for method, d, test_dtypes in TEST_KERNELS:
            tasks += [
                t for dtype_name in test_dtypes for t in _tasks_for(method, d, dtype_name, (1, 4, 256, d))
            ]
    if explore:
        for shape in EXPLORE_SHAPES:
            d = shape[3]
            dkdv, dq = _explore_bwd_configs(d)
            for use_tma in (True, False):
                tasks += [("fwd", shape, "bf16", use_tma, None, c) for c in _explore_fwd_configs(d)]
            tasks += [("dkdv", shape, "bf16", False, None, c) for c in dkdv]
            tasks += [("dq", shape, "bf16", False, None, c) for c in dq]
    tasks = list(dict.fromkeys(tasks))
    workers = max(1, min(len(tasks), (os.cpu_count() or 2) - 2, 14))
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for line in pool.map(_compile_one, tasks):
            if "FAILED" in line:
                print("  precompile", line, flush=True)
    print(
        f"precompiled {len(tasks)} kernel variants with {workers} processes in {time.perf_counter() - start:.0f}s"
    )


# ----------------------------------------------------------------------------------------------------------
# Explicit configurations (exploration)
# ----------------------------------------------------------------------------------------------------------


def _explore_row(kind: str, shape: tuple[int, ...], flop: float, run: Callable[[], Any], **info: Any) -> dict:
    row: dict[str, Any] = {"kind": kind, "shape": shape, **info}
    try:
        ms = median_ms(run)
        row.update(ms=ms, tflops=flop / ms / 1e9)
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    print("  explore", row, flush=True)
    return row


def explore() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for shape in EXPLORE_SHAPES:
        q, k, v, do = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(4))
        scale = shape[3] ** -0.5
        fwd_flops = flops(shape, "fwd")
        for use_tma in (True, False):
            for config in _explore_fwd_configs(shape[3]):
                with variant(use_tma):
                    run = functools.partial(attention._forward, q, k, v, scale, config)
                    rows.append(
                        _explore_row("fwd", shape, fwd_flops, run, tma=use_tma, config=asdict(config))
                    )
        o, lse = attention._forward(q, k, v, scale)
        dkdv, dq = _explore_bwd_configs(shape[3])
        pairs = [(c, dq[0]) for c in dkdv] + [(dkdv[0], c) for c in dq[1:]]
        for pair in pairs:
            with variant(None):
                run = functools.partial(attention._backward, q, k, v, o, lse, do, None, scale, pair)
                info = {"dkdv": asdict(pair[0]), "dq": asdict(pair[1])}
                rows.append(_explore_row("bwd", shape, 2.5 * fwd_flops, run, **info))
    return rows


# ----------------------------------------------------------------------------------------------------------
# Correctness on the GPU (quick; the full set is tests/test_flash_attention_gpu.py)
# ----------------------------------------------------------------------------------------------------------


def _check_grads(
    fn: Callable[..., Any], qkv: torch.Tensor, do: torch.Tensor, dtype: torch.dtype
) -> list[torch.Tensor]:
    leaf = qkv.detach().to(dtype).requires_grad_()
    q, k, v = leaf.permute(2, 0, 3, 1, 4)  # (B, H, N, D) views of one fused projection
    o, lse = fn(q, k, v)
    (o * do.to(o.dtype)).sum().backward()
    assert leaf.grad is not None
    return [o, lse, leaf.grad]


def check(head_dims: list[int], dtypes: list[str]) -> bool:
    """Forward and backward of ours on a fused-qkv view vs float32, tolerance 2× plain low precision."""
    from pathoflash.kernels import flash_attention
    from pathoflash.kernels.reference import attention_reference

    torch.backends.cuda.matmul.allow_tf32 = False
    ok = True
    for dtype_name in dtypes:
        for d in head_dims:
            b, h, n = 2, 3, 4097
            dtype = DTYPES[dtype_name]
            qkv = torch.randn(b, n, 3, h, d, device="cuda", dtype=dtype)
            do = torch.randn(b, n, h, d, device="cuda", dtype=dtype).transpose(1, 2)
            got = _check_grads(lambda *x: flash_attention(*x, return_lse=True), qkv, do, dtype)
            plain = _check_grads(attention_reference, qkv, do, dtype)
            exact = _check_grads(attention_reference, qkv, do, torch.float32)
            for name, g, p_, e in zip(("o", "lse", "dqkv"), got, plain, exact, strict=True):
                err = (g.float() - e).abs().max().item()
                tol = 2 * (p_.float() - e).abs().max().item() + 2e-4 * e.abs().max().item()
                passed = err <= tol and bool(torch.isfinite(g).all())
                ok &= passed
                verdict = "ok" if passed else "FAIL"
                print(
                    f"check {dtype_name} d{d} {name}: error {err:.2e} tolerance {tol:.2e} {verdict}",
                    flush=True,
                )
    return ok


# ----------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------


def environment() -> dict[str, str]:
    return {
        "card": torch.cuda.get_device_name(),
        "capability": ".".join(map(str, torch.cuda.get_device_capability())),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": str(torch.version.cuda),
        "cudnn": str(torch.backends.cudnn.version()),
        "date": dt.date.today().isoformat(),
    }


def format_table(results: list[Result], methods: list[str], env: dict[str, str]) -> str:
    lines = [
        f"{env['card']} (sm_{env['capability'].replace('.', '')}) · torch {env['torch']} · triton {env['triton']}"
        f" · CUDA {env['cuda']} · cuDNN {env['cudnn']} · {env['date']}",
        "TFLOP/s (median of do_bench; forward 4·B·H·N²·D, forward+backward 3.5×) | ours ÷ cuDNN | "
        "peak extra memory MiB",
    ]
    head = f"{'dtype':5} {'mode':6} {'B':>2} {'H':>3} {'N':>6} {'D':>4} |"
    head += (
        "".join(f" {m:>9}" for m in methods) + " | ours/cuDNN |" + "".join(f" {m[:9]:>9}" for m in methods)
    )
    lines += [head, "-" * len(head)]
    keys = list(dict.fromkeys((r.dtype, r.mode, r.shape) for r in results))
    table = {(r.dtype, r.mode, r.shape, r.method): r for r in results}
    for dtype_name, mode, shape in keys:
        row = f"{dtype_name:5} {mode:6} {shape[0]:>2} {shape[1]:>3} {shape[2]:>6} {shape[3]:>4} |"
        for m in methods:
            r = table.get((dtype_name, mode, shape, m))
            row += f" {r.tflops:9.1f}" if r and r.tflops else f" {'n/a':>9}"
        ours, cudnn = (
            table.get((dtype_name, mode, shape, "ours")),
            table.get((dtype_name, mode, shape, "cudnn")),
        )
        ratio = ours.tflops / cudnn.tflops if ours and cudnn and ours.tflops and cudnn.tflops else None
        row += f" {ratio:10.2f}x |" if ratio else f" {'n/a':>11} |"
        for m in methods:
            r = table.get((dtype_name, mode, shape, m))
            row += f" {r.peak_extra_mib:9.0f}" if r and r.peak_extra_mib is not None else f" {'n/a':>9}"
        lines.append(row)
    errors = [r for r in results if r.error]
    if errors:
        lines.append("not run / failed:")
        lines += [f"  {r.method} {r.dtype} {r.mode} {r.shape}: {r.error}" for r in errors]
    return "\n".join(lines)


def _median_round(rounds: list[Result]) -> Result:
    """The round with the median time (the lower middle one of an even count); failed rounds only if all failed."""
    timed = sorted((r for r in rounds if r.ms is not None), key=lambda r: r.ms or 0.0)
    return timed[(len(timed) - 1) // 2] if timed else rounds[-1]


def _shape(text: str) -> tuple[int, int, int, int]:
    b, h, n, d = (int(x) for x in text.split("x"))
    return b, h, n, d


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="ours,cudnn,flash,efficient,flex")
    parser.add_argument("--dtypes", default="bf16,fp16")
    parser.add_argument("--modes", default="fwd,fwdbwd")
    parser.add_argument("--shapes", default=",".join("x".join(map(str, s)) for s in SHAPES))
    parser.add_argument("--precompile", action="store_true")
    parser.add_argument("--explore", action="store_true")
    parser.add_argument("--precompile-tests", action="store_true", help="also the GPU tests' kernels")
    parser.add_argument("--check", action="store_true", help="first check ours against float32 at N = 4097")
    parser.add_argument("--time-budget-s", type=float, default=1e9, help="skip measurements after this much")
    parser.add_argument(
        "--flex-budget-s", type=float, default=240.0, help="skip FlexAttention after this much"
    )
    parser.add_argument("--rep-ms", type=int, default=200, help="do_bench repetition time per measurement")
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="measure the methods of each row in alternation this many times and keep each one's median round",
    )  # fmt: skip
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    global REP_MS
    REP_MS = args.rep_ms
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    dtypes, modes = args.dtypes.split(","), args.modes.split(",")
    shapes = [_shape(s) for s in args.shapes.split(",")]
    env = environment()
    print(json.dumps(env), flush=True)

    if args.precompile:
        precompile(shapes, dtypes, methods, args.explore, args.precompile_tests)
    report: dict[str, Any] = {"env": env}
    if args.check:
        report["check_passed"] = check(sorted({s[3] for s in shapes}), dtypes)
    if args.explore:
        report["explore"] = explore()

    results: list[Result] = []
    timings: dict[str, Any] = {}
    flex_spent = 0.0
    started = time.perf_counter()
    fell_back: str | None = None  # the first row after which a Gluon kernel was found switched off
    for dtype_name in dtypes:
        for mode in modes:
            for shape in shapes:
                reference = None
                rounds: dict[str, list[Result]] = {m: [] for m in methods}
                for turn in range(args.rounds):  # in alternation: a drift of the clock favours no method
                    for m in methods if turn % 2 == 0 else methods[::-1]:  # nor does going first
                        if time.perf_counter() - started > args.time_budget_s:
                            rounds[m].append(
                                Result(m, dtype_name, mode, shape, None, None, None, error="time budget")
                            )
                            continue
                        if m == "flex" and flex_spent > args.flex_budget_s:
                            rounds[m].append(
                                Result(m, dtype_name, mode, shape, None, None, None, error="flex budget")
                            )
                            continue
                        start = time.perf_counter()
                        r, out = measure(m, dtype_name, mode, shape, reference)
                        if m == "flex":
                            flex_spent += time.perf_counter() - start
                        if m == "ours" and reference is None:
                            reference = out
                            timings[f"{dtype_name} {mode} {shape}"] = last_timings()
                        rounds[m].append(r)
                        print(
                            f"{time.strftime('%H:%M:%S')} {m:9} {dtype_name} {mode:6} {shape}: {r.tflops or 0:7.1f} TFLOP/s"
                            f" {r.ms or 0:8.3f} ms  mem {r.peak_extra_mib or 0:8.0f} MiB"
                            f"  diff {r.max_abs_diff_vs_ours}  {r.error or ''}",
                            flush=True,
                        )
                        torch.cuda.empty_cache()
                results += [_median_round(rounds[m]) for m in methods]
                gone = gluon_switched_off()
                if gone and fell_back is None:
                    fell_back = f"{dtype_name} {mode} {shape}"
                    report["gluon_switched_off"] = {"at_row": fell_back, "kernels": gone}
                    print(
                        f"  WARNING: {FELL_BACK.format(gone=' and '.join(gone), row=fell_back)}", flush=True
                    )
                if args.json:  # partial results survive a timeout
                    with open(args.json, "w") as fh:
                        json.dump({**report, "results": [asdict(r) for r in results]}, fh, indent=1)
    report["results"] = [asdict(r) for r in results]
    report["tuning"] = tuning_snapshot()
    report["tuning_timings_ms"] = timings
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    print()
    print(format_table(results, methods, env))
    for key, cfg in report["tuning"].get("hopper_fwd", {}).items():
        print(f"Gluon forward for {key}: {cfg}")
    if fell_back is not None:
        print(
            "WARNING:",
            FELL_BACK.format(gone=" and ".join(report["gluon_switched_off"]["kernels"]), row=fell_back),
        )
    return 0


FELL_BACK = (
    "the Gluon {gone} failed in this process (see the log above) and was switched off during row {row}: "
    "'ours' in that row and every later one ran the Triton kernels instead"
)


def gluon_switched_off() -> list[str]:
    """Which of the Gluon forward and backward the library has switched off in this process (a compile error
    makes ``attention`` fall back to the Triton kernels for good, with one log line): a table measured after
    that is not the shipped kernels' (session 28)."""
    return [
        name
        for name, state in (("forward", attention._hopper), ("backward", attention._hopper_bwd))
        if state is False
    ]


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        sys.exit(1)
