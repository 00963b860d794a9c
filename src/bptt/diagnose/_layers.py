"""The gradient through every recurrent layer of the user's own network, under the
user's own loss.

A network people train holds ``torch.nn.RNN``/``LSTM``/``GRU`` modules of several
layers, often bidirectional, batch first or time-major, inside a module of their own
with a head and a loss of their own. torch runs each such module as one call: the
hidden states between its layers and steps never appear. To see them, each module
found in the model (:func:`recurrent_layers`) is run, for the probe's one forward
pass, as the same function unrolled by bptt: every layer and direction a built-in
cell holding a copy of its weights, unrolled with a tap that records dL/ds_t at every
step. The user's forward and loss run as written around it, and the backward of their
loss reaches each layer through their head and through the layers above.

Nothing of the model changes: the modules' forwards are put back, its parameters'
``.grad`` are untouched (the gradients are asked of the copies), its buffers (a batch
norm's running statistics) are restored, its mode (train or eval) is the one it had,
and the random number generators are restored (dropout in train mode draws from
them).

Direction: a backward direction reads the sequence from its end, so its "last step",
where distance 0 is, is the sequence's first. Distances are counted in each
direction's own order.

bptt cells inside the user's module (a :class:`bptt.cells.RecurrentCell`, or any
module of the model's that its forward passes to :func:`bptt.unroll`: two
``LSTMCell`` stacked by hand, a :class:`bptt.SequenceModel`) are layers too, named by
their path in the model (``cells.0``, ``encoder.cell``). They are not copied: while
the probe's forward runs, every ``unroll`` of a cell the model holds gets the taps of
its own pass, appended after the caller's taps (through a private hook of the
engine), and its input a zero with a graph (the same values) so that the backward
reaches every step even where no weight asks for a gradient. Each ``unroll`` call is
a pass: a cell unrolled more than once in one forward (the same cell on the flipped
input for a backward direction, or a sequence in chunks) gives one pass per call,
named ``cells.0[call 0]``, ``cells.0[call 1]``, ... in the order they ran (a torch
module called more than once is numbered the same way). A pass's curve is by distance
along that unroll's own time axis: a cell the user runs on a flipped input cannot be
known as a backward direction, and its "last step" is the last it read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from bptt import _checks
from bptt.cells import (
    GRUCell,
    LSTMCell,
    RecurrentCell,
    RNNCell,
    State,
    as_tuple,
    has_initial_state,
    initial_state,
)
from bptt.diagnose._distance import RecordPrecision, by_distance, scalar_loss
from bptt.diagnose._projected import projected_copy
from bptt.diagnose._trajectory import copied_cell, generator_seed
from bptt.engine import _watch_unrolls, unroll
from bptt.taps import Delta, RecordNorms

__all__ = ["LayerPass", "gradient_by_layer", "recurrent_layers"]

_OURS = {nn.RNN: RNNCell, nn.LSTM: LSTMCell, nn.GRU: GRUCell}


def recurrent_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The recurrent modules inside ``model`` (itself included), with their names in
    ``model.named_modules()`` (``""`` for the model), in that order: the
    ``torch.nn.RNN``/``LSTM``/``GRU`` modules, and the bptt cells
    (:class:`bptt.cells.RecurrentCell`; not those inside another cell, such as a
    ``DeepLRUCell``'s units).

    A module of the user's that its model passes to :func:`bptt.unroll` without
    subclassing ``RecurrentCell`` is not listed here, and is still diagnosed as a layer
    by :func:`gradient_by_layer` when the forward unrolls it."""
    found: list[tuple[str, nn.Module]] = []
    cells: list[str] = []  # the names of the cells found: what lies inside them is theirs
    for name, module in model.named_modules():
        if any(not cell or name.startswith(cell + ".") for cell in cells):
            continue
        if type(module) in _OURS:
            found.append((name, module))
        elif isinstance(module, RecurrentCell):
            found.append((name, module))
            cells.append(name)
    return found


