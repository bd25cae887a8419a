"""Exact, memory-linear attention (FlashAttention-2 style) in Triton: forward and backward.

Layout of this file, top to bottom: private ``@triton.jit`` kernels → autotune configurations →
launchers → :class:`_FlashAttentionFunction` (``torch.autograd.Function``) → public :func:`flash_attention`.

The forward keeps one block of queries on chip and streams key/value blocks past it with an online softmax
in base 2 (``exp2``, with ``log2(e)`` folded into the scale). The backward recomputes the probabilities from
the saved log-sum-exp, after a preprocess computing ``delta = rowsum(dO ∘ O)``: one kernel walks every query
block for a stationary key/value block (dK, dV), and either another walks every key/value block for a
stationary query block (dQ), or (the one-pass backward, see ``PREFER_FUSED_BACKWARD``) the first also adds
each block's dS·K into a float32 dQ accumulator. Nothing assumes causal structure, and nothing of size N × N
is ever stored.

Sequence lengths need not be multiples of the block sizes: only the last key block (and the last query
block) is masked. A head dim that is not a power of two is covered by two power-of-two column tiles
(80 = 64 + 16, 48 = 32 + 16, 96 = 64 + 32), so the tuned head dims are read in place, never copied or padded.
Other head dims are zero-padded to the next of those (:func:`exact_head_dim`): the kernels can mask columns,
but on an H100 some configurations computed wrong results with masked column tiles.

Blocks move by pointer loads that Triton pipelines with ``cp.async`` (Ampere and Hopper). A tensor-descriptor
(TMA) path exists for Hopper and newer but is off by default (``PREFER_TMA``): it measured slower here.

On Hopper (sm_90) the forward at head dims 48, 64, 80, 96 and 128 runs instead in ``attention_hopper.py`` (Gluon:
warp-specialised ping-pong with a TMA loader warp, which Triton's compiler cannot express); this file's
forward stays the path for Ampere, other head dims, float32, the CPU interpreter, and the reference. The
backward there may run ``attention_hopper_bwd.py`` instead (one pass, dQ by TMA reduce-adds), where the first
call per length bucket (and batch × heads bucket) times it faster than this file's two-kernel backward
(``_gluon_backward_wins``).
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import triton
import triton.language as tl

from pathoflash.errors import PathoflashError

from .launch import OPTIONS, Site, launch

log = logging.getLogger(__name__)

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
MAX_HEAD_DIM = 128
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def cdiv(a: int, b: int) -> int:
    """⌈a / b⌉ of two ints, for launch grids. ``triton.cdiv`` gives the same, but it is a constexpr function
    whose every host call costs ~3 µs (Triton 3.6 and 3.8), a few per attention call."""
    return -(-a // b)


def pow2_at_least(n: int) -> int:
    """The smallest power of two ≥ ``n`` (n ≥ 1): ``triton.next_power_of_2`` without its 3–6 µs host call."""
    return 1 << (n - 1).bit_length()


def length_bucket(n: int) -> int:
    """The smallest of 1, 2, 3, 4, 6, 8, 12, 16, …, 2ᵏ, 3·2ᵏ⁻¹ that is ≥ ``n``: two buckets an octave, so no
    bucket spans more than 1.5× in length."""
    p = pow2_at_least(n)
    three_quarters = p - p // 4
    return three_quarters if n <= three_quarters else p  # p ≤ 2: three_quarters is p


def choice_key(q: torch.Tensor, k: torch.Tensor) -> tuple[int, torch.dtype, int, int, int]:
    """What a timed choice between kernels (the Gluon forward's candidates, Gluon or Triton backward) is kept
    under: head dim, dtype, :func:`length_bucket` of both lengths and a power-of-two bucket of batch × heads.
    The last (new in session 24) keeps a pick made on a grid of a fraction of a wave, such as a batch-1
    warm-up, from deciding for grids of many waves, where a persistent kernel and one tile a CTA, say, need
    not rank the same. Lengths had power-of-two buckets until session 26, when the candidates came to differ
    within one: at (1, 12, N, 64) the one-warpgroup forward measured 1.11x cuDNN at N = 1,025 and three
    consumers 0.81x, but 1.21x and 1.23x at N = 2,048, so a pick at either length cost up to a quarter at
    the other."""
    return (
        q.shape[3],
        q.dtype,
        length_bucket(q.shape[2]),
        length_bucket(k.shape[2]),
        pow2_at_least(q.shape[0] * q.shape[1]),
    )


def capability(device: torch.device) -> tuple[int, int]:
    """The CUDA compute capability of ``device``, cached: torch's lookup costs tens of microseconds, and every
    call of :func:`flash_attention` asks several times."""
    index = torch.cuda.current_device() if device.index is None else device.index
    return _capability(index)


@functools.cache
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


class AttentionInputError(PathoflashError, ValueError):
    """The tensors handed to :func:`flash_attention` have the wrong shape, dtype or device."""


class AttentionBackendError(PathoflashError, RuntimeError):
    """The kernel cannot run where the tensors live (CPU tensors without the Triton interpreter)."""


# ----------------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------------
# Every (N, D) head is read as tiles of BLOCK rows. The head dim is covered by a tile of HEAD_A columns and,
# when SPLIT, a second tile of HEAD_B columns starting at HEAD_A (80 = 64 + 16, 96 = 64 + 32, 48 = 32 + 16),
# so a head dim that is not a power of two costs 80 columns of work, not 128. Columns ≥ HEAD_DIM read as
# zero. Without SPLIT, HEAD_A is the head dim rounded up to a power of two and HEAD_B is an unused 16.


@triton.jit
def _block_and_head(n_rows, BLOCK: tl.constexpr, H):
    """(block, batch·head, batch, head) of this program in a 1-D grid of cdiv(n_rows, BLOCK) row blocks per
    (batch, head), the blocks of one head adjacent; batch and head as int64 for the stride products."""
    n_blocks = tl.cdiv(n_rows, BLOCK)
    pid_bh = tl.program_id(0) // n_blocks
    return tl.program_id(0) % n_blocks, pid_bh, (pid_bh // H).to(tl.int64), (pid_bh % H).to(tl.int64)


@triton.jit
def _cols_ptrs(
    base, row0, stride_row, stride_col, BLOCK: tl.constexpr, COL0: tl.constexpr, WIDTH: tl.constexpr
):
    """Row and column indices of rows row0 .. row0 + BLOCK, columns COL0 .. COL0 + WIDTH, and their pointers."""
    rows = row0 + tl.arange(0, BLOCK)
    cols = COL0 + tl.arange(0, WIDTH)
    return rows, cols, base + rows[:, None] * stride_row + cols[None, :] * stride_col


@triton.jit
def _load_cols(
    base,
    row0,
    n_rows,
    stride_row,
    stride_col,
    BLOCK: tl.constexpr,
    COL0: tl.constexpr,
    WIDTH: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    MASK_ROWS: tl.constexpr,
):
    """Rows row0 .. row0 + BLOCK, columns COL0 .. COL0 + WIDTH of one head; zero past n_rows or HEAD_DIM."""
    rows, cols, ptrs = _cols_ptrs(base, row0, stride_row, stride_col, BLOCK, COL0, WIDTH)
    if MASK_ROWS:
        if COL0 + WIDTH > HEAD_DIM:
            tile = tl.load(ptrs, mask=(rows[:, None] < n_rows) & (cols[None, :] < HEAD_DIM), other=0.0)
        else:
            tile = tl.load(ptrs, mask=rows[:, None] < n_rows, other=0.0)
    else:
        if COL0 + WIDTH > HEAD_DIM:
            tile = tl.load(ptrs, mask=cols[None, :] < HEAD_DIM, other=0.0)
        else:
            tile = tl.load(ptrs)
    return tile


@triton.jit
def _load_tile(
    desc,
    base,
    row0,
    n_rows,
    stride_row,
    stride_col,
    BLOCK: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_A: tl.constexpr,
    HEAD_B: tl.constexpr,
    SPLIT: tl.constexpr,
    USE_TMA: tl.constexpr,
    MASK_ROWS: tl.constexpr,
):
    """The (a, b) column tiles of rows row0 .. row0 + BLOCK (b is a stand-in unless SPLIT)."""
    if USE_TMA:
        a = desc.load([row0, 0])  # the descriptor's zero fill masks rows and columns
    else:
        a = _load_cols(base, row0, n_rows, stride_row, stride_col, BLOCK, 0, HEAD_A, HEAD_DIM, MASK_ROWS)
    if SPLIT:
        b = _load_cols(base, row0, n_rows, stride_row, stride_col, BLOCK, HEAD_A, HEAD_B, HEAD_DIM, MASK_ROWS)
    else:
        b = a
    return a, b


@triton.jit
def _store_cols(
    base,
    tile,
    row0,
    n_rows,
    stride_row,
    stride_col,
    BLOCK: tl.constexpr,
    COL0: tl.constexpr,
    WIDTH: tl.constexpr,
    HEAD_DIM: tl.constexpr,
):
    rows, cols, ptrs = _cols_ptrs(base, row0, stride_row, stride_col, BLOCK, COL0, WIDTH)
    tl.store(ptrs, tile, mask=(rows[:, None] < n_rows) & (cols[None, :] < HEAD_DIM))


@triton.jit
def _store_tile(
    desc,
    base,
    a,
    b,
    row0,
    n_rows,
    stride_row,
    stride_col,
    BLOCK: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_A: tl.constexpr,
    HEAD_B: tl.constexpr,
    SPLIT: tl.constexpr,
    USE_TMA: tl.constexpr,
):
    """Write the valid rows and columns of the (a, b) tiles back to one (N, HEAD_DIM) head."""
    if USE_TMA:
        desc.store([row0, 0], a)
    else:
        _store_cols(base, a, row0, n_rows, stride_row, stride_col, BLOCK, 0, HEAD_A, HEAD_DIM)
    if SPLIT:
        _store_cols(base, b, row0, n_rows, stride_row, stride_col, BLOCK, HEAD_A, HEAD_B, HEAD_DIM)


@triton.jit
def _atomic_add_cols(
    base,
    tile,
    row0,
    n_rows,
    stride_row,
    stride_col,
    BLOCK: tl.constexpr,
    COL0: tl.constexpr,
    WIDTH: tl.constexpr,
    MASK_ROWS: tl.constexpr,
):
    """Add ``tile`` (float32) into rows row0 .. row0 + BLOCK, columns COL0 .. COL0 + WIDTH; rows past n_rows
    are skipped. The column tiles cover the head dim exactly (see :func:`exact_head_dim`)."""
    rows, _, ptrs = _cols_ptrs(base, row0, stride_row, stride_col, BLOCK, COL0, WIDTH)
    if MASK_ROWS:
        tl.atomic_add(ptrs, tile, mask=rows[:, None] < n_rows, sem="relaxed")
    else:
        tl.atomic_add(ptrs, tile, sem="relaxed")


@triton.jit
def _head_desc(base, n_rows, stride_row, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_A: tl.constexpr):
    """A TMA descriptor over one (n_rows, HEAD_DIM) head; the box is padded to HEAD_A with zeros."""
    return tl.make_tensor_descriptor(
        base, shape=[n_rows, HEAD_DIM], strides=[stride_row, 1], block_shape=[BLOCK, HEAD_A]
    )


@triton.jit
def _dot_nt(x_a, x_b, y_a, y_b, SPLIT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """x · yᵀ summed over the head dim (both column tiles when SPLIT), float32."""
    out = tl.dot(x_a, y_a.T, input_precision=DOT_PRECISION)
    if SPLIT:
        out = tl.dot(x_b, y_b.T, out, input_precision=DOT_PRECISION)
    return out


@triton.jit
def _fwd_step(
    acc_a,
    acc_b,
    l_i,
    m_i,
    q_a,
    q_b,
    k_desc,
    v_desc,
    k_base,
    v_base,
    start_n,
    N_KV,
    stride_kn,
    stride_kd,
    stride_vn,
    stride_vd,
    qk_scale,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_A: tl.constexpr,
    HEAD_B: tl.constexpr,
    SPLIT: tl.constexpr,
    USE_TMA: tl.constexpr,
    MASK_KV: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One key/value block of the online softmax; scores live in base 2 (qk_scale = scale · log2 e)."""
    k_a, k_b = _load_tile(
        k_desc, k_base, start_n, N_KV, stride_kn, stride_kd,
        BLOCK_N, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA, MASK_KV,
    )  # fmt: skip
    qk = _dot_nt(q_a, q_b, k_a, k_b, SPLIT, DOT_PRECISION)  # (BLOCK_M, BLOCK_N)
    if MASK_KV:
        s = qk * qk_scale
        valid = (start_n + tl.arange(0, BLOCK_N)) < N_KV
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
    else:
        # scale ≥ 0, so max(qk) · scale is the max of the scaled scores; one FMA per score below.
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        p = tl.math.exp2(qk * qk_scale - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    v_a, v_b = _load_tile(
        v_desc, v_base, start_n, N_KV, stride_vn, stride_vd,
        BLOCK_N, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA, MASK_KV,
    )  # fmt: skip
    p = p.to(v_a.dtype)
    acc_a = tl.dot(p, v_a, acc_a * alpha[:, None], input_precision=DOT_PRECISION)
    if SPLIT:
        acc_b = tl.dot(p, v_b, acc_b * alpha[:, None], input_precision=DOT_PRECISION)
    return acc_a, acc_b, l_i, m_new


@triton.jit(do_not_specialize=["N_Q", "N_KV", "N_BUCKET"])
def _attn_fwd_kernel(
    Q,
    K,
    V,
    Out,
    LSE,
    stride_qb,
    stride_qh,
    stride_qn,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_ob,
    stride_oh,
    stride_on,
    stride_od,
    H,
    N_Q,
    N_KV,
    N_BUCKET,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    HEAD_A: tl.constexpr,
    HEAD_B: tl.constexpr,
    SPLIT: tl.constexpr,
    USE_TMA: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
):
    # N_BUCKET only keys the autotuner (sequence lengths bucketed to powers of two).
    # 1-D grid, query blocks of one head adjacent (K/V stay in L2)
    pid_m, pid_bh, b, h = _block_and_head(N_Q, BLOCK_M, H)
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    o_base = Out + b * stride_ob + h * stride_oh
    start_m = pid_m * BLOCK_M

    if USE_TMA:
        q_desc = _head_desc(q_base, N_Q, stride_qn, BLOCK_M, HEAD_DIM, HEAD_A)
        k_desc = _head_desc(k_base, N_KV, stride_kn, BLOCK_N, HEAD_DIM, HEAD_A)
        v_desc = _head_desc(v_base, N_KV, stride_vn, BLOCK_N, HEAD_DIM, HEAD_A)
        o_desc = _head_desc(o_base, N_Q, stride_on, BLOCK_M, HEAD_DIM, HEAD_A)
    else:
        q_desc = q_base
        k_desc = k_base
        v_desc = v_base
        o_desc = o_base

    q_a, q_b = _load_tile(
        q_desc, q_base, start_m, N_Q, stride_qn, stride_qd,
        BLOCK_M, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA, True,
    )  # fmt: skip
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc_a = tl.zeros([BLOCK_M, HEAD_A], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK_M, HEAD_B], dtype=tl.float32)

    n_full = (N_KV // BLOCK_N) * BLOCK_N
    if WARP_SPECIALIZE:
        for start_n in tl.range(0, n_full, BLOCK_N, warp_specialize=True):
            acc_a, acc_b, l_i, m_i = _fwd_step(
                acc_a, acc_b, l_i, m_i, q_a, q_b, k_desc, v_desc, k_base, v_base, start_n, N_KV,
                stride_kn, stride_kd, stride_vn, stride_vd, qk_scale,
                BLOCK_N, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA, False, DOT_PRECISION,
            )  # fmt: skip
    else:
        for start_n in range(0, n_full, BLOCK_N):
            acc_a, acc_b, l_i, m_i = _fwd_step(
                acc_a, acc_b, l_i, m_i, q_a, q_b, k_desc, v_desc, k_base, v_base, start_n, N_KV,
                stride_kn, stride_kd, stride_vn, stride_vd, qk_scale,
                BLOCK_N, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA, False, DOT_PRECISION,
            )  # fmt: skip
    if n_full < N_KV:  # only the last key block is masked
        acc_a, acc_b, l_i, m_i = _fwd_step(
            acc_a, acc_b, l_i, m_i, q_a, q_b, k_desc, v_desc, k_base, v_base, n_full, N_KV,
            stride_kn, stride_kd, stride_vn, stride_vd, qk_scale,
            BLOCK_N, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA, True, DOT_PRECISION,
        )  # fmt: skip

    out_dtype = Out.dtype.element_ty
    _store_tile(
        o_desc, o_base, (acc_a / l_i[:, None]).to(out_dtype), (acc_b / l_i[:, None]).to(out_dtype),
        start_m, N_Q, stride_on, stride_od, BLOCK_M, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA,
    )  # fmt: skip
    rows = start_m + tl.arange(0, BLOCK_M)
    lse = (m_i + tl.math.log2(l_i)) * 0.6931471805599453  # natural log
    tl.store(LSE + pid_bh.to(tl.int64) * N_Q + rows, lse, mask=rows < N_Q)


@triton.jit(do_not_specialize=["N_Q", "ZERO_ROWS"])
def _attn_bwd_preprocess_kernel(
    Out,
    DO,
    DLSE,
    DELTA,
    ZERO,
    stride_ob,
    stride_oh,
    stride_on,
    stride_od,
    stride_dob,
    stride_doh,
    stride_don,
    stride_dod,
    H,
    N_Q,
    ZERO_ROWS,
    HEAD_DIM: tl.constexpr,
    HEAD_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    HAS_DLSE: tl.constexpr,
    HAS_ZERO: tl.constexpr,
):
    """delta = rowsum(dO ∘ O) − dLSE (the gradient of the log-sum-exp output enters here); with HAS_ZERO it
    also zeroes the same blocks of ZERO, a contiguous float32 (B, H, ZERO_ROWS, HEAD_DIM) with ZERO_ROWS = N or
    N rounded up to a whole block: the Gluon backward's dQ accumulator, zeroed here instead of by a kernel of
    its own."""
    pid_m, pid_bh, b, h = _block_and_head(N_Q, BLOCK_M, H)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, HEAD_PAD)
    mask = (rows[:, None] < N_Q) & (cols[None, :] < HEAD_DIM)
    o_ptrs = Out + b * stride_ob + h * stride_oh + rows[:, None] * stride_on + cols[None, :] * stride_od
    do_ptrs = DO + b * stride_dob + h * stride_doh + rows[:, None] * stride_don + cols[None, :] * stride_dod
    o = tl.load(o_ptrs, mask=mask, other=0.0)
    do = tl.load(do_ptrs, mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    offs = pid_bh.to(tl.int64) * N_Q + rows
    if HAS_DLSE:
        delta -= tl.load(DLSE + offs, mask=rows < N_Q, other=0.0)
    tl.store(DELTA + offs, delta, mask=rows < N_Q)
    if HAS_ZERO:
        zero_rows = pid_bh.to(tl.int64) * ZERO_ROWS + rows
        zero_ptrs = ZERO + zero_rows[:, None] * HEAD_DIM + cols[None, :]
        zero_mask = (rows[:, None] < ZERO_ROWS) & (cols[None, :] < HEAD_DIM)
        tl.store(zero_ptrs, tl.zeros([BLOCK_M, HEAD_PAD], dtype=tl.float32), mask=zero_mask)


@triton.jit(do_not_specialize=["N_Q", "N_ACC"])
def _dq_cast_kernel(
    ACC,
    DQ,
    scale,
    stride_b,
    stride_h,
    stride_n,
    stride_d,
    H,
    N_Q,
    N_ACC,
    HEAD_DIM: tl.constexpr,
    HEAD_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    FRAGMENTS: tl.constexpr,
):
    """dQ = scale · ACC in dQ's dtype and strides; ACC is a contiguous float32 (B, H, N_ACC, HEAD_DIM). With
    FRAGMENTS (BLOCK_M = 64) each (64, 64) piece of a query block is in the order of the Gluon backward's
    accumulator registers (``attention_hopper_bwd.DQ_FRAGMENTS``): element (m, d) of the piece lies at offset
    d0 + 2·m3 + 4·d1 + 8·d2 + 16·m0 + 32·m1 + 64·m2 + 128·d3 + 256·d4 + 512·d5 + 1024·m4 + 2048·m5 (bits of m, d)."""
    pid_m, pid_bh, b, h = _block_and_head(N_Q, BLOCK_M, H)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, HEAD_PAD)
    mask = (rows[:, None] < N_Q) & (cols[None, :] < HEAD_DIM)
    if FRAGMENTS:
        tl.static_assert(BLOCK_M == 64, "fragment order comes in (64, 64) pieces")
        m = tl.arange(0, BLOCK_M)[:, None]
        d = cols[None, :] % 64
        box_row = ((m >> 2) & 1) | (((d >> 3) & 7) << 1) | (((m >> 4) & 3) << 4)
        box_col = (d & 1) | (((m >> 3) & 1) << 1) | (((d >> 1) & 3) << 2) | ((m & 3) << 4)
        src = (
            (pid_bh.to(tl.int64) * N_ACC + pid_m * BLOCK_M + box_row) * HEAD_DIM
            + (cols[None, :] - d)
            + box_col
        )
    else:
        src = (pid_bh.to(tl.int64) * N_ACC + rows)[:, None] * HEAD_DIM + cols[None, :]
    acc = tl.load(ACC + src, mask=mask)
    dq_ptrs = DQ + b * stride_b + h * stride_h + rows[:, None] * stride_n + cols[None, :] * stride_d
    tl.store(dq_ptrs, (acc * scale).to(DQ.dtype.element_ty), mask=mask)


@triton.jit
def _dkdv_step(
    dk_a,
    dk_b,
    dv_a,
    dv_b,
    k_a,
    k_b,
    v_a,
    v_b,
    q_desc,
    do_desc,
    dq_desc,
    q_base,
    do_base,
    dq_base,
    lse_base,
    delta_base,
    start_m,
    N_Q,
    stride_qn,
    stride_qd,
    stride_don,
    stride_dod,
    stride_dqn,
    stride_dqd,
    qk_scale,
    BLOCK_M: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_A: tl.constexpr,
    HEAD_B: tl.constexpr,
    SPLIT: tl.constexpr,
    USE_TMA: tl.constexpr,
    MASK_Q: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    DQ_ATOMIC: tl.constexpr,
):
    """Add one query block's contribution to dK and dV of a stationary key/value block, and (DQ_ATOMIC)
    this key/value block's contribution dS·K to the query block's float32 dQ accumulator."""
    q_a, q_b = _load_tile(
        q_desc, q_base, start_m, N_Q, stride_qn, stride_qd,
        BLOCK_M, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA, MASK_Q,
    )  # fmt: skip
    rows = start_m + tl.arange(0, BLOCK_M)
    if MASK_Q:
        # Rows past N get lse = +inf, so their probabilities are exactly zero.
        lse2 = tl.load(lse_base + rows, mask=rows < N_Q, other=float("inf")) * 1.4426950408889634
        delta = tl.load(delta_base + rows, mask=rows < N_Q, other=0.0)
    else:
        lse2 = tl.load(lse_base + rows) * 1.4426950408889634
        delta = tl.load(delta_base + rows)
    qk_t = _dot_nt(k_a, k_b, q_a, q_b, SPLIT, DOT_PRECISION)  # (BLOCK_N, BLOCK_M)
    p_t = tl.math.exp2(qk_t * qk_scale - lse2[None, :])
    do_a, do_b = _load_tile(
        do_desc, do_base, start_m, N_Q, stride_don, stride_dod,
        BLOCK_M, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA, MASK_Q,
    )  # fmt: skip
    p_low = p_t.to(do_a.dtype)
    dv_a = tl.dot(p_low, do_a, dv_a, input_precision=DOT_PRECISION)
    if SPLIT:
        dv_b = tl.dot(p_low, do_b, dv_b, input_precision=DOT_PRECISION)
    dp_t = _dot_nt(v_a, v_b, do_a, do_b, SPLIT, DOT_PRECISION)
    ds_t = (p_t * (dp_t - delta[None, :])).to(q_a.dtype)
    dk_a = tl.dot(ds_t, q_a, dk_a, input_precision=DOT_PRECISION)
    if SPLIT:
        dk_b = tl.dot(ds_t, q_b, dk_b, input_precision=DOT_PRECISION)
    if DQ_ATOMIC != 0:
        ds = ds_t.T  # (BLOCK_M, BLOCK_N)
        dq_a = tl.dot(ds, k_a, input_precision=DOT_PRECISION)
        if DQ_ATOMIC == 2:
            dq_desc.atomic_add([start_m, 0], dq_a)  # a TMA reduce; rows past N_Q are dropped
        else:
            _atomic_add_cols(dq_base, dq_a, start_m, N_Q, stride_dqn, stride_dqd, BLOCK_M, 0, HEAD_A, MASK_Q)
        if SPLIT:
            dq_b = tl.dot(ds, k_b, input_precision=DOT_PRECISION)
            _atomic_add_cols(
                dq_base, dq_b, start_m, N_Q, stride_dqn, stride_dqd, BLOCK_M, HEAD_A, HEAD_B, MASK_Q
            )
    return dk_a, dk_b, dv_a, dv_b


@triton.jit(do_not_specialize=["N_Q", "N_KV", "N_BUCKET"])
def _attn_bwd_dkdv_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DK,
    DV,
    DQACC,
    stride_qb,
    stride_qh,
    stride_qn,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_dob,
    stride_doh,
    stride_don,
    stride_dod,
    stride_dkb,
    stride_dkh,
    stride_dkn,
    stride_dkd,
    stride_dvb,
    stride_dvh,
    stride_dvn,
    stride_dvd,
    stride_dqb,
    stride_dqh,
    stride_dqn,
    stride_dqd,
    H,
    N_Q,
    N_KV,
    N_BUCKET,
    qk_scale,
    sm_scale,
    HEAD_DIM: tl.constexpr,
    HEAD_A: tl.constexpr,
    HEAD_B: tl.constexpr,
    SPLIT: tl.constexpr,
    USE_TMA: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    DQ_ATOMIC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """dK and dV of one key/value block; with DQ_ATOMIC also its share of dQ, added into the float32 DQACC
    (1: atomic adds through pointers, 2: TMA reduce-adds), so no second kernel recomputes the scores."""
    pid_n, pid_bh, b, h = _block_and_head(N_KV, BLOCK_N, H)  # 1-D grid, key blocks of one head adjacent
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    do_base = DO + b * stride_dob + h * stride_doh
    dk_base = DK + b * stride_dkb + h * stride_dkh
    dv_base = DV + b * stride_dvb + h * stride_dvh
    dq_base = DQACC + b * stride_dqb + h * stride_dqh
    lse_base = LSE + pid_bh.to(tl.int64) * N_Q
    delta_base = DELTA + pid_bh.to(tl.int64) * N_Q
    start_n = pid_n * BLOCK_N

    if USE_TMA:
        q_desc = _head_desc(q_base, N_Q, stride_qn, BLOCK_M, HEAD_DIM, HEAD_A)
        do_desc = _head_desc(do_base, N_Q, stride_don, BLOCK_M, HEAD_DIM, HEAD_A)
        k_desc = _head_desc(k_base, N_KV, stride_kn, BLOCK_N, HEAD_DIM, HEAD_A)
        v_desc = _head_desc(v_base, N_KV, stride_vn, BLOCK_N, HEAD_DIM, HEAD_A)
        dk_desc = _head_desc(dk_base, N_KV, stride_dkn, BLOCK_N, HEAD_DIM, HEAD_A)
        dv_desc = _head_desc(dv_base, N_KV, stride_dvn, BLOCK_N, HEAD_DIM, HEAD_A)
    else:
        q_desc = q_base
        do_desc = do_base
        k_desc = k_base
        v_desc = v_base
        dk_desc = dk_base
        dv_desc = dv_base
    if DQ_ATOMIC == 2:  # noqa: SIM108 (the interpreter cannot call a jit function inside a conditional expression)
        dq_desc = _head_desc(dq_base, N_Q, stride_dqn, BLOCK_M, HEAD_DIM, HEAD_A)
    else:
        dq_desc = dq_base

    k_a, k_b = _load_tile(
        k_desc, k_base, start_n, N_KV, stride_kn, stride_kd,
        BLOCK_N, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA, True,
    )  # fmt: skip
    v_a, v_b = _load_tile(
        v_desc, v_base, start_n, N_KV, stride_vn, stride_vd,
        BLOCK_N, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA, True,
    )  # fmt: skip
    dk_a = tl.zeros([BLOCK_N, HEAD_A], dtype=tl.float32)
    dk_b = tl.zeros([BLOCK_N, HEAD_B], dtype=tl.float32)
    dv_a = tl.zeros([BLOCK_N, HEAD_A], dtype=tl.float32)
    dv_b = tl.zeros([BLOCK_N, HEAD_B], dtype=tl.float32)

    m_blocks = N_Q // BLOCK_M
    m_full = m_blocks * BLOCK_M
    for i in range(0, m_blocks):
        # With atomic dQ each key block starts at another query block, so that the blocks of one head do not
        # all add into the same dQ rows at once.
        start_m = ((i + pid_n) % m_blocks if DQ_ATOMIC != 0 else i) * BLOCK_M
        dk_a, dk_b, dv_a, dv_b = _dkdv_step(
            dk_a, dk_b, dv_a, dv_b, k_a, k_b, v_a, v_b, q_desc, do_desc, dq_desc, q_base, do_base, dq_base,
            lse_base, delta_base, start_m, N_Q, stride_qn, stride_qd, stride_don, stride_dod, stride_dqn,
            stride_dqd, qk_scale, BLOCK_M, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA, False, DOT_PRECISION,
            DQ_ATOMIC,
        )  # fmt: skip
    if m_full < N_Q:  # only the last query block is masked
        dk_a, dk_b, dv_a, dv_b = _dkdv_step(
            dk_a, dk_b, dv_a, dv_b, k_a, k_b, v_a, v_b, q_desc, do_desc, dq_desc, q_base, do_base, dq_base,
            lse_base, delta_base, m_full, N_Q, stride_qn, stride_qd, stride_don, stride_dod, stride_dqn,
            stride_dqd, qk_scale, BLOCK_M, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA, True, DOT_PRECISION,
            DQ_ATOMIC,
        )  # fmt: skip

    dk_dtype = DK.dtype.element_ty
    dv_dtype = DV.dtype.element_ty
    _store_tile(
        dk_desc, dk_base, (dk_a * sm_scale).to(dk_dtype), (dk_b * sm_scale).to(dk_dtype), start_n, N_KV,
        stride_dkn, stride_dkd, BLOCK_N, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA,
    )  # fmt: skip
    _store_tile(
        dv_desc, dv_base, dv_a.to(dv_dtype), dv_b.to(dv_dtype), start_n, N_KV,
        stride_dvn, stride_dvd, BLOCK_N, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA,
    )  # fmt: skip


@triton.jit
def _dq_step(
    dq_a,
    dq_b,
    q_a,
    q_b,
    do_a,
    do_b,
    lse2,
    delta,
    k_desc,
    v_desc,
    k_base,
    v_base,
    start_n,
    N_KV,
    stride_kn,
    stride_kd,
    stride_vn,
    stride_vd,
    qk_scale,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_A: tl.constexpr,
    HEAD_B: tl.constexpr,
    SPLIT: tl.constexpr,
    USE_TMA: tl.constexpr,
    MASK_KV: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Add one key/value block's contribution to dQ of a stationary query block."""
    k_a, k_b = _load_tile(
        k_desc, k_base, start_n, N_KV, stride_kn, stride_kd,
        BLOCK_N, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA, MASK_KV,
    )  # fmt: skip
    v_a, v_b = _load_tile(
        v_desc, v_base, start_n, N_KV, stride_vn, stride_vd,
        BLOCK_N, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA, MASK_KV,
    )  # fmt: skip
    qk = _dot_nt(q_a, q_b, k_a, k_b, SPLIT, DOT_PRECISION)  # (BLOCK_M, BLOCK_N)
    p = tl.math.exp2(qk * qk_scale - lse2[:, None])
    if MASK_KV:
        valid = (start_n + tl.arange(0, BLOCK_N)) < N_KV
        p = tl.where(valid[None, :], p, 0.0)
    dp = _dot_nt(do_a, do_b, v_a, v_b, SPLIT, DOT_PRECISION)
    ds = (p * (dp - delta[:, None])).to(k_a.dtype)
    dq_a = tl.dot(ds, k_a, dq_a, input_precision=DOT_PRECISION)
    if SPLIT:
        dq_b = tl.dot(ds, k_b, dq_b, input_precision=DOT_PRECISION)
    return dq_a, dq_b


@triton.jit(do_not_specialize=["N_Q", "N_KV", "N_BUCKET"])
def _attn_bwd_dq_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DQ,
    stride_qb,
    stride_qh,
    stride_qn,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_dob,
    stride_doh,
    stride_don,
    stride_dod,
    stride_dqb,
    stride_dqh,
    stride_dqn,
    stride_dqd,
    H,
    N_Q,
    N_KV,
    N_BUCKET,
    qk_scale,
    sm_scale,
    HEAD_DIM: tl.constexpr,
    HEAD_A: tl.constexpr,
    HEAD_B: tl.constexpr,
    SPLIT: tl.constexpr,
    USE_TMA: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_m, pid_bh, b, h = _block_and_head(N_Q, BLOCK_M, H)
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    do_base = DO + b * stride_dob + h * stride_doh
    dq_base = DQ + b * stride_dqb + h * stride_dqh
    start_m = pid_m * BLOCK_M

    if USE_TMA:
        q_desc = _head_desc(q_base, N_Q, stride_qn, BLOCK_M, HEAD_DIM, HEAD_A)
        do_desc = _head_desc(do_base, N_Q, stride_don, BLOCK_M, HEAD_DIM, HEAD_A)
        dq_desc = _head_desc(dq_base, N_Q, stride_dqn, BLOCK_M, HEAD_DIM, HEAD_A)
        k_desc = _head_desc(k_base, N_KV, stride_kn, BLOCK_N, HEAD_DIM, HEAD_A)
        v_desc = _head_desc(v_base, N_KV, stride_vn, BLOCK_N, HEAD_DIM, HEAD_A)
    else:
        q_desc = q_base
        do_desc = do_base
        dq_desc = dq_base
        k_desc = k_base
        v_desc = v_base

    q_a, q_b = _load_tile(
        q_desc, q_base, start_m, N_Q, stride_qn, stride_qd,
        BLOCK_M, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA, True,
    )  # fmt: skip
    do_a, do_b = _load_tile(
        do_desc, do_base, start_m, N_Q, stride_don, stride_dod,
        BLOCK_M, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA, True,
    )  # fmt: skip
    rows = start_m + tl.arange(0, BLOCK_M)
    offs = pid_bh.to(tl.int64) * N_Q + rows
    lse2 = tl.load(LSE + offs, mask=rows < N_Q, other=float("inf")) * 1.4426950408889634
    delta = tl.load(DELTA + offs, mask=rows < N_Q, other=0.0)
    dq_a = tl.zeros([BLOCK_M, HEAD_A], dtype=tl.float32)
    dq_b = tl.zeros([BLOCK_M, HEAD_B], dtype=tl.float32)

    n_full = (N_KV // BLOCK_N) * BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        dq_a, dq_b = _dq_step(
            dq_a, dq_b, q_a, q_b, do_a, do_b, lse2, delta, k_desc, v_desc, k_base, v_base, start_n, N_KV,
            stride_kn, stride_kd, stride_vn, stride_vd, qk_scale,
            BLOCK_N, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA, False, DOT_PRECISION,
        )  # fmt: skip
    if n_full < N_KV:  # only the last key block is masked
        dq_a, dq_b = _dq_step(
            dq_a, dq_b, q_a, q_b, do_a, do_b, lse2, delta, k_desc, v_desc, k_base, v_base, n_full, N_KV,
            stride_kn, stride_kd, stride_vn, stride_vd, qk_scale,
            BLOCK_N, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA, True, DOT_PRECISION,
        )  # fmt: skip

    dq_dtype = DQ.dtype.element_ty
    _store_tile(
        dq_desc, dq_base, (dq_a * sm_scale).to(dq_dtype), (dq_b * sm_scale).to(dq_dtype), start_m, N_Q,
        stride_dqn, stride_dqd, BLOCK_M, HEAD_DIM, HEAD_A, HEAD_B, SPLIT, USE_TMA,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# Configurations and autotuning
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KernelConfig:
    """Tile and schedule of one kernel: BLOCK_M queries × BLOCK_N keys, warps, pipeline depth."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    warp_specialize: bool = False  # forward kernel only

    def kwargs(self, forward: bool) -> dict[str, Any]:
        kw: dict[str, Any] = {"BLOCK_M": self.block_m, "BLOCK_N": self.block_n}
        if forward:
            kw["WARP_SPECIALIZE"] = self.warp_specialize
        return kw

    def triton_config(self, forward: bool) -> triton.Config:
        return triton.Config(self.kwargs(forward), num_warps=self.num_warps, num_stages=self.num_stages)

    @classmethod
    def of(cls, config: triton.Config) -> KernelConfig:
        kw = config.kwargs
        return cls(
            kw["BLOCK_M"],
            kw["BLOCK_N"],
            config.num_warps,
            config.num_stages,
            kw.get("WARP_SPECIALIZE", False),
        )


ConfigTable = dict[tuple[bool, bool], tuple[KernelConfig, ...]]


def _table(rows: dict[tuple[bool, bool], list[tuple[int, int, int, int]]]) -> ConfigTable:
    return {
        key: tuple(KernelConfig(bm, bn, w, s) for bm, bn, w, s in entries) for key, entries in rows.items()
    }


# Candidates per (Hopper or newer?, head dim ≤ 64?): (BLOCK_M, BLOCK_N, num_warps, num_stages); BLOCK_M is
# always the query block, BLOCK_N the key/value block. The autotuner picks among them per (bucketed N, head
# dim, dtype). The Hopper rows are the front-runners of a sweep on an H100 (benchmarks/ATTENTION_NOTES.md);
# the others were not measured (no Ampere card here) and are conservative.
FWD_CONFIGS = _table(
    {
        (True, True): [(128, 64, 8, 3), (128, 64, 4, 3), (128, 64, 4, 4), (64, 64, 4, 3), (256, 64, 8, 3)],
        (True, False): [(128, 128, 8, 3), (128, 64, 8, 3), (128, 64, 8, 4), (64, 64, 4, 3)],
        (False, True): [(128, 64, 4, 3), (128, 32, 4, 3), (64, 64, 4, 3), (64, 32, 4, 4)],
        (False, False): [(128, 64, 8, 2), (128, 32, 4, 3), (64, 64, 4, 3), (64, 32, 4, 3)],
    }
)
DKDV_CONFIGS = _table(
    {
        (True, True): [(64, 64, 4, 3), (32, 128, 4, 3), (32, 64, 4, 4), (64, 128, 8, 3)],
        (True, False): [(64, 128, 8, 3), (32, 64, 4, 4), (64, 128, 8, 2), (32, 128, 8, 3)],
        (False, True): [(32, 128, 4, 3), (64, 64, 4, 3), (32, 64, 4, 3)],
        (False, False): [(32, 128, 8, 2), (64, 64, 4, 2), (32, 64, 4, 3)],
    }
)
DQ_CONFIGS = _table(
    {
        (True, True): [(128, 64, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3)],
        (True, False): [(128, 64, 8, 3), (128, 32, 8, 3), (128, 128, 8, 2), (128, 32, 4, 3)],
        (False, True): [(128, 32, 4, 3), (64, 64, 4, 3), (64, 32, 4, 3)],
        (False, False): [(128, 32, 8, 2), (64, 64, 4, 2), (64, 32, 4, 3)],
    }
)

# The one-pass backward (dK, dV and atomic dQ): start from the dK/dV kernel's candidates; dQ adds a product
# and an accumulator tile per step.
FUSED_CONFIGS = _table(
    {
        # Compiled for sm_90 with Triton 3.6 (benchmarks/compile_sm90.py backward): none of these spills at head
        # dim 64; at 128, 64 × 128 spills 48 bytes and the rest none.
        (True, True): [(64, 128, 8, 3), (64, 128, 8, 2), (64, 64, 4, 3), (64, 64, 8, 3), (32, 64, 4, 4)],
        (True, False): [(32, 128, 8, 3), (64, 64, 8, 3), (64, 128, 8, 3), (64, 128, 8, 2)],
        (False, True): [(32, 128, 4, 3), (64, 64, 4, 3), (32, 64, 4, 3)],
        (False, False): [(32, 128, 8, 2), (64, 64, 4, 2), (32, 64, 4, 3)],
    }
)

# Under the interpreter every program runs in Python: small blocks keep several blocks (and a masked tail)
# in play at the short test lengths, and there is nothing to tune.
_INTERPRETER_CONFIG = KernelConfig(32, 32, 4, 1)
# float32 products run on the CUDA cores (no TF32): small tiles keep the register file from spilling.
_FLOAT32_CONFIG = KernelConfig(64, 32, 4, 2)
_PREPROCESS_BLOCK = 64


def candidate_configs(table: ConfigTable, device: torch.device, head_dim: int) -> tuple[KernelConfig, ...]:
    """The configurations the autotuner tries for this device and head dim."""
    hopper = capability(device)[0] >= 9
    return table[(hopper, head_dim <= 64)]


def _autotuned(
    kernel: Any, table: ConfigTable, forward: bool, key: tuple[str, ...] = (), zeroed: tuple[str, ...] = ()
) -> Any:
    """``kernel`` autotuned over ``table``'s candidates for its device and head dim; ``zeroed`` buffers are
    cleared before every timing run (accumulators that the kernel adds into)."""
    every = list(dict.fromkeys(c for entries in table.values() for c in entries))

    def prune(configs: list[triton.Config], named_args: dict[str, Any], **kwargs: Any) -> list[triton.Config]:
        args = {**named_args, **kwargs}
        device = args["Q"].device
        wanted = candidate_configs(table, device, int(args["HEAD_DIM"]))
        return [c for c in configs if KernelConfig.of(c) in wanted]

    return triton.autotune(
        configs=[c.triton_config(forward) for c in every],
        # + the tensors' dtypes (the autotuner adds them)
        key=["N_BUCKET", "HEAD_DIM", "USE_TMA", "SPLIT", *key],
        prune_configs_by={"early_config_prune": prune},
        reset_to_zero=list(zeroed) or None,
    )(kernel)


_attn_fwd_tuned = _autotuned(_attn_fwd_kernel, FWD_CONFIGS, forward=True)
_attn_bwd_dkdv_tuned = _autotuned(_attn_bwd_dkdv_kernel, DKDV_CONFIGS, forward=False)
_attn_bwd_dq_tuned = _autotuned(_attn_bwd_dq_kernel, DQ_CONFIGS, forward=False)
# The same dK/dV kernel adding dQ too: tuned separately (its best tiles differ), its accumulator zeroed
# between timing runs.
_attn_bwd_fused_tuned = _autotuned(
    _attn_bwd_dkdv_kernel, FUSED_CONFIGS, forward=False, key=("DQ_ATOMIC",), zeroed=("DQACC",)
)


# ----------------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------------

_INTERPRETED = not isinstance(_attn_fwd_kernel, triton.runtime.JITFunction)
# Tensor descriptors (TMA) are supported on Hopper and newer but off by default: on an H100 with Triton 3.6
# the fastest pointer-path forward (cp.async pipelining) beat the fastest TMA one by 4-7% at head dims 64, 80
# and 128, and the backward was level (benchmarks/ATTENTION_NOTES.md). Tests and benchmarks force either path.
PREFER_TMA = False
_tma_override: bool | None = None
_split_override: bool | None = None  # benchmarks: False pads the head dim to a power of two instead
# On sm_90 the forward of head dims 48-128 runs the Gluon kernels of attention_hopper.py (warp-specialised
# ping-pong, 1.0x cuDNN at head dim 128 where this file's kernel reaches 0.8x; 1.1x at 80, was 0.9x).
# PATHOFLASH_GLUON=0 keeps every call on the Triton kernel; benchmarks and tests set ``_gluon_override``.
PREFER_GLUON = os.environ.get("PATHOFLASH_GLUON", "1") != "0"
_gluon_override: bool | None = None
# Two backwards. The two-kernel one (the default) recomputes the scores for dQ in a second kernel (7 matrix
# products per block pair); the one-pass one (PATHOFLASH_FUSED_BACKWARD=1) has the dK/dV kernel also add each
# block's share of dQ into a float32 accumulator (5 products, plus a transpose of dS through shared memory and
# the adds; dQ by TMA reduce-adds on sm_90). On an H100 with Triton 3.6 the one-pass backward was not
# reliably faster: 4–11 % slower at head dims 64 and 80, and at head dim 128 6 % faster in one run and 1–12 %
# slower in the next (benchmarks/RESULTS.md, run 6): Triton serialises every product, so the saved products
# come back as waits. Its adds also make dQ's last bits depend on the order in which blocks finish; under
# torch.use_deterministic_algorithms(True) the two-kernel backward always runs. Tests and benchmarks set
# the overrides.
PREFER_FUSED_BACKWARD = os.environ.get("PATHOFLASH_FUSED_BACKWARD", "0") == "1"
_fused_override: bool | None = None
_dq_atomic_override: int | None = None  # 1 atomic adds, 2 TMA reduce-adds
_hopper: Any = None  # the attention_hopper module once imported; False where Gluon is unavailable
# On sm_90 the backward of head dims 48-128 may run the Gluon kernel of attention_hopper_bwd.py (one
# pass, five products per block pair, the exponentials and dS overlapping the tensor cores, dQ by TMA
# reduce-adds, so never under torch.use_deterministic_algorithms); the first call per length bucket times it
# against the Triton backward and keeps the faster (_gluon_backward_wins). PATHOFLASH_GLUON_BACKWARD=0 keeps
# the Triton backward; tests and benchmarks set ``_gluon_bwd_override`` (True: always Gluon, False: never).
PREFER_GLUON_BACKWARD = os.environ.get("PATHOFLASH_GLUON_BACKWARD", "1") != "0"
_gluon_bwd_override: bool | None = None
_hopper_bwd: Any = None  # (hopper_usable, hopper_backward) once imported; False where they are unavailable
_gluon_bwd_chosen: dict[tuple[int, torch.dtype, int, int, int], bool] = {}
# Calls that record no graph run the forward without autograd's Function.apply (host time; session 22).
# benchmarks/probe_host.py turns it off to time the difference in one process.
_skip_apply_without_grad = True


def _tma_allocator(size: int, alignment: int, stream: int | None) -> torch.Tensor:
    return torch.empty(size, device="cuda", dtype=torch.int8)


def _tma_compatible(t: torch.Tensor) -> bool:
    """Whether every (b, h) slice of a (B, H, N, D) tensor can be described for the TMA engine."""
    size = t.element_size()
    if t.stride(3) != 1 or t.data_ptr() % 16 or (t.shape[3] * size) % 16:
        return False
    if t.stride(2) <= 0 or (t.stride(2) * size) % 16:
        return False
    return all((t.stride(i) * size) % 16 == 0 for i in (0, 1) if t.shape[i] > 1)


def _use_tma(tensors: tuple[torch.Tensor, ...]) -> bool:
    if _tma_override is not None:
        return _tma_override
    if not PREFER_TMA or _INTERPRETED or not hasattr(tl, "make_tensor_descriptor"):
        return False
    q = tensors[0]
    if q.dtype == torch.float32 or capability(q.device)[0] < 9:
        return False
    return all(_tma_compatible(t) for t in tensors)


def _head_pad(head_dim: int) -> int:
    return max(16, pow2_at_least(head_dim))


def head_split(head_dim: int, use_tma: bool = False) -> tuple[int, int, bool]:
    """(HEAD_A, HEAD_B, SPLIT): the column tiles covering the head dim (see the kernels' header)."""
    pad = _head_pad(head_dim)
    head_a = max(16, 1 << (head_dim.bit_length() - 1))  # largest power of two ≤ head_dim
    if use_tma or head_a >= head_dim or _split_override is False:
        return pad, 16, False
    head_b = max(16, pow2_at_least(head_dim - head_a))
    if head_a + head_b >= pad:
        return pad, 16, False
    return head_a, head_b, True


def _common_meta(q: torch.Tensor, use_tma: bool) -> dict[str, Any]:
    head_a, head_b, split = head_split(q.shape[3], use_tma)
    return {
        "HEAD_DIM": q.shape[3],
        "HEAD_A": head_a,
        "HEAD_B": head_b,
        "SPLIT": split,
        "USE_TMA": use_tma,
        # float32 inputs get true float32 products ("ieee"), not TF32: exact attention is the contract.
        "DOT_PRECISION": "ieee" if q.dtype == torch.float32 else "tf32",
    }


def _n_bucket(n_q: int, n_kv: int) -> int:
    return pow2_at_least(max(n_q, n_kv))


def _fwd_launch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    scale: float,
    use_tma: bool,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    heads, n_q, n_kv = q.shape[1], q.shape[2], k.shape[2]
    args = (
        q, k, v, o, lse, *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        heads, n_q, n_kv, _n_bucket(n_q, n_kv), scale * LOG2E,
    )  # fmt: skip
    return args, _common_meta(q, use_tma)


def _dkdv_launch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, do: torch.Tensor, lse: torch.Tensor, delta: torch.Tensor,
    dk: torch.Tensor, dv: torch.Tensor, dq_acc: torch.Tensor | None, dq_atomic: int, scale: float,
    use_tma: bool,
) -> tuple[tuple[Any, ...], dict[str, Any]]:  # fmt: skip
    heads, n_q, n_kv = q.shape[1], q.shape[2], k.shape[2]
    dq_strides = (0, 0, 0, 0) if dq_acc is None else dq_acc.stride()
    args = (
        q, k, v, do, lse, delta, dk, dv, dk if dq_acc is None else dq_acc, *q.stride(), *k.stride(),
        *v.stride(), *do.stride(), *dk.stride(), *dv.stride(), *dq_strides, heads, n_q, n_kv,
        _n_bucket(n_q, n_kv), scale * LOG2E, scale,
    )  # fmt: skip
    return args, {**_common_meta(q, use_tma), "DQ_ATOMIC": dq_atomic}


def _dq_launch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, do: torch.Tensor, lse: torch.Tensor, delta: torch.Tensor,
    dq: torch.Tensor, scale: float, use_tma: bool,
) -> tuple[tuple[Any, ...], dict[str, Any]]:  # fmt: skip
    heads, n_q, n_kv = q.shape[1], q.shape[2], k.shape[2]
    args = (
        q, k, v, do, lse, delta, dq, *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(),
        heads, n_q, n_kv, _n_bucket(n_q, n_kv), scale * LOG2E, scale,
    )  # fmt: skip
    return args, _common_meta(q, use_tma)


def _run(
    kernel: Any,
    tuned: Any,
    args: tuple[Any, ...],
    meta: dict[str, Any],
    *,
    rows: int,
    batch_heads: int,
    block: str,
    forward: bool,
    config: KernelConfig | None,
) -> None:
    """Launch on a 1-D grid of (row blocks × batch·heads): the given config, the interpreter's, or autotuned."""
    if meta["USE_TMA"]:
        # Device-side tensor descriptors need scratch memory; the allocator is per thread (a ContextVar).
        triton.set_allocator(_tma_allocator)
    if config is None and _INTERPRETED:
        config = _INTERPRETER_CONFIG
    elif config is None and meta["DOT_PRECISION"] == "ieee":
        config = _FLOAT32_CONFIG  # float32 is the exact path, not a fast one: nothing to tune
    if config is None:
        # What the autotuner chose for these dtypes, device, ints and switches (its own key is coarser), so
        # that a repeated call skips the autotuner's per-call Python and launches directly.
        memo = (tuned, args[0].dtype, args[0].device, *[a for a in args if type(a) is int], *meta.values())
        config = _tuned_choices.get(memo)
        if config is None:
            tuned[lambda m: (cdiv(rows, m[block]) * batch_heads,)](*args, **meta, **OPTIONS)
            best = getattr(tuned, "best_config", None)
            if best is not None:
                _keep(_tuned_choices, memo, KernelConfig.of(best))
            return
    size = config.block_m if block == "BLOCK_M" else config.block_n
    grid = (cdiv(rows, size) * batch_heads,)
    launch(
        kernel, grid, *args, **meta, **config.kwargs(forward), num_warps=config.num_warps,
        num_stages=config.num_stages,
    )  # fmt: skip


_tuned_choices: dict[tuple[Any, ...], KernelConfig] = {}


_F = TypeVar("_F", bound=Callable[..., Any])


def _on_tensor_device(fn: _F) -> _F:
    """Run ``fn`` with its first argument's CUDA device as the current one.

    Triton and Gluon launch on the current device, not on the tensors': without this, tensors on cuda:1 while
    cuda:0 is current would be handed to kernels running on cuda:0.
    """

    @functools.wraps(fn)
    def on_device(q: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if q.is_cuda and q.device.index != torch.cuda.current_device():
            with torch.cuda.device(q.device):
                return fn(q, *args, **kwargs)
        return fn(q, *args, **kwargs)

    return on_device  # type: ignore[return-value]


@_on_tensor_device
def _forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, config: KernelConfig | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    batch, heads, n_q, head_dim = q.shape
    # Output stored (B, N, H, D) and returned as a (B, H, N, D) view: the usual transpose back to
    # (B, N, H·D) after attention is then free.
    # (new_empty_strided and new_empty are the cheapest allocations on the host: this runs at every call.)
    o = q.new_empty_strided(q.shape, (n_q * heads * head_dim, head_dim, heads * head_dim, 1))
    lse = q.new_empty((batch, heads, n_q), dtype=torch.float32)
    if config is None and _gluon_forward(q, k, v, o, lse, scale):
        return o, lse
    use_tma = _use_tma((q, k, v, o))
    log.debug("flash_attention forward %s %s tma=%s", tuple(q.shape), q.dtype, use_tma)
    args, meta = _fwd_launch(q, k, v, o, lse, scale, use_tma)
    _run(
        _attn_fwd_kernel, _attn_fwd_tuned, args, meta,
        rows=n_q, batch_heads=batch * heads, block="BLOCK_M", forward=True, config=config,
    )  # fmt: skip
    return o, lse


# Plans: what a Gluon call works out once per signature of its tensors (_signature), so that a repeated call
# only allocates, builds descriptors and launches. Host time is what limits a call at batch-1 sizes (an H100
# spent ~100 µs of host time on a forward whose kernel runs ~55 µs: ATTENTION_NOTES "Session 24").
MAX_PLANS = 256  # per direction; past that many the cache starts over
_fwd_plans: dict[tuple[Any, ...], Any] = {}
_bwd_plans: dict[tuple[Any, ...], Any] = {}
_MISSING = object()


def _signature(*tensors: torch.Tensor) -> tuple[Any, ...]:
    """What a plan is keyed on: each tensor's dtype, shape, strides and whether its data is 16-byte aligned,
    and the device. That fixes every kernel, grid and non-data argument of the launches (``launch.Site``
    relies on it): Triton specialises on dtypes, ints and alignment, never on the data."""
    key: list[Any] = [tensors[0].device]
    for t in tensors:
        key += (t.dtype, t.shape, t.stride(), t.data_ptr() % 16 == 0)
    return tuple(key)


def _keep(plans: dict[tuple[Any, ...], Any], key: tuple[Any, ...], plan: Any) -> None:
    if len(plans) >= MAX_PLANS:
        plans.clear()  # a model has a few shapes: past that many, start over
    plans[key] = plan


def _gluon_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor, scale: float
) -> bool:
    """Run the Hopper Gluon forward where it applies; False leaves the call to the Triton kernel."""
    global _hopper
    wanted = PREFER_GLUON if _gluon_override is None else _gluon_override
    if not wanted or _INTERPRETED or not q.is_cuda or _hopper is False:
        return False
    if _hopper is None:
        try:
            from pathoflash.kernels import attention_hopper
        except Exception as exc:  # an older or newer Triton without this Gluon API: the Triton kernel stays
            log.warning(
                "Gluon attention unavailable (%s: %s); using the Triton kernel", type(exc).__name__, exc
            )
            _hopper = False
            return False
        _hopper = attention_hopper
    key = _signature(q, k, v)
    plan = _fwd_plans.get(key, _MISSING)
    try:
        if plan is _MISSING:
            usable = _hopper.hopper_usable(q, k, v)
            plan = _hopper.forward_plan(q, k, v, o, lse, scale) if usable else None
            log.debug("flash_attention forward %s %s: gluon %s", tuple(q.shape), q.dtype, plan and plan.cfg)
            _keep(_fwd_plans, key, plan)
        if plan is None:
            return False
        plan(q, k, v, o, lse, scale)
    except triton.CompilationError as exc:  # a Triton whose Gluon differs from the 3.6 this was written for
        log.warning("Gluon attention failed to compile (%s); using the Triton kernel", exc)
        _hopper = False
        return False
    return True


def _dq_atomic_mode(q: torch.Tensor) -> int:
    """How the backward makes dQ: 0 in a second kernel, 1 by atomic adds, 2 by TMA reduce-adds (sm_90+)."""
    fused = PREFER_FUSED_BACKWARD if _fused_override is None else _fused_override
    if not fused or torch.are_deterministic_algorithms_enabled():
        return 0
    if _dq_atomic_override is not None:
        return _dq_atomic_override
    if _INTERPRETED or q.device.type != "cuda" or not hasattr(tl, "make_tensor_descriptor"):
        return 1
    return 2 if capability(q.device)[0] >= 9 else 1


class _GluonBackward:
    """The Gluon backward at one signature (:func:`_signature`): delta (which also zeroes the dQ accumulator),
    the one-pass kernel, and the dQ cast, each launch bound once (``launch.Site``)."""

    __slots__ = ("cast", "contiguous_do", "delta", "kernel")

    def __init__(self, q: torch.Tensor, kernel: Any, dlse_given: bool, contiguous_do: bool) -> None:
        batch, heads, n_q, head_dim = q.shape
        grid = (cdiv(n_q, _PREPROCESS_BLOCK) * batch * heads,)
        common = {"HEAD_DIM": head_dim, "HEAD_PAD": _head_pad(head_dim), "BLOCK_M": _PREPROCESS_BLOCK}
        self.delta = Site(_attn_bwd_preprocess_kernel, grid, **common, HAS_DLSE=dlse_given, HAS_ZERO=True)
        self.cast = Site(_dq_cast_kernel, grid, **common, FRAGMENTS=kernel.cfg.fragments(head_dim))
        self.kernel = kernel  # attention_hopper_bwd.BackwardPlan
        self.contiguous_do = contiguous_do

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor,
        do: torch.Tensor, dlse: torch.Tensor | None, dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor,
        scale: float,
    ) -> None:  # fmt: skip
        batch, heads, n_q, _ = q.shape
        if self.contiguous_do:
            do = do.contiguous()  # e.g. an expanded gradient with zero strides
        acc = self.kernel.accumulator(q)  # dQ / scale, summed by the kernel
        delta = q.new_empty((batch, heads, n_q), dtype=torch.float32)
        if dlse is not None:
            dlse = dlse.to(torch.float32).contiguous()
        rows = delta if dlse is None else dlse
        n_acc = acc.shape[2]
        self.delta(o, do, rows, delta, acc, *o.stride(), *do.stride(), heads, n_q, n_acc)  # zeroes acc too
        self.kernel(q, k, v, do, lse, delta, dk, dv, scale, acc)
        self.cast(acc, dq, scale, *dq.stride(), heads, n_q, n_acc)


def _gluon_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    do: torch.Tensor,
    dlse: torch.Tensor | None,
    dq: torch.Tensor,
    dk: torch.Tensor,
    dv: torch.Tensor,
    scale: float,
) -> _GluonBackward | None:
    """The Hopper Gluon backward for tensors like these (a call writes dq, dk, dv), or None where it does not
    apply: not sm_90 or not a head dim/dtype/stride it takes, the switch off, deterministic mode, or the Triton
    backward timed faster in this bucket (:func:`_gluon_backward_wins`). Planned once per signature."""
    global _hopper_bwd
    wanted = PREFER_GLUON_BACKWARD if _gluon_bwd_override is None else _gluon_bwd_override
    if not wanted or _INTERPRETED or not q.is_cuda or _hopper_bwd is False:
        return None
    if torch.are_deterministic_algorithms_enabled():  # its dQ adds land in no fixed order
        return None
    if _hopper_bwd is None:
        try:
            from pathoflash.kernels import attention_hopper, attention_hopper_bwd
        except Exception as exc:  # a Triton without this Gluon API: the Triton backward stays
            log.warning("Gluon backward unavailable (%s: %s); using Triton's", type(exc).__name__, exc)
            _hopper_bwd = False
            return None
        _hopper_bwd = (attention_hopper.hopper_usable, attention_hopper_bwd.BackwardPlan)
    key = (*_signature(q, k, v, o, do), _gluon_bwd_override)
    if dlse is not None:
        key += _signature(dlse)
    plan = _bwd_plans.get(key, _MISSING)
    if plan is _MISSING:
        plan = _plan_gluon_backward(q, k, v, o, lse, do, dlse, dq, dk, dv, scale)
        _keep(_bwd_plans, key, plan)
    return plan  # type: ignore[no-any-return]


