"""Recurrent cells: each an ``nn.Module`` computing one step, ``forward(x_t, state) -> state``.

The loop over time lives in :func:`bptt.unroll`. Any module with this one-step
signature and either a ``hidden_size`` attribute or an
``initial_state(batch_size, *, device, dtype)`` method works wherever a built-in
cell does (register it with :func:`register_cell` to use it by name in a training
config); the built-in ones also have a fast engine.
"""

from bptt.cells._factory import cell_names, make_cell, register_cell
from bptt.cells._gru import GRU
from bptt.cells._irnn import IRNN
from bptt.cells._lstm import LSTM
from bptt.cells._orthogonal import OrthogonalRNN
from bptt.cells._rnn import RNN
from bptt.cells._skip import SkipRNN
from bptt.cells._state import State, initial_state, state_output

__all__ = [
    "GRU",
    "IRNN",
    "LSTM",
    "RNN",
    "OrthogonalRNN",
    "SkipRNN",
    "State",
    "cell_names",
    "initial_state",
    "make_cell",
    "register_cell",
    "state_output",
]
