"""Choosing and calling the fast engine of a built-in cell."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from bptt.cells import GRUCell, LSTMCell, OrthogonalRNNCell, RNNCell, State
from bptt.engine._fast_common import Pass
from bptt.engine._fast_gru import GRUSequence
from bptt.engine._fast_lstm import LSTMSequence
from bptt.engine._fast_rnn import RNNSequence

FastEngine = Callable[[nn.Module, Tensor, State, Sequence], tuple[Tensor, State]]


def _run_rnn(cell: RNNCell, x: Tensor, state: Tensor, taps: Sequence) -> tuple[Tensor, Tensor]:
    relu = cell.nonlinearity == "relu"
    run = Pass(tuple(taps), torch.is_grad_enabled())
    return RNNSequence.apply(
        x, state, run, relu, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh
    )


def _run_lstm(cell: LSTMCell, x: Tensor, state: tuple, taps: Sequence) -> tuple[Tensor, tuple]:
    h0, c0 = state
    run = Pass(tuple(taps), torch.is_grad_enabled())
    out, h, c = LSTMSequence.apply(
        x, h0, c0, run, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh
    )
    return out, (h, c)


def _run_gru(cell: GRUCell, x: Tensor, state: Tensor, taps: Sequence) -> tuple[Tensor, Tensor]:
    run = Pass(tuple(taps), torch.is_grad_enabled())
    return GRUSequence.apply(
        x, state, run, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh
    )


def _run_orthogonal(
    cell: OrthogonalRNNCell, x: Tensor, state: Tensor, taps: Sequence
) -> tuple[Tensor, Tensor]:
    """The Elman engine with W = exp(A - A^T) computed once for the whole sequence."""
    run = Pass(tuple(taps), torch.is_grad_enabled())
    relu = cell.nonlinearity == "relu"
    return RNNSequence.apply(
        x, state, run, relu, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh
    )


_FAST: dict[type, FastEngine] = {
    RNNCell: _run_rnn,
    LSTMCell: _run_lstm,
    GRUCell: _run_gru,
    OrthogonalRNNCell: _run_orthogonal,
}


def fast_engine_for(cell: nn.Module, x: Tensor) -> FastEngine | None:
    """The fast engine for this cell and input, or None where only the generic one applies.

    It applies to exactly the built-in classes (a subclass may change ``forward``) and
    the orthogonal RNN with tanh or ReLU,
    with x in the parameters' dtype and device, outside torch.func transforms (the
    hand-written backward has no forward-mode rule).
    """
    run = _FAST.get(type(cell))
    if run is None or torch._C._are_functorch_transforms_active():
        return None
    if getattr(cell, "nonlinearity", None) == "modrelu":  # no hand-written backward for it
        return None
    weight = cell.weight_ih
    if x.dtype != weight.dtype or x.device != weight.device:
        return None
    return run
