"""An LSTM cell with a projection, as ``torch.nn.LSTM(..., proj_size=P)`` computes each
layer: the probe's copy of such a layer (bptt's :class:`bptt.cells.LSTMCell` has no
projection). Private to the diagnosis."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from bptt.cells import RecurrentCell, lstm_update

__all__ = ["ProjectedLSTMCell", "projected_copy"]


class ProjectedLSTMCell(RecurrentCell):
    r"""One step of an LSTM whose output is projected to P < H units; the state is
    ``(h, c)``, h (B, P) and c (B, H).

    .. math::

        (i, f, g, o) = \sigma, \sigma, \tanh, \sigma(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1}
        + b_{hh}), \quad c_t = f c_{t-1} + i g, \quad h_t = W_{hr} (o \tanh c_t)

    with torch's names and shapes: ``weight_ih`` (4H, F), ``weight_hh`` (4H, P),
    ``weight_hr`` (P, H), ``bias_ih`` and ``bias_hh`` (4H,). ``hidden_size`` is P, the
    width of h (what the next step and a readout read); ``cell_size`` is H.
    """

    gates = ("i", "f", "g", "o")
    activation_kinds: ClassVar[dict[str, str]] = {
        "i": "sigmoid",
        "f": "sigmoid",
        "g": "tanh",
        "o": "sigmoid",
        "tanh_c": "tanh",
    }
    recurrent_parameters = ("weight_hh", "weight_hr")

    def __init__(
        self,
        input_size: int,
        cell_size: int,
        proj_size: int,
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not 0 < proj_size < cell_size:
            raise ValueError(
                f"proj_size must be in [1, cell_size), got {proj_size} with cell_size={cell_size}"
            )
        self.input_size, self.hidden_size, self.cell_size = input_size, proj_size, cell_size
        self.bias = bias
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        rows = 4 * cell_size
        self.weight_ih = nn.Parameter(torch.zeros(rows, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.zeros(rows, proj_size, **kw))
        self.weight_hr = nn.Parameter(torch.zeros(proj_size, cell_size, **kw))
        if bias:
            self.bias_ih = nn.Parameter(torch.zeros(rows, **kw))
            self.bias_hh = nn.Parameter(torch.zeros(rows, **kw))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)

    def initial_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Zeros: h (batch_size, P), c (batch_size, H)."""
        return (
            torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype),
            torch.zeros(batch_size, self.cell_size, device=device, dtype=dtype),
        )

    def forward(self, x_t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return self._step(x_t, state)[0]

    def activations(self, x_t: Tensor, state: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        """The step's nonlinearities' outputs, each (B, H), as :meth:`forward` computes
        them (kinds in :attr:`activation_kinds`)."""
        return self._step(x_t, state)[1]

    def recurrent_blocks(self) -> Tensor:
        """Each gate's map from h_{t-1} back to h's space through the projection,
        W_hr W_hh^gate: (4, P, P) (what ``weight_hh``'s blocks are to a plain LSTM)."""
        blocks = self.weight_hh.view(4, self.cell_size, self.hidden_size)
        return self.weight_hr @ blocks

    def _step(self, x_t: Tensor, state: tuple[Tensor, Tensor]):
        h, c = state
        pre = nn.functional.linear(x_t, self.weight_ih, self.bias_ih) + nn.functional.linear(
            h, self.weight_hh, self.bias_hh
        )  # (B, 4H)
        c, activations = lstm_update(pre, c)  # c (B, H)
        h = nn.functional.linear(activations["o"] * activations["tanh_c"], self.weight_hr)
        return (h, c), activations  # h (B, P)


def projected_copy(source: nn.LSTM, suffix: str) -> ProjectedLSTMCell:
    """A :class:`ProjectedLSTMCell` holding a copy of one layer and direction of a
    ``torch.nn.LSTM`` with ``proj_size`` (``suffix``: ``"_l1_reverse"``)."""
    weight = getattr(source, f"weight_ih{suffix}")
    cell = ProjectedLSTMCell(
        weight.shape[1],  # a layer above the first reads the one below
        source.hidden_size,
        source.proj_size,
        bias=source.bias,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "weight_hr", "bias_ih", "bias_hh"):
            theirs = getattr(source, f"{name}{suffix}", None)
            if theirs is not None:
                getattr(cell, name).copy_(theirs)
    return cell
