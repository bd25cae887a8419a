"""Hopper (sm_90) forward attention in Gluon: the softmax runs while the tensor cores work.

Triton's compiler keeps a ``tl.dot`` asynchronous only when its result feeds another dot as accumulator, so
in the Triton kernel (``attention.py``) the softmax of a block always waits for that block's wgmma and the
tensor cores idle meanwhile. Gluon (Triton's explicit-layout dialect) lets a kernel order the asynchronous
work itself. Both kernels here follow FlashAttention-3's order inside a warpgroup:

    issue S(j+1) = Q·K(j+1)ᵀ and O += P(j)·V(j)   (both async wgmma, back to back on the tensor cores)
    wait for S(j+1); softmax of S(j+1)            (while O += P(j)·V(j) still runs)
    wait for O; rescale it by the new row max; P(j+1) to the operand layout

* ``_attn_fwd_hopper_kernel``: one CTA of 4 or 8 warps that issues its own TMA loads. No longer a candidate
  (session 11: 1–2 % ahead only at N = 4100); ``benchmarks/probe_hopper.py`` still checks and sweeps it.
* ``_attn_fwd_pingpong_kernel``: warp-specialised. Two or three consumer warpgroups of 64 query rows take
  turns (round robin) issuing their GEMMs, so one's softmax overlaps the others'
  GEMMs; a one-warp partition with 24 registers streams Q, K and V by TMA. Two consumers (240 registers
  each) at head dim 128; three (160 each, 192 rows per CTA) at head dim 64, where per-step overhead, not
  the exponentials, limited two (benchmarks/ATTENTION_NOTES.md). A consumer whose rows all lie past N only
  keeps the handshakes going.

Keys and values arrive in rings of shared-memory slots with a "ready" mbarrier each, and every consumer
releases a slot for the loader once it is done with it. In the ping-pong kernel with two consumers the turns
and the releases go over named barriers, with three over mbarriers (``_named_handshakes``). The rule that
keeps it from hanging: block b goes into slot b % STAGES only after block b − STAGES has been consumed, and
every block is issued before it is waited for. A named barrier counts threads, not phases, so every arrival
must be matched by exactly one wait before the CTA exits: the loader takes the releases of the last blocks
after its last load, and the last warpgroup does not pass a turn after its last one.
Descriptors are four-dimensional over (B, H, N, D) with the tensor's own strides, so fused-qkv views are read
in place and rows past N read as zero (the last key block is masked to ``-inf``; output rows past N are
clipped by the TMA store). Gluon tensors must have power-of-two shapes, so head dims 48, 80 and 96 run in
two column pieces (80 = 64 + 16, :func:`head_pieces`): the ping-pong kernel then chains two wgmmas for S and
keeps two output accumulators. Where the head dim is one piece the "tail" arguments are None (a constexpr: no
TMA map is encoded for them at launch) and the kernel passes the first piece in their place.

``attention_hopper_persistent.py`` is the ping-pong kernel with one CTA per SM that runs its query tiles back
to back (``HopperConfig.persistent``). Only the forward runs here; the Hopper backward is
``attention_hopper_bwd.py``. :func:`hopper_forward` is used by
``attention._forward`` on sm_90 for head dims in :data:`HOPPER_HEAD_DIMS` when the strides suit TMA.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from .attention import LOG2E, capability, cdiv, choice_key
from .launch import Site, launch

# The TMA copies: async_load / async_store from Triton 3.8 on (3.8 keeps the old names as aliases, 3.9 drops
# them), async_copy_global_to_shared / async_copy_shared_to_global before.
tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
tma_store = getattr(tma, "async_store", None) or tma.async_copy_shared_to_global
# A barrier of every thread of the CTA: gl.barrier from Triton 3.7 on, gl.thread_barrier before.
cta_barrier = getattr(gl, "barrier", None) or gl.thread_barrier
# shared_memory_descriptor.reinterpret is public from Triton 3.9 on (_reinterpret before).
PUBLIC_REINTERPRET = gl.constexpr(hasattr(gl.shared_memory_descriptor, "reinterpret"))

log = logging.getLogger(__name__)
K = TypeVar("K")

HOPPER_HEAD_DIMS = (48, 64, 80, 96, 128)
# setmaxnreg of the worker partitions (second consumer warpgroup, loader warp); Triton gives the default
# partition (the first consumer) what they leave of the register file.
# Per consumer count: two take 240 each; three share the file at 160 (4 + 4 + 4 + 1 warps).
CONSUMER_REGS = {2: 240, 3: 160}
LOADER_REGS = 24
# The ping-pong kernels' handshakes (turns, ring slots released) on named barriers (bar.sync / bar.arrive by
# every thread) instead of mbarriers: Gluon 3.6 makes a warpgroup BAR.SYNC before each mbarrier arrive (one
# thread arrives for the warpgroup), three on every consumer's critical path a step. Session 18: +1-2 % at
# head dim 128 and 4,096 tokens. With three consumers (head dim 64) the mbarrier handshakes are 0-4 % faster
# (session 19, H100, three processes each way), so those kernels keep them: see _named_handshakes.
# PATHOFLASH_NAMED_BARRIERS=0 gives every kernel the mbarrier handshakes (A/B timing; read once, at import).
# Ids: Triton's warp specialisation takes 0 to the consumer count (3 at most here); K slots 4-7, V slots 8-11,
# turns 13-15.
NAMED_BARRIERS = gl.constexpr(os.environ.get("PATHOFLASH_NAMED_BARRIERS", "1") != "0")
# P carried from one key step to the next (every Gluon forward's step loop) as 32-bit words of two 16-bit
# values (_pack_p / _unpack_p), not as 16-bit values, which ptxas re-packs with 32 PRMT a step. Session 23
# (the masked last block still inside the loop) found it 1-2 % slower under Triton 3.6 and kept it to 3.8 and
# three consumers. Since the last block's step runs outside the loop (_pp_work, session 27), every such loop
# without packing has the 32 PRMT under 3.6 and 3.8, with packing none, and the two changes together
# measured 1.01-1.12x the session-26 kernels at the issue's shapes under both (H100; ATTENTION_NOTES
# "Session 27"). On for every Triton and consumer count; PATHOFLASH_PACKED_P=0 turns it off (read at import).
PACKED_P = gl.constexpr(os.environ.get("PATHOFLASH_PACKED_P", "1") == "1")
K_FREE_BAR = gl.constexpr(4)
V_FREE_BAR = gl.constexpr(8)
MAX_RING_SLOTS = 4  # per ring: the named-barrier ids above leave room for four
# Unsplit head dims pass None for the second column pieces (Triton then encodes half the TMA maps at launch;
# session 22); benchmarks/probe_host.py turns it off to time the difference in one process.
_unsplit_tails_as_none = True


@triton.constexpr_function
def _named_handshakes(enabled, consumers):  # type: ignore[no-untyped-def]
    """Whether a ping-pong kernel with ``consumers`` warpgroups hands over on named barriers (``enabled``:
    NAMED_BARRIERS, passed in so that Triton's cache key sees it): two consumers only."""
    return bool(enabled) and consumers == 2


@dataclass(frozen=True)
class HopperConfig:
    """One launch configuration: ``block_m`` query rows per CTA, ``block_n`` keys per step, ring slots per K/V."""

    block_n: int
    num_warps: int
    k_stages: int
    v_stages: int
    pingpong: bool = False  # 4-warp consumer warpgroups taking turns, and a 1-warp TMA loader
    rows: int = 64  # ping-pong: query rows per consumer warpgroup (64, or 128 as two wgmma row tiles)
    consumers: int = 2  # ping-pong: consumer warpgroups (2, or 3 with fewer registers each)
    persistent: bool = False  # ping-pong, head dims 64/128: one CTA per SM (attention_hopper_persistent.py)

    @property
    def block_m(self) -> int:
        return self.consumers * self.rows if self.pingpong else 16 * self.num_warps


@gluon.jit
def _tile(ring, slot, ROWS: gl.constexpr, HEAD_DIM: gl.constexpr):
    """Slot ``slot`` of a ring of (1, 1, ROWS, HEAD_DIM) TMA boxes, as a (ROWS, HEAD_DIM) matrix."""
    return ring.index(slot).reshape([ROWS, HEAD_DIM])


@gluon.jit
def _issue_load(desc, ring, ready, block, n_blocks, b, h, BLOCK: gl.constexpr, STAGES: gl.constexpr):
    """Start the TMA copy of key/value block ``block`` into its ring slot (nothing past the last block)."""
    slot = block % STAGES
    pred = block < n_blocks
    mbarrier.expect(ready.index(slot), desc.block_type.nbytes, pred=pred)
    tma_load(desc, [b, h, block * BLOCK, 0], ready.index(slot), ring.index(slot), pred=pred)


@gluon.jit
def _wait_loaded(ready, block, STAGES: gl.constexpr):
    mbarrier.wait(ready.index(block % STAGES), (block // STAGES) & 1)


@gluon.jit
def _softmax_block(
    s, m_i, l_i, qk_scale, block, n_blocks, N_KV, BLOCK_N: gl.constexpr, s_layout: gl.constexpr,
):  # fmt: skip
    """Online-softmax update for the scores of key block ``block``; only the last block masks its columns.

    Returns p, the rescale factor alpha and the new row max and sum.
    """
    if block == n_blocks - 1:
        p, alpha, m_new, l_new = _softmax_masked(s, m_i, l_i, qk_scale, block, N_KV, BLOCK_N, s_layout)
    else:
        p, alpha, m_new, l_new = _softmax_full(s, m_i, l_i, qk_scale)
    return p, alpha, m_new, l_new


@gluon.jit
def _softmax_full(s, m_i, l_i, qk_scale):
    """:func:`_softmax_block` for a block with no column past N_KV."""
    # scale ≥ 0, so max(s) · scale is the max of the scaled scores; one FMA per score below.
    m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
    p = gl.exp2(s * qk_scale - m_new[:, None])
    alpha = gl.exp2(m_i - m_new)
    return p, alpha, m_new, l_i * alpha + gl.sum(p, 1)


@gluon.jit
def _softmax_masked(s, m_i, l_i, qk_scale, block, N_KV, BLOCK_N: gl.constexpr, s_layout: gl.constexpr):
    """:func:`_softmax_block` for the last key block: columns past N_KV count as -inf."""
    cols = block * BLOCK_N + gl.arange(0, BLOCK_N, gl.SliceLayout(0, s_layout))
    scaled = gl.where((cols < N_KV)[None, :], s * qk_scale, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(scaled, 1))
    p = gl.exp2(scaled - m_new[:, None])
    alpha = gl.exp2(m_i - m_new)
    return p, alpha, m_new, l_i * alpha + gl.sum(p, 1)


@gluon.jit
def _one_group_step(
    p_op, acc, m_i, l_i, q, k_desc, v_desc, k_ring, v_ring, k_ready, v_ready, zero_s, j, n_kv, N_KV, b, h,
    qk_scale, LAST: gl.constexpr,
):  # fmt: skip
    """One key step of :func:`_attn_fwd_hopper_kernel`: S(j+1) = Q·K(j+1)ᵀ and O += P(j)·V(j) issued back to
    back, the softmax of S(j+1) while O runs, then the loads of the ring slots this step freed. ``p_op``
    holds P(j) (packed words with PACKED_P) and comes back holding P(j+1); ``LAST`` as in :func:`_pp_step`."""
    dtype: gl.constexpr = q.dtype
    HEAD_DIM: gl.constexpr = q.shape[1]
    BLOCK_N: gl.constexpr = k_ring.shape[3]
    K_STAGES: gl.constexpr = k_ring.shape[0]
    V_STAGES: gl.constexpr = v_ring.shape[0]
    s_layout: gl.constexpr = zero_s.type.layout
    rows_o: gl.constexpr = gl.SliceLayout(1, acc.type.layout)
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc.type.layout, k_width=2)

    if PACKED_P:
        p_op = _unpack_p(p_op, dtype, p_layout)
    _wait_loaded(k_ready, j + 1, K_STAGES)
    k_next = _tile(k_ring, (j + 1) % K_STAGES, BLOCK_N, HEAD_DIM).permute((1, 0))
    s_next = warpgroup_mma(q, k_next, zero_s, use_acc=False, is_async=True)
    _wait_loaded(v_ready, j, V_STAGES)
    pv = warpgroup_mma(p_op, _tile(v_ring, j % V_STAGES, BLOCK_N, HEAD_DIM), acc, is_async=True)
    s = warpgroup_mma_wait(1, deps=(s_next,))  # S(j+1) is done; O += P(j)·V(j) still runs ...
    if LAST:
        p, alpha, m_i, l_i = _softmax_masked(s, m_i, l_i, qk_scale, n_kv - 1, N_KV, BLOCK_N, s_layout)
    else:
        p, alpha, m_i, l_i = _softmax_full(s, m_i, l_i, qk_scale)
    acc, p_op = warpgroup_mma_wait(0, deps=(pv, p_op))  # ... beside this softmax
    cta_barrier()  # every warp is past the wgmmas that read K(j+1) and V(j)
    _issue_load(k_desc, k_ring, k_ready, j + 1 + K_STAGES, n_kv, b, h, BLOCK_N, K_STAGES)
    _issue_load(v_desc, v_ring, v_ready, j + V_STAGES, n_kv, b, h, BLOCK_N, V_STAGES)
    acc = acc * gl.convert_layout(alpha, rows_o)[:, None]
    p_op = _pack_p(p, dtype) if PACKED_P else gl.convert_layout(p.to(dtype), p_layout)
    return p_op, acc, m_i, l_i


@gluon.jit
def _attn_fwd_hopper_kernel(
    q_desc,
    k_desc,
    v_desc,
    o_desc,
    LSE,
    H,
    N_Q,
    N_KV,
    qk_scale,
    HEAD_DIM: gl.constexpr,
    BLOCK_N: gl.constexpr,
    K_STAGES: gl.constexpr,
    V_STAGES: gl.constexpr,
    num_warps: gl.constexpr,
):
    BLOCK_M: gl.constexpr = 16 * num_warps
    dtype: gl.constexpr = q_desc.dtype
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, BLOCK_N, 16]
    )
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, HEAD_DIM, 16]
    )
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    rows_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    rows_o: gl.constexpr = gl.SliceLayout(1, o_layout)

    n_m = gl.cdiv(N_Q, BLOCK_M)  # 1-D grid, query blocks of one head adjacent (its K/V stay in L2)
    pid_m = gl.program_id(0) % n_m
    pid_bh = gl.program_id(0) // n_m
    b = pid_bh // H
    h = pid_bh % H
    start_m = pid_m * BLOCK_M
    n_kv = gl.cdiv(N_KV, BLOCK_N)

    q_smem = gl.allocate_shared_memory(dtype, q_desc.block_type.shape, q_desc.layout)
    k_ring = gl.allocate_shared_memory(dtype, [K_STAGES, 1, 1, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_ring = gl.allocate_shared_memory(dtype, [V_STAGES, 1, 1, BLOCK_N, HEAD_DIM], v_desc.layout)
    q_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [K_STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [V_STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_ready, count=1)
    for i in gl.static_range(K_STAGES):
        mbarrier.init(k_ready.index(i), count=1)
    for i in gl.static_range(V_STAGES):
        mbarrier.init(v_ready.index(i), count=1)

    mbarrier.expect(q_ready, q_desc.block_type.nbytes)
    tma_load(q_desc, [b, h, start_m, 0], q_ready, q_smem)
    for i in gl.static_range(K_STAGES):
        _issue_load(k_desc, k_ring, k_ready, i, n_kv, b, h, BLOCK_N, K_STAGES)
    for i in gl.static_range(V_STAGES):
        _issue_load(v_desc, v_ring, v_ready, i, n_kv, b, h, BLOCK_N, V_STAGES)

    q = q_smem.reshape([BLOCK_M, HEAD_DIM])
    zero_s = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, s_layout)
    mbarrier.wait(q_ready, 0)
    _wait_loaded(k_ready, 0, K_STAGES)
    s = warpgroup_mma(
        q, _tile(k_ring, 0, BLOCK_N, HEAD_DIM).permute((1, 0)), zero_s, use_acc=False, is_async=True
    )
    s = warpgroup_mma_wait(0, deps=(s,))
    cta_barrier()  # every warp is past the wgmma that read K(0): its slot takes K(K_STAGES)
    _issue_load(k_desc, k_ring, k_ready, K_STAGES, n_kv, b, h, BLOCK_N, K_STAGES)
    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, rows_s)
    l_i = gl.zeros([BLOCK_M], gl.float32, rows_s)
    p, _, m_i, l_i = _softmax_block(s, m_i, l_i, qk_scale, 0, n_kv, N_KV, BLOCK_N, s_layout)
    p_op = _pack_p(p, dtype) if PACKED_P else gl.convert_layout(p.to(dtype), p_layout)
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, o_layout)

    for j in range(0, n_kv - 2):  # at the top: P(j) in registers, O rescaled up to block j
        p_op, acc, m_i, l_i = _one_group_step(
            p_op, acc, m_i, l_i, q, k_desc, v_desc, k_ring, v_ring, k_ready, v_ready, zero_s, j, n_kv, N_KV,
            b, h, qk_scale, False,
        )  # fmt: skip
    if n_kv >= 2:  # the last block's step alone masks columns (see _pp_work)
        p_op, acc, m_i, l_i = _one_group_step(
            p_op, acc, m_i, l_i, q, k_desc, v_desc, k_ring, v_ring, k_ready, v_ready, zero_s, n_kv - 2, n_kv,
            N_KV, b, h, qk_scale, True,
        )  # fmt: skip
    if PACKED_P:
        p_op = _unpack_p(p_op, dtype, p_layout)

    last = n_kv - 1
    _wait_loaded(v_ready, last, V_STAGES)
    acc = warpgroup_mma(p_op, _tile(v_ring, last % V_STAGES, BLOCK_N, HEAD_DIM), acc, is_async=True)
    acc = warpgroup_mma_wait(0, deps=(acc,))

    mbarrier.invalidate(q_ready)
    for i in gl.static_range(K_STAGES):
        mbarrier.invalidate(k_ready.index(i))
    for i in gl.static_range(V_STAGES):
        mbarrier.invalidate(v_ready.index(i))

    o = acc / gl.convert_layout(l_i, rows_o)[:, None]
    q_smem.reshape([BLOCK_M, HEAD_DIM]).store(o.to(dtype))  # Q's slot is free: reuse it for the output
    fence_async_shared()
    tma_store(o_desc, [b, h, start_m, 0], q_smem)

    rows = start_m + gl.arange(0, BLOCK_M, rows_s)
    lse = (m_i + gl.log2(l_i)) * 0.6931471805599453  # natural log
    gl.store(LSE + pid_bh.to(gl.int64) * N_Q + rows, lse, mask=rows < N_Q)
    tma.store_wait(0)


