"""Persistent Hopper forward in Gluon: one CTA per SM runs all its query tiles as one stream of key blocks.

The ping-pong kernel (``attention_hopper.py``) gives each CTA one query tile. Each tile then starts with a
Q·Kᵀ whose softmax has no P·V to hide behind and ends with a P·V that nothing runs beside, and a new CTA
must start on the SM. Here a CTA takes query tiles ``program_id``, ``+ num_programs``, ... and its consumer
warpgroups run their key blocks back to back across tiles. The step that issues the last P·V of tile k
also issues the first Q·Kᵀ of tile k + 1, so the ping-pong does not drain between tiles:

* at that step the row statistics restart (the running max goes back to −inf, so the rescale factor of the
  finished accumulator is 0 and the next tile's sums start from nothing, with no branch on the GEMMs);
* the finished output leaves through an O slot of its own, by TMA, while the next tile's GEMMs run;
* Q has two slots per consumer, so tile k + 1's Q arrives while tile k runs.

Query rows past N (the last tile of a head) are computed on the zeros TMA reads there and are clipped
when stored. Power-of-two head dims only (64, 128); ``attention_hopper`` launches it for a
:class:`HopperConfig` with ``persistent=True``.

Measured (H100, 2026-11-26, benchmarks/ATTENTION_NOTES.md "Session 11"): head dim 128 at 4,096 tokens
+1 % over the one-tile kernel, level at 16k, so the drain between tiles cost less than the two key blocks
a tile estimate gave; with two consumers at head dim 64 it is the fastest kernel at N = 4100 (1.02–1.04×
cuDNN) and 5–7 % behind three one-tile consumers elsewhere, so only head dim 128 uses it
(``attention_hopper.CANDIDATES``). The block loop is a helper inlined twice (every tile but the last, then
the last) so that no branch sits inside it: with the tile change as a runtime branch inside one flat loop,
the loop grew by 550 instructions and ran 9–12 % slower.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from .attention_hopper import (
    K_FREE_BAR,
    PACKED_P,
    V_FREE_BAR,
    _init_turns,
    _kv_ring_barriers,
    _load_pieces,
    _pack_p,
    _pp_pass_turn,
    _pp_step,
    _pp_take_turn,
    _slot_drain,
    _slot_release,
    _slot_wait_free,
    _softmax_block,
    _tile,
    _unpack_p,
    _wait_loaded,
    tma_store,
)


@gluon.jit
def _tile_coords(tile, H, N_Q, BLOCK_M: gl.constexpr):
    """(batch·head, batch, head, first query row) of query tile ``tile``; the tiles of a head are adjacent,
    so the CTAs working at one time share that head's K and V in L2."""
    n_m = gl.cdiv(N_Q, BLOCK_M)
    bh = tile // n_m
    return bh, bh // H, bh % H, (tile % n_m) * BLOCK_M


