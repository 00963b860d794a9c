"""How strongly the loss at the last step reaches back: the hidden-state gradient by distance."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from bptt import _checks
from bptt.cells import State, as_tuple, contract
from bptt.diagnose._trajectory import cell_of, generator_seed, probe
from bptt.engine import unroll
from bptt.taps import Delta, RecordNorms

__all__ = ["RecordPrecision", "by_distance", "fit_rate", "gradient_by_distance"]

RATIO = 1e-3  # the horizon: where the gradient has fallen to this fraction of d = 0


class RecordPrecision:
    """A tap recording, per step, the fraction of dL/ds_t's elements that are subnormal
    (nonzero but below the smallest normal number of the dtype) and exactly zero.

    After backward, ``subnormal`` and ``zero`` are tensors (T,) over the whole batch.
    """

    def __init__(self) -> None:
        self.subnormal: Tensor | None = None
        self.zero: Tensor | None = None
        self._steps = 0

    def begin(self, num_steps: int) -> None:
        """Size the record for an unroll of num_steps steps."""
        self._steps = num_steps
        self.subnormal = self.zero = None

    def __call__(self, t: int, delta: Delta) -> Delta:
        parts = delta if isinstance(delta, tuple) else (delta,)
        flat = torch.cat([p.reshape(-1) for p in parts])
        if self.subnormal is None:
            self.subnormal = flat.new_full((self._steps,), math.nan)
            self.zero = flat.new_full((self._steps,), math.nan)
        magnitude = flat.abs()
        tiny = torch.finfo(flat.dtype).tiny
        self.subnormal[t] = ((magnitude > 0) & (magnitude < tiny)).float().mean()
        assert self.zero is not None  # allocated with subnormal
        self.zero[t] = (magnitude == 0).float().mean()
        return delta


def fit_rate(norms: Tensor, dtype: torch.dtype | None = None) -> float:
    """The per-step growth (> 1) or decay (< 1) rate gamma of norms by distance.

    A least-squares line through log(norm) against the distance d, over the distances
    where the norm is finite and at least the smallest normal number (below it,
    finite precision and not the dynamics decides the value); gamma = exp(slope).
    NaN if fewer than two distances qualify.
    """
    values = norms.detach().double().cpu().numpy()
    tiny = torch.finfo(dtype or norms.dtype).tiny
    usable = np.isfinite(values) & (values >= tiny)
    if usable.sum() < 2:
        return math.nan
    distance = np.arange(values.shape[0])[usable]
    slope = np.polyfit(distance, np.log(values[usable]), 1)[0]
    return float(np.exp(slope))


def gradient_by_distance(
    cell: nn.Module,
    x: Tensor,
    state: State | None = None,
    loss: Callable[[Tensor, State], Tensor] | None = None,
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """The norm of the hidden-state gradient at each distance back from the loss.

    With L the loss at the last step, the norm ||dL/ds_{T-1-d}|| at distance
    d = 0 .. T-1 (the taps' delta, the whole state for a tuple state), averaged over
    the batch. The parameters' ``.grad`` are left untouched.

    Args:
        cell: a one-step cell (or a :class:`bptt.SequenceModel`, whose cell is used).
        x: a probe batch (B, T, F).
        state: the initial state (None: zeros).
        loss: ``loss(outputs, final_state) -> scalar``; None means the projection of
            the last output on a fixed random unit vector (seeded by ``seed``), summed
            over the batch, so every sample's gradient at d = 0 has norm 1.
        seed: the seed of that unit vector.

    Raises:
        TypeError: ``cell`` is not a cell (nor states none where ``state`` is given),
            ``x`` is not a floating-point tensor, ``loss`` is not callable or returns
            something else than a real tensor.
        ValueError: ``x`` is not (B, T, F) with B, T >= 1 or holds NaN or inf (the input
            is at fault, not the model); ``loss`` returns more than one value or one that
            does not depend on the states.

    Returns:
        A dict with ``norms`` (tensor (T,), by distance), ``ratios`` (norms / norms[0]),
        ``gamma`` (:func:`fit_rate`), ``horizon`` (the first d whose ratio is below
        1e-3; None if none is within T), ``underflow_at`` (the first d where the
        gradient of every sample is exactly zero; None if none), ``underflow_distance``
        (the distance at which gamma would take the norm below the smallest normal
        number of the dtype; None unless gamma < 1), ``subnormal_fraction`` and
        ``zero_fraction`` (tensors (T,), by distance: the share of the gradient's
        elements that are subnormal, and exactly zero).

    Example:
        >>> import bptt
        >>> out = gradient_by_distance(bptt.cells.RNNCell(2, 16), torch.randn(4, 30, 2))
        >>> out["norms"].shape, round(out["norms"][0].item(), 6)
        (torch.Size([30]), 1.0)
    """
    cell = cell_of(cell, state)
    x = probe(cell, x, state)
    seed = generator_seed(seed)
    if loss is None:
        sample_norms, subnormal, zero = _segmented(cell, x, state, seed)
    else:
        _checks.function("loss", loss, "loss(outputs, final_state) -> scalar")
        record, precision = RecordNorms(), RecordPrecision()
        leaf = x.detach().requires_grad_(True)  # the backward must reach step 0
        with torch.enable_grad():
            outputs, final = unroll(cell, leaf, state=state, taps=[record, precision])
            value = scalar_loss(loss(outputs, final))
            torch.autograd.grad(value, leaf, allow_unused=True)
        if precision.subnormal is None or precision.zero is None:  # no tap was reached
            raise ValueError(
                "loss returned a value that does not depend on the outputs or the final "
                "state: there is no gradient to follow back"
            )
        # the backward went through the precision tap at every step
        subnormal, zero = precision.subnormal, precision.zero
        sample_norms = record.norms
    return by_distance(sample_norms, subnormal, zero, x.dtype)


def by_distance(
    sample_norms: Tensor, subnormal: Tensor, zero: Tensor, dtype: torch.dtype
) -> dict[str, Any]:
    """The numbers of :func:`gradient_by_distance` from what the taps recorded.

    Args:
        sample_norms: per-sample norms of dL/ds_t (B, T), by step in the order the
            unroll ran (its last step nearest the loss).
        subnormal, zero: the shares of subnormal and zero elements (T,), by step.
        dtype: the working precision (its smallest normal number bounds the fit).

    The curve starts where the gradient enters, ``entry``: the first distance whose
    norm is not zero (0 when the loss reads the last step; later for a layer the loss
    reaches only there, such as the backward direction of a bidirectional layer read
    at the last step; None when it is zero everywhere). ``ratios`` are over the norm
    at the entry, and ``horizon`` and ``underflow_at`` count from it.
    """
    norms = sample_norms.mean(0).flip(0).detach()  # (T,), d = 0 .. T-1
    reached = (norms != 0).nonzero()  # NaN counts as reached: it is news
    entry = int(reached[0]) if reached.numel() else None
    start = entry or 0
    ratios = norms / norms[start]
    gamma = fit_rate(norms, dtype)
    below = (ratios[start:] < RATIO).nonzero()
    underflow = (sample_norms.flip(1)[:, start:] == 0).all(0).nonzero()
    tiny = torch.finfo(dtype).tiny  # the working precision, not the norms' float64
    level = norms[start].item()
    projected = None
    if 0 < gamma < 1 and level > 0:
        projected = math.log(tiny / level) / math.log(gamma)
    return {
        "norms": norms,
        "ratios": ratios,
        "entry": entry,
        "gamma": gamma,
        "horizon": int(below[0]) if below.numel() else None,
        "underflow_at": int(underflow[0]) if underflow.numel() else None,
        "underflow_distance": projected,
        "subnormal_fraction": subnormal.flip(0),
        "zero_fraction": zero.flip(0),
    }


def scalar_loss(value: Any) -> Tensor:
    """What a ``loss`` callable returned, checked: a real scalar tensor with a graph."""
    if not isinstance(value, Tensor):
        raise TypeError(f"loss must return a scalar tensor, got {_checks.shown(value)}")
    if not value.is_floating_point():
        raise TypeError(
            f"loss must return a real floating-point scalar, got {_checks.shown(value)}"
        )
    if value.numel() != 1:
        raise ValueError(f"loss must return a scalar (one value), got {_checks.shown(value)}")
    if not value.requires_grad:
        raise ValueError(
            "loss returned a value that does not depend on the outputs or the final state "
            "(computed under torch.no_grad() or detached?)"
        )
    return value.reshape(())


SEGMENT = 256  # steps recomputed with a graph at a time: the memory does not grow with T


def _direction(size: int, like: Tensor, seed: int) -> Tensor:
    """A fixed random unit vector (size,) the last output is projected on."""
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(size, generator=gen, dtype=torch.float64)
    return (direction / direction.norm()).to(device=like.device, dtype=like.dtype)


def _segmented(
    cell: nn.Module, x: Tensor, state: State | None, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Backprop from the last output's projection, in segments of :data:`SEGMENT` steps.

    A forward pass without a graph keeps only the states where segments begin; then,
    from the last segment to the first, each is run again with a graph from its first
    state and backpropagated from the gradient the later segments sent to its last
    state, so the taps see the same total dL/ds_t as in one backward over all T steps.
    Memory: one segment's graph and the segments' first states, not T steps of graph.

    Returns:
        The per-sample norms (B, T) and the subnormal and zero fractions (T,), by step.
    """
    steps = x.shape[1]
    starts = list(range(0, steps, SEGMENT))
    firsts: list[State | None] = []
    with torch.no_grad():
        current = state
        for begin in starts:
            firsts.append(current)
            _, current = unroll(cell, x[:, begin : begin + SEGMENT], state=current)
    norms, subnormal, zero = [], [], []
    incoming: tuple[Tensor, ...] | None = None  # dL/d(last state of the segment)
    for begin, first in zip(reversed(starts), reversed(firsts), strict=True):
        record, precision = RecordNorms(), RecordPrecision()
        if first is None:
            first = contract(cell).initial_state(x.shape[0], device=x.device, dtype=x.dtype)
        parts = tuple(p.detach().requires_grad_(True) for p in as_tuple(first))
        start_state = parts if isinstance(first, tuple) else parts[0]
        with torch.enable_grad():
            outputs, last = unroll(
                cell, x[:, begin : begin + SEGMENT], state=start_state, taps=[record, precision]
            )
            if incoming is None:  # the last segment holds the loss
                value = (outputs[:, -1] @ _direction(outputs.shape[-1], outputs, seed)).sum()
            else:
                pairs = zip(as_tuple(last), incoming, strict=True)
                value = cast(Tensor, sum((a * g).sum() for a, g in pairs))  # a state has parts
            incoming = torch.autograd.grad(value, parts, allow_unused=True)
            incoming = tuple(
                torch.zeros_like(p) if g is None else g
                for p, g in zip(parts, incoming, strict=True)
            )
        norms.append(record.norms)
        # the backward went through the precision tap at every step
        subnormal.append(cast(Tensor, precision.subnormal))
        zero.append(cast(Tensor, precision.zero))
    return torch.cat(norms[::-1], 1), torch.cat(subnormal[::-1]), torch.cat(zero[::-1])
