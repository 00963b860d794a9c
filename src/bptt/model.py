"""Recurrent layers unrolled over time with a linear readout: one cell, a stack of
cells, forward or both directions."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from bptt import _checks
from bptt.cells import State, contract
from bptt.engine import ENGINES, unroll
from bptt.taps import Delta, as_taps

__all__ = ["READOUTS", "SequenceModel", "Unroll"]

READOUTS = ("last", "all")

Unroll = tuple[int, int]  # (layer, direction): direction 0 runs forward in time, 1 backward
Taps = Sequence[Callable[[int, Delta], Delta]]


class SequenceModel(nn.Module):
    """Recurrent cells over time, one layer or several, followed by a linear readout.

    Layer l reads the outputs of layer l - 1 (the inputs x for l = 0). A bidirectional
    layer runs a second cell over the steps in reverse and gives each step the two
    outputs side by side, (B, T, H_forward + H_backward), as ``torch.nn.LSTM`` with
    ``bidirectional=True`` does; dropout, when set, falls between layers (on the inputs
    of layers 1 .. L-1), as ``torch.nn.LSTM``'s ``dropout``.

    Args:
        cell: a one-step cell (built-in or the user's own) with an integer
            ``hidden_size``, or a sequence of them, one per layer (layer l + 1's input
            size is layer l's output width).
        out_features: size of the readout, O.
        readout: ``"last"`` reads the last step only, y of shape (B, O): the forward
            cell's output at step T-1 and, in a bidirectional top layer, the backward
            cell's at step 0 (where it has read the whole sequence); ``"all"`` reads
            every step, y of shape (B, T, O).
        engine: passed to :func:`bptt.unroll`.
        reverse: the backward cells of bidirectional layers, one per layer (None or
            empty: every layer runs forward only). Each reads its layer's inputs.
        dropout: the probability of dropping an input of layers 1 .. L-1 in training,
            in [0, 1).

    Attributes:
        cells: the forward cells, one per layer (``nn.ModuleList``).
        reverse_cells: the backward cells (empty for a forward-only model).
        head: the linear readout.

    Example:
        >>> import torch, bptt
        >>> model = SequenceModel(bptt.cells.LSTMCell(2, 16), out_features=1)
        >>> y, (h, c) = model(torch.randn(8, 50, 2))
        >>> y.shape
        torch.Size([8, 1])
        >>> stack = SequenceModel([bptt.cells.GRUCell(2, 8), bptt.cells.GRUCell(8, 8)], 1)
        >>> y, (h0, h1) = stack(torch.randn(8, 50, 2))  # a state per layer
    """

    def __init__(
        self,
        cell: nn.Module | Sequence[nn.Module],
        out_features: int,
        readout: str = "last",
        engine: str = "auto",
        *,
        reverse: Sequence[nn.Module] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        forward_cells = _cell_list("cell", cell)
        none = reverse is None or (isinstance(reverse, (list, tuple)) and not reverse)
        reverse_cells = [] if none else _cell_list("reverse", reverse)
        if reverse_cells and len(reverse_cells) != len(forward_cells):
            raise ValueError(
                f"reverse needs one cell per layer: {len(forward_cells)} layers, "
                f"{len(reverse_cells)} backward cells"
            )
        if isinstance(out_features, bool) or not isinstance(out_features, int) or out_features < 1:
            raise ValueError(f"out_features must be a positive integer, got {out_features!r}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self.dropout = _checks.real("dropout", dropout, 0.0, 1.0)
        if self.dropout == 1.0:
            raise ValueError("dropout must be below 1: at 1 every input of a layer is dropped")
        _check_widths(forward_cells, reverse_cells)
        self.cells = nn.ModuleList(forward_cells)
        self.reverse_cells = nn.ModuleList(reverse_cells)
        self.readout = readout
        self.engine = engine
        weight = next(self.cells.parameters(), None)
        factory: dict[str, Any] = (
            {} if weight is None else {"device": weight.device, "dtype": weight.dtype}
        )
        self.head = nn.Linear(self._width(len(forward_cells) - 1), out_features, **factory)
        # a one-cell model saved before layers named its cell `cell`
        self.register_load_state_dict_pre_hook(_rename_single_cell)

    @property
    def cell(self) -> nn.Module:
        """The cell of a one-layer, forward-only model (what recipes and the one-cell
        diagnosis act on); assigning it replaces that cell.

        Raises:
            AttributeError: the model has more than one cell (``hasattr(model, "cell")``
                is then False): use ``cells`` and ``reverse_cells`` (or
                :meth:`recurrent_cells`).
        """
        return self.cells[0] if self._one_cell() else self._no_single_cell()

    @cell.setter
    def cell(self, value: nn.Module) -> None:
        self._replace_cell(value)

    def _replace_cell(self, value: nn.Module) -> None:
        if not self._one_cell():
            self._no_single_cell()
        self.cells[0] = _cell_list("cell", value)[0]

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "cell":  # torch.nn.Module would register a module "cell" beside cells
            self._replace_cell(value)
            return
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        if name == "cell":  # the property refused: say why, not "has no attribute"
            self._no_single_cell()
        return super().__getattr__(name)

    def _one_cell(self) -> bool:
        return len(self.cells) == 1 and not len(self.reverse_cells)

    def _no_single_cell(self) -> Any:
        raise AttributeError(
            f"this model has {self.num_layers} layers"
            f"{', bidirectional' if self.bidirectional else ''}, no single cell: use "
            "model.cells, model.reverse_cells or model.recurrent_cells()"
        )

    @property
    def num_layers(self) -> int:
        """The number of recurrent layers, L."""
        return len(self.cells)

    @property
    def bidirectional(self) -> bool:
        """Whether every layer also runs a cell backward in time."""
        return len(self.reverse_cells) > 0

    @property
    def unrolls(self) -> list[Unroll]:
        """The ``(layer, direction)`` of each unroll of a forward pass, in the order the
        final state lists them (layer by layer, forward before backward)."""
        directions = 2 if self.bidirectional else 1
        return [(layer, d) for layer in range(self.num_layers) for d in range(directions)]

    def recurrent_cells(self) -> list[nn.Module]:
        """Every cell, in the order of :attr:`unrolls`."""
        return [self._cell_of(unit) for unit in self.unrolls]

    def forward(
        self,
        x: Tensor,
        state: State | Sequence[State] | None = None,
        taps: Taps | Mapping[Unroll, Taps] = (),
    ) -> tuple[Tensor, Any]:
        """Run the model over x (B, T, F); returns ``(y, final_state)``.

        Args:
            x: inputs (B, T, F).
            state: the initial state. One cell: its state. More (layers or
                directions): a sequence of their states in the order of
                :attr:`unrolls`. None: every cell's zero state.
            taps: see the hidden-state gradient of every step (see :mod:`bptt.taps`):
                a sequence of taps, run in every unroll (every layer and direction),
                or a mapping ``{(layer, direction): taps}`` for the unrolls it names.
                A tap that keeps a record of one unroll (one with ``begin``, such as
                :class:`bptt.taps.RecordNorms`) is given per unroll in the mapping.

        Returns:
            ``(y, final_state)``: y (B, O), or (B, T, O) for ``readout="all"``; the
            final state in the form of ``state``.
        """
        units = self.unrolls
        top_steps, finals = self._run_layers(
            x, self._starts(state, units), self._taps(taps, units), self.readout == "last"
        )
        final_state = finals[0] if len(finals) == 1 else tuple(finals)
        return self._read(top_steps), final_state

    def predict_with_hidden(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The prediction and every step's output of the top layer (B, T, H_top), from
        the zero state: what Hessian-free's structural damping penalises the change
        of."""
        units = self.unrolls
        hidden, _ = self._run_layers(x, [None] * len(units), dict.fromkeys(units, ()), False)
        if self.readout == "last" and self.bidirectional:
            # the steps the readout reads: forward at T-1, the backward cell's last at 0
            half = hidden.shape[-1] - contract(self.reverse_cells[-1]).hidden_size
            last = torch.cat([hidden[:, -1:, :half], hidden[:, :1, half:]], dim=-1)
            return self._read(last), hidden
        return self._read(hidden), hidden

    def _run_layers(
        self, x: Tensor, starts: list[Any], taps: dict[Unroll, tuple], last_only: bool
    ) -> tuple[Tensor, list[State]]:
        """Every layer and direction over x (B, T, F): the top layer's outputs (B, T, W),
        or with ``last_only`` only the steps a last-step readout reads (B, 1, W), and
        each unroll's final state in the order of :attr:`unrolls`."""
        units = self.unrolls
        finals: list[State] = []
        inputs = x
        for layer in range(self.num_layers):
            only_last = last_only and layer == self.num_layers - 1
            if layer > 0 and self.dropout > 0:
                inputs = _dropout(inputs, self.dropout, self.training)
            outputs = []
            for direction in range(2 if self.bidirectional else 1):
                unit = (layer, direction)
                sequence = inputs.flip(1) if direction else inputs
                out, final = unroll(
                    self._cell_of(unit),
                    sequence,
                    state=starts[units.index(unit)],
                    taps=taps[unit],
                    engine=self.engine,
                    last_only=only_last,  # the steps the readout reads
                )
                outputs.append(out.flip(1) if direction and not only_last else out)
                finals.append(final)
            inputs = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
        return inputs, finals

    def _read(self, outputs: Tensor) -> Tensor:
        """The readout of the top layer's outputs: (B, T or 1, W) -> (B, O) or (B, T, O).
        With ``readout="last"`` the top layer ran with ``last_only``: one step each."""
        if self.readout == "last":
            return self.head(outputs[:, -1])  # (B, O)
        return self.head(outputs)  # (B, T, O)

    def _cell_of(self, unit: Unroll) -> nn.Module:
        layer, direction = unit
        return self.reverse_cells[layer] if direction else self.cells[layer]

    def _width(self, layer: int) -> int:
        """The output width of a layer: its cells' hidden sizes together."""
        width = contract(self.cells[layer]).hidden_size
        if self.bidirectional:
            width += contract(self.reverse_cells[layer]).hidden_size
        return width

    def _starts(self, state: Any, units: list[Unroll]) -> list[Any]:
        if state is None:
            return [None] * len(units)
        if len(units) == 1:
            return [state]
        if not isinstance(state, (tuple, list)) or len(state) != len(units):
            raise ValueError(
                f"state must hold one state per unroll ({len(units)}: layer by layer, "
                f"forward before backward), got {_checks.shown(state)}"
            )
        return list(state)

    def _taps(self, taps: Any, units: list[Unroll]) -> dict[Unroll, tuple]:
        if isinstance(taps, Mapping):
            unknown = [key for key in taps if key not in units]
            if unknown:
                raise ValueError(
                    f"taps names unrolls this model has not: {unknown!r} (it has {units})"
                )
            return {unit: tuple(as_taps(taps.get(unit, ()))) for unit in units}
        shared = tuple(as_taps(taps))
        recording = [tap for tap in shared if callable(getattr(tap, "begin", None))]
        if recording and len(units) > 1:
            raise ValueError(
                f"{recording[0]!r} keeps a record of one unroll and this model runs "
                f"{len(units)}: give it to one, taps={{(layer, direction): [...]}}"
            )
        return dict.fromkeys(units, shared)


def _dropout(inputs: Tensor, p: float, training: bool) -> Tensor:
    """Dropout on a layer's inputs (B, T, W), the mask drawn in (B, T, W) order: the fast
    engine's outputs are a view of a (T, B, W) buffer, and dropout draws in memory
    order, so without the copy the two engines would drop different elements."""
    return nn.functional.dropout(inputs.contiguous(), p, training)


def _cell_list(name: str, cells: Any) -> list[nn.Module]:
    """One cell or a sequence of cells, checked to be modules with a hidden size."""
    found = [cells] if isinstance(cells, nn.Module) else cells
    if isinstance(found, (str, bytes)) or not isinstance(found, Sequence) or not found:
        raise TypeError(f"{name} must be a cell or a non-empty sequence of cells, got {cells!r}")
    for cell in found:
        if not isinstance(cell, nn.Module):
            raise TypeError(f"{name} must hold cells (torch.nn.Module), got {_checks.shown(cell)}")
        hidden_size = contract(cell).hidden_size
        if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
            raise TypeError(
                f"the cell needs a positive integer hidden_size attribute, "
                f"{type(cell).__name__} has {hidden_size!r}"
            )
    return list(found)


def _check_widths(forward_cells: list[nn.Module], reverse_cells: list[nn.Module]) -> None:
    """Each layer's cells read what the layer below writes (where they declare an
    ``input_size``; the user's own cells meet their check in :func:`bptt.unroll`)."""
    below: int | None = None
    for layer, cell in enumerate(forward_cells):
        twins = [cell, reverse_cells[layer]] if reverse_cells else [cell]
        for twin in twins:
            size = getattr(twin, "input_size", None)
            if below is not None and isinstance(size, int) and size != below:
                raise ValueError(
                    f"layer {layer}'s {type(twin).__name__} reads {size} features, but "
                    f"layer {layer - 1} writes {below}"
                )
        below = sum(contract(twin).hidden_size for twin in twins)


def _rename_single_cell(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """A state dict of a one-cell model from before layers (``cell.*``) loads as
    ``cells.0.*``."""
    old = prefix + "cell."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[prefix + "cells.0." + key[len(old) :]] = state_dict.pop(key)