@gluon.jit
def _ps_loader(
    q_desc, k_desc, v_desc, q_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, H,
    N_Q, n_tiles, n_kv,
):  # fmt: skip
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[2]
    ROWS: gl.constexpr = q_desc.block_type.shape[2]
    K_STAGES: gl.constexpr = k_ring.shape[0]
    V_STAGES: gl.constexpr = v_ring.shape[0]
    CONSUMERS: gl.constexpr = q_smem.shape[0] // 2
    first = gl.program_id(0)
    step = gl.num_programs(0)
    for tile in range(first, n_tiles, step):
        t = (tile - first) // step  # this CTA's tile count so far
        _, b, h, start_m = _tile_coords(tile, H, N_Q, CONSUMERS * ROWS)
        for i in gl.static_range(CONSUMERS):
            slot = (t % 2) * CONSUMERS + i
            mbarrier.wait(q_empty.index(slot), ((t // 2) & 1) ^ 1)  # tile t − 2's last Q·Kᵀ is done
            q_box = q_smem.index(slot)
            _load_pieces(q_desc, q_desc, [b, h, start_m + ROWS * i, 0], q_ready.index(slot), q_box, q_box)
        for blk in range(n_kv):
            c = t * n_kv + blk  # the rings run on across tiles
            ks = c % K_STAGES
            _slot_wait_free(k_empty, c, K_STAGES, K_FREE_BAR, CONSUMERS)
            k_box = k_ring.index(ks)
            _load_pieces(k_desc, k_desc, [b, h, blk * BLOCK_N, 0], k_ready.index(ks), k_box, k_box)
            vs = c % V_STAGES
            _slot_wait_free(v_empty, c, V_STAGES, V_FREE_BAR, CONSUMERS)
            v_box = v_ring.index(vs)
            _load_pieces(v_desc, v_desc, [b, h, blk * BLOCK_N, 0], v_ready.index(vs), v_box, v_box)
    blocks = gl.cdiv(n_tiles - first, step) * n_kv
    _slot_drain(blocks, K_STAGES, K_FREE_BAR, CONSUMERS)
    _slot_drain(blocks, V_STAGES, V_FREE_BAR, CONSUMERS)


@gluon.jit
def _ps_store(
    acc, m_i, l_i, o_desc, o_smem, LSE, tile, H, N_Q, ME: gl.constexpr, rows_s: gl.constexpr, rows_o: gl.constexpr
):  # fmt: skip
    """Normalise a finished tile's accumulator and send it out through this warpgroup's O slot."""
    ROWS: gl.constexpr = o_smem.shape[3]
    CONSUMERS: gl.constexpr = o_smem.shape[0]
    bh, b, h, start_m = _tile_coords(tile, H, N_Q, CONSUMERS * ROWS)
    tma.store_wait(0)  # the previous tile's output has left the slot (long ago: a tile's worth of steps)
    o = acc / gl.convert_layout(l_i, rows_o)[:, None]
    o_smem.index(ME).reshape([ROWS, o_smem.shape[4]]).store(o.to(o_desc.dtype))
    fence_async_shared()
    tma_store(o_desc, [b, h, start_m + ROWS * ME, 0], o_smem.index(ME))
    rows = start_m + ROWS * ME + gl.arange(0, ROWS, rows_s)
    lse = (m_i + gl.log2(l_i)) * 0.6931471805599453  # natural log
    gl.store(LSE + bh.to(gl.int64) * N_Q + rows, lse, mask=rows < N_Q)


@gluon.jit
def _ps_blocks(
    q, k_ring, v_ring, k_ready, k_empty, v_ready, v_empty, turn, m_i, l_i, p, acc, base, n_kv, N_KV, qk_scale,
    ME: gl.constexpr,
):  # fmt: skip
    """Blocks 1 … n_kv − 1 of a tile whose block 0 is at step ``base``: issue S(g + 1) and O += P(g)·V(g),
    the softmax of S(g + 1) while O runs, then rescale O (the ping-pong kernel's loop, steps counted on).
    ``p`` is P of block 0 in float32; returns the last block's P as the P·V operand."""
    dtype: gl.constexpr = q.dtype
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc.type.layout, k_width=2)
    p_op = _pack_p(p, dtype) if PACKED_P else gl.convert_layout(p.to(dtype), p_layout)
    ROWS: gl.constexpr = q.shape[0]
    BLOCK_N: gl.constexpr = k_ring.shape[3]
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 16]
    )
    zero_s = gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout)
    for j in range(0, n_kv - 2):  # the last block's step alone masks its columns (see _pp_work)
        p_op, acc, _, m_i, l_i = _pp_step(
            p_op, acc, acc, m_i, l_i, q, q, k_ring, v_ring, k_ring, v_ring, k_ready, k_empty, v_ready, v_empty,
            turn, zero_s, base + j, n_kv, N_KV, qk_scale, ME, False, PACKED_P,
        )  # fmt: skip
    if n_kv >= 2:
        p_op, acc, _, m_i, l_i = _pp_step(
            p_op, acc, acc, m_i, l_i, q, q, k_ring, v_ring, k_ring, v_ring, k_ready, k_empty, v_ready, v_empty,
            turn, zero_s, base + n_kv - 2, n_kv, N_KV, qk_scale, ME, True, PACKED_P,
        )  # fmt: skip
    if PACKED_P:
        p_op = _unpack_p(p_op, dtype, p_layout)
    return p_op, acc, m_i, l_i