@dataclass
class LayerPass:
    """One layer, in one direction, of a recurrent module, as the probe went through it.

    Attributes:
        module: the module's name in the model (``""``: the model itself).
        layer: the layer's index in the module (0 reads the module's input); None for
            a bptt cell the model unrolls itself (the cell is the layer).
        direction: ``"forward"``, or ``"backward"`` for the second direction of a
            bidirectional module (a bptt cell's pass is ``"forward"``: the direction
            of the unroll it ran).
        cell: a built-in cell holding a copy of the layer's weights (for an LSTM with
            ``proj_size``, a private LSTM cell with the projection, its state h (B, P)
            and c (B, H)); for a bptt cell, the model's cell itself.
        inputs: what the layer read, batch first and in its own order (B, T, F_l),
            detached (the backward direction's is the sequence reversed).
        state: the state it started from (detached).
        call: which call of the same layer in one forward this pass is (0, 1, ...),
            where the forward ran it more than once; None where it ran it once.
        lengths: each sequence's length (B,) for a packed input (padded past it; the
            backward direction reads each sequence from its own end), else None.
        norms: per-sample norms of dL/ds_t (B, T) in its own order, after the backward.
        subnormal, zero: shares of dL/ds_t's elements that are subnormal or zero (T,).
    """

    module: str
    layer: int | None
    direction: str
    cell: nn.Module = field(repr=False)
    inputs: Tensor = field(repr=False)
    state: Any = field(repr=False)
    lengths: Tensor | None = field(repr=False, default=None)
    call: int | None = None
    record: RecordNorms = field(repr=False, default_factory=RecordNorms)
    precision: RecordPrecision = field(repr=False, default_factory=RecordPrecision)
    # what the gradient is asked of: the copy's weights, or the zero added to the input
    anchors: list[Tensor] = field(repr=False, default_factory=list)

    @property
    def name(self) -> str:
        """How the report names it: ``encoder.lstm layer 1 backward`` for a torch
        module's layer, ``cells.0`` for a bptt cell, with ``[call k]`` after it where
        the forward ran it more than once."""
        kind = type(self.cell).__name__.removesuffix("Cell").removeprefix("Projected")
        where = self.module or kind.lower()  # the torch module's kind: lstm
        if self.layer is not None:
            where += f" layer {self.layer}" + (" backward" if self.direction == "backward" else "")
        return where if self.call is None else f"{where}[call {self.call}]"


def _valid(lengths: Tensor, like: Tensor) -> Tensor:
    """1 at each sequence's steps, 0 past its end: (B, T, 1) in ``like``'s dtype."""
    steps = torch.arange(like.shape[1], device=like.device)
    return (steps[None, :] < lengths[:, None]).to(like.dtype).unsqueeze(-1)


def _reversed(sequence: Tensor, lengths: Tensor | None) -> Tensor:
    """(B, T, F) with each sequence's steps in reverse order and its padding in place
    (its own inverse): what a backward direction reads."""
    if lengths is None:
        return sequence.flip(1)
    steps = torch.arange(sequence.shape[1], device=sequence.device)
    back = lengths[:, None] - 1 - steps[None, :]  # (B, T)
    index = torch.where(back >= 0, back, steps[None, :].expand_as(back))
    return sequence.gather(1, index.unsqueeze(-1).expand_as(sequence))


