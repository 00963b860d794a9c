"""The states a cell passes through, for measurements taken along a real trajectory."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bptt import _checks
from bptt.cells import (
    GRUCell,
    LSTMCell,
    RNNCell,
    State,
    as_tuple,
    check_input,
    check_state,
    contract,
    has_initial_state,
    initial_state,
)
from bptt.model import SequenceModel

_TORCH_CELLS = {nn.RNNCell: RNNCell, nn.LSTMCell: LSTMCell, nn.GRUCell: GRUCell}
_TORCH_LAYERS = {nn.RNN: RNNCell, nn.LSTM: LSTMCell, nn.GRU: GRUCell}


def cell_of(
    model: nn.Module, state: State | None = None, *, runs: bool = True, name: str = "cell"
) -> nn.Module:
    """The one-step cell whose gradients a diagnosis follows.

    ``runs``: the diagnosis runs the cell, from ``state`` if given, else from the
    cell's own initial state, which the cell must then have. ``name``: the caller's
    name for ``model``, in the error.

    * a one-step cell (built-in, or any module with the cell contract): itself;
    * a :class:`bptt.SequenceModel`: its cell;
    * ``torch.nn.RNN``/``LSTM``/``GRU`` with one unidirectional layer (inputs batch
      first, as everywhere in bptt), or ``torch.nn.RNNCell``/``LSTMCell``/``GRUCell``:
      the built-in cell with a copy of its weights (the same function, and the fast
      engine and gate measurements apply);
    * the user's own module: what its ``recurrent_cell()`` method returns (the
      adapter: give a model that unrolls a cell itself this method); without one,
      the module itself as a cell: one with ``hidden_size`` or ``initial_state``, or
      any ``forward(x_t, state) -> state`` where the state is given.

    Raises:
        TypeError: none of these: the message says what the diagnosis needs.
    """
    if isinstance(model, SequenceModel):
        return model.cell
    adapter = getattr(model, "recurrent_cell", None)  # the documented adapter
    if callable(adapter):
        return cell_of(adapter(), state, runs=runs, name=name)
    for kinds, copy in ((_TORCH_LAYERS, _from_layer), (_TORCH_CELLS, _from_cell)):
        for kind, ours in kinds.items():
            if type(model) is kind:
                return copy(model, ours)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{name} must be a torch.nn.Module (a cell or a model), got {_checks.shown(model)}"
        )
    if runs and state is None and not has_initial_state(model):
        raise TypeError(
            f"{name}: a diagnosis follows a one-step recurrent cell; {type(model).__name__} "
            "is not one (no hidden_size or initial_state): pass its cell, a SequenceModel, a "
            "torch.nn.RNN/LSTM/GRU, give it a recurrent_cell() method returning its cell, "
            "or pass state= to run it as a cell from that state"
        )
    return model


def copied_cell(source: nn.Module, ours: type, suffix: str, **kwargs) -> nn.Module:
    """A built-in cell holding a copy of a torch module's weights (names + ``suffix``:
    ``""`` for a cell, ``"_l1_reverse"`` for a layer's direction)."""
    weight = getattr(source, f"weight_ih{suffix}")
    bias = getattr(source, f"bias_ih{suffix}", None) is not None
    cell = ours(
        weight.shape[1],  # a layer above the first reads the one below: not input_size
        source.hidden_size,
        bias=bias,
        device=weight.device,
        dtype=weight.dtype,
        **kwargs,
    )
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            theirs = getattr(source, f"{name}{suffix}", None)
            if theirs is not None:
                getattr(cell, name).copy_(theirs)
    return cell


def _nonlinearity(source: nn.Module) -> dict:
    return {"nonlinearity": source.nonlinearity} if hasattr(source, "nonlinearity") else {}


def _from_cell(source: nn.Module, ours: type) -> nn.Module:
    return copied_cell(source, ours, "", **_nonlinearity(source))