@gluon.jit
def _ps_consumer(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale, ME: gl.constexpr,
):  # fmt: skip
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
    rows_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    rows_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    other: gl.constexpr = (ME + 1) % CONSUMERS  # the warpgroup whose turn comes next

    first = gl.program_id(0)
    step = gl.num_programs(0)
    mine = gl.cdiv(n_tiles - first, step)  # this CTA's tiles: first, first + step, …
    zero_s = gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout)
    no_max = gl.full([ROWS], float("-inf"), gl.float32, rows_s)
    no_sum = gl.zeros([ROWS], gl.float32, rows_s)

    # Block 0 of the first tile: its softmax has nothing to hide behind (once per CTA, not per tile).
    mbarrier.wait(q_ready.index(ME), 0)
    _wait_loaded(k_ready, 0, K_STAGES)
    _pp_take_turn(turn, ME, 0)
    q = q_smem.index(ME).reshape([ROWS, HEAD_DIM])
    s = warpgroup_mma(
        q, _tile(k_ring, 0, BLOCK_N, HEAD_DIM).permute((1, 0)), zero_s, use_acc=False, is_async=True
    )
    _pp_pass_turn(turn, other)
    s = warpgroup_mma_wait(0, deps=(s,))
    _slot_release(k_empty, 0, K_FREE_BAR, CONSUMERS)
    p, _, m_i, l_i = _softmax_block(s, no_max, no_sum, qk_scale, 0, n_kv, N_KV, BLOCK_N, s_layout)
    # P crosses the tile loop in float32 and becomes the P·V operand inside it: carried as bf16/fp16 instead,
    # it lived in 16-bit registers and the block loop re-packed all of them every step (PRMT in the SASS).
    acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)

    for t in range(0, mine - 1):  # every tile but the last, then the step into the next one
        q = q_smem.index((t % 2) * CONSUMERS + ME).reshape([ROWS, HEAD_DIM])
        p_op, acc, m_i, l_i = _ps_blocks(
            q, k_ring, v_ring, k_ready, k_empty, v_ready, v_empty, turn, m_i, l_i, p, acc, t * n_kv, n_kv,
            N_KV, qk_scale, ME,
        )  # fmt: skip
        # The step between tiles: S(block 0 of tile t + 1) and O += P·V of tile t's last block.
        g = (t + 1) * n_kv - 1
        q_slot = ((t + 1) % 2) * CONSUMERS + ME
        mbarrier.wait(q_ready.index(q_slot), ((t + 1) // 2) & 1)
        _wait_loaded(k_ready, g + 1, K_STAGES)
        _wait_loaded(v_ready, g, V_STAGES)
        _pp_take_turn(turn, ME, g + 1)
        q_next = q_smem.index(q_slot).reshape([ROWS, HEAD_DIM])
        k_next = _tile(k_ring, (g + 1) % K_STAGES, BLOCK_N, HEAD_DIM).permute((1, 0))
        s_next = warpgroup_mma(q_next, k_next, zero_s, use_acc=False, is_async=True)
        pv = warpgroup_mma(p_op, _tile(v_ring, g % V_STAGES, BLOCK_N, HEAD_DIM), acc, is_async=True)
        _pp_pass_turn(turn, other)
        s = warpgroup_mma_wait(1, deps=(s_next,))
        _slot_release(k_empty, (g + 1) % K_STAGES, K_FREE_BAR, CONSUMERS)
        mbarrier.arrive(q_empty.index((t % 2) * CONSUMERS + ME))  # tile t's last Q·Kᵀ finished a step ago
        p, _, m_next, l_next = _softmax_block(s, no_max, no_sum, qk_scale, 0, n_kv, N_KV, BLOCK_N, s_layout)
        acc, p_op = warpgroup_mma_wait(0, deps=(pv, p_op))
        _slot_release(v_empty, g % V_STAGES, V_FREE_BAR, CONSUMERS)
        _ps_store(acc, m_i, l_i, o_desc, o_smem, LSE, first + t * step, H, N_Q, ME, rows_s, rows_o)
        acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)
        m_i = m_next
        l_i = l_next

    t = mine - 1
    q = q_smem.index((t % 2) * CONSUMERS + ME).reshape([ROWS, HEAD_DIM])
    p_op, acc, m_i, l_i = _ps_blocks(
        q, k_ring, v_ring, k_ready, k_empty, v_ready, v_empty, turn, m_i, l_i, p, acc, t * n_kv, n_kv, N_KV,
        qk_scale, ME,
    )  # fmt: skip
    last = (t + 1) * n_kv - 1
    _wait_loaded(v_ready, last, V_STAGES)
    _pp_take_turn(turn, ME, last + 1)
    acc = warpgroup_mma(p_op, _tile(v_ring, last % V_STAGES, BLOCK_N, HEAD_DIM), acc, is_async=True)
    _pp_pass_turn(turn, other, True)
    acc = warpgroup_mma_wait(0, deps=(acc,))
    _slot_release(v_empty, last % V_STAGES, V_FREE_BAR, CONSUMERS)
    _ps_store(acc, m_i, l_i, o_desc, o_smem, LSE, first + t * step, H, N_Q, ME, rows_s, rows_o)
    tma.store_wait(0)


# gl.warp_specialize's worker partitions cannot take constexpr arguments: each consumer index has a wrapper.
@gluon.jit
def _ps_consumer_0(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale,
):  # fmt: skip
    _ps_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, 0,
    )  # fmt: skip


