"""The states a cell passes through, for measurements taken along a real trajectory."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bptt.cells import GRUCell, LSTMCell, RNNCell, State, as_tuple, contract, initial_state
from bptt.model import SequenceModel

_TORCH_CELLS = {nn.RNNCell: RNNCell, nn.LSTMCell: LSTMCell, nn.GRUCell: GRUCell}
_TORCH_LAYERS = {nn.RNN: RNNCell, nn.LSTM: LSTMCell, nn.GRU: GRUCell}


def cell_of(model: nn.Module) -> nn.Module:
    """The one-step cell whose gradients a diagnosis follows.

    * a one-step cell (built-in, or any module with the cell contract): itself;
    * a :class:`bptt.SequenceModel`: its cell;
    * ``torch.nn.RNN``/``LSTM``/``GRU`` with one unidirectional layer (inputs batch
      first, as everywhere in bptt), or ``torch.nn.RNNCell``/``LSTMCell``/``GRUCell``:
      the built-in cell with a copy of its weights (the same function, and the fast
      engine and gate measurements apply);
    * the user's own module: what its ``recurrent_cell()`` method returns (the
      adapter: give a model that unrolls a cell itself this method).

    Raises:
        TypeError: none of these: the message says what the diagnosis needs.
    """
    if isinstance(model, SequenceModel):
        return model.cell
    adapter = getattr(model, "recurrent_cell", None)  # the documented adapter
    if callable(adapter):
        return cell_of(adapter())
    for kinds, copy in ((_TORCH_LAYERS, _from_layer), (_TORCH_CELLS, _from_cell)):
        for kind, ours in kinds.items():
            if type(model) is kind:
                return copy(model, ours)
    if not isinstance(model, nn.Module):
        raise TypeError(f"a diagnosis needs a torch.nn.Module, got {type(model).__name__}")
    try:
        contract(model)
    except TypeError:
        raise TypeError(
            f"a diagnosis follows a one-step recurrent cell; {type(model).__name__} is not "
            "one (no hidden_size or initial_state): pass its cell, a bptt.SequenceModel, a "
            "torch.nn.RNN/LSTM/GRU, or give it a recurrent_cell() method returning its cell"
        ) from None
    return model


def _copied(source: nn.Module, ours: type, suffix: str, **kwargs) -> nn.Module:
    """A built-in cell holding a copy of a torch module's weights (names + ``suffix``)."""
    weight = getattr(source, f"weight_ih{suffix}")
    bias = getattr(source, f"bias_ih{suffix}", None) is not None
    cell = ours(
        source.input_size,
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
    return _copied(source, ours, "", **_nonlinearity(source))


def _from_layer(source: nn.Module, ours: type) -> nn.Module:
    name = type(source).__name__
    proj_size = getattr(source, "proj_size", 0)
    if source.num_layers != 1 or source.bidirectional or proj_size:
        raise TypeError(
            f"a diagnosis follows one recurrent layer in one direction; this torch.nn.{name} "
            f"has num_layers={source.num_layers}, bidirectional={source.bidirectional}"
            f"{', proj_size=' + str(proj_size) if proj_size else ''}"
            f": diagnose one layer at a time (bptt.cells.{ours.__name__} with its weights), "
            "or give your model a recurrent_cell() method"
        )
    if not source.batch_first:  # the probe would be read (T, B, F) as (B, T, F)
        raise TypeError(
            f"this torch.nn.{name} has batch_first=False; bptt's probes are batch first "
            f"(B, T, F): build it with batch_first=True (the weights are the same)"
        )
    return _copied(source, ours, "_l0", **_nonlinearity(source))


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
