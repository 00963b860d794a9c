"""Clipping functions with PyTorch's contract, on PyTorch's own primitives.

:func:`clip_grad_norm_`, :func:`clip_grad_value_`, :func:`get_total_norm` and
:func:`clip_grads_with_norm_` check their arguments (an error names the one that is
wrong) and hand the work to the functions of the same names in :mod:`torch.nn.utils`,
so their results are torch's. Here is only what torch lacks:

* a tensor threshold applied on its device: torch's ``clip_grads_with_norm_`` takes
  ``float(max_norm)``, which waits for the device to read it;
* a norm measured in a wider dtype than the gradients (``get_total_norm(...,
  dtype=torch.float64)``: float32 squares overflow beyond about 1.8e19), and a
  coefficient from it that flush-to-zero cannot lose;
* per-tensor clipping: :func:`clip_grad_norm_per_parameter_` (Keras's ``clipnorm``)
  and :func:`adaptive_clip_grad_` (AGC, unit by unit).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from bptt import _checks
from bptt._torch_compat import foreach_mul_, foreach_norm

__all__ = [
    "adaptive_clip_grad_",
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


def _foreach(foreach: Any) -> bool | None:
    """``foreach``: None (where available), True or False."""
    return None if foreach is None else _checks.flag("foreach", foreach)


def _groups(tensors: list[Tensor]) -> list[tuple[torch.device, list[int]]]:
    """The tensors' positions grouped by (device, dtype): one foreach kernel a group."""
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for k, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(k)
    return [(device, positions) for (device, _), positions in groups.items()]


def _use_foreach(foreach: bool | None, group: list[Tensor], device: torch.device) -> bool:
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
    norms: dict[int, Tensor] = {}
    for device, positions in _groups(tensors):
        group = [tensors[k] for k in positions]
        if _use_foreach(foreach, group, device):
            found = foreach_norm(group, norm_type, dtype=dtype)
        else:
            found = [torch.linalg.vector_norm(t, norm_type, dtype=dtype) for t in group]
        norms.update(zip(positions, found, strict=True))
    return [norms[k] for k in range(len(tensors))]


def _mul_(tensors: list[Tensor], factors: list[Tensor], foreach: bool | None) -> None:
    """``tensors[k] *= factors[k]`` in place, each factor (0-dim) moved to its tensor."""
    for device, positions in _groups(tensors):
        group = [tensors[k] for k in positions]
        here = [factors[k].to(device=device, dtype=tensors[k].dtype) for k in positions]
        if _use_foreach(foreach, group, device):
            foreach_mul_(group, here)
        else:
            for t, f in zip(group, here, strict=True):
                t.mul_(f)


def get_total_norm(
    tensors: Tensor | Iterable[Tensor],
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """The norm of all tensors seen as one vector (0-dim, on the first tensor's device).

    :func:`torch.nn.utils.get_total_norm` computes it; with ``dtype``, which torch
    does not take, the tensors' norms are measured in that dtype instead.

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
        TypeError, ValueError: ``tensors`` are not tensors, ``norm_type`` is not > 0,
            ``dtype`` is not a floating-point dtype.
    """
    tensors = tensors_of(tensors, "tensors")
    norm_type = _norm_type(norm_type)
    foreach = _foreach(foreach)
    if dtype is None:
        return torch.nn.utils.get_total_norm(tensors, norm_type, error_if_nonfinite, foreach)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {_checks.shown(dtype)}")
    if not tensors:
        return torch.tensor(0.0)
    first = tensors[0].device
    with torch.no_grad():
        norms = per_tensor_norms(tensors, norm_type, foreach, dtype)
        total = torch.linalg.vector_norm(torch.stack([n.to(first) for n in norms]), norm_type)
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

    :func:`torch.nn.utils.clip_grads_with_norm_` does it for a number ``max_norm`` and
    a norm in the gradients' dtype. A tensor ``max_norm`` (an adaptive threshold; inf:
    no clipping) is applied here without leaving the device, and a norm measured wider
    than the gradients (``get_total_norm(..., dtype=torch.float64)``) gives a
    coefficient that is applied in two factors where one would be below the gradients'
    smallest normal number (flush-to-zero would make it 0).

    Raises:
        TypeError: ``parameters`` or ``total_norm`` is not what it must be.
        ValueError: ``max_norm`` is a negative number or NaN.
    """
    params = tensors_of(parameters)
    max_norm = _bound(max_norm)
    foreach = _foreach(foreach)
    if not isinstance(total_norm, Tensor):
        raise TypeError(f"total_norm must be a tensor, got {_checks.shown(total_norm)}")
    grads = [p.grad for p in params if p.grad is not None]
    if isinstance(max_norm, Tensor) or any(g.dtype != total_norm.dtype for g in grads):
        _scale_grads_(grads, max_norm, total_norm, foreach)
    else:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total_norm, foreach)


@torch.no_grad()
def _scale_grads_(
    grads: list[Tensor], max_norm: float | Tensor, total_norm: Tensor, foreach: bool | None
) -> None:
    """torch's scaling by a clamped coefficient, for a tensor bound or a wider norm."""
    if not grads:
        return
    coef = torch.clamp(max_norm / (total_norm + EPS), max=1.0)
    factors = [coef]
    # A norm measured wider than the gradients (a policy's float64 re-measure) can need
    # a coefficient below their smallest normal number, which flush-to-zero would make
    # 0: it is then applied as two factors, each representable.
    narrower = [torch.finfo(g.dtype).tiny for g in grads if g.dtype != coef.dtype]
    if narrower and coef.item() < max(narrower):
        factors = [coef.sqrt()] * 2
    for factor in factors:
        _mul_(grads, [factor] * len(grads), foreach)


