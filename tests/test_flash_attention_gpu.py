"""GPU tests of ``pathoflash.kernels.flash_attention`` (compiled Triton) at model-sized shapes.

Reference: the plain computation in float32 (true float32 products, no TF32). Tolerance per output: at most
twice the error of the plain computation in the input's own precision, plus a small floor.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import pytest
import torch
from pathoflash.kernels import attention, flash_attention
from pathoflash.kernels.reference import attention_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(attention._INTERPRETED, reason="kernels were imported under TRITON_INTERPRET"),
    pytest.mark.usefixtures("exact_float32"),
]

FLOOR_REL = 2e-4
# Absolute floor: where the exact result is 0 (dQ and dK at N = 1: one key, the softmax is constant) the
# plain computation can be exact too, which made the tolerance 0 and any rounding residue in ours (delta
# and dO·V summed in different orders) a failure. 1e-5 is far below every other output's scale; the size of
# the residue on the GPU was not seen (that run stopped on the N = 1 fault, see benchmarks/RESULTS.md).
FLOOR_ABS = 1e-5

# (B, H, N, D, layout): N = 4097 and 16384 from the issue, plus odd lengths and every tuned head dim.
SHAPES: list[tuple[int, int, int, int, str]] = [
    (2, 3, 4097, 64, "qkv"),
    (1, 2, 16384, 128, "contiguous"),
    (1, 2, 4097, 80, "qkv"),
    (2, 2, 1000, 48, "bnhd"),
    (1, 3, 777, 96, "qkv"),
    (2, 2, 513, 32, "contiguous"),
    (1, 1, 1, 64, "contiguous"),
    (1, 2, 300, 40, "strided"),  # head dims other than the tuned ones run zero-padded
    (1, 2, 1000, 72, "contiguous"),
    (2, 1, 333, 100, "qkv"),
]


def _inputs(b: int, h: int, n: int, d: int, layout: str, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    dev = "cuda"
    if layout == "qkv":
        return tuple(torch.randn(b, n, 3, h, d, device=dev, dtype=dtype).permute(2, 0, 3, 1, 4))
    if layout == "bnhd":
        return tuple(torch.randn(b, n, h, d, device=dev, dtype=dtype).transpose(1, 2) for _ in range(3))
    if layout == "strided":
        return tuple(torch.randn(b, h, n, 2 * d, device=dev, dtype=dtype)[..., ::2] for _ in range(3))
    return tuple(torch.randn(b, h, n, d, device=dev, dtype=dtype) for _ in range(3))


def _grads(fn: object, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, do: torch.Tensor) -> dict:
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    o, lse = fn(q, k, v)  # type: ignore[operator]
    dq, dk, dv = torch.autograd.grad(o, (q, k, v), do.to(o.dtype))
    return {"o": o, "lse": lse, "dq": dq, "dk": dk, "dv": dv}


def assert_within_tolerance(got: dict, plain: dict, exact: dict, label: str = "") -> None:
    """Each of ``exact``'s outputs: ours finite and within twice the plain computation's error plus the floor."""
    for name, ref in exact.items():
        assert torch.isfinite(got[name]).all(), f"{label}{name}: non-finite values"
        err = (got[name].float() - ref).abs().max().item()
        err_plain = (plain[name].float() - ref).abs().max().item()
        tol = 2 * err_plain + FLOOR_REL * ref.abs().max().item() + FLOOR_ABS
        assert err <= tol, (
            f"{label}{name}: max error {err:.3e} > tolerance {tol:.3e} (plain: {err_plain:.3e})"
        )


def _assert_grads_match_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, do: torch.Tensor
) -> None:
    """flash_attention's o, lse and gradients for these inputs within tolerance of the float32 reference."""
    got = _grads(lambda *x: flash_attention(*x, return_lse=True), q, k, v, do)
    plain = _grads(attention_reference, q, k, v, do)
    exact = _grads(attention_reference, q.float(), k.float(), v.float(), do)
    assert_within_tolerance(got, plain, exact)


