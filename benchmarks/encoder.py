"""The ViT encoder on the GPU: regions/s and tokens/s, triton backend against sdpa (cuDNN), bf16.

For each model (timm ViT-S/16, ViT-B/16, ViT-L/16 shapes, random weights) and each region size it times
``forward_features`` under bfloat16 autocast and ``torch.inference_mode`` with the attention backend set to
``triton`` (PathoFlash's kernel) and to ``sdpa`` restricted to cuDNN (falling back to PyTorch's choice where
cuDNN refuses). Every batch holds the same number of tokens (``--tokens-per-batch``), so the peak memory of
a memory-linear model is the same at every sequence length.

    python3 benchmarks/encoder.py [--archs vit_small_patch16_224,...] [--tokens 4096,16384]
        [--tokens-per-batch 16384] [--backends triton,sdpa] [--json PATH]

Prints one Markdown table row per (model, tokens, backend): regions/s, tokens/s, ms per batch, peak memory
beyond the weights (GiB), and triton's speed-up over sdpa.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from pathoflash.model.config import arch_config
from pathoflash.model.vit import VisionTransformer


@dataclass(frozen=True, slots=True)
class Result:
    arch: str
    tokens: int
    batch: int
    backend: str
    ms_per_batch: float
    regions_per_s: float
    tokens_per_s: float
    peak_extra_gib: float


@contextlib.contextmanager
def sdpa_choice(backend: str) -> Iterator[None]:
    if backend == "sdpa":
        with sdpa_kernel(
            [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
        ):
            yield
    else:
        yield


def time_forward(model: VisionTransformer, x: torch.Tensor, backend: str, min_seconds: float) -> float:
    """Median seconds of one forward, after warm-up (which also runs the Triton autotuner)."""
    model.set_backend(backend)  # type: ignore[arg-type]
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16), sdpa_choice(backend):
        for _ in range(3):
            model.forward_features(x)
        torch.cuda.synchronize()
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < 5 or time.perf_counter() - start < min_seconds:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            model.forward_features(x)
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1000)
    return sorted(times)[len(times) // 2]


def run(
    archs: list[str], token_counts: list[int], tokens_per_batch: int, backends: list[str], min_seconds: float
):
    results = []
    for arch in archs:
        config = arch_config(arch)
        with torch.device("cuda"):
            model = VisionTransformer(config).eval()
        weights = torch.cuda.memory_allocated()
        for tokens in token_counts:
            side = math.isqrt(tokens)
            if side * side != tokens:
                raise SystemExit(f"--tokens must be squares, got {tokens}")
            batch = max(1, tokens_per_batch // tokens)
            x = torch.randn(batch, 3, side * config.patch_size, side * config.patch_size, device="cuda")
            for backend in backends:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                seconds = time_forward(model, x, backend, min_seconds)
                peak = (torch.cuda.max_memory_allocated() - weights - x.numel() * 4) / 2**30
                result = Result(
                    arch,
                    tokens,
                    batch,
                    backend,
                    1000 * seconds,
                    batch / seconds,
                    batch * tokens / seconds,
                    peak,
                )
                results.append(result)
                print_row(result, results)
        del model
        torch.cuda.empty_cache()
    return results


def print_row(result: Result, earlier: list[Result]) -> None:
    speedup = ""
    if result.backend == "triton":
        base = [r for r in earlier if (r.arch, r.tokens, r.backend) == (result.arch, result.tokens, "sdpa")]
        if base:
            speedup = f"{base[0].ms_per_batch / result.ms_per_batch:.2f}×"
    print(
        f"| {result.arch} | {result.tokens} | {result.batch} | {result.backend} | {result.ms_per_batch:.1f} | "
        f"{result.regions_per_s:.1f} | {result.tokens_per_s:,.0f} | {result.peak_extra_gib:.2f} | {speedup} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--archs", default="vit_small_patch16_224,vit_base_patch16_224,vit_large_patch16_224")
    parser.add_argument("--tokens", default="4096,16384")
    parser.add_argument("--tokens-per-batch", type=int, default=16384)
    parser.add_argument("--backends", default="sdpa,triton", help="sdpa first: triton rows show the speed-up")
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/encoder.py needs a CUDA GPU")
    print(f"{torch.cuda.get_device_name()} · torch {torch.__version__} · {dt.date.today().isoformat()}")
    print(
        "| model | tokens/region | batch | backend | ms/batch | regions/s | tokens/s | peak extra GiB | vs sdpa |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    results = run(
        args.archs.split(","),
        [int(t) for t in args.tokens.split(",")],
        args.tokens_per_batch,
        args.backends.split(","),
        args.min_seconds,
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(
                {"device": torch.cuda.get_device_name(), "results": [asdict(r) for r in results]}, handle
            )


if __name__ == "__main__":
    main()
