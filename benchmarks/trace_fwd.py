"""Experiment record (session 14, removed in the next commit): cycle stamps inside the head-dim-128 forwards.

    source benchmarks/device_setup.sh
    python3 benchmarks/trace_fwd.py --bench --shapes "4,8,4096,128;1,8,16384,128" \
        --trace one:trace,persistent:trace --bench-modes one:plain,persistent:plain --json out.json

Copies of the ping-pong consumers (one tile a CTA, ``one``; persistent, ``persistent``; D = 128, no column
split) whose warpgroups write ``%clock64`` at the top of every key step, after the K and V waits and after
taking the turn (``trace`` modes), so the analysis gets cycles per step (median, quantiles), the waits, the
per-tile start and end, and the ping-pong's phase (the second consumer's GEMM issue minus the first's, same
step). Variants measured with it (ATTENTION_NOTES.md, "Session 14"): ablations of the softmax (``abl1``–
``abl4``: no softmax, no row max, no rescale, no row sum), Q in registers (``q``), a lazy rescale against the
running max with a warpgroup-wide vote (``abl5``/``lazy``), row sums as a second wgmma P·ones (``tcs``),
persistent consumers with one copy of the block loop (``cplain``, ``c2plain``) or tiles run one after another
(``seqplain``), 64 KB more shared memory (``pad2``), three Q loads at the start (``pad``), start delays and
grids of 8–132 CTAs. Timings (``--bench``) alternate with the production kernels and cuDNN.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from pathoflash.kernels import attention_hopper as hop
from pathoflash.kernels.attention_hopper import (
    _kv_ring_barriers,
    _pp_loader,
    _pp_take_turn,
    _softmax_block,
    _tile,
    _wait_loaded,
)
from pathoflash.kernels.attention_hopper_persistent import _ps_loader, _ps_store
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

SLOTS = 4  # stamps per step: top, K ready, V ready, turn taken
HEAD = 8  # per-consumer header stamps


@gluon.jit
def _clock():
    return gl.inline_asm_elementwise("mov.u64 $0, %clock64;", "=l", [], dtype=gl.int64, is_pure=False, pack=1)


@gluon.jit
def _gtime():
    return gl.inline_asm_elementwise(
        "mov.u64 $0, %globaltimer;", "=l", [], dtype=gl.int64, is_pure=False, pack=1
    )


@gluon.jit
def _smid():
    return gl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r", [], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _sleep(ns):
    return gl.inline_asm_elementwise(
        "nanosleep.u32 $1; mov.u32 $0, $1;", "=r,r", [ns], dtype=gl.int32, is_pure=False, pack=1
    )


@gluon.jit
def _tr(ptr, i, v):
    gl.store(ptr + i, v)


# ----------------------------------------------------------------------------------------------- one tile
@gluon.jit
def _ot_work(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row, start_delay, ME: gl.constexpr, QREG: gl.constexpr,
    TRACE: gl.constexpr, ABL: gl.constexpr = 0,
):  # fmt: skip
    dtype: gl.constexpr = o_desc.dtype
    HEAD_DIM: gl.constexpr = o_desc.block_type.shape[3]
    BLOCK_N: gl.constexpr = k_ring.shape[3]
    K_STAGES: gl.constexpr = k_ring.shape[0]
    V_STAGES: gl.constexpr = v_ring.shape[0]
    ROWS: gl.constexpr = q_smem.shape[3]
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 16]
    )
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16]
    )
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    rows_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    rows_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    other: gl.constexpr = (ME + 1) % q_smem.shape[0]
    q_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=2)
    tr = TR + tr_row
    if TRACE:
        _tr(tr, 0, _clock())
        _tr(tr, 1, _gtime())
        _tr(tr, 2, _smid().to(gl.int64))

    q_box = q_smem.index(ME).reshape([ROWS, HEAD_DIM])
    zero_s = gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout)
    mbarrier.wait(q_ready.index(ME), 0)
    if ME == 1:
        _sleep(start_delay)
    if QREG:  # noqa: SIM108 (a Gluon constexpr branch)
        q = q_box.load(q_layout)
    else:
        q = q_box
    if TRACE:
        _tr(tr, 3, _clock())
    _wait_loaded(k_ready, 0, K_STAGES)
    _pp_take_turn(turn, ME, 0)
    s = warpgroup_mma(
        q, _tile(k_ring, 0, BLOCK_N, HEAD_DIM).permute((1, 0)), zero_s, use_acc=False, is_async=True
    )
    mbarrier.arrive(turn.index(other))
    s = warpgroup_mma_wait(0, deps=(s,))
    mbarrier.arrive(k_empty.index(0))
    m_i = gl.full([ROWS], float("-inf"), gl.float32, rows_s)
    l_i = gl.zeros([ROWS], gl.float32, rows_s)
    p, alpha, m_i, l_i = _softmax_block(s, m_i, l_i, qk_scale, 0, n_kv, N_KV, BLOCK_N, s_layout)
    p_op = gl.convert_layout(p.to(dtype), p_layout)
    acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)

    for j in range(0, n_kv - 1):
        st = tr + 8 + 4 * j
        if TRACE:
            _tr(st, 0, _clock())
        _wait_loaded(k_ready, j + 1, K_STAGES)
        if TRACE:
            _tr(st, 1, _clock())
        _wait_loaded(v_ready, j, V_STAGES)
        if TRACE:
            _tr(st, 2, _clock())
        _pp_take_turn(turn, ME, j + 1)
        if TRACE:
            _tr(st, 3, _clock())
        k_next = _tile(k_ring, (j + 1) % K_STAGES, BLOCK_N, HEAD_DIM).permute((1, 0))
        s_next = warpgroup_mma(q, k_next, zero_s, use_acc=False, is_async=True)
        pv = warpgroup_mma(p_op, _tile(v_ring, j % V_STAGES, BLOCK_N, HEAD_DIM), acc, is_async=True)
        mbarrier.arrive(turn.index(other))
        s = warpgroup_mma_wait(1, deps=(s_next,))
        if ABL == 8:
            _tr(tr + 8 + 4 * n_kv + 2 * j, 0, _clock())
        mbarrier.arrive(k_empty.index((j + 1) % K_STAGES))
        if ABL == 1:  # no softmax: P = S
            p = s
        elif ABL == 2:  # exponentials and row sums, no row max, no rescale
            p = gl.exp2(s * qk_scale - 8.0)
            l_i = l_i + gl.sum(p, 1)
        elif ABL == 4:  # no row sum
            m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
            p = gl.exp2(s * qk_scale - m_new[:, None])
            alpha = gl.exp2(m_i - m_new)
            m_i = m_new
        elif (
            ABL == 5 or ABL == 6
        ):  # lazy rescale: exponentials against the running max, fixed up when it grows by > 8
            m_blk = gl.max(s, 1) * qk_scale
            p = gl.exp2(s * qk_scale - m_i[:, None])
            grow = gl.max(m_blk - m_i, 0)
            alpha = gl.full([ROWS], 1.0, gl.float32, rows_s)
            if grow > 8.0:
                m_new = gl.maximum(m_i, m_blk)
                alpha = gl.exp2(m_i - m_new)
                p = gl.exp2(s * qk_scale - m_new[:, None])
                l_i = l_i * alpha
                m_i = m_new
            if ABL == 5:
                l_i = l_i + gl.sum(p, 1)
        else:
            p, alpha, m_i, l_i = _softmax_block(s, m_i, l_i, qk_scale, j + 1, n_kv, N_KV, BLOCK_N, s_layout)
        acc, p_op = warpgroup_mma_wait(0, deps=(pv, p_op))
        if ABL == 8:
            _tr(tr + 8 + 4 * n_kv + 2 * j, 1, _clock())
        mbarrier.arrive(v_empty.index(j % V_STAGES))
        if ABL == 0 or ABL == 4 or ABL == 8:
            acc = acc * gl.convert_layout(alpha, rows_o)[:, None]
        if ABL == 5 or ABL == 6:  # noqa: SIM102 (constexpr test, then a runtime one)
            if grow > 8.0:
                acc = acc * gl.convert_layout(alpha, rows_o)[:, None]
        p_op = gl.convert_layout(p.to(dtype), p_layout)

    last = n_kv - 1
    if TRACE:
        _tr(tr, 4, _clock())
    _wait_loaded(v_ready, last, V_STAGES)
    _pp_take_turn(turn, ME, n_kv)
    acc = warpgroup_mma(p_op, _tile(v_ring, last % V_STAGES, BLOCK_N, HEAD_DIM), acc, is_async=True)
    mbarrier.arrive(turn.index(other))
    acc = warpgroup_mma_wait(0, deps=(acc,))
    o = acc / gl.convert_layout(l_i, rows_o)[:, None]
    q_box.store(o.to(dtype))
    fence_async_shared()
    tma.async_copy_shared_to_global(o_desc, [b, h, start_m + ROWS * ME, 0], q_smem.index(ME))
    rows = start_m + ROWS * ME + gl.arange(0, ROWS, rows_s)
    lse = (m_i + gl.log2(l_i)) * 0.6931471805599453
    gl.store(LSE + pid_bh.to(gl.int64) * N_Q + rows, lse, mask=rows < N_Q)
    tma.store_wait(0)
    if TRACE:
        _tr(tr, 5, _clock())
        _tr(tr, 6, _gtime())


@gluon.jit
def _ot_c0_plain(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, start_delay, 0, False, False,
    )  # fmt: skip


@gluon.jit
def _ot_c1_plain(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row1, start_delay, 1, False, False,
    )  # fmt: skip


@gluon.jit
def _ot_c0_q(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, start_delay, 0, True, False,
    )  # fmt: skip


@gluon.jit
def _ot_c1_q(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row1, start_delay, 1, True, False,
    )  # fmt: skip


@gluon.jit
def _ot_c0_trace(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, start_delay, 0, False, True,
    )  # fmt: skip


@gluon.jit
def _ot_c1_trace(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row1, start_delay, 1, False, True,
    )  # fmt: skip


@gluon.jit
def _ot_c0_qtrace(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, start_delay, 0, True, True,
    )  # fmt: skip


@gluon.jit
def _ot_c1_qtrace(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row1, start_delay, 1, True, True,
    )  # fmt: skip


@gluon.jit
def _ot_c0_abl1(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, start_delay, 0, False, True, 1,
    )  # fmt: skip


@gluon.jit
def _ot_c1_abl1(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row1, start_delay, 1, False, True, 1,
    )  # fmt: skip


@gluon.jit
def _ot_c0_abl2(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, start_delay, 0, False, True, 2,
    )  # fmt: skip


@gluon.jit
def _ot_c1_abl2(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row1, start_delay, 1, False, True, 2,
    )  # fmt: skip


@gluon.jit
def _ot_c0_abl3(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, start_delay, 0, False, True, 3,
    )  # fmt: skip


@gluon.jit
def _ot_c1_abl3(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row1, start_delay, 1, False, True, 3,
    )  # fmt: skip


@gluon.jit
def _ot_c0_abl4(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, start_delay, 0, False, True, 4,
    )  # fmt: skip


@gluon.jit
def _ot_c1_abl4(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row1, start_delay, 1, False, True, 4,
    )  # fmt: skip


@gluon.jit
def _ot_c0_abl5(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, start_delay, 0, False, True, 5,
    )  # fmt: skip


@gluon.jit
def _ot_c1_abl5(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row1, start_delay, 1, False, True, 5,
    )  # fmt: skip


@gluon.jit
def _ot_c0_abl6(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, start_delay, 0, False, True, 6,
    )  # fmt: skip


@gluon.jit
def _ot_c1_abl6(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row1, start_delay, 1, False, True, 6,
    )  # fmt: skip


@gluon.jit
def _ot_c0_lazy(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, start_delay, 0, False, False, 5,
    )  # fmt: skip


@gluon.jit
def _ot_c1_lazy(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row1, start_delay, 1, False, False, 5,
    )  # fmt: skip


@gluon.jit
def _ot_c0_abl8(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, start_delay, 0, False, True, 8,
    )  # fmt: skip


@gluon.jit
def _ot_c1_abl8(
    o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
    start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
):  # fmt: skip
    _ot_work(
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row1, start_delay, 1, False, True, 8,
    )  # fmt: skip


@gluon.jit
def _ot_loader(
    q_desc, k_desc, v_desc, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, b, h,
    start_m, n_kv,
):  # fmt: skip
    _pp_loader(
        q_desc, k_desc, v_desc, q_desc, k_desc, v_desc, q_smem, k_ring, v_ring, q_smem, k_ring, v_ring, q_ready,
        k_ready, k_empty, v_ready, v_empty, b, h, start_m, n_kv,
    )  # fmt: skip


@gluon.jit
def _ot_loader_pad(
    q_desc, k_desc, v_desc, q_smem, pad, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, b, h,
    start_m, n_kv,
):  # fmt: skip
    """The one-tile loader, plus two more copies of each Q box into ``pad`` (64 KB more shared memory in use)."""
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[2]
    K_STAGES: gl.constexpr = k_ring.shape[0]
    V_STAGES: gl.constexpr = v_ring.shape[0]
    ROWS: gl.constexpr = q_desc.block_type.shape[2]
    for i in gl.static_range(2):
        mbarrier.expect(q_ready.index(i), 3 * q_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_desc, [b, h, start_m + ROWS * i, 0], q_ready.index(i), pad.index(i))
        tma.async_copy_global_to_shared(
            q_desc, [b, h, start_m + ROWS * i, 0], q_ready.index(i), pad.index(i + 2)
        )
        tma.async_copy_global_to_shared(
            q_desc, [b, h, start_m + ROWS * i, 0], q_ready.index(i), q_smem.index(i)
        )
    for blk in range(n_kv):
        ks = blk % K_STAGES
        mbarrier.wait(k_empty.index(ks), ((blk // K_STAGES) & 1) ^ 1)
        mbarrier.expect(k_ready.index(ks), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [b, h, blk * BLOCK_N, 0], k_ready.index(ks), k_ring.index(ks))
        vs = blk % V_STAGES
        mbarrier.wait(v_empty.index(vs), ((blk // V_STAGES) & 1) ^ 1)
        mbarrier.expect(v_ready.index(vs), v_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(v_desc, [b, h, blk * BLOCK_N, 0], v_ready.index(vs), v_ring.index(vs))


@gluon.jit
def _ot_loader_pad2(
    q_desc, k_desc, v_desc, q_smem, pad, pad_bar, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, b,
    h, start_m, n_kv,
):  # fmt: skip
    """The one-tile loader; after its last load, one Q box into ``pad`` (so the 64 KB stay allocated) that only
    the loader waits for."""
    _pp_loader(
        q_desc, k_desc, v_desc, q_desc, k_desc, v_desc, q_smem, k_ring, v_ring, q_smem, k_ring, v_ring, q_ready,
        k_ready, k_empty, v_ready, v_empty, b, h, start_m, n_kv,
    )  # fmt: skip
    mbarrier.expect(pad_bar.index(0), q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [b, h, start_m, 0], pad_bar.index(0), pad.index(0))
    mbarrier.wait(pad_bar.index(0), 0)


@gluon.jit
def _ot_loader_order(
    q_desc, k_desc, v_desc, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, b, h, start_m,
    n_kv, K_FIRST: gl.constexpr,
):  # fmt: skip
    """The one-tile loader with another start: Q0, K0, Q1 (K_FIRST False) or K0, Q0, Q1 (True), then V0, K1, V1…"""
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[2]
    K_STAGES: gl.constexpr = k_ring.shape[0]
    V_STAGES: gl.constexpr = v_ring.shape[0]
    ROWS: gl.constexpr = q_desc.block_type.shape[2]
    if K_FIRST:
        mbarrier.expect(k_ready.index(0), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [b, h, 0, 0], k_ready.index(0), k_ring.index(0))
    mbarrier.expect(q_ready.index(0), q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [b, h, start_m, 0], q_ready.index(0), q_smem.index(0))
    if not K_FIRST:
        mbarrier.expect(k_ready.index(0), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [b, h, 0, 0], k_ready.index(0), k_ring.index(0))
    mbarrier.expect(q_ready.index(1), q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [b, h, start_m + ROWS, 0], q_ready.index(1), q_smem.index(1))
    for blk in range(n_kv):
        if blk > 0:
            ks = blk % K_STAGES
            mbarrier.wait(k_empty.index(ks), ((blk // K_STAGES) & 1) ^ 1)
            mbarrier.expect(k_ready.index(ks), k_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(
                k_desc, [b, h, blk * BLOCK_N, 0], k_ready.index(ks), k_ring.index(ks)
            )
        vs = blk % V_STAGES
        mbarrier.wait(v_empty.index(vs), ((blk // V_STAGES) & 1) ^ 1)
        mbarrier.expect(v_ready.index(vs), v_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(v_desc, [b, h, blk * BLOCK_N, 0], v_ready.index(vs), v_ring.index(vs))


@gluon.jit
def _ot_loader_lo1(
    q_desc, k_desc, v_desc, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, b, h, start_m, n_kv,
):  # fmt: skip
    _ot_loader_order(
        q_desc, k_desc, v_desc, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, b, h, start_m,
        n_kv, False,
    )  # fmt: skip


@gluon.jit
def _ot_loader_lo2(
    q_desc, k_desc, v_desc, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, b, h, start_m, n_kv,
):  # fmt: skip
    _ot_loader_order(
        q_desc, k_desc, v_desc, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, b, h, start_m,
        n_kv, True,
    )  # fmt: skip


@gluon.jit
def _one_tile_kernel(
    q_desc, k_desc, v_desc, o_desc, LSE, H, N_Q, N_KV, qk_scale, TR, tr_stride, start_delay, K_STAGES: gl.constexpr,
    V_STAGES: gl.constexpr, MODE: gl.constexpr, DELAY: gl.constexpr = 0,
):  # fmt: skip
    ROWS: gl.constexpr = q_desc.block_type.shape[2]
    HEAD_DIM: gl.constexpr = q_desc.block_type.shape[3]
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[2]
    n_m = gl.cdiv(N_Q, 2 * ROWS)
    pid = gl.program_id(0)
    if DELAY > 0:
        _sleep((pid % 8) * DELAY)
    pid_m = pid % n_m
    pid_bh = pid // n_m
    b = pid_bh // H
    h = pid_bh % H
    start_m = pid_m * 2 * ROWS
    n_kv = gl.cdiv(N_KV, BLOCK_N)
    dtype: gl.constexpr = q_desc.dtype
    q_smem = gl.allocate_shared_memory(dtype, [2, 1, 1, ROWS, HEAD_DIM], q_desc.layout)
    k_ring = gl.allocate_shared_memory(dtype, [K_STAGES, 1, 1, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_ring = gl.allocate_shared_memory(dtype, [V_STAGES, 1, 1, BLOCK_N, HEAD_DIM], v_desc.layout)
    q_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    k_ready, k_empty, v_ready, v_empty = _kv_ring_barriers(K_STAGES, V_STAGES, 2)
    for i in gl.static_range(2):
        mbarrier.init(q_ready.index(i), count=1)
        mbarrier.init(turn.index(i), count=1)
    tr_row0 = (pid * 2).to(gl.int64) * tr_stride
    tr_row1 = tr_row0 + tr_stride
    consumer_args = (
        o_desc, LSE, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h,
        start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1, start_delay,
    )  # fmt: skip
    loader_args = (
        q_desc, k_desc, v_desc, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, b, h,
        start_m, n_kv,
    )  # fmt: skip
    if MODE == 0:  # plain
        gl.warp_specialize(
            [(_ot_c0_plain, consumer_args), (_ot_c1_plain, consumer_args), (_ot_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 1:  # q
        gl.warp_specialize(
            [(_ot_c0_q, consumer_args), (_ot_c1_q, consumer_args), (_ot_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 2:  # trace
        gl.warp_specialize(
            [(_ot_c0_trace, consumer_args), (_ot_c1_trace, consumer_args), (_ot_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 3:  # qtrace
        gl.warp_specialize(
            [(_ot_c0_qtrace, consumer_args), (_ot_c1_qtrace, consumer_args), (_ot_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 6:  # abl1
        gl.warp_specialize(
            [(_ot_c0_abl1, consumer_args), (_ot_c1_abl1, consumer_args), (_ot_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 7:  # abl2
        gl.warp_specialize(
            [(_ot_c0_abl2, consumer_args), (_ot_c1_abl2, consumer_args), (_ot_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 8:  # abl3
        gl.warp_specialize(
            [(_ot_c0_abl3, consumer_args), (_ot_c1_abl3, consumer_args), (_ot_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 9:  # abl4
        gl.warp_specialize(
            [(_ot_c0_abl4, consumer_args), (_ot_c1_abl4, consumer_args), (_ot_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 10:  # abl5
        gl.warp_specialize(
            [(_ot_c0_abl5, consumer_args), (_ot_c1_abl5, consumer_args), (_ot_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 11:  # abl6
        gl.warp_specialize(
            [(_ot_c0_abl6, consumer_args), (_ot_c1_abl6, consumer_args), (_ot_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 12:  # lazy
        gl.warp_specialize(
            [(_ot_c0_lazy, consumer_args), (_ot_c1_lazy, consumer_args), (_ot_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 40:  # lo1trace
        gl.warp_specialize(
            [(_ot_c0_trace, consumer_args), (_ot_c1_trace, consumer_args), (_ot_loader_lo1, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 41:  # lo1plain
        gl.warp_specialize(
            [(_ot_c0_plain, consumer_args), (_ot_c1_plain, consumer_args), (_ot_loader_lo1, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 42:  # lo2trace
        gl.warp_specialize(
            [(_ot_c0_trace, consumer_args), (_ot_c1_trace, consumer_args), (_ot_loader_lo2, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 43:  # lo2plain
        gl.warp_specialize(
            [(_ot_c0_plain, consumer_args), (_ot_c1_plain, consumer_args), (_ot_loader_lo2, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 21:  # abl8: trace with stamps after the Q·Kᵀ wait and the P·V wait
        gl.warp_specialize(
            [(_ot_c0_abl8, consumer_args), (_ot_c1_abl8, consumer_args), (_ot_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 17:  # padtrace: the trace kernel with 229 KB of shared memory, like the persistent one
        pad = gl.allocate_shared_memory(dtype, [4, 1, 1, ROWS, HEAD_DIM], q_desc.layout)
        pad_args = (
            q_desc, k_desc, v_desc, q_smem, pad, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, b, h,
            start_m, n_kv,
        )  # fmt: skip
        gl.warp_specialize(
            [(_ot_c0_trace, consumer_args), (_ot_c1_trace, consumer_args), (_ot_loader_pad, pad_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 18:  # padplain
        pad = gl.allocate_shared_memory(dtype, [4, 1, 1, ROWS, HEAD_DIM], q_desc.layout)
        pad_args = (
            q_desc, k_desc, v_desc, q_smem, pad, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, b, h,
            start_m, n_kv,
        )  # fmt: skip
        gl.warp_specialize(
            [(_ot_c0_plain, consumer_args), (_ot_c1_plain, consumer_args), (_ot_loader_pad, pad_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 19:  # pad2trace: 64 KB more shared memory, Q loaded once
        pad = gl.allocate_shared_memory(dtype, [4, 1, 1, ROWS, HEAD_DIM], q_desc.layout)
        pad_bar = gl.allocate_shared_memory(gl.int64, [1, 1], mbarrier.MBarrierLayout())
        mbarrier.init(pad_bar.index(0), count=1)
        pad_args = (
            q_desc, k_desc, v_desc, q_smem, pad, pad_bar, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty,
            b, h, start_m, n_kv,
        )  # fmt: skip
        gl.warp_specialize(
            [(_ot_c0_trace, consumer_args), (_ot_c1_trace, consumer_args), (_ot_loader_pad2, pad_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 20:  # pad2plain: 64 KB more shared memory, Q loaded once
        pad = gl.allocate_shared_memory(dtype, [4, 1, 1, ROWS, HEAD_DIM], q_desc.layout)
        pad_bar = gl.allocate_shared_memory(gl.int64, [1, 1], mbarrier.MBarrierLayout())
        mbarrier.init(pad_bar.index(0), count=1)
        pad_args = (
            q_desc, k_desc, v_desc, q_smem, pad, pad_bar, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty,
            b, h, start_m, n_kv,
        )  # fmt: skip
        gl.warp_specialize(
            [(_ot_c0_plain, consumer_args), (_ot_c1_plain, consumer_args), (_ot_loader_pad2, pad_args)],
            [4, 1],
            [240, 24],
        )


# --------------------------------------------------------------------------------------------- persistent
@gluon.jit
def _tp_blocks(
    q, k_ring, v_ring, k_ready, k_empty, v_ready, v_empty, turn, m_i, l_i, p_op, acc, base, n_kv, N_KV, qk_scale,
    tr, ME: gl.constexpr, TRACE: gl.constexpr, VAR: gl.constexpr = 0,
):  # fmt: skip
    dtype: gl.constexpr = q.dtype
    ROWS: gl.constexpr = q.shape[0]
    HEAD_DIM: gl.constexpr = q.shape[1]
    BLOCK_N: gl.constexpr = k_ring.shape[3]
    K_STAGES: gl.constexpr = k_ring.shape[0]
    V_STAGES: gl.constexpr = v_ring.shape[0]
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 16]
    )
    p_layout: gl.constexpr = p_op.type.layout
    rows_o: gl.constexpr = gl.SliceLayout(1, acc.type.layout)
    other: gl.constexpr = (ME + 1) % turn.shape[0]
    zero_s = gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout)
    for j in range(0, n_kv - 1):
        g = base + j
        if VAR == 6:
            g = j + base
        st = tr + 8 + 4 * g
        if TRACE:
            _tr(st, 0, _clock())
        if VAR == 7:  # the turn first, then the loads
            _pp_take_turn(turn, ME, g + 1)
            _wait_loaded(v_ready, g, V_STAGES)
            _wait_loaded(k_ready, g + 1, K_STAGES)
        elif VAR == 8:  # V before K
            _wait_loaded(v_ready, g, V_STAGES)
            _wait_loaded(k_ready, g + 1, K_STAGES)
            _pp_take_turn(turn, ME, g + 1)
        else:
            _wait_loaded(k_ready, g + 1, K_STAGES)
            if TRACE:
                _tr(st, 1, _clock())
            _wait_loaded(v_ready, g, V_STAGES)
            if TRACE:
                _tr(st, 2, _clock())
            _pp_take_turn(turn, ME, g + 1)
        if TRACE:
            _tr(st, 3, _clock())
        if VAR == 5:
            zero_s = gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout)
        k_next = _tile(k_ring, (g + 1) % K_STAGES, BLOCK_N, HEAD_DIM).permute((1, 0))
        s_next = warpgroup_mma(q, k_next, zero_s, use_acc=False, is_async=True)
        pv = warpgroup_mma(p_op, _tile(v_ring, g % V_STAGES, BLOCK_N, HEAD_DIM), acc, is_async=True)
        if VAR != 1:
            mbarrier.arrive(turn.index(other))
        s = warpgroup_mma_wait(1, deps=(s_next,))
        if VAR == 1:  # the other consumer may issue once this one's Q·Kᵀ is done
            mbarrier.arrive(turn.index(other))
        if VAR == 4:  # the softmax before the K release
            p, alpha, m_i, l_i = _softmax_block(s, m_i, l_i, qk_scale, j + 1, n_kv, N_KV, BLOCK_N, s_layout)
            mbarrier.arrive(k_empty.index((g + 1) % K_STAGES))
        else:
            if VAR != 2:
                mbarrier.arrive(k_empty.index((g + 1) % K_STAGES))
            p, alpha, m_i, l_i = _softmax_block(s, m_i, l_i, qk_scale, j + 1, n_kv, N_KV, BLOCK_N, s_layout)
        acc, p_op = warpgroup_mma_wait(0, deps=(pv, p_op))
        if VAR == 2:  # K released with V
            mbarrier.arrive(k_empty.index((g + 1) % K_STAGES))
        mbarrier.arrive(v_empty.index(g % V_STAGES))
        if VAR == 3:
            p_op = gl.convert_layout(p.to(dtype), p_layout)
            acc = acc * gl.convert_layout(alpha, rows_o)[:, None]
        else:
            acc = acc * gl.convert_layout(alpha, rows_o)[:, None]
            p_op = gl.convert_layout(p.to(dtype), p_layout)
    return p_op, acc, m_i, l_i


@gluon.jit
def _tp_consumer(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, ME: gl.constexpr, QREG: gl.constexpr, TRACE: gl.constexpr,
    VAR: gl.constexpr = 0,
):  # fmt: skip
    dtype: gl.constexpr = o_desc.dtype
    HEAD_DIM: gl.constexpr = o_desc.block_type.shape[3]
    ROWS: gl.constexpr = o_smem.shape[3]
    CONSUMERS: gl.constexpr = o_smem.shape[0]
    BLOCK_N: gl.constexpr = k_ring.shape[3]
    K_STAGES: gl.constexpr = k_ring.shape[0]
    V_STAGES: gl.constexpr = v_ring.shape[0]
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 16]
    )
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16]
    )
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    rows_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    rows_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    other: gl.constexpr = (ME + 1) % CONSUMERS
    q_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=2)

    first = gl.program_id(0)
    step = gl.num_programs(0)
    tr = TR + (first * 2 + ME).to(gl.int64) * tr_stride
    if TRACE:
        _tr(tr, 0, _clock())
    if TRACE:
        _tr(tr, 1, _gtime())
    if TRACE:
        _tr(tr, 2, _smid().to(gl.int64))
    mine = gl.cdiv(n_tiles - first, step)
    zero_s = gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout)
    no_max = gl.full([ROWS], float("-inf"), gl.float32, rows_s)
    no_sum = gl.zeros([ROWS], gl.float32, rows_s)

    mbarrier.wait(q_ready.index(ME), 0)
    if TRACE:
        _tr(tr, 3, _clock())
    _wait_loaded(k_ready, 0, K_STAGES)
    _pp_take_turn(turn, ME, 0)
    q = q_smem.index(ME).reshape([ROWS, HEAD_DIM])
    if QREG:
        q = q.load(q_layout)
    s = warpgroup_mma(
        q, _tile(k_ring, 0, BLOCK_N, HEAD_DIM).permute((1, 0)), zero_s, use_acc=False, is_async=True
    )
    mbarrier.arrive(turn.index(other))
    s = warpgroup_mma_wait(0, deps=(s,))
    mbarrier.arrive(k_empty.index(0))
    p, _, m_i, l_i = _softmax_block(s, no_max, no_sum, qk_scale, 0, n_kv, N_KV, BLOCK_N, s_layout)
    acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)

    for t in range(0, mine - 1):
        if not QREG:
            q = q_smem.index((t % 2) * CONSUMERS + ME).reshape([ROWS, HEAD_DIM])
        p_op = gl.convert_layout(p.to(dtype), p_layout)
        p_op, acc, m_i, l_i = _tp_blocks(
            q, k_ring, v_ring, k_ready, k_empty, v_ready, v_empty, turn, m_i, l_i, p_op, acc, t * n_kv, n_kv,
            N_KV, qk_scale, tr, ME, TRACE, VAR,
        )  # fmt: skip
        g = (t + 1) * n_kv - 1
        st = tr + 8 + 4 * g
        if TRACE:
            _tr(st, 0, _clock())
        q_slot = ((t + 1) % 2) * CONSUMERS + ME
        mbarrier.wait(q_ready.index(q_slot), ((t + 1) // 2) & 1)
        _wait_loaded(k_ready, g + 1, K_STAGES)
        if TRACE:
            _tr(st, 1, _clock())
        _wait_loaded(v_ready, g, V_STAGES)
        if TRACE:
            _tr(st, 2, _clock())
        _pp_take_turn(turn, ME, g + 1)
        if TRACE:
            _tr(st, 3, _clock())
        q_next = q_smem.index(q_slot).reshape([ROWS, HEAD_DIM])
        if QREG:
            q_next = q_next.load(q_layout)
        k_next = _tile(k_ring, (g + 1) % K_STAGES, BLOCK_N, HEAD_DIM).permute((1, 0))
        s_next = warpgroup_mma(q_next, k_next, zero_s, use_acc=False, is_async=True)
        pv = warpgroup_mma(p_op, _tile(v_ring, g % V_STAGES, BLOCK_N, HEAD_DIM), acc, is_async=True)
        mbarrier.arrive(turn.index(other))
        s = warpgroup_mma_wait(1, deps=(s_next,))
        mbarrier.arrive(k_empty.index((g + 1) % K_STAGES))
        mbarrier.arrive(q_empty.index((t % 2) * CONSUMERS + ME))
        p, _, m_next, l_next = _softmax_block(s, no_max, no_sum, qk_scale, 0, n_kv, N_KV, BLOCK_N, s_layout)
        acc, p_op = warpgroup_mma_wait(0, deps=(pv, p_op))
        mbarrier.arrive(v_empty.index(g % V_STAGES))
        _ps_store(acc, m_i, l_i, o_desc, o_smem, LSE, first + t * step, H, N_Q, ME, rows_s, rows_o)
        acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)
        m_i = m_next
        l_i = l_next
        if QREG:
            q = q_next

    t = mine - 1
    if not QREG:
        q = q_smem.index((t % 2) * CONSUMERS + ME).reshape([ROWS, HEAD_DIM])
    p_op = gl.convert_layout(p.to(dtype), p_layout)
    p_op, acc, m_i, l_i = _tp_blocks(
        q, k_ring, v_ring, k_ready, k_empty, v_ready, v_empty, turn, m_i, l_i, p_op, acc, t * n_kv, n_kv, N_KV,
        qk_scale, tr, ME, TRACE, VAR,
    )  # fmt: skip
    last = (t + 1) * n_kv - 1
    if TRACE:
        _tr(tr, 4, _clock())
    _wait_loaded(v_ready, last, V_STAGES)
    _pp_take_turn(turn, ME, last + 1)
    acc = warpgroup_mma(p_op, _tile(v_ring, last % V_STAGES, BLOCK_N, HEAD_DIM), acc, is_async=True)
    mbarrier.arrive(turn.index(other))
    acc = warpgroup_mma_wait(0, deps=(acc,))
    _ps_store(acc, m_i, l_i, o_desc, o_smem, LSE, first + t * step, H, N_Q, ME, rows_s, rows_o)
    tma.store_wait(0)
    if TRACE:
        _tr(tr, 5, _clock())
    if TRACE:
        _tr(tr, 6, _gtime())
    if TRACE:
        _tr(tr, 7, mine.to(gl.int64))


@gluon.jit
def _tp_c0_plain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False, False,
    )  # fmt: skip


@gluon.jit
def _tp_c1_plain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False, False,
    )  # fmt: skip


@gluon.jit
def _tp_c0_q(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, True, False,
    )  # fmt: skip


@gluon.jit
def _tp_c1_q(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, True, False,
    )  # fmt: skip


@gluon.jit
def _tp_c0_trace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False, True,
    )  # fmt: skip


@gluon.jit
def _tp_c1_trace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False, True,
    )  # fmt: skip


@gluon.jit
def _tp_c0_qtrace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, True, True,
    )  # fmt: skip


@gluon.jit
def _tp_c1_qtrace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, True, True,
    )  # fmt: skip


@gluon.jit
def _tc_consumer(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, ME: gl.constexpr, TRACE: gl.constexpr,
):  # fmt: skip
    """The persistent consumer with one copy of the block loop: the step between tiles and the last P·V are
    the two arms of a branch after it (outside the block loop)."""
    dtype: gl.constexpr = o_desc.dtype
    HEAD_DIM: gl.constexpr = o_desc.block_type.shape[3]
    ROWS: gl.constexpr = o_smem.shape[3]
    CONSUMERS: gl.constexpr = o_smem.shape[0]
    BLOCK_N: gl.constexpr = k_ring.shape[3]
    K_STAGES: gl.constexpr = k_ring.shape[0]
    V_STAGES: gl.constexpr = v_ring.shape[0]
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 16]
    )
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16]
    )
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    rows_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    rows_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    other: gl.constexpr = (ME + 1) % CONSUMERS

    first = gl.program_id(0)
    step = gl.num_programs(0)
    tr = TR + (first * 2 + ME).to(gl.int64) * tr_stride
    if TRACE:
        _tr(tr, 0, _clock())
        _tr(tr, 1, _gtime())
        _tr(tr, 2, _smid().to(gl.int64))
    mine = gl.cdiv(n_tiles - first, step)
    zero_s = gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout)
    no_max = gl.full([ROWS], float("-inf"), gl.float32, rows_s)
    no_sum = gl.zeros([ROWS], gl.float32, rows_s)

    mbarrier.wait(q_ready.index(ME), 0)
    if TRACE:
        _tr(tr, 3, _clock())
    _wait_loaded(k_ready, 0, K_STAGES)
    _pp_take_turn(turn, ME, 0)
    q = q_smem.index(ME).reshape([ROWS, HEAD_DIM])
    s = warpgroup_mma(
        q, _tile(k_ring, 0, BLOCK_N, HEAD_DIM).permute((1, 0)), zero_s, use_acc=False, is_async=True
    )
    mbarrier.arrive(turn.index(other))
    s = warpgroup_mma_wait(0, deps=(s,))
    mbarrier.arrive(k_empty.index(0))
    p, _, m_i, l_i = _softmax_block(s, no_max, no_sum, qk_scale, 0, n_kv, N_KV, BLOCK_N, s_layout)
    acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)

    for t in range(0, mine):
        q = q_smem.index((t % 2) * CONSUMERS + ME).reshape([ROWS, HEAD_DIM])
        p_op = gl.convert_layout(p.to(dtype), p_layout)
        p_op, acc, m_i, l_i = _tp_blocks(
            q, k_ring, v_ring, k_ready, k_empty, v_ready, v_empty, turn, m_i, l_i, p_op, acc, t * n_kv, n_kv,
            N_KV, qk_scale, tr, ME, TRACE,
        )  # fmt: skip
        g = (t + 1) * n_kv - 1
        if t < mine - 1:  # the step into tile t + 1: its S(block 0) beside tile t's last P·V
            if TRACE:
                _tr(tr + 8 + 4 * g, 0, _clock())
            q_slot = ((t + 1) % 2) * CONSUMERS + ME
            mbarrier.wait(q_ready.index(q_slot), ((t + 1) // 2) & 1)
            _wait_loaded(k_ready, g + 1, K_STAGES)
            _wait_loaded(v_ready, g, V_STAGES)
            _pp_take_turn(turn, ME, g + 1)
            q_next = q_smem.index(q_slot).reshape([ROWS, HEAD_DIM])
            k_next = _tile(k_ring, (g + 1) % K_STAGES, BLOCK_N, HEAD_DIM).permute((1, 0))
            s_next = warpgroup_mma(q_next, k_next, zero_s, use_acc=False, is_async=True)
            pv = warpgroup_mma(p_op, _tile(v_ring, g % V_STAGES, BLOCK_N, HEAD_DIM), acc, is_async=True)
            mbarrier.arrive(turn.index(other))
            s = warpgroup_mma_wait(1, deps=(s_next,))
            mbarrier.arrive(k_empty.index((g + 1) % K_STAGES))
            mbarrier.arrive(q_empty.index((t % 2) * CONSUMERS + ME))
            p, _, m_next, l_next = _softmax_block(
                s, no_max, no_sum, qk_scale, 0, n_kv, N_KV, BLOCK_N, s_layout
            )
            acc, p_op = warpgroup_mma_wait(0, deps=(pv, p_op))
            mbarrier.arrive(v_empty.index(g % V_STAGES))
            _ps_store(acc, m_i, l_i, o_desc, o_smem, LSE, first + t * step, H, N_Q, ME, rows_s, rows_o)
            acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)
            m_i = m_next
            l_i = l_next
        else:  # the last tile's last P·V
            if TRACE:
                _tr(tr, 4, _clock())
            _wait_loaded(v_ready, g, V_STAGES)
            _pp_take_turn(turn, ME, g + 1)
            acc = warpgroup_mma(p_op, _tile(v_ring, g % V_STAGES, BLOCK_N, HEAD_DIM), acc, is_async=True)
            mbarrier.arrive(turn.index(other))
            acc = warpgroup_mma_wait(0, deps=(acc,))
            _ps_store(acc, m_i, l_i, o_desc, o_smem, LSE, first + t * step, H, N_Q, ME, rows_s, rows_o)
    tma.store_wait(0)
    if TRACE:
        _tr(tr, 5, _clock())
        _tr(tr, 6, _gtime())
        _tr(tr, 7, mine.to(gl.int64))


@gluon.jit
def _tc2_consumer(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, ME: gl.constexpr, TRACE: gl.constexpr,
):  # fmt: skip
    """The persistent consumer with one copy of the block loop: the step between tiles and the last P·V are
    the two arms of a branch after it (outside the block loop)."""
    dtype: gl.constexpr = o_desc.dtype
    HEAD_DIM: gl.constexpr = o_desc.block_type.shape[3]
    ROWS: gl.constexpr = o_smem.shape[3]
    CONSUMERS: gl.constexpr = o_smem.shape[0]
    BLOCK_N: gl.constexpr = k_ring.shape[3]
    K_STAGES: gl.constexpr = k_ring.shape[0]
    V_STAGES: gl.constexpr = v_ring.shape[0]
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 16]
    )
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16]
    )
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    rows_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    rows_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    other: gl.constexpr = (ME + 1) % CONSUMERS

    first = gl.program_id(0)
    step = gl.num_programs(0)
    tr = TR + (first * 2 + ME).to(gl.int64) * tr_stride
    if TRACE:
        _tr(tr, 0, _clock())
        _tr(tr, 1, _gtime())
        _tr(tr, 2, _smid().to(gl.int64))
    mine = gl.cdiv(n_tiles - first, step)
    zero_s = gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout)
    no_max = gl.full([ROWS], float("-inf"), gl.float32, rows_s)
    no_sum = gl.zeros([ROWS], gl.float32, rows_s)

    mbarrier.wait(q_ready.index(ME), 0)
    if TRACE:
        _tr(tr, 3, _clock())
    _wait_loaded(k_ready, 0, K_STAGES)
    _pp_take_turn(turn, ME, 0)
    q = q_smem.index(ME).reshape([ROWS, HEAD_DIM])
    s = warpgroup_mma(
        q, _tile(k_ring, 0, BLOCK_N, HEAD_DIM).permute((1, 0)), zero_s, use_acc=False, is_async=True
    )
    mbarrier.arrive(turn.index(other))
    s = warpgroup_mma_wait(0, deps=(s,))
    mbarrier.arrive(k_empty.index(0))
    p, _, m_i, l_i = _softmax_block(s, no_max, no_sum, qk_scale, 0, n_kv, N_KV, BLOCK_N, s_layout)
    acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)
    p_op = gl.convert_layout(p.to(dtype), p_layout)

    for t in range(0, mine):
        q = q_smem.index((t % 2) * CONSUMERS + ME).reshape([ROWS, HEAD_DIM])
        p_op, acc, m_i, l_i = _tp_blocks(
            q, k_ring, v_ring, k_ready, k_empty, v_ready, v_empty, turn, m_i, l_i, p_op, acc, t * n_kv, n_kv,
            N_KV, qk_scale, tr, ME, TRACE,
        )  # fmt: skip
        g = (t + 1) * n_kv - 1
        if t < mine - 1:  # the step into tile t + 1: its S(block 0) beside tile t's last P·V
            if TRACE:
                _tr(tr + 8 + 4 * g, 0, _clock())
            q_slot = ((t + 1) % 2) * CONSUMERS + ME
            mbarrier.wait(q_ready.index(q_slot), ((t + 1) // 2) & 1)
            _wait_loaded(k_ready, g + 1, K_STAGES)
            _wait_loaded(v_ready, g, V_STAGES)
            _pp_take_turn(turn, ME, g + 1)
            q_next = q_smem.index(q_slot).reshape([ROWS, HEAD_DIM])
            k_next = _tile(k_ring, (g + 1) % K_STAGES, BLOCK_N, HEAD_DIM).permute((1, 0))
            s_next = warpgroup_mma(q_next, k_next, zero_s, use_acc=False, is_async=True)
            pv = warpgroup_mma(p_op, _tile(v_ring, g % V_STAGES, BLOCK_N, HEAD_DIM), acc, is_async=True)
            mbarrier.arrive(turn.index(other))
            s = warpgroup_mma_wait(1, deps=(s_next,))
            mbarrier.arrive(k_empty.index((g + 1) % K_STAGES))
            mbarrier.arrive(q_empty.index((t % 2) * CONSUMERS + ME))
            p, _, m_next, l_next = _softmax_block(
                s, no_max, no_sum, qk_scale, 0, n_kv, N_KV, BLOCK_N, s_layout
            )
            acc, p_op = warpgroup_mma_wait(0, deps=(pv, p_op))
            mbarrier.arrive(v_empty.index(g % V_STAGES))
            _ps_store(acc, m_i, l_i, o_desc, o_smem, LSE, first + t * step, H, N_Q, ME, rows_s, rows_o)
            acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)
            m_i = m_next
            l_i = l_next
            p_op = gl.convert_layout(p.to(dtype), p_layout)
        else:  # the last tile's last P·V
            if TRACE:
                _tr(tr, 4, _clock())
            _wait_loaded(v_ready, g, V_STAGES)
            _pp_take_turn(turn, ME, g + 1)
            acc = warpgroup_mma(p_op, _tile(v_ring, g % V_STAGES, BLOCK_N, HEAD_DIM), acc, is_async=True)
            mbarrier.arrive(turn.index(other))
            acc = warpgroup_mma_wait(0, deps=(acc,))
            _ps_store(acc, m_i, l_i, o_desc, o_smem, LSE, first + t * step, H, N_Q, ME, rows_s, rows_o)
    tma.store_wait(0)
    if TRACE:
        _tr(tr, 5, _clock())
        _tr(tr, 6, _gtime())
        _tr(tr, 7, mine.to(gl.int64))


@gluon.jit
def _tc2_c0_c2plain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tc2_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False,
    )  # fmt: skip


@gluon.jit
def _tc2_c1_c2plain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tc2_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False,
    )  # fmt: skip


@gluon.jit
def _tc2_c0_c2trace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tc2_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, True,
    )  # fmt: skip


@gluon.jit
def _tc2_c1_c2trace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tc2_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, True,
    )  # fmt: skip


@gluon.jit
def _tc_c0_cplain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tc_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False,
    )  # fmt: skip


@gluon.jit
def _tc_c1_cplain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tc_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False,
    )  # fmt: skip


@gluon.jit
def _tc_c0_ctrace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tc_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, True,
    )  # fmt: skip


@gluon.jit
def _tc_c1_ctrace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tc_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, True,
    )  # fmt: skip


@gluon.jit
def _seq_consumer(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, ME: gl.constexpr, TRACE: gl.constexpr,
):  # fmt: skip
    """Persistent, tiles one after another: each tile runs the one-tile consumer's steps (block 0 peeled, the
    block loop, the last P·V, the store); only the rings, the turn count and the Q slots run on across tiles."""
    dtype: gl.constexpr = o_desc.dtype
    HEAD_DIM: gl.constexpr = o_desc.block_type.shape[3]
    ROWS: gl.constexpr = o_smem.shape[3]
    CONSUMERS: gl.constexpr = o_smem.shape[0]
    BLOCK_N: gl.constexpr = k_ring.shape[3]
    K_STAGES: gl.constexpr = k_ring.shape[0]
    V_STAGES: gl.constexpr = v_ring.shape[0]
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 16]
    )
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16]
    )
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    rows_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    rows_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    other: gl.constexpr = (ME + 1) % CONSUMERS

    first = gl.program_id(0)
    step = gl.num_programs(0)
    tr = TR + (first * 2 + ME).to(gl.int64) * tr_stride
    if TRACE:
        _tr(tr, 0, _clock())
        _tr(tr, 1, _gtime())
        _tr(tr, 2, _smid().to(gl.int64))
    mine = gl.cdiv(n_tiles - first, step)
    zero_s = gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout)
    for t in range(0, mine):
        base = t * n_kv
        ev = t * (n_kv + 1)  # turn events of earlier tiles
        q_slot = (t % 2) * CONSUMERS + ME
        q = q_smem.index(q_slot).reshape([ROWS, HEAD_DIM])
        mbarrier.wait(q_ready.index(q_slot), (t // 2) & 1)
        if TRACE:  # noqa: SIM102 (constexpr test, then a runtime one)
            if t == 0:
                _tr(tr, 3, _clock())
        _wait_loaded(k_ready, base, K_STAGES)
        _pp_take_turn(turn, ME, ev)
        s = warpgroup_mma(q, _tile(k_ring, base % K_STAGES, BLOCK_N, HEAD_DIM).permute((1, 0)), zero_s,
                          use_acc=False, is_async=True)  # fmt: skip
        mbarrier.arrive(turn.index(other))
        s = warpgroup_mma_wait(0, deps=(s,))
        mbarrier.arrive(k_empty.index(base % K_STAGES))
        m_i = gl.full([ROWS], float("-inf"), gl.float32, rows_s)
        l_i = gl.zeros([ROWS], gl.float32, rows_s)
        p, alpha, m_i, l_i = _softmax_block(s, m_i, l_i, qk_scale, 0, n_kv, N_KV, BLOCK_N, s_layout)
        p_op = gl.convert_layout(p.to(dtype), p_layout)
        acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)
        for j in range(0, n_kv - 1):
            g = base + j
            if TRACE:
                st = tr + 8 + 4 * g
                _tr(st, 0, _clock())
            _wait_loaded(k_ready, g + 1, K_STAGES)
            if TRACE:
                _tr(st, 1, _clock())
            _wait_loaded(v_ready, g, V_STAGES)
            if TRACE:
                _tr(st, 2, _clock())
            _pp_take_turn(turn, ME, ev + j + 1)
            if TRACE:
                _tr(st, 3, _clock())
            k_next = _tile(k_ring, (g + 1) % K_STAGES, BLOCK_N, HEAD_DIM).permute((1, 0))
            s_next = warpgroup_mma(q, k_next, zero_s, use_acc=False, is_async=True)
            pv = warpgroup_mma(p_op, _tile(v_ring, g % V_STAGES, BLOCK_N, HEAD_DIM), acc, is_async=True)
            mbarrier.arrive(turn.index(other))
            s = warpgroup_mma_wait(1, deps=(s_next,))
            mbarrier.arrive(k_empty.index((g + 1) % K_STAGES))
            p, alpha, m_i, l_i = _softmax_block(s, m_i, l_i, qk_scale, j + 1, n_kv, N_KV, BLOCK_N, s_layout)
            acc, p_op = warpgroup_mma_wait(0, deps=(pv, p_op))
            mbarrier.arrive(v_empty.index(g % V_STAGES))
            acc = acc * gl.convert_layout(alpha, rows_o)[:, None]
            p_op = gl.convert_layout(p.to(dtype), p_layout)
        last = base + n_kv - 1
        if TRACE:
            _tr(tr + 8 + 4 * last, 0, _clock())
        mbarrier.arrive(q_empty.index(q_slot))  # the tile's last Q·Kᵀ is done
        _wait_loaded(v_ready, last, V_STAGES)
        _pp_take_turn(turn, ME, ev + n_kv)
        acc = warpgroup_mma(p_op, _tile(v_ring, last % V_STAGES, BLOCK_N, HEAD_DIM), acc, is_async=True)
        mbarrier.arrive(turn.index(other))
        acc = warpgroup_mma_wait(0, deps=(acc,))
        mbarrier.arrive(v_empty.index(last % V_STAGES))
        _ps_store(acc, m_i, l_i, o_desc, o_smem, LSE, first + t * step, H, N_Q, ME, rows_s, rows_o)
    tma.store_wait(0)
    if TRACE:
        _tr(tr, 5, _clock())
        _tr(tr, 6, _gtime())
        _tr(tr, 7, mine.to(gl.int64))


@gluon.jit
def _seq_c0_seqplain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _seq_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False,
    )  # fmt: skip


@gluon.jit
def _seq_c1_seqplain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _seq_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False,
    )  # fmt: skip


@gluon.jit
def _seq_c0_seqtrace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _seq_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, True,
    )  # fmt: skip


@gluon.jit
def _seq_c1_seqtrace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _seq_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, True,
    )  # fmt: skip


@gluon.jit
def _tp_c0_v1plain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False, False, 1,
    )  # fmt: skip


@gluon.jit
def _tp_c1_v1plain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False, False, 1,
    )  # fmt: skip


@gluon.jit
def _tp_c0_v1trace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False, True, 1,
    )  # fmt: skip


@gluon.jit
def _tp_c1_v1trace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False, True, 1,
    )  # fmt: skip


@gluon.jit
def _tp_c0_v2plain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False, False, 2,
    )  # fmt: skip


@gluon.jit
def _tp_c1_v2plain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False, False, 2,
    )  # fmt: skip


@gluon.jit
def _tp_c0_v2trace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False, True, 2,
    )  # fmt: skip


@gluon.jit
def _tp_c1_v2trace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False, True, 2,
    )  # fmt: skip


@gluon.jit
def _tp_c0_v3plain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False, False, 3,
    )  # fmt: skip


@gluon.jit
def _tp_c1_v3plain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False, False, 3,
    )  # fmt: skip


@gluon.jit
def _tp_c0_v3trace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False, True, 3,
    )  # fmt: skip


@gluon.jit
def _tp_c1_v3trace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False, True, 3,
    )  # fmt: skip


@gluon.jit
def _tp_c0_v4plain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False, False, 4,
    )  # fmt: skip


@gluon.jit
def _tp_c1_v4plain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False, False, 4,
    )  # fmt: skip


@gluon.jit
def _tp_c0_v4trace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False, True, 4,
    )  # fmt: skip


@gluon.jit
def _tp_c1_v4trace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False, True, 4,
    )  # fmt: skip


@gluon.jit
def _tp_c0_v5plain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False, False, 5,
    )  # fmt: skip


@gluon.jit
def _tp_c1_v5plain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False, False, 5,
    )  # fmt: skip


@gluon.jit
def _tp_c0_v5trace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False, True, 5,
    )  # fmt: skip


@gluon.jit
def _tp_c1_v5trace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False, True, 5,
    )  # fmt: skip


@gluon.jit
def _tp_c0_v6plain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False, False, 6,
    )  # fmt: skip


@gluon.jit
def _tp_c1_v6plain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False, False, 6,
    )  # fmt: skip


@gluon.jit
def _tp_c0_v6trace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False, True, 6,
    )  # fmt: skip


@gluon.jit
def _tp_c1_v6trace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False, True, 6,
    )  # fmt: skip


@gluon.jit
def _tp_c0_v7plain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False, False, 7,
    )  # fmt: skip


@gluon.jit
def _tp_c1_v7plain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False, False, 7,
    )  # fmt: skip


@gluon.jit
def _tp_c0_v7trace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False, True, 7,
    )  # fmt: skip


@gluon.jit
def _tp_c1_v7trace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False, True, 7,
    )  # fmt: skip


@gluon.jit
def _tp_c0_v8plain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False, False, 8,
    )  # fmt: skip


@gluon.jit
def _tp_c1_v8plain(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False, False, 8,
    )  # fmt: skip


@gluon.jit
def _tp_c0_v8trace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 0, False, True, 8,
    )  # fmt: skip


@gluon.jit
def _tp_c1_v8trace(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
):  # fmt: skip
    _tp_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride, 1, False, True, 8,
    )  # fmt: skip


@gluon.jit
def _persistent_kernel(
    q_desc, k_desc, v_desc, o_desc, LSE, BH, H, N_Q, N_KV, qk_scale, TR, tr_stride, K_STAGES: gl.constexpr,
    V_STAGES: gl.constexpr, MODE: gl.constexpr, DELAY: gl.constexpr = 0,
):  # fmt: skip
    if DELAY > 0:
        _sleep((gl.program_id(0) % 8) * DELAY)
    ROWS: gl.constexpr = q_desc.block_type.shape[2]
    HEAD_DIM: gl.constexpr = q_desc.block_type.shape[3]
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[2]
    dtype: gl.constexpr = q_desc.dtype
    n_tiles = gl.cdiv(N_Q, 2 * ROWS) * BH
    n_kv = gl.cdiv(N_KV, BLOCK_N)
    q_smem = gl.allocate_shared_memory(dtype, [4, 1, 1, ROWS, HEAD_DIM], q_desc.layout)
    o_smem = gl.allocate_shared_memory(dtype, [2, 1, 1, ROWS, HEAD_DIM], o_desc.layout)
    k_ring = gl.allocate_shared_memory(dtype, [K_STAGES, 1, 1, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_ring = gl.allocate_shared_memory(dtype, [V_STAGES, 1, 1, BLOCK_N, HEAD_DIM], v_desc.layout)
    q_ready = gl.allocate_shared_memory(gl.int64, [4, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [4, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    k_ready, k_empty, v_ready, v_empty = _kv_ring_barriers(K_STAGES, V_STAGES, 2)
    for i in gl.static_range(4):
        mbarrier.init(q_ready.index(i), count=1)
        mbarrier.init(q_empty.index(i), count=1)
    for i in gl.static_range(2):
        mbarrier.init(turn.index(i), count=1)
    consumer_args = (
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, TR, tr_stride,
    )  # fmt: skip
    loader_args = (
        q_desc, k_desc, v_desc, q_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, H,
        N_Q, n_tiles, n_kv,
    )  # fmt: skip
    if MODE == 0:  # plain
        gl.warp_specialize(
            [(_tp_c0_plain, consumer_args), (_tp_c1_plain, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 1:  # q
        gl.warp_specialize(
            [(_tp_c0_q, consumer_args), (_tp_c1_q, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 2:  # trace
        gl.warp_specialize(
            [(_tp_c0_trace, consumer_args), (_tp_c1_trace, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 3:  # qtrace
        gl.warp_specialize(
            [(_tp_c0_qtrace, consumer_args), (_tp_c1_qtrace, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 4:  # cplain
        gl.warp_specialize(
            [(_tc_c0_cplain, consumer_args), (_tc_c1_cplain, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 5:  # ctrace
        gl.warp_specialize(
            [(_tc_c0_ctrace, consumer_args), (_tc_c1_ctrace, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 13:  # c2plain
        gl.warp_specialize(
            [(_tc2_c0_c2plain, consumer_args), (_tc2_c1_c2plain, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 14:  # c2trace
        gl.warp_specialize(
            [(_tc2_c0_c2trace, consumer_args), (_tc2_c1_c2trace, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 15:  # seqplain
        gl.warp_specialize(
            [(_seq_c0_seqplain, consumer_args), (_seq_c1_seqplain, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 16:  # seqtrace
        gl.warp_specialize(
            [(_seq_c0_seqtrace, consumer_args), (_seq_c1_seqtrace, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 22:  # v1plain
        gl.warp_specialize(
            [(_tp_c0_v1plain, consumer_args), (_tp_c1_v1plain, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 23:  # v1trace
        gl.warp_specialize(
            [(_tp_c0_v1trace, consumer_args), (_tp_c1_v1trace, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 24:  # v2plain
        gl.warp_specialize(
            [(_tp_c0_v2plain, consumer_args), (_tp_c1_v2plain, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 25:  # v2trace
        gl.warp_specialize(
            [(_tp_c0_v2trace, consumer_args), (_tp_c1_v2trace, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 26:  # v3plain
        gl.warp_specialize(
            [(_tp_c0_v3plain, consumer_args), (_tp_c1_v3plain, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 27:  # v3trace
        gl.warp_specialize(
            [(_tp_c0_v3trace, consumer_args), (_tp_c1_v3trace, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 28:  # v4plain
        gl.warp_specialize(
            [(_tp_c0_v4plain, consumer_args), (_tp_c1_v4plain, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 29:  # v4trace
        gl.warp_specialize(
            [(_tp_c0_v4trace, consumer_args), (_tp_c1_v4trace, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 30:  # v5plain
        gl.warp_specialize(
            [(_tp_c0_v5plain, consumer_args), (_tp_c1_v5plain, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 31:  # v5trace
        gl.warp_specialize(
            [(_tp_c0_v5trace, consumer_args), (_tp_c1_v5trace, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 32:  # v6plain
        gl.warp_specialize(
            [(_tp_c0_v6plain, consumer_args), (_tp_c1_v6plain, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 33:  # v6trace
        gl.warp_specialize(
            [(_tp_c0_v6trace, consumer_args), (_tp_c1_v6trace, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 34:  # v7plain
        gl.warp_specialize(
            [(_tp_c0_v7plain, consumer_args), (_tp_c1_v7plain, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 35:  # v7trace
        gl.warp_specialize(
            [(_tp_c0_v7trace, consumer_args), (_tp_c1_v7trace, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 36:  # v8plain
        gl.warp_specialize(
            [(_tp_c0_v8plain, consumer_args), (_tp_c1_v8plain, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    elif MODE == 37:  # v8trace
        gl.warp_specialize(
            [(_tp_c0_v8trace, consumer_args), (_tp_c1_v8trace, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [240, 24],
        )


# ------------------------------------------------------------------- one tile, row sums on the tensor core
@gluon.jit
def _softmax_nosum(s, m_i, qk_scale, block, n_blocks, N_KV, BLOCK_N: gl.constexpr, s_layout: gl.constexpr):
    if block == n_blocks - 1:
        cols = block * BLOCK_N + gl.arange(0, BLOCK_N, gl.SliceLayout(0, s_layout))
        scaled = gl.where((cols < N_KV)[None, :], s * qk_scale, float("-inf"))
        m_new = gl.maximum(m_i, gl.max(scaled, 1))
        p = gl.exp2(scaled - m_new[:, None])
    else:
        m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
        p = gl.exp2(s * qk_scale - m_new[:, None])
    alpha = gl.exp2(m_i - m_new)
    return p, alpha, m_new


@gluon.jit
def _tcs_work(
    o_desc, LSE, q_smem, ones_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b,
    h, start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row, ME: gl.constexpr, TRACE: gl.constexpr,
):  # fmt: skip
    """The one-tile consumer with l = Σ bf16(P) computed by a second async wgmma P · ones (m64n8) beside P·V."""
    dtype: gl.constexpr = o_desc.dtype
    HEAD_DIM: gl.constexpr = o_desc.block_type.shape[3]
    BLOCK_N: gl.constexpr = k_ring.shape[3]
    K_STAGES: gl.constexpr = k_ring.shape[0]
    V_STAGES: gl.constexpr = v_ring.shape[0]
    ROWS: gl.constexpr = q_smem.shape[3]
    LW: gl.constexpr = ones_smem.shape[0]
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 16]
    )
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16]
    )
    l_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, LW, 16]
    )
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    rows_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    rows_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    rows_l: gl.constexpr = gl.SliceLayout(1, l_layout)
    other: gl.constexpr = (ME + 1) % q_smem.shape[0]
    tr = TR + tr_row
    if TRACE:
        _tr(tr, 0, _clock())
        _tr(tr, 1, _gtime())
        _tr(tr, 2, _smid().to(gl.int64))
    ones = ones_smem.permute((1, 0))  # (BLOCK_N, LW): the B operand of P · ones

    q = q_smem.index(ME).reshape([ROWS, HEAD_DIM])
    zero_s = gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout)
    mbarrier.wait(q_ready.index(ME), 0)
    if TRACE:
        _tr(tr, 3, _clock())
    _wait_loaded(k_ready, 0, K_STAGES)
    _pp_take_turn(turn, ME, 0)
    s = warpgroup_mma(
        q, _tile(k_ring, 0, BLOCK_N, HEAD_DIM).permute((1, 0)), zero_s, use_acc=False, is_async=True
    )
    mbarrier.arrive(turn.index(other))
    s = warpgroup_mma_wait(0, deps=(s,))
    mbarrier.arrive(k_empty.index(0))
    m_i = gl.max(s, 1) * qk_scale
    p = gl.exp2(s * qk_scale - m_i[:, None])
    p16 = p.to(dtype)
    p_op = gl.convert_layout(p16, p_layout)
    acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)
    l_acc = gl.zeros([ROWS, LW], gl.float32, l_layout)

    for j in range(0, n_kv - 1):
        st = tr + 8 + 4 * j
        if TRACE:
            _tr(st, 0, _clock())
        _wait_loaded(k_ready, j + 1, K_STAGES)
        if TRACE:
            _tr(st, 1, _clock())
        _wait_loaded(v_ready, j, V_STAGES)
        if TRACE:
            _tr(st, 2, _clock())
        _pp_take_turn(turn, ME, j + 1)
        if TRACE:
            _tr(st, 3, _clock())
        k_next = _tile(k_ring, (j + 1) % K_STAGES, BLOCK_N, HEAD_DIM).permute((1, 0))
        s_next = warpgroup_mma(q, k_next, zero_s, use_acc=False, is_async=True)
        pv = warpgroup_mma(p_op, _tile(v_ring, j % V_STAGES, BLOCK_N, HEAD_DIM), acc, is_async=True)
        pl = warpgroup_mma(p_op, ones, l_acc, is_async=True)
        mbarrier.arrive(turn.index(other))
        s = warpgroup_mma_wait(2, deps=(s_next,))
        mbarrier.arrive(k_empty.index((j + 1) % K_STAGES))
        p, alpha, m_i = _softmax_nosum(s, m_i, qk_scale, j + 1, n_kv, N_KV, BLOCK_N, s_layout)
        acc, l_acc, p_op = warpgroup_mma_wait(0, deps=(pv, pl, p_op))
        mbarrier.arrive(v_empty.index(j % V_STAGES))
        acc = acc * gl.convert_layout(alpha, rows_o)[:, None]
        l_acc = l_acc * gl.convert_layout(alpha, rows_l)[:, None]
        p_op = gl.convert_layout(p.to(dtype), p_layout)

    last = n_kv - 1
    if TRACE:
        _tr(tr, 4, _clock())
    _wait_loaded(v_ready, last, V_STAGES)
    _pp_take_turn(turn, ME, n_kv)
    acc = warpgroup_mma(p_op, _tile(v_ring, last % V_STAGES, BLOCK_N, HEAD_DIM), acc, is_async=True)
    l_acc = warpgroup_mma(p_op, ones, l_acc, is_async=True)
    mbarrier.arrive(turn.index(other))
    acc, l_acc = warpgroup_mma_wait(0, deps=(acc, l_acc))
    l_i = gl.convert_layout(gl.max(l_acc, 1), rows_s)
    o = acc / gl.convert_layout(l_i, rows_o)[:, None]
    q.store(o.to(dtype))
    fence_async_shared()
    tma.async_copy_shared_to_global(o_desc, [b, h, start_m + ROWS * ME, 0], q_smem.index(ME))
    rows = start_m + ROWS * ME + gl.arange(0, ROWS, rows_s)
    lse = (m_i + gl.log2(l_i)) * 0.6931471805599453
    gl.store(LSE + pid_bh.to(gl.int64) * N_Q + rows, lse, mask=rows < N_Q)
    tma.store_wait(0)
    if TRACE:
        _tr(tr, 5, _clock())
        _tr(tr, 6, _gtime())


@gluon.jit
def _tcs_c0_plain(
    o_desc, LSE, q_smem, ones_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b,
    h, start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1,
):  # fmt: skip
    _tcs_work(
        o_desc, LSE, q_smem, ones_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh,
        b, h, start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, 0, False,
    )  # fmt: skip


@gluon.jit
def _tcs_c1_plain(
    o_desc, LSE, q_smem, ones_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b,
    h, start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1,
):  # fmt: skip
    _tcs_work(
        o_desc, LSE, q_smem, ones_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh,
        b, h, start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row1, 1, False,
    )  # fmt: skip


@gluon.jit
def _tcs_c0_trace(
    o_desc, LSE, q_smem, ones_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b,
    h, start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1,
):  # fmt: skip
    _tcs_work(
        o_desc, LSE, q_smem, ones_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh,
        b, h, start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, 0, True,
    )  # fmt: skip


@gluon.jit
def _tcs_c1_trace(
    o_desc, LSE, q_smem, ones_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b,
    h, start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1,
):  # fmt: skip
    _tcs_work(
        o_desc, LSE, q_smem, ones_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh,
        b, h, start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row1, 1, True,
    )  # fmt: skip


@gluon.jit
def _tcs_kernel(
    q_desc, k_desc, v_desc, o_desc, LSE, H, N_Q, N_KV, qk_scale, TR, tr_stride, K_STAGES: gl.constexpr,
    V_STAGES: gl.constexpr, MODE: gl.constexpr,
):  # fmt: skip
    ROWS: gl.constexpr = q_desc.block_type.shape[2]
    HEAD_DIM: gl.constexpr = q_desc.block_type.shape[3]
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[2]
    LW: gl.constexpr = 8
    n_m = gl.cdiv(N_Q, 2 * ROWS)
    pid = gl.program_id(0)
    pid_m = pid % n_m
    pid_bh = pid // n_m
    b = pid_bh // H
    h = pid_bh % H
    start_m = pid_m * 2 * ROWS
    n_kv = gl.cdiv(N_KV, BLOCK_N)
    dtype: gl.constexpr = q_desc.dtype
    q_smem = gl.allocate_shared_memory(dtype, [2, 1, 1, ROWS, HEAD_DIM], q_desc.layout)
    k_ring = gl.allocate_shared_memory(dtype, [K_STAGES, 1, 1, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_ring = gl.allocate_shared_memory(dtype, [V_STAGES, 1, 1, BLOCK_N, HEAD_DIM], v_desc.layout)
    ones_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([LW, BLOCK_N], dtype)
    fill: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])
    ones_smem = gl.allocate_shared_memory(
        dtype, [LW, BLOCK_N], ones_layout, gl.full([LW, BLOCK_N], 1.0, dtype, fill)
    )
    fence_async_shared()
    q_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    k_ready, k_empty, v_ready, v_empty = _kv_ring_barriers(K_STAGES, V_STAGES, 2)
    for i in gl.static_range(2):
        mbarrier.init(q_ready.index(i), count=1)
        mbarrier.init(turn.index(i), count=1)
    tr_row0 = (pid * 2).to(gl.int64) * tr_stride
    tr_row1 = tr_row0 + tr_stride
    consumer_args = (
        o_desc, LSE, q_smem, ones_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn, pid_bh,
        b, h, start_m, n_kv, N_Q, N_KV, qk_scale, TR, tr_row0, tr_row1,
    )  # fmt: skip
    loader_args = (
        q_desc, k_desc, v_desc, q_smem, k_ring, v_ring, q_ready, k_ready, k_empty, v_ready, v_empty, b, h,
        start_m, n_kv,
    )  # fmt: skip
    if MODE == 0:
        gl.warp_specialize(
            [(_tcs_c0_plain, consumer_args), (_tcs_c1_plain, consumer_args), (_ot_loader, loader_args)],
            [4, 1],
            [240, 24],
        )
    else:
        gl.warp_specialize(
            [(_tcs_c0_trace, consumer_args), (_tcs_c1_trace, consumer_args), (_ot_loader, loader_args)],
            [4, 1],
            [240, 24],
        )


# ----------------------------------------------------------------------------------------------- host side
def launch(kind: str, q, k, v, trace_steps: int, mode: int = 2):  # type: ignore[no-untyped-def]
    batch, heads, n, d = q.shape
    o = torch.empty_like(q)
    lse = torch.empty(batch, heads, n, device=q.device, dtype=torch.float32)
    tiles = triton_cdiv(n, 128) * batch * heads
    descs = (hop.descriptor(q, 64), hop.descriptor(k, 128), hop.descriptor(v, 128), hop.descriptor(o, 64))
    scale = d**-0.5 * 1.4426950408889634
    stride = HEAD + SLOTS * trace_steps + (2 * trace_steps if mode == 21 else 0)
    if kind == "tcs":
        tr = torch.zeros(tiles * 2, stride, device=q.device, dtype=torch.int64)
        _tcs_kernel[(tiles,)](
            *descs,
            lse,
            heads,
            n,
            n,
            scale,
            tr,
            stride,
            K_STAGES=2,
            V_STAGES=2,
            MODE=1 if mode == 2 else 0,
            num_warps=4,
        )
    elif kind == "one":
        tr = torch.zeros(tiles * 2, stride, device=q.device, dtype=torch.int64)
        _one_tile_kernel[(tiles,)](
            *descs,
            lse,
            heads,
            n,
            n,
            scale,
            tr,
            stride,
            START_DELAY,
            K_STAGES=2,
            V_STAGES=2,
            MODE=mode,
            DELAY=DELAY_NS,
            num_warps=4,
        )
    else:
        ctas = min(tiles, CTAS or hop.sm_count(q.device))
        tr = torch.zeros(ctas * 2, stride, device=q.device, dtype=torch.int64)
        _persistent_kernel[(ctas,)](
            *descs,
            lse,
            batch * heads,
            heads,
            n,
            n,
            scale,
            tr,
            stride,
            K_STAGES=2,
            V_STAGES=2,
            MODE=mode,
            DELAY=DELAY_NS,
            num_warps=4,
        )
    return o, tr


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def q(xs: list[float], f: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(f * len(s)))]


def analyse(kind: str, tr: torch.Tensor, n_kv: int) -> dict:
    rows = tr.cpu().tolist()
    step, wait_k, wait_v, wait_turn, head, tail, span_ns = [], [], [], [], [], [], []
    for r in rows:
        stamps = r[HEAD:]
        n_steps = sum(1 for i in range(0, len(stamps), SLOTS) if stamps[i])
        tops = [stamps[SLOTS * i] for i in range(n_steps + 1) if SLOTS * i < len(stamps)]
        for i in range(n_steps):
            a, bk, bv, c = stamps[SLOTS * i : SLOTS * i + 4]
            wait_k.append(bk - a)
            wait_v.append(bv - bk)
            wait_turn.append(c - bv)
            nxt = tops[i + 1] if i + 1 < len(tops) and tops[i + 1] else None
            if nxt and (kind == "one" or (i + 1) % n_kv):  # steps inside a tile
                step.append(nxt - a)
        head.append(stamps[0] - r[0] if stamps[0] else 0)  # kernel start → first loop step
        tail.append(r[5] - r[4])
        span_ns.append(r[6] - r[1])
    # phase of the ping-pong: consumer 1's GEMM issue (turn taken) minus consumer 0's, same step, same SM
    offsets = []
    for r0, r1 in zip(rows[0::2], rows[1::2], strict=False):
        s0, s1 = r0[HEAD:], r1[HEAD:]
        for i in range(0, len(s0), SLOTS):
            if s0[i] and s1[i] and s0[i + 3] and s1[i + 3] and s0[i + 3] > s0[i] and s1[i + 3] > s1[i]:
                offsets.append(s1[i + 3] - s0[i + 3])
    per_tile = {}
    if kind != "one":
        for r0, r1 in zip(rows[0::2], rows[1::2], strict=False):
            s0, s1 = r0[HEAD:], r1[HEAD:]
            for i in range(0, len(s0) // SLOTS - 1):
                a, nxt = s0[SLOTS * i], s0[SLOTS * (i + 1)]
                if not (a and nxt) or (i + 1) % n_kv == 0:
                    continue
                t = i // n_kv
                d = per_tile.setdefault(t, ([], []))
                d[0].append(nxt - a)
                if s0[SLOTS * i + 3] and s1[SLOTS * i + 3]:
                    d[1].append(s1[SLOTS * i + 3] - s0[SLOTS * i + 3])
    out = {
        "per_tile": {
            t: (statistics.median(v[0]), statistics.median(v[1]) if v[1] else None)
            for t, v in sorted(per_tile.items())
        },
        "phase_median": statistics.median(offsets) if offsets else None,
        "phase_p10": q(offsets, 0.1) if offsets else None,
        "phase_p90": q(offsets, 0.9) if offsets else None,
        "steps": len(step),
        "step_cycles_median": statistics.median(step),
        "step_p10": q(step, 0.1),
        "step_p90": q(step, 0.9),
        "step_p99": q(step, 0.99),
        "wait_k_median": statistics.median(wait_k),
        "wait_k_mean": statistics.fmean(wait_k),
        "wait_v_mean": statistics.fmean(wait_v),
        "wait_turn_mean": statistics.fmean(wait_turn),
        "wait_turn_median": statistics.median(wait_turn),
        "head_cycles_median": statistics.median(head),
        "q_wait_median": statistics.median([r[3] - r[0] for r in rows]),
        "tail_cycles_median": statistics.median(tail),
        "span_us_median": statistics.median(span_ns) / 1e3,
    }
    return out


DELAY_NS = 0
CTAS = 0
START_DELAY = 0
MODES = {
    "plain": 0,
    "q": 1,
    "trace": 2,
    "qtrace": 3,
    "cplain": 4,
    "ctrace": 5,
    "abl1": 6,
    "abl2": 7,
    "abl3": 8,
    "abl4": 9,
    "abl5": 10,
    "abl6": 11,
    "lazy": 12,
    "c2plain": 13,
    "c2trace": 14,
    "seqplain": 15,
    "seqtrace": 16,
    "padtrace": 17,
    "padplain": 18,
    "pad2trace": 19,
    "pad2plain": 20,
    "abl8": 21,
    "v1plain": 22,
    "v1trace": 23,
    "v2plain": 24,
    "v2trace": 25,
    "v3plain": 26,
    "v3trace": 27,
    "v4plain": 28,
    "v4trace": 29,
    "v5plain": 30,
    "v5trace": 31,
    "v6plain": 32,
    "v6trace": 33,
    "v7plain": 34,
    "v7trace": 35,
    "v8plain": 36,
    "v8trace": 37,
    "lo1trace": 40,
    "lo1plain": 41,
    "lo2trace": 42,
    "lo2plain": 43,
}


def segments(tr: torch.Tensor, n_kv: int) -> dict:
    """abl8 rows: per CTA, the phase of the ping-pong and consumer 0's step split at the two wgmma waits."""
    rows = tr.cpu().tolist()
    per_cta = []
    for r0, r1 in zip(rows[0::2], rows[1::2], strict=False):
        s0, s1 = r0[HEAD:], r1[HEAD:]
        ex = r0[HEAD + SLOTS * n_kv :]
        phase, qk, sm, rest, step = [], [], [], [], []
        for j in range(n_kv - 2):
            top, turn, nxt = s0[SLOTS * j], s0[SLOTS * j + 3], s0[SLOTS * (j + 1)]
            t_qk, t_pv = ex[2 * j], ex[2 * j + 1]
            if not (top and turn and nxt and t_qk and t_pv and s1[SLOTS * j + 3]):
                continue
            phase.append(s1[SLOTS * j + 3] - turn)
            qk.append(t_qk - turn)
            sm.append(t_pv - t_qk)
            rest.append(nxt - t_pv)
            step.append(nxt - top)
        if step:
            per_cta.append([statistics.median(x) for x in (phase, step, qk, sm, rest)])
    out = {}
    for name, keep in (
        ("fast", lambda c: abs(c[0] - c[1] / 2) > 0.07 * c[1]),
        ("slow", lambda c: abs(c[0] - c[1] / 2) <= 0.07 * c[1]),
    ):
        sel = [c for c in per_cta if keep(c)]
        if sel:
            out[name] = {
                "ctas": len(sel),
                **{
                    k: statistics.median(c[i] for c in sel)
                    for i, k in enumerate(
                        ("phase", "step", "issue_to_qk_done", "qk_done_to_pv_done", "pv_done_to_next_top")
                    )
                },
            }
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", default="4,8,4096,128;1,8,16384,128")
    parser.add_argument("--json")
    parser.add_argument("--bench", action="store_true")
    parser.add_argument(
        "--start-delay", type=int, default=0, help="ns the second consumer sleeps before its first Q·Kᵀ"
    )
    parser.add_argument("--ctas", type=int, default=0, help="persistent grid size (default: one per SM)")
    parser.add_argument("--delay", type=int, default=0, help="ns × (CTA % 8) of sleep before a CTA starts")
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument(
        "--trace", default="one:trace,one:abl1,one:abl2,one:abl3,one:abl4,persistent:trace,persistent:ctrace"
    )
    parser.add_argument("--bench-modes", default="one:plain,persistent:plain,persistent:cplain")
    args = parser.parse_args()
    import triton.testing

    global DELAY_NS, CTAS, START_DELAY
    DELAY_NS = args.delay
    START_DELAY = args.start_delay
    CTAS = args.ctas

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    results = []
    for spec in args.shapes.split(";"):
        b, h, n, d = (int(x) for x in spec.split(","))
        torch.manual_seed(0)
        qkv = [torch.randn(b, h, n, d, device="cuda", dtype=dtype) for _ in range(3)]
        n_kv = triton_cdiv(n, 128)
        tiles = triton_cdiv(n, 128) * b * h
        steps = {
            "one": n_kv,
            "tcs": n_kv,
            "persistent": n_kv * triton_cdiv(tiles, CTAS or hop.sm_count(qkv[0].device)),
        }
        ref = torch.nn.functional.scaled_dot_product_attention(*qkv)
        for pair in args.trace.split(","):
            kind, mode = pair.split(":")
            o, tr = launch(kind, *qkv, steps[kind], MODES[mode])
            torch.cuda.synchronize()
            err = (o.float() - ref.float()).abs().max().item()
            row = {"shape": spec, "kind": kind, "mode": mode, "max_err": err}
            if "trace" in mode or "abl" in mode:
                for _ in range(2):
                    o, tr = launch(kind, *qkv, steps[kind], MODES[mode])
                row.update(analyse(kind, tr[:, : HEAD + SLOTS * steps[kind]], n_kv))
                if mode == "abl8":
                    row["segments"] = segments(tr, n_kv)
            results.append(row)
            print(json.dumps(row), flush=True)
        if args.bench:
            cfgs = {
                c: hop.HopperConfig(128, 4, 2, 2, pingpong=True, persistent=c == "persistent")
                for c in ("one", "persistent")
            }
            o = torch.empty_like(qkv[0])
            lse = torch.empty(b, h, n, device="cuda")
            fns = {
                f"prod-{c}": (
                    lambda cfg=cfgs[c], x=qkv, o=o, lse=lse, d=d: hop._launch(*x, o, lse, d**-0.5, cfg)
                )
                for c in cfgs
            }
            fns["cudnn"] = lambda x=qkv: torch.nn.functional.scaled_dot_product_attention(*x)
            for pair in args.bench_modes.split(","):
                c, mode = pair.split(":")
                fns[f"{c}-{mode}"] = lambda c=c, mode=mode, x=qkv: launch(c, *x, 1, MODES[mode])
            times: dict[str, list[float]] = {k: [] for k in fns}
            with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.CUDNN_ATTENTION):
                for _ in range(5):
                    for k, fn in fns.items():
                        times[k].append(triton.testing.do_bench(fn, warmup=25, rep=100))
            flops = 4 * b * h * n * n * d
            row = {
                "shape": spec,
                "dtype": args.dtype,
                "tflops": {k: flops / statistics.median(v) / 1e9 for k, v in times.items()},
                "ms_all": times,
            }
            results.append(row)
            print(json.dumps(row["tflops"]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
