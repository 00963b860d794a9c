"""The GRU cell, parameter-compatible with ``torch.nn.GRUCell``."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from bptt._kernels import GRU
from bptt.cells._params import TorchCompatibleCell

__all__ = ["GRUCell"]


class GRUCell(TorchCompatibleCell):
    r"""One step of a GRU (the formulation of :class:`torch.nn.GRUCell`).

    .. math::
        r &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
        z &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
        n &= \tanh(W_{in} x_t + b_{in} + r \odot (W_{hn} h_{t-1} + b_{hn})) \\
        h_t &= (1 - z) \odot n + z \odot h_{t-1}

    Gates are stacked (r, z, n) along the first dimension of the weights.

    Args:
        input_size: F, features per step.
        hidden_size: H, hidden units.
        bias: whether the cell has ``bias_ih`` and ``bias_hh`` (each (3H,)).
        device, dtype: where and in which precision the parameters live.

    Shapes:
        ``forward(x_t, h)``: x_t (B, F), h (B, H) or None -> (B, H).

    Example:
        >>> GRUCell(3, 5)(torch.zeros(2, 3), None).shape
        torch.Size([2, 5])
    """

    gates = ("r", "z", "n")  # blocks of weight_ih / weight_hh, in order
    kernel = GRU

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, device, dtype)

    def forward(self, x_t: Tensor, state: Tensor | None = None) -> Tensor:
        return self._step(x_t, state)[0]

    def activations(self, x_t: Tensor, state: Tensor | None = None) -> dict[str, Tensor]:
        """The step's nonlinearities' outputs, each (B, H): ``r``, ``z`` (sigmoid) and
        ``n`` (tanh), computed by :meth:`forward`'s own arithmetic."""
        return self._step(x_t, state)[1]

    activation_kinds: ClassVar[dict[str, str]] = {"r": "sigmoid", "z": "sigmoid", "n": "tanh"}

    def _step(self, x_t: Tensor, state: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        if state is None:
            state = x_t.new_zeros(x_t.shape[0], self.hidden_size)
        xr, xz, xn = nn.functional.linear(x_t, self.weight_ih, self.bias_ih).chunk(3, dim=1)
        hr, hz, hn = nn.functional.linear(state, self.weight_hh, self.bias_hh).chunk(3, dim=1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return n + z * (state - n), {"r": r, "z": z, "n": n}
