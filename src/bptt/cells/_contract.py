"""The cell contract, stated once: what an engine may ask of a one-step cell.

A cell is an ``nn.Module`` computing one step, ``forward(x_t, state) -> state``, with
``input_size`` F and ``hidden_size`` H. Its state is one tensor (B, H) or a tuple of
tensors (B, ...) (LSTM: ``(h, c)``); it starts from :meth:`RecurrentCell.initial_state`
and a readout sees :meth:`RecurrentCell.output` of it. The built-in cells subclass
:class:`RecurrentCell`; :func:`contract` gives any other cell (``torch.nn.RNNCell``,
``GRUCell``, ``LSTMCell``, or a module of the user's with an integer ``hidden_size`` or
an ``initial_state`` method) the same two methods, so the engines ask the contract and
never probe a cell's attributes. A module with only ``forward(x_t, state)`` runs from a
state the caller gives: the contract needs ``hidden_size`` or ``initial_state`` only to
make the first state itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Protocol, cast, runtime_checkable

import torch
from torch import Tensor, nn

from bptt._checks import shown
from bptt._kernels import Kernel

__all__ = [
    "CellContract",
    "RecurrentCell",
    "State",
    "as_tuple",
    "check_input",
    "check_state",
    "contract",
    "has_initial_state",
    "initial_state",
    "state_output",
]

State = Tensor | tuple[Tensor, ...]


@runtime_checkable
class CellContract(Protocol):
    """What an engine asks of a cell, besides calling it."""

    hidden_size: int

    def initial_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> State:
        """The state a sequence starts from: zeros of shape (batch_size, H) or a tuple."""

    def output(self, state: State) -> Tensor:
        """The tensor (B, H) of a state that a readout sees."""

    def sequence_step(self) -> Callable[[Tensor, State], State]:
        """The step to call at every time step of one sequence (work that does not
        change along it, such as a parametrised weight, done once)."""


class RecurrentCell(nn.Module):
    """The base of every built-in cell: one step, its zero state and its output.

    Subclasses set ``input_size`` and ``hidden_size`` and define ``forward``; a cell
    whose state is a tuple overrides :meth:`initial_state` (and :meth:`output` when
    the readout should see something other than the tuple's first element).
    ``recurrent_parameters`` names the parameters of the recurrence (``weight_hh``; the
    orthogonal cell's ``skew``; the LRU's eigenvalues, gamma and B, as the paper's code
    groups them), which a training run may give their own learning rate.
    A cell whose single state tensor is wider than its output (the LRU's real and
    imaginary parts) says so with :attr:`state_width`.

    ``kernel`` is the fast engine a class declares in its own body (``kernel = ELMAN``):
    a hand-written forward and backward over the whole sequence, read by
    :func:`bptt.unroll` and :func:`bptt.engine.unroll_stacked`. A subclass does not
    inherit it (it may change what a step computes: its ``kernel`` is None); one that
    computes the same step opts in with ``kernel = ParentCell.kernel``.
    """

    input_size: int
    hidden_size: int
    recurrent_parameters: tuple[str, ...] = ("weight_hh",)  # what a separate rate applies to
    kernel: ClassVar[Kernel | None] = None  # the fast engine, declared by each class itself

    @property
    def state_width(self) -> int:
        """The width of a single-tensor state: H, unless a subclass says otherwise."""
        return self.hidden_size

    def initial_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> State:
        """Zeros (batch_size, :attr:`state_width`)."""
        return torch.zeros(batch_size, self.state_width, device=device, dtype=dtype)

    def output(self, state: State) -> Tensor:
        """The state itself, or the first element of a tuple state: (B, H)."""
        return state_output(state)

    def sequence_step(self) -> Callable[[Tensor, State], State]:
        """The step for one sequence: the cell itself, unless a subclass computes
        something once per sequence (:class:`OrthogonalRNNCell`: its matrix exponential)."""
        return self


class _Adapted:
    """The contract of a cell that does not state all of it (torch's cells, a user's
    module): its own ``output`` and ``sequence_step`` where it has them. ``start``
    None: the cell states no initial state, and only asking for one is an error."""

    def __init__(self, cell: nn.Module, start: Callable[..., State] | None) -> None:
        self.cell, self._start = cell, start
        # Unchecked here: a cell with its own initial_state may lack it (None); the
        # model checks it where it needs a width.
        self.hidden_size = cast(int, getattr(cell, "hidden_size", None))
        own_output = getattr(cell, "output", None)
        self._output = own_output if callable(own_output) else state_output
        own_step = getattr(cell, "sequence_step", None)
        self._step = own_step if callable(own_step) else (lambda: cell)

    @property
    def starts(self) -> bool:
        """Whether the cell has an initial state of its own."""
        return self._start is not None

    def initial_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        if self._start is None:
            raise TypeError(
                f"{type(self.cell).__name__} has no initial_state(batch_size, *, device, "
                "dtype) method and no positive integer hidden_size attribute; give it one "
                "of them, subclass bptt.cells.RecurrentCell, or pass state="
            )
        return self._start(batch_size, device=device, dtype=dtype)

    def output(self, state: State) -> Tensor:
        return self._output(state)

    def sequence_step(self) -> Callable[[Tensor, State], State]:
        return self._step()


def contract(cell: nn.Module) -> CellContract:
    """The contract of any cell, decided here once for the engines.

    The cell itself when it states one (a :class:`RecurrentCell`, or any module with
    ``hidden_size``, ``initial_state`` and ``output``). Otherwise an adapter: a cell's
    own ``initial_state(batch_size, *, device, dtype)`` if it has one; for
    ``torch.nn.LSTMCell`` a zero ``(h, c)``; for any other module with a positive
    integer ``hidden_size``, zeros (B, H). The output is then the state, or its first
    element.

    A module with neither (a plain ``forward(x_t, h) -> h``) has a contract too: it runs
    from a state the caller gives (``state=``); only asking it for an initial state
    is an error (:func:`has_initial_state` says which cells can start alone).

    Raises:
        TypeError: from the adapter's ``initial_state``, when it is called for a cell
            with no ``initial_state`` and no positive integer ``hidden_size``.
    """
    if isinstance(cell, CellContract):
        return cell
    own = getattr(cell, "initial_state", None)
    if callable(own):
        return _Adapted(cell, own)
    hidden_size = getattr(cell, "hidden_size", None)
    if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
        return _Adapted(cell, None)  # runs from a given state only

    def zeros(batch_size: int, *, device=None, dtype=None) -> State:
        zero = torch.zeros(batch_size, hidden_size, device=device, dtype=dtype)
        return (zero, zero.clone()) if isinstance(cell, nn.LSTMCell) else zero

    return _Adapted(cell, zeros)


def has_initial_state(cell: nn.Module) -> bool:
    """Whether :func:`contract` can start ``cell`` from an initial state of its own
    (else the caller must give the state)."""
    stated = contract(cell)
    return not isinstance(stated, _Adapted) or stated.starts


def initial_state(
    cell: nn.Module,
    batch_size: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> State:
    """The state any cell starts from: ``contract(cell).initial_state(...)``."""
    return contract(cell).initial_state(batch_size, device=device, dtype=dtype)


def state_output(state: State) -> Tensor:
    """The tensor of a state that a readout sees by default: the state, or its first
    element (B, H)."""
    return state[0] if isinstance(state, tuple) else state


def as_tuple(state: State) -> tuple[Tensor, ...]:
    """A state as a tuple of tensors (a lone tensor becomes a 1-tuple)."""
    return state if isinstance(state, tuple) else (state,)


def check_input(cell: nn.Module, x: Tensor, name: str = "x") -> None:
    """Inputs (B, T, F) must fit a :class:`RecurrentCell`: F its ``input_size``, the
    dtype its parameters'. Another cell's sizes and casts are its own affair.

    Raises:
        ValueError: they do not, with ``name`` (the caller's name for the inputs).
    """
    if not isinstance(cell, RecurrentCell):  # a user cell may cast; its sizes are its own
        return
    weight = next(cell.parameters(), None)
    if weight is not None and x.dtype != weight.dtype:
        raise ValueError(
            f"{name} has dtype {x.dtype} but the cell's parameters are {weight.dtype}: "
            f"convert one of them ({name}.to({weight.dtype}) or cell.to({x.dtype}))"
        )
    if x.shape[2] != cell.input_size:
        raise ValueError(
            f"{name} has {x.shape[2]} features per step but the cell expects input_size="
            f"{cell.input_size}: expected (B, T, {cell.input_size}), got {tuple(x.shape)}"
        )


def check_state(cell: nn.Module, state: object, x: Tensor) -> None:
    """A given state must have the cell's structure, the batch of x and x's dtype.

    For a :class:`RecurrentCell` the full shape is known (its zero state); for another
    cell only the batch size and the dtype are checked.

    Raises:
        TypeError: ``state`` is not a tensor or a tuple of tensors.
        ValueError: its structure, shape or dtype does not fit.
    """
    given = state if isinstance(state, tuple) else (state,)
    parts: list[Tensor] = []
    for part in given:
        if not isinstance(part, Tensor):
            raise TypeError(f"state must be a tensor or a tuple of tensors, got {shown(state)}")
        parts.append(part)
    for part in parts:
        if part.dim() < 1 or part.shape[0] != x.shape[0]:
            raise ValueError(
                f"state has shape {tuple(part.shape)} but x holds {x.shape[0]} samples: "
                f"expected ({x.shape[0]}, H)"
            )
        if part.dtype != x.dtype:
            raise ValueError(f"state has dtype {part.dtype} but x has dtype {x.dtype}")
    if not isinstance(cell, RecurrentCell):
        return
    expected = cell.initial_state(x.shape[0], device="meta", dtype=x.dtype)
    want = as_tuple(expected)
    if isinstance(state, tuple) != isinstance(expected, tuple) or len(parts) != len(want):
        shapes = ", ".join(f"({x.shape[0]}, {cell.hidden_size})" for _ in want)
        raise ValueError(
            f"{type(cell).__name__} expects a state of {len(want)} tensor(s) {shapes}"
            f"{' as a tuple' if isinstance(expected, tuple) else ''}, got "
            f"{_describe(cast(State, state))}"
        )
    for part, ref in zip(parts, want, strict=True):
        if part.shape != ref.shape:
            raise ValueError(
                f"state has shape {tuple(part.shape)}; {type(cell).__name__} expects "
                f"{tuple(ref.shape)}"
            )


def _describe(state: State) -> str:
    if isinstance(state, tuple):
        return "(" + ", ".join(str(tuple(p.shape)) for p in state) + ")"
    return f"one tensor {tuple(state.shape)}"
