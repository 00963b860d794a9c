"""Threshold policies: how large a gradient may be, decided afresh at every step.

A policy is called like :func:`clip_grad_norm_`: ``policy(parameters)`` computes the
total gradient norm, decides the threshold, clips in place and returns the norm
*before* clipping. Afterwards ``policy.threshold`` is the threshold it applied
(``inf`` where it applied none) and ``policy.clipped`` whether it clipped.

The statistics of a policy live on the host in float64: it reads the norm once per
call (one synchronisation with the device, which a training loop makes anyway to
log the norm), so its rules are exactly the reference definitions, cost
microseconds, and non-finite norms are simply left out of every history. The
gradients themselves are scaled on their device without a branch. The state is
explicit: ``state_dict()``/``load_state_dict()`` hold only tensors and numbers, so
it checkpoints with ``torch.save`` and loads with ``weights_only=True``.

Under ``torch.distributed`` data parallelism, call a policy after the gradient
all-reduce (after ``backward`` with DDP): every rank then sees the same gradients,
computes the same norm and keeps the same state.
"""

from __future__ import annotations

import bisect
import collections
import math
from typing import Any, Literal, overload

import torch
from torch import Tensor

from bptt import _checks
from bptt.clip._functional import (
    Parameters,
    clip_grad_norm_per_parameter_,
    clip_grad_value_,
    clip_grads_with_norm_,
    get_total_norm,
    grads_of,
    per_tensor_norms,
    tensors_of,
    unit_clip_,
)
from bptt.taps import ClipNorm, ClipValue

__all__ = [
    "AdaptiveClip",
    "Calibrate",
    "ClipPolicy",
    "Fixed",
    "NoClip",
    "PerStep",
    "Percentile",
    "Value",
    "ZScore",
    "quantile",
]


def quantile(sorted_values: list[float], q: float) -> float:
    """The q-quantile of sorted values by linear interpolation, as numpy's default.

    Returns inf for an empty list (no threshold).

    Example:
        >>> quantile([1.0, 2.0, 3.0, 4.0], 0.5)
        2.5
    """
    n = len(sorted_values)
    if n == 0:
        return math.inf
    position = q * (n - 1)
    low = math.floor(position)
    high = min(low + 1, n - 1)
    t = position - low
    a, b = sorted_values[low], sorted_values[high]
    # numpy's _lerp: interpolate from the nearer end, for symmetry in rounding
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