def _plan_gluon_backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor, do: torch.Tensor,
    dlse: torch.Tensor | None, dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor, scale: float,
) -> _GluonBackward | None:  # fmt: skip
    usable, backward_plan = _hopper_bwd
    if not usable(q, k, v):
        return None
    contiguous_do = not usable(do, dk, dv)
    if contiguous_do and not usable(do.contiguous(), dk, dv):
        return None
    plan = _GluonBackward(q, backward_plan(q, k), dlse is not None, contiguous_do)

    def gluon() -> None:  # each timed as a whole, delta included
        plan(q, k, v, o, lse, do, dlse, dq, dk, dv, scale)

    def triton_backward() -> None:
        _triton_path(q, k, v, o, lse, do, dlse, dq, dk, dv, scale, None)

    if not _gluon_backward_wins(q, k, gluon, triton_backward):
        return None
    log.debug("flash_attention backward %s %s: gluon", tuple(q.shape), q.dtype)
    return plan


def _gluon_backward_wins(
    q: torch.Tensor, k: torch.Tensor, gluon: Callable[[], None], triton_backward: Callable[[], None]
) -> bool:
    """Whether the Gluon backward is the one to run: always when forced (``_gluon_bwd_override``), else the
    faster of the two, timed at the first call per :func:`choice_key`.

    Neither wins everywhere on an H100: the Gluon kernel is 1.1–1.2× the Triton backward at 16k tokens and
    level at 4,096, but 5–8 % slower at 4,100 (a key block of 4 rows runs a whole pass; RESULTS.md).
    """
    global _hopper_bwd
    if _gluon_bwd_override:
        return True
    key = choice_key(q, k)
    if key not in _gluon_bwd_chosen:
        from pathoflash.kernels.attention_hopper import fastest

        try:
            _gluon_bwd_chosen[key] = fastest({"gluon": gluon, "triton": triton_backward}) == "gluon"
        except triton.CompilationError as exc:  # a Triton whose Gluon differs from the 3.6 it was written for
            log.warning("Gluon backward failed to compile (%s); using Triton's", exc)
            _hopper_bwd = False
            return False
    return _gluon_bwd_chosen[key]