# ----------------------------------------------------------------------------------------------------------
# Warp-specialised variant: FlashAttention-3's ping-pong. Two consumer warpgroups (64 query rows each) take
# turns issuing their GEMMs, so one's softmax runs while the other's GEMMs occupy the tensor cores; a
# one-warp partition streams Q, K and V by TMA into rings guarded by ready/empty mbarriers.
# ----------------------------------------------------------------------------------------------------------


@gluon.jit
def _load_pieces(desc, tail_desc, coord, bar, dst, tail_dst):
    """TMA copy of one box of both column pieces (the tail only where the head dim is split) onto ``bar``."""
    SPLIT: gl.constexpr = tail_desc.block_type.shape[3] != desc.block_type.shape[3]
    if SPLIT:
        mbarrier.expect(bar, desc.block_type.nbytes + tail_desc.block_type.nbytes)
        tma_load(tail_desc, coord, bar, tail_dst)
    else:
        mbarrier.expect(bar, desc.block_type.nbytes)
    tma_load(desc, coord, bar, dst)


@gluon.jit
def _pp_loader(
    q_desc, k_desc, v_desc, q_tail_desc, k_tail_desc, v_tail_desc, q_smem, k_ring, v_ring, q_tail_smem,
    k_tail_ring, v_tail_ring, q_ready, k_ready, k_empty, v_ready, v_empty, b, h, start_m, n_kv,
):  # fmt: skip
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[2]
    K_STAGES: gl.constexpr = k_ring.shape[0]
    V_STAGES: gl.constexpr = v_ring.shape[0]
    ROWS: gl.constexpr = q_desc.block_type.shape[2]
    CONSUMERS: gl.constexpr = q_smem.shape[0]
    for i in gl.static_range(CONSUMERS):
        _load_pieces(
            q_desc, q_tail_desc, [b, h, start_m + ROWS * i, 0], q_ready.index(i), q_smem.index(i),
            q_tail_smem.index(i),
        )  # fmt: skip
    for blk in range(n_kv):
        ks = blk % K_STAGES
        _slot_wait_free(k_empty, blk, K_STAGES, K_FREE_BAR, CONSUMERS)
        _load_pieces(
            k_desc, k_tail_desc, [b, h, blk * BLOCK_N, 0], k_ready.index(ks), k_ring.index(ks),
            k_tail_ring.index(ks),
        )  # fmt: skip
        vs = blk % V_STAGES
        _slot_wait_free(v_empty, blk, V_STAGES, V_FREE_BAR, CONSUMERS)
        _load_pieces(
            v_desc, v_tail_desc, [b, h, blk * BLOCK_N, 0], v_ready.index(vs), v_ring.index(vs),
            v_tail_ring.index(vs),
        )  # fmt: skip
    _slot_drain(n_kv, K_STAGES, K_FREE_BAR, CONSUMERS)
    _slot_drain(n_kv, V_STAGES, V_FREE_BAR, CONSUMERS)