def _check(b: int, h: int, n: int, d: int, layout: str, dtype: torch.dtype) -> None:
    q, k, v = _inputs(b, h, n, d, layout, dtype)
    do = torch.randn(b, n, h, d, device="cuda", dtype=dtype).transpose(1, 2)
    got = _grads(lambda *x: flash_attention(*x, return_lse=True), q, k, v, do)
    plain = _grads(attention_reference, q, k, v, do)
    exact = _grads(attention_reference, q.float(), k.float(), v.float(), do)
    assert_within_tolerance(got, plain, exact)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s[:4])) + "-" + s[4] for s in SHAPES])
def test_matches_float32_reference(shape: tuple[int, int, int, int, str], dtype: torch.dtype) -> None:
    torch.manual_seed(zlib.crc32(repr(shape).encode()))
    _check(*shape, dtype)


@pytest.mark.parametrize(
    "shape", [(2, 2, 1031, 64, "qkv"), (1, 2, 700, 80, "contiguous")], ids=["d64", "d80"]
)
def test_tma_path_matches_reference(shape: tuple[int, int, int, int, str]) -> None:
    """The tensor-descriptor path (off by default, see PREFER_TMA) on a Hopper card."""
    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("tensor descriptors need compute capability 9.0 or newer")
    attention._tma_override = True
    attention._gluon_override = attention._gluon_bwd_override = False  # the Triton kernels, not Gluon
    try:
        _check(*shape, torch.bfloat16)
    finally:
        attention._tma_override = attention._gluon_override = attention._gluon_bwd_override = None


BACKWARD_SHAPES = [(2, 2, 1031, 64, "qkv"), (1, 2, 700, 80, "contiguous"), (1, 2, 4100, 128, "bnhd")]


@pytest.mark.parametrize("mode", ["twopass", "atomic", "tma-reduce"])
@pytest.mark.parametrize(
    "shape", BACKWARD_SHAPES, ids=["x".join(map(str, s[:4])) + "-" + s[4] for s in BACKWARD_SHAPES]
)
def test_every_backward_path_matches_reference(shape: tuple[int, int, int, int, str], mode: str) -> None:
    """The two-kernel backward and the one-pass one with dQ by atomic adds or by TMA reduce-adds."""
    if mode == "tma-reduce" and torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("TMA reduce-adds need compute capability 9.0 or newer")
    torch.manual_seed(zlib.crc32(repr((shape, mode)).encode()))
    attention._fused_override = mode != "twopass"
    attention._dq_atomic_override = {"twopass": None, "atomic": 1, "tma-reduce": 2}[mode]
    attention._gluon_bwd_override = False
    try:
        _check(*shape, torch.bfloat16)
    finally:
        attention._fused_override = attention._dq_atomic_override = attention._gluon_bwd_override = None


