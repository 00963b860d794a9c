"""How far back a sequence model's loss reaches its input, for any model: the input
horizon.

A recurrent network has a hidden state whose gradient can be tapped at every step
(:func:`bptt.diagnose.gradient_by_distance`, :func:`bptt.diagnose.gradient_by_layer`).
A Transformer encoder, or a model built on a parallel scan, has none to tap; what every
sequence model has is its input. The norm of dL/dx_t at each distance d = T-1-t from
the loss says what reaches each input step. For a recurrent network the two agree in
their decay: with h_t = W h_{t-1} + U x_t, dL/dx_t = U^T dL/dh_t, so the input's
gradient is the hidden state's seen through U^T (for W = a I both fall as |a|^d; the
tests hold both to that closed form). Where the model reads its inputs through
attention, every step may be reached directly, and the horizon covers the sequence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from bptt import _checks
from bptt.diagnose._distance import by_distance, scalar_loss
from bptt.diagnose._layers import first_tensor, projected_loss, untouched
from bptt.diagnose._trajectory import generator_seed

__all__ = ["input_horizon"]


def input_horizon(
    model: nn.Module,
    x: Tensor,
    y: Any = None,
    loss_fn: Callable[..., Tensor] | None = None,
    *,
    time_dim: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """The norm of dL/dx_t at each distance from the loss, for any sequence model.

    ``model(x)`` runs as written; the loss, ``loss_fn(model(x), y)``
    (``loss_fn(model(x))`` without ``y``), by default the output at the last step
    (where the output has x's steps on ``time_dim``; else the whole output) projected on
    a fixed random unit vector, is backpropagated to the input alone: the model's
    weights, ``.grad``, buffers and mode, and the random generators, are as they were.

    Args:
        model: any module taking ``x``.
        x: a floating-point probe batch with its steps on ``time_dim`` (B, T, F by
            default; ``time_dim=0`` for time-major).
        y: the targets of ``loss_fn`` (None: none).
        loss_fn: ``loss_fn(output, y) -> scalar`` (or ``loss_fn(output)``).
        time_dim: the dimension of x that holds the steps (0 or 1).
        seed: seeds the projection.

    Returns:
        The numbers of :func:`bptt.diagnose.gradient_by_distance` for the input:
        ``norms`` (by distance d = 0 .. T-1), ``ratios``, ``gamma``, ``horizon`` (the
        first d below 1e-3 of the norm at the loss; None: none within T),
        ``underflow_at``, ...

    Raises:
        TypeError: ``model`` is not a module, ``x`` not a floating-point tensor,
            ``loss_fn`` not callable, the loss not a real scalar tensor.
        ValueError: ``x`` is not 3-dimensional or holds NaN or inf, ``time_dim`` is
            not 0 or 1, ``y`` without ``loss_fn``, or the loss does not depend on x.

    Example:
        >>> import torch, bptt
        >>> layer = torch.nn.TransformerEncoderLayer(4, 2, 16, batch_first=True, dropout=0.0)
        >>> found = input_horizon(layer, torch.randn(2, 10, 4))
        >>> found["norms"].shape, found["horizon"] is None  # attention reaches every step
        (torch.Size([10]), True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {_checks.shown(model)}")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {_checks.shown(x)}")
    if x.dim() != 3 or min(x.shape) < 1:
        raise ValueError(f"x must be (B, T, F) or (T, B, F) with sizes >= 1, got {tuple(x.shape)}")
    time_dim = _checks.integer("time_dim", time_dim, 0, 1)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x holds NaN or inf: the input is at fault, not the model")
    if loss_fn is not None:
        _checks.function("loss_fn", loss_fn, "loss_fn(output, y) -> scalar")
    elif y is not None:
        raise ValueError("y is given without loss_fn: give the loss that compares them")
    seed = generator_seed(seed)
    steps = x.shape[time_dim]
    leaf = x.detach().requires_grad_(True)
    with untouched(model), torch.enable_grad():
        output = model(leaf)
        if loss_fn is None:
            first = first_tensor(output)
            if first is not None and first.dim() > time_dim and first.shape[time_dim] == steps:
                output = first.select(time_dim, steps - 1)  # the last step
            loss = projected_loss(output, seed)
        else:
            loss = loss_fn(output, y) if y is not None else loss_fn(output)
        (grad,) = torch.autograd.grad(scalar_loss(loss), leaf, allow_unused=True)
    if grad is None:
        raise ValueError("the loss does not depend on x: there is no gradient to follow back")
    grad = grad.movedim(time_dim, 1).detach()  # (B, T, F)
    sample_norms = grad.double().norm(dim=2)  # (B, T), by step
    magnitude = grad.abs()
    tiny = torch.finfo(grad.dtype).tiny
    subnormal = ((magnitude > 0) & (magnitude < tiny)).double().mean((0, 2))
    zero = (magnitude == 0).double().mean((0, 2))
    return by_distance(sample_norms, subnormal, zero, x.dtype)
