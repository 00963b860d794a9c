"""Recurrent cells: each an ``nn.Module`` computing one step, ``forward(x_t, state) -> state``.

The loop over time lives in :func:`bptt.unroll`. Every built-in cell subclasses
:class:`RecurrentCell`, the contract the engines rely on (``input_size``,
``hidden_size``, ``initial_state``, ``output``); :func:`contract` gives any other
one-step module (``torch.nn.RNNCell``/``GRUCell``/``LSTMCell``, or the user's own with a
``hidden_size``) the same. Register a cell with :func:`register_cell` to use it by
name in a training config. The names follow ``torch.nn``: a one-step module is a
``...Cell``; the names before 0.2 (``RNN``, ``LSTM``, ``GRU``, ``IRNN``,
``OrthogonalRNN``, ``SkipRNN``) still work for one release, with a DeprecationWarning.
"""

import warnings

from bptt.cells._contract import (
    CellContract,
    RecurrentCell,
    State,
    as_tuple,
    check_input,
    check_state,
    contract,
    has_initial_state,
    initial_state,
    state_output,
)
from bptt.cells._deep_lru import DeepLRUCell
from bptt.cells._factory import cell_names, make_cell, register_cell
from bptt.cells._gru import GRUCell
from bptt.cells._irnn import IRNNCell
from bptt.cells._lru import LRUCell
from bptt.cells._lstm import LSTMCell, lstm_update
from bptt.cells._min import MinGRUCell, MinLSTMCell
from bptt.cells._orthogonal import OrthogonalRNNCell
from bptt.cells._rnn import RNNCell
from bptt.cells._skip import SkipRNNCell

__all__ = [
    "CellContract",
    "DeepLRUCell",
    "GRUCell",
    "IRNNCell",
    "LRUCell",
    "LSTMCell",
    "MinGRUCell",
    "MinLSTMCell",
    "OrthogonalRNNCell",
    "RNNCell",
    "RecurrentCell",
    "SkipRNNCell",
    "State",
    "as_tuple",
    "cell_names",
    "check_input",
    "check_state",
    "contract",
    "has_initial_state",
    "initial_state",
    "lstm_update",
    "make_cell",
    "register_cell",
    "state_output",
]

_RENAMED = {
    "RNN": "RNNCell",
    "LSTM": "LSTMCell",
    "GRU": "GRUCell",
    "IRNN": "IRNNCell",
    "OrthogonalRNN": "OrthogonalRNNCell",
    "SkipRNN": "SkipRNNCell",
}


def __getattr__(name: str):
    """The names before 0.2, kept for one release."""
    if name in _RENAMED:
        new = _RENAMED[name]
        warnings.warn(
            f"bptt.cells.{name} is now bptt.cells.{new} (a one-step module is a ...Cell, "
            "as in torch.nn); the old name goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return globals()[new]
    raise AttributeError(f"module 'bptt.cells' has no attribute {name!r}")
