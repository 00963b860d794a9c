"""A stack of linear recurrent units with nonlinear mixing between them, as in Orvieto
et al. 2023 (their Figure 1): a linear encoder, then per layer

    z = LayerNorm(u);  y = Re(C h_t) + D * z  (h_t the LRU's state, driven by z)
    u <- u + GLU(GELU(y))                     (GLU(v) = W1 v * sigmoid(W2 v))

One LRU alone is linear in its inputs (with a linear readout it cannot multiply two
of them, which the adding problem needs); the position-wise mixing between the units
supplies the nonlinearity, and the recurrences stay linear, so each still runs by a
parallel scan.

As a one-step cell its state is every layer's LRU state and the last residual stream
u, concatenated: (B, 2 N L + H); :meth:`output` reads u. :func:`bptt.unroll` runs it
layer by layer, each over the whole sequence by its scan; with taps (which must see
the whole state of a step at once) it runs step by step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn import functional

from bptt._kernels import DEEP_LRU
from bptt.cells._contract import RecurrentCell, State
from bptt.cells._lru import LRUCell

__all__ = ["DeepLRUCell"]


class _Mixing(nn.Module):
    """One layer's position-wise part around its LRU: norm before, D skip, GELU, GLU."""

    def __init__(self, hidden: int, **kw) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, **kw)
        self.skip = nn.Parameter(torch.randn(hidden, **kw))  # D, N(0, 1) as in the paper
        self.glu = nn.Linear(hidden, 2 * hidden, **kw)

    def after(self, lru_out: Tensor, z: Tensor) -> Tensor:
        """GLU(GELU(lru_out + D z)): the update added to the residual stream."""
        return functional.glu(self.glu(functional.gelu(lru_out + self.skip * z)), dim=-1)


class DeepLRUCell(RecurrentCell):
    """A stack of ``layers`` LRUs with position-wise mixing, as one recurrent cell.

    Args:
        input_size: F.
        hidden_size: H, the width of the residual stream (the readout sees it).
        layers: L LRU layers.
        state_size: N complex units per LRU (default H).
        r_min, r_max, max_phase: each LRU's initial eigenvalue ring (see
            :class:`LRUCell`).

    Attributes:
        encoder: Linear(F, H).
        units: the L :class:`LRUCell` (each H -> H).
        mixing: the L position-wise blocks.
    """

    # the eigenvalues, gamma and B: what the paper's code trains at a slower rate
    recurrent_parameters = ("nu_log", "theta_log", "gamma_log", "weight_ih")
    kernel = DEEP_LRU  # a parallel scan per layer

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        layers: int = 2,
        state_size: int | None = None,
        *,
        r_min: float = 0.9,
        r_max: float = 0.999,
        max_phase: float = 6.283185307179586,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be an integer >= 1, got {layers!r}")
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        ring: dict[str, Any] = {"r_min": r_min, "r_max": r_max, "max_phase": max_phase}
        self.units = nn.ModuleList(
            LRUCell(hidden_size, hidden_size, state_size, **ring, **kw) for _ in range(layers)
        )
        self.input_size, self.hidden_size = input_size, hidden_size
        self.state_size = cast(LRUCell, self.units[0]).state_size
        self.encoder = nn.Linear(input_size, hidden_size, **kw)
        self.mixing = nn.ModuleList(_Mixing(hidden_size, **kw) for _ in range(layers))

    def _layers(self) -> tuple[Sequence[LRUCell], Sequence[_Mixing]]:
        """The units and mixing blocks as what they hold (a ModuleList's items type as
        Module)."""
        return cast("Sequence[LRUCell]", self.units), cast("Sequence[_Mixing]", self.mixing)

    @property
    def _widths(self) -> list[int]:
        units, _ = self._layers()
        return [2 * unit.state_size for unit in units] + [self.hidden_size]

    @property
    def weight_hh(self) -> Tensor:
        """The linear recurrences, block diagonal (the residual stream u does not feed
        the next step: a zero block)."""
        zero = torch.zeros(self.hidden_size, self.hidden_size, dtype=self.encoder.weight.dtype)
        return torch.block_diag(*(unit.weight_hh for unit in self.units), zero)

    @property
    def state_width(self) -> int:
        """2 N L + H: every layer's LRU state and the residual stream."""
        return sum(self._widths)

    def output(self, state: State) -> Tensor:
        """The residual stream u after the last layer: (B, H)."""
        return cast(Tensor, state)[..., -self.hidden_size :]  # its state is one tensor

    def forward(self, x_t: Tensor, state: Tensor) -> Tensor:
        """One step: x_t (B, F), state (B, 2 N L + H) -> the next state."""
        parts = state.split(self._widths, dim=-1)
        u = self.encoder(x_t)
        new = []
        units, mixing = self._layers()
        for unit, mix, s in zip(units, mixing, parts, strict=False):
            z = mix.norm(u)
            s = unit(z, s)
            u = u + mix.after(unit.output(s), z)
            new.append(s)
        return torch.cat([*new, u], dim=-1)

    def run_layers(
        self, x: Tensor, state: Tensor, scan, last_only: bool = False
    ) -> tuple[Tensor, Tensor]:
        """The whole sequence, layer after layer: ``scan(unit, z, s0) -> states (B, T,
        2N)`` runs one LRU; returns (outputs (B, T, H), the final state (B, S)). With
        ``last_only`` the outputs are the last step's, (B, 1, H): the last layer's
        readout and mixing, which nothing later reads at the other steps, run there
        alone."""
        parts = state.split(self._widths, dim=-1)
        u = self.encoder(x)
        finals = []
        units, mixing = self._layers()
        last = len(units) - 1
        for layer, (unit, mix, s0) in enumerate(zip(units, mixing, parts, strict=False)):
            z = mix.norm(u)
            s = scan(unit, z, s0)
            if last_only and layer == last:
                s, z, u = s[:, -1:], z[:, -1:], u[:, -1:]
            u = u + mix.after(unit.output(s), z)
            finals.append(s[:, -1])
        return u, torch.cat([*finals, u[:, -1]], dim=-1)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, layers={len(self.units)}, "
            f"state_size={self.state_size}"
        )