@gluon.jit
def _ps_consumer_1(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale,
):  # fmt: skip
    _ps_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, 1,
    )  # fmt: skip


@gluon.jit
def _ps_consumer_2(
    o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn, H,
    N_Q, N_KV, n_tiles, n_kv, qk_scale,
):  # fmt: skip
    _ps_consumer(
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale, 2,
    )  # fmt: skip


@gluon.jit
def _attn_fwd_persistent_kernel(
    q_desc, k_desc, v_desc, o_desc, LSE, BH, H, N_Q, N_KV, qk_scale, K_STAGES: gl.constexpr,
    V_STAGES: gl.constexpr, CONSUMER_REGS: gl.constexpr, LOADER_REGS: gl.constexpr, CONSUMERS: gl.constexpr,
):  # fmt: skip
    ROWS: gl.constexpr = q_desc.block_type.shape[2]  # per consumer warpgroup; a tile is CONSUMERS · ROWS
    HEAD_DIM: gl.constexpr = q_desc.block_type.shape[3]
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[2]
    dtype: gl.constexpr = q_desc.dtype
    n_tiles = gl.cdiv(N_Q, CONSUMERS * ROWS) * BH
    n_kv = gl.cdiv(N_KV, BLOCK_N)

    q_smem = gl.allocate_shared_memory(dtype, [2 * CONSUMERS, 1, 1, ROWS, HEAD_DIM], q_desc.layout)
    o_smem = gl.allocate_shared_memory(dtype, [CONSUMERS, 1, 1, ROWS, HEAD_DIM], o_desc.layout)
    k_ring = gl.allocate_shared_memory(dtype, [K_STAGES, 1, 1, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_ring = gl.allocate_shared_memory(dtype, [V_STAGES, 1, 1, BLOCK_N, HEAD_DIM], v_desc.layout)
    q_ready = gl.allocate_shared_memory(gl.int64, [2 * CONSUMERS, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [2 * CONSUMERS, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [CONSUMERS, 1], mbarrier.MBarrierLayout())
    k_ready, k_empty, v_ready, v_empty = _kv_ring_barriers(K_STAGES, V_STAGES, CONSUMERS)
    for i in gl.static_range(2 * CONSUMERS):
        mbarrier.init(q_ready.index(i), count=1)
        mbarrier.init(q_empty.index(i), count=1)
    _init_turns(turn)

    consumer_args = (
        o_desc, LSE, q_smem, o_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
        H, N_Q, N_KV, n_tiles, n_kv, qk_scale,
    )  # fmt: skip
    loader_args = (
        q_desc, k_desc, v_desc, q_smem, k_ring, v_ring, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, H,
        N_Q, n_tiles, n_kv,
    )  # fmt: skip
    if CONSUMERS == 3:
        gl.warp_specialize(
            [
                (_ps_consumer_0, consumer_args),
                (_ps_consumer_1, consumer_args),
                (_ps_consumer_2, consumer_args),
                (_ps_loader, loader_args),
            ],
            [4, 4, 1],
            [CONSUMER_REGS, CONSUMER_REGS, LOADER_REGS],
        )
    else:
        gl.warp_specialize(
            [(_ps_consumer_0, consumer_args), (_ps_consumer_1, consumer_args), (_ps_loader, loader_args)],
            [4, 1],
            [CONSUMER_REGS, LOADER_REGS],
        )
