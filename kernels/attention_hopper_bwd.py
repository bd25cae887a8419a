"""Hopper (sm_90) attention backward in Gluon: one pass over the query blocks, dQ by TMA reduce-adds.

The Triton backward (``attention.py``) runs seven products per pair of blocks in two kernels, and Triton waits
for each product before the next instruction, so the exponentials and dS never overlap a tensor-core GEMM.
Here one kernel runs five products per pair and orders the asynchronous work itself:

* a CTA owns 128 key rows, 64 per consumer warpgroup (``CONSUMER_WARPGROUPS`` = 2). Each consumer keeps its 64 rows of
  K and V in shared memory and its dK and dV in registers; a one-warp loader streams the query blocks (Q, dO)
  of the head by TMA through a ring of slots that every consumer reads, and puts each block's lse and delta
  beside them (loaded into the consumers' registers only where used: 32 registers freed, head dim 128's
  spills 88 → 16 bytes, 1–5 % faster on an H100, RESULTS.md run 9);
* per query block i, in a consumer:

      issue Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ                        (back to back)
      wait Sᵀ;  Pᵀ = exp2(Sᵀ·scale·log2 e − lse·log2 e)       while dPᵀ runs
      issue dV += Pᵀ·dO
      wait dPᵀ; dSᵀ = Pᵀ ∘ (dPᵀ − δ)                         while dV runs
      issue dK += dSᵀ·Q; dSᵀ into the CTA's shared dS buffer (i % 2) while dK runs
      consumer (i − 1) % 2 only: dQ_{i-1} = dS_{i-1}·K over all 128 keys; TMA reduce-add

  dQ runs one step late: every consumer stored dS_{i-1} during step i − 1, so no consumer waits for another's
  dS (the last block's dQ follows the loop). At head dim 128 (``dq_halves``) every consumer takes its own 64
  columns of dQ_{i-1}, every step, and issues them in front of Sᵀ, so their staging store runs beside Sᵀ. At
  64 the loop takes the steps in pairs, so which consumer owns dQ_{i-1} is a constant and its product follows
  dK with no wait between. Against dQ_i at the end of step i, with a wait for the other consumer's dS: 5–10 %
  faster at head dim 128, ~2 % at 64 and 80 (H100, RESULTS.md run 10).

* the dQ of a query block is added once per CTA (not once per consumer) into a float32 accumulator by
  ``cp.reduce.async.bulk.tensor`` from a shared-memory staging tile, written in the accumulator registers' own
  order where the tile is (64, 64) (``DQ_FRAGMENTS``: no bank conflicts; 1.004–1.03× on an H100, RESULTS.md
  session 28), so the float32 accumulator holds dQ in that order until the cast. These adds are what limits the kernel
  (H100, RESULTS.md run 7: without any adds it ran 1.2–1.6× faster); atomic adds from registers were 8–18 %
  slower than the TMA ones, and one atomic add per consumer 22–32 % slower again. Each CTA starts its walk over the
  query blocks at a different block, so the CTAs of one head do not add into the same rows at once. The
  caller scales the accumulator and casts it to the input dtype. The adds land in no fixed order, so dQ is not
  bitwise repeatable: ``attention._backward`` takes the Triton two-kernel path under
  ``torch.use_deterministic_algorithms``.

Head dims that are not powers of two (48, 80, 96) run in two column pieces (80 = 64 + 16; Gluon tensors have
power-of-two shapes): each piece has its own descriptors and buffers, Sᵀ and dPᵀ chain one wgmma per piece, and
dV, dK and dQ keep one accumulator per piece.

Rows past N: the TMA reads them as zero. Query rows past N get lse = +inf, so their probabilities and dS are
exactly zero; key rows past N have zero K, so their dS·K adds nothing to dQ, and their dK/dV rows are clipped
by the TMA store, as the dQ rows past N are by the reduce. Nothing is masked inside the loop.

At head dim 128 the kernel is persistent (``BackwardConfig.persistent``): one CTA per SM runs its key tiles
back to back, and the next tile's K and V load while dK and dV are written out; 3-4 % faster on an H100
(RESULTS.md run 12), where at head dim 64 it measured -3.5 to +1.5 %.

The variants measured on the way (dQ per consumer or per CTA, atomic adds or TMA reduce-adds, and timing-only
versions without the adds) are in commit d188820 (``BackwardConfig.dq_mode``, ``probe_hopper_bwd.py
--dq-modes``); only the fastest is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from . import attention_hopper
from .attention import LOG2E, cdiv
from .attention_hopper import (
    PUBLIC_REINTERPRET,
    descriptor,
    head_pieces,
    piece_descriptors,
    rebasable,
    rebased,
    sm_count,
    tma_load,
    tma_store,
)
from .launch import Site, launch

if hasattr(tma, "async_atomic_add"):  # Triton 3.7 and newer
    _tma_add = tma.async_atomic_add
else:  # Triton 3.6 builds the same operation but has no Gluon function for it yet
    from triton._C.libtriton import ir as _ir
    from triton.experimental.gluon.language._core import builtin as _builtin

    @_builtin
    def _tma_add(tensor_desc, coord, src, _semantic=None):  # type: ignore[no-untyped-def]
        """dst[coord ...] += src (shared memory) by a TMA reduce-add (``cp.reduce.async.bulk.tensor``)."""
        coord = _semantic._convert_to_ir_values(coord, require_i64=False)
        _semantic.builder.create_async_tma_reduce(
            _ir.DESCRIPTOR_REDUCE_KIND.ADD, tensor_desc.handle, coord, src.handle
        )


ROWS = gl.constexpr(64)  # key rows per consumer warpgroup (one wgmma row tile)
CONSUMER_WARPGROUPS = 2  # the kernel's CONSUMERS
LOADER_REGS = 24

# dQ's (64, 64) float32 staging tile in the order of the wgmma accumulator's registers (``BackwardConfig.
# fragment_dq``): offset bit i of an element is the (row, column) step in entry i. Bits 0-1 are a thread's two
# columns and its row + 8 (so each thread stores 16 contiguous bytes), bits 2-6 its lane (so a warp's store is
# 512 contiguous bytes: no bank conflicts), then the column groups and the warp. Stored through the TMA's
# 128-byte swizzle instead, rows r and r ^ 1 of a half-warp hit the same banks: every dQ store took twice its
# wavefronts (Nsight Compute on an H100, session 28: 9 % of the backward's shared-memory wavefronts).
_FRAGMENT_BASES = [[0, 1], [8, 0], [0, 2], [0, 4], [1, 0], [2, 0], [4, 0], [0, 8], [0, 16], [0, 32], [16, 0], [32, 0]]  # fmt: skip
DQ_FRAGMENTS = gl.constexpr(gl.SharedLinearLayout(offset_bases=_FRAGMENT_BASES))
# The TMA's view of such a tile: a plain row-major (64, 64) box, so global row r' of a query block holds
# fragment offsets 64·r' … 64·r' + 63 (``attention._dq_cast_kernel`` puts them back in place).
DQ_FRAGMENT_BOX = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=4)


@dataclass(frozen=True)
class BackwardConfig:
    """``block_m`` query rows per step, ``stages`` ring slots for (Q, dO), ``regs`` registers per consumer
    warpgroup (``setmaxnreg``). Always two consumers: three (192 keys per CTA, a third fewer dQ adds) needed
    168 registers each, spilled, and ran 25–30 % slower at head dim 64 (RESULTS.md run 7; removed)."""

    block_m: int = 64
    stages: int = 2
    regs: int = 240
    # Head dim 128: each consumer multiplies and adds 64 columns of dQ every step, instead of all 128 every
    # other step: 1.07-1.09x faster on an H100 (RESULTS.md run 8). Other head dims ignore it.
    dq_halves: bool = True
    # One CTA per SM running its key tiles back to back; the next tile's K and V load while dK and dV are
    # written out. None: at head dim 128, where it measured 3-4 % faster on an H100 (at 64: -3.5 to +1.5 %,
    # RESULTS.md run 12). True runs it at any power-of-two head dim.
    persistent: bool | None = None
    # dQ's staging tiles in the accumulator's register order (DQ_FRAGMENTS) where they are (64, 64): head dim 64,
    # and 128 with dq_halves. The float32 accumulator then holds each query block's dQ in that order, padded
    # to whole blocks (dq_accumulator), and attention._dq_cast_kernel puts it back in place.
    fragment_dq: bool = True

    @property
    def block_n(self) -> int:
        return CONSUMER_WARPGROUPS * ROWS.value

    def fragments(self, head_dim: int) -> bool:
        """Whether dQ is staged and accumulated in fragment order at this head dim."""
        tile = head_dim // 2 if self.dq_halves and head_dim == 128 else head_dim
        return self.fragment_dq and self.block_m == 64 and tile == 64


@gluon.jit
def _stage_rows(LSE, DELTA, row_base, start_m, N_Q, lse_ring, delta_ring, ready, slot):
    """The query block's lse (times log2 e) and delta into shared memory beside its Q and dO: in the consumers
    they would hold 32 registers through the whole step. Rows past N: lse = +inf makes their probabilities (and
    so dS) exactly zero. The plain arrive after the stores is the slot's second arrival."""
    BLOCK_M: gl.constexpr = lse_ring.shape[1]
    rows = start_m + gl.arange(0, BLOCK_M, gl.BlockedLayout([BLOCK_M // 32], [32], [1], [0]))
    lse2 = gl.load(LSE + row_base + rows, mask=rows < N_Q, other=float("inf")) * 1.4426950408889634
    delta = gl.load(DELTA + row_base + rows, mask=rows < N_Q, other=0.0)
    lse_ring.index(slot).store(lse2)
    delta_ring.index(slot).store(delta)
    mbarrier.arrive(ready.index(slot))


@gluon.jit
def _key_tile(tile, n_n, n_q, H):
    """(batch·head, batch, head, key block, first query block of its walk) of a persistent key tile."""
    pid_n = tile % n_n
    pid_bh = tile // n_n
    return pid_bh, pid_bh // H, pid_bh % H, pid_n, pid_n % n_q


@gluon.jit
def _bwd_loader(
    q_desc, do_desc, k_desc, v_desc, q_tail_desc, do_tail_desc, k_tail_desc, v_tail_desc, q_ring, do_ring, k_smem,
    v_smem, q_tail_ring, do_tail_ring, k_tail_smem, v_tail_smem, kv_ready, ready, empty, b, h, start_n, n_q, first,
    LSE, DELTA, lse_ring, delta_ring, pid_bh, N_Q,
):  # fmt: skip
    BLOCK_M: gl.constexpr = q_desc.block_type.shape[2]
    STAGES: gl.constexpr = q_ring.shape[0]
    CONSUMERS: gl.constexpr = v_smem.shape[0]
    SPLIT: gl.constexpr = q_tail_desc.block_type.shape[3] != q_desc.block_type.shape[3]
    # K and V (and Q and dO) share a barrier: one expect-tx counts both tensors' pieces, which is why the
    # forward's one-tensor-per-barrier _load_pieces is not used here.
    kv_bytes: gl.constexpr = k_desc.block_type.nbytes + v_desc.block_type.nbytes
    qdo_bytes: gl.constexpr = q_desc.block_type.nbytes + do_desc.block_type.nbytes
    for c in gl.static_range(CONSUMERS):
        key = [b, h, start_n + ROWS * c, 0]
        if SPLIT:
            mbarrier.expect(
                kv_ready.index(c), kv_bytes + k_tail_desc.block_type.nbytes + v_tail_desc.block_type.nbytes
            )
            tma_load(k_tail_desc, key, kv_ready.index(c), k_tail_smem.slice(ROWS * c, ROWS, 2))
            tma_load(v_tail_desc, key, kv_ready.index(c), v_tail_smem.index(c))
        else:
            mbarrier.expect(kv_ready.index(c), kv_bytes)
        tma_load(k_desc, key, kv_ready.index(c), k_smem.slice(ROWS * c, ROWS, 2))
        tma_load(v_desc, key, kv_ready.index(c), v_smem.index(c))
    row_base = pid_bh.to(gl.int64) * N_Q
    for i in range(n_q):
        slot = i % STAGES
        mbarrier.wait(empty.index(slot), ((i // STAGES) & 1) ^ 1)  # the first pass finds every slot free
        row = [b, h, ((first + i) % n_q) * BLOCK_M, 0]
        if SPLIT:
            mbarrier.expect(
                ready.index(slot), qdo_bytes + q_tail_desc.block_type.nbytes + do_tail_desc.block_type.nbytes
            )
            tma_load(q_tail_desc, row, ready.index(slot), q_tail_ring.index(slot))
            tma_load(do_tail_desc, row, ready.index(slot), do_tail_ring.index(slot))
        else:
            mbarrier.expect(ready.index(slot), qdo_bytes)
        tma_load(q_desc, row, ready.index(slot), q_ring.index(slot))
        tma_load(do_desc, row, ready.index(slot), do_ring.index(slot))
        _stage_rows(
            LSE, DELTA, row_base, ((first + i) % n_q) * BLOCK_M, N_Q, lse_ring, delta_ring, ready, slot
        )


@gluon.jit
def _reinterpret(buf, dtype: gl.constexpr, shape: gl.constexpr, layout: gl.constexpr):
    """``buf``'s bytes as another type, shape and layout."""
    if PUBLIC_REINTERPRET:
        view = buf.reinterpret(dtype, shape, layout)
    else:
        view = buf._reinterpret(dtype, shape, layout)
    return view


@gluon.jit
def _dq_views(stage, dq_desc):
    """One dQ staging buffer as the (BLOCK_M, DQ_W) tile that dQ's registers are stored into, and as the box the
    TMA reduce-add reads: in fragment order where the descriptor's box is unswizzled (``DQ_FRAGMENTS``)."""
    BLOCK_M: gl.constexpr = dq_desc.block_type.shape[2]
    DQ_W: gl.constexpr = dq_desc.block_type.shape[3]
    BOX: gl.constexpr = dq_desc.layout
    if BOX.swizzle_byte_width == 0:
        tile = _reinterpret(stage, gl.float32, [BLOCK_M, DQ_W], DQ_FRAGMENTS)
        box = _reinterpret(stage, gl.float32, [1, 1, BLOCK_M, DQ_W], BOX)
    else:
        tile = stage.reshape([BLOCK_M, DQ_W])
        box = stage
    return tile, box


@gluon.jit
def _dq_issue(ds_all, k_all, c: gl.constexpr, KEYS: gl.constexpr, DQ_COLS: gl.constexpr, zero_dq):
    """Issue columns [c·DQ_COLS, (c+1)·DQ_COLS) of dS·K over the first KEYS keys: KEYS / 64 chained products
    (as many wgmma groups), not waited for."""
    dq = warpgroup_mma(
        ds_all.slice(0, ROWS, 0).permute((1, 0)),
        k_all.slice(0, ROWS, 0).slice(c * DQ_COLS, DQ_COLS, 1),
        zero_dq,
        use_acc=False,
        is_async=True,
    )
    for r in gl.static_range(1, KEYS // ROWS):
        dq = warpgroup_mma(
            ds_all.slice(r * ROWS, ROWS, 0).permute((1, 0)),
            k_all.slice(r * ROWS, ROWS, 0).slice(c * DQ_COLS, DQ_COLS, 1),
            dq,
            is_async=True,
        )
    return dq


@gluon.jit
def _dq_product(ds_all, k_all, c: gl.constexpr, KEYS: gl.constexpr, DQ_COLS: gl.constexpr, zero_dq):
    """Columns [c·DQ_COLS, (c+1)·DQ_COLS) of dS·K over the first KEYS keys, waited for."""
    dq = _dq_issue(ds_all, k_all, c, KEYS, DQ_COLS, zero_dq)
    return warpgroup_mma_wait(0, deps=(dq,))


@gluon.jit
def _dq_tma_add(ds_all, k_all, KEYS: gl.constexpr, dq_desc, stage, b, h, start_m, col):
    """dQ rows [start_m, start_m + BLOCK_M) += dS·K over the first KEYS keys (dS from shared memory as (keys,
    BLOCK_M)), through the staging tile ``stage`` and one TMA reduce-add. In column tiles of at most 64: at head
    dim 128 a whole (64, 128) float32 tile would not fit in the registers beside dK and dV. The caller waits
    for this consumer's previous adds to have read ``stage``."""
    HEAD_DIM: gl.constexpr = k_all.shape[1]
    BLOCK_M: gl.constexpr = ds_all.shape[1]
    DQ_COLS: gl.constexpr = 64 if HEAD_DIM > 64 else HEAD_DIM
    dq_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, DQ_COLS, 16]
    )
    zero_dq = gl.zeros([BLOCK_M, DQ_COLS], gl.float32, dq_layout)
    tile, box = _dq_views(stage, dq_desc)
    if HEAD_DIM == DQ_COLS:
        tile.store(_dq_product(ds_all, k_all, 0, KEYS, DQ_COLS, zero_dq))
    else:
        for c in gl.static_range(HEAD_DIM // DQ_COLS):
            dq = _dq_product(ds_all, k_all, c, KEYS, DQ_COLS, zero_dq)
            tile.slice(c * DQ_COLS, DQ_COLS, 1).store(dq)
    fence_async_shared()
    _tma_add(dq_desc, [b, h, start_m, col], box)


@gluon.jit
def _dq_whole(
    ds_smem, k_all, k_tail_all, dq_desc, dq_tail_desc, dq_stage, dq_tail_stage, ds_full, ds_empty, b, h, j, first, n_q,
    ME: gl.constexpr,
):  # fmt: skip
    """Consumer ``ME`` adds all of block j's dQ (every key, every column piece), once every consumer's dS is in."""
    KEYS: gl.constexpr = k_all.shape[0]
    BLOCK_M: gl.constexpr = ds_smem.shape[2]
    SPLIT: gl.constexpr = k_tail_all.shape[1] != k_all.shape[1]
    start_m = ((first + j) % n_q) * BLOCK_M
    mbarrier.wait(ds_full.index(j % 2), (j // 2) & 1)
    tma.store_wait(0)  # this consumer's previous adds have read the staging buffers
    _dq_tma_add(ds_smem.index(j % 2), k_all, KEYS, dq_desc, dq_stage.index(ME), b, h, start_m, 0)
    if SPLIT:
        _dq_tma_add(
            ds_smem.index(j % 2), k_tail_all, KEYS, dq_tail_desc, dq_tail_stage.index(ME), b, h, start_m, 0
        )
    mbarrier.arrive(ds_empty.index(j % 2))


@gluon.jit
def _bwd_step(
    i, g, q_ring, do_ring, q_tail_ring, do_tail_ring, lse_ring, delta_ring, ready, empty, ds_smem, ds_full, ds_empty,
    dq_stage, dq_tail_stage, dq_desc, dq_tail_desc, k_all, k_tail_all, v_smem, v_tail_smem, dk, dv, dk_tail, dv_tail,
    b, h, first, n_q, qk_scale, ME: gl.constexpr, DQ_HERE: gl.constexpr,
):  # fmt: skip
    """Query block i for consumer ``ME``: dK, dV (and their tails) updated and returned, with this consumer's
    share of dQ_{i-1} at head dims 128 (its own 64 columns, every step) and 64 (all of it where ``DQ_HERE``: a
    constant, so that the product follows dK with no branch between them; the loop takes the steps in pairs).
    At the split head dims the caller adds dQ_{i-1} after the step. ``g`` is the CTA's step over all its tiles
    (the persistent kernel's; i in the one-tile kernel): ring slots, barrier phases and dS buffers follow it."""
    dtype: gl.constexpr = q_ring.dtype
    HEAD_DIM: gl.constexpr = q_ring.shape[4]  # the first column piece (the whole head dim where not split)
    TAIL: gl.constexpr = q_tail_ring.shape[4]
    SPLIT: gl.constexpr = TAIL != HEAD_DIM
    GROUPS: gl.constexpr = 2 if SPLIT else 1  # async wgmma groups per product (one per column piece)
    DQ_W: gl.constexpr = dq_desc.block_type.shape[3]
    HALVES: gl.constexpr = DQ_W != HEAD_DIM  # dQ's columns shared out: each consumer adds its own, every step
    BLOCK_M: gl.constexpr = q_ring.shape[3]
    STAGES: gl.constexpr = q_ring.shape[0]
    KEYS: gl.constexpr = k_all.shape[0]
    # Sᵀ, dPᵀ: (64 key rows, BLOCK_M query columns); dK, dV: (64, HEAD_DIM) and (64, TAIL); dQ: (BLOCK_M, DQ_W)
    st_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_M, 16]
    )
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16]
    )
    dq_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, DQ_W, 16]
    )
    op_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_layout, k_width=2)
    cols_st: gl.constexpr = gl.SliceLayout(0, st_layout)
    k = k_all.slice(ME * ROWS, ROWS, 0)
    v = v_smem.index(ME).reshape([ROWS, HEAD_DIM])
    k_tail = k_tail_all.slice(ME * ROWS, ROWS, 0)
    v_tail = v_tail_smem.index(ME).reshape([ROWS, TAIL])
    zero_st = gl.zeros([ROWS, BLOCK_M], gl.float32, st_layout)
    zero_dq = gl.zeros([BLOCK_M, DQ_W], gl.float32, dq_layout)

    slot = g % STAGES
    mbarrier.wait(ready.index(slot), (g // STAGES) & 1)
    q = q_ring.index(slot).reshape([BLOCK_M, HEAD_DIM])
    do = do_ring.index(slot).reshape([BLOCK_M, HEAD_DIM])
    q_tail = q_tail_ring.index(slot).reshape([BLOCK_M, TAIL])
    do_tail = do_tail_ring.index(slot).reshape([BLOCK_M, TAIL])
    par = g % 2
    prev = 1 - par
    if HALVES:
        # Head dim 128: every consumer, every step, its own 64 columns of dQ_{i-1}, issued in front of Sᵀ;
        # its staging store runs beside Sᵀ. Step 0 multiplies a buffer not yet written and adds nothing.
        if i > 0:
            mbarrier.wait(ds_full.index(prev), ((g - 1) // 2) & 1)
        dq = _dq_issue(ds_smem.index(prev), k_all.slice(ME * DQ_W, DQ_W, 1), 0, KEYS, DQ_W, zero_dq)
    s_t = warpgroup_mma(k, q.permute((1, 0)), zero_st, use_acc=False, is_async=True)
    if SPLIT:
        s_t = warpgroup_mma(k_tail, q_tail.permute((1, 0)), s_t, is_async=True)
    if HALVES:
        dq = warpgroup_mma_wait(GROUPS, deps=(dq,))  # Sᵀ still running
        if i > 0:
            tma.store_wait(1)  # the add of two steps ago has read this parity's staging buffer
            tile, box = _dq_views(dq_stage.index(2 * ME + prev), dq_desc)
            tile.store(dq)
            # (Moving the fence and add behind dPᵀ's issue measured 0-2 % slower on an H100: session 29.)
            fence_async_shared()
            _tma_add(dq_desc, [b, h, ((first + i - 1) % n_q) * BLOCK_M, ME * DQ_W], box)
            mbarrier.arrive(ds_empty.index(prev))
    dp_t = warpgroup_mma(v, do.permute((1, 0)), zero_st, use_acc=False, is_async=True)
    if SPLIT:
        dp_t = warpgroup_mma(v_tail, do_tail.permute((1, 0)), dp_t, is_async=True)
    lse2 = lse_ring.index(slot).load(cols_st)
    s_t = warpgroup_mma_wait(GROUPS, deps=(s_t,))
    p_t = gl.exp2(s_t * qk_scale - lse2[None, :])
    p_op = gl.convert_layout(p_t.to(dtype), op_layout)
    dv = warpgroup_mma(p_op, do, dv, is_async=True)
    if SPLIT:
        dv_tail = warpgroup_mma(p_op, do_tail, dv_tail, is_async=True)
    delta = delta_ring.index(slot).load(cols_st)
    dp_t = warpgroup_mma_wait(GROUPS, deps=(dp_t,))
    ds_t = (p_t * (dp_t - delta[None, :])).to(dtype)
    ds_op = gl.convert_layout(ds_t, op_layout)
    # Shared dQ: both consumers put their dS rows into one (128, BLOCK_M) buffer (two, by the parity of i), and
    # its product with all 128 keys is added once per CTA, not once per consumer. It is computed one step late
    # (dQ_{i-1} in step i): every consumer stored dS_{i-1} during step i - 1, so none waits for another. dK goes
    # first: the dS store runs beside it.
    dk = warpgroup_mma(ds_op, q, dk, is_async=True)
    if SPLIT:
        dk_tail = warpgroup_mma(ds_op, q_tail, dk_tail, is_async=True)
    mbarrier.wait(ds_empty.index(par), ((g // 2) & 1) ^ 1)  # the first use finds both free
    ds_smem.index(par).slice(ME * ROWS, ROWS, 0).store(ds_t)
    fence_async_shared()
    mbarrier.arrive(ds_full.index(par))
    if DQ_HERE:
        # Head dim 64, this consumer's turn: all of dQ_{i-1}, right behind dK. Step 0 multiplies a buffer not
        # yet written and adds nothing.
        if i > 0:
            mbarrier.wait(ds_full.index(prev), ((g - 1) // 2) & 1)
        dq = _dq_issue(ds_smem.index(prev), k_all, 0, KEYS, HEAD_DIM, zero_dq)
        dv, p_op, dk, ds_op, dq = warpgroup_mma_wait(0, deps=(dv, p_op, dk, ds_op, dq))
        mbarrier.arrive(empty.index(slot))
        if i > 0:
            tma.store_wait(0)  # this consumer's previous adds have read the staging buffer
            tile, box = _dq_views(dq_stage.index(ME), dq_desc)
            tile.store(dq)
            fence_async_shared()
            _tma_add(dq_desc, [b, h, ((first + i - 1) % n_q) * BLOCK_M, 0], box)
            mbarrier.arrive(ds_empty.index(prev))
    else:
        if SPLIT:
            dv, dv_tail, p_op, dk, dk_tail, ds_op = warpgroup_mma_wait(
                0, deps=(dv, dv_tail, p_op, dk, dk_tail, ds_op)
            )
        else:
            dv, p_op, dk, ds_op = warpgroup_mma_wait(0, deps=(dv, p_op, dk, ds_op))
        mbarrier.arrive(empty.index(slot))
    return dk, dv, dk_tail, dv_tail


@gluon.jit
def _bwd_work(
    dk_desc, dv_desc, dq_desc, dk_tail_desc, dv_tail_desc, dq_tail_desc, lse_ring, delta_ring, dq_stage, dq_tail_stage,
    q_ring, do_ring, k_smem, v_smem, q_tail_ring, do_tail_ring, k_tail_smem, v_tail_smem, ds_smem, kv_ready, ready,
    empty, ds_full, ds_empty, pid_bh, b, h, start_n, n_q, first, N_Q, qk_scale, sm_scale, ME: gl.constexpr,
):  # fmt: skip
    dtype: gl.constexpr = dk_desc.dtype
    # the first column piece (the whole head dim where it is not split) and the second
    HEAD_DIM: gl.constexpr = dk_desc.block_type.shape[3]
    TAIL: gl.constexpr = dk_tail_desc.block_type.shape[3]
    SPLIT: gl.constexpr = TAIL != HEAD_DIM
    DQ_W: gl.constexpr = dq_desc.block_type.shape[3]
    HALVES: gl.constexpr = DQ_W != HEAD_DIM  # dQ's columns shared out: each consumer adds its own, every step
    BLOCK_M: gl.constexpr = q_ring.shape[3]
    CONSUMERS: gl.constexpr = v_smem.shape[0]
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16]
    )
    tail_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, TAIL, 16]
    )

    KEYS: gl.constexpr = CONSUMERS * ROWS
    k_all = k_smem.reshape([KEYS, HEAD_DIM])  # every consumer's keys, for the shared dQ
    k = k_all.slice(ME * ROWS, ROWS, 0)
    v = v_smem.index(ME).reshape([ROWS, HEAD_DIM])
    k_tail_all = k_tail_smem.reshape([KEYS, TAIL])  # the same as k_all where the head dim is not split
    k_tail = k_tail_all.slice(ME * ROWS, ROWS, 0)
    v_tail = v_tail_smem.index(ME).reshape([ROWS, TAIL])
    dk = gl.zeros([ROWS, HEAD_DIM], gl.float32, acc_layout)
    dv = gl.zeros([ROWS, HEAD_DIM], gl.float32, acc_layout)
    if SPLIT:
        dk_tail = gl.zeros([ROWS, TAIL], gl.float32, tail_layout)
        dv_tail = gl.zeros([ROWS, TAIL], gl.float32, tail_layout)
    else:  # not carried: the steps' tail results are dropped below
        dk_tail = dk
        dv_tail = dv
    mbarrier.wait(kv_ready.index(ME), 0)

    step_args = (
        q_ring, do_ring, q_tail_ring, do_tail_ring, lse_ring, delta_ring, ready, empty, ds_smem, ds_full, ds_empty,
        dq_stage, dq_tail_stage, dq_desc, dq_tail_desc, k_all, k_tail_all, v_smem, v_tail_smem,
    )  # fmt: skip
    if HALVES or SPLIT:
        for i in range(n_q):
            if SPLIT:
                dk, dv, dk_tail, dv_tail = _bwd_step(
                    i, i, *step_args, dk, dv, dk_tail, dv_tail, b, h, first, n_q, qk_scale, ME, False
                )
                if i > 0 and (i - 1) % CONSUMERS == ME:  # consumers take turns: all 128 keys, both pieces
                    _dq_whole(
                        ds_smem, k_all, k_tail_all, dq_desc, dq_tail_desc, dq_stage, dq_tail_stage, ds_full,
                        ds_empty, b, h, i - 1, first, n_q, ME,
                    )  # fmt: skip
            else:
                dk, dv, _, _ = _bwd_step(
                    i, i, *step_args, dk, dv, dk, dv, b, h, first, n_q, qk_scale, ME, False
                )
    else:
        # Head dim 64: the consumers take turns on dQ. dQ_{i-1} belongs to consumer (i - 1) % 2, a constant in
        # each half of a pair of steps, so the product can follow dK with no branch between them (an
        # asynchronous accumulator cannot cross one).
        for pair in range(n_q // 2):
            dk, dv, _, _ = _bwd_step(
                2 * pair, 2 * pair, *step_args, dk, dv, dk, dv, b, h, first, n_q, qk_scale, ME, ME == 1
            )
            dk, dv, _, _ = _bwd_step(
                2 * pair + 1, 2 * pair + 1, *step_args, dk, dv, dk, dv, b, h, first, n_q, qk_scale, ME, ME == 0,
            )  # fmt: skip
        if n_q % 2 == 1:
            dk, dv, _, _ = _bwd_step(
                n_q - 1, n_q - 1, *step_args, dk, dv, dk, dv, b, h, first, n_q, qk_scale, ME, ME == 1
            )

    last = n_q - 1  # the last block's dQ
    if HALVES:
        mbarrier.wait(ds_full.index(last % 2), (last // 2) & 1)
        tma.store_wait(1)
        _dq_tma_add(
            ds_smem.index(last % 2), k_all.slice(ME * DQ_W, DQ_W, 1), KEYS, dq_desc,
            dq_stage.index(2 * ME + last % 2), b, h, ((first + last) % n_q) * BLOCK_M, ME * DQ_W,
        )  # fmt: skip
        mbarrier.arrive(ds_empty.index(last % 2))
    elif last % CONSUMERS == ME:
        _dq_whole(
            ds_smem, k_all, k_tail_all, dq_desc, dq_tail_desc, dq_stage, dq_tail_stage, ds_full, ds_empty, b, h,
            last, first, n_q, ME,
        )  # fmt: skip
    # The other consumer's last dQ products read this one's keys: wait for them before K's slot takes dK.
    for par in gl.static_range(2):
        uses = (n_q - par + 1) // 2
        if uses > 0:
            mbarrier.wait(ds_empty.index(par), (uses - 1) & 1)
    # K and V are read for the last time: their slots carry dK and dV out.
    k.store((dk * sm_scale).to(dtype))
    v.store(dv.to(dtype))
    if SPLIT:
        k_tail.store((dk_tail * sm_scale).to(dtype))
        v_tail.store(dv_tail.to(dtype))
    fence_async_shared()
    key = [b, h, start_n + ROWS * ME, 0]
    tma_store(dk_desc, key, k_smem.slice(ME * ROWS, ROWS, 2))
    tma_store(dv_desc, key, v_smem.index(ME))
    if SPLIT:
        tma_store(dk_tail_desc, key, k_tail_smem.slice(ME * ROWS, ROWS, 2))
        tma_store(dv_tail_desc, key, v_tail_smem.index(ME))
    tma.store_wait(0)


# Worker partitions take no constexpr arguments (attention_hopper.py): one wrapper per consumer index. Every
# consumer takes part in every step, also one whose keys all lie past N (they read as zero, so its dS adds
# nothing): the shared dQ needs both.
@gluon.jit
def _bwd_consumer_0(
    dk_desc, dv_desc, dq_desc, dk_tail_desc, dv_tail_desc, dq_tail_desc, lse_ring, delta_ring, dq_stage, dq_tail_stage,
    q_ring, do_ring, k_smem, v_smem, q_tail_ring, do_tail_ring, k_tail_smem, v_tail_smem, ds_smem, kv_ready, ready,
    empty, ds_full, ds_empty, pid_bh, b, h, start_n, n_q, first, N_Q, qk_scale, sm_scale,
):  # fmt: skip
    _bwd_work(
        dk_desc, dv_desc, dq_desc, dk_tail_desc, dv_tail_desc, dq_tail_desc, lse_ring, delta_ring, dq_stage, dq_tail_stage,
        q_ring, do_ring, k_smem, v_smem, q_tail_ring, do_tail_ring, k_tail_smem, v_tail_smem, ds_smem, kv_ready, ready,
        empty, ds_full, ds_empty, pid_bh, b, h, start_n, n_q, first, N_Q, qk_scale, sm_scale, 0,
    )  # fmt: skip


@gluon.jit
def _bwd_consumer_1(
    dk_desc, dv_desc, dq_desc, dk_tail_desc, dv_tail_desc, dq_tail_desc, lse_ring, delta_ring, dq_stage, dq_tail_stage,
    q_ring, do_ring, k_smem, v_smem, q_tail_ring, do_tail_ring, k_tail_smem, v_tail_smem, ds_smem, kv_ready, ready,
    empty, ds_full, ds_empty, pid_bh, b, h, start_n, n_q, first, N_Q, qk_scale, sm_scale,
):  # fmt: skip
    _bwd_work(
        dk_desc, dv_desc, dq_desc, dk_tail_desc, dv_tail_desc, dq_tail_desc, lse_ring, delta_ring, dq_stage, dq_tail_stage,
        q_ring, do_ring, k_smem, v_smem, q_tail_ring, do_tail_ring, k_tail_smem, v_tail_smem, ds_smem, kv_ready, ready,
        empty, ds_full, ds_empty, pid_bh, b, h, start_n, n_q, first, N_Q, qk_scale, sm_scale, 1,
    )  # fmt: skip


# The persistent kernel (``BackwardConfig.persistent``; the default at head dim 128, any power of two on
# request): one CTA per SM runs key tiles ``program_id``, ``+ num_programs``, ... back to back. Barrier phases
# and the parity of the dS buffers count steps over all its tiles (``g``); the walk over a tile's query blocks
# is the one-tile kernel's. dK and dV leave through the consumer's dQ staging buffers (at head dim 128 its two
# float32 64 × 64 buffers, one 64 × 128 tile in the input dtype each; at 64 its one 64 × 64 float32 buffer
# holds both), so K and V are free once the tile's last products have read them: the loader brings the next
# tile's K and V while the consumers write dK and dV out.
@gluon.jit
def _pbwd_loader(
    q_desc, do_desc, k_desc, v_desc, q_ring, do_ring, k_smem, v_smem, kv_ready, kv_empty, ready, empty, H, N_Q, N_KV,
    BH, LSE, DELTA, lse_ring, delta_ring,
):  # fmt: skip
    BLOCK_M: gl.constexpr = q_desc.block_type.shape[2]
    STAGES: gl.constexpr = q_ring.shape[0]
    CONSUMERS: gl.constexpr = v_smem.shape[0]
    kv_bytes: gl.constexpr = k_desc.block_type.nbytes + v_desc.block_type.nbytes
    qdo_bytes: gl.constexpr = q_desc.block_type.nbytes + do_desc.block_type.nbytes
    n_n = gl.cdiv(N_KV, CONSUMERS * ROWS)
    n_q = gl.cdiv(N_Q, BLOCK_M)
    for tile in range(gl.program_id(0), n_n * BH, gl.num_programs(0)):
        t = (tile - gl.program_id(0)) // gl.num_programs(0)  # this CTA's tiles so far
        pid_bh, b, h, pid_n, first = _key_tile(tile, n_n, n_q, H)
        mbarrier.wait(kv_empty.index(0), (t & 1) ^ 1)  # every consumer is done with the last tile's K and V
        for c in gl.static_range(CONSUMERS):
            key = [b, h, pid_n * CONSUMERS * ROWS + ROWS * c, 0]
            mbarrier.expect(kv_ready.index(c), kv_bytes)
            tma_load(k_desc, key, kv_ready.index(c), k_smem.slice(ROWS * c, ROWS, 2))
            tma_load(v_desc, key, kv_ready.index(c), v_smem.index(c))
        row_base = pid_bh.to(gl.int64) * N_Q
        for i in range(n_q):
            g = t * n_q + i  # steps of every tile of this CTA
            slot = g % STAGES
            mbarrier.wait(empty.index(slot), ((g // STAGES) & 1) ^ 1)
            start_m = ((first + i) % n_q) * BLOCK_M
            mbarrier.expect(ready.index(slot), qdo_bytes)
            tma_load(q_desc, [b, h, start_m, 0], ready.index(slot), q_ring.index(slot))
            tma_load(do_desc, [b, h, start_m, 0], ready.index(slot), do_ring.index(slot))
            _stage_rows(LSE, DELTA, row_base, start_m, N_Q, lse_ring, delta_ring, ready, slot)


@gluon.jit
def _pbwd_work(
    dk_desc, dv_desc, dq_desc, lse_ring, delta_ring, dq_stage, q_ring, do_ring, k_smem, v_smem, ds_smem, kv_ready,
    kv_empty, ready, empty, ds_full, ds_empty, H, N_Q, N_KV, BH, qk_scale, sm_scale, ME: gl.constexpr,
):  # fmt: skip
    dtype: gl.constexpr = dk_desc.dtype
    DK_BOX: gl.constexpr = dk_desc.layout
    DV_BOX: gl.constexpr = dv_desc.layout
    HEAD_DIM: gl.constexpr = dk_desc.block_type.shape[3]
    DQ_W: gl.constexpr = dq_desc.block_type.shape[3]
    BLOCK_M: gl.constexpr = q_ring.shape[3]
    CONSUMERS: gl.constexpr = v_smem.shape[0]
    KEYS: gl.constexpr = CONSUMERS * ROWS
    HALVES: gl.constexpr = DQ_W != HEAD_DIM  # dQ's columns shared out: each consumer adds its own, every step
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16]
    )
    k_all = k_smem.reshape([KEYS, HEAD_DIM])
    step_args = (
        q_ring, do_ring, q_ring, do_ring, lse_ring, delta_ring, ready, empty, ds_smem, ds_full, ds_empty, dq_stage,
        dq_stage, dq_desc, dq_desc, k_all, k_all, v_smem, v_smem,
    )  # fmt: skip
    n_n = gl.cdiv(N_KV, KEYS)
    n_q = gl.cdiv(N_Q, BLOCK_M)
    for tile in range(gl.program_id(0), n_n * BH, gl.num_programs(0)):
        t = (tile - gl.program_id(0)) // gl.num_programs(0)  # this CTA's tiles so far
        g0 = t * n_q  # the step (over every tile of this CTA) of the tile's first query block
        _bh, b, h, pid_n, first = _key_tile(tile, n_n, n_q, H)
        dk = gl.zeros([ROWS, HEAD_DIM], gl.float32, acc_layout)
        dv = gl.zeros([ROWS, HEAD_DIM], gl.float32, acc_layout)
        mbarrier.wait(kv_ready.index(ME), t & 1)
        if HALVES:
            for i in range(n_q):
                dk, dv, _, _ = _bwd_step(
                    i, g0 + i, *step_args, dk, dv, dk, dv, b, h, first, n_q, qk_scale, ME, False
                )
        else:  # the consumers take turns on dQ, the steps in pairs (as in _bwd_work)
            for pair in range(n_q // 2):
                i = 2 * pair
                dk, dv, _, _ = _bwd_step(
                    i, g0 + i, *step_args, dk, dv, dk, dv, b, h, first, n_q, qk_scale, ME, ME == 1
                )
                dk, dv, _, _ = _bwd_step(
                    i + 1, g0 + i + 1, *step_args, dk, dv, dk, dv, b, h, first, n_q, qk_scale, ME, ME == 0
                )
            if n_q % 2 == 1:
                dk, dv, _, _ = _bwd_step(
                    n_q - 1, g0 + n_q - 1, *step_args, dk, dv, dk, dv, b, h, first, n_q, qk_scale, ME, ME == 1
                )
        g = g0 + n_q - 1  # the tile's last dQ
        start_m = ((first + n_q - 1) % n_q) * BLOCK_M
        if HALVES:
            mbarrier.wait(ds_full.index(g % 2), (g // 2) & 1)
            tma.store_wait(1)
            _dq_tma_add(
                ds_smem.index(g % 2), k_all.slice(ME * DQ_W, DQ_W, 1), KEYS, dq_desc,
                dq_stage.index(2 * ME + g % 2), b, h, start_m, ME * DQ_W,
            )  # fmt: skip
            mbarrier.arrive(ds_empty.index(g % 2))
        elif (n_q - 1) % CONSUMERS == ME:
            mbarrier.wait(ds_full.index(g % 2), (g // 2) & 1)
            tma.store_wait(0)
            _dq_tma_add(ds_smem.index(g % 2), k_all, KEYS, dq_desc, dq_stage.index(ME), b, h, start_m, 0)
            mbarrier.arrive(ds_empty.index(g % 2))
        mbarrier.arrive(kv_empty.index(0))  # this consumer's products have read K and V for the last time
        tma.store_wait(0)
        if HALVES:
            # dK through the staging buffer that the next tile's first add takes: its store_wait(1) finds it
            # read (dV's store is the newer group then).
            dk_buf = dq_stage.index(2 * ME + (g + 1) % 2)
            dv_buf = dq_stage.index(2 * ME + g % 2)
            dk_stage = _reinterpret(dk_buf, dtype, [1, 1, ROWS, HEAD_DIM], DK_BOX)
            dv_stage = _reinterpret(dv_buf, dtype, [1, 1, ROWS, HEAD_DIM], DV_BOX)
        else:  # one float32 buffer holds both (the next add waits for every store)
            both = _reinterpret(dq_stage.index(ME), dtype, [2, 1, 1, ROWS, HEAD_DIM], DK_BOX)
            dk_stage = both.index(0)
            dv_stage = both.index(1)
        dk_stage.reshape([ROWS, HEAD_DIM]).store((dk * sm_scale).to(dtype))
        dv_stage.reshape([ROWS, HEAD_DIM]).store(dv.to(dtype))
        fence_async_shared()
        key = [b, h, pid_n * KEYS + ROWS * ME, 0]
        tma_store(dk_desc, key, dk_stage)
        tma_store(dv_desc, key, dv_stage)
    tma.store_wait(0)


# gl.warp_specialize's worker partitions cannot take constexpr arguments: each consumer index has a wrapper.
@gluon.jit
def _pbwd_consumer_0(
    dk_desc, dv_desc, dq_desc, lse_ring, delta_ring, dq_stage, q_ring, do_ring, k_smem, v_smem, ds_smem, kv_ready,
    kv_empty, ready, empty, ds_full, ds_empty, H, N_Q, N_KV, BH, qk_scale, sm_scale,
):  # fmt: skip
    _pbwd_work(
        dk_desc, dv_desc, dq_desc, lse_ring, delta_ring, dq_stage, q_ring, do_ring, k_smem, v_smem, ds_smem, kv_ready,
        kv_empty, ready, empty, ds_full, ds_empty, H, N_Q, N_KV, BH, qk_scale, sm_scale, 0,
    )  # fmt: skip


@gluon.jit
def _pbwd_consumer_1(
    dk_desc, dv_desc, dq_desc, lse_ring, delta_ring, dq_stage, q_ring, do_ring, k_smem, v_smem, ds_smem, kv_ready,
    kv_empty, ready, empty, ds_full, ds_empty, H, N_Q, N_KV, BH, qk_scale, sm_scale,
):  # fmt: skip
    _pbwd_work(
        dk_desc, dv_desc, dq_desc, lse_ring, delta_ring, dq_stage, q_ring, do_ring, k_smem, v_smem, ds_smem, kv_ready,
        kv_empty, ready, empty, ds_full, ds_empty, H, N_Q, N_KV, BH, qk_scale, sm_scale, 1,
    )  # fmt: skip


@gluon.jit
def _attn_bwd_hopper_kernel(
    q_desc, k_desc, v_desc, do_desc, dk_desc, dv_desc, dq_desc, q_tail_desc, k_tail_desc, v_tail_desc, do_tail_desc,
    dk_tail_desc, dv_tail_desc, dq_tail_desc, LSE, DELTA, H, N_Q, N_KV, BH, qk_scale, sm_scale,
    STAGES: gl.constexpr, CONSUMERS: gl.constexpr, CONSUMER_REGS: gl.constexpr, LOADER_REGS: gl.constexpr,
    PERSISTENT: gl.constexpr,
):  # fmt: skip
    # An unsplit head dim: no second piece was passed (so none was encoded at launch); the first stands in.
    if q_tail_desc is None:
        q_tail_desc = q_desc
        k_tail_desc = k_desc
        v_tail_desc = v_desc
        do_tail_desc = do_desc
        dk_tail_desc = dk_desc
        dv_tail_desc = dv_desc
        dq_tail_desc = dq_desc
    BLOCK_M: gl.constexpr = q_desc.block_type.shape[2]
    HEAD_DIM: gl.constexpr = q_desc.block_type.shape[3]  # the first column piece (all of an unsplit one)
    TAIL: gl.constexpr = q_tail_desc.block_type.shape[3]
    dtype: gl.constexpr = q_desc.dtype
    n_n = gl.cdiv(N_KV, CONSUMERS * ROWS)  # key blocks of one head adjacent: its Q and dO stay in L2
    pid_n = gl.program_id(0) % n_n
    pid_bh = gl.program_id(0) // n_n
    b = pid_bh // H
    h = pid_bh % H
    start_n = pid_n * CONSUMERS * ROWS
    n_q = gl.cdiv(N_Q, BLOCK_M)
    first = pid_n % n_q  # where this CTA's walk over the query blocks starts

    KEY_ROWS: gl.constexpr = CONSUMERS * ROWS
    ds_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([KEY_ROWS, BLOCK_M], dtype)
    q_ring = gl.allocate_shared_memory(dtype, [STAGES, 1, 1, BLOCK_M, HEAD_DIM], q_desc.layout)
    do_ring = gl.allocate_shared_memory(dtype, [STAGES, 1, 1, BLOCK_M, HEAD_DIM], do_desc.layout)
    # one (1, 1, CONSUMERS·64, D) buffer, consumer c's rows at 64·c: the shared dQ reads all of them at once
    k_smem = gl.allocate_shared_memory(dtype, [1, 1, KEY_ROWS, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [CONSUMERS, 1, 1, ROWS, HEAD_DIM], v_desc.layout)
    # staging for the TMA reduce-add of dQ, one per consumer; dS of all keys, two by the parity of the step
    DQ_W: gl.constexpr = dq_desc.block_type.shape[3]
    # Fragment order (an unswizzled box, DQ_FRAGMENTS) is a view of the buffers: they keep the 128-byte swizzle's
    # 1,024-byte alignment, which dK and dV need where they leave through them (the persistent kernel).
    if dq_desc.layout.swizzle_byte_width == 0:
        stage_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=32, rank=4)
    else:
        stage_layout: gl.constexpr = dq_desc.layout  # type: ignore[no-redef]
    if DQ_W != HEAD_DIM:  # dQ's columns shared out between the consumers: one buffer per consumer and parity
        dq_stage = gl.allocate_shared_memory(gl.float32, [2 * CONSUMERS, 1, 1, BLOCK_M, DQ_W], stage_layout)
    else:
        dq_stage = gl.allocate_shared_memory(gl.float32, [CONSUMERS, 1, 1, BLOCK_M, HEAD_DIM], stage_layout)
    if TAIL != HEAD_DIM:  # a head dim split in two column pieces (80 = 64 + 16): the second one's buffers
        q_tail_ring = gl.allocate_shared_memory(dtype, [STAGES, 1, 1, BLOCK_M, TAIL], q_tail_desc.layout)
        do_tail_ring = gl.allocate_shared_memory(dtype, [STAGES, 1, 1, BLOCK_M, TAIL], do_tail_desc.layout)
        k_tail_smem = gl.allocate_shared_memory(dtype, [1, 1, KEY_ROWS, TAIL], k_tail_desc.layout)
        v_tail_smem = gl.allocate_shared_memory(dtype, [CONSUMERS, 1, 1, ROWS, TAIL], v_tail_desc.layout)
        dq_tail_stage = gl.allocate_shared_memory(
            gl.float32, [CONSUMERS, 1, 1, BLOCK_M, TAIL], dq_tail_desc.layout
        )
    else:  # unused: the workers see equal widths and take one piece
        q_tail_ring = q_ring
        do_tail_ring = do_ring
        k_tail_smem = k_smem
        v_tail_smem = v_smem
        dq_tail_stage = dq_stage
    ds_smem = gl.allocate_shared_memory(dtype, [2, KEY_ROWS, BLOCK_M], ds_layout)
    row_smem: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[0])
    lse_ring = gl.allocate_shared_memory(gl.float32, [STAGES, BLOCK_M], row_smem)
    delta_ring = gl.allocate_shared_memory(gl.float32, [STAGES, BLOCK_M], row_smem)
    kv_ready = gl.allocate_shared_memory(gl.int64, [CONSUMERS, 1], mbarrier.MBarrierLayout())
    ds_full = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    ds_empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(CONSUMERS):
        mbarrier.init(kv_ready.index(i), count=1)
    for i in gl.static_range(2):
        mbarrier.init(ds_full.index(i), count=CONSUMERS)
        mbarrier.init(ds_empty.index(i), count=CONSUMERS if DQ_W != HEAD_DIM else 1)
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=2)  # the loader's expect-tx, then its arrive after lse and delta
        mbarrier.init(empty.index(i), count=CONSUMERS)  # every consumer releases a slot

    if PERSISTENT:  # a head dim of one column piece
        kv_empty = gl.allocate_shared_memory(gl.int64, [1, 1], mbarrier.MBarrierLayout())
        mbarrier.init(kv_empty.index(0), count=CONSUMERS)
        p_consumer_args = (
            dk_desc, dv_desc, dq_desc, lse_ring, delta_ring, dq_stage, q_ring, do_ring, k_smem, v_smem, ds_smem,
            kv_ready, kv_empty, ready, empty, ds_full, ds_empty, H, N_Q, N_KV, BH, qk_scale, sm_scale,
        )  # fmt: skip
        p_loader_args = (
            q_desc, do_desc, k_desc, v_desc, q_ring, do_ring, k_smem, v_smem, kv_ready, kv_empty, ready, empty, H, N_Q,
            N_KV, BH, LSE, DELTA, lse_ring, delta_ring,
        )  # fmt: skip
        gl.warp_specialize(
            [
                (_pbwd_consumer_0, p_consumer_args),
                (_pbwd_consumer_1, p_consumer_args),
                (_pbwd_loader, p_loader_args),
            ],
            [4, 1],
            [CONSUMER_REGS, LOADER_REGS],
        )
        return
    consumer_args = (
        dk_desc, dv_desc, dq_desc, dk_tail_desc, dv_tail_desc, dq_tail_desc, lse_ring, delta_ring, dq_stage,
        dq_tail_stage,
        q_ring, do_ring, k_smem, v_smem, q_tail_ring, do_tail_ring, k_tail_smem, v_tail_smem, ds_smem, kv_ready, ready,
        empty, ds_full, ds_empty, pid_bh, b, h, start_n, n_q, first, N_Q, qk_scale, sm_scale,
    )  # fmt: skip
    loader_args = (
        q_desc, do_desc, k_desc, v_desc, q_tail_desc, do_tail_desc, k_tail_desc, v_tail_desc, q_ring, do_ring, k_smem,
        v_smem, q_tail_ring, do_tail_ring, k_tail_smem, v_tail_smem, kv_ready, ready, empty, b, h, start_n, n_q, first,
        LSE, DELTA, lse_ring, delta_ring, pid_bh, N_Q,
    )  # fmt: skip
    gl.warp_specialize(
        [(_bwd_consumer_0, consumer_args), (_bwd_consumer_1, consumer_args), (_bwd_loader, loader_args)],
        [4, 1],
        [CONSUMER_REGS, LOADER_REGS],
    )


def _backward_kernel(
    cfg: BackwardConfig, q: torch.Tensor, k: torch.Tensor
) -> tuple[Any, tuple[int], dict[str, Any]]:
    """The kernel, grid and constexpr arguments of ``cfg``'s backward for ``q`` and ``k``."""
    batch, heads, _, head_dim = q.shape
    grid = (cdiv(k.shape[2], cfg.block_n) * batch * heads,)
    persistent = head_dim == 128 if cfg.persistent is None else cfg.persistent
    if persistent and head_pieces(head_dim)[1] != head_dim:
        raise ValueError(f"the persistent backward takes power-of-two head dims, not {head_dim}")
    if persistent:
        grid = (min(grid[0], sm_count(q.device)),)
    static = {
        "STAGES": cfg.stages, "CONSUMERS": CONSUMER_WARPGROUPS, "CONSUMER_REGS": cfg.regs,
        "LOADER_REGS": LOADER_REGS, "PERSISTENT": persistent, "num_warps": 4,
    }  # fmt: skip
    return _attn_bwd_hopper_kernel, grid, static


def _backward_args(
    cfg: BackwardConfig, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, do: torch.Tensor, lse: torch.Tensor,
    delta: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor, scale: float, dq_acc: torch.Tensor,
) -> tuple[Any, ...]:  # fmt: skip
    """The positional arguments of ``cfg``'s backward kernel (:func:`_backward_kernel`) for these tensors."""
    batch, heads, n_q, head_dim = q.shape
    block_m = cfg.block_m
    q_d, q_t = piece_descriptors(q, block_m)
    do_d, do_t = piece_descriptors(do, block_m)
    k_d, k_t = piece_descriptors(k, ROWS.value)
    v_d, v_t = piece_descriptors(v, ROWS.value)
    dk_d, dk_t = piece_descriptors(dk, ROWS.value)
    dv_d, dv_t = piece_descriptors(dv, ROWS.value)
    if cfg.fragments(head_dim):
        dq_d = dq_t = descriptor(dq_acc, block_m, cols=64, layout=DQ_FRAGMENT_BOX)
    elif cfg.dq_halves and head_dim == 128:
        dq_d = dq_t = descriptor(dq_acc, block_m, cols=head_dim // 2)
    else:
        dq_d, dq_t = piece_descriptors(dq_acc, block_m)
    # Unsplit: None for the second pieces (the kernel reuses the first), so Triton encodes 7 TMA maps, not 14.
    if head_pieces(head_dim)[0] == head_dim and attention_hopper._unsplit_tails_as_none:
        tails: tuple[Any, ...] = (None,) * 7
    else:
        tails = (q_t, k_t, v_t, do_t, dk_t, dv_t, dq_t)
    return (
        q_d, k_d, v_d, do_d, dk_d, dv_d, dq_d, *tails, lse, delta, heads, n_q, k.shape[2], batch * heads,
        scale * LOG2E, scale,
    )  # fmt: skip


class BackwardPlan:
    """The backward kernel at one signature of its tensors (shapes, strides, dtype, device, alignment:
    attention.py keys its plans on them), bound once (:class:`launch.Site`). Later calls re-point the first
    call's descriptors at their tensors (``attention_hopper.rebased``; head dims of one column piece)."""

    __slots__ = ("_descs", "_ints", "cfg", "site")

    def __init__(self, q: torch.Tensor, k: torch.Tensor, config: BackwardConfig | None = None) -> None:
        self.cfg = config or BackwardConfig()
        fn, grid, static = _backward_kernel(self.cfg, q, k)
        self.site = Site(fn, grid, **static)
        self._descs: tuple[Any, ...] | None = None
        self._ints: tuple[int, ...] = ()

    def accumulator(self, q: torch.Tensor) -> torch.Tensor:
        """An uninitialised dQ accumulator for this plan (:func:`dq_accumulator`)."""
        return dq_accumulator(q, self.cfg)

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, do: torch.Tensor, lse: torch.Tensor,
        delta: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor, scale: float, dq_acc: torch.Tensor,
    ) -> None:  # fmt: skip
        d = self._descs
        if d is None:
            args = _backward_args(self.cfg, q, k, v, do, lse, delta, dk, dv, scale, dq_acc)
            # seven descriptors, their seven second pieces (None), lse, delta, ints, two scales
            if rebasable(args, (q, k, v, do, dk, dv, dq_acc), 14):
                self._descs, self._ints = args[:7], args[16:-2]
            self.site(*args)
            return
        self.site(
            rebased(d[0], q), rebased(d[1], k), rebased(d[2], v), rebased(d[3], do), rebased(d[4], dk),
            rebased(d[5], dv), rebased(d[6], dq_acc), *_NO_TAILS, lse, delta, *self._ints, scale * LOG2E, scale,
        )  # fmt: skip


_NO_TAILS = (None,) * 7


def dq_accumulator(q: torch.Tensor, config: BackwardConfig | None = None) -> torch.Tensor:
    """An uninitialised float32 accumulator for the backward's dQ of ``q`` (B, H, N, D): shaped as ``q``, or with
    N rounded up to whole query blocks where dQ is accumulated in fragment order (``BackwardConfig.fragments``:
    a block's rows are spread over all of its box, so none may be clipped at N)."""
    batch, heads, n_q, head_dim = q.shape
    rows = dq_accumulator_rows(n_q, head_dim, config or BackwardConfig())
    return torch.empty((batch, heads, rows, head_dim), device=q.device, dtype=torch.float32)


def dq_accumulator_rows(n_q: int, head_dim: int, cfg: BackwardConfig) -> int:
    """Rows per head of :func:`dq_accumulator`."""
    return cdiv(n_q, cfg.block_m) * cfg.block_m if cfg.fragments(head_dim) else n_q


def hopper_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    do: torch.Tensor,
    lse: torch.Tensor,
    delta: torch.Tensor,
    dk: torch.Tensor,
    dv: torch.Tensor,
    scale: float,
    config: BackwardConfig | None = None,
    dq_acc: torch.Tensor | None = None,
) -> torch.Tensor:
    """Write dK and dV into ``dk``/``dv`` and return dQ / ``scale`` summed in a float32 accumulator: ``dq_acc``
    where given (from :func:`dq_accumulator`, zeroed by the caller: ``attention._delta`` zeroes it), else a new
    one. ``attention._dq_cast`` makes dQ of it (in fragment order where ``config.fragments(D)``).

    ``lse`` is the forward's natural log-sum-exp and ``delta`` rowsum(dO ∘ O) (minus the lse's gradient),
    both (B, H, N) contiguous float32. Every tensor must pass ``attention_hopper.hopper_usable``'s checks.
    Head dims that are not powers of two run in two column pieces (``attention_hopper.head_pieces``).
    """
    cfg = config or BackwardConfig()
    if dq_acc is None:
        dq_acc = dq_accumulator(q, cfg).zero_()
    elif dq_acc.shape != (*q.shape[:2], dq_accumulator_rows(q.shape[2], q.shape[3], cfg), q.shape[3]):
        raise ValueError(
            f"dq_acc is {tuple(dq_acc.shape)}, not the shape of dq_accumulator() for q {tuple(q.shape)}"
        )
    fn, grid, static = _backward_kernel(cfg, q, k)
    launch(fn, grid, *_backward_args(cfg, q, k, v, do, lse, delta, dk, dv, scale, dq_acc), **static)
    return dq_acc
