"""The linear recurrent unit (LRU) of Orvieto et al. 2023, "Resurrecting Recurrent
Neural Networks for Long Sequences".

A diagonal complex recurrence whose eigenvalues are the parameters:

    h_t = lambda * h_{t-1} + gamma * (B x_t),     y_t = Re(C h_t)

with lambda_j = exp(-exp(nu_log_j) + i exp(theta_log_j)), so |lambda_j| < 1 for every
value of the parameters (the recurrence cannot explode), initialised uniformly on the
ring r_min <= |lambda| <= r_max (close to 1: long memory) with phases in
[0, max_phase], and gamma_j = sqrt(1 - |lambda_j|^2) (trainable through its log), which
keeps the state's variance that of the input at initialisation. The paper's skip
term D x_t belongs to the layer around the unit (:class:`bptt.model.DeepLRU`).

The state is real, (B, 2N): Re h_j and Im h_j side by side for each unit j (the
layout of ``torch.view_as_real``, so the complex view costs nothing), so that every
tap, norm and diagnosis that works on real states works unchanged (the norm of the
complex vector is the norm of this real one; dL/d(state) holds dL/dRe h and
dL/dIm h). :func:`bptt.unroll` runs it with a parallel scan over time (log depth);
``engine="generic"`` runs this one-step ``forward`` with autograd.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import Tensor, nn

from bptt import _checks
from bptt._kernels import LRU
from bptt.cells._contract import RecurrentCell, State

__all__ = ["LRUCell"]


class LRUCell(RecurrentCell):
    """One step of a linear recurrent unit.

    Args:
        input_size: F.
        hidden_size: H, the size of the output Re(C h_t) a readout sees.
        state_size: N complex units (default H); the state is real (B, 2N).
        r_min, r_max: the ring the eigenvalues' moduli start on (0 <= r_min < r_max < 1).
        max_phase: the largest starting phase (radians, in (0, 2 pi]).

    Attributes:
        nu_log, theta_log: (N,), log(-log|lambda|) and log(arg lambda).
        gamma_log: (N,), log of the input normalisation.
        weight_ih: (2N, F), rows Re B_j, Im B_j interleaved; entries N(0, 1/(2F)) as
            in the paper.
        weight_ho: (H, 2N), columns Re C_j, -Im C_j interleaved, so that
            Re(C h) = weight_ho @ state; entries N(0, 1/N) in the complex C (variance
            1/(2N) in each part).
    """

    # the eigenvalues, gamma and B: what the paper's code trains at a slower rate
    recurrent_parameters = ("nu_log", "theta_log", "gamma_log", "weight_ih")
    kernel = LRU  # a parallel scan

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        state_size: int | None = None,
        *,
        r_min: float = 0.9,
        r_max: float = 0.999,
        max_phase: float = 2 * math.pi,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        state_size = hidden_size if state_size is None else state_size
        for name, value in (
            ("input_size", input_size),
            ("hidden_size", hidden_size),
            ("state_size", state_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not (0.0 <= r_min < r_max < 1.0):
            raise ValueError(f"need 0 <= r_min < r_max < 1, got r_min={r_min}, r_max={r_max}")
        if not (0.0 < max_phase <= 2 * math.pi):
            raise ValueError(f"max_phase must be in (0, 2 pi], got {max_phase}")
        _checks.fits_in_memory(
            f"input_size={input_size}, hidden_size={hidden_size} and state_size={state_size}",
            state_size * (3 + 2 * input_size + 2 * hidden_size),
            dtype,
            device,
        )
        self.input_size, self.hidden_size, self.state_size = input_size, hidden_size, state_size
        self.r_min, self.r_max, self.max_phase = r_min, r_max, max_phase
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.nu_log = nn.Parameter(torch.empty(state_size, **kw))
        self.theta_log = nn.Parameter(torch.empty(state_size, **kw))
        self.gamma_log = nn.Parameter(torch.empty(state_size, **kw))
        self.weight_ih = nn.Parameter(torch.empty(2 * state_size, input_size, **kw))
        self.weight_ho = nn.Parameter(torch.empty(hidden_size, 2 * state_size, **kw))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's initialisation: moduli uniform on the ring's area, phases
        uniform, gamma = sqrt(1 - |lambda|^2), B and C Glorot-like complex Gaussians."""
        n = self.state_size
        with torch.no_grad():
            u1 = torch.rand(n, dtype=torch.float64)
            u2 = torch.rand(n, dtype=torch.float64)
            r2 = u1 * (self.r_max**2 - self.r_min**2) + self.r_min**2
            nu = -0.5 * torch.log(r2)  # |lambda| = exp(-nu)
            theta = (self.max_phase * u2).clamp_min(1e-12)
            self.nu_log.copy_(torch.log(nu))
            self.theta_log.copy_(torch.log(theta))
            self.gamma_log.copy_(0.5 * torch.log1p(-torch.exp(-2 * nu)))
            self.weight_ih.normal_(0.0, 1.0 / math.sqrt(2 * self.input_size))
            self.weight_ho.normal_(0.0, 1.0 / math.sqrt(2 * n))

    def eigenvalues(self) -> tuple[Tensor, Tensor]:
        """(Re lambda, Im lambda), each (N,): inside the unit disc by construction."""
        modulus = torch.exp(-torch.exp(self.nu_log))
        phase = torch.exp(self.theta_log)
        return modulus * torch.cos(phase), modulus * torch.sin(phase)

    @property
    def weight_hh(self) -> Tensor:
        """The recurrence as a real (2N, 2N) matrix, block diagonal with the 2x2 blocks
        [[Re l, -Im l], [Im l, Re l]]: what :func:`bptt.diagnose.recurrent_spectrum`
        reads (its eigenvalues are lambda and its conjugate; its singular values
        |lambda|)."""
        re, im = self.eigenvalues()
        blocks = torch.stack([torch.stack([re, -im], -1), torch.stack([im, re], -1)], -2)
        return torch.block_diag(*blocks.unbind(0))

    def input_drive(self, x: Tensor) -> Tensor:
        """gamma * (B x) as a real (..., 2N): the drive of every step at once."""
        gamma = torch.exp(self.gamma_log).repeat_interleave(2)
        return x @ (self.weight_ih * gamma.unsqueeze(1)).T  # scale the weight, not (B, T, 2N)

    @property
    def state_width(self) -> int:
        """2N: the real and imaginary parts of the N units."""
        return 2 * self.state_size

    def output(self, state: State) -> Tensor:
        """Re(C h): (B, H)."""
        return cast(Tensor, state) @ self.weight_ho.T  # the LRU's state is one tensor

    def forward(self, x_t: Tensor, state: Tensor) -> Tensor:
        """One step: x_t (B, F), state (B, 2N) -> (B, 2N)."""
        re, im = self.eigenvalues()
        h = state.reshape(state.shape[0], self.state_size, 2)
        drive = self.input_drive(x_t).reshape(h.shape)
        h_re, h_im = h[..., 0], h[..., 1]
        new_re = re * h_re - im * h_im + drive[..., 0]
        new_im = im * h_re + re * h_im + drive[..., 1]
        return torch.stack([new_re, new_im], -1).flatten(1)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, state_size={self.state_size}, "
            f"r_min={self.r_min}, r_max={self.r_max}"
        )
