"""Compile the attention kernels for an H100 (sm_90) on a machine without a GPU, and say what ptxas made of them.

    pip install --target /tmp/t36 triton==3.6.0          # the device image's Triton (optional)
    PYTHONPATH=/tmp/t36 python3 benchmarks/compile_sm90.py pingpong --head-dim 128 --block-n 128 --stages 3,2
    python3 benchmarks/compile_sm90.py hopper --head-dim 64 --block-n 128 --warps 4
    python3 benchmarks/compile_sm90.py persistent --head-dim 64 --consumers 3 --stages 2,2
    python3 benchmarks/compile_sm90.py triton --head-dim 64 --block-m 128 --block-n 64 --warps 8 --stages 3
    python3 benchmarks/compile_sm90.py dq --arch 80 --head-dim 128 --block-m 128 --block-n 32 --warps 8 --stages 2

Prints registers, local-memory bytes (spills), shared memory, the wgmma count and the ``wgmma.wait_group``
depths in the PTX, and any ptxas note about serialised wgmmas; ``--out DIR`` also writes the TTGIR, PTX and
SASS. ``--arch 80`` compiles the Triton kernels (``triton``, ``backward`` = dK/dV, ``dq``) for an A100 instead.
``--every-candidate`` compiles each of a Triton kernel's autotuning candidates for the arch instead (one line
each; ``--head-dim`` may list several) and exits 1 if one fails to compile or needs more shared memory than
the card has:

    python3 benchmarks/compile_sm90.py backward --arch 80 --dq-atomic 1 --head-dim 64,80,128 --every-candidate
Integer arguments get the specialisations the runtime gives real tensors (multiples of 16, unit head-dim
strides), otherwise the loads look unaligned and nothing is pipelined. Nothing here launches a kernel: it
catches compile errors, spills and serialisation before a device call, not wrong results.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import triton
from pathoflash.kernels import attention
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

_INTS = ("BH", "H", "N_Q", "N_KV", "N_BUCKET")
# The most shared memory one CTA may use (opt-in), in bytes: A100 (sm_80), H100 (sm_90).
SHARED_LIMIT = {80: 166_912, 90: 232_448}


def _tool(name: str) -> str:
    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def _triton_source(args: argparse.Namespace, dtype: str) -> tuple[ASTSource, dict]:
    backward = args.kernel in ("backward", "dq")
    fn = {"backward": attention._attn_bwd_dkdv_kernel, "dq": attention._attn_bwd_dq_kernel}.get(
        args.kernel, attention._attn_fwd_kernel
    )
    head_a, head_b, split = attention.head_split(args.head_dim)
    constants = {
        "HEAD_DIM": args.head_dim, "HEAD_A": head_a, "HEAD_B": head_b, "SPLIT": split, "USE_TMA": False,
        "DOT_PRECISION": "tf32", "BLOCK_M": args.block_m, "BLOCK_N": args.block_n,
    }  # fmt: skip
    if args.kernel == "backward":
        constants["DQ_ATOMIC"] = args.dq_atomic
        constants.update({f"stride_{t}d": 1 for t in ("q", "k", "v", "do", "dk", "dv", "dq")})
    elif backward:
        constants.update({f"stride_{t}d": 1 for t in ("q", "k", "v", "do", "dq")})
    else:
        constants["WARP_SPECIALIZE"] = False
        constants.update({f"stride_{t}d": 1 for t in ("q", "k", "v", "o")})
    signature = {name: "constexpr" for name in constants}
    signature.update({name: f"*{dtype}" for name in ("Q", "K", "V", "Out", "DO", "DK", "DV", "DQ")})
    signature.update({name: "*fp32" for name in ("LSE", "DELTA", "DQACC")})
    signature.update({name: "fp32" for name in ("qk_scale", "sm_scale")})
    for name in fn.arg_names:
        signature.setdefault(name, "i32")
    aligned = [n for n in fn.arg_names if signature[n] not in ("constexpr", "fp32")]
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    indexed = {(fn.arg_names.index(n),): v for n, v in constants.items()}
    stages = int(args.stages.split(",")[0])
    return ASTSource(
        fn,
        signature={n: signature[n] for n in fn.arg_names},
        constexprs=indexed,
        attrs=attrs,
    ), {
        "num_warps": args.warps,
        "num_stages": stages,
    }


def _gluon_source(args: argparse.Namespace, dtype: str) -> tuple[ASTSource, dict]:
    from pathoflash.kernels import attention_hopper as hop
    from pathoflash.kernels import attention_hopper_persistent as persistent
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    k_stages, v_stages = (int(s) for s in args.stages.split(","))
    pingpong = args.kernel in ("pingpong", "persistent")
    fn = {
        "pingpong": hop._attn_fwd_pingpong_kernel,
        "persistent": persistent._attn_fwd_persistent_kernel,
    }.get(args.kernel, hop._attn_fwd_hopper_kernel)
    rows = args.rows if pingpong else 16 * args.warps
    gl_dtype = gl.bfloat16 if dtype == "bf16" else gl.float16

    first, tail = hop.head_pieces(args.head_dim)

    def desc(box_rows: int, cols: int = first) -> str:
        layout = gl.NVMMASharedLayout.get_default_for([1, 1, box_rows, cols], gl_dtype)
        return f"tensordesc<{dtype}[1,1,{box_rows},{cols}],{layout!r}>"

    constants: dict = {"K_STAGES": k_stages, "V_STAGES": v_stages}
    if args.kernel != "persistent":  # the persistent kernel reads the key block from its descriptor
        constants["BLOCK_N"] = args.block_n
    if pingpong:
        constants.update(
            CONSUMER_REGS=hop.CONSUMER_REGS[args.consumers],
            LOADER_REGS=hop.LOADER_REGS,
            CONSUMERS=args.consumers,
        )
    else:
        constants.update(HEAD_DIM=args.head_dim, num_warps=args.warps)
    signature = {"q_desc": desc(rows), "k_desc": desc(args.block_n), "v_desc": desc(args.block_n)}
    signature.update({"o_desc": desc(rows), "LSE": "*fp32", "qk_scale": "fp32"})
    tails = ("q_tail_desc", "o_tail_desc", "k_tail_desc", "v_tail_desc")
    if args.kernel == "pingpong" and tail == first:  # unsplit: None, as attention_hopper._launch passes
        constants.update(dict.fromkeys(tails))
    elif args.kernel == "pingpong":  # the second column piece
        signature.update({"q_tail_desc": desc(rows, tail), "o_tail_desc": desc(rows, tail)})
        signature.update({n: desc(args.block_n, tail) for n in ("k_tail_desc", "v_tail_desc")})
    signature.update({name: "i32" for name in _INTS if name in fn.arg_names})
    signature.update({name: "constexpr" for name in constants})
    indexed = {(fn.arg_names.index(n),): v for n, v in constants.items()}
    attrs = {(fn.arg_names.index("LSE"),): [["tt.divisibility", 16]]}
    source = GluonASTSource(
        fn, signature={n: signature[n] for n in fn.arg_names}, constexprs=indexed, attrs=attrs
    )
    return source, {"num_warps": 4 if pingpong else args.warps}


def _gluon_bwd_source(args: argparse.Namespace, dtype: str) -> tuple[ASTSource, dict]:
    from pathoflash.kernels import attention_hopper as hop
    from pathoflash.kernels import attention_hopper_bwd as bwd
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    fn = bwd._attn_bwd_hopper_kernel
    gl_dtype = gl.bfloat16 if dtype == "bf16" else gl.float16
    first, tail = hop.head_pieces(args.head_dim)

    def desc(box_rows: int, cols: int, fp32: bool = False) -> str:
        layout = gl.NVMMASharedLayout.get_default_for(
            [1, 1, box_rows, cols], gl.float32 if fp32 else gl_dtype
        )
        return f"tensordesc<{'fp32' if fp32 else dtype}[1,1,{box_rows},{cols}],{layout!r}>"

    constants: dict = {
        "STAGES": int(args.stages.split(",")[0]),
        "CONSUMERS": bwd.CONSUMER_WARPGROUPS,
        "CONSUMER_REGS": args.regs,
        "LOADER_REGS": bwd.LOADER_REGS,
    }
    if "PERSISTENT" in fn.arg_names:
        constants["PERSISTENT"] = args.persistent
    signature: dict = {}
    if tail == first:  # unsplit: None for the second pieces, as attention_hopper_bwd.hopper_backward passes
        constants.update(dict.fromkeys(f"{n}_tail_desc" for n in ("q", "do", "k", "v", "dk", "dv", "dq")))
    for suffix, cols in (("", first), ("_tail", tail)) if tail != first else (("", first),):
        signature.update({f"{n}{suffix}_desc": desc(args.block_m, cols) for n in ("q", "do")})
        signature.update({f"{n}{suffix}_desc": desc(bwd.ROWS.value, cols) for n in ("k", "v", "dk", "dv")})
        dq_cols = cols // 2 if args.dq_halves else cols
        signature[f"dq{suffix}_desc"] = desc(args.block_m, dq_cols, fp32=True)
        fragments = {"fragment_dq": False} if args.no_fragments else {}  # else the default
        cfg = bwd.BackwardConfig(block_m=args.block_m, dq_halves=args.dq_halves, **fragments)
        if tail == first and cfg.fragments(args.head_dim):  # dQ staged in fragment order: an unswizzled box
            signature["dq_desc"] = f"tensordesc<fp32[1,1,{args.block_m},{dq_cols}],{bwd.DQ_FRAGMENT_BOX!r}>"
    signature.update({name: "*fp32" for name in ("LSE", "DELTA")})
    signature.update({name: "fp32" for name in ("qk_scale", "sm_scale")})
    signature.update({name: "i32" for name in _INTS if name in fn.arg_names})
    signature.update({name: "constexpr" for name in constants})
    indexed = {(fn.arg_names.index(n),): v for n, v in constants.items()}
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in ("LSE", "DELTA")}
    source = GluonASTSource(
        fn, signature={n: signature[n] for n in fn.arg_names}, constexprs=indexed, attrs=attrs
    )
    return source, {"num_warps": 4}


def _table(args: argparse.Namespace) -> attention.ConfigTable:
    if args.kernel == "triton":
        return attention.FWD_CONFIGS
    if args.kernel == "dq":
        return attention.DQ_CONFIGS
    if args.kernel == "backward":
        return attention.DKDV_CONFIGS if args.dq_atomic == 0 else attention.FUSED_CONFIGS
    raise SystemExit("--every-candidate is for the Triton kernels: triton, backward, dq")


def _every_candidate(args: argparse.Namespace, head_dims: list[int]) -> int:
    """Compile every candidate of the kernel's table for ``args.arch`` at each head dim; 1 if any fails or
    needs more shared memory than the card has."""
    table, failed = _table(args), 0
    target = GPUTarget("cuda", args.arch, 32)
    for head_dim in head_dims:
        for cfg in table[(args.arch >= 90, head_dim <= 64)]:
            args.head_dim, args.block_m, args.block_n = head_dim, cfg.block_m, cfg.block_n
            args.warps, args.stages = cfg.num_warps, str(cfg.num_stages)
            name = f"{args.kernel} D{head_dim} {cfg.block_m}x{cfg.block_n} w{cfg.num_warps} s{cfg.num_stages}"
            try:
                source, options = _triton_source(args, args.dtype)
                shared = triton.compile(source, target=target, options=options).metadata.shared
            except Exception as exc:  # any compile error is the finding
                print(f"{name}: FAILED {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                failed += 1
                continue
            fits = shared <= SHARED_LIMIT[args.arch]
            failed += not fits
            print(f"{name}: shared {shared} B{'' if fits else ' > the card: FAILED'}", flush=True)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "kernel", choices=["triton", "backward", "dq", "hopper", "pingpong", "persistent", "hopper_bwd"]
    )
    parser.add_argument(
        "--arch", type=int, choices=[80, 90], default=90, help="80: an A100 (the Triton kernels only)"
    )
    parser.add_argument("--head-dim", default="64", help="several, comma-separated, with --every-candidate")
    parser.add_argument("--block-m", type=int, default=128, help="triton kernel and hopper_bwd")
    parser.add_argument("--regs", type=int, default=240, help="hopper_bwd: registers per consumer")
    parser.add_argument("--block-n", type=int, default=128)
    parser.add_argument("--warps", type=int, default=4)
    parser.add_argument("--stages", default="2,2", help="K,V ring slots (Gluon) or num_stages (Triton)")
    parser.add_argument("--rows", type=int, default=64, help="ping-pong: query rows per consumer warpgroup")
    parser.add_argument("--consumers", type=int, choices=[2, 3], default=2, help="ping-pong consumers")
    parser.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    parser.add_argument(
        "--dq-atomic",
        type=int,
        choices=[0, 1, 2],
        default=2,
        help="backward: 0 dK/dV only, 1 dQ by atomic adds, 2 dQ by TMA reduce-adds",
    )
    parser.add_argument("--dq-halves", action="store_true", help="hopper_bwd: dQ columns shared out")
    parser.add_argument("--persistent", action="store_true", help="hopper_bwd: one CTA per SM (head dim 128)")
    parser.add_argument(
        "--no-fragments",
        action="store_true",
        help="hopper_bwd: dQ staged through the 128-byte swizzle (before s28)",
    )
    parser.add_argument("--out", type=Path, help="also write the TTGIR, PTX and SASS here")
    parser.add_argument(
        "--every-candidate",
        action="store_true",
        help="Triton kernels: each autotuning candidate of its table",
    )
    args = parser.parse_args()
    head_dims = [int(d) for d in args.head_dim.split(",")]
    if args.every_candidate:
        return _every_candidate(args, head_dims)
    args.head_dim = head_dims[0]

    if args.kernel in ("triton", "backward", "dq"):
        make = _triton_source
    else:
        make = _gluon_bwd_source if args.kernel == "hopper_bwd" else _gluon_source
    source, options = make(args, args.dtype)
    target = GPUTarget("cuda", args.arch, 32)
    compiled = triton.compile(source, target=target, options=options)
    ptx = compiled.asm["ptx"]
    cubin = Path(os.environ.get("TMPDIR", "/tmp")) / f"compile_sm90_{os.getpid()}.cubin"
    cubin.write_bytes(compiled.asm["cubin"])
    usage = subprocess.run(
        [_tool("cuobjdump"), "--dump-resource-usage", str(cubin)], capture_output=True, text=True
    )
    regs = re.search(r"REG:(\d+)", usage.stdout)
    stack = re.search(r"STACK:(\d+)", usage.stdout)
    ptxas = subprocess.run(
        [_tool("ptxas"), "-arch=sm_90a" if args.arch == 90 else "-arch=sm_80", "-v", "-", "-o", os.devnull],
        input=ptx,
        capture_output=True,
        text=True,
    )
    notes = sorted(set(re.findall(r"Potential Performance Loss: [^\n]*", ptxas.stderr)))
    waits = re.findall(r"wgmma.wait_group.sync.aligned\s+(\d+)", ptx)
    print(
        f"{args.kernel} D{args.head_dim} BN{args.block_n} {args.dtype} (triton {triton.__version__}): "
        f"registers {regs.group(1) if regs else '?'}, spill bytes {stack.group(1) if stack else '?'}, "
        f"shared {compiled.metadata.shared} B, wgmma {ptx.count('wgmma.mma_async')}, "
        f"wait_group depths {waits}"
    )
    for note in notes:
        print("ptxas:", note)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "kernel.ttgir").write_text(compiled.asm["ttgir"])
        (args.out / "kernel.ptx").write_text(ptx)
        sass = subprocess.run(
            [_tool("cuobjdump"), "-sass", str(cubin)], capture_output=True, text=True
        ).stdout
        (args.out / "kernel.sass").write_text(sass)
    cubin.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
