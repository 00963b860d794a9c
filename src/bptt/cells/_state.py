"""What the engine needs to know about a cell's state: its zero value and its output.

A cell's state is either one tensor of shape (B, H) or a tuple of such tensors
(LSTM: ``(h, c)``). The *output* of a step, the tensor a readout sees, is the state
itself or, for a tuple, its first element.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

State = Tensor | tuple[Tensor, ...]

__all__ = ["State", "as_tuple", "initial_state", "state_output"]


def initial_state(
    cell: nn.Module,
    batch_size: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> State:
    """The zero state a cell starts from.

    A cell that defines ``initial_state(batch_size, *, device, dtype)`` is asked for
    it; ``torch.nn.LSTMCell`` starts from a pair of zero tensors ``(h, c)``; any other
    cell must have an integer ``hidden_size`` and starts from zeros of shape
    (batch_size, hidden_size).

    Raises:
        TypeError: the cell has neither ``initial_state`` nor ``hidden_size``.
    """
    own = getattr(cell, "initial_state", None)
    if callable(own):
        return own(batch_size, device=device, dtype=dtype)
    hidden_size = getattr(cell, "hidden_size", None)
    if not isinstance(hidden_size, int):
        raise TypeError(
            f"{type(cell).__name__} has no initial_state(batch_size, *, device, dtype) "
            "method and no integer hidden_size attribute; give one of them or pass state="
        )
    zeros = torch.zeros(batch_size, hidden_size, device=device, dtype=dtype)
    if isinstance(cell, nn.LSTMCell):  # torch's LSTM cell takes and returns (h, c)
        return zeros, zeros.clone()
    return zeros


def state_output(state: State) -> Tensor:
    """The tensor of a state that a readout sees: the state, or its first element."""
    return state[0] if isinstance(state, tuple) else state


def as_tuple(state: State) -> tuple[Tensor, ...]:
    """A state as a tuple of tensors (a lone tensor becomes a 1-tuple)."""
    return state if isinstance(state, tuple) else (state,)