@gluon.jit
def _named_barrier(asm: gl.constexpr):
    """Run ``asm`` (a ``bar.sync`` / ``bar.arrive`` on a named barrier) once in every thread of this warpgroup:
    a tensor of one element per thread carries it."""
    one = gl.full([128], 0, gl.int32, gl.BlockedLayout([1], [32], [4], [0]))
    gl.inline_asm_elementwise("mov.b32 $0, $1; " + asm, "=r,r", [one], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _bar_op(asm: gl.constexpr, ident, count: gl.constexpr, WARPS: gl.constexpr):
    """``asm`` ($1: barrier id, $2: thread count) once in every thread of a partition of ``WARPS`` warps."""
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [WARPS], [0])
    idt = gl.full([32 * WARPS], 0, gl.int32, layout) + ident
    cnt = gl.full([32 * WARPS], count, gl.int32, layout)
    gl.inline_asm_elementwise(asm, "=r,r,r", [idt, cnt], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _slot_wait_free(empty, blk, STAGES: gl.constexpr, BAR0: gl.constexpr, CONSUMERS: gl.constexpr):
    """Loader: wait until every consumer has released ring slot ``blk % STAGES`` from block blk − STAGES."""
    if _named_handshakes(NAMED_BARRIERS, CONSUMERS):
        if blk >= STAGES:
            _bar_op("mov.b32 $0, $1; bar.sync $1, $2;", BAR0 + blk % STAGES, 128 * CONSUMERS + 32, 1)
    else:
        mbarrier.wait(empty.index(blk % STAGES), ((blk // STAGES) & 1) ^ 1)  # the first pass finds slots free


@gluon.jit
def _slot_drain(blocks, STAGES: gl.constexpr, BAR0: gl.constexpr, CONSUMERS: gl.constexpr):
    """Loader, after its last load: take the releases of the last blocks, which no load waits for (a named
    barrier must not be left with arrivals when the CTA exits)."""
    if _named_handshakes(NAMED_BARRIERS, CONSUMERS):
        for blk in range(gl.maximum(blocks - STAGES, 0), blocks):
            _bar_op("mov.b32 $0, $1; bar.sync $1, $2;", BAR0 + blk % STAGES, 128 * CONSUMERS + 32, 1)


@gluon.jit
def _slot_release(empty, slot, BAR0: gl.constexpr, CONSUMERS: gl.constexpr):
    """Consumer: this warpgroup is done reading ring slot ``slot`` (every consumer releases every block)."""
    if _named_handshakes(NAMED_BARRIERS, CONSUMERS):
        _bar_op("mov.b32 $0, $1; bar.arrive $1, $2;", BAR0 + slot, 128 * CONSUMERS + 32, 4)
    else:
        mbarrier.arrive(empty.index(slot))


@gluon.jit
def _turn_barrier(op: gl.constexpr, me: gl.constexpr):
    """``op`` ("bar.sync" or "bar.arrive") on warpgroup ``me``'s turn: named barriers 13, 14, 15 hold the turns
    of warpgroups 0, 1, 2; each counts the waiting warpgroup and the one before it (256 threads)."""
    if me == 0:
        _named_barrier(op + " 13, 256;")
    elif me == 1:
        _named_barrier(op + " 14, 256;")
    else:
        _named_barrier(op + " 15, 256;")


@gluon.jit
def _pp_take_turn(turn, me: gl.constexpr, event):
    """Wait until the warpgroup before this one (round robin) has issued its GEMMs of this event (of the
    previous one, for warpgroup 0, which goes first)."""
    CONSUMERS: gl.constexpr = turn.shape[0]
    if _named_handshakes(NAMED_BARRIERS, CONSUMERS):
        # warpgroup 0's first turn is free: nobody arrives before it
        if me != 0:  # noqa: SIM114 (constexpr, then a runtime test: the form compiled and run on the GPU)
            _turn_barrier("bar.sync", me)
        elif event != 0:
            _turn_barrier("bar.sync", me)
    else:
        mbarrier.wait(turn.index(me), (event & 1) ^ (1 if me == 0 else 0))


@gluon.jit
def _pp_pass_turn(turn, other: gl.constexpr, final: gl.constexpr = False):
    """Let warpgroup ``other`` issue its GEMMs. ``final``: this warpgroup's last event; warpgroup 0 waits for
    nothing after it, so the last warpgroup leaves no arrival behind on a named barrier."""
    CONSUMERS: gl.constexpr = turn.shape[0]
    if _named_handshakes(NAMED_BARRIERS, CONSUMERS):
        if not (final and other == 0):
            _turn_barrier("bar.arrive", other)
    else:
        mbarrier.arrive(turn.index(other))


@gluon.jit
def _pp_idle(k_ring, v_ring, k_ready, k_empty, v_ready, v_empty, turn, n_kv, ME: gl.constexpr):
    """A consumer whose query rows all lie past N: the same waits and arrivals as a working one, no GEMMs.

    The last query block of a head is often partly past N (N = 4096 with 192 rows per CTA); its idle
    warpgroups must still pass the turn on and release every ring slot, in the order a working one does.
    """
    K_STAGES: gl.constexpr = k_ring.shape[0]
    V_STAGES: gl.constexpr = v_ring.shape[0]
    CONSUMERS: gl.constexpr = turn.shape[0]
    other: gl.constexpr = (ME + 1) % CONSUMERS
    _wait_loaded(k_ready, 0, K_STAGES)
    _pp_take_turn(turn, ME, 0)
    _pp_pass_turn(turn, other)
    _slot_release(k_empty, 0, K_FREE_BAR, CONSUMERS)
    for j in range(0, n_kv - 1):
        _wait_loaded(k_ready, j + 1, K_STAGES)
        _wait_loaded(v_ready, j, V_STAGES)
        _pp_take_turn(turn, ME, j + 1)
        _pp_pass_turn(turn, other)
        _slot_release(k_empty, (j + 1) % K_STAGES, K_FREE_BAR, CONSUMERS)
        _slot_release(v_empty, j % V_STAGES, V_FREE_BAR, CONSUMERS)
    _wait_loaded(v_ready, n_kv - 1, V_STAGES)
    _pp_take_turn(turn, ME, n_kv)
    _pp_pass_turn(turn, other, True)
    _slot_release(v_empty, (n_kv - 1) % V_STAGES, V_FREE_BAR, CONSUMERS)


@gluon.jit
def _pp_consumer(
    o_desc, o_tail_desc, LSE, q_smem, k_ring, v_ring, q_tail_smem, k_tail_ring, v_tail_ring, q_ready, k_ready,
    k_empty, v_ready, v_empty, turn, pid_bh, b, h, start_m, n_kv, N_Q, N_KV, qk_scale, ME: gl.constexpr,
):  # fmt: skip
    ROWS: gl.constexpr = q_smem.shape[3]
    if start_m + ROWS * ME >= N_Q:
        _pp_idle(k_ring, v_ring, k_ready, k_empty, v_ready, v_empty, turn, n_kv, ME)
    else:
        _pp_work(
            o_desc, o_tail_desc, LSE, q_smem, k_ring, v_ring, q_tail_smem, k_tail_ring, v_tail_ring, q_ready,
            k_ready, k_empty, v_ready, v_empty, turn, pid_bh, b, h, start_m, n_kv, N_Q, N_KV, qk_scale, ME,
        )  # fmt: skip


@gluon.jit
def _scores(q, q_tail, k_ring, k_tail_ring, slot, zero_s, SPLIT: gl.constexpr):
    """Issue S = Q·Kᵀ for ring slot ``slot``: one async wgmma, or two chained over both column pieces."""
    BLOCK_N: gl.constexpr = k_ring.shape[3]
    k = _tile(k_ring, slot, BLOCK_N, k_ring.shape[4]).permute((1, 0))
    s = warpgroup_mma(q, k, zero_s, use_acc=False, is_async=True)
    if SPLIT:
        k_tail = _tile(k_tail_ring, slot, BLOCK_N, k_tail_ring.shape[4]).permute((1, 0))
        s = warpgroup_mma(q_tail, k_tail, s, is_async=True)
    return s


@gluon.jit
def _pack_p(p, dtype: gl.constexpr):
    """P (float32, [rows, cols]) rounded to ``dtype`` as int32 [rows, cols / 2]: word c holds column 2c in its
    low half and 2c + 1 in its high half (``cvt.rn.*x2.f32 d, a, b`` puts a high, b low)."""
    ROWS: gl.constexpr = p.shape[0]
    COLS: gl.constexpr = p.shape[1]
    even, odd = gl.split(gl.reshape(p, [ROWS, COLS // 2, 2]))
    if dtype == gl.bfloat16:
        packed = gl.inline_asm_elementwise(
            "cvt.rn.bf16x2.f32 $0, $2, $1;", "=r,r,r", [even, odd], dtype=gl.int32, is_pure=True, pack=1
        )
    else:
        packed = gl.inline_asm_elementwise(
            "cvt.rn.f16x2.f32 $0, $2, $1;", "=r,r,r", [even, odd], dtype=gl.int32, is_pure=True, pack=1
        )
    return packed


@gluon.jit
def _unpack_p(packed, dtype: gl.constexpr, layout: gl.constexpr):
    """:func:`_pack_p`'s words as the ``dtype`` P·V operand in ``layout`` (``mov.b32 {lo, hi}``: nothing for
    ptxas to do when the words are already in registers)."""
    ROWS: gl.constexpr = packed.shape[0]
    COLS: gl.constexpr = packed.shape[1] * 2
    if dtype == gl.bfloat16:
        lo, hi = gl.inline_asm_elementwise(
            "mov.b32 {$0, $1}, $2;",
            "=h,=h,r",
            [packed],
            dtype=(gl.bfloat16, gl.bfloat16),
            is_pure=True,
            pack=1,
        )
    else:
        lo, hi = gl.inline_asm_elementwise(
            "mov.b32 {$0, $1}, $2;", "=h,=h,r", [packed], dtype=(gl.float16, gl.float16), is_pure=True, pack=1
        )
    return gl.convert_layout(gl.reshape(gl.join(lo, hi), [ROWS, COLS]), layout)


@gluon.jit
def _pp_step(
    p_op, acc, acc_tail, m_i, l_i, q, q_tail, k_ring, v_ring, k_tail_ring, v_tail_ring, k_ready, k_empty,
    v_ready, v_empty, turn, zero_s, j, n_kv, N_KV, qk_scale, ME: gl.constexpr, LAST: gl.constexpr,
    PACK: gl.constexpr,
):  # fmt: skip
    """One key step of a ping-pong consumer: S(j+1) = Q·K(j+1)ᵀ and O += P(j)·V(j) issued in its turn, the
    softmax of S(j+1) beside the P·V product. ``j`` counts ring steps (a persistent kernel's go on across
    tiles). ``p_op`` holds P(j) (packed words with ``PACK``) and comes back holding P(j+1). ``LAST``: S(j+1)
    is the tile's last key block (of ``n_kv``), whose columns past N_KV are masked. Without a second column
    piece (``q_tail`` is ``q``) ``acc_tail`` comes back as it came."""
    dtype: gl.constexpr = q.dtype
    HEAD_DIM: gl.constexpr = q.shape[1]
    TAIL: gl.constexpr = q_tail.shape[1]
    SPLIT: gl.constexpr = TAIL != HEAD_DIM
    PV_GROUPS: gl.constexpr = 2 if SPLIT else 1  # async wgmma groups of O += P·V
    BLOCK_N: gl.constexpr = k_ring.shape[3]
    K_STAGES: gl.constexpr = k_ring.shape[0]
    V_STAGES: gl.constexpr = v_ring.shape[0]
    CONSUMERS: gl.constexpr = turn.shape[0]
    other: gl.constexpr = (ME + 1) % CONSUMERS  # the warpgroup whose turn comes next
    s_layout: gl.constexpr = zero_s.type.layout
    rows_o: gl.constexpr = gl.SliceLayout(1, acc.type.layout)
    rows_t: gl.constexpr = gl.SliceLayout(1, acc_tail.type.layout)
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc.type.layout, k_width=2)

    if PACK:
        p_op = _unpack_p(p_op, dtype, p_layout)
    _wait_loaded(k_ready, j + 1, K_STAGES)
    _wait_loaded(v_ready, j, V_STAGES)
    _pp_take_turn(turn, ME, j + 1)
    s_next = _scores(q, q_tail, k_ring, k_tail_ring, (j + 1) % K_STAGES, zero_s, SPLIT)
    pv = warpgroup_mma(p_op, _tile(v_ring, j % V_STAGES, BLOCK_N, HEAD_DIM), acc, is_async=True)
    if SPLIT:
        pv_tail = warpgroup_mma(
            p_op, _tile(v_tail_ring, j % V_STAGES, BLOCK_N, TAIL), acc_tail, is_async=True
        )
    _pp_pass_turn(turn, other)
    s = warpgroup_mma_wait(PV_GROUPS, deps=(s_next,))
    _slot_release(k_empty, (j + 1) % K_STAGES, K_FREE_BAR, CONSUMERS)
    if LAST:
        p, alpha, m_i, l_i = _softmax_masked(s, m_i, l_i, qk_scale, n_kv - 1, N_KV, BLOCK_N, s_layout)
    else:
        p, alpha, m_i, l_i = _softmax_full(s, m_i, l_i, qk_scale)
    if SPLIT:
        acc, acc_tail, p_op = warpgroup_mma_wait(0, deps=(pv, pv_tail, p_op))
        acc_tail = acc_tail * gl.convert_layout(alpha, rows_t)[:, None]
    else:
        acc, p_op = warpgroup_mma_wait(0, deps=(pv, p_op))
    _slot_release(v_empty, j % V_STAGES, V_FREE_BAR, CONSUMERS)
    acc = acc * gl.convert_layout(alpha, rows_o)[:, None]
    p_op = _pack_p(p, dtype) if PACK else gl.convert_layout(p.to(dtype), p_layout)
    return p_op, acc, acc_tail, m_i, l_i


@gluon.jit
def _pp_work(
    o_desc, o_tail_desc, LSE, q_smem, k_ring, v_ring, q_tail_smem, k_tail_ring, v_tail_ring, q_ready, k_ready,
    k_empty, v_ready, v_empty, turn, pid_bh, b, h, start_m, n_kv, N_Q, N_KV, qk_scale, ME: gl.constexpr,
):  # fmt: skip
    dtype: gl.constexpr = o_desc.dtype
    HEAD_DIM: gl.constexpr = o_desc.block_type.shape[3]  # the first column piece (the whole head dim unsplit)
    TAIL: gl.constexpr = o_tail_desc.block_type.shape[3]
    SPLIT: gl.constexpr = TAIL != HEAD_DIM
    BLOCK_N: gl.constexpr = k_ring.shape[3]
    K_STAGES: gl.constexpr = k_ring.shape[0]
    V_STAGES: gl.constexpr = v_ring.shape[0]
    ROWS: gl.constexpr = q_smem.shape[3]  # query rows of this warpgroup: 64, or 128 as two wgmma row tiles
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 16]
    )
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16]
    )
    tail_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, TAIL, 16]
    )
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    rows_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    rows_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    rows_t: gl.constexpr = gl.SliceLayout(1, tail_layout)
    CONSUMERS: gl.constexpr = q_smem.shape[0]
    other: gl.constexpr = (ME + 1) % CONSUMERS  # the warpgroup whose turn comes next
    PACK: gl.constexpr = PACKED_P  # P kept as packed words between steps

    q = q_smem.index(ME).reshape([ROWS, HEAD_DIM])
    q_tail = q_tail_smem.index(ME).reshape([ROWS, TAIL])  # q itself where the head dim is not split
    zero_s = gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout)
    mbarrier.wait(q_ready.index(ME), 0)
    _wait_loaded(k_ready, 0, K_STAGES)
    _pp_take_turn(turn, ME, 0)
    s = _scores(q, q_tail, k_ring, k_tail_ring, 0, zero_s, SPLIT)
    _pp_pass_turn(turn, other)
    s = warpgroup_mma_wait(0, deps=(s,))
    _slot_release(k_empty, 0, K_FREE_BAR, CONSUMERS)
    m_i = gl.full([ROWS], float("-inf"), gl.float32, rows_s)
    l_i = gl.zeros([ROWS], gl.float32, rows_s)
    p, _, m_i, l_i = _softmax_block(s, m_i, l_i, qk_scale, 0, n_kv, N_KV, BLOCK_N, s_layout)
    # P(j) between steps: packed words, or the P·V operand itself
    p_op = _pack_p(p, dtype) if PACK else gl.convert_layout(p.to(dtype), p_layout)
    acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)
    # unsplit: acc stands in, unused, so that both cases carry the same names through the loop
    acc_tail = gl.zeros([ROWS, TAIL], gl.float32, tail_layout) if SPLIT else acc
    # Only the step that reads the last key block masks columns, so it runs after the loop: with the masked
    # branch inside, ptxas kept the column bounds live through every step and, under Triton 3.8, spilled the
    # row sums and maxima of two of three consumers every step (session 27: 11-12 local loads and stores a
    # step; 3.6 spilled in the branch). Without it no consumer spills under either and each step is ~420-490
    # instructions instead of ~820 (ATTENTION_NOTES "Session 27").
    for j in range(0, n_kv - 2):
        p_op, acc, acc_tail, m_i, l_i = _pp_step(
            p_op, acc, acc_tail, m_i, l_i, q, q_tail, k_ring, v_ring, k_tail_ring, v_tail_ring, k_ready,
            k_empty, v_ready, v_empty, turn, zero_s, j, n_kv, N_KV, qk_scale, ME, False, PACK,
        )  # fmt: skip
    if n_kv >= 2:
        p_op, acc, acc_tail, m_i, l_i = _pp_step(
            p_op, acc, acc_tail, m_i, l_i, q, q_tail, k_ring, v_ring, k_tail_ring, v_tail_ring, k_ready,
            k_empty, v_ready, v_empty, turn, zero_s, n_kv - 2, n_kv, N_KV, qk_scale, ME, True, PACK,
        )  # fmt: skip

    if PACK:
        p_op = _unpack_p(p_op, dtype, p_layout)
    last = n_kv - 1
    _wait_loaded(v_ready, last, V_STAGES)
    _pp_take_turn(turn, ME, n_kv)
    acc = warpgroup_mma(p_op, _tile(v_ring, last % V_STAGES, BLOCK_N, HEAD_DIM), acc, is_async=True)
    if SPLIT:
        acc_tail = warpgroup_mma(
            p_op, _tile(v_tail_ring, last % V_STAGES, BLOCK_N, TAIL), acc_tail, is_async=True
        )
    _pp_pass_turn(turn, other, True)
    if SPLIT:
        acc, acc_tail = warpgroup_mma_wait(0, deps=(acc, acc_tail))
        q_tail.store((acc_tail / gl.convert_layout(l_i, rows_t)[:, None]).to(dtype))
    else:
        acc = warpgroup_mma_wait(0, deps=(acc,))
    _slot_release(v_empty, last % V_STAGES, V_FREE_BAR, CONSUMERS)

    o = acc / gl.convert_layout(l_i, rows_o)[:, None]
    q.store(o.to(dtype))  # this warpgroup's Q slot is free: it holds the output on its way out
    fence_async_shared()
    tma_store(o_desc, [b, h, start_m + ROWS * ME, 0], q_smem.index(ME))
    if SPLIT:
        tma_store(o_tail_desc, [b, h, start_m + ROWS * ME, 0], q_tail_smem.index(ME))
    rows = start_m + ROWS * ME + gl.arange(0, ROWS, rows_s)
    lse = (m_i + gl.log2(l_i)) * 0.6931471805599453  # natural log
    gl.store(LSE + pid_bh.to(gl.int64) * N_Q + rows, lse, mask=rows < N_Q)
    tma.store_wait(0)


