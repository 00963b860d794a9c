"""Threshold policies: how large a gradient may be, decided fresh at every step.

A policy is called like :func:`clip_grad_norm_`: ``policy(parameters)`` computes the
total gradient norm, decides the threshold, clips in place and returns the norm
*before* clipping. Afterwards ``policy.threshold`` is the threshold it applied
(``inf`` where it applied none) and ``policy.clipped`` whether it clipped, both
0-dim tensors: nothing here synchronises with the device. Non-finite norms never
enter a policy's history or statistics. The state is explicit:
``state_dict()``/``load_state_dict()`` hold only tensors and numbers, so it
checkpoints with ``torch.save`` and loads with ``weights_only=True``.

Under ``torch.distributed`` data parallelism, call a policy after the gradient
all-reduce (after ``backward`` with DDP): every rank then sees the same gradients,
computes the same norm and keeps the same state.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from bptt.clip._functional import (
    Parameters,
    clip_grad_norm_per_parameter_,
    clip_grad_value_,
    clip_grads_with_norm_,
    finite_or_nan,
    get_total_norm,
    grads_of,
    per_tensor_norms,
)
from bptt.taps import ClipNorm, ClipValue

__all__ = [
    "Calibrate",
    "ClipPolicy",
    "Fixed",
    "NoClip",
    "PerStep",
    "Percentile",
    "Value",
    "ZScore",
]


def _positive(name: str, value: float, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be positive and finite, got {value}")
    return float(value)


def _fraction(name: str, value: float, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not (low < value <= high):
        raise ValueError(f"{name} must be in ({low}, {high}], got {value}")
    return float(value)


def _count(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class ClipPolicy:
    """The common machinery: compute the norm, ask for a threshold, clip, report.

    Subclasses implement :meth:`decide` (the threshold for this step's norm, and
    their state update) and the state dict of their own fields.

    Attributes:
        threshold: 0-dim tensor, the threshold applied by the last call (inf: none).
        clipped: 0-dim bool tensor, whether the last call scaled the gradients.
        norm_type: p of the norm (2 unless given).
    """

    def __init__(self, norm_type: float = 2.0, foreach: bool | None = None) -> None:
        self.norm_type = float(norm_type)
        self.foreach = foreach
        self.threshold = torch.tensor(math.inf)
        self.clipped = torch.tensor(False)
        self.calls = 0

    def __call__(self, parameters: Parameters) -> Tensor:
        """Clip the gradients of ``parameters`` in place; return their norm before clipping."""
        params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
        grads = grads_of(params)
        norm = get_total_norm(grads, self.norm_type, foreach=self.foreach)
        threshold = self.decide(norm)
        if not (isinstance(threshold, float) and threshold == math.inf):
            clip_grads_with_norm_(params, threshold, norm, self.foreach)
        self._report(norm, threshold)
        self.calls += 1
        return norm

    def decide(self, norm: Tensor) -> Tensor | float:
        """This step's threshold given its pre-clip norm (a float inf for none)."""
        raise NotImplementedError

    def _report(self, norm: Tensor, threshold: Tensor | float) -> None:
        if isinstance(threshold, float):  # kept exact: a hand-set bound reads back as set
            threshold = torch.tensor(threshold, dtype=torch.float64, device=norm.device)
        self.threshold = threshold
        self.clipped = norm > threshold

    def state_dict(self) -> dict[str, Any]:
        """The policy's state: tensors and numbers only."""
        return {"calls": self.calls, **self._state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""
        self.calls = int(state["calls"])
        self._load(state)

    def _state(self) -> dict[str, Any]:
        """The subclass's own state (none here)."""
        return {}

    def _load(self, state: dict[str, Any]) -> None:
        """Restore the subclass's own state (none here)."""
        return None


class NoClip(ClipPolicy):
    """Measure the norm, clip nothing."""

    def decide(self, norm: Tensor) -> float:
        return math.inf


class Fixed(ClipPolicy):
    """Clip the global norm to a fixed ``max_norm`` (chosen by hand).

    Example:
        >>> w = torch.zeros(2, requires_grad=True)
        >>> w.grad = torch.tensor([3.0, 4.0])
        >>> policy = Fixed(1.0)
        >>> policy([w]), policy.threshold, policy.clipped
        (tensor(5.), tensor(1., dtype=torch.float64), tensor(True))
    """

    def __init__(self, max_norm: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.max_norm = _positive("max_norm", max_norm)

    def decide(self, norm: Tensor) -> float:
        return self.max_norm


class Value(ClipPolicy):
    """Clamp every gradient element to [-value, value] (``clip_grad_value_``).

    ``threshold`` is ``value``; ``clipped`` says whether any element exceeded it.
    """

    def __init__(self, value: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.value = _positive("value", value)

    def __call__(self, parameters: Parameters) -> Tensor:
        params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
        grads = grads_of(params)
        norm = get_total_norm(grads, self.norm_type, foreach=self.foreach)
        peak = get_total_norm(grads, math.inf, foreach=self.foreach)
        clip_grad_value_(params, self.value, self.foreach)
        self.threshold = torch.tensor(self.value, dtype=torch.float64, device=norm.device)
        self.clipped = peak > self.threshold
        self.calls += 1
        return norm

    def decide(self, norm: Tensor) -> float:  # pragma: no cover - __call__ is its own
        return self.value


class _History:
    """Finite pre-clip norms, all of them or a sliding window of the last ``window``.

    Kept on the device with no host synchronisation: a (capacity, *shape) buffer
    filled with NaN, a device-side write position that advances only on a finite
    value, so a non-finite norm neither enters the history nor takes a window slot.
    The unbounded buffer doubles when the number of calls could exceed it. Readers
    use nan-aware reductions.
    """

    def __init__(self, window: int | None) -> None:
        self.window = window
        self.values: Tensor | None = None
        self.position: Tensor | None = None  # finite values written so far (device)
        self.calls = 0

    def append(self, value: Tensor) -> Tensor:
        """Add ``value`` if it is finite; return the buffer in use (NaN = empty slot)."""
        if self.values is None:
            capacity = self.window or 64
            self.values = value.new_full((capacity, *value.shape), math.nan)
            self.position = torch.zeros((), dtype=torch.long, device=value.device)
        if self.window is None and self.calls == self.values.shape[0]:
            grown = self.values.new_full((2 * self.calls, *value.shape), math.nan)
            grown[: self.calls] = self.values
            self.values = grown
        finite = torch.isfinite(value).all()
        slot = (self.position % self.window if self.window else self.position).view(1)
        kept = self.values.index_select(0, slot)[0]
        self.values.index_copy_(0, slot, torch.where(finite, value, kept).unsqueeze(0))
        self.position = self.position + finite.long()
        self.calls += 1
        return self.values if self.window else self.values[: self.calls]

    def state(self) -> dict[str, Any]:
        return {"values": self.values, "position": self.position, "calls": self.calls}

    def load(self, state: dict[str, Any]) -> None:
        self.values, self.position = state["values"], state["position"]
        self.calls = int(state["calls"])


class Percentile(ClipPolicy):
    """AutoClip: clip to the p-th percentile of the history of pre-clip norms.

    At every call the current norm joins the history first; the threshold is then
    the p-th percentile of the history (numpy's default linear interpolation), as in
    the AutoClip reference code. Non-finite norms are kept out of the history.

    Args:
        p: percentile in (0, 100].
        history: keep only the last ``history`` norms (None: all of them).
        per_parameter: keep one history per parameter tensor and clip each tensor's
            gradient to its own percentile (Keras-style per-tensor clipping); then
            ``threshold`` is a tensor (N,) and the returned norm is still global.

    References:
        Seetharaman, Wichern, Pardo & Le Roux (2020), AutoClip: adaptive gradient
        clipping for source separation networks.
    """

    def __init__(
        self, p: float = 10.0, history: int | None = None, per_parameter: bool = False, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.p = _fraction("p", p, 0.0, 100.0)
        self.per_parameter = bool(per_parameter)
        self._history = _History(None if history is None else _count("history", history, 1))

    def __call__(self, parameters: Parameters) -> Tensor:
        if not self.per_parameter:
            return super().__call__(parameters)
        params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
        grads = grads_of(params)
        norms = torch.stack(per_tensor_norms(grads, self.norm_type, self.foreach))  # (N,)
        thresholds = self._quantile(norms)
        clip_grad_norm_per_parameter_(params, thresholds, self.norm_type, self.foreach)
        self.threshold = thresholds
        self.clipped = (norms > thresholds).any()
        self.calls += 1
        return torch.linalg.vector_norm(norms, self.norm_type)

    def decide(self, norm: Tensor) -> Tensor:
        return self._quantile(norm)

    def _quantile(self, norm: Tensor) -> Tensor:
        values = self._history.append(finite_or_nan(norm))
        quantile = torch.nanquantile(values, self.p / 100.0, dim=0)
        return torch.where(torch.isnan(quantile), torch.full_like(quantile, math.inf), quantile)

    def _state(self) -> dict[str, Any]:
        return self._history.state()

    def _load(self, state: dict[str, Any]) -> None:
        self._history.load(state)


class ZScore(ClipPolicy):
    r"""ZClip: clip a norm whose z-score against an EMA of past norms is too high.

    The rule, exactly (``mode="zscore"``, ``clip_option="adaptive_scaling"`` of the
    ZClip reference code):

    * warm-up: the norms of the first ``warmup`` calls are collected and not clipped
      (other than by ``max_norm``); then mu = the mean and v = the population
      variance of the finite ones.
    * afterwards, with sigma = sqrt(v) and g this step's norm,
      z = (g - mu) / (sigma + 1e-6). If z > z_thr the reduced threshold is

      .. math:: \tau = \mu + \frac{z_{thr}^2}{z}\,\sigma
         \quad (= \mu + z_{thr}\sigma / (z / z_{thr}))

      so the larger the spike, the harder it is clipped; otherwise tau = inf. The
      threshold applied is min(tau, max_norm).
    * the statistics are then updated with g' = tau if the norm was a spike, else g:
      mu <- alpha mu + (1 - alpha) g', then v <- alpha v + (1 - alpha)(g' - mu)^2
      (with the updated mu). Non-finite norms leave the statistics untouched.

    Args:
        z: the z-score threshold z_thr.
        alpha: EMA factor.
        warmup: norms collected before the statistics start.
        max_norm: an optional fixed cap applied at every step.

    References:
        Kumar, Owen, Chowdhury & Güra (2025), ZClip: adaptive spike mitigation for
        LLM pre-training.
    """

    def __init__(
        self,
        z: float = 2.5,
        alpha: float = 0.97,
        warmup: int = 25,
        max_norm: float | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.z = _positive("z", z)
        self.alpha = _fraction("alpha", alpha, 0.0, 1.0)
        self.warmup = _count("warmup", warmup, 1)
        self.max_norm = _positive("max_norm", max_norm, allow_none=True)
        self._warm = _History(None)
        self.mean: Tensor | None = None
        self.var: Tensor | None = None

    def decide(self, norm: Tensor) -> Tensor | float:
        cap = math.inf if self.max_norm is None else self.max_norm
        if self.mean is None:
            values = self._warm.append(finite_or_nan(norm))
            if self._warm.calls >= self.warmup:
                self.mean = torch.nanmean(values)
                self.var = torch.nanmean((values - self.mean).square())
            return cap
        finite = torch.isfinite(norm)
        std = self.var.sqrt()
        z = (norm - self.mean) / (std + 1e-6)
        spike = finite & (z > self.z)
        tau = torch.where(spike, self.mean + self.z**2 / z * std, torch.full_like(norm, math.inf))
        seen = torch.where(spike, tau, norm)
        new_mean = self.alpha * self.mean + (1 - self.alpha) * seen
        new_var = self.alpha * self.var + (1 - self.alpha) * (seen - new_mean).square()
        # no finite warm-up norm yet: start from this one
        started = torch.isfinite(self.mean)
        new_mean = torch.where(started, new_mean, norm)
        new_var = torch.where(started, new_var, torch.zeros_like(norm))
        self.mean = torch.where(finite, new_mean, self.mean)
        self.var = torch.where(finite, new_var, self.var)
        return torch.clamp(tau, max=cap)

    def _state(self) -> dict[str, Any]:
        return {"warm": self._warm.state(), "mean": self.mean, "var": self.var}

    def _load(self, state: dict[str, Any]) -> None:
        self._warm.load(state["warm"])
        self.mean, self.var = state["mean"], state["var"]


class Calibrate(ClipPolicy):
    """Run unclipped for ``steps`` calls, then clip at the ``quantile`` of their norms.

    The recipe of choosing the threshold by looking at the gradient norms over enough
    iterations and clipping the unusually large ones. Non-finite norms among the
    ``steps`` are left out of the quantile.

    Args:
        steps: calls without clipping, whose norms are recorded.
        quantile: in (0, 1]; the threshold fixed after the recording.
    """

    def __init__(self, steps: int = 200, quantile: float = 0.9, **kw: Any) -> None:
        super().__init__(**kw)
        self.steps = _count("steps", steps, 1)
        self.quantile = _fraction("quantile", quantile, 0.0, 1.0)
        self._record = _History(None)
        self.fixed: Tensor | None = None

    def decide(self, norm: Tensor) -> Tensor | float:
        if self.fixed is not None:
            return self.fixed
        values = self._record.append(finite_or_nan(norm))
        if self._record.calls >= self.steps:
            fixed = torch.nanquantile(values, self.quantile)
            self.fixed = torch.where(torch.isnan(fixed), torch.full_like(fixed, math.inf), fixed)
        return math.inf

    def _state(self) -> dict[str, Any]:
        return {"record": self._record.state(), "fixed": self.fixed}

    def _load(self, state: dict[str, Any]) -> None:
        self._record.load(state["record"])
        self.fixed = state["fixed"]


class PerStep(NoClip):
    """Clip the hidden-state gradient at every time step instead of the parameters' gradient.

    Holds the taps (:class:`bptt.taps.ClipNorm` and/or :class:`bptt.taps.ClipValue`)
    to pass to the model; called on parameters it only measures their norm.

    Args:
        max_norm: per-sample bound on the norm of dL/ds_t at every step.
        value: per-element bound on dL/ds_t at every step.

    Example:
        >>> PerStep(max_norm=1.0).taps
        (ClipNorm(max_norm=1.0),)
    """

    def __init__(self, max_norm: float | None = None, value: float | None = None, **kw) -> None:
        super().__init__(**kw)
        if max_norm is None and value is None:
            raise ValueError("PerStep needs max_norm, value or both")
        taps = []
        if value is not None:
            taps.append(ClipValue(value))
        if max_norm is not None:
            taps.append(ClipNorm(max_norm))
        self.taps = tuple(taps)
