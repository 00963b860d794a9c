"""Pieces shared by the fast engines of the built-in cells.

Every fast engine works time-major inside: the input projection of all T steps is
one matmul before the loop; the backward walks back over time in chunks of a few
steps, first computing for the whole chunk at once the local derivative factors
that do not depend on the flowing gradient (few large calls, data still in cache),
then for each step only what the flowing gradient needs; the weight gradients are
one matmul over the stacked per-step pre-activation gradients after the loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from bptt.engine._workspace import WORKSPACE

# Elements of a (chunk, B, G) factor block worked on at once: about 1 MB of float32,
# small enough to stay in cache for the per-step loop that follows.
_CHUNK_ELEMENTS = 1 << 18


def backward_chunks(steps: int, elements_per_step: int) -> list[tuple[int, int]]:
    """(start, end) ranges covering 0..steps-1, last chunk first."""
    size = max(1, min(steps, _CHUNK_ELEMENTS // max(1, elements_per_step)))
    starts = range(((steps - 1) // size) * size, -1, -size)
    return [(start, min(start + size, steps)) for start in starts]


def time_major_rows(x: Tensor) -> Tensor:
    """x (B, T, F) -> (T*B, F), rows ordered by time then sample."""
    batch, steps, features = x.shape
    return x.transpose(0, 1).reshape(steps * batch, features)


def project_inputs(x_rows: Tensor, weight_ih: Tensor, bias: Tensor | None, out: Tensor) -> None:
    """All steps' input projections at once into out (T, B, G): x W_ih^T + bias."""
    out_rows = out.view(x_rows.shape[0], weight_ih.shape[0])
    if bias is None:
        torch.mm(x_rows, weight_ih.t(), out=out_rows)
    else:
        torch.addmm(bias, x_rows, weight_ih.t(), out=out_rows)


def summed_bias(b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor | None:
    """b_ih + b_hh, or None for a cell without bias."""
    if b_ih is None:
        return None
    assert b_hh is not None  # a cell has both biases or neither
    return b_ih + b_hh


def output_grads(grad_out: Tensor, grad_final: Tensor) -> Tensor:
    """The gradients reaching each step's output, time-major: a new (T, B, H) tensor.

    The final state's gradient is added to the last row, which is then delta_{T-1}.
    The backward loop turns row t-1 into delta_{t-1} in place by adding what flows
    back from step t. The buffer is fresh, never pooled: taps may keep the deltas
    they are shown.
    """
    batch, steps, hidden = grad_out.shape
    rows = grad_out.new_empty(steps, batch, hidden)
    rows.copy_(grad_out.transpose(0, 1))
    rows[-1].add_(grad_final)
    return rows


def first_derivative_only(backward: Callable[..., Any]) -> Callable[..., Any]:
    """A hand-written backward that has no derivative of its own: torch's
    ``once_differentiable``, and a clear error for ``create_graph=True``, which
    ``once_differentiable`` lets through when the incoming gradient is a constant (a
    loss linear in the outputs), treating this backward's result as one: a second
    derivative that would be silently wrong."""
    inner = once_differentiable(backward)

    @functools.wraps(backward)
    def wrapper(ctx: Any, *grads: Any) -> Any:
        if torch.is_grad_enabled():  # backward runs in grad mode only under create_graph
            raise RuntimeError(
                "the fast engine's backward has no derivative of its own (create_graph="
                "True): use bptt.unroll(..., engine='generic'), or run inside "
                "bptt.engine.require_generic"
            )
        return inner(ctx, *grads)

    return wrapper


def start_backward(ctx) -> None:
    """Refuse a second backward: the scratch buffers went back to the workspace."""
    if getattr(ctx, "consumed", False):
        raise RuntimeError(
            "the fast engine supports one backward pass per forward pass (retain_graph is "
            "not supported); use bptt.unroll(..., engine='generic') to backward twice"
        )
    ctx.consumed = True


@dataclass(frozen=True)
class Pass:
    """What the caller knows about a forward pass that the autograd Function cannot see.

    Attributes:
        taps: the hidden-gradient taps for the backward pass.
        grad_enabled: whether grad mode was on at the call (inside ``forward`` it is
            always off), so a pass under ``torch.no_grad()`` gives its buffers back.
    """

    taps: tuple
    grad_enabled: bool


def release_if_no_backward(ctx, run: Pass, *buffers: Tensor) -> None:
    """Give the scratch buffers back at once when no backward will need them."""
    if not (run.grad_enabled and any(ctx.needs_input_grad)):
        WORKSPACE.give(*buffers)


def parameter_grads(
    needs: tuple[bool, bool],
    d_pre_rows: Tensor,
    inputs_rows: Tensor,
) -> tuple[Tensor | None, Tensor | None]:
    """Gradient of a weight (G, K) and its bias (G,) from (N, G) pre-activation grads.

    ``needs`` is (weight needed, bias needed); inputs_rows is (N, K).
    """
    grad_w = d_pre_rows.t() @ inputs_rows if needs[0] else None
    grad_b = d_pre_rows.sum(0) if needs[1] else None
    return grad_w, grad_b


def input_grad(
    needed: bool, d_pre_rows: Tensor, weight_ih: Tensor, batch: int, steps: int
) -> Tensor | None:
    """dL/dx (B, T, F) from the (T*B, G) pre-activation gradients."""
    if not needed:
        return None
    return (d_pre_rows @ weight_ih).view(steps, batch, -1).transpose(0, 1)
