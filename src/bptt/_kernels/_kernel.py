"""The kernel contract: what a cell class declares and what the engines call.

A kernel runs a whole sequence of a cell's steps with a hand-written backward, the
hidden-gradient taps inside it (the contract of :mod:`bptt.taps`). A cell class
declares it in its body::

    class RNNCell(TorchCompatibleCell):
        kernel = ELMAN

and the engines read ``type(cell).kernel``. The declaration belongs to the class that
makes it, not to its subclasses: a subclass may change what a step computes, so
``Subclass.kernel`` is None until the subclass declares one itself
(``kernel = RNNCell.kernel`` opts in to its parent's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from bptt._kernels import _triton
from bptt._kernels._common import Pass
from bptt._kernels._graphs import CAPTURES, graph_refusal
from bptt.taps import Tap

State = Tensor | tuple[Tensor, ...]
Taps = tuple[Tap, ...]


class Kernel:
    """A cell class's fast engine, declared on the class (see the module's docstring).

    ``run`` is one run: x (B, T, F) from ``state`` (B, H) or a tuple of such, ``taps``
    the run's taps; it returns ``(outputs, final_state)``, outputs (B, T, H), or
    (B, 1, H) with ``last_only``; or None where it does not apply to these arguments
    (the engine then runs the cell step by step). A kernel whose :attr:`stacks` is
    True also has ``run_stacked``: K cells of its class at once, every per-run tensor
    with a leading K.
    """

    stacks = False  # whether run_stacked runs K cells at once

    def __init__(self) -> None:
        self._classes: tuple[type, ...] = ()

    def __set_name__(self, owner: type, name: str) -> None:
        self._classes = (*self._classes, owner)  # declared in this class's body

    def __get__(self, cell: object, owner: type | None = None) -> Kernel | None:
        return self if (owner or type(cell)) in self._classes else None

    def options(self, cell: Any) -> tuple:
        """The cell's settings the kernel takes besides tensors (the nonlinearity):
        cells run stacked must agree on them."""
        return ()

    def run(
        self, cell: Any, x: Tensor, state: State, taps: Taps, last_only: bool
    ) -> tuple[Tensor, State] | None:
        raise NotImplementedError

    def run_stacked(
        self, cells: Sequence[Any], x: Tensor, state: State, taps: tuple[Taps, ...]
    ) -> tuple[Tensor, State]:
        """K cells, each over its own inputs: x (K, B, T, F), state (K, B, H) or a tuple
        of such, ``taps[k]`` run k's taps -> (outputs (K, B, T, H), final state)."""
        raise TypeError(f"{type(self).__name__} runs one cell at a time")


class RecurrenceKernel(Kernel):
    """A kernel that is one autograd Function over the (T, K, B, ·) layout, for one run
    (K = 1, given without the run dimension) and for K stacked runs alike.

    The Function is called as ``function.apply(x, *state, run, *options, *parameters)``
    and returns ``(outputs, *final_state)``; :meth:`parameters` names the cell's
    tensors it takes (None for an absent bias). :attr:`triton` names the kernel's
    Triton version (:mod:`bptt._kernels._triton`), None where it has none; a pass runs
    it where its :class:`Pass` says ``backend="triton"``.
    """

    stacks = True
    function: type[torch.autograd.Function]
    triton: str | None = None

    def parameters(self, cell: Any) -> tuple[Tensor | None, ...]:
        raise NotImplementedError

    def triton_refusal(self, x: Tensor, state: State, taps: tuple[Taps, ...]) -> str | None:
        """Why the Triton version cannot run this pass (None: it can): x (B, T, F) or
        (K, B, T, F), ``taps`` each run's; Triton is not imported."""
        from bptt._kernels import _triton

        first = state[0] if isinstance(state, tuple) else state
        return _triton.refusal(self.triton, x, first.shape[-1], taps)

    def function_for(self, x: Tensor, run: Pass) -> type[torch.autograd.Function]:
        """The Function that runs this pass: :attr:`function`, the loop over time, or
        its Triton version where ``run.backend`` is ``"triton"`` (the caller checked
        :meth:`triton_refusal`). A Function with the same arguments, layout and
        :class:`Pass`."""
        if run.backend == "triton":
            if self.triton is None:
                raise ValueError(f"{type(self).__name__} has no Triton version")
            return _triton.function(self.triton)
        return self.function

    def run(
        self,
        cell: Any,
        x: Tensor,
        state: State,
        taps: Taps,
        last_only: bool,
        backend: str = "loop",
    ) -> tuple[Tensor, State]:
        run = Pass((taps,), torch.is_grad_enabled(), backend=backend)
        outputs, final = self._apply(x, state, run, self.options(cell), self.parameters(cell))
        return (outputs[:, -1:] if last_only else outputs), final

    def run_stacked(
        self,
        cells: Sequence[Any],
        x: Tensor,
        state: State,
        taps: tuple[Taps, ...],
        backend: str = "loop",
    ) -> tuple[Tensor, State]:
        run = Pass(taps, torch.is_grad_enabled(), stacked=True, backend=backend)
        # each cell's tensors stacked with autograd, so each cell's .grad gets its own
        each = zip(*(self.parameters(cell) for cell in cells), strict=True)
        stacked = tuple(None if p[0] is None else torch.stack(p) for p in each)
        return self._apply(x, state, run, self.options(cells[0]), stacked)

    def _apply(self, x: Tensor, state: State, run: Pass, options: tuple, parameters: tuple):
        parts = state if isinstance(state, tuple) else (state,)
        function = self.function_for(x, run)
        live = (x, *parts, *parameters)
        results = None
        if graph_refusal(x, run, live) is None:  # on CUDA: captured once, then replayed
            results = CAPTURES.run(function, live, 1 + len(parts), options, run)
        if results is None:
            results = function.apply(x, *parts, run, *options, *parameters)
        outputs, *final = results
        return outputs, (tuple(final) if isinstance(state, tuple) else final[0])