class _Frozen(nn.Module):
    """A cell whose state stays as it is where the input's last feature (the mask of
    :func:`_valid`) is 0: a packed sequence's state at its end, kept through the
    padding that follows it."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x_t: Tensor, state: Any) -> Any:
        valid = x_t[:, -1:]  # (B, 1)
        stepped = self.cell(x_t[:, :-1], state)
        if isinstance(state, tuple):
            return tuple(
                torch.where(valid > 0, new, old) for new, old in zip(stepped, state, strict=True)
            )
        return torch.where(valid > 0, stepped, state)


def _tapped_forward(module: nn.RNNBase, name: str, passes: list[LayerPass]) -> Callable:
    """``module.forward`` computed as bptt unrolls of copies of its layers, each with a
    tap; the same outputs as torch's (up to rounding), the passes appended to
    ``passes``."""
    ours = _OURS[type(module)]
    lstm = ours is LSTMCell
    extra = {"nonlinearity": module.nonlinearity} if hasattr(module, "nonlinearity") else {}
    directions = 2 if module.bidirectional else 1

    projected = getattr(module, "proj_size", 0)  # h is then (B, P), c (B, H)

    def forward(data: Any, hx: Any = None) -> tuple[Any, Any]:
        lengths = None
        if isinstance(data, PackedSequence):  # padded here, in the batch's own order
            x, lengths = pad_packed_sequence(data, batch_first=True)
            lengths = lengths.to(x.device)
            single = False
        else:
            single = data.dim() == 2  # one sequence (T, F), as torch allows
            x = data.unsqueeze(0) if single else data
            x = x if single or module.batch_first else x.transpose(0, 1)
        batch, hidden = x.shape[0], module.hidden_size
        c0: Tensor | None
        if hx is None:
            h0 = x.new_zeros(module.num_layers * directions, batch, projected or hidden)
            c0 = x.new_zeros(module.num_layers * directions, batch, hidden)
        else:
            h0, c0 = hx if lstm else (hx, None)
            if single:
                h0 = h0.unsqueeze(1)
                c0 = None if c0 is None else c0.unsqueeze(1)
        finals_h: list[Tensor] = []
        finals_c: list[Tensor] = []
        layer_input = x
        for layer in range(module.num_layers):
            outputs = []
            for direction in range(directions):
                index = layer * directions + direction
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                if projected:
                    cell: nn.Module = projected_copy(cast(nn.LSTM, module), suffix)
                else:
                    cell = copied_cell(module, ours, suffix, **extra)
                inputs = _reversed(layer_input, lengths) if direction else layer_input
                state = (h0[index], cast(Tensor, c0)[index]) if lstm else h0[index]
                start = tuple(s.detach() for s in as_tuple(state))
                passed = LayerPass(
                    name,
                    layer,
                    "backward" if direction else "forward",
                    cell,
                    inputs.detach(),
                    start if lstm else start[0],
                    lengths=lengths,
                    anchors=list(cell.parameters()),
                )
                taps: list[Callable[[int, Delta], Delta]] = [passed.record, passed.precision]
                if lengths is None:
                    out, final = unroll(cell, inputs, state=state, taps=taps)
                else:  # the state stays where each sequence ends; no output past it
                    masked = torch.cat([inputs, _valid(lengths, inputs)], dim=-1)
                    out, final = unroll(_Frozen(cell), masked, state=state, taps=taps)
                    out = out * _valid(lengths, out)
                passes.append(passed)
                outputs.append(_reversed(out, lengths) if direction else out)
                parts = as_tuple(final)  # (h,) or (h, c)
                finals_h.append(parts[0])
                if lstm:
                    finals_c.append(parts[1])
            layer_input = torch.cat(outputs, dim=-1)
            if module.dropout and module.training and layer < module.num_layers - 1:
                layer_input = nn.functional.dropout(layer_input, module.dropout, training=True)
        h_n = torch.stack(finals_h)
        c_n = torch.stack(finals_c) if lstm else None
        output: Any = layer_input
        if lengths is not None:
            output = pack_padded_sequence(
                output, lengths.cpu(), batch_first=True, enforce_sorted=False
            )
        elif single:
            output, h_n = output.squeeze(0), h_n.squeeze(1)
            c_n = None if c_n is None else c_n.squeeze(1)
        elif not module.batch_first:
            output = output.transpose(0, 1)
        return output, ((h_n, c_n) if lstm else h_n)

    return forward


def _watcher(model: nn.Module, passes: list[LayerPass]) -> Callable:
    """The engine's watch (``bptt.engine._watch_unrolls``) over the cells ``model``
    holds: each ``unroll`` of one is a pass, appended to ``passes``, whose taps are
    added to the call's and whose input gets a zero with a graph."""
    names = {id(module): name for name, module in model.named_modules()}

    def watch(cell: nn.Module, x: Tensor, state: State | None) -> Any:
        name = names.get(id(cell))
        if name is None:  # not the model's (a copy of a torch layer's, or another model's)
            return None
        start = state
        if start is None and has_initial_state(cell):  # else unroll says what is missing
            start = initial_state(cell, x.shape[0], device=x.device, dtype=x.dtype)
        parts = None if start is None else tuple(p.detach() for p in as_tuple(start))
        zero = torch.zeros((), device=x.device, dtype=x.dtype, requires_grad=True)
        passed = LayerPass(
            name,
            None,
            "forward",
            cell,
            x.detach(),
            parts if parts is None or isinstance(start, tuple) else parts[0],
            anchors=[zero],
        )
        passes.append(passed)
        return x + zero, [passed.record, passed.precision]  # x + 0: the same values

    return watch


