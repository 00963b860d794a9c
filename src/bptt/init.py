"""Initialisers that keep gradients alive, in place on tensors like ``torch.nn.init``.

Matrix initialisers take a weight of shape (H, H) or a stack of gate blocks
(G*H, H) and initialise each (H, H) block; gate biases take a cell.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from bptt import _checks

__all__ = [
    "chrono_",
    "forget_bias_",
    "identity_",
    "orthogonal_",
    "sparse_fan_in_",
    "sparse_reservoir_",
    "spectral_radius",
    "spectral_radius_",
]


def _blocks(tensor: Tensor) -> Tensor:
    """The (G, H, H) view of a (G*H, H) weight."""
    if tensor.dim() != 2 or tensor.shape[0] % tensor.shape[1]:
        raise ValueError(
            f"expected a weight of shape (H, H) or (G*H, H), got {tuple(tensor.shape)}"
        )
    return tensor.view(-1, tensor.shape[1], tensor.shape[1])


@torch.no_grad()
def orthogonal_(
    tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Each (H, H) block a random orthogonal matrix (Haar-distributed) times ``gain``.

    All eigenvalues then have modulus ``gain``: the linearised recurrence neither
    grows nor shrinks the gradient (Saxe et al. 2014).

    Example:
        >>> w = orthogonal_(torch.empty(4, 4))
        >>> torch.allclose(w.T @ w, torch.eye(4), atol=1e-6)
        True
    """
    for block in _blocks(tensor):
        nn.init.orthogonal_(block, gain=gain, generator=generator)
    return tensor


@torch.no_grad()
def identity_(tensor: Tensor, scale: float = 1.0) -> Tensor:
    """Each (H, H) block ``scale`` times the identity (IRNN: Le, Jaitly & Hinton 2015)."""
    for block in _blocks(tensor):
        block.copy_(scale * torch.eye(block.shape[0], dtype=block.dtype, device=block.device))
    return tensor


def spectral_radius(matrix: Tensor) -> float:
    """The largest modulus of the eigenvalues of a square matrix (computed in float64)."""
    return torch.linalg.eigvals(matrix.detach().double().cpu()).abs().max().item()


@torch.no_grad()
def spectral_radius_(tensor: Tensor, rho: float) -> Tensor:
    """Rescale each (H, H) block so its spectral radius is exactly ``rho``.

    Raises:
        ValueError: rho is negative, or a block has spectral radius 0 (nilpotent).
    """
    if not rho >= 0:
        raise ValueError(f"rho must be >= 0, got {rho}")
    for block in _blocks(tensor):
        current = spectral_radius(block)
        if current == 0:
            raise ValueError("a block has spectral radius 0 and cannot be rescaled")
        block.mul_(rho / current)
    return tensor


@torch.no_grad()
def sparse_fan_in_(
    tensor: Tensor,
    fan_in: int = 15,
    std: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Martens' sparse initialisation: each unit (a row of an (out, in) weight, torch's
    layout) gets exactly ``fan_in`` nonzero incoming weights, at distinct inputs drawn
    uniformly, from N(0, std^2); every other weight is 0. With fewer inputs than
    ``fan_in``, every weight is drawn.

    Martens (2010), "Deep learning via Hessian-free optimization", section 5 (15
    connections a unit); Martens & Sutskever (2011) start their RNNs from it (their
    released code draws the inputs without replacement, std 1/sqrt(15)); Sutskever,
    Martens, Dahl & Hinton (2013) rescale the recurrent matrix so drawn to spectral
    radius 1.1.

    Args:
        tensor: a 2-D weight (out, in), changed in place.
        fan_in: nonzero weights per row, >= 1.
        std: their standard deviation, >= 0.
        generator: the random source (None: torch's global one).

    Returns:
        ``tensor``.

    Example:
        >>> w = sparse_fan_in_(torch.empty(4, 30), fan_in=15)
        >>> (w != 0).sum(dim=1).tolist()
        [15, 15, 15, 15]
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"tensor must be a tensor, got {_checks.shown(tensor)}")
    if tensor.dim() != 2 or not tensor.is_floating_point():
        raise ValueError(
            f"tensor must be a 2-D floating weight (out, in), got shape "
            f"{tuple(tensor.shape)} of {tensor.dtype}"
        )
    fan_in = _checks.integer("fan_in", fan_in, 1)
    std = _checks.real("std", std, 0.0)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {_checks.shown(generator)}"
        )
    rows, inputs = tensor.shape
    keep = min(fan_in, inputs)
    values = torch.randn(rows, inputs, generator=generator, dtype=torch.float64) * std
    # each row's kept inputs: the first `keep` of a uniformly random order (no repeats)
    order = torch.rand(rows, inputs, generator=generator, dtype=torch.float64).argsort(dim=1)
    mask = torch.zeros(rows, inputs, dtype=torch.bool)
    mask.scatter_(1, order[:, :keep], True)
    tensor.copy_((values * mask).to(tensor.dtype))
    return tensor


