"""Choosing and calling the fast engine of a built-in cell."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from bptt._torch_compat import functorch_transforms_active
from bptt.cells import (
    DeepLRUCell,
    GRUCell,
    LRUCell,
    LSTMCell,
    MinGRUCell,
    MinLSTMCell,
    OrthogonalRNNCell,
    RNNCell,
    State,
)
from bptt.engine._fast_common import Pass
from bptt.engine._fast_gru import GRUSequence
from bptt.engine._fast_lstm import LSTMSequence
from bptt.engine._fast_rnn import RNNSequence
from bptt.engine._generic import unroll_generic
from bptt.engine._scan import GatedLogScan, LinearScan

FastEngine = Callable[[nn.Module, Tensor, State, Sequence], tuple[Tensor, State]]


def _run_elman(cell: RNNCell | OrthogonalRNNCell, x: Tensor, state: Tensor, taps: Sequence):
    """The Elman engine: RNNCell, and OrthogonalRNNCell in every nonlinearity, its
    W = exp(A - A^T) computed once for the whole sequence (the gradient reaches A
    through autograd of ``matrix_exp``)."""
    run = Pass(tuple(taps), torch.is_grad_enabled())
    modrelu = cell.nonlinearity == "modrelu"
    return RNNSequence.apply(
        x,
        state,
        run,
        cell.nonlinearity,
        cell.weight_ih,
        cell.weight_hh,
        cell.bias_ih,
        cell.bias_hh,
        cell.modrelu_bias if modrelu else None,
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


def _run_lru(
    cell: LRUCell, x: Tensor, state: Tensor, taps: Sequence, last_only: bool = False
) -> tuple[Tensor, Tensor]:
    """The LRU by a parallel scan: the drive of every step in one matmul, the states by
    a log-depth scan, the outputs in one matmul (of the last step alone with
    ``last_only``: the readout Re(C h) is then no longer a (B T, 2N) x (2N, H) product);
    taps in the scan's backward."""
    states = _scan_unit(cell, x, state, tuple(taps))
    return cell.output(states[:, -1:] if last_only else states), states[:, -1]


def _scan_unit(unit: LRUCell, z: Tensor, start: Tensor, taps: tuple = ()) -> Tensor:
    """One LRU's states (B, T, 2N) over the inputs z (B, T, F) by its scan."""
    lam_re, lam_im = unit.eigenvalues()
    return LinearScan.apply(lam_re, lam_im, unit.input_drive(z), start, taps)


def _run_deep_lru(
    cell: DeepLRUCell, x: Tensor, state: Tensor, taps: Sequence, last_only: bool = False
):
    """The stacked LRU layer by layer, each LRU by its scan (the last layer's readout
    and mixing at the last step alone with ``last_only``). Taps see the whole state of
    a step (every layer's) at once, which only a step-by-step run has: with taps it
    runs step by step."""
    if taps:
        outputs, final = unroll_generic(cell, x, state, taps, cell.output, cell)
        return (outputs[:, -1:] if last_only else outputs), final
    return cell.run_layers(x, state, _scan_unit, last_only=last_only)


def _run_min(
    cell: MinGRUCell | MinLSTMCell, x: Tensor, state: Tensor, taps: Sequence
) -> tuple[Tensor, Tensor]:
    """minGRU and minLSTM by the paper's log-space scan: log a_t and log b_t of every
    step in one matmul, the states by a chunked log-space scan, taps in its backward
    (dL/dh_{t-1} = a_t dL/dh_t, a loop; without taps a reverse scan)."""
    log_a, log_b = cell.log_coefficients(x)  # (B, T, H) each
    states = GatedLogScan.apply(log_a, log_b, state, tuple(taps))
    return states, states[:, -1]


def run_fast(
    run: FastEngine, cell: nn.Module, x: Tensor, state: State, taps: Sequence, last_only: bool
) -> tuple[Tensor, State]:
    """Call a fast engine; with ``last_only`` the outputs are the last step's (B, 1, H),
    computed alone where the engine can (the LRUs), else cut from all of them."""
    if last_only and isinstance(state, Tensor):  # the run is the cell's class's own
        if isinstance(cell, LRUCell):
            return _run_lru(cell, x, state, taps, last_only=True)
        if isinstance(cell, DeepLRUCell):
            return _run_deep_lru(cell, x, state, taps, last_only=True)
    outputs, final = run(cell, x, state, taps)
    return (outputs[:, -1:] if last_only else outputs), final


# Each engine takes the cell of its key's class: a FastEngine for the cells found here.
_FAST: dict[type, Callable[..., tuple[Tensor, State]]] = {
    LRUCell: _run_lru,
    DeepLRUCell: _run_deep_lru,
    RNNCell: _run_elman,
    LSTMCell: _run_lstm,
    GRUCell: _run_gru,
    OrthogonalRNNCell: _run_elman,
    MinGRUCell: _run_min,
    MinLSTMCell: _run_min,
}


def has_fast_engine(cell: nn.Module) -> bool:
    """Whether ``engine="fast"`` can run this cell: its exact class is a built-in one
    with a hand-written backward (RNN, LSTM, GRU, orthogonal RNN, LRU, deep LRU,
    minGRU, minLSTM).

    >>> import bptt
    >>> has_fast_engine(bptt.cells.GRUCell(1, 2)), has_fast_engine(bptt.cells.SkipRNNCell(1, 2))
    (True, False)
    """
    return type(cell) in _FAST


def fast_engine_for(cell: nn.Module, x: Tensor) -> FastEngine | None:
    """The fast engine for this cell and input, or None where only the generic one applies.

    It applies to exactly the built-in classes (a subclass may change ``forward``),
    the orthogonal RNN in each of its nonlinearities among them,
    with x in the parameters' dtype and device, outside torch.func transforms (the
    hand-written backward has no forward-mode rule).
    """
    run = _FAST.get(type(cell))
    if run is None or functorch_transforms_active():
        return None
    weight = next(cell.parameters())
    if x.dtype != weight.dtype or x.device != weight.device:
        return None
    return run
