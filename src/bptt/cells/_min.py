r"""The minimal GRU and LSTM of Feng et al. 2024, "Were RNNs All We Needed?"
(arXiv 2410.01201), in the log-space form the paper trains.

Their gates see the input alone, never the state, so each step is linear in the state
with a coefficient and a drive that depend on x_t only,

.. math::
    h_t = a_t \odot h_{t-1} + b_t,

    \text{minGRU:}\quad z_t = \sigma(W_z x_t + b_z),\ \tilde h_t = g(W_h x_t + b_h),\
    a_t = 1 - z_t,\ b_t = z_t \odot \tilde h_t

    \text{minLSTM:}\quad f_t = \sigma(W_f x_t + b_f),\ i_t = \sigma(W_i x_t + b_i),\
    a_t = \frac{f_t}{f_t + i_t},\ b_t = \frac{i_t}{f_t + i_t} \odot g(W_h x_t + b_h)

with g(x) = x + 1/2 for x >= 0 and sigmoid(x) below (positive and continuous, the
paper's appendix B.3): a_t is in (0, 1) and b_t > 0, so the whole sequence is one
scan over time, which :func:`bptt.unroll` runs in log space (log a_t, log b_t computed
without ever forming a_t or b_t: softplus and ``log_g``), as the paper's
``parallel_scan_log`` does; with taps, the taps run inside the scan's backward
(dL/dh_{t-1} = a_t dL/dh_t). ``forward`` is the plain (not log) step of the
paper's sequential mode, for inference step by step and ``engine="generic"``.

The state is h itself (B, H), any real values for the step. The paper's log-space
mode starts from log_g(h_0) (its h_0 argument passed through g); with its h_0 = 0 that
is h = g(0) = 1/2, the state :meth:`initial_state` gives. The scan carries the start
in plain space, so a state given with ``state=`` may have any sign.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from bptt import _checks
from bptt._kernels import GATED_LOG_SCAN
from bptt.cells._contract import RecurrentCell

__all__ = ["MinGRUCell", "MinLSTMCell"]


def _g(x: Tensor) -> Tensor:
    """The paper's g: x + 1/2 for x >= 0, sigmoid(x) below (positive, continuous)."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def _log_g(x: Tensor) -> Tensor:
    """log g(x) without forming g: log(x + 1/2) for x >= 0, -softplus(-x) below."""
    return torch.where(x >= 0, torch.log(functional.relu(x) + 0.5), -functional.softplus(-x))