@overload
def _positive(name: str, value: float) -> float: ...
@overload
def _positive(name: str, value: float | None, *, allow_none: Literal[True]) -> float | None: ...
def _positive(name: str, value: float | None, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    return _checks.real(name, value, 0.0, open_low=True)


def _fraction(name: str, value: float, low: float, high: float) -> float:
    return _checks.real(name, value, low, high, open_low=True)


def _count(name: str, value: int, minimum: int) -> int:
    return _checks.integer(name, value, minimum)


class ClipPolicy:
    """The common machinery: compute the norm, ask for a threshold, clip, report.

    Subclasses implement :meth:`decide` (the threshold for this step's norm, and
    their state update) and the state of their own fields.

    Unlike :func:`bptt.clip.clip_grad_norm_` (torch's contract: the norm in the
    gradients' dtype), a policy measures a norm that overflows its dtype again in
    float64: a float32 gradient with finite elements beyond about 1.8e19 has an
    infinite float32 norm, and clipping exists for exactly that gradient. It is then
    clipped and stepped; only a gradient holding NaN or inf is reported non-finite.

    Attributes:
        threshold: the threshold applied by the last call (inf: none).
        clipped: whether the last call scaled the gradients.
        calls: how many times the policy was called.
        norm_type: p of the norm (2 unless given).
    """

    def __init__(self, norm_type: float = 2.0, foreach: bool | None = None) -> None:
        self.norm_type = _checks.real("norm_type", norm_type, 0.0, open_low=True, infinite=True)
        self.foreach = None if foreach is None else _checks.flag("foreach", foreach)
        self.threshold = math.inf
        self.clipped = False
        self.calls = 0

    def __call__(self, parameters: Parameters) -> Tensor:
        """Clip the gradients of ``parameters`` in place; return their norm before clipping.

        A call with no gradients at all returns 0, clips nothing and changes no state.
        """
        params = tensors_of(parameters)
        grads = grads_of(params)
        if not grads:
            return self._nothing()
        norm, value = self._total_norm(grads)
        threshold = self.decide(value)
        if threshold < math.inf:
            clip_grads_with_norm_(params, threshold, norm, self.foreach)
        self.threshold = threshold
        self.clipped = math.isfinite(value) and value > threshold
        self.calls += 1
        return norm

    def decide(self, norm: float) -> float:
        """This step's threshold given its pre-clip norm (inf for none)."""
        raise NotImplementedError

    def _total_norm(self, grads: list[Tensor]) -> tuple[Tensor, float]:
        """The pre-clip norm as torch computes it, and as a float; where that overflows
        (a float32 gradient with elements beyond about 1.8e19 squares to inf), the norm
        computed in float64 instead, so a finite explosion is clipped, not skipped."""
        norm = get_total_norm(grads, self.norm_type, foreach=self.foreach)
        value = norm.item()
        if math.isinf(value) and norm.dtype != torch.float64:
            wide = get_total_norm(grads, self.norm_type, foreach=self.foreach, dtype=torch.float64)
            if math.isfinite(wide.item()):
                return wide, wide.item()
        return norm, value

    def _nothing(self) -> Tensor:
        """The report of a call that found no gradient."""
        self.threshold, self.clipped = math.inf, False
        return torch.tensor(0.0)

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

    def decide(self, norm: float) -> float:
        return math.inf


class Fixed(ClipPolicy):
    """Clip the global norm to a fixed ``max_norm`` (chosen by hand).

    Example:
        >>> w = torch.zeros(2, requires_grad=True)
        >>> w.grad = torch.tensor([3.0, 4.0])
        >>> policy = Fixed(1.0)
        >>> policy([w]), policy.threshold, policy.clipped
        (tensor(5.), 1.0, True)
    """

    def __init__(self, max_norm: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.max_norm = _positive("max_norm", max_norm)

    def decide(self, norm: float) -> float:
        return self.max_norm


class Value(ClipPolicy):
    """Clamp every gradient element to [-value, value] (``clip_grad_value_``).

    ``threshold`` is ``value``; ``clipped`` says whether any element exceeded it.
    """

    def __init__(self, value: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.value = _positive("value", value)

    def __call__(self, parameters: Parameters) -> Tensor:
        params = tensors_of(parameters)
        grads = grads_of(params)
        if not grads:
            return self._nothing()
        norm, _ = self._total_norm(grads)
        peak = get_total_norm(grads, math.inf, foreach=self.foreach).item()
        clip_grad_value_(params, self.value, self.foreach)
        self.threshold = self.value
        self.clipped = peak > self.value
        self.calls += 1
        return norm

    def decide(self, norm: float) -> float:
        return self.value


class _Window:
    """Finite values, all of them or the last ``size``, kept sorted for quantiles."""

    def __init__(self, size: int | None) -> None:
        self.size = size
        self.arrival: collections.deque[float] = collections.deque()
        self.ordered: list[float] = []

    def add(self, value: float) -> None:
        """Add a value if it is finite (dropping the oldest beyond the window)."""
        if not math.isfinite(value):
            return
        self.arrival.append(value)
        bisect.insort(self.ordered, value)
        if self.size is not None and len(self.arrival) > self.size:
            del self.ordered[bisect.bisect_left(self.ordered, self.arrival.popleft())]

    def state(self) -> Tensor:
        return torch.tensor(list(self.arrival), dtype=torch.float64)

    def load(self, values: Tensor) -> None:
        kept = values.tolist()
        if self.size is not None:
            kept = kept[len(kept) - self.size :] if len(kept) > self.size else kept
        self.arrival = collections.deque(kept)
        self.ordered = sorted(self.arrival)


class Percentile(ClipPolicy):
    """AutoClip: clip to the p-th percentile of the history of pre-clip norms.

    At every call the current norm joins the history first; the threshold is then
    the p-th percentile of the history (numpy's default linear interpolation), as in
    the AutoClip reference code. Non-finite norms are kept out of the history.

    Args:
        p: percentile in (0, 100].
        history: keep only the last ``history`` norms (None: all of them).
        per_parameter: keep one history per parameter tensor and clip each tensor's
            gradient to its own percentile; ``thresholds`` then lists them and
            ``threshold`` is the global norm they allow together.

    References:
        Seetharaman, Wichern, Pardo & Le Roux (2020), AutoClip: adaptive gradient
        clipping for source separation networks.
    """

    def __init__(
        self, p: float = 10.0, history: int | None = None, per_parameter: bool = False, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.p = _fraction("p", p, 0.0, 100.0)
        self.history = None if history is None else _count("history", history, 1)
        self.per_parameter = bool(per_parameter)
        self._windows: list[_Window] = [] if per_parameter else [_Window(self.history)]
        self.thresholds: list[float] = []

    def decide(self, norm: float) -> float:
        window = self._windows[0]
        window.add(norm)
        return quantile(window.ordered, self.p / 100.0)

    def __call__(self, parameters: Parameters) -> Tensor:
        if not self.per_parameter:
            return super().__call__(parameters)
        params = tensors_of(parameters)
        grads = grads_of(params)
        if not grads:
            return self._nothing()
        norms = torch.stack(per_tensor_norms(grads, self.norm_type, self.foreach))  # (N,)
        if torch.isinf(norms).any():  # float32 squares overflow: measure in float64
            wide = per_tensor_norms(grads, self.norm_type, self.foreach, dtype=torch.float64)
            norms = torch.stack(wide)
        values = norms.tolist()
        if not self._windows:
            self._windows = [_Window(self.history) for _ in values]
        if len(values) != len(self._windows):
            raise ValueError(
                f"per-parameter Percentile was set up for {len(self._windows)} gradients, "
                f"got {len(values)}"
            )
        finite = all(math.isfinite(v) for v in values)
        thresholds = []
        for window, value in zip(self._windows, values, strict=True):
            if finite:  # a step with any non-finite norm stays out of every history
                window.add(value)
            thresholds.append(quantile(window.ordered, self.p / 100.0))
        bounds = torch.tensor(thresholds, dtype=norms.dtype, device=norms.device)
        clip_grad_norm_per_parameter_(params, bounds, self.norm_type, self.foreach)
        self.thresholds = thresholds
        self.threshold = math.hypot(*thresholds) if thresholds else math.inf
        self.clipped = finite and any(v > t for v, t in zip(values, thresholds, strict=True))
        self.calls += 1
        return torch.linalg.vector_norm(norms, self.norm_type)

    def _state(self) -> dict[str, Any]:
        return {"histories": [w.state() for w in self._windows]}

    def _load(self, state: dict[str, Any]) -> None:
        self._windows = []
        for values in state["histories"]:
            window = _Window(self.history)
            window.load(values)
            self._windows.append(window)


class ZScore(ClipPolicy):
    r"""ZClip: clip a norm whose z-score against an EMA of past norms is too high.

    The rule, exactly (``mode="zscore"``, ``clip_option="adaptive_scaling"`` of the
    ZClip reference code):

    * warm-up: the norms of the first ``warmup`` calls are collected and not clipped
      (other than by ``max_norm``); then mu = the mean and v = the population
      variance of the finite ones.
    * afterwards, with sigma = sqrt(v) and g this step's norm,
      z = (g - mu) / (sigma + 1e-6). If z > z_thr the reduced threshold is

      .. math:: \tau = \mu + \frac{z_{thr}\,\sigma}{z / z_{thr}}
         \quad (= \mu + z_{thr}^2 \sigma / z)

      so the larger the spike, the harder it is clipped; otherwise tau = inf. The
      threshold applied is min(tau, max_norm).
    * the statistics are then updated with g' = tau if the norm was a spike, else g:
      mu <- alpha mu + (1 - alpha) g', then v <- alpha v + (1 - alpha)(g' - mu)^2
      (with the updated mu). A non-finite norm leaves the statistics untouched.

    Args:
        z: the z-score threshold z_thr.
        alpha: EMA factor.
        warmup: calls whose norms start the statistics.
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
        self._warm: list[float] = []
        self.mean: float | None = None
        self.var: float | None = None

    def decide(self, norm: float) -> float:
        cap = math.inf if self.max_norm is None else self.max_norm
        finite = math.isfinite(norm)
        if self.calls < self.warmup:
            if finite:
                self._warm.append(norm)
            if self.calls + 1 == self.warmup and self._warm:
                self.mean = sum(self._warm) / len(self._warm)
                self.var = sum((x - self.mean) ** 2 for x in self._warm) / len(self._warm)
            return cap
        if not finite:
            return cap
        if self.mean is None:  # no finite norm during the warm-up: start from this one
            self.mean, self.var = norm, 0.0
            return cap
        assert self.var is not None  # set together with the mean
        std = math.sqrt(self.var)
        z = (norm - self.mean) / (std + 1e-6)
        tau = self.mean + self.z * std / (z / self.z) if z > self.z else math.inf
        seen = norm if tau == math.inf else tau
        self.mean = self.alpha * self.mean + (1 - self.alpha) * seen
        self.var = self.alpha * self.var + (1 - self.alpha) * (seen - self.mean) ** 2
        return min(tau, cap)

    def _state(self) -> dict[str, Any]:
        return {
            "warm": torch.tensor(self._warm, dtype=torch.float64),
            "mean": self.mean,
            "var": self.var,
        }

    def _load(self, state: dict[str, Any]) -> None:
        self._warm = state["warm"].tolist()
        self.mean, self.var = state["mean"], state["var"]


class Calibrate(ClipPolicy):
    """Run unclipped for ``steps`` calls, then clip at the ``quantile`` of their norms.

    The recipe of choosing the threshold by looking at the gradient norms over enough
    iterations and clipping the unusually large ones. Non-finite norms among the
    ``steps`` are left out of the quantile; if all of them were non-finite there is
    nothing to calibrate on and the threshold stays inf (no clipping).

    Args:
        steps: calls without clipping, whose norms are recorded.
        quantile: in (0, 1]; the threshold fixed after the recording.
    """

    def __init__(self, steps: int = 200, quantile: float = 0.9, **kw: Any) -> None:
        super().__init__(**kw)
        self.steps = _count("steps", steps, 1)
        self.quantile = _fraction("quantile", quantile, 0.0, 1.0)
        self._record = _Window(None)
        self.fixed: float | None = None

    def decide(self, norm: float) -> float:
        if self.fixed is not None:
            return self.fixed
        self._record.add(norm)
        if self.calls + 1 == self.steps:
            self.fixed = quantile(self._record.ordered, self.quantile)
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
        taps: list[ClipValue | ClipNorm] = []
        if value is not None:
            taps.append(ClipValue(value))
        if max_norm is not None:
            taps.append(ClipNorm(max_norm))
        self.taps = tuple(taps)


class AdaptiveClip(ClipPolicy):
    r"""AGC: clip each unit's gradient to a fraction of the norm of its own weights.

    The rule of :func:`bptt.clip.adaptive_clip_grad_`, unit by unit (a unit is a row
    of a weight (U, ...), or a whole tensor of 0 or 1 dims):

    .. math:: \|g_u\| \le \lambda \max(\|W_u\|, \epsilon)

    so the bound moves with the weights: a unit with small weights cannot take a large
    step, whatever the other units' gradients. There is no history: the state is the
    number of calls. After a call ``threshold`` is the total norm the units' bounds
    allow together (the p-norm of all of them: the largest total norm a clipped
    gradient can have), ``clipped`` whether any unit was scaled (False where the
    gradient is non-finite), and the return value the total norm before clipping.

    Args:
        clipping: λ > 0, the largest ratio of a unit's gradient norm to its weight
            norm; 0.01 is timm's default (the paper tunes it with the batch size).
        eps: ε > 0, the least weight norm a unit counts with, so zero-initialised
            weights (biases) can move.
        norm_type: p of the norms.

    References:
        Brock, De, Smith & Simonyan (2021), High-performance large-scale image
        recognition without normalization, section 4.1; timm's
        ``timm.utils.agc.adaptive_clip_grad`` (the conventions, tested equal).

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
        >>> w.grad = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> policy = AdaptiveClip(0.1)
        >>> policy([w]), policy.clipped
        (tensor(1.4142), True)
        >>> round(policy.threshold, 6)  # hypot(0.5, 1e-4)
        0.5
    """

    def __init__(self, clipping: float = 0.01, eps: float = 1e-3, **kw: Any) -> None:
        super().__init__(**kw)
        self.clipping = _positive("clipping", clipping)
        self.eps = _positive("eps", eps)

    def __call__(self, parameters: Parameters) -> Tensor:
        params = tensors_of(parameters)
        if not grads_of(params):
            return self._nothing()
        seen = unit_clip_(params, self.clipping, self.eps, self.norm_type)
        norm, allowed, clipped = torch.stack(
            [seen.norm.double(), seen.allowed.double(), seen.clipped.double()]
        ).tolist()  # one read on the host
        self.threshold = allowed
        self.clipped = math.isfinite(norm) and clipped > 0
        self.calls += 1
        return seen.norm

    def decide(self, norm: float) -> float:
        raise NotImplementedError(
            "AdaptiveClip bounds each unit by its own weights; a total norm alone "
            "decides nothing: call the policy on the parameters"
        )