@contextlib.contextmanager
def _tapped(model: nn.Module) -> Iterator[list[LayerPass]]:
    """Within: every torch recurrent module of ``model`` runs as tapped bptt unrolls,
    and every :func:`bptt.unroll` of a cell it holds is tapped (the passes, in the
    order the forward ran them, are in the yielded list); after: as before."""
    passes: list[LayerPass] = []
    found = [(n, m) for n, m in recurrent_layers(model) if type(m) in _OURS]
    try:
        for name, module in found:
            tapped = _tapped_forward(cast(nn.RNNBase, module), name, passes)
            module.forward = tapped  # type: ignore[method-assign]
        with _watch_unrolls(_watcher(model, passes)):
            yield passes
    finally:
        for _, module in found:
            module.__dict__.pop("forward", None)  # the class's forward again


def _number_calls(passes: list[LayerPass]) -> None:
    """Number the passes of a layer the forward ran more than once: ``call`` 0, 1, ..."""
    seen: dict[tuple[str, int | None, str], list[LayerPass]] = {}
    for passed in passes:
        seen.setdefault((passed.module, passed.layer, passed.direction), []).append(passed)
    for same in seen.values():
        for k, passed in enumerate(same):
            passed.call = k if len(same) > 1 else None


@contextlib.contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """The model's buffers and mode, and the random generators, as they were."""
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]
    devices = sorted({b.device for b in (*model.parameters(), *model.buffers())}, key=str)
    cuda = [d for d in devices if d.type == "cuda"]
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
            for module, training in modes:
                module.training = training


