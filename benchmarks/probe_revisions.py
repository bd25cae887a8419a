"""Time this tree's Gluon forwards against the same kernels at another revision, in one process.

    python3 benchmarks/probe_revisions.py --rev a60168d [--shapes "4,16,4096,64;1,12,1024,64"] [--rounds 5]
    python3 benchmarks/probe_revisions.py --old-dir .rev/ ...   # the two files, where git is not at hand

The revision's ``kernels/attention_hopper.py`` and ``attention_hopper_persistent.py`` (``git show``, or the
files in ``--old-dir``) are written to a temporary folder and imported as ``pathoflash.kernels`` modules of
their own: their relative imports resolve to this tree's ``attention.py`` and ``launch.py``, and each version
compiles its own kernels. For each shape and dtype, cuDNN and every chosen candidate of both versions
(``--configs first`` or ``all`` of ``CANDIDATES``) are timed in alternation on fresh inputs each round; sequences
of at most 2,048 tokens run through ``ForwardPlan``s into kept outputs (GPU time: fresh outputs make them
host-bound), longer ones through ``hopper_forward``. Prints each one's median ratio to cuDNN and new ÷ old.
Written for session 27's A/B (the last key step out of the loop; ATTENTION_NOTES "Session 27").
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
import triton
from pathoflash.kernels import attention_hopper as new
from probe_hopper import bench, parse_shapes
from torch.nn.attention import SDPBackend, sdpa_kernel

ROOT = Path(__file__).resolve().parents[1]
FILES = ("attention_hopper", "attention_hopper_persistent")
SHAPES = "4,16,4096,64;1,16,16384,64;2,16,4100,64;4,8,4096,128;1,8,16384,128;4,16,4096,80"


def load_revision(rev: str | None, old_dir: Path | None) -> ModuleType:
    """The revision's attention_hopper, imported beside this tree's (its persistent module renamed with it)."""
    alias = {name: f"_old_{name}" for name in FILES}
    folder = Path(tempfile.mkdtemp(prefix="pathoflash-old-"))
    for name in FILES:
        if old_dir is not None:
            source = (old_dir / f"{name}.py").read_text()
        else:
            source = subprocess.run(
                ["git", "show", f"{rev}:kernels/{name}.py"],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        for other in FILES:  # "from .attention_hopper import" does not match the persistent module's name
            source = source.replace(f"from .{other} import", f"from .{alias[other]} import")
        (folder / f"{alias[name]}.py").write_text(source)
    modules = []
    for name in FILES:  # attention_hopper first: the persistent module imports it at the top
        qualified = f"pathoflash.kernels.{alias[name]}"
        spec = importlib.util.spec_from_file_location(qualified, folder / f"{alias[name]}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = module
        spec.loader.exec_module(module)
        modules.append(module)
    return modules[0]


def _outputs(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """O as attention.py allocates it ((B, N, H, D) storage seen as (B, H, N, D)) and the float32 lse."""
    b, h, n, d = q.shape
    o = torch.empty((b, n, h, d), device=q.device, dtype=q.dtype).permute(0, 2, 1, 3)
    return o, torch.empty((b, h, n), device=q.device, dtype=torch.float32)


def _timed_call(
    mod: ModuleType, cfg: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> Any:
    """A call of ``mod``'s forward with ``cfg``: planned into kept outputs at N ≤ 2,048, else fresh outputs."""
    if q.shape[2] <= 2048:
        plan, (o, lse) = mod.ForwardPlan(cfg, q, k), _outputs(q)
        return lambda: plan(q, k, v, o, lse, scale)
    return lambda: mod.hopper_forward(q, k, v, *_outputs(q), scale, cfg)


def _check(
    mod: ModuleType, cfg: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> None:
    """``mod``'s output with ``cfg`` against SDPA's (whichever backend it picks): a wrong kernel, not rounding."""
    o, lse = _outputs(q)
    mod.hopper_forward(q, k, v, o, lse, scale, cfg)
    error = (o.float() - F.scaled_dot_product_attention(q, k, v).float()).abs().max().item()
    assert error < 2e-2, f"{mod.__name__} {cfg}: error {error:.3g} against SDPA"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--rev", help="git revision whose kernels are the 'old' ones")
    source.add_argument("--old-dir", type=Path, help="a folder with the old attention_hopper*.py")
    parser.add_argument("--shapes", default=SHAPES)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--configs", choices=["first", "all"], default="first")
    args = parser.parse_args()
    old = load_revision(args.rev, args.old_dir)
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__} triton {triton.__version__}", flush=True)
    for shape in parse_shapes(args.shapes):
        b, h, n, d = shape
        configs = new.CANDIDATES[d] if args.configs == "all" else new.CANDIDATES[d][:1]
        for dtype in (torch.bfloat16, torch.float16):
            scale = 1 / math.sqrt(d)
            names = ["cudnn", *(f"{side}{i}" for i in range(len(configs)) for side in ("new", "old"))]
            times: dict[str, list[float]] = {name: [] for name in names}
            for r in range(args.rounds):
                q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=dtype) for _ in range(3))
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    if name == "cudnn":
                        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                            times[name].append(
                                bench(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v))
                            )
                        continue
                    mod = new if name.startswith("new") else old
                    cfg = mod.HopperConfig(**vars(configs[int(name[3:])]))
                    if r == 0:
                        _check(mod, cfg, q, k, v, scale)
                    times[name].append(bench(_timed_call(mod, cfg, q, k, v, scale)))
            median = {name: statistics.median(t) for name, t in times.items()}
            line = (
                f"{shape} {str(dtype)[6:]}: cudnn {4 * b * h * n * n * d / median['cudnn'] / 1e9:.0f} TFLOP/s"
            )
            for i, cfg in enumerate(configs):
                tag = re.sub(r"HopperConfig|\s", "", repr(cfg))[:60]
                line += (
                    f" | {tag} new {median['cudnn'] / median[f'new{i}']:.3f}"
                    f" old {median['cudnn'] / median[f'old{i}']:.3f} new/old {median[f'old{i}'] / median[f'new{i}']:.3f}"
                )
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
