"""The generic engine: any cell, unrolled with autograd, taps at every step."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from bptt.cells import State, as_tuple, state_output
from bptt.taps import Delta, apply_taps

__all__ = ["unroll_generic"]


class _TapPoint(torch.autograd.Function):
    """Identity on a state in forward; in backward, delta_t goes through the taps.

    Autograd sums every gradient sent to the state's tensors before calling this
    node's backward, so the taps see the total dL/ds_t.
    """

    @staticmethod
    def forward(ctx, t: int, taps: Sequence, *parts: Tensor) -> tuple[Tensor, ...]:
        ctx.t = t
        ctx.taps = taps
        return tuple(p.view_as(p) for p in parts)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        delta: Delta = grads if len(grads) > 1 else grads[0]
        delta = apply_taps(ctx.taps, ctx.t, delta)
        return (None, None, *as_tuple(delta))


def _tap_point(t: int, taps: Sequence, state: State) -> State:
    parts = _TapPoint.apply(t, taps, *as_tuple(state))
    return parts if isinstance(state, tuple) else parts[0]


def unroll_generic(
    cell: nn.Module,
    x: Tensor,
    state: State,
    taps: Sequence,
    output: Callable[[State], Tensor] = state_output,
    step: Callable[[Tensor, State], State] | None = None,
) -> tuple[Tensor, State]:
    """Run ``cell`` over x (B, T, F) from ``state``; outputs (B, T, H), each step's
    ``output(state)`` (the cell contract's), and the final state. ``step`` is what
    is called at each time step (the contract's ``sequence_step()``; default the cell).

    Taps are placed only where autograd will reach them (grad mode on and the state
    requiring grad).
    """
    outputs = []
    step = cell if step is None else step
    for t, x_t in enumerate(x.unbind(1)):  # unbind, not x[:, t]: indexing makes backward O(T^2)
        state = step(x_t, state)
        if taps and torch.is_grad_enabled() and output(state).requires_grad:
            state = _tap_point(t, taps, state)
        outputs.append(output(state))
    return torch.stack(outputs, dim=1), state