# gl.warp_specialize's worker partitions cannot take constexpr arguments, so each consumer's index (a
# constexpr: it picks layouts' turn and parity at compile time) is bound in a wrapper of its own.
@gluon.jit
def _pp_consumer_0(
    o_desc, o_tail_desc, LSE, q_smem, k_ring, v_ring, q_tail_smem, k_tail_ring, v_tail_ring, q_ready, k_ready,
    k_empty, v_ready, v_empty, turn, pid_bh, b, h, start_m, n_kv, N_Q, N_KV, qk_scale,
):  # fmt: skip
    _pp_consumer(
        o_desc, o_tail_desc, LSE, q_smem, k_ring, v_ring, q_tail_smem, k_tail_ring, v_tail_ring, q_ready, k_ready,
        k_empty, v_ready, v_empty, turn, pid_bh, b, h, start_m, n_kv, N_Q, N_KV, qk_scale, 0,
    )  # fmt: skip


@gluon.jit
def _pp_consumer_1(
    o_desc, o_tail_desc, LSE, q_smem, k_ring, v_ring, q_tail_smem, k_tail_ring, v_tail_ring, q_ready, k_ready,
    k_empty, v_ready, v_empty, turn, pid_bh, b, h, start_m, n_kv, N_Q, N_KV, qk_scale,
):  # fmt: skip
    _pp_consumer(
        o_desc, o_tail_desc, LSE, q_smem, k_ring, v_ring, q_tail_smem, k_tail_ring, v_tail_ring, q_ready, k_ready,
        k_empty, v_ready, v_empty, turn, pid_bh, b, h, start_m, n_kv, N_Q, N_KV, qk_scale, 1,
    )  # fmt: skip


