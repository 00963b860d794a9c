"""A cell unrolled over time with a linear readout."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from bptt.cells import State, contract
from bptt.engine import ENGINES, unroll
from bptt.taps import Delta

__all__ = ["READOUTS", "SequenceModel"]

READOUTS = ("last", "all")


class SequenceModel(nn.Module):
    """A recurrent cell followed by a linear readout of its output.

    Args:
        cell: a one-step cell (built-in or the user's own) with an integer
            ``hidden_size``.
        out_features: size of the readout, O.
        readout: ``"last"`` reads the output of the last step only, y of shape (B, O);
            ``"all"`` reads every step, y of shape (B, T, O).
        engine: passed to :func:`bptt.unroll`.

    Example:
        >>> import torch, bptt
        >>> model = SequenceModel(bptt.cells.LSTMCell(2, 16), out_features=1)
        >>> y, (h, c) = model(torch.randn(8, 50, 2))
        >>> y.shape
        torch.Size([8, 1])
    """

    def __init__(
        self,
        cell: nn.Module,
        out_features: int,
        readout: str = "last",
        engine: str = "auto",
    ) -> None:
        super().__init__()
        hidden_size = contract(cell).hidden_size
        if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
            raise TypeError(
                f"the cell needs a positive integer hidden_size attribute, "
                f"{type(cell).__name__} has {hidden_size!r}"
            )
        if isinstance(out_features, bool) or not isinstance(out_features, int) or out_features < 1:
            raise ValueError(f"out_features must be a positive integer, got {out_features!r}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self.cell = cell
        self.readout = readout
        self.engine = engine
        weight = next(cell.parameters(), None)
        factory: dict[str, Any] = (
            {} if weight is None else {"device": weight.device, "dtype": weight.dtype}
        )
        self.head = nn.Linear(hidden_size, out_features, **factory)

    def forward(
        self,
        x: Tensor,
        state: State | None = None,
        taps: Sequence[Callable[[int, Delta], Delta]] = (),
    ) -> tuple[Tensor, State]:
        """Run the model over x (B, T, F); returns ``(y, final_state)``.

        ``taps`` see the hidden-state gradient of every step (see :mod:`bptt.taps`).
        """
        last_only = self.readout == "last"  # an LRU then reads out that step alone
        outputs, state = unroll(
            self.cell, x, state=state, taps=taps, engine=self.engine, last_only=last_only
        )
        return self._read(outputs), state

    def predict_with_hidden(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The prediction and every step's hidden output (B, T, H), from the zero state:
        what Hessian-free's structural damping penalises the change of."""
        outputs, _ = unroll(self.cell, x, engine=self.engine)
        return self._read(outputs), outputs

    def _read(self, outputs: Tensor) -> Tensor:
        if self.readout == "last":
            return self.head(outputs[:, -1])  # (B, O)
        return self.head(outputs)  # (B, T, O)