def _from_layer(source: nn.Module, ours: type) -> nn.Module:
    name = type(source).__name__
    proj_size = getattr(source, "proj_size", 0)
    if source.num_layers != 1 or source.bidirectional or proj_size:
        raise TypeError(
            f"a diagnosis follows one recurrent layer in one direction; this torch.nn.{name} "
            f"has num_layers={source.num_layers}, bidirectional={source.bidirectional}"
            f"{', proj_size=' + str(proj_size) if proj_size else ''}"
            f": bptt.diagnose.diagnose(module, x) and gradient_by_layer take it whole, layer "
            f"by layer; or diagnose one layer at a time (bptt.cells.{ours.__name__} with its "
            "weights), or give your model a recurrent_cell() method"
        )
    if not source.batch_first:  # the probe would be read (T, B, F) as (B, T, F)
        raise TypeError(
            f"this torch.nn.{name} has batch_first=False; bptt's probes are batch first "
            f"(B, T, F): build it with batch_first=True (the weights are the same)"
        )
    return copied_cell(source, ours, "_l0", **_nonlinearity(source))


def probe(cell: nn.Module, x: Any, state: Any) -> Tensor:
    """``x`` as a diagnosis's probe of ``cell``: a floating-point tensor (B, T, F) with
    B, T >= 1 that fits the cell, every value finite (a NaN input would read as an
    exploding model: the input is at fault, and no measurement of the model is made on
    it); a given ``state`` fits the cell and x and is finite too."""
    x = probe_batch(x)
    check_input(cell, x)
    if state is not None:
        check_state(cell, state, x)
        for part in as_tuple(state):
            if not bool(torch.isfinite(part).all()):
                raise ValueError(
                    "state holds NaN or inf: the initial state is at fault, not the model; "
                    "diagnose from a finite state"
                )
    return x


def probe_batch(x: Any) -> Tensor:
    """``x`` as a probe batch: a floating-point tensor (B, T, F) with B, T >= 1, every
    value finite."""
    if not isinstance(x, Tensor):
        raise TypeError(
            f"x must be a probe batch of shape (B, T, F), a tensor, got {_checks.shown(x)}"
        )
    if x.dim() != 3 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(
            f"x must be a probe batch of shape (B, T, F) with B, T >= 1, got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        sample, step, feature = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"x holds a non-finite value ({x[sample, step, feature].item()}) at sample "
            f"{sample}, step {step}, feature {feature}: the input is at fault, not the "
            "model; diagnose on finite input"
        )
    return x


def iterations(value: Any) -> int:
    """``iters``, the power iterations of a Jacobian norm: an integer >= 1 (with none,
    nothing would be measured and every norm would read 0)."""
    return _checks.integer("iters", value, 1)


def generator_seed(value: Any) -> int:
    """``seed`` for a torch generator: an integer in 0..2**64 - 1."""
    return _checks.integer("seed", value, 0, 2**64 - 1)


@torch.no_grad()
def previous_states(cell: nn.Module, x: Tensor, state: State | None) -> list[tuple[Tensor, ...]]:
    """For every step t, the state s_{t-1} the cell starts from (as a tuple of tensors).

    Returns:
        T tuples, each of tensors (B, ...).
    """
    if state is None:
        state = initial_state(cell, x.shape[0], device=x.device, dtype=x.dtype)
    step = contract(cell).sequence_step()
    before = []
    for x_t in x.unbind(1):
        before.append(as_tuple(state))
        state = step(x_t, state)
    return before


def stack_rows(parts: list[tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
    """Per component, the tensors of all entries stacked along the batch: (K*B, ...)."""
    return tuple(torch.cat(component, dim=0) for component in zip(*parts, strict=True))


def as_state(parts: tuple[Tensor, ...], like: State) -> State:
    """A tuple of components back into the structure of ``like``."""
    return parts if isinstance(like, tuple) else parts[0]
