"""The base of the built-in cells: parameters named and shaped as torch.nn's cells."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from bptt import _checks
from bptt.cells._contract import RecurrentCell


class TorchCompatibleCell(RecurrentCell):
    """Creates ``weight_ih`` (G*H, F), ``weight_hh`` (G*H, H), ``bias_ih`` and ``bias_hh``
    (G*H,) for the G stacked gate blocks a subclass names in ``gates``, initialised as
    torch.nn does.

    Args:
        input_size: F, a positive integer.
        hidden_size: H, a positive integer.
        bias: whether the biases exist (else they are registered as None).
        device, dtype: where and in which precision the parameters live.

    Raises:
        TypeError: a size is not an integer.
        ValueError: a size is below 1, or the parameters would need more memory than
            the device has (the machine's physical memory for the CPU).
    """

    gates: tuple[str, ...] = ()  # names of the stacked blocks, set by each cell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__()
        input_size = _checks.integer("input_size", input_size, 1)
        hidden_size = _checks.integer("hidden_size", hidden_size, 1)
        rows = len(self.gates) * hidden_size
        _checks.fits_in_memory(
            f"input_size={input_size} and hidden_size={hidden_size}",
            rows * (input_size + hidden_size + 2 * bool(bias)),
            dtype,
            device,
        )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(rows, hidden_size, **kw))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(rows, **kw))
            self.bias_hh = nn.Parameter(torch.empty(rows, **kw))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw every parameter from U(-1/sqrt(H), 1/sqrt(H)), as torch.nn does."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters(recurse=False):
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")