class _MinCell(RecurrentCell):
    """The shared parts: one input projection (G H, F) with G stacked blocks, the state
    h (B, H) starting at g(0) = 1/2, and no weight acting on the state."""

    gates: tuple[str, ...] = ()  # the blocks of weight_ih, in order
    # no weight acts on h: the recurrence's coefficient is a function of weight_ih
    recurrent_parameters: tuple[str, ...] = ()

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        input_size = _checks.integer("input_size", input_size, 1)
        hidden_size = _checks.integer("hidden_size", hidden_size, 1)
        bias = _checks.flag("bias", bias)
        rows = len(self.gates) * hidden_size
        _checks.fits_in_memory(
            f"input_size={input_size} and hidden_size={hidden_size}",
            rows * (input_size + 1),
            dtype,
            device,
        )
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size, **kw))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(rows, **kw))
        else:
            self.register_parameter("bias_ih", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every parameter from U(-1/sqrt(F), 1/sqrt(F)): ``torch.nn.Linear``'s default,
        the layers of the paper's code."""
        bound = 1.0 / math.sqrt(self.input_size)
        for p in self.parameters(recurse=False):
            nn.init.uniform_(p, -bound, bound)

    def initial_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """g(0) = 1/2 everywhere, (batch_size, H): the paper's start log_g(h_0), h_0 = 0."""
        return torch.full((batch_size, self.hidden_size), 0.5, device=device, dtype=dtype)

    def _blocks(self, x: Tensor) -> tuple[Tensor, ...]:
        """The pre-activations of every block, each (..., H), from x (..., F)."""
        return functional.linear(x, self.weight_ih, self.bias_ih).chunk(len(self.gates), -1)

    def coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(a, b), each (..., H), of h_t = a * h_{t-1} + b for inputs x (..., F)."""
        raise NotImplementedError  # each cell defines its own

    def log_coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(log a, log b), each (..., H), for inputs x (..., F): what the scan runs on."""
        raise NotImplementedError  # each cell defines its own

    def forward(self, x_t: Tensor, state: Tensor) -> Tensor:
        """One step, the paper's sequential mode: x_t (B, F), state h (B, H) -> (B, H)."""
        a, b = self.coefficients(x_t)
        return torch.addcmul(b, a, state)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class MinGRUCell(_MinCell):
    r"""One step of a minimal GRU (Feng et al. 2024, log-space form):

    .. math::
        z_t = \sigma(W_z x_t + b_z), \quad
        h_t = (1 - z_t) \odot h_{t-1} + z_t \odot g(W_h x_t + b_h)

    The update gate sees only the input, so :func:`bptt.unroll` runs a whole sequence
    by a parallel scan in log space (taps in its backward); this ``forward`` is one
    step of it. The state starts at g(0) = 1/2.

    Args:
        input_size: F, features per step.
        hidden_size: H, hidden units.
        bias: whether the projection has ``bias_ih`` (2H,).
        device, dtype: where and in which precision the parameters live.

    Attributes:
        weight_ih: (2H, F), the blocks (z, h) stacked: W_z, then W_h.
        bias_ih: (2H,) or None, in the same order.

    Shapes:
        ``forward(x_t, h)``: x_t (B, F), h (B, H) -> (B, H).

    References:
        Feng, Tung, Ahmed, Bengio, Hajimirsadeghi (2024), "Were RNNs All We Needed?",
        arXiv 2410.01201, section 3.1 and appendix B.3.

    Example:
        >>> import bptt
        >>> out, h = bptt.unroll(MinGRUCell(3, 5), torch.randn(2, 7, 3))
        >>> out.shape, h.shape
        (torch.Size([2, 7, 5]), torch.Size([2, 5]))
    """

    gates = ("z", "h")
    kernel = GATED_LOG_SCAN

    def coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """a = 1 - z = sigmoid(-k), b = z g(W_h x + b_h), each (..., H), x (..., F)."""
        k, pre = self._blocks(x)
        return torch.sigmoid(-k), torch.sigmoid(k) * _g(pre)

    def log_coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """log a = -softplus(k), log b = -softplus(-k) + log_g(W_h x + b_h), (..., H)."""
        k, pre = self._blocks(x)
        return -functional.softplus(k), _log_g(pre) - functional.softplus(-k)


class MinLSTMCell(_MinCell):
    r"""One step of a minimal LSTM (Feng et al. 2024, log-space form, with the
    normalised gates that make it independent of the time scale):

    .. math::
        f_t = \sigma(W_f x_t + b_f), \quad i_t = \sigma(W_i x_t + b_i), \quad
        h_t = \frac{f_t \odot h_{t-1} + i_t \odot g(W_h x_t + b_h)}{f_t + i_t}

    Its gates see only the input, so :func:`bptt.unroll` runs a whole sequence by a
    parallel scan in log space (taps in its backward); this ``forward`` is one step of
    it. The state is h alone (the minimal LSTM has no cell state) and starts at
    g(0) = 1/2.

    Args:
        input_size: F, features per step.
        hidden_size: H, hidden units.
        bias: whether the projection has ``bias_ih`` (3H,).
        device, dtype: where and in which precision the parameters live.

    Attributes:
        weight_ih: (3H, F), the blocks (f, i, h) stacked: W_f, W_i, then W_h.
        bias_ih: (3H,) or None, in the same order.

    Shapes:
        ``forward(x_t, h)``: x_t (B, F), h (B, H) -> (B, H).

    References:
        Feng, Tung, Ahmed, Bengio, Hajimirsadeghi (2024), "Were RNNs All We Needed?",
        arXiv 2410.01201, section 3.2 and appendix B.3.

    Example:
        >>> import bptt
        >>> out, h = bptt.unroll(MinLSTMCell(3, 5), torch.randn(2, 7, 3))
        >>> out.shape, h.shape
        (torch.Size([2, 7, 5]), torch.Size([2, 5]))
    """

    gates = ("f", "i", "h")
    kernel = GATED_LOG_SCAN

    def coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """a = f / (f + i), b = i / (f + i) g(W_h x + b_h), each (..., H), x (..., F)."""
        kf, ki, pre = self._blocks(x)
        f, i = torch.sigmoid(kf), torch.sigmoid(ki)
        total = f + i
        return f / total, i / total * _g(pre)

    def log_coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """log a = -softplus(d), log b = -softplus(-d) + log_g(W_h x + b_h), (..., H),
        with d = softplus(-k_f) - softplus(-k_i) = log(i / f) (the paper's code)."""
        kf, ki, pre = self._blocks(x)
        d = functional.softplus(-kf) - functional.softplus(-ki)
        return -functional.softplus(d), _log_g(pre) - functional.softplus(-d)
