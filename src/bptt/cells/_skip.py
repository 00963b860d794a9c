"""Skip connections between hidden states several steps apart."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from bptt import _checks
from bptt.cells._contract import RecurrentCell

__all__ = ["SkipRNNCell"]


class SkipRNNCell(RecurrentCell):
    r"""h_t = f(sum_k W_k h_{t-k} + W_ih x_t + b) over the delays k in ``skips``.

    Each delay has its own (H, H) matrix: the shortcut from h_{t-d} gives the gradient
    a path of t/d steps instead of t back to the distant past (the skip connections of
    the lectures; NARX networks, Lin et al. 1996; the dilated idea).

    The state is the tuple of the last D = max(skips) hidden states,
    ``(h_t, h_{t-1}, ..., h_{t-D+1})``; the output is its first element. Taps see the
    gradient of the whole tuple.

    Args:
        input_size: F.
        hidden_size: H.
        skips: the delays, distinct positive integers; 1 is the usual recurrence.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        device, dtype: where and in which precision the parameters live.

    Raises:
        TypeError: a size is not an integer, ``skips`` is not a sequence.
        ValueError: a size is below 1, ``skips`` holds no delays or ones that are not
            distinct positive integers, the nonlinearity is unknown, or the parameters
            would need more memory than the device has.

    Example:
        >>> cell = SkipRNNCell(2, 4, skips=(1, 5))
        >>> state = cell(torch.zeros(3, 2), None)
        >>> len(state), state[0].shape
        (5, torch.Size([3, 4]))
    """

    recurrent_parameters = ("weight_skips",)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        skips: tuple[int, ...] = (1, 10),
        nonlinearity: str = "tanh",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        input_size = _checks.integer("input_size", input_size, 1)
        hidden_size = _checks.integer("hidden_size", hidden_size, 1)
        if isinstance(skips, (str, bytes, Tensor)) or not isinstance(skips, Iterable):
            raise TypeError(
                f"skips must be a sequence of delays such as (1, 10), got {_checks.shown(skips)}"
            )
        skips = tuple(skips)
        if (
            not skips
            or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in skips)
            or len(set(skips)) != len(skips)
        ):
            raise ValueError(
                f"skips must be distinct positive integers, got {_checks.shown(skips)}"
            )
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"nonlinearity must be 'tanh' or 'relu', got {_checks.shown(nonlinearity)}"
            )
        _checks.fits_in_memory(
            f"input_size={input_size}, hidden_size={hidden_size} and {len(skips)} skips",
            hidden_size * (len(skips) * hidden_size + input_size + 1),
            dtype,
            device,
        )
        self.input_size, self.hidden_size = input_size, hidden_size
        self.skips, self.nonlinearity = tuple(sorted(skips)), nonlinearity
        self.depth = max(skips)
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight_skips = nn.Parameter(torch.empty(len(skips), hidden_size, hidden_size, **kw))
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, **kw))
        self.bias = nn.Parameter(torch.empty(hidden_size, **kw))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Every weight from U(-b, b) with b = 1/sqrt(H * number of skips)."""
        bound = 1.0 / math.sqrt(self.hidden_size * len(self.skips))
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    @property
    def weight_hh(self) -> Tensor:
        """The one-step recurrent matrix W_1 (zero if 1 is not among the skips)."""
        if 1 in self.skips:
            return self.weight_skips[self.skips.index(1)]
        return torch.zeros_like(self.weight_skips[0])

    def initial_state(self, batch_size: int, *, device=None, dtype=None) -> tuple[Tensor, ...]:
        """D zero states (B, H)."""
        return tuple(
            torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
            for _ in range(self.depth)
        )

    def forward(self, x_t: Tensor, state: tuple[Tensor, ...] | None = None) -> tuple[Tensor, ...]:
        if state is None:
            state = self.initial_state(x_t.shape[0], device=x_t.device, dtype=x_t.dtype)
        pre = nn.functional.linear(x_t, self.weight_ih, self.bias)
        for weight, k in zip(self.weight_skips, self.skips, strict=True):
            pre = pre + state[k - 1] @ weight.t()  # state[k-1] is h_{t-k}
        h = torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)
        return (h, *state[:-1])

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, skips={self.skips}"