def clip_grad_norm_(
    parameters: Parameters,
    max_norm: float | Tensor,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """Clip the gradients' global norm to ``max_norm``, keeping their direction.

    :func:`torch.nn.utils.clip_grad_norm_` after checking the arguments: the same
    contract and results. A tensor ``max_norm`` is also taken, and stays on its device.

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
    params = tensors_of(parameters)
    max_norm = _bound(max_norm)
    norm_type = _norm_type(norm_type)
    foreach = _foreach(foreach)
    if not isinstance(max_norm, Tensor):
        return torch.nn.utils.clip_grad_norm_(
            params, max_norm, norm_type, error_if_nonfinite, foreach
        )
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    _scale_grads_(grads, max_norm, total, foreach)
    return total


def clip_grad_value_(
    parameters: Parameters, clip_value: float, foreach: bool | None = None
) -> None:
    """Clamp every gradient element to [-clip_value, clip_value] in place.

    :func:`torch.nn.utils.clip_grad_value_` after checking the arguments.

    Raises:
        TypeError: ``parameters`` is not a tensor or an iterable of tensors.
        ValueError: ``clip_value`` is not > 0.
    """
    params = tensors_of(parameters)
    clip_value = _checks.real("clip_value", clip_value, 0.0, open_low=True, infinite=True)
    foreach = _foreach(foreach)
    if any(p.grad is not None for p in params):  # torch's raises on no gradient at all
        torch.nn.utils.clip_grad_value_(params, clip_value, foreach)


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
    foreach = _foreach(foreach)
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
    _mul_(grads, list(coefs.unbind()), foreach)
    return stacked


class UnitClip(NamedTuple):
    """What :func:`adaptive_clip_grad_` saw, as 0-dim tensors on the first gradient's
    device (no host synchronisation to make them)."""

    norm: Tensor  # the gradients' total p-norm before clipping
    allowed: Tensor  # the p-norm of every unit's bound: the most a clipped gradient can have
    clipped: Tensor  # bool: whether a unit's gradient was scaled


def unit_norms(x: Tensor, norm_type: float = 2.0, dtype: torch.dtype | None = None) -> Tensor:
    """The norm of each unit of ``x``: (U, 1, ..., 1) over all dims but the first for
    ``x`` of shape (U, ...), one norm (0-dim) for a tensor of 0 or 1 dims."""
    if x.dim() <= 1:
        return torch.linalg.vector_norm(x, norm_type, dtype=dtype)
    return torch.linalg.vector_norm(
        x, norm_type, dim=tuple(range(1, x.dim())), keepdim=True, dtype=dtype
    )


def adaptive_clip_grad_(
    parameters: Parameters, clipping: float, eps: float = 1e-3, norm_type: float = 2.0
) -> Tensor:
    r"""Adaptive gradient clipping (AGC): clip each unit's gradient to a fraction of
    the norm of its own weights, in place.

    For every unit u of every parameter W with gradient g,

    .. math:: g_u \leftarrow
        \begin{cases} g_u \, \dfrac{\lambda \max(\|W_u\|, \epsilon)}{\|g_u\|}
        & \text{if } \|g_u\| > \lambda \max(\|W_u\|, \epsilon) \\
        g_u & \text{otherwise,} \end{cases}

    with λ = ``clipping`` and ε = ``eps``: a unit is a row, the slice along the first
    dim (a weight (out, in) has ``out`` units, one per output, as in PyTorch's layout;
    a cell's stacked gate weights (G*H, F) one per gate and hidden unit), and a tensor
    of 0 or 1 dims (a bias, a gain) is one unit. ε keeps zero-initialised weights
    movable. These are timm's conventions (``timm.utils.agc.adaptive_clip_grad``,
    tested equal); Optax's ``adaptive_grad_clip`` computes the same rule for JAX's
    (in, out) layout. A unit's gradient norm that overflows float32 (elements beyond
    about 1.8e19) is measured again in float64, so a finite gradient is clipped, not
    zeroed; telling costs one read of a flag on the host. Brock et al. leave the final
    (readout) layer unclipped: pass only the parameters to clip.

    Args:
        parameters: a tensor or an iterable of tensors, each (U, ...) or of 0 or 1
            dims, whose ``.grad`` is clipped against the tensor's own values.
        clipping: λ > 0, the largest ratio of a unit's gradient norm to its weight norm.
        eps: ε > 0, the least weight norm a unit counts with.
        norm_type: p of the p-norms, any positive float or ``inf``.

    Returns:
        The gradients' total p-norm before clipping (0-dim tensor), as
        :func:`clip_grad_norm_` returns it.

    Raises:
        TypeError: ``parameters`` is not a tensor or an iterable of tensors, or a
            number is not a number.
        ValueError: ``clipping``, ``eps`` or ``norm_type`` is not > 0 (or is NaN).

    References:
        Brock, De, Smith & Simonyan (2021), High-performance large-scale image
        recognition without normalization, section 4.1.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
        >>> w.grad = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> adaptive_clip_grad_(w, clipping=0.1)  # bounds 0.1 * 5 and 0.1 * 1e-3
        tensor(1.4142)
        >>> w.grad
        tensor([[5.0000e-01, 0.0000e+00],
                [0.0000e+00, 1.0000e-04]])
    """
    params = tensors_of(parameters)
    clipping = _checks.real("clipping", clipping, 0.0, open_low=True)
    eps = _checks.real("eps", eps, 0.0, open_low=True)
    return unit_clip_(params, clipping, eps, _norm_type(norm_type)).norm


# The dtype a norm that overflows is measured in again (a complex norm is real).
_WIDER = {
    torch.float16: torch.float64,
    torch.bfloat16: torch.float64,
    torch.float32: torch.float64,
    torch.complex64: torch.complex128,
}


@torch.no_grad()
def unit_clip_(params: list[Tensor], clipping: float, eps: float, norm_type: float) -> UnitClip:
    """The body of :func:`adaptive_clip_grad_` on checked arguments, with what it saw."""
    pairs = [(p.detach(), p.grad) for p in params if p.grad is not None and p.grad.numel()]
    if not pairs:
        zero = torch.tensor(0.0)
        return UnitClip(zero, zero, torch.tensor(False))
    first = pairs[0][1].device
    grad_norms = [unit_norms(g, norm_type) for _, g in pairs]
    overflowed = torch.stack([n.isinf().any().to(first) for n in grad_norms]).tolist()
    wide = [_WIDER.get(g.dtype) if o else None for o, (_, g) in zip(overflowed, pairs, strict=True)]
    for k, (_, g) in enumerate(pairs):
        if wide[k] is not None:  # its squares overflowed: a finite gradient, measured wider
            grad_norms[k] = unit_norms(g, norm_type, wide[k])
    bounds, scaled = [], []
    for (w, g), g_norm, wider in zip(pairs, grad_norms, wide, strict=True):
        bound = unit_norms(w, norm_type).clamp(min=eps).mul(clipping).to(g_norm.dtype)
        over = g_norm > bound  # (U, 1, ...) or ()
        factor = torch.where(over, bound / g_norm, 1.0)
        if wider is not None:  # scaled in the wider dtype and rounded once: no factor flushes
            g.copy_(g.to(wider) * factor)
        else:
            g.mul_(factor)
        bounds.append(bound.reshape(-1).to(first))
        scaled.append(over.any().to(first))
    flat = torch.cat([n.reshape(-1).to(first) for n in grad_norms])
    return UnitClip(
        torch.linalg.vector_norm(flat, norm_type),
        torch.linalg.vector_norm(torch.cat(bounds), norm_type),
        torch.stack(scaled).any(),
    )
