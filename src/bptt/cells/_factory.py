"""Cells by name, for configurations and the command line; users may add their own."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bptt.cells._deep_lru import DeepLRUCell
from bptt.cells._gru import GRUCell
from bptt.cells._irnn import IRNNCell
from bptt.cells._lru import LRUCell
from bptt.cells._lstm import LSTMCell
from bptt.cells._min import MinGRUCell, MinLSTMCell
from bptt.cells._orthogonal import OrthogonalRNNCell
from bptt.cells._rnn import RNNCell
from bptt.cells._skip import SkipRNNCell

CellBuilder = Callable[..., nn.Module]

_BUILDERS: dict[str, CellBuilder] = {
    "rnn": lambda i, h, **kw: RNNCell(i, h, "tanh", **kw),
    "rnn-relu": lambda i, h, **kw: RNNCell(i, h, "relu", **kw),
    "lstm": LSTMCell,
    "gru": GRUCell,
    "irnn": IRNNCell,
    "orthogonal": OrthogonalRNNCell,
    "orthogonal-modrelu": lambda i, h, **kw: OrthogonalRNNCell(i, h, "modrelu", **kw),
    "skip": lambda i, h, **kw: SkipRNNCell(i, h, skips=(1, 10), **kw),
    "lru": LRUCell,
    "deep-lru": DeepLRUCell,  # two LRU layers with position-wise mixing
    "mingru": MinGRUCell,  # Feng et al. 2024: gates of the input alone, a log-space scan
    "minlstm": MinLSTMCell,
}


def cell_names() -> tuple[str, ...]:
    """The names :func:`make_cell` accepts, built-in and registered."""
    return tuple(_BUILDERS)


def register_cell(name: str, builder: CellBuilder) -> None:
    """Make a cell available by name to :func:`make_cell`, configs and ``bptt.train``.

    Args:
        name: the name to use in a config's ``cell`` field.
        builder: called as ``builder(input_size, hidden_size, device=..., dtype=...)``;
            returns a one-step cell.

    Raises:
        ValueError: the name is empty or already taken.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a cell name must be a non-empty string, got {name!r}")
    if name in _BUILDERS:
        raise ValueError(f"a cell called {name!r} already exists")
    if not callable(builder):
        raise TypeError(f"builder must be callable, got {type(builder).__name__}")
    _BUILDERS[name] = builder


def make_cell(
    name: str,
    input_size: int,
    hidden_size: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """A new cell by name: ``rnn`` (tanh), ``rnn-relu``, ``lstm``, ``gru``, ``irnn``,
    ``orthogonal`` (tanh), ``orthogonal-modrelu``, ``skip`` (delays 1 and 10), ``lru``
    (a linear recurrent unit, N = H), ``deep-lru`` (two LRUs with nonlinear mixing),
    ``mingru``, ``minlstm`` (the minimal GRU and LSTM of Feng et al. 2024), or a
    registered one.

    Example:
        >>> make_cell("gru", 2, 8)
        GRUCell(2, 8)
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown cell {name!r}; choose one of {', '.join(_BUILDERS)}")
    return _BUILDERS[name](input_size, hidden_size, device=device, dtype=dtype)
