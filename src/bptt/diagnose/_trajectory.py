"""The states a cell passes through, for measurements taken along a real trajectory."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bptt.cells import State, as_tuple, initial_state
from bptt.model import SequenceModel


def cell_of(model: nn.Module) -> nn.Module:
    """The cell of a :class:`bptt.SequenceModel`, or the module itself."""
    return model.cell if isinstance(model, SequenceModel) else model


@torch.no_grad()
def previous_states(cell: nn.Module, x: Tensor, state: State | None) -> list[tuple[Tensor, ...]]:
    """For every step t, the state s_{t-1} the cell starts from (as a tuple of tensors).

    Returns:
        T tuples, each of tensors (B, ...).
    """
    if state is None:
        state = initial_state(cell, x.shape[0], device=x.device, dtype=x.dtype)
    before = []
    for x_t in x.unbind(1):
        before.append(as_tuple(state))
        state = cell(x_t, state)
    return before


def stack_rows(parts: list[tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
    """Per component, the tensors of all entries stacked along the batch: (K*B, ...)."""
    return tuple(torch.cat(component, dim=0) for component in zip(*parts, strict=True))


def as_state(parts: tuple[Tensor, ...], like: State) -> State:
    """A tuple of components back into the structure of ``like``."""
    return parts if isinstance(like, tuple) else parts[0]