GLUON_BACKWARD_SHAPES = [
    (1, 1, 1, 64, "contiguous"),
    (1, 2, 7, 128, "contiguous"),
    (2, 3, 130, 64, "qkv"),
    (1, 2, 257, 128, "bnhd"),
    (2, 3, 4097, 64, "qkv"),
    (1, 2, 4100, 128, "contiguous"),
    (1, 2, 16384, 64, "bnhd"),
    (2, 3, 4097, 80, "qkv"),  # head dims in two column pieces: 64 + 16, 64 + 32, 32 + 16
    (1, 2, 257, 80, "bnhd"),
    (1, 3, 777, 96, "contiguous"),
    (2, 2, 1000, 48, "qkv"),
    (3, 16, 1000, 128, "qkv"),  # more key tiles than SMs: the persistent kernel runs several a CTA
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize(
    "shape",
    GLUON_BACKWARD_SHAPES,
    ids=["x".join(map(str, s[:4])) + "-" + s[4] for s in GLUON_BACKWARD_SHAPES],
)
def test_gluon_backward_matches_reference(
    shape: tuple[int, int, int, int, str], dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Hopper Gluon backward (attention_hopper_bwd.py), checked to be the path that ran."""
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon backward is for sm_90")
    from pathoflash.kernels import attention_hopper_bwd

    calls: list[tuple[int, ...]] = []

    class Spy(attention_hopper_bwd.BackwardPlan):
        def __call__(self, q: torch.Tensor, *args: Any) -> None:
            calls.append(tuple(q.shape))
            super().__call__(q, *args)

    monkeypatch.setattr(attention_hopper_bwd, "BackwardPlan", Spy)
    monkeypatch.setattr(attention, "_hopper_bwd", None)  # re-imported, so the spy is the one taken
    monkeypatch.setattr(attention, "_bwd_plans", {})
    monkeypatch.setattr(attention, "_gluon_bwd_override", True)
    torch.manual_seed(zlib.crc32(repr((shape, dtype)).encode()))
    _check(*shape, dtype)
    assert calls, "the Gluon backward did not run"


@pytest.mark.parametrize(("head_dim", "persistent"), [(64, True), (128, False)])
def test_the_gluon_backward_not_taken_by_default_matches_reference(head_dim: int, persistent: bool) -> None:
    """The Gluon backward's other kernel at head dims 64 and 128 (persistent at 64, one tile a CTA at 128), on
    more key tiles than SMs and an odd number of query blocks."""
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon backward is for sm_90")
    from pathoflash.kernels.attention_hopper_bwd import BackwardConfig, dq_accumulator, hopper_backward

    torch.manual_seed(head_dim)
    q, k, v = _inputs(3, 16, 2100, head_dim, "qkv", torch.bfloat16)
    do = torch.randn_like(q)
    scale = head_dim**-0.5
    o, lse = attention._forward(q, k, v, scale)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    cfg = BackwardConfig(persistent=persistent)
    acc = dq_accumulator(q, cfg)
    delta = attention._delta(o, do, None, zero=acc)
    hopper_backward(q, k, v, do, lse, delta, dk, dv, scale, cfg, dq_acc=acc)
    attention._dq_cast(acc, scale, dq, cfg.fragments(head_dim))
    exact = _grads(attention_reference, q.float(), k.float(), v.float(), do)
    plain = _grads(attention_reference, q, k, v, do)
    for name, ours in zip(("dq", "dk", "dv"), (dq, dk, dv), strict=True):
        ref = exact[name]
        err = (ours.float() - ref).abs().max().item()
        tol = 2 * (plain[name].float() - ref).abs().max().item() + FLOOR_REL * ref.abs().max().item()
        assert err <= tol + FLOOR_ABS, f"{name}: {err:.3e} > {tol:.3e}"


@pytest.mark.parametrize("head_dim", [64, 80, 128])
def test_every_one_pass_candidate_matches_reference(head_dim: int) -> None:
    """Each tile configuration the autotuner may pick for the one-pass backward, on an odd length."""
    torch.manual_seed(head_dim)
    q, k, v = _inputs(1, 2, 1031, head_dim, "contiguous", torch.bfloat16)
    do = torch.randn_like(q)
    o, lse = attention._forward(q, k, v, head_dim**-0.5)
    exact = _grads(attention_reference, q.float(), k.float(), v.float(), do)
    plain = _grads(attention_reference, q, k, v, do)
    for config in attention.candidate_configs(attention.FUSED_CONFIGS, q.device, head_dim):
        got = attention._backward(q, k, v, o, lse, do, None, head_dim**-0.5, configs=(config, config))
        for name, ours in zip(("dq", "dk", "dv"), got, strict=True):
            ref = exact[name]
            err = (ours.float() - ref).abs().max().item()
            tol = 2 * (plain[name].float() - ref).abs().max().item() + FLOOR_REL * ref.abs().max().item()
            assert err <= tol + FLOOR_ABS, f"{config} {name}: {err:.3e} > {tol:.3e}"


def test_deterministic_mode_gives_bitwise_repeatable_gradients() -> None:
    q, k, v = _inputs(1, 4, 2053, 64, "qkv", torch.bfloat16)
    do = torch.randn(1, 4, 2053, 64, device="cuda", dtype=torch.bfloat16)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first = _grads(lambda *x: flash_attention(*x, return_lse=True), q, k, v, do)
        second = _grads(lambda *x: flash_attention(*x, return_lse=True), q, k, v, do)
    finally:
        torch.use_deterministic_algorithms(previous)
    for name in ("dq", "dk", "dv"):
        assert torch.equal(first[name], second[name]), name


def test_float32_inputs_are_exact() -> None:
    q, k, v = _inputs(1, 2, 600, 64, "qkv", torch.float32)
    got = flash_attention(q, k, v)
    ref, _ = attention_reference(q.double(), k.double(), v.double())
    assert (got.double() - ref).abs().max().item() < 1e-5


def test_output_layout_makes_the_transpose_back_free() -> None:
    q, k, v = _inputs(2, 4, 256, 64, "qkv", torch.float16)
    o = flash_attention(q, k, v)
    assert o.shape == (2, 4, 256, 64)
    assert o.transpose(1, 2).is_contiguous()


HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)
GLUON_SHAPES = [
    (2, 3, 4097, 64, "qkv"),
    (1, 2, 129, 64, "bnhd"),
    (1, 1, 1, 64, "contiguous"),
    (2, 2, 1000, 128, "qkv"),
    (1, 1, 1, 128, "contiguous"),  # one key block: every ring slot's release is drained at the end
    (1, 2, 4100, 128, "contiguous"),
    (1, 2, 4097, 80, "qkv"),  # head dims in two column pieces
    (2, 1, 130, 80, "bnhd"),
    (1, 3, 777, 96, "qkv"),
    (2, 2, 1000, 48, "bnhd"),
    # more query tiles than an H100 has SMs: a persistent CTA takes several, some with idle warpgroups
    (4, 16, 1000, 64, "qkv"),
    (3, 16, 1000, 128, "bnhd"),
    (2, 32, 777, 80, "qkv"),
    (8, 24, 300, 96, "contiguous"),
    (2, 16, 1000, 48, "bnhd"),
    # ViT-sized sequences, where the one-warpgroup kernel is a candidate (32, 64 or 128 keys a step)
    (8, 12, 197, 64, "qkv"),
    (4, 8, 577, 128, "qkv"),
]


@pytest.mark.skipif(not HOPPER, reason="the Gluon forward runs on sm_90 only")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize(
    "shape", GLUON_SHAPES, ids=["x".join(map(str, s[:4])) + "-" + s[4] for s in GLUON_SHAPES]
)
def test_every_hopper_candidate_matches_reference(
    shape: tuple[int, int, int, int, str], dtype: torch.dtype
) -> None:
    """Each configuration the Gluon forward may pick, not only the one the timing picks on this card."""
    from pathoflash.kernels import attention_hopper as hop

    torch.manual_seed(zlib.crc32(repr(shape).encode()))
    b, h, n, d, layout = shape
    q, k, v = _inputs(b, h, n, d, layout, dtype)
    assert hop.hopper_usable(q, k, v)
    exact_o, exact_lse = attention_reference(q.float(), k.float(), v.float())
    plain_o, _ = attention_reference(q, k, v)
    tol = (
        2 * (plain_o.float() - exact_o).abs().max().item()
        + FLOOR_REL * exact_o.abs().max().item()
        + FLOOR_ABS
    )
    for cfg in hop.CANDIDATES[d]:
        o = torch.full((b, n, h, d), float("nan"), device="cuda", dtype=dtype).permute(0, 2, 1, 3)
        lse = torch.full((b, h, n), float("nan"), device="cuda")
        hop.hopper_forward(q, k, v, o, lse, d**-0.5, cfg)
        err = (o.float() - exact_o).abs().max().item()
        assert err <= tol, f"{cfg}: output error {err:.3e} > {tol:.3e}"
        assert (lse - exact_lse).abs().max().item() < 1e-3, f"{cfg}: log-sum-exp"


@pytest.mark.skipif(not HOPPER, reason="the Gluon forward runs on sm_90 only")
def test_flash_attention_takes_the_gluon_forward_on_hopper(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathoflash.kernels import attention_hopper as hop

    calls = []
    original = hop.ForwardPlan.__call__

    def spy(self: Any, *a: Any) -> None:
        calls.append(a[0].shape)
        original(self, *a)

    monkeypatch.setattr(hop.ForwardPlan, "__call__", spy)
    monkeypatch.setattr(attention, "_fwd_plans", {})
    q, k, v = _inputs(1, 2, 300, 64, "qkv", torch.bfloat16)
    with_gluon = flash_attention(q, k, v)
    assert calls == [q.shape]
    monkeypatch.setattr(attention, "_gluon_override", False)
    without = flash_attention(q, k, v)
    assert len(calls) == 1
    assert (with_gluon.float() - without.float()).abs().max().item() < 2e-2


@pytest.mark.parametrize("head_dim", [64, 80, 128])
def test_gluon_backward_takes_the_lse_gradient(head_dim: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loss on the log-sum-exp too (dLSE enters through delta) through the Gluon backward."""
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon backward is for sm_90")
    monkeypatch.setattr(attention, "_gluon_bwd_override", True)
    torch.manual_seed(head_dim)
    q, k, v = _inputs(1, 2, 1031, head_dim, "qkv", torch.bfloat16)
    do = torch.randn(1, 2, 1031, head_dim, device="cuda", dtype=torch.bfloat16)
    dlse = torch.randn(1, 2, 1031, device="cuda", dtype=torch.float32)

    def grads(fn: object, *x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = tuple(t.detach().requires_grad_() for t in x)
        o, lse = fn(*x)  # type: ignore[operator]
        loss = (o.float() * do.float()).sum() + (lse.float() * dlse).sum()
        return torch.autograd.grad(loss, x)

    got = grads(lambda *x: flash_attention(*x, return_lse=True), q, k, v)
    plain = grads(attention_reference, q, k, v)
    exact = grads(attention_reference, q.float(), k.float(), v.float())
    for name, g, p, e in zip(("dq", "dk", "dv"), got, plain, exact, strict=True):
        err = (g.float() - e).abs().max().item()
        tol = 2 * (p.float() - e).abs().max().item() + FLOOR_REL * e.abs().max().item() + FLOOR_ABS
        assert err <= tol, f"{name}: {err:.3e} > {tol:.3e}"


@pytest.mark.parametrize(
    ("n_q", "n_kv", "head_dim"),
    [
        (300, 1000, 64),
        (1000, 77, 64),
        (129, 4100, 128),
        (4097, 200, 128),
        (500, 1500, 80),
        (1500, 70, 96),
        # one query block, more key tiles than SMs: a persistent CTA's tiles are one step each
        (50, 5000, 128),
        (1, 3000, 128),
    ],
)
def test_gluon_backward_with_other_key_lengths(
    n_q: int, n_kv: int, head_dim: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queries and keys of different lengths (cross-attention) through the Gluon backward."""
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon backward is for sm_90")
    monkeypatch.setattr(attention, "_gluon_bwd_override", True)
    torch.manual_seed(n_q * n_kv)
    q = torch.randn(2, 3, n_q, head_dim, device="cuda", dtype=torch.float16)
    k, v = (torch.randn(2, 3, n_kv, head_dim, device="cuda", dtype=torch.float16) for _ in range(2))
    do = torch.randn_like(q)
    got = _grads(lambda *x: flash_attention(*x, return_lse=True), q, k, v, do)
    plain = _grads(attention_reference, q, k, v, do)
    exact = _grads(attention_reference, q.float(), k.float(), v.float(), do)
    for name in ("dq", "dk", "dv"):
        ref = exact[name]
        err = (got[name].float() - ref).abs().max().item()
        tol = 2 * (plain[name].float() - ref).abs().max().item() + FLOOR_REL * ref.abs().max().item()
        assert err <= tol + FLOOR_ABS, f"{name}: {err:.3e} > {tol:.3e}"


@pytest.mark.parametrize("head_dim", [32, 80, 128])
def test_every_triton_tile_configuration_matches_reference(
    head_dim: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every forward, dK/dV and dQ tile of the Triton kernels' tables, the Ampere rows included.

    An A100 autotunes among the ``(False, …)`` rows, which no A100 here has run; on this card they compile
    for its architecture, but the tile logic (row and column masks, the split head dim at 80, the ragged last
    block at N = 1031) is what they share with an A100 build. ``_fused_override`` keeps the backward in two
    kernels, so each dK/dV tile is checked with one dQ tile and the other way round. Passed on an H200
    (2026-11-27, torch 2.11, Triton 3.6) in 72 s, most of it compiling.
    """
    monkeypatch.setattr(attention, "_fused_override", False)
    torch.manual_seed(head_dim)
    q, k, v = _inputs(1, 2, 1031, head_dim, "bnhd", torch.bfloat16)
    do = torch.randn_like(q)
    scale = head_dim**-0.5
    exact = _grads(attention_reference, q.float(), k.float(), v.float(), do)
    plain = _grads(attention_reference, q, k, v, do)

    def check(label: str, got: dict) -> None:
        assert_within_tolerance(got, plain, {name: exact[name] for name in got}, f"{label} ")

    small = head_dim <= 64
    fwd = [c for hopper in (True, False) for c in attention.FWD_CONFIGS[(hopper, small)]]
    for config in dict.fromkeys(fwd):
        o, lse = attention._forward(q, k, v, scale, config)
        check(f"forward {config}", {"o": o, "lse": lse})
    o, lse = attention._forward(q, k, v, scale, attention.FWD_CONFIGS[(False, small)][0])
    dkdv = [c for hopper in (True, False) for c in attention.DKDV_CONFIGS[(hopper, small)]]
    dq = [c for hopper in (True, False) for c in attention.DQ_CONFIGS[(hopper, small)]]
    pairs = [(c, dq[0]) for c in dict.fromkeys(dkdv)] + [(dkdv[0], c) for c in dict.fromkeys(dq[1:])]
    for pair in pairs:
        dq_, dk_, dv_ = attention._backward(q, k, v, o, lse, do, None, scale, configs=pair)
        check(f"backward {pair}", {"dq": dq_, "dk": dk_, "dv": dv_})


@pytest.mark.parametrize("head_dim", [64, 80])
def test_torch_compile_fullgraph_matches_eager(head_dim: int) -> None:
    """A timm-style attention block with the Triton backend under torch.compile (inductor, no graph break),
    training and CUDA-graph inference (``mode="reduce-overhead"``), against the same block run eagerly."""
    import torch._dynamo

    from pathoflash.model.attention import Attention

    torch._dynamo.reset()
    torch.manual_seed(head_dim)
    heads = 4
    module = Attention(heads * head_dim, heads, backend="triton").cuda().to(torch.bfloat16)
    x = torch.randn(2, 1031, heads * head_dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)

    def loss_and_grad(fn: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        out = fn(x)
        (grad,) = torch.autograd.grad(out.float().square().sum(), x)
        return out, grad

    def assert_close(got: torch.Tensor, ref: torch.Tensor, label: str) -> None:
        # bf16 linear layers fused differently by inductor round differently; a wrong attention is O(1) off
        err = (got.float() - ref.float()).abs().max().item() / ref.float().abs().max().item()
        assert err < 2e-2, f"{label}: relative error {err:.2e}"

    eager_out, eager_grad = loss_and_grad(module)
    compiled_out, compiled_grad = loss_and_grad(torch.compile(module, fullgraph=True))
    assert_close(compiled_out, eager_out, "output")
    assert_close(compiled_grad, eager_grad, "input gradient")

    graphed = torch.compile(module, fullgraph=True, mode="reduce-overhead")
    with torch.no_grad():
        reference = module(x)
        for _ in range(3):  # warm-up (tuning happens here), recording, replay
            out = graphed(x).clone()
    assert_close(out, reference, "CUDA-graph inference")

    # The kernel alone: the same kernels run, so compiled and eager agree exactly.
    q, k, v = torch.randn(1, 700, 3, 2, head_dim, device="cuda", dtype=torch.bfloat16).permute(2, 0, 3, 1, 4)
    compiled_fa = torch.compile(lambda *t: flash_attention(*t, return_lse=True), fullgraph=True)
    for got, ref in zip(compiled_fa(q, k, v), flash_attention(q, k, v, return_lse=True), strict=True):
        assert torch.equal(got, ref) and got.stride() == ref.stride()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("head_dim", [32, 64, 128])
def test_tensors_on_another_device_than_the_current_one(head_dim: int) -> None:
    """Kernels launch on the current device; inputs on cuda:1 while cuda:0 is current must still work.

    Without the device guard (``_on_tensor_device``) Triton refused them at every head dim, 32 (Triton
    kernel), 64 and 128 (Gluon): "Pointer argument … cannot be accessed from Triton" (2 × H200, 2026-11-27).
    With it, the three cases here passed on that host.
    """
    torch.cuda.set_device(0)
    dev = torch.device("cuda", 1)
    torch.manual_seed(head_dim)
    q, k, v = torch.randn(2, 1031, 3, 4, head_dim, device=dev, dtype=torch.bfloat16).permute(2, 0, 3, 1, 4)
    do = torch.randn_like(q)
    got = _grads(lambda *x: flash_attention(*x, return_lse=True), q, k, v, do)
    plain = _grads(attention_reference, q, k, v, do)
    exact = _grads(attention_reference, q.float(), k.float(), v.float(), do)
    assert torch.cuda.current_device() == 0
    assert all(t.device == dev for t in got.values())
    assert_within_tolerance(got, plain, exact)


@pytest.mark.skipif(not HOPPER, reason="the Gluon kernels run on sm_90 only")
@pytest.mark.parametrize("head_dim", [64, 80, 128])
def test_repeated_calls_launch_directly_and_stay_correct(
    head_dim: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second forward+backward of a shape launches every kernel directly (``launch.py``), none through
    ``kernel[grid]``, on new inputs of the same shape, and still matches the reference; the forward gives
    the bits Triton's own launch gave."""
    from pathoflash.kernels import launch
    from triton.runtime.jit import JITFunction

    monkeypatch.setattr(attention, "_gluon_bwd_override", True)
    through_triton = []
    original = JITFunction.run

    def counted(self: JITFunction, *args: object, **kwargs: object) -> object:
        through_triton.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(JITFunction, "run", counted)
    monkeypatch.setattr(attention, "_fwd_plans", {})  # new plans: their first launches go through Triton
    monkeypatch.setattr(attention, "_bwd_plans", {})
    torch.manual_seed(head_dim)
    shape = (2, 3, 1031, head_dim, "qkv")
    _check(*shape, torch.bfloat16)  # first: through Triton, keys kept
    assert through_triton
    through_triton.clear()
    q, k, v = _inputs(*shape, torch.bfloat16)
    do = torch.randn(2, 1031, 3, head_dim, device="cuda", dtype=torch.bfloat16).transpose(1, 2)  # as _check's
    got = _grads(lambda *x: flash_attention(*x, return_lse=True), q, k, v, do)
    assert through_triton == [], "a repeated call went through kernel[grid]"
    assert_within_tolerance(
        got,
        _grads(attention_reference, q, k, v, do),
        _grads(attention_reference, q.float(), k.float(), v.float(), do),
    )
    monkeypatch.setattr(launch, "ENABLED", False)
    again = _grads(lambda *x: flash_attention(*x, return_lse=True), q, k, v, do)
    assert through_triton, "with the switch off the launches go through Triton"
    assert torch.equal(got["o"], again["o"]) and torch.equal(got["lse"], again["lse"])


@pytest.mark.skipif(not HOPPER, reason="the Gluon kernels run on sm_90 only")
def test_plans_are_made_once_per_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeated call of one layout reuses its plan (forward and backward); another length or an unaligned
    view gets a plan of its own, and every result still matches the reference."""
    from pathoflash.kernels import attention_hopper as hop

    monkeypatch.setattr(attention, "_fwd_plans", {})
    monkeypatch.setattr(attention, "_bwd_plans", {})
    monkeypatch.setattr(attention, "_gluon_bwd_override", True)
    made: list[tuple[int, ...]] = []
    original = hop.forward_plan

    def spy(*a: Any) -> Any:
        made.append(tuple(a[0].shape))
        return original(*a)

    monkeypatch.setattr(hop, "forward_plan", spy)
    torch.manual_seed(24)
    for n in (300, 300, 300, 301):
        q, k, v = _inputs(1, 2, n, 64, "qkv", torch.bfloat16)
        do = torch.randn_like(q)
        _assert_grads_match_reference(q, k, v, do)
    assert made == [(1, 2, 300, 64), (1, 2, 301, 64)]
    assert len(attention._fwd_plans) == 2 and len(attention._bwd_plans) == 2
    flat = torch.randn(2 * 300 * 64 + 8, device="cuda", dtype=torch.bfloat16)
    unaligned = flat[1 : 1 + 2 * 300 * 64].view(1, 2, 300, 64)  # 2 bytes off: no TMA, the Triton kernel
    out = flash_attention(unaligned, unaligned, unaligned)
    exact, _ = attention_reference(unaligned.float(), unaligned.float(), unaligned.float())
    assert (out.float() - exact).abs().max().item() < 2e-2
    assert len(attention._fwd_plans) == 3 and None in attention._fwd_plans.values()


@pytest.mark.parametrize("head_dim", [32, 64])
def test_repeated_triton_kernel_calls_skip_the_autotuner(
    head_dim: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Triton kernels' path (Ampere, other head dims, or where their backward times faster): once the
    autotuner has chosen, a repeated call launches its choice directly, neither through the autotuner nor
    through ``kernel[grid]``, and still matches the reference."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    monkeypatch.setattr(attention, "_gluon_override", False)
    monkeypatch.setattr(attention, "_gluon_bwd_override", False)
    monkeypatch.setattr(attention, "_tuned_choices", {})
    through: list[str] = []
    for cls, name in ((JITFunction, "jit"), (Autotuner, "autotuner")):
        original = cls.run

        def counted(
            self: Any, *args: Any, _original: Any = original, _name: str = name, **kwargs: Any
        ) -> Any:
            through.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "run", counted)
    torch.manual_seed(head_dim)
    shape = (1, 2, 1031, head_dim, "qkv")
    for _ in range(3):
        through.clear()
        q, k, v = _inputs(*shape, torch.bfloat16)
        do = torch.randn_like(q)
        _assert_grads_match_reference(q, k, v, do)
    assert through == [], f"the third call went through {through}"


_FP_FUSION_PROBE = """
import json

import torch
from triton import knobs
from pathoflash.kernels import attention, flash_attention

assert knobs.language.default_fp_fusion is False  # TRITON_DEFAULT_FP_FUSION=0: Triton's default turned off
seen = []

def record(*, fn, compile, **_):
    seen.append([fn.name, compile["enable_fp_fusion"]])
    return None  # go on and compile

knobs.runtime.jit_cache_hook = record
torch.manual_seed(0)
for gluon in (True, False):  # the Hopper kernels where they apply, then the Triton ones (the autotuner's path)
    attention._gluon_override = attention._gluon_bwd_override = None if gluon else False
    for _ in range(2):  # the second call: plans and direct launches
        q, k, v = (
            torch.randn(1, 2, 300, 64, device="cuda", dtype=torch.float16, requires_grad=True) for _ in range(3)
        )
        flash_attention(q, k, v).sum().backward()
torch.cuda.synchronize()
print(json.dumps(seen))
"""


def test_every_kernel_is_compiled_with_fp_fusion_whatever_tritons_default() -> None:
    """a·b + c as one FMA is what the kernels were written and timed with. Triton 3.9 warns that its default
    turns to off in 3.10; with the default off already (``TRITON_DEFAULT_FP_FUSION=0``), every kernel a
    forward and backward compile, the autotuner's candidates included, still asks for it (a fresh process,
    so that every compile passes Triton's compile hook)."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRITON_DEFAULT_FP_FUSION": "0"}
    env.pop("TRITON_INTERPRET", None)
    done = subprocess.run(
        [sys.executable, "-c", _FP_FUSION_PROBE], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    names = {name for name, _ in seen}
    assert {"_attn_fwd_kernel", "_attn_bwd_dkdv_kernel", "_attn_bwd_dq_kernel"} <= names, names
    assert [entry for entry in seen if entry[1] is not True] == []
