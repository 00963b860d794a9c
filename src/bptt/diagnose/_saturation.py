"""Saturated and dead units along a trajectory: where the local derivative is ~0."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor, nn

from bptt.cells import State
from bptt.diagnose._trajectory import cell_of, previous_states, probe

__all__ = ["SATURATION", "saturation"]

# A sigmoid is saturated below 0.01 or above 0.99 (derivative < 0.0099), a tanh
# beyond |0.99| (derivative < 0.0199): the gradient through such a unit nearly stops.
SATURATION = 0.99


_SATURATED = {
    "sigmoid": lambda v: (v < 1 - SATURATION) | (v > SATURATION),
    "tanh": lambda v: v.abs() > SATURATION,
    "relu": lambda v: v == 0,  # a dead unit: no gradient passes
}


@torch.no_grad()
def saturation(cell: nn.Module, x: Tensor, state: State | None = None) -> dict[str, Tensor]:
    """Per step, the fraction of units whose nonlinearity is saturated or dead.

    Read from the cell's own arithmetic (its ``activations(x_t, state)``), so a change
    of gate order in a cell cannot mislead it. Keys (each a float64 tensor (T,),
    averaged over the batch and the units):

    * tanh RNN: ``tanh`` (|h| > 0.99);
    * ReLU RNN: ``dead`` (units at exactly 0: no gradient passes);
    * LSTM: ``i``, ``f``, ``o`` (sigmoid gates below 0.01 or above 0.99), ``g`` and
      ``tanh_c`` (tanh beyond |0.99|);
    * GRU: ``r``, ``z`` (sigmoid) and ``n`` (tanh).

    Raises:
        TypeError: a cell without ``activations`` and ``activation_kinds`` (the
            built-in RNN, LSTM and GRU cells have them; a user cell's gates are unknown).
    """
    cell = cell_of(cell, state)
    if not callable(getattr(cell, "activations", None)):
        raise TypeError(
            f"saturation needs a cell that names its activations (the built-in RNN, LSTM "
            f"and GRU cells do), got {type(cell).__name__}"
        )
    x = probe(cell, x, state)
    kinds = cast("dict[str, str]", cell.activation_kinds)
    activations = cast("Callable[..., dict[str, Tensor]]", cell.activations)
    series: dict[str, list[Tensor]] = {}
    for x_t, parts in zip(x.unbind(1), previous_states(cell, x, state), strict=True):
        before = parts if len(parts) > 1 else parts[0]
        for name, values in activations(x_t, before).items():
            key = "dead" if kinds[name] == "relu" else name
            series.setdefault(key, []).append(_SATURATED[kinds[name]](values).double().mean())
    return {name: torch.stack(values) for name, values in series.items()}
