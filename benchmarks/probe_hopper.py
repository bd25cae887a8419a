"""Check and sweep the Gluon Hopper forward (kernels/attention_hopper.py) against cuDNN and the Triton kernel.

    python3 benchmarks/probe_hopper.py check            # errors vs a float32 reference, odd N, fused-qkv views
    python3 benchmarks/probe_hopper.py sweep [--json F] # forward TFLOP/s of every configuration, cuDNN and Triton
    python3 benchmarks/probe_hopper.py ab [--shapes ... --configs pp:k2v2,...]  # alternated, median rounds
        [--planned]   # ours through a ForwardPlan with kept outputs: GPU time at batch-1 sizes too
    python3 benchmarks/probe_hopper.py clocks           # SM clock and board power while each kernel runs
    python3 benchmarks/probe_hopper.py gputime --shapes 32,12,197,64;...  # GPU time of whole calls, fwd and fwd+bwd
    python3 benchmarks/probe_hopper.py picks --shapes 4,16,4096,64 --rounds 9  # what the first-call chooser takes

Prints one line per case; the sweep ends with the best configuration per head dim.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import subprocess
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
import triton
from pathoflash.kernels import attention as tri
from pathoflash.kernels import attention_hopper as hop
from pathoflash.kernels.reference import attention_reference
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = [(4, 16, 4096, 64), (1, 16, 16384, 64), (1, 16, 65536, 64), (4, 8, 4096, 128), (1, 8, 16384, 128),
          (2, 16, 4100, 64)]  # fmt: skip


def run_hopper(q, k, v, scale, config=None):  # type: ignore[no-untyped-def]
    batch, heads, n, d = q.shape
    o = torch.empty((batch, n, heads, d), device=q.device, dtype=q.dtype).permute(0, 2, 1, 3)
    lse = torch.empty((batch, heads, n), device=q.device, dtype=torch.float32)
    hop.hopper_forward(q, k, v, o, lse, scale, config)
    return o, lse


def configs(d: int) -> list[hop.HopperConfig]:
    out = []
    for bn, w, (ks, vs), pp in itertools.product((64, 128), (4, 8), ((2, 2), (3, 2)), (False, True)):
        if (pp and w == 8) or (w == 8 and (d == 64 or bn == 64)):
            continue
        cfg = hop.HopperConfig(block_n=bn, num_warps=w, k_stages=ks, v_stages=vs, pingpong=pp)
        if 2 * d * (cfg.block_m + bn * (ks + vs)) <= 200 * 1024:
            out.append(cfg)
    if d == 64:  # two wgmma row tiles per consumer warpgroup: twice the work per handshake
        out += [hop.HopperConfig(64, 4, ks, ks, pingpong=True, rows=128) for ks in (2, 3, 4)]
        # three consumer warpgroups (192 query rows per CTA), 160 registers each
        out += [hop.HopperConfig(bn, 4, ks, vs, pingpong=True, consumers=3)
                for bn, ks, vs in ((128, 2, 2), (128, 3, 3), (64, 3, 3))]  # fmt: skip
    if d == 128:  # three consumers fit 160 registers with 64 keys a step; 5-15 % slower (session 17)
        out += [hop.HopperConfig(64, 4, ks, ks, pingpong=True, consumers=3) for ks in (3, 4)]
    # persistent: one CTA per SM, its tiles back to back (attention_hopper_persistent.py)
    out += [hop.HopperConfig(128, 4, 2, 2, pingpong=True, consumers=c, persistent=True)
            for c in ((2, 3) if d == 64 else (2,))]  # fmt: skip
    return out


def check(
    pp_only: bool = False, consumers: int | None = None, only: list[hop.HopperConfig] | None = None
) -> bool:
    """Every configuration (or those in ``only``) against a float32 reference."""
    ok = True
    torch.manual_seed(0)
    cases = [(1, 2, n, d) for d in (64, 128) for n in (1, 7, 64, 129, 300, 1000)]
    cases += [(2, 3, 4097, 64), (1, 2, 4100, 128), (4, 16, 1000, 64), (3, 16, 1000, 128)]
    for (b, h, n, d), dtype, fused in itertools.product(
        cases, (torch.bfloat16, torch.float16), (False, True)
    ):
        if fused:  # a (B, N, 3, H, D) projection viewed as q, k, v: row stride 3·H·D, read in place
            qkv = torch.randn(b, n, 3, h, d, device="cuda", dtype=dtype)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        else:
            q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=dtype) for _ in range(3))
        scale = 1 / math.sqrt(d)
        if not hop.hopper_usable(q, k, v):
            print(f"SKIP {b}x{h}x{n}x{d} {dtype} fused={fused}: not usable")
            continue
        for cfg in configs(d) if only is None else only:
            if (pp_only and not cfg.pingpong) or (
                consumers and (cfg.consumers != consumers or not cfg.pingpong)
            ):
                continue
            if sys.stdout.isatty():  # a progress line; in a captured log it would hide the verdicts
                print(f"... {b}x{h}x{n}x{d} {str(dtype)[6:]} fused={fused} {cfg}", end="\r", flush=True)
            o, lse = run_hopper(q, k, v, scale, cfg)
            torch.cuda.synchronize()
            ro, rl = attention_reference(q.float(), k.float(), v.float(), scale=scale)
            err = (o.float() - ro).abs().max().item()
            lerr = (lse - rl).abs().max().item()
            plain = (ro.to(dtype).float() - ro).abs().max().item()  # the rounding of the output alone
            good = err <= 4 * plain + 4e-3 and lerr <= 1e-3 and bool(torch.isfinite(o).all())
            ok &= good
            if not good or cfg == hop.CANDIDATES[d][0]:
                print(f"{'ok ' if good else 'BAD'} {b}x{h}x{n}x{d} {str(dtype)[6:]} fused={fused} {cfg}: "
                      f"o err {err:.2e} (rounding {plain:.2e}) lse err {lerr:.2e}", flush=True)  # fmt: skip
    print("CHECK", "PASSED" if ok else "FAILED")
    return ok


def triton_only(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """flash_attention on the Triton kernel (the Gluon forward off): the baseline the Gluon kernels replace."""
    previous, tri._gluon_override = tri._gluon_override, False
    try:
        return tri.flash_attention(q, k, v)  # type: ignore[return-value]
    finally:
        tri._gluon_override = previous


def tflops(shape: tuple[int, int, int, int], ms: float) -> float:
    b, h, n, d = shape
    return 4 * b * h * n * n * d / ms / 1e9


def bench(fn) -> float:  # type: ignore[no-untyped-def]
    return float(triton.testing.do_bench(fn, warmup=25, rep=150, return_mode="median"))


def sweep(json_path: str | None, head_dims: tuple[int, ...] = (64, 128)) -> None:
    rows = []
    shapes = [shape for shape in SHAPES if shape[3] in head_dims]
    for shape, dtype in itertools.product(shapes, (torch.bfloat16, torch.float16)):
        b, h, n, d = shape
        torch.manual_seed(0)
        q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=dtype) for _ in range(3))
        scale = 1 / math.sqrt(d)
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            cudnn = bench(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v))
        triton_ms = bench(lambda q=q, k=k, v=v: triton_only(q, k, v))
        row: dict[str, Any] = {
            "shape": shape,
            "dtype": str(dtype)[6:],
            "cudnn": tflops(shape, cudnn),
            "triton": tflops(shape, triton_ms),
        }
        best = None
        for cfg in configs(d):
            try:
                ms = bench(lambda q=q, k=k, v=v, s=scale, c=cfg: run_hopper(q, k, v, s, c))
            except Exception as exc:  # a configuration that does not fit is reported, not fatal
                print(f"  {cfg}: {type(exc).__name__}: {str(exc)[:120]}", flush=True)
                continue
            row[_tag(cfg)] = tflops(shape, ms)
            if best is None or ms < best[0]:
                best = (ms, cfg)
        assert best is not None
        row["best"] = tflops(shape, best[0])
        row["best_cfg"] = str(best[1])
        rows.append(row)
        print(f"{shape} {row['dtype']}: cuDNN {row['cudnn']:.0f} triton {row['triton']:.0f} "
              f"gluon best {row['best']:.0f} ({row['best'] / row['cudnn']:.2f}x cuDNN) {best[1]}", flush=True)  # fmt: skip
        print(
            "   " + " ".join(f"{key}={val:.0f}" for key, val in row.items() if key.startswith("bn")),
            flush=True,
        )
    if json_path:
        with open(json_path, "w") as fh:
            json.dump({"card": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
                       "rows": rows}, fh, indent=1)  # fmt: skip


def _tag(cfg: hop.HopperConfig) -> str:
    kind = f"pp{cfg.rows}c{cfg.consumers}" if cfg.pingpong else f"w{cfg.num_warps}"
    return f"bn{cfg.block_n}_{kind}_k{cfg.k_stages}v{cfg.v_stages}" + (
        "_persistent" if cfg.persistent else ""
    )


def parse_config(spec: str) -> hop.HopperConfig:
    """``pp:k2v2`` (ping-pong, K and V ring slots), ``pp3:k2v2`` (three consumers), ``persistent:k2v2``,
    ``persistent3:k2v2``, ``w4:k2v2`` / ``w8:k2v2`` (one kernel body on 4 or 8 warps, 16 rows a warp, no
    warp specialisation); ``:bn64`` (or ``:bn32``) after any of them takes that many keys a step, not 128."""
    kind, stages, *rest = spec.split(":")
    block_n = int(rest[0].removeprefix("bn")) if rest else 128
    if kind not in ("pp", "pp3", "persistent", "persistent3", "w4", "w8"):
        raise SystemExit(
            f"unknown configuration kind {kind!r} in {spec!r}: pp, pp3, persistent, persistent3, w4 or w8"
        )
    k_stages, v_stages = (int(x) for x in stages.lstrip("k").split("v"))
    if kind in ("w4", "w8"):
        return hop.HopperConfig(block_n, int(kind[1]), k_stages, v_stages)
    return hop.HopperConfig(
        block_n, 4, k_stages, v_stages, pingpong=True, consumers=3 if kind.endswith("3") else 2,
        persistent=kind.startswith("persistent"),
    )  # fmt: skip


def parse_shapes(spec: str) -> list[tuple[int, int, int, int]]:
    """``B,H,N,D;B,H,N,D;...`` as shape tuples."""
    shapes = []
    for shape in spec.split(";"):
        b, h, n, d = (int(x) for x in shape.split(","))
        shapes.append((b, h, n, d))
    return shapes


def ab(
    json_path: str | None, rounds: int, head_dims: tuple[int, ...],
    shapes: list[tuple[int, int, int, int]] | None = None, configs: list[hop.HopperConfig] | None = None,
    fresh: bool = False, planned: bool = False,
) -> None:  # fmt: skip
    """cuDNN and every candidate of the head dim (or ``configs``), timed in alternation; each one's median
    round, and in brackets its slowest. ``shapes`` replaces the issue's shapes; ``fresh`` draws new inputs
    (new allocations) every round, as benchmarks/attention.py does. ``planned`` launches ours through a
    ``ForwardPlan`` into outputs allocated once, as a model's repeated call does: 29-34 µs of host time a call
    against ~90-110 for ``hopper_forward`` with fresh outputs (session 24's ladder), which ``do_bench``'s
    cache clearing before each call hides (256 MB zeroed: ~85 µs of GPU time at ~3 TB/s, computed, not timed).
    So batch-1 sizes are timed by their GPU time; without it every configuration measured 0.24-0.31× cuDNN at
    (1, 12, 1024, 64) in session 25, host-bound."""
    rows = []
    shapes = shapes or [s for s in [*SHAPES, (4, 16, 4096, 80)] if s[3] in head_dims]
    for shape, dtype in itertools.product(shapes, (torch.bfloat16, torch.float16)):
        b, h, n, d = shape
        torch.manual_seed(0)
        scale = 1 / math.sqrt(d)
        names = ["cudnn", *(_tag(cfg) for cfg in configs or hop.CANDIDATES[d])]
        times: dict[str, list[float]] = {name: [] for name in names}
        qkv: tuple[torch.Tensor, ...] = ()
        for _ in range(rounds):
            for name, cfg in zip(names, [None, *(configs or hop.CANDIDATES[d])], strict=True):
                if fresh or not qkv:
                    qkv = tuple(torch.randn(b, h, n, d, device="cuda", dtype=dtype) for _ in range(3))
                q, k, v = qkv
                if cfg is None:
                    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                        times[name].append(
                            bench(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v))
                        )
                elif planned:
                    o = torch.empty((b, n, h, d), device="cuda", dtype=dtype).permute(0, 2, 1, 3)
                    lse = torch.empty((b, h, n), device="cuda", dtype=torch.float32)
                    plan = hop.ForwardPlan(cfg, q, k)
                    times[name].append(
                        bench(lambda q=q, k=k, v=v, o=o, lse=lse, s=scale, p=plan: p(q, k, v, o, lse, s))
                    )
                else:
                    times[name].append(bench(lambda q=q, k=k, v=v, s=scale, c=cfg: run_hopper(q, k, v, s, c)))
        row: dict[str, Any] = {"shape": shape, "dtype": str(dtype)[6:]}
        row.update({name: tflops(shape, sorted(t)[len(t) // 2]) for name, t in times.items()})
        row["slowest"] = {name: tflops(shape, max(t)) for name, t in times.items()}
        rows.append(row)
        print(f"{shape} {row['dtype']}: " + " ".join(
            f"{name}={row[name]:.0f}({row[name] / row['cudnn']:.3f})[{row['slowest'][name]:.0f}]" for name in names
        ), flush=True)  # fmt: skip
    if json_path:
        with open(json_path, "w") as fh:
            json.dump({"card": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
                       "rounds": rounds, "rows": rows}, fh, indent=1)  # fmt: skip


SLEEP_CYCLES = 40_000_000  # ~20 ms at ~2 GHz (computed): longer than the host takes to queue CALLS calls
CALLS = 20


def gpu_ms(fn) -> tuple[float, bool]:  # type: ignore[no-untyped-def]
    """GPU milliseconds a call of ``fn``: CALLS calls queued behind a GPU sleep, so the host never keeps the
    GPU waiting (whatever the host time of a call), timed between two events. The flag says whether the
    queue was filled before the sleep ended (if not, the time includes host waits)."""
    start, end, slept = (torch.cuda.Event(enable_timing=True) for _ in range(3))
    torch.cuda._sleep(SLEEP_CYCLES)
    slept.record()
    start.record()
    for _ in range(CALLS):
        fn()
    end.record()
    clean = not slept.query()
    end.synchronize()
    return start.elapsed_time(end) / CALLS, clean


def _cudnn(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return F.scaled_dot_product_attention(a, b, c)


def _calls(shape: tuple[int, int, int, int], dtype: torch.dtype) -> dict[str, Any]:
    """Forward (no grad) and forward+backward calls of ours and cuDNN on one set of inputs."""
    torch.manual_seed(0)
    q, k, v, do = (torch.randn(shape, device="cuda", dtype=dtype) for _ in range(4))
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    runs = {}
    for name, attn in (("ours", tri.flash_attention), ("cudnn", _cudnn)):
        runs[f"{name} fwd"] = lambda attn=attn: attn(q, k, v)
        runs[f"{name} fwdbwd"] = lambda attn=attn: torch.autograd.grad(attn(qg, kg, vg), (qg, kg, vg), do)
    return runs


def gputime(shapes: list[tuple[int, int, int, int]], rounds: int, json_path: str | None) -> None:
    """Ours (``flash_attention``, autograd included) and cuDNN by GPU time, forward and forward+backward
    (``torch.autograd.grad``, no gradient accumulation), alternated, median of ``rounds``: what the kernels
    cost where the host keeps ahead, e.g. at ViT-sized shapes, where ``attention.py``'s timings are host-bound."""
    rows = []
    for shape, dtype in itertools.product(shapes, (torch.bfloat16, torch.float16)):
        runs = _calls(shape, dtype)
        times: dict[str, list[float]] = {name: [] for name in runs}
        dirty = set()
        for fn in runs.values():
            fn()
            fn()
        for _ in range(rounds):
            for name, fn in runs.items():
                ms, clean = gpu_ms(fn)
                times[name].append(ms)
                if not clean:
                    dirty.add(name)
        med = {name: statistics.median(t) for name, t in times.items()}
        row = {"shape": shape, "dtype": str(dtype)[6:], "ms": med, "dirty": sorted(dirty)}
        rows.append(row)
        print(
            f"{shape} {row['dtype']}: fwd ours {med['ours fwd'] * 1e3:.1f} us cudnn {med['cudnn fwd'] * 1e3:.1f}"
            f" ({med['cudnn fwd'] / med['ours fwd']:.3f}); fwd+bwd ours {med['ours fwdbwd'] * 1e3:.1f}"
            f" cudnn {med['cudnn fwdbwd'] * 1e3:.1f} ({med['cudnn fwdbwd'] / med['ours fwdbwd']:.3f})"
            + (f"  host-bound rounds: {sorted(dirty)}" if dirty else ""),
            flush=True,
        )
    if json_path:
        with open(json_path, "w") as fh:
            json.dump({"card": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
                       "rounds": rounds, "rows": rows}, fh, indent=1)  # fmt: skip


def clocks(
    json_path: str | None, shapes: list[tuple[int, int, int, int]], configs: list[hop.HopperConfig]
) -> None:
    """SM clock and board power while cuDNN and each configuration run back to back for a few seconds.

    A kernel that keeps the tensor cores busier draws more power; at the card's power limit the clock drops,
    so a kernel can lose per step what it gains in overlap. nvidia-smi samples every 50 ms alongside.
    """
    rows = []
    for shape in shapes:
        b, h, n, d = shape
        torch.manual_seed(0)
        q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        scale = 1 / math.sqrt(d)

        def cudnn(q: torch.Tensor = q, k: torch.Tensor = k, v: torch.Tensor = v) -> None:
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                F.scaled_dot_product_attention(q, k, v)

        runs: dict[str, Any] = {"cudnn": cudnn}
        for cfg in configs:
            runs[_tag(cfg)] = lambda q=q, k=k, v=v, s=scale, c=cfg: run_hopper(q, k, v, s, c)
        for _ in range(2):  # two passes: the second shows whether the order mattered
            for name, fn in runs.items():
                fn()
                torch.cuda.synchronize()
                smi = subprocess.Popen(
                    ["nvidia-smi", "--query-gpu=clocks.sm,power.draw", "--format=csv,noheader,nounits",
                     "-lms", "50"], stdout=subprocess.PIPE, text=True,
                )  # fmt: skip
                start, calls = time.perf_counter(), 0
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
                while time.perf_counter() - start < 3.0:
                    for _ in range(20):
                        fn()
                    calls += 20
                    torch.cuda.synchronize()
                end.record()
                end.synchronize()
                smi.terminate()
                out = smi.communicate()[0].strip().splitlines()[4:]  # the first samples are the ramp
                clock = statistics.median(float(line.split(",")[0]) for line in out)
                power = statistics.median(float(line.split(",")[1]) for line in out)
                row = {"shape": shape, "kernel": name, "tflops": tflops(shape, begin.elapsed_time(end) / calls),
                       "sm_mhz": clock, "watts": power}  # fmt: skip
                rows.append(row)
                print(
                    f"{shape} {name}: {row['tflops']:.0f} TFLOP/s, SM {clock:.0f} MHz, {power:.0f} W",
                    flush=True,
                )
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(
                {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, fh, indent=1
            )


def picks(shapes: list[tuple[int, int, int, int]], repeats: int) -> None:
    """How often the first-call chooser (``attention_hopper._choose``) takes each candidate: ``repeats`` fresh
    choices per shape and dtype in one process (compiled once), as the first calls of as many processes would."""
    for shape, dtype in itertools.product(shapes, (torch.bfloat16, torch.float16)):
        b, h, n, d = shape
        q, k, v = (torch.randn(shape, device="cuda", dtype=dtype) for _ in range(3))
        o = torch.empty((b, n, h, d), device="cuda", dtype=dtype).permute(0, 2, 1, 3)
        lse = torch.empty((b, h, n), device="cuda", dtype=torch.float32)
        taken: dict[str, int] = {}
        for _ in range(repeats):
            hop._chosen.clear()
            tag = _tag(hop._choose(q, k, v, o, lse, 1 / math.sqrt(d)))
            taken[tag] = taken.get(tag, 0) + 1
        print(f"{shape} {str(dtype)[6:]}: " + " ".join(f"{t}={c}" for t, c in taken.items()), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["check", "sweep", "ab", "clocks", "gputime", "picks"])
    parser.add_argument(
        "--rounds", type=int, default=5, help="ab: rounds of alternated timings; picks: choices"
    )
    parser.add_argument("--json")
    parser.add_argument("--pp-only", action="store_true", help="check only the ping-pong configurations")
    parser.add_argument("--consumers", type=int, help="check only ping-pong configurations with this many")
    parser.add_argument("--head-dims", default="64,128", help="sweep: only shapes with these head dims")
    parser.add_argument("--shapes", help="ab: B,H,N,D;B,H,N,D;... instead of the issue's shapes")
    parser.add_argument("--configs", help="ab, check: pp:k2v2,persistent:k2v2,... instead of the candidates")
    parser.add_argument("--fresh", action="store_true", help="ab: new inputs (allocations) every round")
    parser.add_argument(
        "--planned", action="store_true", help="ab: ours through a ForwardPlan with kept outputs (GPU time)"
    )
    args = parser.parse_args()
    print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, flush=True)
    if args.what == "check":
        only = [parse_config(c) for c in args.configs.split(",")] if args.configs else None
        return 0 if check(args.pp_only, args.consumers, only) else 1
    head_dims = tuple(int(d) for d in args.head_dims.split(","))
    if args.what == "ab":
        shapes = parse_shapes(args.shapes) if args.shapes else None
        configs = [parse_config(c) for c in args.configs.split(",")] if args.configs else None
        ab(args.json, args.rounds, head_dims, shapes, configs, args.fresh, args.planned)
        return 0
    if args.what == "picks":
        picks(parse_shapes(args.shapes or "4,16,4096,64"), args.rounds)
        return 0
    if args.what == "gputime":
        gputime(parse_shapes(args.shapes or "1,12,1024,64"), args.rounds, args.json)
        return 0
    if args.what == "clocks":
        configs = [parse_config(c) for c in (args.configs or "pp:k2v2,persistent:k2v2").split(",")]
        clocks(args.json, parse_shapes(args.shapes or "4,8,4096,128"), configs)
        return 0
    sweep(args.json, head_dims)
    return 0


if __name__ == "__main__":
    sys.exit(main())