@_on_tensor_device
def _backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    do: torch.Tensor,
    dlse: torch.Tensor | None,
    scale: float,
    configs: tuple[KernelConfig, KernelConfig] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if configs is None:
        gluon = _gluon_backward(q, k, v, o, lse, do, dlse, dq, dk, dv, scale)
        if gluon is not None:
            gluon(q, k, v, o, lse, do, dlse, dq, dk, dv, scale)
            return dq, dk, dv
    _triton_path(q, k, v, o, lse, do, dlse, dq, dk, dv, scale, configs)
    return dq, dk, dv


def _triton_path(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor, do: torch.Tensor,
    dlse: torch.Tensor | None, dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor, scale: float,
    configs: tuple[KernelConfig, KernelConfig] | None,
) -> None:  # fmt: skip
    """The Triton backward: delta, then dK/dV and dQ by this file's kernels."""
    use_tma = _use_tma((q, k, v, dq, dk, dv))
    if use_tma and _tma_override is None and not _tma_compatible(do):
        do = do.contiguous()  # e.g. an expanded gradient with zero strides
        use_tma = _tma_compatible(do)
    log.debug("flash_attention backward %s %s tma=%s", tuple(q.shape), q.dtype, use_tma)
    _triton_backward(q, k, v, do, lse, _delta(o, do, dlse), dq, dk, dv, scale, configs, use_tma)