@torch.no_grad()
def sparse_reservoir_(
    tensor: Tensor, density: float = 0.1, rho: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """An echo-state reservoir: each block sparse with N(0, 1) nonzeros, spectral radius ``rho``.

    Each entry is nonzero with probability ``density``; the block is then rescaled to
    the exact spectral radius (Jaeger 2001; as the initialisation of Sutskever,
    Martens, Dahl & Hinton 2013).
    """
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    for block in _blocks(tensor):
        values = torch.randn(block.shape, generator=generator, dtype=torch.float64)
        mask = torch.rand(block.shape, generator=generator, dtype=torch.float64) < density
        block.copy_((values * mask).to(block.dtype))
    return spectral_radius_(tensor, rho)


def _gate_bias(cell: nn.Module, gate: str) -> tuple[Tensor, Tensor, slice]:
    """The two biases of a cell and the rows of one of its gates."""
    gates = getattr(cell, "gates", ())
    if gate not in gates or getattr(cell, "bias_ih", None) is None:
        raise ValueError(f"{type(cell).__name__} has no biased gate {gate!r} (gates: {gates})")
    k, hidden = gates.index(gate), cast(int, cell.hidden_size)
    bias_ih, bias_hh = cast(Tensor, cell.bias_ih), cast(Tensor, cell.bias_hh)
    return bias_ih, bias_hh, slice(k * hidden, (k + 1) * hidden)


def _memory_gate(cell: nn.Module) -> str:
    """The gate that keeps the old state: the LSTM's forget gate f, the GRU's update gate z."""
    gates = getattr(cell, "gates", ())
    if "f" in gates:
        return "f"
    if "z" in gates:
        return "z"
    raise ValueError(f"{type(cell).__name__} has no forget (LSTM) or update (GRU) gate")


@torch.no_grad()
def forget_bias_(cell: nn.Module, value: float = 1.0) -> nn.Module:
    """Set the bias of the gate that keeps the old state to ``value``.

    LSTM: the forget gate f (Gers et al. 2000; Jozefowicz et al. 2015 recommend 1);
    GRU: the update gate z (h = (1 - z) n + z h_prev, so z near 1 keeps the state).
    The value goes into ``bias_ih``; the gate's ``bias_hh`` rows are zeroed (only
    their sum acts).
    """
    bias_ih, bias_hh, rows = _gate_bias(cell, _memory_gate(cell))
    bias_ih[rows] = value
    bias_hh[rows] = 0.0
    return cell


@torch.no_grad()
def chrono_(cell: nn.Module, t_max: int, generator: torch.Generator | None = None) -> nn.Module:
    """Chrono initialisation (Tallec & Ollivier 2018) for dependencies up to ``t_max`` steps.

    LSTM: forget bias b_f = log(u), u ~ U[1, t_max - 1], and input bias b_i = -b_f, so
    the characteristic forgetting times spread over [1, t_max]. GRU: the update gate's
    bias b_z = log(u) (the same time scales; the GRU has no separate input gate).

    Raises:
        ValueError: t_max < 2, or a cell without the gates.
    """
    if t_max < 2:
        raise ValueError(f"t_max must be >= 2, got {t_max}")
    gate = _memory_gate(cell)
    bias_ih, bias_hh, rows = _gate_bias(cell, gate)
    hidden = cast(int, cell.hidden_size)
    u = 1 + torch.rand(hidden, generator=generator, dtype=torch.float64) * (t_max - 2)
    timescale = torch.log(u).to(bias_ih.dtype)
    bias_ih[rows] = timescale
    bias_hh[rows] = 0.0
    if gate == "f":
        in_ih, in_hh, in_rows = _gate_bias(cell, "i")
        in_ih[in_rows] = -timescale
        in_hh[in_rows] = 0.0
    return cell
