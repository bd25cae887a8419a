"""``flash_attention`` as two PyTorch custom operators, for ``torch.compile``.

Dynamo cannot trace the launchers (Triton's autotuner, the Gluon kernels, the interpreter): tracing into them
stopped with an internal error, not a graph break. Under ``torch.compile`` :func:`flash_attention` therefore
calls ``torch.ops.pathoflash.flash_attention`` instead: opaque to the compiler, with shape functions
(``register_fake``) so that a compiled graph holds it whole (``fullgraph=True`` works), and its backward,
``torch.ops.pathoflash.flash_attention_backward``, registered through ``register_autograd``. Outside
``torch.compile`` :func:`flash_attention` keeps calling the ``autograd.Function`` directly, so eager calls pay
no dispatcher time for this.

The outputs' shapes and strides are those of the eager path, which the shape functions reproduce by running
the same preparation (:func:`~.attention.exact_head_dim`, :func:`~.attention._prepared`) on fake tensors.
"""

from __future__ import annotations

from typing import Any

import torch

from .attention import _backward, _forward, _prepared, default_scale, exact_head_dim


def _output_like(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Uninitialised ``o`` and ``lse`` laid out as :func:`~.attention._forward` makes them."""
    batch, heads, n_q, head_dim = q.shape
    width = exact_head_dim(head_dim)
    o = q.new_empty((batch, n_q, heads, width)).permute(0, 2, 1, 3)[..., :head_dim]
    return o, q.new_empty((batch, heads, n_q), dtype=torch.float32)


@torch.library.custom_op("pathoflash::flash_attention", mutates_args=())
def flash_attention_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(o, lse)`` of ``softmax(q kᵀ · scale) v`` (None: the default scale); inputs already checked by
    ``flash_attention``."""
    head_dim = q.shape[3]
    width = exact_head_dim(head_dim)
    scale = default_scale(head_dim) if scale is None else scale
    o, lse = _forward(_prepared(q, width), _prepared(k, width), _prepared(v, width), scale)
    return o[..., :head_dim], lse


@flash_attention_op.register_fake
def _(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    return _output_like(q)


def _prepared_for_backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, do: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    # o's padded columns (where the head dim is padded) are P·0 = 0, so padding o again restores it exactly.
    width = exact_head_dim(q.shape[3])
    return tuple(_prepared(t, width) for t in (q, k, v, o, do))


def _gradients_like(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, do: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    head_dim = q.shape[3]
    qp, kp, vp, _, _ = _prepared_for_backward(q, k, v, o, do)
    return tuple(torch.empty_like(t)[..., :head_dim] for t in (qp, kp, vp))  # type: ignore[return-value]


@torch.library.custom_op("pathoflash::flash_attention_backward", mutates_args=())
def flash_attention_backward_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    do: torch.Tensor,
    dlse: torch.Tensor | None,
    scale: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv)`` for the gradients ``do`` of ``o`` and ``dlse`` of ``lse`` (None: not used)."""
    head_dim = q.shape[3]
    scale = default_scale(head_dim) if scale is None else scale
    q, k, v, o, do = _prepared_for_backward(q, k, v, o, do)
    dq, dk, dv = _backward(q, k, v, o, lse, do, dlse, scale)
    return dq[..., :head_dim], dk[..., :head_dim], dv[..., :head_dim]


@flash_attention_backward_op.register_fake
def _(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    do: torch.Tensor,
    dlse: torch.Tensor | None,
    scale: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _gradients_like(q, k, v, o, do)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
    q, k, v, scale = inputs
    ctx.save_for_backward(q, k, v, *output)
    ctx.scale = scale  # None stays None: the backward operator resolves it as the forward did


def _backward_rule(
    ctx: Any, do: torch.Tensor | None, dlse: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
    q, k, v, o, lse = ctx.saved_tensors
    do = torch.zeros_like(o) if do is None else do
    dq, dk, dv = flash_attention_backward_op(q, k, v, o, lse, do, dlse, ctx.scale)
    return dq, dk, dv, None


flash_attention_op.register_autograd(_backward_rule, setup_context=_setup_context)
