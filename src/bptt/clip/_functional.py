"""Clipping functions with PyTorch's contract, built from two small primitives.

``clip_grad_norm_`` is :func:`get_total_norm` then :func:`clip_grads_with_norm_`:
the norm is computed once, the gradients are scaled by a clamped coefficient with no
branch and no host synchronisation, and the norm *before* clipping is returned.
The threshold may be a tensor, so adaptive policies never leave the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

import torch
from torch import Tensor

from bptt import _checks

_group_tensors_by_device_and_dtype: Callable[..., dict[Any, Any]] | None = None
try:  # torch's own grouping, in C++; a Python fallback keeps other versions working
    from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype
except ImportError:  # pragma: no cover - depends on the torch build
    pass

__all__ = [
    "clip_grad_norm_",
    "clip_grad_norm_per_parameter_",
    "clip_grad_value_",
    "clip_grads_with_norm_",
    "get_total_norm",
    "grads_of",
]

Parameters = Tensor | Iterable[Tensor]

# The constant torch.nn.utils.clip_grad_norm_ adds to the norm before dividing.
EPS = 1e-6


def tensors_of(parameters: Any, name: str = "parameters") -> list[Tensor]:
    """A tensor or an iterable of tensors as a list, or a TypeError naming ``name``."""
    if isinstance(parameters, Tensor):
        return [parameters]
    if isinstance(parameters, (str, bytes)) or not isinstance(parameters, Iterable):
        raise TypeError(
            f"{name} must be a tensor or an iterable of tensors, got {_checks.shown(parameters)}"
        )
    out = list(parameters)
    for index, p in enumerate(out):
        if not isinstance(p, Tensor):
            raise TypeError(f"{name}[{index}] must be a tensor, got {_checks.shown(p)}")
    return out


def grads_of(parameters: Parameters) -> list[Tensor]:
    """The existing ``.grad`` tensors of a tensor or an iterable of tensors.

    Raises:
        TypeError: ``parameters`` is not a tensor or an iterable of tensors.
    """
    return [p.grad for p in tensors_of(parameters) if p.grad is not None]


def _bound(max_norm: Any) -> float | Tensor:
    """``max_norm`` checked without looking into a tensor (no host synchronisation): a
    number >= 0, inf for no clipping (0 zeroes the gradient, as in torch; a negative
    bound would turn it around into ascent, NaN would make it NaN), or a real tensor."""
    if isinstance(max_norm, Tensor):
        if max_norm.is_complex() or max_norm.dtype == torch.bool:
            raise TypeError(f"max_norm must hold real numbers, got {_checks.shown(max_norm)}")
        return max_norm
    return _checks.real("max_norm", max_norm, 0.0, infinite=True)


def _norm_type(norm_type: Any) -> float:
    """p of a p-norm: a number > 0, or inf."""
    return _checks.real("norm_type", norm_type, 0.0, open_low=True, infinite=True)


def _groups(tensors: list[Tensor]) -> list[tuple[torch.device, list[Tensor]]]:
    """Tensors grouped by (device, dtype), each group with its device."""
    if not tensors:
        return []
    if _group_tensors_by_device_and_dtype is not None:
        grouped = _group_tensors_by_device_and_dtype([tensors])
        return [(device, group) for (device, _), ([group], _) in grouped.items()]
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return [(device, group) for (device, _), group in groups.items()]


def _use_foreach(foreach: bool | None, group: list[Tensor], device: torch.device) -> bool:
    if foreach is not None:
        foreach = _checks.flag("foreach", foreach)
    native = device.type in ("cpu", "cuda") and all(type(t) is Tensor for t in group)
    if foreach and not native:
        raise RuntimeError(
            f"foreach=True was passed, but the foreach API is not available for {device.type} "
            "tensors; pass foreach=None or False"
        )
    return native if foreach is None else foreach


def per_tensor_norms(
    tensors: list[Tensor],
    norm_type: float,
    foreach: bool | None,
    dtype: torch.dtype | None = None,
) -> list[Tensor]:
    """The norm of each tensor, in the order given (0-dim tensors on their devices),
    computed in ``dtype`` if given (float64: no overflow of float32 squares)."""
    return _norms(tensors, _groups(tensors), norm_type, foreach, dtype)


def _norms(
    tensors: list[Tensor],
    groups: list[tuple[torch.device, list[Tensor]]],
    norm_type: float,
    foreach: bool | None,
    dtype: torch.dtype | None = None,
) -> list[Tensor]:
    if not tensors:
        return []

    def norms_of(device: torch.device, group: list[Tensor]) -> list[Tensor]:
        if _use_foreach(foreach, group, device):
            return list(torch._foreach_norm(group, norm_type, dtype=dtype))
        return [torch.linalg.vector_norm(t, norm_type, dtype=dtype) for t in group]

    if len(groups) == 1:
        return norms_of(*groups[0])
    index = {id(t): k for k, t in enumerate(tensors)}
    norms: list[Tensor | None] = [None] * len(tensors)
    for device, group in groups:
        for t, value in zip(group, norms_of(device, group), strict=True):
            norms[index[id(t)]] = value
    return cast("list[Tensor]", norms)  # every tensor's slot filled


def _stacked_norms(
    tensors: list[Tensor], norm_type: float, foreach: bool | None, dtype: torch.dtype | None
) -> Tensor:
    """Each tensor's norm, stacked (N,) on the first tensor's device."""
    groups = _groups(tensors)
    norms = _norms(tensors, groups, norm_type, foreach, dtype)
    first = tensors[0].device
    if all(device == first for device, _ in groups):
        return torch.stack(norms)
    return torch.stack([n.to(first) for n in norms])


def get_total_norm(
    tensors: Tensor | Iterable[Tensor],
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """The norm of all tensors seen as one vector (0-dim, on the first tensor's device).

    Args:
        tensors: the tensors (usually gradients).
        norm_type: p of the p-norm, any positive float or ``inf``.
        error_if_nonfinite: raise when the norm is NaN or inf (this syncs with the device).
        foreach: use the foreach kernels (None: where available).
        dtype: compute (and return) the norm in this dtype; None: the tensors' own, as
            torch does. ``torch.float64`` keeps a finite float32 gradient's norm finite
            (float32 squares overflow once an element passes about 1.8e19).

    Raises:
        RuntimeError: the norm is not finite and ``error_if_nonfinite`` is True.
        TypeError, ValueError: ``tensors`` are not tensors, ``norm_type`` is not > 0.
    """
    tensors = tensors_of(tensors, "tensors")
    norm_type = _norm_type(norm_type)
    if not tensors:
        return torch.tensor(0.0)
    total = torch.linalg.vector_norm(_stacked_norms(tensors, norm_type, foreach, dtype), norm_type)
    if error_if_nonfinite and not bool(torch.isfinite(total)):
        raise RuntimeError(
            f"the total norm of order {norm_type} of the gradients is non-finite, so it "
            "cannot be clipped; to scale the gradients by it anyway, set "
            "error_if_nonfinite=False"
        )
    return total


def clip_grads_with_norm_(
    parameters: Parameters,
    max_norm: float | Tensor,
    total_norm: Tensor,
    foreach: bool | None = None,
) -> None:
    r"""Scale gradients in place given their total norm: ``g *= min(max_norm / (norm + 1e-6), 1)``.

    No branch on the coefficient, so no host synchronisation; ``max_norm`` may be a
    tensor (an adaptive threshold) and may be ``inf`` (no clipping).
    """
    _scale_grads_(grads_of(parameters), _bound(max_norm), total_norm, foreach)


def _scale_grads_(
    grads: list[Tensor], max_norm: float | Tensor, total_norm: Tensor, foreach: bool | None
) -> None:
    """The body of :func:`clip_grads_with_norm_`, on gradients already gathered."""
    if not grads:
        return
    coef = torch.clamp(max_norm / (total_norm + EPS), max=1.0)
    for device, group in _groups(grads):
        dtype = group[0].dtype
        # A norm measured wider than the gradients (a policy's float64 fallback) can
        # need a coefficient below their smallest normal number, which flush-to-zero
        # would make 0: it is then applied as two factors, each representable.
        factors = [coef]
        if coef.dtype != dtype and coef.item() < torch.finfo(dtype).tiny:
            factors = [coef.sqrt()] * 2
        for factor in factors:
            here = factor.to(device=device, dtype=dtype)
            if _use_foreach(foreach, group, device):
                torch._foreach_mul_(group, here)
            else:
                for g in group:
                    g.mul_(here)


def clip_grad_norm_(
    parameters: Parameters,
    max_norm: float | Tensor,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """Clip the gradients' global norm to ``max_norm``, keeping their direction.

    The same contract and results as :func:`torch.nn.utils.clip_grad_norm_`; also
    accepts a tensor ``max_norm``.

    Args:
        parameters: a tensor or an iterable of tensors whose ``.grad`` is clipped.
        max_norm: the bound (float or 0-dim tensor).
        norm_type: p of the p-norm, any positive float or ``inf``.
        error_if_nonfinite: raise when the total norm is NaN or inf.
        foreach: use the foreach kernels (None: where available).

    Returns:
        The total norm of the gradients *before* clipping (0-dim tensor).

    Raises:
        TypeError: ``parameters`` is not a tensor or an iterable of tensors.
        ValueError: ``max_norm`` is a negative number or NaN (a negative bound would
            reverse the gradient; 0 zeroes it and inf leaves it, as in torch), or
            ``norm_type`` is not > 0.

    References:
        Pascanu, Mikolov & Bengio (2013), On the difficulty of training recurrent
        neural networks, algorithm 1.

    Example:
        >>> w = torch.zeros(2, requires_grad=True)
        >>> w.grad = torch.tensor([3.0, 4.0])
        >>> clip_grad_norm_([w], 1.0)
        tensor(5.)
        >>> w.grad
        tensor([0.6000, 0.8000])
    """
    grads = grads_of(parameters)
    max_norm = _bound(max_norm)
    total = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    _scale_grads_(grads, max_norm, total, foreach)
    return total


def clip_grad_value_(
    parameters: Parameters, clip_value: float, foreach: bool | None = None
) -> None:
    """Clamp every gradient element to [-clip_value, clip_value] in place.

    The contract of :func:`torch.nn.utils.clip_grad_value_`.
    """
    clip_value = _checks.real("clip_value", clip_value, 0.0, open_low=True, infinite=True)
    grads = grads_of(parameters)
    for device, group in _groups(grads):
        if _use_foreach(foreach, group, device):
            torch._foreach_clamp_min_(group, -clip_value)
            torch._foreach_clamp_max_(group, clip_value)
        else:
            for g in group:
                g.clamp_(min=-clip_value, max=clip_value)


def clip_grad_norm_per_parameter_(
    parameters: Parameters,
    max_norm: float | Tensor,
    norm_type: float = 2.0,
    foreach: bool | None = None,
) -> Tensor:
    """Clip each parameter's gradient to a norm of at most ``max_norm`` on its own.

    Keras's ``clipnorm``: ``g * max_norm / max(||g||, max_norm)`` for every tensor
    separately (no epsilon, so a gradient within the bound is untouched). A norm that
    overflows in the gradient's dtype is measured in float64, so a finite gradient is
    clipped, never zeroed.

    Args:
        parameters: a tensor or an iterable of tensors whose ``.grad`` is clipped.
        max_norm: the bound for every tensor, or a tensor (N,) of one bound per
            gradient (in the order of the gradients that exist).
        norm_type: p of the p-norm.
        foreach: use the foreach kernels (None: where available).

    Returns:
        Tensor (N,): each gradient's norm before clipping, in order.

    Raises:
        TypeError: ``parameters`` is not a tensor or an iterable of tensors.
        ValueError: a bound in ``max_norm`` is negative or NaN (a negative bound would
            reverse the gradient into ascent; 0 zeroes it and inf leaves it, as in
            torch's ``clip_grad_norm_``), a tensor of bounds is not (N,), or
            ``norm_type`` is not > 0.
    """
    grads = grads_of(parameters)
    max_norm = _bound(max_norm)
    norm_type = _norm_type(norm_type)
    if not grads:
        return torch.zeros(0)
    if isinstance(max_norm, Tensor):  # the norms are read on the host below anyway
        if max_norm.dim() > 1 or (max_norm.dim() == 1 and max_norm.shape[0] != len(grads)):
            raise ValueError(
                f"max_norm must be a number or a tensor ({len(grads)},) of one bound per "
                f"gradient, got {_checks.shown(max_norm)}"
            )
        if bool(((max_norm < 0) | max_norm.isnan()).any()):
            raise ValueError(
                f"max_norm must hold bounds >= 0 (inf: no clipping), got "
                f"{max_norm.detach().cpu().tolist()}"[:200]
            )
    norms = per_tensor_norms(grads, norm_type, foreach)
    first = grads[0].device
    stacked = torch.stack([n.to(first) for n in norms])  # (N,)
    if torch.isinf(stacked).any():  # float32 squares overflowed: a finite gradient, clip it
        norms = per_tensor_norms(grads, norm_type, foreach, dtype=torch.float64)
        stacked = torch.stack([n.to(first) for n in norms])
    if isinstance(max_norm, Tensor):
        bound = max_norm.to(device=first, dtype=stacked.dtype)
    else:
        bound = torch.tensor(float(max_norm), device=first, dtype=stacked.dtype)
    # exactly 1 within the bound, and for an infinite bound; NaN norms pass NaN through
    coefs = torch.where(stacked > bound, torch.div(bound, stacked), torch.ones_like(stacked))
    factor_of = dict(zip(map(id, grads), coefs.unbind(), strict=True))
    for device, group in _groups(grads):
        factors = [factor_of[id(g)].to(device=device, dtype=g.dtype) for g in group]
        if _use_foreach(foreach, group, device):
            torch._foreach_mul_(group, factors)
        else:
            for g, f in zip(group, factors, strict=True):
                g.mul_(f)
    return stacked
