"""An RNN whose recurrent matrix stays orthogonal during training (expRNN)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from bptt import _checks
from bptt._kernels import ELMAN
from bptt.cells._contract import RecurrentCell

__all__ = ["OrthogonalRNNCell"]

_NONLINEARITIES = ("tanh", "relu", "modrelu")


class OrthogonalRNNCell(RecurrentCell):
    r"""h_t = f(W_ih x_t + b_ih + W h_{t-1} + b_hh) with W = B exp(A - A^T) orthogonal.

    The exponential map of expRNN (Lezcano-Casado & Martinez-Rubio 2019): the free
    parameter A is unconstrained, any optimizer may step on it, and the matrix
    exponential of the skew-symmetric A - A^T is orthogonal to working precision
    after every step, with every eigenvalue of modulus 1. Chosen over
    ``torch.nn.utils.parametrizations.orthogonal`` (which also uses the matrix
    exponential for square matrices) because that one replaces the module's class,
    moves the weight under ``parametrizations.weight_hh.original`` and so hides the
    cell from the fast engine; here ``weight_hh`` is a plain property, computed once
    per forward, and the state dict holds ``skew``.

    A starts block-diagonal with 2x2 blocks [[0, s/2], [-s/2, 0]], s ~ U[-pi, pi]
    (Henaff et al. 2016): W is then a set of rotations by random angles.

    B, the base, is the identity (expRNN) until :meth:`rebase` folds exp(A - A^T)
    into it and restarts A at zero: called every K optimizer steps, that is the
    dynamic trivialization of Lezcano-Casado 2019 (``dtriv``, the default of
    expRNN's released code, K = 100), which keeps A where the exponential's
    differential is close to the identity. B is a buffer: in the state dict, so
    checkpoints resume it.

    A's parametrization counts each rotation twice (A_ij and A_ji both move
    S_ij = A_ij - A_ji): under an optimizer that normalises each entry's step
    (RMSprop, Adam), a learning rate r on A moves W as expRNN's code (which uses
    the upper triangle of A alone) does with 2r.

    Args:
        input_size: F.
        hidden_size: H.
        nonlinearity: ``"tanh"``, ``"relu"`` or ``"modrelu"`` (Arjovsky et al. 2016:
            f(z) = sign(z) relu(|z| + b) with a learnt bias b per unit).
        device, dtype: where and in which precision the parameters live.

    Shapes:
        ``forward(x_t, h)``: x_t (B, F), h (B, H) or None -> (B, H).
    """

    gates = ("h",)
    kernel = ELMAN  # W = B exp(A - A^T) computed once per pass
    recurrent_parameters = ("skew",)

    base: Tensor  # the buffer registered in __init__: (H, H), orthogonal

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        nonlinearity: str = "tanh",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(
                f"nonlinearity must be one of {_NONLINEARITIES}, got {_checks.shown(nonlinearity)}"
            )
        input_size = _checks.integer("input_size", input_size, 1)
        hidden_size = _checks.integer("hidden_size", hidden_size, 1)
        _checks.fits_in_memory(  # the skew matrix and the base, W_ih, the biases
            f"input_size={input_size} and hidden_size={hidden_size}",
            hidden_size * (2 * hidden_size + input_size + 3),
            dtype,
            device,
        )
        self.input_size, self.hidden_size, self.nonlinearity = input_size, hidden_size, nonlinearity
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.skew = nn.Parameter(torch.zeros(hidden_size, hidden_size, **kw))
        self.register_buffer("base", torch.eye(hidden_size, **kw))
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, **kw))
        self.bias_ih = nn.Parameter(torch.zeros(hidden_size, **kw))
        self.bias_hh = nn.Parameter(torch.zeros(hidden_size, **kw))
        if nonlinearity == "modrelu":
            self.modrelu_bias = nn.Parameter(torch.zeros(hidden_size, **kw))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Henaff initialisation of A, the identity base; W_ih from U(-1/sqrt(H),
        1/sqrt(H)); zero biases."""
        self.skew.zero_()
        self.base.copy_(torch.eye(self.hidden_size))
        hidden = self.hidden_size
        angles = (torch.rand(hidden // 2, dtype=torch.float64) * 2 - 1) * math.pi
        for k, angle in enumerate(angles.tolist()):
            # A - A^T then holds +-angle: a rotation by the angle (until this was
            # found, only the upper half was set, which rotated by angle / 2)
            self.skew[2 * k, 2 * k + 1] = angle / 2
            self.skew[2 * k + 1, 2 * k] = -angle / 2
        bound = 1.0 / math.sqrt(hidden)
        nn.init.uniform_(self.weight_ih, -bound, bound)
        self.bias_ih.zero_()
        self.bias_hh.zero_()
        if self.nonlinearity == "modrelu":
            self.modrelu_bias.fill_(-0.01)

    @property
    def weight_hh(self) -> Tensor:
        """The current recurrent matrix, B exp(A - A^T): orthogonal, (H, H)."""
        return self.base @ torch.linalg.matrix_exp(self.skew - self.skew.t())

    @torch.no_grad()
    def rebase(self) -> None:
        """Fold the current W into the base and restart A at zero (W unchanged).

        The base is projected back onto the orthogonal matrices (U V^T of its SVD),
        so rounding cannot pile up over many rebases; an optimizer's state for A is
        left as it is (as expRNN's code leaves it).
        """
        u, _, vh = torch.linalg.svd(self.weight_hh)
        self.base.copy_(u @ vh)
        self.skew.zero_()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # a state dict saved before the base existed: the identity (expRNN's W)
        state_dict.setdefault(prefix + "base", torch.eye(self.hidden_size).to(self.base))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def activate(self, pre: Tensor) -> Tensor:
        """The nonlinearity applied to the pre-activation (B, H)."""
        if self.nonlinearity == "tanh":
            return torch.tanh(pre)
        if self.nonlinearity == "relu":
            return torch.relu(pre)
        return torch.sign(pre) * torch.relu(pre.abs() + self.modrelu_bias)

    def sequence_step(self):
        """One step with W = B exp(A - A^T) computed once for the whole sequence."""
        weight = self.weight_hh
        return lambda x_t, state: self(x_t, state, weight_hh=weight)

    def forward(self, x_t: Tensor, state: Tensor | None = None, weight_hh: Tensor | None = None):
        """One step; ``weight_hh`` may be passed in to compute the exponential once per sequence."""
        if state is None:
            state = x_t.new_zeros(x_t.shape[0], self.hidden_size)
        weight = self.weight_hh if weight_hh is None else weight_hh
        pre = nn.functional.linear(x_t, self.weight_ih, self.bias_ih) + nn.functional.linear(
            state, weight, self.bias_hh
        )
        return self.activate(pre)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, nonlinearity={self.nonlinearity!r}"
