"""The Elman recurrent cell, parameter-compatible with ``torch.nn.RNNCell``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bptt import _checks
from bptt._kernels import ELMAN
from bptt.cells._params import TorchCompatibleCell

__all__ = ["RNNCell"]

_NONLINEARITIES = ("tanh", "relu")


class RNNCell(TorchCompatibleCell):
    r"""One step of an Elman RNN.

    .. math::
        h_t = f(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}), \quad f \in \{\tanh, \mathrm{ReLU}\}

    Parameter names, shapes and default initialisation (U(-1/sqrt(H), 1/sqrt(H))) are
    those of :class:`torch.nn.RNNCell`, so state dicts load both ways.

    Args:
        input_size: F, features per step.
        hidden_size: H, hidden units.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        bias: whether the cell has ``bias_ih`` and ``bias_hh``.
        device, dtype: where and in which precision the parameters live.

    Shapes:
        ``forward(x_t, h)``: x_t (B, F), h (B, H) or None (zeros) -> (B, H).

    Example:
        >>> cell = RNNCell(3, 5)
        >>> cell(torch.zeros(2, 3), None).shape
        torch.Size([2, 5])
    """

    gates = ("h",)  # blocks of weight_ih / weight_hh, in order
    kernel = ELMAN

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        nonlinearity: str = "tanh",
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(
                f"nonlinearity must be one of {_NONLINEARITIES}, got {_checks.shown(nonlinearity)}"
            )
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, x_t: Tensor, state: Tensor | None = None) -> Tensor:
        if state is None:
            state = x_t.new_zeros(x_t.shape[0], self.hidden_size)
        pre = nn.functional.linear(x_t, self.weight_ih, self.bias_ih) + nn.functional.linear(
            state, self.weight_hh, self.bias_hh
        )
        return torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)

    def activations(self, x_t: Tensor, state: Tensor | None = None) -> dict[str, Tensor]:
        """The step's nonlinearity's output (B, H): ``tanh``, or ``relu`` for a ReLU
        cell (a unit at exactly 0 passes no gradient)."""
        return {self.nonlinearity: self(x_t, state)}

    @property
    def activation_kinds(self) -> dict[str, str]:
        """The kind of each activation :meth:`activations` returns."""
        return {self.nonlinearity: self.nonlinearity}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nonlinearity={self.nonlinearity!r}"