def _delta(
    o: torch.Tensor, do: torch.Tensor, dlse: torch.Tensor | None, zero: torch.Tensor | None = None
) -> torch.Tensor:
    """rowsum(dO ∘ O) − dLSE as a contiguous float32 (B, H, N), by one Triton kernel, which also zeroes
    ``zero`` (a contiguous float32 dQ accumulator: ``o``'s shape, or N rounded up to a block) where given."""
    batch, heads, n_q, head_dim = o.shape
    delta = torch.empty((batch, heads, n_q), device=o.device, dtype=torch.float32)
    if dlse is not None:
        dlse = dlse.to(torch.float32).contiguous()
    pre_grid = (cdiv(n_q, _PREPROCESS_BLOCK) * batch * heads,)
    launch(
        _attn_bwd_preprocess_kernel, pre_grid, o, do, delta if dlse is None else dlse, delta,
        delta if zero is None else zero, *o.stride(), *do.stride(), heads, n_q,
        n_q if zero is None else zero.shape[2], HEAD_DIM=head_dim,
        HEAD_PAD=_head_pad(head_dim), BLOCK_M=_PREPROCESS_BLOCK, HAS_DLSE=dlse is not None, HAS_ZERO=zero is not None,
    )  # fmt: skip
    return delta


def _dq_cast(acc: torch.Tensor, scale: float, dq: torch.Tensor, fragments: bool = False) -> None:
    """dq = scale · acc (a contiguous float32 dQ accumulator, in fragment order where ``fragments``:
    ``attention_hopper_bwd.dq_accumulator``) in dq's dtype and strides, by one Triton kernel: 2.2-2.6 TB/s on an
    H100, where torch.mul(acc, scale, out=dq) moved 2.0-2.3 (RESULTS.md run 12)."""
    batch, heads, n_q, head_dim = dq.shape
    grid = (cdiv(n_q, _PREPROCESS_BLOCK) * batch * heads,)
    launch(
        _dq_cast_kernel, grid, acc, dq, scale, *dq.stride(), heads, n_q, acc.shape[2], HEAD_DIM=head_dim,
        HEAD_PAD=_head_pad(head_dim), BLOCK_M=_PREPROCESS_BLOCK, FRAGMENTS=fragments,
    )  # fmt: skip


