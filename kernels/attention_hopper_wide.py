"""Hopper forward in Gluon with wide key blocks: each step takes ``block_n + wide`` keys in two pieces.

The ping-pong kernel (``attention_hopper.py``) takes 128 keys a step at head dim 128. Every step pays the
same fixed cost whatever its width: the ring and turn barrier waits and arrivals, the row max and sum
shuffles, the rescale of the 64 × D output accumulator, the uniform address arithmetic. FlashAttention-3
takes 176 keys a step at head dim 128 for that reason. Gluon tensors must have power-of-two shapes, so a
step here is two pieces: ``a`` of ``block_n`` keys and ``b`` of ``wide`` keys (128 + 64 = 192). Each has its
score accumulator (two async wgmmas for S), both feed one output accumulator (two chained wgmmas for P·V),
and the softmax takes the row max and sum over both.

A sequence length that is not a multiple of the step would waste most of a step at the end (4,096 keys =
21 steps of 192 and 64 keys: 3 % of the work on masked columns). So the last step takes one piece only
where its ``r`` keys fit one: the second if ``r ≤ wide`` (4,096 and 16,384 with 192-key steps), else the
first if ``r ≤ block_n``; the loader fetches only that piece and the consumers issue only its GEMMs. Everything else (the
loader warp, the two consumer warpgroups taking turns, the idle consumer past N, the output through Q's
slot) is the ping-pong kernel's, two consumers of 64 rows, head dims 64 and 128.
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

from .attention_hopper import _kv_ring_barriers, _pp_idle, _pp_take_turn, _tile, _wait_loaded


@gluon.jit
def _tail_mode(n_kv, N_KV, A: gl.constexpr, W: gl.constexpr):
    """How the last step is computed: 0 both pieces, 1 the first alone (its keys fit ``A``), 2 the second
    alone (they fit ``W``). One piece only where a step comes before it."""
    r = N_KV - (n_kv - 1) * (A + W)
    return ((n_kv >= 2) & (r <= A)).to(gl.int32) + ((n_kv >= 2) & (r <= W)).to(gl.int32)


@gluon.jit
def _load_step(desc, wide_desc, coord_n, b, h, bar, dst, wide_dst, mode):
    """One step's K or V box onto ``bar``: both pieces (mode 0), the first (1) or the second (2) alone."""
    A: gl.constexpr = desc.block_type.shape[2]
    if mode == 0:  # one expect-tx per phase: it also arrives
        mbarrier.expect(bar, desc.block_type.nbytes + wide_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(desc, [b, h, coord_n, 0], bar, dst)
        tma.async_copy_global_to_shared(wide_desc, [b, h, coord_n + A, 0], bar, wide_dst)
    elif mode == 1:
        mbarrier.expect(bar, desc.block_type.nbytes)
        tma.async_copy_global_to_shared(desc, [b, h, coord_n, 0], bar, dst)
    else:
        mbarrier.expect(bar, wide_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(wide_desc, [b, h, coord_n, 0], bar, wide_dst)


@gluon.jit
def _wide_loader(
    q_desc, k_desc, kw_desc, v_desc, vw_desc, q_smem, k_ring, kw_ring, v_ring, vw_ring, q_ready, k_ready,
    k_empty, v_ready, v_empty, b, h, start_m, n_kv, tail,
):  # fmt: skip
    STEP: gl.constexpr = k_desc.block_type.shape[2] + kw_desc.block_type.shape[2]
    K_STAGES: gl.constexpr = k_ring.shape[0]
    V_STAGES: gl.constexpr = v_ring.shape[0]
    ROWS: gl.constexpr = q_desc.block_type.shape[2]
    CONSUMERS: gl.constexpr = q_smem.shape[0]
    for i in gl.static_range(CONSUMERS):
        mbarrier.expect(q_ready.index(i), q_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(
            q_desc, [b, h, start_m + ROWS * i, 0], q_ready.index(i), q_smem.index(i)
        )
    for blk in range(n_kv):
        mode = tail * (blk == n_kv - 1).to(gl.int32)
        ks = blk % K_STAGES
        mbarrier.wait(k_empty.index(ks), ((blk // K_STAGES) & 1) ^ 1)  # the first pass finds every slot free
        _load_step(
            k_desc, kw_desc, blk * STEP, b, h, k_ready.index(ks), k_ring.index(ks), kw_ring.index(ks), mode
        )
        vs = blk % V_STAGES
        mbarrier.wait(v_empty.index(vs), ((blk // V_STAGES) & 1) ^ 1)
        _load_step(
            v_desc, vw_desc, blk * STEP, b, h, v_ready.index(vs), v_ring.index(vs), vw_ring.index(vs), mode
        )


@gluon.jit
def _scores2(q, k_ring, kw_ring, slot, zero_a, zero_b):
    """Issue both pieces of S = Q·Kᵀ for ring slot ``slot`` (two async wgmma groups)."""
    D: gl.constexpr = q.shape[1]
    k_a = _tile(k_ring, slot, k_ring.shape[3], D).permute((1, 0))
    k_b = _tile(kw_ring, slot, kw_ring.shape[3], D).permute((1, 0))
    s_a = warpgroup_mma(q, k_a, zero_a, use_acc=False, is_async=True)
    s_b = warpgroup_mma(q, k_b, zero_b, use_acc=False, is_async=True)
    return s_a, s_b


@gluon.jit
def _pv2(p_a, p_b, v_ring, vw_ring, slot, acc):
    """Issue O += P_a·V_a + P_b·V_b for ring slot ``slot`` (two chained async wgmmas)."""
    D: gl.constexpr = acc.shape[1]
    acc = warpgroup_mma(p_a, _tile(v_ring, slot, v_ring.shape[3], D), acc, is_async=True)
    return warpgroup_mma(p_b, _tile(vw_ring, slot, vw_ring.shape[3], D), acc, is_async=True)


@gluon.jit
def _softmax2(s_a, s_b, m_i, l_i, qk_scale, start, masked, N_KV):
    """Online-softmax update over both pieces of a step whose first key is ``start``; ``masked`` (the last
    step) drops columns at or past N_KV. Returns P of both pieces, the rescale factor, the new max and sum."""
    A: gl.constexpr = s_a.shape[1]
    W: gl.constexpr = s_b.shape[1]
    rows_a: gl.constexpr = m_i.type.layout
    rows_b: gl.constexpr = gl.SliceLayout(1, s_b.type.layout)
    if masked:
        cols_a = start + gl.arange(0, A, gl.SliceLayout(0, s_a.type.layout))
        cols_b = start + A + gl.arange(0, W, gl.SliceLayout(0, s_b.type.layout))
        x_a = gl.where((cols_a < N_KV)[None, :], s_a * qk_scale, float("-inf"))
        x_b = gl.where((cols_b < N_KV)[None, :], s_b * qk_scale, float("-inf"))
        m_new = gl.maximum(m_i, gl.maximum(gl.max(x_a, 1), gl.convert_layout(gl.max(x_b, 1), rows_a)))
        p_a = gl.exp2(x_a - m_new[:, None])
        p_b = gl.exp2(x_b - gl.convert_layout(m_new, rows_b)[:, None])
    else:
        # scale ≥ 0, so max(s) · scale is the max of the scaled scores; one FMA per score below.
        m_b = gl.convert_layout(gl.max(s_b, 1), rows_a)
        m_new = gl.maximum(m_i, gl.maximum(gl.max(s_a, 1), m_b) * qk_scale)
        p_a = gl.exp2(s_a * qk_scale - m_new[:, None])
        p_b = gl.exp2(s_b * qk_scale - gl.convert_layout(m_new, rows_b)[:, None])
    alpha = gl.exp2(m_i - m_new)
    l_new = l_i * alpha + gl.sum(p_a, 1) + gl.convert_layout(gl.sum(p_b, 1), rows_a)
    return p_a, p_b, alpha, m_new, l_new


@gluon.jit
def _softmax_piece(s, m_i, l_i, qk_scale, start, N_KV):
    """Online-softmax update of a last step of one piece whose first key is ``start`` (masked)."""
    X: gl.constexpr = s.shape[1]
    rows_a: gl.constexpr = m_i.type.layout
    rows_b: gl.constexpr = gl.SliceLayout(1, s.type.layout)
    cols = start + gl.arange(0, X, gl.SliceLayout(0, s.type.layout))
    x = gl.where((cols < N_KV)[None, :], s * qk_scale, float("-inf"))
    m_new = gl.maximum(m_i, gl.convert_layout(gl.max(x, 1), rows_a))
    p = gl.exp2(x - gl.convert_layout(m_new, rows_b)[:, None])
    alpha = gl.exp2(m_i - m_new)
    return p, alpha, m_new, l_i * alpha + gl.convert_layout(gl.sum(p, 1), rows_a)


@gluon.jit
def _last_step_piece(
    q, kx_ring, vx_ring, v_ring, vw_ring, p_a, p_b, acc, m_i, l_i, k_ready, k_empty, v_ready, v_empty, turn,
    n_kv, N_KV, qk_scale, ME: gl.constexpr,
):  # fmt: skip
    """The last step with one piece (``kx_ring``/``vx_ring``: either): its S beside O += P·V of the step
    before, then its own P·V. Waits for every wgmma it issues."""
    dtype: gl.constexpr = q.dtype
    ROWS: gl.constexpr = q.shape[0]
    D: gl.constexpr = q.shape[1]
    X: gl.constexpr = kx_ring.shape[3]
    STEP: gl.constexpr = v_ring.shape[3] + vw_ring.shape[3]
    K_STAGES: gl.constexpr = kx_ring.shape[0]
    V_STAGES: gl.constexpr = vx_ring.shape[0]
    layout_x: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, X, 16]
    )
    rows_o: gl.constexpr = gl.SliceLayout(1, acc.type.layout)
    other: gl.constexpr = (ME + 1) % turn.shape[0]
    last = n_kv - 1
    _wait_loaded(k_ready, last, K_STAGES)
    _wait_loaded(v_ready, last - 1, V_STAGES)
    _pp_take_turn(turn, ME, last)
    k_x = _tile(kx_ring, last % K_STAGES, X, D).permute((1, 0))
    s = warpgroup_mma(q, k_x, gl.zeros([ROWS, X], gl.float32, layout_x), use_acc=False, is_async=True)
    pv = _pv2(p_a, p_b, v_ring, vw_ring, (last - 1) % V_STAGES, acc)
    mbarrier.arrive(turn.index(other))
    s = warpgroup_mma_wait(2, deps=(s,))
    mbarrier.arrive(k_empty.index(last % K_STAGES))
    x, alpha, m_i, l_i = _softmax_piece(s, m_i, l_i, qk_scale, last * STEP, N_KV)
    acc, p_a, p_b = warpgroup_mma_wait(0, deps=(pv, p_a, p_b))
    mbarrier.arrive(v_empty.index((last - 1) % V_STAGES))
    acc = acc * gl.convert_layout(alpha, rows_o)[:, None]
    p_x = gl.convert_layout(x.to(dtype), p_a.type.layout)
    _wait_loaded(v_ready, last, V_STAGES)
    _pp_take_turn(turn, ME, n_kv)
    acc = warpgroup_mma(p_x, _tile(vx_ring, last % V_STAGES, X, D), acc, is_async=True)
    mbarrier.arrive(turn.index(other))
    acc = warpgroup_mma_wait(0, deps=(acc,))
    return acc, m_i, l_i


@gluon.jit
def _wide_work(
    o_desc, LSE, q_smem, k_ring, kw_ring, v_ring, vw_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn,
    pid_bh, b, h, start_m, n_kv, tail, N_Q, N_KV, qk_scale, ME: gl.constexpr,
):  # fmt: skip
    dtype: gl.constexpr = o_desc.dtype
    D: gl.constexpr = o_desc.block_type.shape[3]
    A: gl.constexpr = k_ring.shape[3]
    W: gl.constexpr = kw_ring.shape[3]
    STEP: gl.constexpr = A + W
    K_STAGES: gl.constexpr = k_ring.shape[0]
    V_STAGES: gl.constexpr = v_ring.shape[0]
    ROWS: gl.constexpr = q_smem.shape[3]
    layout_a: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, A, 16]
    )
    layout_b: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, W, 16]
    )
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, D, 16]
    )
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    rows_a: gl.constexpr = gl.SliceLayout(1, layout_a)
    rows_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    other: gl.constexpr = (ME + 1) % q_smem.shape[0]

    q = q_smem.index(ME).reshape([ROWS, D])
    zero_a = gl.zeros([ROWS, A], gl.float32, layout_a)
    zero_b = gl.zeros([ROWS, W], gl.float32, layout_b)
    mbarrier.wait(q_ready.index(ME), 0)
    _wait_loaded(k_ready, 0, K_STAGES)
    _pp_take_turn(turn, ME, 0)
    s_a, s_b = _scores2(q, k_ring, kw_ring, 0, zero_a, zero_b)
    mbarrier.arrive(turn.index(other))
    s_a, s_b = warpgroup_mma_wait(0, deps=(s_a, s_b))
    mbarrier.arrive(k_empty.index(0))
    m_i = gl.full([ROWS], float("-inf"), gl.float32, rows_a)
    l_i = gl.zeros([ROWS], gl.float32, rows_a)
    p_a, p_b, _, m_i, l_i = _softmax2(s_a, s_b, m_i, l_i, qk_scale, 0, n_kv == 1, N_KV)
    p_a = gl.convert_layout(p_a.to(dtype), p_layout)
    p_b = gl.convert_layout(p_b.to(dtype), p_layout)
    acc = gl.zeros([ROWS, D], gl.float32, o_layout)

    for j in range(0, n_kv - 2):  # S(j + 1) of both pieces and O += P(j)·V(j); the last step is peeled
        _wait_loaded(k_ready, j + 1, K_STAGES)
        _wait_loaded(v_ready, j, V_STAGES)
        _pp_take_turn(turn, ME, j + 1)
        s_a, s_b = _scores2(q, k_ring, kw_ring, (j + 1) % K_STAGES, zero_a, zero_b)
        pv = _pv2(p_a, p_b, v_ring, vw_ring, j % V_STAGES, acc)
        mbarrier.arrive(turn.index(other))
        s_a, s_b = warpgroup_mma_wait(2, deps=(s_a, s_b))
        mbarrier.arrive(k_empty.index((j + 1) % K_STAGES))
        # The masked path never runs inside this loop, but it must be there: with the condition a constant
        # False, ptxas waited for the previous P·V before the exponentials (sm_90 SASS, Triton 3.6).
        masked = (j + 2) * STEP > N_KV
        x_a, x_b, alpha, m_i, l_i = _softmax2(s_a, s_b, m_i, l_i, qk_scale, (j + 1) * STEP, masked, N_KV)
        acc, p_a, p_b = warpgroup_mma_wait(0, deps=(pv, p_a, p_b))
        mbarrier.arrive(v_empty.index(j % V_STAGES))
        acc = acc * gl.convert_layout(alpha, rows_o)[:, None]
        p_a = gl.convert_layout(x_a.to(dtype), p_layout)
        p_b = gl.convert_layout(x_b.to(dtype), p_layout)

    # The last step (masked), beside O += P(last − 1)·V(last − 1); then its own P·V. Each branch waits for
    # all its wgmmas: an async accumulator cannot cross a runtime branch.
    last = n_kv - 1
    if last == 0:
        _wait_loaded(v_ready, 0, V_STAGES)
        _pp_take_turn(turn, ME, 1)
        acc = _pv2(p_a, p_b, v_ring, vw_ring, 0, acc)
        mbarrier.arrive(turn.index(other))
        acc = warpgroup_mma_wait(0, deps=(acc,))
    elif tail == 2:  # the second piece alone
        acc, m_i, l_i = _last_step_piece(
            q, kw_ring, vw_ring, v_ring, vw_ring, p_a, p_b, acc, m_i, l_i, k_ready, k_empty, v_ready, v_empty,
            turn, n_kv, N_KV, qk_scale, ME,
        )  # fmt: skip
    elif tail == 1:  # the first piece alone
        acc, m_i, l_i = _last_step_piece(
            q, k_ring, v_ring, v_ring, vw_ring, p_a, p_b, acc, m_i, l_i, k_ready, k_empty, v_ready, v_empty,
            turn, n_kv, N_KV, qk_scale, ME,
        )  # fmt: skip
    else:  # both pieces, columns past N masked
        _wait_loaded(k_ready, last, K_STAGES)
        _wait_loaded(v_ready, last - 1, V_STAGES)
        _pp_take_turn(turn, ME, last)
        s_a, s_b = _scores2(q, k_ring, kw_ring, last % K_STAGES, zero_a, zero_b)
        pv = _pv2(p_a, p_b, v_ring, vw_ring, (last - 1) % V_STAGES, acc)
        mbarrier.arrive(turn.index(other))
        s_a, s_b = warpgroup_mma_wait(2, deps=(s_a, s_b))
        mbarrier.arrive(k_empty.index(last % K_STAGES))
        x_a, x_b, alpha, m_i, l_i = _softmax2(s_a, s_b, m_i, l_i, qk_scale, last * STEP, True, N_KV)
        acc, p_a, p_b = warpgroup_mma_wait(0, deps=(pv, p_a, p_b))
        mbarrier.arrive(v_empty.index((last - 1) % V_STAGES))
        acc = acc * gl.convert_layout(alpha, rows_o)[:, None]
        p_a = gl.convert_layout(x_a.to(dtype), p_layout)
        p_b = gl.convert_layout(x_b.to(dtype), p_layout)
        _wait_loaded(v_ready, last, V_STAGES)
        _pp_take_turn(turn, ME, n_kv)
        acc = _pv2(p_a, p_b, v_ring, vw_ring, last % V_STAGES, acc)
        mbarrier.arrive(turn.index(other))
        acc = warpgroup_mma_wait(0, deps=(acc,))

    o = acc / gl.convert_layout(l_i, rows_o)[:, None]
    q.store(o.to(dtype))  # this warpgroup's Q slot is free: it holds the output on its way out
    fence_async_shared()
    tma.async_copy_shared_to_global(o_desc, [b, h, start_m + ROWS * ME, 0], q_smem.index(ME))
    rows = start_m + ROWS * ME + gl.arange(0, ROWS, rows_a)
    lse = (m_i + gl.log2(l_i)) * 0.6931471805599453  # natural log
    gl.store(LSE + pid_bh.to(gl.int64) * N_Q + rows, lse, mask=rows < N_Q)
    tma.store_wait(0)


@gluon.jit
def _wide_consumer(
    o_desc, LSE, q_smem, k_ring, kw_ring, v_ring, vw_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn,
    pid_bh, b, h, start_m, n_kv, tail, N_Q, N_KV, qk_scale, ME: gl.constexpr,
):  # fmt: skip
    ROWS: gl.constexpr = q_smem.shape[3]
    if start_m + ROWS * ME >= N_Q:
        _pp_idle(k_ring, v_ring, k_ready, k_empty, v_ready, v_empty, turn, n_kv, ME)
    else:
        _wide_work(
            o_desc, LSE, q_smem, k_ring, kw_ring, v_ring, vw_ring, q_ready, k_ready, k_empty, v_ready, v_empty,
            turn, pid_bh, b, h, start_m, n_kv, tail, N_Q, N_KV, qk_scale, ME,
        )  # fmt: skip


# gl.warp_specialize's worker partitions cannot take constexpr arguments: each consumer index has a wrapper.
@gluon.jit
def _wide_consumer_0(
    o_desc, LSE, q_smem, k_ring, kw_ring, v_ring, vw_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn,
    pid_bh, b, h, start_m, n_kv, tail, N_Q, N_KV, qk_scale,
):  # fmt: skip
    _wide_consumer(
        o_desc, LSE, q_smem, k_ring, kw_ring, v_ring, vw_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn,
        pid_bh, b, h, start_m, n_kv, tail, N_Q, N_KV, qk_scale, 0,
    )  # fmt: skip


@gluon.jit
def _wide_consumer_1(
    o_desc, LSE, q_smem, k_ring, kw_ring, v_ring, vw_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn,
    pid_bh, b, h, start_m, n_kv, tail, N_Q, N_KV, qk_scale,
):  # fmt: skip
    _wide_consumer(
        o_desc, LSE, q_smem, k_ring, kw_ring, v_ring, vw_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn,
        pid_bh, b, h, start_m, n_kv, tail, N_Q, N_KV, qk_scale, 1,
    )  # fmt: skip


@gluon.jit
def _attn_fwd_wide_kernel(
    q_desc, k_desc, kw_desc, v_desc, vw_desc, o_desc, LSE, H, N_Q, N_KV, qk_scale, K_STAGES: gl.constexpr,
    V_STAGES: gl.constexpr, CONSUMER_REGS: gl.constexpr, LOADER_REGS: gl.constexpr,
):  # fmt: skip
    CONSUMERS: gl.constexpr = 2
    ROWS: gl.constexpr = q_desc.block_type.shape[2]
    D: gl.constexpr = q_desc.block_type.shape[3]
    A: gl.constexpr = k_desc.block_type.shape[2]
    W: gl.constexpr = kw_desc.block_type.shape[2]
    dtype: gl.constexpr = q_desc.dtype
    n_m = gl.cdiv(N_Q, CONSUMERS * ROWS)
    pid_m = gl.program_id(0) % n_m
    pid_bh = gl.program_id(0) // n_m
    b = pid_bh // H
    h = pid_bh % H
    start_m = pid_m * CONSUMERS * ROWS
    n_kv = gl.cdiv(N_KV, A + W)
    tail = _tail_mode(n_kv, N_KV, A, W)

    q_smem = gl.allocate_shared_memory(dtype, [CONSUMERS, 1, 1, ROWS, D], q_desc.layout)
    k_ring = gl.allocate_shared_memory(dtype, [K_STAGES, 1, 1, A, D], k_desc.layout)
    kw_ring = gl.allocate_shared_memory(dtype, [K_STAGES, 1, 1, W, D], kw_desc.layout)
    v_ring = gl.allocate_shared_memory(dtype, [V_STAGES, 1, 1, A, D], v_desc.layout)
    vw_ring = gl.allocate_shared_memory(dtype, [V_STAGES, 1, 1, W, D], vw_desc.layout)
    q_ready = gl.allocate_shared_memory(gl.int64, [CONSUMERS, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [CONSUMERS, 1], mbarrier.MBarrierLayout())
    k_ready, k_empty, v_ready, v_empty = _kv_ring_barriers(K_STAGES, V_STAGES, CONSUMERS)
    for i in gl.static_range(CONSUMERS):
        mbarrier.init(q_ready.index(i), count=1)
        mbarrier.init(turn.index(i), count=1)

    consumer_args = (
        o_desc, LSE, q_smem, k_ring, kw_ring, v_ring, vw_ring, q_ready, k_ready, k_empty, v_ready, v_empty, turn,
        pid_bh, b, h, start_m, n_kv, tail, N_Q, N_KV, qk_scale,
    )  # fmt: skip
    loader_args = (
        q_desc, k_desc, kw_desc, v_desc, vw_desc, q_smem, k_ring, kw_ring, v_ring, vw_ring, q_ready, k_ready,
        k_empty, v_ready, v_empty, b, h, start_m, n_kv, tail,
    )  # fmt: skip
    gl.warp_specialize(
        [(_wide_consumer_0, consumer_args), (_wide_consumer_1, consumer_args), (_wide_loader, loader_args)],
        [4, 1],
        [CONSUMER_REGS, LOADER_REGS],
    )
