"""The LSTM cell, parameter-compatible with ``torch.nn.LSTMCell``."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from bptt._kernels import LSTM
from bptt.cells._params import TorchCompatibleCell

__all__ = ["LSTMCell", "lstm_update"]


class LSTMCell(TorchCompatibleCell):
    r"""One step of an LSTM; the state is the tuple ``(h, c)``.

    .. math::
        a_t &= W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh} \\
        (i, f, g, o) &= (\sigma, \sigma, \tanh, \sigma)(a_t) \\
        c_t &= f \odot c_{t-1} + i \odot g, \qquad h_t = o \odot \tanh(c_t)

    The gates are stacked in the order (i, f, g, o) along the first dimension of the
    weights, exactly as in :class:`torch.nn.LSTMCell`, whose state dicts load both ways.

    Args:
        input_size: F, features per step.
        hidden_size: H, hidden units.
        bias: whether the cell has ``bias_ih`` and ``bias_hh`` (each (4H,)).
        device, dtype: where and in which precision the parameters live.

    Shapes:
        ``forward(x_t, (h, c))``: x_t (B, F), h and c (B, H), or None -> ``(h, c)``.

    Example:
        >>> h, c = LSTMCell(3, 5)(torch.zeros(2, 3), None)
        >>> h.shape, c.shape
        (torch.Size([2, 5]), torch.Size([2, 5]))
    """

    gates = ("i", "f", "g", "o")  # blocks of weight_ih / weight_hh, in order
    kernel = LSTM

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

    def initial_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Zeros for ``(h, c)``, each (batch_size, H)."""
        zeros = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        return zeros, zeros.clone()

    def forward(
        self, x_t: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        return self._step(x_t, state)[0]

    def activations(
        self, x_t: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """The step's nonlinearities' outputs, each (B, H): gates ``i``, ``f``, ``o``
        (sigmoid), ``g`` and ``tanh_c`` (tanh), computed by :meth:`forward`'s own
        arithmetic (kinds in :attr:`activation_kinds`)."""
        return self._step(x_t, state)[1]

    activation_kinds: ClassVar[dict[str, str]] = {
        "i": "sigmoid",
        "f": "sigmoid",
        "g": "tanh",
        "o": "sigmoid",
        "tanh_c": "tanh",
    }

    def _step(self, x_t: Tensor, state: tuple[Tensor, Tensor] | None):
        if state is None:
            state = self.initial_state(x_t.shape[0], device=x_t.device, dtype=x_t.dtype)
        h, c = state
        pre = nn.functional.linear(x_t, self.weight_ih, self.bias_ih) + nn.functional.linear(
            h, self.weight_hh, self.bias_hh
        )  # (B, 4H)
        c, activations = lstm_update(pre, c)
        return (activations["o"] * activations["tanh_c"], c), activations


def lstm_update(pre: Tensor, c: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """The LSTM's step from its pre-activations (B, 4H), blocks (i, f, g, o) as torch
    orders them, and c_{t-1} (B, H): c_t and the nonlinearities' outputs, each (B, H)
    (h_t = o * tanh_c, projected or not by the caller)."""
    i, f, g, o = pre.chunk(4, dim=1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    return c, {"i": i, "f": f, "g": g, "o": o, "tanh_c": torch.tanh(c)}
