"""Reference implementations the tests compare against (kept independent of bptt's engines)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

import bptt

DT = torch.float64

CELL_KINDS = ("rnn-tanh", "rnn-relu", "lstm", "gru")


def rounding_tol(ops: int, scale: float, dtype: torch.dtype = DT) -> float:
    """The most two evaluations of one quantity may differ by rounding alone.

    A result reached through ``ops`` roundings, whose terms add up to at most ``scale`` in
    magnitude, is within gamma_ops * scale of the exact value (gamma_n = n u / (1 - n u),
    u = eps / 2; Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., eq. 3.5),
    whatever the order of the operations: another BLAS kernel, blocking, FMA or thread
    count only moves the result within that bound. Two evaluations (two engines, ours
    and torch's) therefore differ by at most ``ops * eps * scale``. Tolerances between
    different computations come from this, never from what one machine printed; a wrong
    sign or a missing term moves results by orders of magnitude more.

    Args:
        ops: the roundings on the longest path to one result (terms of the longest sum,
            steps of a recurrence times the roundings of each step, ...).
        scale: a bound on the sum of the magnitudes of the terms (not of the result).
        dtype: the working precision.

    Returns:
        The absolute tolerance.
    """
    return ops * torch.finfo(dtype).eps * scale


def load_benchmark(name: str):
    """The module of ``benchmarks/NAME.py`` (not a package: loaded from its path)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_cell(kind: str, input_size: int = 3, hidden_size: int = 5, dtype=DT) -> nn.Module:
    """A built-in cell by short name."""
    if kind == "rnn-tanh":
        return bptt.cells.RNNCell(input_size, hidden_size, "tanh", dtype=dtype)
    if kind == "rnn-relu":
        return bptt.cells.RNNCell(input_size, hidden_size, "relu", dtype=dtype)
    if kind == "lstm":
        return bptt.cells.LSTMCell(input_size, hidden_size, dtype=dtype)
    if kind == "gru":
        return bptt.cells.GRUCell(input_size, hidden_size, dtype=dtype)
    raise ValueError(kind)


def plain_loop(cell: nn.Module, x: Tensor, state=None, hooks=None):
    """The textbook autograd loop. With ``hooks``, each step's returned state goes through
    an identity view whose tensor hooks see the gradient that reaches it from later
    steps and the readout: ``hooks(t, part_index, grad) -> grad``."""
    outs = []
    for t, x_t in enumerate(x.unbind(1)):
        state = cell(x_t, state)
        if hooks is not None:
            parts = state if isinstance(state, tuple) else (state,)
            parts = tuple(p.view_as(p) for p in parts)
            for k, p in enumerate(parts):
                p.register_hook(lambda g, t=t, k=k: hooks(t, k, g))
            state = parts if isinstance(state, tuple) else parts[0]
        outs.append(state[0] if isinstance(state, tuple) else state)
    return torch.stack(outs, 1), state


def loss_of(outputs: Tensor, state, weights: Tensor) -> Tensor:
    """A loss that reaches every step's output and the final state."""
    final = state[-1] if isinstance(state, tuple) else state
    return (outputs * weights).sum() + final.pow(2).sum()


def grads_of(module: nn.Module, *tensors: Tensor) -> list[Tensor]:
    """Copies of the parameter gradients and of the given tensors' gradients."""
    out = [p.grad.clone() for p in module.parameters()]
    out += [t.grad.clone() for t in tensors]
    return out


class LinearCell(nn.Module):
    """h_t = W h_{t-1} + U x_t: a user-defined cell with a closed-form gradient."""

    def __init__(self, weight: torch.Tensor, input_size: int):
        super().__init__()
        self.hidden_size = weight.shape[0]
        self.input_size = input_size
        self.weight = nn.Parameter(weight)
        self.u = nn.Parameter(torch.ones(self.hidden_size, input_size, dtype=weight.dtype))

    def forward(self, x_t, state):
        return state @ self.weight.t() + x_t @ self.u.t()
