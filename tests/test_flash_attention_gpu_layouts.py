"""GPU tests of ``flash_attention`` on layouts a caller may hand it that the model never makes.

Each of q, k, v gets its own layout: zero strides (a key/value head broadcast over query heads with
``expand``), a storage offset that breaks 16-byte alignment, rows padded to a wider stride, every other
column, views of a fused projection. Sizes, scales and magnitudes are drawn from a seeded generator, so a
failure names a case that can be re-run. Two more tests put element offsets past 2³¹ into one tensor, and
run every Hopper candidate while another process computes on the same GPU.

Reference and tolerance as in test_flash_attention_gpu.py: float32 products, at most twice the error of the
plain computation in the inputs' precision, plus a small floor. On an H100 (2026-11-27, torch 2.11, Triton
3.6) all 49 passed in 9.6 minutes on a fresh machine, nearly all of it compiling and autotuning kernels.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from pathoflash.kernels import attention, flash_attention
from pathoflash.kernels.reference import attention_reference
from test_flash_attention_gpu import assert_within_tolerance

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(attention._INTERPRETED, reason="kernels were imported under TRITON_INTERPRET"),
    pytest.mark.usefixtures("exact_float32"),
]

LAYOUTS = ("contiguous", "bnhd", "expanded", "misaligned", "padded_rows", "every_other_column", "fused")


def _make(
    layout: str, shape: tuple[int, int, int, int], dtype: torch.dtype, gen: torch.Generator, std: float = 1.0
) -> torch.Tensor:
    """A (B, H, N, D) tensor of normal values with standard deviation ``std``, stored in ``layout``."""
    b, h, n, d = shape

    def randn(*size: int) -> torch.Tensor:
        return (std * torch.randn(*size, generator=gen, device="cuda", dtype=torch.float32)).to(dtype)

    if layout == "contiguous":
        return randn(b, h, n, d)
    if layout == "bnhd":
        return randn(b, n, h, d).transpose(1, 2)
    if layout == "expanded":  # one head shared by all (zero head stride), as grouped-query attention does
        return randn(b, 1, n, d).expand(b, h, n, d)
    if layout == "misaligned":  # data pointer one element past a 16-byte boundary
        return randn(b * h * n * d + 1)[1:].view(b, h, n, d)
    if layout == "padded_rows":  # each row followed by unused columns
        return randn(b, h, n, d + 8)[..., :d]
    if layout == "every_other_column":
        return randn(b, h, n, 2 * d)[..., ::2]
    if layout == "fused":  # one of q, k, v in a (B, N, 3, H, D) projection
        return randn(b, n, 3, h, d).permute(2, 0, 3, 1, 4)[1]
    raise AssertionError(layout)


@dataclass(frozen=True)
class Case:
    seed: int
    dtype: torch.dtype
    batch: int
    heads: int
    n_q: int
    n_kv: int
    head_dim: int
    layouts: tuple[str, str, str]
    scale: float | None
    magnitude: float

    def __str__(self) -> str:
        dtype = "bf16" if self.dtype == torch.bfloat16 else "fp16"
        return (
            f"{self.seed}-{dtype}-{self.batch}x{self.heads}x{self.n_q}x{self.n_kv}x{self.head_dim}-"
            f"{'/'.join(self.layouts)}-scale{self.scale}-x{self.magnitude}"
        )


def _cases(count: int) -> list[Case]:
    rng = random.Random(20261127)
    lengths = (1, 2, 15, 16, 17, 63, 127, 128, 129, 255, 383, 1000, 2049, 4095)
    cases = []
    for seed in range(count):
        n_q = rng.choice(lengths) if rng.random() < 0.6 else rng.randint(1, 3000)
        n_kv = n_q if rng.random() < 0.7 else rng.choice(lengths)
        cases.append(
            Case(
                seed=seed,
                dtype=rng.choice((torch.bfloat16, torch.float16)),
                batch=rng.randint(1, 3),
                heads=rng.randint(1, 4),
                n_q=n_q,
                n_kv=n_kv,
                head_dim=rng.choice((16, 32, 40, 48, 64, 64, 80, 96, 112, 128, 128)),
                layouts=(rng.choice(LAYOUTS), rng.choice(LAYOUTS), rng.choice(LAYOUTS)),
                scale=rng.choice((None, None, 0.0, 0.05, 0.3)),
                magnitude=rng.choice((1.0, 1.0, 8.0)),  # 8: scores of std 8, a few keys dominating a row
            )
        )
    return cases


def _grads(
    fn: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, do: torch.Tensor, dlse: torch.Tensor
) -> dict:
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    o, lse = fn(q, k, v)
    # The lse enters the loss too, so its gradient path is checked with the others.
    dq, dk, dv = torch.autograd.grad((o, lse), (q, k, v), (do.to(o.dtype), dlse))
    return {"o": o, "lse": lse, "dq": dq, "dk": dk, "dv": dv}


@pytest.mark.parametrize("case", _cases(48), ids=str)
def test_random_layouts_match_reference(case: Case) -> None:
    gen = torch.Generator(device="cuda").manual_seed(case.seed)
    q_shape = (case.batch, case.heads, case.n_q, case.head_dim)
    kv_shape = (case.batch, case.heads, case.n_kv, case.head_dim)
    q, k, v = (
        _make(layout, shape, case.dtype, gen, std)
        for layout, shape, std in zip(
            case.layouts, (q_shape, kv_shape, kv_shape), (case.magnitude, 1.0, 1.0), strict=True
        )
    )
    do = _make("bnhd", q_shape, case.dtype, gen)
    dlse = torch.randn(q_shape[:3], generator=gen, device="cuda")
    got = _grads(lambda *x: flash_attention(*x, scale=case.scale, return_lse=True), q, k, v, do, dlse)
    plain = _grads(lambda *x: attention_reference(*x, scale=case.scale), q, k, v, do, dlse)
    exact = _grads(
        lambda *x: attention_reference(*x, scale=case.scale), q.float(), k.float(), v.float(), do, dlse
    )
    assert got["o"].shape == q_shape and got["lse"].shape == q_shape[:3]
    assert_within_tolerance(got, plain, exact, f"{case} ")


def test_offsets_past_two_to_the_31_elements() -> None:
    """A fused (B, N, 3, H, D) projection of 3.2 · 10⁹ elements: row offsets inside a head exceed 2³¹.

    Forward only (the backward's index arithmetic is the same, but its float32 reference would need a
    4 GiB score matrix per head). Checked on the first, a middle and the last head, whose elements lie
    furthest from the base, on a sample of query rows.
    """
    free, _ = torch.cuda.mem_get_info()
    if free < 16 * 2**30:
        pytest.skip("needs 16 GiB of free GPU memory")
    b, h, n, d = 1, 256, 32768, 128
    dtype = torch.bfloat16
    gen = torch.Generator(device="cuda").manual_seed(31)
    qkv = torch.empty(b, n, 3, h, d, device="cuda", dtype=dtype)
    assert qkv.numel() > 2**31
    for start in range(0, n, 4096):  # filled in pieces: no float32 copy of the whole
        qkv[:, start : start + 4096] = torch.randn(b, 4096, 3, h, d, generator=gen, device="cuda").to(dtype)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    o, lse = flash_attention(q, k, v, return_lse=True)
    sample = torch.randint(0, n, (192,), generator=gen, device="cuda")
    rows = torch.cat([torch.arange(0, 64, device="cuda"), sample, torch.arange(n - 64, n, device="cuda")])
    for head in (0, h // 2, h - 1):
        qh, kh, vh = (t[:, head : head + 1].float() for t in (q, k, v))
        qs = qh[:, :, rows]
        plain_o, plain_lse = attention_reference(qs.to(dtype), kh.to(dtype), vh.to(dtype))
        ref_o, ref_lse = attention_reference(qs, kh, vh)
        got = {"o": o[:, head : head + 1, rows], "lse": lse[:, head : head + 1, rows]}
        plain = {"o": plain_o, "lse": plain_lse}
        assert_within_tolerance(got, plain, {"o": ref_o, "lse": ref_lse}, f"head {head} ")


# Matrix products for at most two minutes, so that the GPU time-slices between two processes.
_OTHER_PROCESS = """
import time, torch
a = torch.randn(4096, 4096, device="cuda")
print("ready", flush=True)
end = time.time() + 120
while time.time() < end:
    for _ in range(10):
        a @ a
    torch.cuda.synchronize()