def _triton_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    do: torch.Tensor,
    lse: torch.Tensor,
    delta: torch.Tensor,
    dq: torch.Tensor,
    dk: torch.Tensor,
    dv: torch.Tensor,
    scale: float,
    configs: tuple[KernelConfig, KernelConfig] | None,
    use_tma: bool,
) -> None:
    """dq, dk, dv by the Triton kernels: two (dK/dV, then dQ), or one with dQ adds (``_dq_atomic_mode``)."""
    batch, heads, n_q, head_dim = q.shape
    n_kv = k.shape[2]
    dkdv_config, dq_config = (None, None) if configs is None else configs
    dq_atomic = _dq_atomic_mode(q)
    if dq_atomic:
        # One pass: the dK/dV kernel also adds every block's dS·K into a float32 accumulator.
        dq_acc = torch.zeros((batch, heads, n_q, head_dim), device=q.device, dtype=torch.float32)
        if dq_atomic == 2:
            triton.set_allocator(_tma_allocator)  # the accumulator's descriptor is made on the device
        args, meta = _dkdv_launch(q, k, v, do, lse, delta, dk, dv, dq_acc, dq_atomic, scale, use_tma)
        _run(
            _attn_bwd_dkdv_kernel, _attn_bwd_fused_tuned, args, meta,
            rows=n_kv, batch_heads=batch * heads, block="BLOCK_N", forward=False, config=dkdv_config,
        )  # fmt: skip
        dq.copy_(dq_acc.mul_(scale))
        return
    args, meta = _dkdv_launch(q, k, v, do, lse, delta, dk, dv, None, 0, scale, use_tma)
    _run(
        _attn_bwd_dkdv_kernel, _attn_bwd_dkdv_tuned, args, meta,
        rows=n_kv, batch_heads=batch * heads, block="BLOCK_N", forward=False, config=dkdv_config,
    )  # fmt: skip
    args, meta = _dq_launch(q, k, v, do, lse, delta, dq, scale, use_tma)
    _run(
        _attn_bwd_dq_kernel, _attn_bwd_dq_tuned, args, meta,
        rows=n_q, batch_heads=batch * heads, block="BLOCK_M", forward=False, config=dq_config,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# Autograd and the public function
# ----------------------------------------------------------------------------------------------------------


def _unit_stride(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself if its last dim is unit-stride, else a copy that is.

    The kernels read each row of a head as one contiguous vector, as every layout a model makes (views of a
    fused qkv projection included) already is. Others, such as every other column of a wider tensor or the
    zero-stride gradient of ``o.sum()``, are copied: O(N·D) once. Reading them in place is slow (no vector
    loads) and, on an H100 with Triton 3.6, one dK/dV configuration (32 × 128, 4 warps, 3 stages) faulted
    with an illegal address at head dim 40 with column stride 2 (benchmarks/ATTENTION_NOTES.md, session 3).
    """
    if t.stride(-1) == 1:
        return t
    return torch.empty_like(t, memory_format=torch.contiguous_format).copy_(t)


# Head dims the column tiles cover exactly (see head_split): no column of any tile is masked.
EXACT_HEAD_DIMS = (16, 32, 48, 64, 80, 96, 128)


def exact_head_dim(head_dim: int) -> int:
    """The head dim the kernels run at: ``head_dim`` itself, or the next one the tiles cover exactly.

    On an H100 with Triton 3.6, forward configurations that read a masked column tile returned errors of
    0.24–0.26 (head dim 40: 64 × 64 / 4 warps; head dim 72: 64 × 64 / 4 warps and 128 × 128 / 8 warps),
    while every configuration at head dims 48, 80 and 96 (nothing masked) was within 2.1e-3 of the float32
    reference (benchmarks/probe_accuracy.py, 2026-11-25). Other head dims are therefore zero-padded to the
    next exact one: zero columns of q and k add nothing to the scores and those of v only to output columns
    that are cut off, so the result is unchanged.
    """
    return next(width for width in EXACT_HEAD_DIMS if width >= head_dim)


def _prepared(t: torch.Tensor, width: int) -> torch.Tensor:
    """``t`` with a unit-stride last dim and exactly ``width`` columns (zero-padded copies where needed)."""
    if t.shape[-1] == width:
        return _unit_stride(t)
    return torch.nn.functional.pad(t, (0, width - t.shape[-1]))


def _forward_padded(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor, torch.Tensor]:
    """The inputs as the kernels take them (:func:`_prepared`), and ``o`` and ``lse`` at that width."""
    width = exact_head_dim(q.shape[3])
    prepared = (_prepared(q, width), _prepared(k, width), _prepared(v, width))
    o, lse = _forward(*prepared, scale)
    return prepared, o, lse


class _FlashAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        head_dim = q.shape[3]
        (q, k, v), o, lse = _forward_padded(q, k, v, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.scale, ctx.head_dim = scale, head_dim
        ctx.set_materialize_grads(False)
        return (o if o.shape[3] == head_dim else o[..., :head_dim]), lse

    @staticmethod
    @torch.autograd.function.once_differentiable  # a second derivative: a clear error, not a missing path
    def backward(  # type: ignore[override]
        ctx: Any, do: torch.Tensor | None, dlse: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        q, k, v, o, lse = ctx.saved_tensors
        do = torch.zeros_like(o) if do is None else _prepared(do, o.shape[3])
        dq, dk, dv = _backward(q, k, v, o, lse, do, dlse, ctx.scale)
        head_dim = ctx.head_dim
        if dq.shape[3] == head_dim:
            return dq, dk, dv, None
        return dq[..., :head_dim], dk[..., :head_dim], dv[..., :head_dim], None


def default_scale(head_dim: int) -> float:
    """``1 / sqrt(head_dim)``, the scale when none is given."""
    return 1.0 / math.sqrt(head_dim)


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise AttentionInputError(f"{name} must be a 4-D tensor shaped (B, H, N, D), got {_describe(t)}")
        if t.dtype not in SUPPORTED_DTYPES:
            raise AttentionInputError(f"{name} has dtype {t.dtype}; use float16, bfloat16 or float32")
    if not (q.dtype == k.dtype == v.dtype):
        raise AttentionInputError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise AttentionInputError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise AttentionInputError(
            f"shapes do not fit: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; "
            "expected q (B, H, N, D) and k, v (B, H, N_kv, D)"
        )
    batch, heads, n_q, head_dim = q.shape
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise AttentionInputError(f"head dim {head_dim} is not supported; use 1 to {MAX_HEAD_DIM}")
    if batch < 1 or heads < 1 or n_q < 1 or k.shape[2] < 1:
        raise AttentionInputError(
            f"empty input: q {tuple(q.shape)}, k {tuple(k.shape)}; every size must be ≥ 1"
        )


def _check_backend(q: torch.Tensor) -> None:
    if _INTERPRETED:
        if q.dtype == torch.bfloat16:
            raise AttentionBackendError(
                "bfloat16 is not supported under the Triton interpreter (its tl.dot multiplies bfloat16 bit "
                "patterns, triton-lang/triton#11584); use float16 or float32 on CPU"
            )
    elif q.device.type == "cpu":
        raise AttentionBackendError(
            "flash_attention got CPU tensors: the Triton kernel runs on CPU only under the Triton interpreter "
            "(set TRITON_INTERPRET=1 before pathoflash.kernels is first imported); otherwise move the tensors "
            "to a CUDA device or use the 'sdpa' or 'eager' attention backend"
        )
    elif q.device.type != "cuda":
        raise AttentionBackendError(
            f"flash_attention runs on CUDA devices (or on CPU under the Triton interpreter), not on {q.device}"
        )


def _describe(t: object) -> str:
    return f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Exact non-causal attention, ``softmax(q kᵀ · scale) v``, in memory linear in the sequence length.

    Args:
        q: queries, ``(B, H, N, D)``; any strides. Where the last dim is unit-stride (a view of a fused
            qkv projection such as ``qkv.view(B, N, 3, H, D).permute(2, 0, 3, 1, 4)[0]``) it is read in
            place, never copied; other layouts are copied to a unit-stride one first.
        k: keys, ``(B, H, N_kv, D)``; usually ``N_kv == N``.
        v: values, ``(B, H, N_kv, D)``.
        scale: multiplies the scores; ``None`` means ``1 / sqrt(D)``. Must be finite and ≥ 0.
        return_lse: also return the natural log-sum-exp of the scaled scores, ``(B, H, N)`` float32.

    Returns:
        ``o`` of shape ``(B, H, N, D)`` in the input dtype (a view of a ``(B, N, H, D)``-contiguous buffer,
        so ``o.transpose(1, 2).reshape(B, N, H * D)`` costs nothing), or ``(o, lse)``. Both are
        differentiable; the backward gives dq, dk, dv in the input dtype.

    Any N ≥ 1 and head dims 1 to 128 work. Head dims 16, 32, 48, 64, 80, 96 and 128 run as they are; others
    are first copied into zero-padded tensors of the next of these (same result, see :func:`exact_head_dim`),
    and their ``o`` is a column slice of the padded output. float16 and
    bfloat16 run on the tensor cores with float32 accumulation and a float32 softmax. float32 inputs are
    computed in true float32 (``input_precision="ieee"``, not TF32): exact but several times slower,
    meant for CPU tests and references. CUDA tensors run compiled; CPU tensors only under the Triton
    interpreter (``TRITON_INTERPRET=1`` set before this module is imported), which does not support bfloat16.

    Under ``torch.compile`` it runs as the custom operator ``torch.ops.pathoflash.flash_attention`` (same
    kernels, no graph break; ``fullgraph=True`` works).

    Raises:
        AttentionInputError: wrong rank, shapes, dtype, scale, or tensors on different devices.
        AttentionBackendError: CPU tensors without the Triton interpreter, or a non-CUDA device.
    """
    _check_inputs(q, k, v)
    if scale is not None:
        scale = float(scale)
        if not math.isfinite(scale) or scale < 0:
            raise AttentionInputError(f"scale must be finite and ≥ 0, got {scale}")
    _check_backend(q)
    if torch.compiler.is_compiling():
        # Dynamo cannot trace the launchers: under torch.compile the same work runs as a custom operator
        # (attention_op.py), which a compiled graph holds without a break. It resolves the default scale
        # itself, where the head dim is a number even when the compiler traces it as a symbol.
        o, lse = torch.ops.pathoflash.flash_attention(q, k, v, scale)
    else:
        scale = default_scale(q.shape[3]) if scale is None else scale
        graph = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
        if graph or not _skip_apply_without_grad:
            o, lse = _FlashAttentionFunction.apply(q, k, v, scale)
        else:  # inference: no graph to record, and autograd's apply costs host time at every call
            _, o, lse = _forward_padded(q, k, v, scale)
            o = o if o.shape[3] == q.shape[3] else o[..., : q.shape[3]]
    return (o, lse) if return_lse else o
