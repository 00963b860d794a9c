"""Choosing and calling the fast engine of a cell: the kernel its class declares."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from bptt._kernels import Kernel, RecurrenceKernel
from bptt._torch_compat import functorch_transforms_active
from bptt.cells import RecurrentCell, State

__all__ = [
    "declared_kernel",
    "fast_engine_for",
    "has_fast_engine",
    "has_triton_kernel",
    "run_fast",
]


def declared_kernel(cell: nn.Module) -> Kernel | None:
    """The kernel the cell's own class declares (:attr:`RecurrentCell.kernel`; a
    subclass that does not declare one has none), None for any other module."""
    return type(cell).kernel if isinstance(cell, RecurrentCell) else None


def has_fast_engine(cell: nn.Module) -> bool:
    """Whether ``engine="fast"`` can run this cell: its exact class declares a kernel
    (RNN, LSTM, GRU, orthogonal RNN, LRU, deep LRU, minGRU, minLSTM; a subclass
    only where it declares one itself).

    >>> import bptt
    >>> has_fast_engine(bptt.cells.GRUCell(1, 2)), has_fast_engine(bptt.cells.SkipRNNCell(1, 2))
    (True, False)
    """
    return declared_kernel(cell) is not None


def has_triton_kernel(cell: nn.Module) -> bool:
    """Whether ``engine="triton"`` has kernels for this cell's class (the Elman RNN's:
    tanh, ReLU, the orthogonal RNN's modReLU; the LSTM's; the GRU's); whether a call runs
    there also depends on its device, dtype, size and taps
    (:func:`bptt.engine.triton_refusal`).

    >>> import bptt
    >>> cells = bptt.cells.LSTMCell(1, 2), bptt.cells.GRUCell(1, 2), bptt.cells.MinGRUCell(1, 2)
    >>> [has_triton_kernel(cell) for cell in cells]
    [True, True, False]
    """
    kernel = declared_kernel(cell)
    return isinstance(kernel, RecurrenceKernel) and kernel.triton is not None


def fast_engine_for(cell: nn.Module, x: Tensor) -> Kernel | None:
    """The fast engine for this cell and input, or None where only the generic one applies.

    It applies to the classes that declare a kernel (a subclass may change
    ``forward``: it has none unless it declares one), with x in the parameters' dtype
    and device, outside torch.func transforms (the hand-written backward has no
    forward-mode rule).
    """
    kernel = declared_kernel(cell)
    if kernel is None or functorch_transforms_active():
        return None
    weight = next(cell.parameters())
    if x.dtype != weight.dtype or x.device != weight.device:
        return None
    return kernel


def run_fast(
    kernel: Kernel, cell: nn.Module, x: Tensor, state: State, taps: Sequence, last_only: bool
) -> tuple[Tensor, State] | None:
    """Call a fast engine; with ``last_only`` the outputs are the last step's (B, 1, H)
    (computed alone where the kernel can: the LRUs). None: the kernel does not apply
    to these taps, run the cell step by step."""
    return kernel.run(cell, x, state, tuple(taps), bool(last_only))
