"""Saturated and dead units along a trajectory: where the local derivative is ~0."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bptt.cells import GRU, LSTM, RNN
from bptt.cells._state import State
from bptt.diagnose._trajectory import cell_of, previous_states

__all__ = ["SATURATION", "saturation"]

# A sigmoid is saturated below 0.01 or above 0.99 (derivative < 0.0099), a tanh
# beyond |0.99| (derivative < 0.0199): the gradient through such a unit nearly stops.
SATURATION = 0.99


def _tanh_saturated(values: Tensor) -> Tensor:
    return (values.abs() > SATURATION).double()


def _sigmoid_saturated(values: Tensor) -> Tensor:
    return ((values < 1 - SATURATION) | (values > SATURATION)).double()


@torch.no_grad()
def saturation(cell: nn.Module, x: Tensor, state: State | None = None) -> dict[str, Tensor]:
    """Per step, the fraction of units whose nonlinearity is saturated or dead.

    Keys (each a float64 tensor (T,), averaged over the batch and the units):

    * tanh RNN: ``tanh`` (|h| > 0.99);
    * ReLU RNN: ``dead`` (units at exactly 0: no gradient passes);
    * LSTM: ``i``, ``f``, ``o`` (sigmoid gates below 0.01 or above 0.99), ``g`` and
      ``tanh_c`` (tanh beyond |0.99|);
    * GRU: ``r``, ``z`` (sigmoid) and ``n`` (tanh).

    Raises:
        TypeError: a cell other than the built-in RNN, LSTM and GRU (their gates are
            known; a user cell's are not).
    """
    cell = cell_of(cell)
    kind = type(cell)
    if kind not in (RNN, LSTM, GRU):
        raise TypeError(f"saturation needs a built-in RNN, LSTM or GRU cell, got {kind.__name__}")
    before = previous_states(cell, x, state)
    series: dict[str, list[Tensor]] = {}

    def add(name: str, fraction: Tensor) -> None:
        series.setdefault(name, []).append(fraction.mean())

    for x_t, parts in zip(x.unbind(1), before, strict=True):
        h = parts[0]
        pre = nn.functional.linear(x_t, cell.weight_ih, cell.bias_ih)
        rec = nn.functional.linear(h, cell.weight_hh, cell.bias_hh)
        if kind is RNN:
            out = cell(x_t, h)
            if cell.nonlinearity == "relu":
                add("dead", (out == 0).double())
            else:
                add("tanh", _tanh_saturated(out))
        elif kind is LSTM:
            i, f, g, o = (pre + rec).chunk(4, dim=1)
            for name, gate in (("i", i), ("f", f), ("o", o)):
                add(name, _sigmoid_saturated(torch.sigmoid(gate)))
            add("g", _tanh_saturated(torch.tanh(g)))
            _, c = cell(x_t, parts)
            add("tanh_c", _tanh_saturated(torch.tanh(c)))
        else:
            xr, xz, xn = pre.chunk(3, dim=1)
            hr, hz, hn = rec.chunk(3, dim=1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            add("r", _sigmoid_saturated(r))
            add("z", _sigmoid_saturated(z))
            add("n", _tanh_saturated(torch.tanh(xn + r * hn)))
    return {name: torch.stack(values) for name, values in series.items()}