def first_tensor(value: Any) -> Tensor | None:
    """The first tensor in what a model returned (a tensor, or tuples, lists and dicts
    of them, depth first)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for item in value:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def _aligned(norms: Tensor, lengths: Tensor | None) -> tuple[Tensor, int | None]:
    """Per-sample norms (B, T), by step in the direction's order, as one curve (1, T')
    by step in that order whose last column is where the gradient enters each
    sequence: the mean over the sequences that reach each distance from their own
    entry (a NaN kept: it is news). A packed sequence's padding is left out, and a
    sequence the loss reads at one step only (a backward direction read at the last
    step) adds that one point.

    Returns:
        The curve, and the earliest distance (from a sequence's own end) at which the
        gradient enters any sequence (None: it enters none).
    """
    batch, steps = norms.shape
    own = lengths.to(norms.device) if lengths is not None else norms.new_full((batch,), steps)
    own = own.long()
    distance = torch.arange(steps, device=norms.device)
    # by distance from each sequence's own last step (padding beyond its start: missing)
    back = own[:, None] - 1 - distance[None, :]
    by_distance = norms.gather(1, back.clamp_min(0))
    present = back >= 0
    reached = present & (by_distance != 0)  # NaN != 0: a NaN is reached too
    has = reached.any(1)
    if not bool(has.any()):
        return norms.new_zeros(1, 1), None
    entries = torch.where(has, reached.float().argmax(1), own)  # first reached distance
    source = entries[:, None] + distance[None, :]  # the entry first, then farther back
    keep = (source < own[:, None]) & has[:, None]
    shifted = by_distance.gather(1, source.clamp_max(steps - 1))
    total = torch.where(keep, shifted, torch.zeros_like(shifted)).sum(0)
    count = keep.sum(0)
    reach = int(count.nonzero().max()) + 1
    curve = total[:reach] / count[:reach]
    return curve.flip(0).unsqueeze(0), int(entries[has].min())


def _last_step(model: nn.Module, output: Any) -> Any:
    """For a torch recurrent module given alone, its output at the last step (the
    loss of a cell's diagnosis); a network of the user's: its output as it is."""
    if not isinstance(model, nn.RNNBase):
        return output
    sequence = output[0]
    if isinstance(sequence, PackedSequence):  # each sequence at its own last step
        padded, lengths = pad_packed_sequence(sequence, batch_first=True)
        last = (lengths - 1).to(padded.device)
        return padded[torch.arange(padded.shape[0], device=padded.device), last]
    if sequence.dim() == 2:  # unbatched (T, H)
        return sequence[-1]
    return sequence[:, -1] if model.batch_first else sequence[-1]


def projected_loss(output: Any, seed: int) -> Tensor:
    """The default loss: the model's output projected on a fixed random unit vector
    over its last dimension, summed (every output element's gradient set by the seed)."""
    first = first_tensor(output)
    if first is None or not first.is_floating_point():
        raise TypeError(
            "the model's output holds no floating-point tensor to project: give loss_fn"
        )
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(first.shape[-1], generator=gen, dtype=torch.float64)
    direction = (direction / direction.norm()).to(device=first.device, dtype=first.dtype)
    return (first * direction).sum()


def gradient_by_layer(
    model: nn.Module,
    x: Any,
    y: Any = None,
    loss_fn: Callable[..., Tensor] | None = None,
    *,
    seed: int = 0,
) -> list[tuple[LayerPass, dict[str, Any]]]:
    """The hidden-state gradient of every recurrent layer and direction of ``model``,
    by distance, under the user's loss.

    ``model(x)`` runs as the user wrote it, its ``torch.nn.RNN``/``LSTM``/``GRU``
    modules (any ``num_layers``, bidirectional, ``batch_first`` either way, packed, an
    LSTM with ``proj_size``) as tapped bptt unrolls of copies of their weights, and
    every :func:`bptt.unroll` of a cell it holds (bptt cells stacked by hand, a
    :class:`bptt.SequenceModel`, a cell of the user's) with taps of the probe's added
    (one pass per call; see the module's documentation for a cell unrolled more than
    once); then the loss, ``loss_fn(model(x), y)`` (``loss_fn(model(x))`` without ``y``;
    by default the output projected on a fixed random unit vector), is backpropagated,
    and each layer's taps record the norm of dL/ds_t at every step. The model's
    weights, ``.grad``, buffers and mode, and the random generators, are as they were
    afterwards.

    Args:
        model: any module holding recurrent layers; the probe runs on its device.
        x: what ``model`` takes (a tensor, time-major if the model reads it so).
        y: the targets for ``loss_fn`` (None: none).
        loss_fn: ``loss_fn(output, y) -> scalar`` (or ``loss_fn(output)``); None: the
            projection (for a torch recurrent module given alone, of its output at the
            last step, as a cell's diagnosis does).
        seed: seeds the projection.

    Returns:
        For each layer and direction (and each unroll of a bptt cell), in the order
        the forward ran them: its :class:`LayerPass` and the numbers of
        :func:`bptt.diagnose.gradient_by_distance` (``norms`` by distance, ``ratios``,
        ``gamma``, ``horizon``, ...), counted for each sequence from where the gradient
        enters it (its last step for a loss read there; a packed sequence's own last
        step, its padding left out), with ``entered_at``: the earliest distance from a
        sequence's end at which it enters (0 for a loss at the last step), and
        ``loss``: the loss's value (a float; NaN and inf kept).

    Raises:
        TypeError: ``model`` is not a module, or holds no torch recurrent module and its
            forward unrolls no cell of its own with :func:`bptt.unroll`, ``loss_fn`` is
            not callable, the loss is not a real scalar tensor, or the model's output
            holds no floating-point tensor for the default loss.
        ValueError: ``y`` without ``loss_fn``; the loss is not one value or does not
            depend on the recurrent layers.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {_checks.shown(model)}")
    if loss_fn is not None:
        _checks.function("loss_fn", loss_fn, "loss_fn(output, y) -> scalar")
    elif y is not None:
        raise ValueError("y is given without loss_fn: give the loss that compares them")
    seed = generator_seed(seed)
    with untouched(model), _tapped(model) as passes, torch.enable_grad():
        output = model(x)
        if loss_fn is None:
            loss = projected_loss(_last_step(model, output), seed)
        else:
            loss = loss_fn(output, y) if y is not None else loss_fn(output)
        if not passes:
            raise TypeError(
                f"model: {type(model).__name__} holds no torch.nn.RNN, LSTM or GRU module "
                "and its forward ran no bptt.unroll of a cell it holds"
            )
        value = scalar_loss(loss)
        loss_value = float(value.detach())
        anchors = [a for layer in passes for a in layer.anchors]
        torch.autograd.grad(value, anchors, allow_unused=True)
    _number_calls(passes)
    results = []
    for layer in passes:
        if layer.precision.subnormal is None or layer.precision.zero is None:
            raise ValueError(f"the loss does not depend on {layer.name}: no gradient reaches it")
        norms, entered = _aligned(layer.record.norms, layer.lengths)
        measured = by_distance(
            norms, layer.precision.subnormal, layer.precision.zero, layer.inputs.dtype
        )
        measured["entered_at"] = entered
        measured["loss"] = loss_value
        results.append((layer, measured))
    return results
