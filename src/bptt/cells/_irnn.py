"""The IRNN preset: a ReLU RNN started at the identity (Le, Jaitly & Hinton 2015)."""

from __future__ import annotations

import torch
from torch import nn

from bptt.cells._rnn import RNNCell
from bptt.init import identity_

__all__ = ["IRNNCell"]


def IRNNCell(
    input_size: int,
    hidden_size: int,
    *,
    scale: float = 1.0,
    input_std: float = 1e-3,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> RNNCell:
    """A ReLU :class:`RNN` with W_hh = scale * I, W_ih ~ N(0, input_std^2), zero biases.

    At the identity the recurrence copies the state and the ReLU passes positive
    units unchanged, so gradients neither vanish nor explode at the start. It is a
    plain built-in RNN, so the fast engine applies.

    Example:
        >>> cell = IRNNCell(2, 4)
        >>> torch.equal(cell.weight_hh, torch.eye(4)), cell.nonlinearity
        (True, 'relu')
    """
    cell = RNNCell(input_size, hidden_size, "relu", device=device, dtype=dtype)
    with torch.no_grad():
        identity_(cell.weight_hh, scale)
        nn.init.normal_(cell.weight_ih, std=input_std)
        cell.bias_ih.zero_()
        cell.bias_hh.zero_()
    return cell
