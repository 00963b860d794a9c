"""Parameters shared by the built-in cells: names and shapes of torch.nn's cells."""

from __future__ import annotations

import math

import torch
from torch import nn


def check_sizes(input_size: int, hidden_size: int) -> None:
    """Raise ValueError unless both sizes are positive integers."""
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def make_parameters(
    cell: nn.Module,
    gates: int,
    bias: bool,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> None:
    """Create weight_ih (gates*H, F), weight_hh (gates*H, H) and the two biases."""
    kw = {"device": device, "dtype": dtype}
    rows = gates * cell.hidden_size
    cell.weight_ih = nn.Parameter(torch.empty(rows, cell.input_size, **kw))
    cell.weight_hh = nn.Parameter(torch.empty(rows, cell.hidden_size, **kw))
    if bias:
        cell.bias_ih = nn.Parameter(torch.empty(rows, **kw))
        cell.bias_hh = nn.Parameter(torch.empty(rows, **kw))
    else:
        cell.register_parameter("bias_ih", None)
        cell.register_parameter("bias_hh", None)
    uniform_reset(cell)


def uniform_reset(cell: nn.Module) -> None:
    """torch.nn's default: every parameter of the cell from U(-1/sqrt(H), 1/sqrt(H))."""
    bound = 1.0 / math.sqrt(cell.hidden_size)
    for p in cell.parameters(recurse=False):
        nn.init.uniform_(p, -bound, bound)
