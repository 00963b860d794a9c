"""How strongly the loss at the last step reaches back: the hidden-state gradient by distance."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bptt.cells import State
from bptt.diagnose._trajectory import cell_of
from bptt.engine import unroll
from bptt.taps import Delta, RecordNorms

__all__ = ["RecordPrecision", "fit_rate", "gradient_by_distance"]

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
    cell = cell_of(cell)
    record, precision = RecordNorms(), RecordPrecision()
    probe = x.detach().requires_grad_(True)  # the backward must reach step 0
    with torch.enable_grad():
        outputs, final = unroll(cell, probe, state=state, taps=[record, precision])
        if loss is None:
            gen = torch.Generator().manual_seed(seed)
            direction = torch.randn(outputs.shape[-1], generator=gen, dtype=torch.float64)
            direction = (direction / direction.norm()).to(outputs.dtype).to(outputs.device)
            value = (outputs[:, -1] @ direction).sum()
        else:
            value = loss(outputs, final)
        torch.autograd.grad(value, probe)
    norms = record.norms.mean(0).flip(0).detach()  # (T,), d = 0 .. T-1
    ratios = norms / norms[0]
    gamma = fit_rate(norms, x.dtype)
    below = (ratios < RATIO).nonzero()
    underflow = (record.norms.flip(1) == 0).all(0).nonzero()
    tiny = torch.finfo(x.dtype).tiny  # the working precision, not the norms' float64
    start = norms[0].item()
    projected = None
    if 0 < gamma < 1 and start > 0:
        projected = math.log(tiny / start) / math.log(gamma)
    return {
        "norms": norms,
        "ratios": ratios,
        "gamma": gamma,
        "horizon": int(below[0]) if below.numel() else None,
        "underflow_at": int(underflow[0]) if underflow.numel() else None,
        "underflow_distance": projected,
        "subnormal_fraction": precision.subnormal.flip(0),
        "zero_fraction": precision.zero.flip(0),
    }