@gluon.jit
def _pp_consumer_2(
    o_desc, o_tail_desc, LSE, q_smem, k_ring, v_ring, q_tail_smem, k_tail_ring, v_tail_ring, q_ready, k_ready,
    k_empty, v_ready, v_empty, turn, pid_bh, b, h, start_m, n_kv, N_Q, N_KV, qk_scale,
):  # fmt: skip
    _pp_consumer(
        o_desc, o_tail_desc, LSE, q_smem, k_ring, v_ring, q_tail_smem, k_tail_ring, v_tail_ring, q_ready, k_ready,
        k_empty, v_ready, v_empty, turn, pid_bh, b, h, start_m, n_kv, N_Q, N_KV, qk_scale, 2,
    )  # fmt: skip


@gluon.jit
def _kv_ring_barriers(K_STAGES: gl.constexpr, V_STAGES: gl.constexpr, CONSUMERS: gl.constexpr):
    """ready/empty mbarriers of the K and V rings of the ping-pong kernels: the loader's expect-tx fills a
    slot, and every consumer releases it.

    The empty ones are initialised only where the releases go through them, not through named barriers: an
    mbarrier that is initialised and never used is dead to Triton's shared-memory allocator, which may put
    other data on it, and PTX leaves an mbarrier's memory undefined for other use until it is invalidated.
    (Triton 3.8 put warp_specialize's captured scalars on the unused turn barriers; with another process on
    the GPU, the one-tile kernel then faulted with an illegal address: session 20.)"""
    k_ready = gl.allocate_shared_memory(gl.int64, [K_STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [K_STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [V_STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [V_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(K_STAGES):
        mbarrier.init(k_ready.index(i), count=1)
    for i in gl.static_range(V_STAGES):
        mbarrier.init(v_ready.index(i), count=1)
    if not _named_handshakes(NAMED_BARRIERS, CONSUMERS):
        for i in gl.static_range(K_STAGES):
            mbarrier.init(k_empty.index(i), count=CONSUMERS)
        for i in gl.static_range(V_STAGES):
            mbarrier.init(v_empty.index(i), count=CONSUMERS)
    return k_ready, k_empty, v_ready, v_empty


@gluon.jit
def _init_turns(turn):
    """The turn mbarriers, where the turns are not handed over on named barriers (see _kv_ring_barriers)."""
    CONSUMERS: gl.constexpr = turn.shape[0]
    if not _named_handshakes(NAMED_BARRIERS, CONSUMERS):
        for i in gl.static_range(CONSUMERS):
            mbarrier.init(turn.index(i), count=1)


@gluon.jit
def _attn_fwd_pingpong_kernel(
    q_desc, k_desc, v_desc, o_desc, q_tail_desc, k_tail_desc, v_tail_desc, o_tail_desc, LSE, H, N_Q, N_KV,
    qk_scale, BLOCK_N: gl.constexpr, K_STAGES: gl.constexpr, V_STAGES: gl.constexpr,
    CONSUMER_REGS: gl.constexpr, LOADER_REGS: gl.constexpr, CONSUMERS: gl.constexpr,
):  # fmt: skip
    # An unsplit head dim: no second piece was passed (so none was encoded at launch); the first stands in.
    if q_tail_desc is None:
        q_tail_desc = q_desc
        k_tail_desc = k_desc
        v_tail_desc = v_desc
        o_tail_desc = o_desc
    ROWS: gl.constexpr = q_desc.block_type.shape[2]  # per consumer warpgroup; the CTA covers CONSUMERS · ROWS
    HEAD_DIM: gl.constexpr = q_desc.block_type.shape[3]
    TAIL: gl.constexpr = q_tail_desc.block_type.shape[3]
    n_m = gl.cdiv(N_Q, CONSUMERS * ROWS)
    pid_m = gl.program_id(0) % n_m
    pid_bh = gl.program_id(0) // n_m
    b = pid_bh // H
    h = pid_bh % H
    start_m = pid_m * CONSUMERS * ROWS
    n_kv = gl.cdiv(N_KV, BLOCK_N)
    dtype: gl.constexpr = q_desc.dtype

    q_smem = gl.allocate_shared_memory(dtype, [CONSUMERS, 1, 1, ROWS, HEAD_DIM], q_desc.layout)
    k_ring = gl.allocate_shared_memory(dtype, [K_STAGES, 1, 1, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_ring = gl.allocate_shared_memory(dtype, [V_STAGES, 1, 1, BLOCK_N, HEAD_DIM], v_desc.layout)
    if TAIL != HEAD_DIM:  # a head dim split in two column pieces (80 = 64 + 16): the second one's buffers
        q_tail_smem = gl.allocate_shared_memory(dtype, [CONSUMERS, 1, 1, ROWS, TAIL], q_tail_desc.layout)
        k_tail_ring = gl.allocate_shared_memory(dtype, [K_STAGES, 1, 1, BLOCK_N, TAIL], k_tail_desc.layout)
        v_tail_ring = gl.allocate_shared_memory(dtype, [V_STAGES, 1, 1, BLOCK_N, TAIL], v_tail_desc.layout)
    else:  # unused: the workers see equal widths and take one piece
        q_tail_smem = q_smem
        k_tail_ring = k_ring
        v_tail_ring = v_ring
    q_ready = gl.allocate_shared_memory(gl.int64, [CONSUMERS, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [CONSUMERS, 1], mbarrier.MBarrierLayout())
    k_ready, k_empty, v_ready, v_empty = _kv_ring_barriers(K_STAGES, V_STAGES, CONSUMERS)
    for i in gl.static_range(CONSUMERS):
        mbarrier.init(q_ready.index(i), count=1)
    _init_turns(turn)

    consumer_args = (
        o_desc, o_tail_desc, LSE, q_smem, k_ring, v_ring, q_tail_smem, k_tail_ring, v_tail_ring, q_ready, k_ready,
        k_empty, v_ready, v_empty, turn, pid_bh, b, h, start_m, n_kv, N_Q, N_KV, qk_scale,
    )  # fmt: skip
    loader_args = (
        q_desc, k_desc, v_desc, q_tail_desc, k_tail_desc, v_tail_desc, q_smem, k_ring, v_ring, q_tail_smem,
        k_tail_ring, v_tail_ring, q_ready, k_ready, k_empty, v_ready, v_empty, b, h, start_m, n_kv,
    )  # fmt: skip
    if CONSUMERS == 3:
        gl.warp_specialize(
            [
                (_pp_consumer_0, consumer_args),
                (_pp_consumer_1, consumer_args),
                (_pp_consumer_2, consumer_args),
                (_pp_loader, loader_args),
            ],
            [4, 4, 1],
            [CONSUMER_REGS, CONSUMER_REGS, LOADER_REGS],
        )
    else:
        gl.warp_specialize(
            [(_pp_consumer_0, consumer_args), (_pp_consumer_1, consumer_args), (_pp_loader, loader_args)],
            [4, 1],
            [CONSUMER_REGS, LOADER_REGS],
        )


@functools.lru_cache(maxsize=64)
def _box_layout(rows: int, head_dim: int, dtype: torch.dtype) -> gl.NVMMASharedLayout:
    gl_dtype = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16, torch.float32: gl.float32}[dtype]
    return gl.NVMMASharedLayout.get_default_for([1, 1, rows, head_dim], gl_dtype)


def _descriptor_defaults() -> dict[str, object] | None:
    """Gluon's TensorDescriptor fields past base, shape, strides, block_shape and layout, with their defaults
    (``padding``; Triton 3.8 adds ``round_f32_to_tf32``); None if it is not a dataclass of such fields."""
    if not dataclasses.is_dataclass(TensorDescriptor):
        return None
    defaults: dict[str, object] = {}
    for field in dataclasses.fields(TensorDescriptor):
        if field.name in ("base", "shape", "strides", "block_shape", "layout"):
            continue
        if field.default is dataclasses.MISSING:
            return None
        defaults[field.name] = field.default
    return defaults


_DESCRIPTOR_DEFAULTS = _descriptor_defaults()


def descriptor(
    t: torch.Tensor, rows: int, cols: int | None = None, layout: gl.NVMMASharedLayout | None = None
) -> TensorDescriptor:
    """A TMA descriptor over the whole (B, H, N, D) tensor with its own strides; boxes of (1, 1, rows, cols)
    (cols: all D by default) in ``layout`` (default: the 128-byte swizzle, :func:`_box_layout`).

    Built without the dataclass's own checks (16-byte aligned base and strides, unit last stride, power-of-two
    box), about a fifth of a Gluon backward launch's Python under cProfile (session 21): every tensor given here
    passed :func:`hopper_usable` or was allocated by the launchers, the boxes are the kernels' constants, and at
    launch Triton asserts the unit last stride and the CUDA driver rejects a misaligned base or stride when it
    encodes the descriptor. Same fields, same values (``tests/test_flash_attention.py``).
    """
    cols = cols or t.shape[3]
    layout = layout or _box_layout(rows, cols, t.dtype)
    if _DESCRIPTOR_DEFAULTS is None:
        return TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, rows, cols], layout)
    made = object.__new__(TensorDescriptor)
    made.__dict__.update(_DESCRIPTOR_DEFAULTS)
    made.__dict__.update(
        base=t, shape=list(t.shape), strides=list(t.stride()), block_shape=[1, 1, rows, cols], layout=layout
    )
    return made


def head_pieces(head_dim: int) -> tuple[int, int]:
    """The widths of the column pieces a head dim is computed in: (64, 16) for 80, (64, 32) for 96, (32, 16)
    for 48; a power of two is one piece, written (D, D). Gluon tensors have power-of-two shapes only."""
    first = 1 << (head_dim.bit_length() - 1)
    return (head_dim, head_dim) if first == head_dim else (first, head_dim - first)


def piece_descriptors(t: torch.Tensor, rows: int) -> tuple[TensorDescriptor, TensorDescriptor]:
    """Descriptors of both column pieces of ``t`` (views, nothing copied); one descriptor twice if unsplit."""
    first, tail = head_pieces(t.shape[3])
    if first == tail:
        whole = descriptor(t, rows)
        return whole, whole
    return descriptor(t[..., :first], rows), descriptor(t[..., first:], rows)


def hopper_usable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether :func:`hopper_forward` can run these tensors: sm_90, fp16/bf16, a tuned head dim, TMA strides."""
    if not q.is_cuda or capability(q.device) != (9, 0):
        return False
    if q.dtype not in (torch.float16, torch.bfloat16) or q.shape[3] not in HOPPER_HEAD_DIMS:
        return False
    for t in (q, k, v):
        if t.stride(3) != 1 or any((s * t.element_size()) % 16 for s in t.stride()[:3]) or t.data_ptr() % 16:
            return False
    return True


# Candidates per head dim, the default first (benchmarks/ATTENTION_NOTES.md has the sweeps); the first call of
# each ``attention.choice_key`` (head dim, dtype, length and batch × heads buckets) times them and keeps the
# default unless another is faster by more than ``MARGIN`` (:func:`fastest`).
CANDIDATES = {
    # Three consumers win every D64 shape of the issue. At N = 4100 the one-CTA kernel and the persistent one
    # with two consumers are 1-2 % ahead, and 7-10 % behind at 4,096 tokens, where the chooser picked the
    # one-CTA kernel in a run of session 11 (0.94x cuDNN): too little gained for the risk, so neither is a
    # candidate (both stay in benchmarks/probe_hopper.py's sweep). Session 26, ViT-sized sequences (N ≤ 1,025
    # and batch × heads ≤ 384): 192-row tiles leave a third of the last tile empty at N = 1,024 and one CTA
    # a SM idles through its prologue and epilogue (0.72-0.81x cuDNN); the one-warpgroup kernel (64 rows a
    # CTA, several CTAs a SM) measured 0.98-1.11x there and 1.04-1.06x with 64 keys a step at N = 577, and
    # is 8-13 % behind at 4,096 tokens, where the margin was to keep the default; it did not in 4 of 9 choices
    # (session 29), so the one-warpgroup kernels are not timed from 4,096 tokens on (``candidates``).
    64: (
        HopperConfig(block_n=128, num_warps=4, k_stages=2, v_stages=2, pingpong=True, consumers=3),
        HopperConfig(block_n=128, num_warps=4, k_stages=3, v_stages=3, pingpong=True, consumers=3),
        HopperConfig(block_n=128, num_warps=4, k_stages=2, v_stages=2),
        HopperConfig(block_n=64, num_warps=4, k_stages=2, v_stages=2),
    ),
    # Head dim 128: persistent +1 % at 4,096 tokens, level at 16k in session 11; in session 13 level at 4,096
    # and 2-5 % behind one tile a CTA at 16k, ahead only at 2,048. A third K slot was 3-7 % slower in
    # every row of four runs of session 13 (the same SASS loop): no longer a candidate. Session 25, alternated
    # timings in six processes: under Triton 3.6 one tile a CTA ahead in 10 of 12 rows at 4,096 tokens (~1 %)
    # and in 4 of 4 at 16k (2-3 %); under 3.8 the persistent one ahead at 4,096 (1.5-3 %), level at 16k. One
    # tile a CTA is therefore the default (first: see `fastest`). Session 26: the one-warpgroup kernel 1.18-1.26x
    # cuDNN at (1, 8, 1024, 128), where 64 CTAs of 128 rows leave half the SMs idle (ping-pong 0.99-1.00x);
    # 0.62-0.78x at larger batches and shorter sequences, and 0.76x at 2,048 tokens. With 32 keys a step it
    # measured 0.88-0.90x at (32, 8, 197, 128), where the ping-pong kernel measured 0.75x.
    128: (
        HopperConfig(block_n=128, num_warps=4, k_stages=2, v_stages=2, pingpong=True),
        HopperConfig(block_n=128, num_warps=4, k_stages=2, v_stages=2, pingpong=True, persistent=True),
        HopperConfig(block_n=128, num_warps=4, k_stages=2, v_stages=2),
        HopperConfig(block_n=32, num_warps=4, k_stages=2, v_stages=2),
    ),
    # Split head dims (two column pieces): the ping-pong kernel only. Session 26 (head dims 80 and 96, N 197 to
    # 4,096): two consumers 1.10-1.14x cuDNN at 1,025 and 4,096 tokens, three 0.75-0.78x; at 197-257 tokens
    # two 0.49-0.93x, three 0.51-0.72x. Two consumers are the default; three stay a candidate (head dim 48 is
    # not measured).
    **{
        d: (
            HopperConfig(block_n=128, num_warps=4, k_stages=2, v_stages=2, pingpong=True),
            HopperConfig(block_n=128, num_warps=4, k_stages=2, v_stages=2, pingpong=True, consumers=3),
        )
        for d in (48, 80, 96)
    },
}
_chosen: dict[tuple[int, torch.dtype, int, int, int], HopperConfig] = {}
# The one-warpgroup candidates are timed only for sequences shorter than this (by ``length_bucket``, so every
# length of a bucket gets the same list). Session 29, H100, alternated do_bench rounds: at (4, 16, 4096, 64)
# three consumers were 4.6-5.8 % and at (1, 16, 16384, 64) 9 % faster, yet the first-call timing took the
# one-warpgroup kernel in 4 of 9 choices at 4,096 tokens (bf16), and always at 4,096 and 16k once it timed
# longer batches after a heat-up; at (2, 16, 4100, 64) it is 1.6-2.5 % ahead, three consumers 1.09-1.11x cuDNN.
ONE_WARPGROUP_BELOW = 4096


def candidates(head_dim: int, length_bucket: int) -> tuple[HopperConfig, ...]:
    """The configurations the chooser times for this head dim and (query) length bucket: :data:`CANDIDATES`,
    less the one-warpgroup kernels from :data:`ONE_WARPGROUP_BELOW` tokens on."""
    every = CANDIDATES[head_dim]
    if length_bucket < ONE_WARPGROUP_BELOW:
        return every
    return tuple(cfg for cfg in every if cfg.pingpong)


def _forward_kernel(
    cfg: HopperConfig, q: torch.Tensor, k: torch.Tensor
) -> tuple[Any, tuple[int], dict[str, Any]]:
    """The kernel, grid and constexpr arguments of ``cfg``'s forward for queries ``q`` (B, H, N, D)."""
    if cfg.pingpong and max(cfg.k_stages, cfg.v_stages) > MAX_RING_SLOTS:
        raise ValueError(
            f"the ping-pong forward has named barriers for {MAX_RING_SLOTS} ring slots, not {cfg}"
        )
    batch, heads, n_q, head_dim = q.shape
    grid = (cdiv(n_q, cfg.block_m) * batch * heads,)
    stages = {"K_STAGES": cfg.k_stages, "V_STAGES": cfg.v_stages}
    if cfg.persistent:
        from .attention_hopper_persistent import _attn_fwd_persistent_kernel

        if head_pieces(head_dim)[0] != head_dim:
            raise ValueError(f"the persistent forward takes power-of-two head dims, not {head_dim}")
        warp_groups = {"CONSUMER_REGS": CONSUMER_REGS[cfg.consumers], "LOADER_REGS": LOADER_REGS}
        static = {**stages, **warp_groups, "CONSUMERS": cfg.consumers, "num_warps": 4}
        return _attn_fwd_persistent_kernel, (min(grid[0], sm_count(q.device)),), static
    if cfg.pingpong:
        static = {
            "BLOCK_N": cfg.block_n, **stages, "CONSUMER_REGS": CONSUMER_REGS[cfg.consumers],
            "LOADER_REGS": LOADER_REGS, "CONSUMERS": cfg.consumers, "num_warps": 4,
        }  # fmt: skip
        return _attn_fwd_pingpong_kernel, grid, static
    # power-of-two head dims only
    static = {"HEAD_DIM": head_dim, "BLOCK_N": cfg.block_n, **stages, "num_warps": cfg.num_warps}
    return _attn_fwd_hopper_kernel, grid, static


def _forward_args(
    cfg: HopperConfig, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor,
    scale: float,
) -> tuple[Any, ...]:  # fmt: skip
    """The positional arguments of ``cfg``'s forward kernel (:func:`_forward_kernel`) for these tensors."""
    batch, heads, n_q, _ = q.shape
    rows = cfg.rows if cfg.pingpong else cfg.block_m
    common = (heads, n_q, k.shape[2], scale * LOG2E)
    if cfg.pingpong and not cfg.persistent:
        (q_d, q_t), (k_d, k_t), (v_d, v_t), (o_d, o_t) = (
            piece_descriptors(t, r) for t, r in ((q, rows), (k, cfg.block_n), (v, cfg.block_n), (o, rows))
        )
        # Unsplit: the kernel reuses the first pieces, and Triton encodes four TMA maps, not eight.
        if q_t is q_d and _unsplit_tails_as_none:
            q_t = k_t = v_t = o_t = None
        return (q_d, k_d, v_d, o_d, q_t, k_t, v_t, o_t, lse, *common)
    descs = (descriptor(q, rows), descriptor(k, cfg.block_n), descriptor(v, cfg.block_n), descriptor(o, rows))
    if cfg.persistent:
        return (*descs, lse, batch * heads, *common)
    return (*descs, lse, *common)


def _launch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor, scale: float,
    cfg: HopperConfig,
) -> None:  # fmt: skip
    fn, grid, static = _forward_kernel(cfg, q, k)
    launch(fn, grid, *_forward_args(cfg, q, k, v, o, lse, scale), **static)


def rebased(template: TensorDescriptor, t: torch.Tensor) -> TensorDescriptor:
    """``template`` pointed at ``t``: every other field shared. Only for a ``t`` of the template's dtype,
    shape and strides (a plan's signature fixes them): ~0.4 µs against :func:`descriptor`'s ~2 (CPU)."""
    made = object.__new__(TensorDescriptor)
    fields = made.__dict__
    fields.update(template.__dict__)
    fields["base"] = t
    return made


def rebasable(args: tuple[Any, ...], tensors: tuple[torch.Tensor, ...], tails_end: int) -> bool:
    """Whether a plan may keep these launch arguments' descriptors and re-point them (:func:`rebased`): the
    first ``len(tensors)`` are descriptors of exactly those tensors (whole, one column piece each), the rest
    up to ``tails_end`` None (no second pieces), and descriptors can be made by :func:`rebased` at all."""
    n = len(tensors)
    return (
        _DESCRIPTOR_DEFAULTS is not None
        and all(getattr(d, "base", None) is t for d, t in zip(args[:n], tensors, strict=True))
        and all(arg is None for arg in args[n:tails_end])
    )


class ForwardPlan:
    """The forward at one signature of (q, k, v): shapes, strides, dtype, device and 16-byte alignment, on
    which attention.py keys its plans. The configuration is chosen and the launch bound once (``launch.Site``);
    a call then only re-points the first call's descriptors at its tensors (:func:`rebased`; head dims of one
    column piece) and launches."""

    __slots__ = ("_descs", "_ints", "_middle", "cfg", "site")

    def __init__(self, cfg: HopperConfig, q: torch.Tensor, k: torch.Tensor) -> None:
        fn, grid, static = _forward_kernel(cfg, q, k)
        self.cfg, self.site = cfg, Site(fn, grid, **static)
        self._descs: tuple[TensorDescriptor, ...] | None = None
        self._middle: tuple[None, ...] = ()
        self._ints: tuple[int, ...] = ()

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor, scale: float,
    ) -> None:  # fmt: skip
        descs = self._descs
        if descs is None:
            args = _forward_args(self.cfg, q, k, v, o, lse, scale)
            self._remember(args, (q, k, v, o), lse)
            self.site(*args)
            return
        q_d, k_d, v_d, o_d = (
            rebased(descs[0], q),
            rebased(descs[1], k),
            rebased(descs[2], v),
            rebased(descs[3], o),
        )
        self.site(q_d, k_d, v_d, o_d, *self._middle, lse, *self._ints, scale * LOG2E)

    def _remember(self, args: tuple[Any, ...], tensors: tuple[torch.Tensor, ...], lse: torch.Tensor) -> None:
        """Keep the descriptors of q, k, v, o and the ints, where the kernel's arguments are those four
        descriptors, Nones, lse, ints and the scale (not where a head dim is split into pieces)."""
        at = next(i for i, arg in enumerate(args) if arg is lse)
        if rebasable(args, tensors, at):
            self._descs, self._middle, self._ints = args[:4], args[4:at], args[at + 1 : -1]


def forward_plan(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor, scale: float
) -> ForwardPlan:
    """The plan for tensors like these (:class:`ForwardPlan`); where their bucket (``choice_key``) has no chosen
    configuration yet, the candidates are first timed on these tensors (which writes ``o`` and ``lse``)."""
    return ForwardPlan(_choose(q, k, v, o, lse, scale), q, k)


@functools.cache
def _sm_count(index: int) -> int:
    return int(torch.cuda.get_device_properties(index).multi_processor_count)


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (cached: torch's lookup is slow next to a launch)."""
    return _sm_count(torch.cuda.current_device() if device.index is None else device.index)


# A GPU sleep queued before each timed batch: 5·10⁶ clock cycles, ~2.5 ms at an H100's ~2 GHz (computed, not
# timed), longer than the host takes to queue four calls where a call's host time exceeds its GPU time
# (~0.1-0.4 ms a call at batch 1, measured in session 24).
SLEEP_CYCLES = 5_000_000
# How much faster than the first (default) candidate another must time to replace it (see `fastest`).
MARGIN = 0.01


def _gpu_ms(run: Callable[[], None], launches: int = 4) -> float:
    """GPU time of ``launches`` back-to-back calls of ``run``, host time excluded.

    The calls are queued behind a GPU sleep, so they run back to back however long the host takes to launch
    them. Before session 24 one call ran ahead instead, which hid the host only where a call's GPU time
    exceeded its host time: at batch-1 sizes the candidates were then timed by their host time (noise, as
    they launch alike) and the pick carried over to larger batches of the same lengths.
    """
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    sleep = getattr(torch.cuda, "_sleep", None)  # private, but in torch for years; without it, the old way
    if sleep is None:
        run()
    else:
        sleep(SLEEP_CYCLES)
    start.record()
    for _ in range(launches):
        run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def fastest(runs: dict[K, Callable[[], None]], rounds: int = 7, margin: float = MARGIN) -> K:
    """The fastest configuration by median time, the candidates timed in alternation; the first one is the
    default, which another replaces only when its median is lower by more than ``margin`` (a fraction).

    Alternating keeps a drift of the clock or of other work on the card from favouring whichever candidate
    happened to be timed first. (Session 6, H100: timing single launches picked the slowest of three
    candidates for fp16 at (4, 16, 4096, 64), 0.94× cuDNN where the fastest reached 1.02×.) The margin keeps
    a difference smaller than the timing's noise from deciding: seven rounds of four calls, a few
    milliseconds in all, are not what a long run sees, and the head-dim-128 candidates, ~1 % apart under
    Triton 3.6, were picked either way from one process to the next (session 25).
    """
    for run in runs.values():  # compile, then warm
        run()
        run()
    times: dict[K, list[float]] = {cfg: [] for cfg in runs}
    for _ in range(rounds):
        for cfg, run in runs.items():
            times[cfg].append(_gpu_ms(run))
    medians = {cfg: sorted(t)[len(t) // 2] for cfg, t in times.items()}
    log.debug("flash_attention hopper candidates (ms): %s", medians)
    default = next(iter(medians))
    best = min(medians, key=medians.__getitem__)
    return best if medians[best] < medians[default] * (1 - margin) else default


def _choose(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor, scale: float
) -> HopperConfig:
    key = choice_key(q, k)
    if key not in _chosen:
        runs: dict[HopperConfig, Callable[[], None]] = {}
        for cfg in candidates(q.shape[3], key[2]):  # key[2]: the query length's bucket

            def run(cfg: HopperConfig = cfg) -> None:
                _launch(q, k, v, o, lse, scale, cfg)

            runs[cfg] = run
        _chosen[key] = fastest(runs)
    return _chosen[key]


def hopper_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    scale: float,
    config: HopperConfig | None = None,
) -> None:
    """Write softmax(q·kᵀ·scale)·v into ``o`` and the natural log-sum-exp into ``lse`` (all (B, H, N, ·)).

    Without ``config`` the first call per ``attention.choice_key`` (head dim, dtype, buckets of both lengths and
    of batch × heads) times the :data:`CANDIDATES` and keeps the faster, as the Triton kernel's autotuner does.
    """
    _launch(q, k, v, o, lse, scale, config or _choose(q, k, v, o, lse, scale))