"""


@pytest.mark.parametrize("head_dim", [64, 80, 128])
def test_every_hopper_candidate_runs_beside_another_process(head_dim: int) -> None:
    """Launches of 10-15 ms while another process computes on the same GPU, so that the kernel is
    preempted and resumed.

    Under Triton 3.8 the two-consumer one-tile kernel faulted (illegal address) every time this happened:
    Triton's allocator had put warp_specialize's captured scalars on mbarriers that were initialised but
    unused (session 20). Each candidate runs three times on a fused (1, 4096, 3, 1024, D) projection; the
    first and last heads are checked on a sample of rows.
    """
    from pathoflash.kernels import attention_hopper as hop

    if not hop.hopper_usable(*(torch.empty(1, 1, 16, head_dim, device="cuda", dtype=torch.bfloat16),) * 3):
        pytest.skip("needs an sm_90 GPU")
    other = subprocess.Popen([sys.executable, "-c", _OTHER_PROCESS], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "ready"
        b, h, n = 1, 1024, 4096
        gen = torch.Generator(device="cuda").manual_seed(head_dim)
        qkv = torch.randn(b, n, 3, h, head_dim, generator=gen, device="cuda").to(torch.bfloat16)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        rows = torch.cat([torch.arange(0, 64), torch.arange(n - 64, n)]).cuda()
        for cfg in hop.CANDIDATES[head_dim]:
            o = torch.empty((b, n, h, head_dim), device="cuda", dtype=q.dtype).permute(0, 2, 1, 3)
            lse = torch.empty((b, h, n), device="cuda")
            for _ in range(3):
                hop._launch(q, k, v, o, lse, head_dim**-0.5, cfg)
            torch.cuda.synchronize()
            assert other.poll() is None, "the other process ended before the launches did"
            for head in (0, h - 1):
                qh, kh, vh = (t[:, head : head + 1] for t in (q, k, v))
                qs = qh[:, :, rows]
                plain_o, plain_lse = attention_reference(qs, kh, vh)
                ref_o, ref_lse = attention_reference(qs.float(), kh.float(), vh.float())
                got = {"o": o[:, head : head + 1, rows], "lse": lse[:, head : head + 1, rows]}
                plain = {"o": plain_o, "lse": plain_lse}
                assert_within_tolerance(got, plain, {"o": ref_o, "lse": ref_lse}, f"{cfg} head {head} ")
    finally:
        other.kill()
        other.wait()
