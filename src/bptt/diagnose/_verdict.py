"""One verdict from the measurements: exploding, vanishing or healthy, and what to do."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from bptt import _checks
from bptt.cells import GRUCell, LSTMCell, RecurrentCell, State
from bptt.diagnose._distance import RATIO, gradient_by_distance
from bptt.diagnose._jacobian import jacobian_norms, recurrent_spectrum
from bptt.diagnose._kinds import Remedy, Verdict
from bptt.diagnose._layers import gradient_by_layer, recurrent_layers
from bptt.diagnose._projected import ProjectedLSTMCell
from bptt.diagnose._saturation import saturation
from bptt.diagnose._trajectory import cell_of, generator_seed, iterations, probe
from bptt.engine import unroll
from bptt.model import SequenceModel

__all__ = ["NUMBER_KEYS", "REMEDIES", "Diagnosis", "diagnose"]

GROWTH = 1.0 / RATIO  # exploding: the gradient grows by this factor within the dependency
NUMBER_KEYS = (
    "length",
    "dependency_length",
    "gamma",
    "horizon",
    "growth",
    "ratio_at_dependency",
    "underflow_at",
    "underflow_distance",
    "subnormal_max",
    "jacobian_mean",
    "jacobian_max",
    "rho",
    "sigma_max",
)

_CLIP_NORM = Remedy(
    "clip_norm",
    "clip the gradient norm near its typical size (bptt.clip.Fixed), or at a percentile "
    "of the run's own history of norms (bptt.clip.Percentile, AutoClip)",
)
_LOWER_LR = Remedy("lower_lr", "lower the learning rate")
REMEDIES: dict[Verdict, tuple[Remedy, ...]] = {
    Verdict.EXPLODING: (
        _CLIP_NORM,
        Remedy("clip_step", "clip the hidden-state gradient per time step (bptt.taps.ClipNorm)"),
        Remedy(
            "truncate", "truncate backprop through time (TBPTT with k2 below the growth horizon)"
        ),
        _LOWER_LR,
    ),
    Verdict.VANISHING: (
        Remedy(
            "gated_cell",
            "use a gated cell (lstm, gru), with a forget-gate bias or chrono initialisation",
        ),
        Remedy(
            "orthogonal_init",
            "initialise the recurrent matrix orthogonal or as the identity (IRNN)",
        ),
        Remedy(
            "skip_connections", "add skip connections between hidden states several steps apart"
        ),
        Remedy("reservoir", "use an echo state network (fixed reservoir, trained readout)"),
    ),
    Verdict.HEALTHY: (),
}
# an overflow above the recurrent layers (in the user's head or loss)
HEAD_REMEDIES = (
    Remedy(
        "inspect_head",
        "look at the head and the loss: their output or gradient overflows before any "
        "recurrent layer is reached (weights grown huge, a log or division of zero)",
    ),
    _LOWER_LR,
    _CLIP_NORM,
)
_CHRONO = Remedy(
    "chrono_init",
    "initialise the forget gates for the dependency length (chrono initialisation, "
    "bptt.init.chrono_) or raise their bias",
)


@dataclass
class Diagnosis:
    """The verdict and the numbers behind it.

    Attributes:
        verdict: :attr:`Verdict.EXPLODING`, ``VANISHING`` or ``HEALTHY`` (equal to
            the strings ``"exploding"``, ``"vanishing"``, ``"healthy"``).
        reasons: sentences saying which numbers decided it.
        remedies: what fits the verdict, as data (:class:`Remedy`: what to change and
            why; for a network of several layers, each names the layer).
        numbers: flat dict with stable keys (:data:`NUMBER_KEYS`: ``length``,
            ``dependency_length``, ``gamma``, ``horizon``, ``growth``,
            ``ratio_at_dependency``, ``underflow_at``, ``underflow_distance``,
            ``subnormal_max``, ``jacobian_mean``, ``jacobian_max``, ``rho``,
            ``sigma_max``; None where not measured), and a ``saturation/<gate>`` mean
            per gate for built-in cells.
        norms: the gradient norm by distance, tensor (T,).
        jacobian: the spectral norm of ds_t/ds_{t-1} at each step t of the probe's
            trajectory, averaged over the probe, tensor (T,) (None where it was not
            measured: NaN weights).
        layers: for a network of torch recurrent modules, one diagnosis per layer and
            direction (in the order the forward ran them), each with its ``name``
            (``"lstm layer 1 backward"``); the verdict above is the worst of theirs,
            and its numbers, norms and Jacobian are those of the layer that decided it.
        name: the layer a diagnosis in ``layers`` is of (None for the whole).
    """

    verdict: Verdict
    reasons: list[str]
    remedies: list[Remedy]
    numbers: dict[str, Any]
    norms: Tensor = field(repr=False)
    jacobian: Tensor | None = field(default=None, repr=False)
    layers: list[Diagnosis] = field(default_factory=list, repr=False)
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: verdict, reasons, remedies, numbers and the norms by distance
        (and, for a network of several recurrent layers, each layer's, under
        ``layers``)."""
        found = {
            **({} if self.name is None else {"name": self.name}),
            "verdict": self.verdict,
            "reasons": self.reasons,
            "remedies": [remedy.to_dict() for remedy in self.remedies],
            **self.numbers,
            "norms": [_finite_or_none(v) for v in self.norms.tolist()],
            "jacobian": None
            if self.jacobian is None
            else [_finite_or_none(v) for v in self.jacobian.tolist()],
        }
        if self.layers:
            found["layers"] = [layer.to_dict() for layer in self.layers]
        return found


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def diagnose(
    model: nn.Module,
    x: Tensor,
    dependency_length: int | None = None,
    state: State | None = None,
    *,
    y: Any = None,
    loss_fn: Callable[..., Tensor] | None = None,
    iters: int = 20,
    seed: int = 0,
) -> Diagnosis:
    """Judge whether gradients explode, vanish, or reach far enough.

    Measured on the probe batch x with :func:`gradient_by_distance` (the loss at the
    last step), :func:`jacobian_norms`, :func:`recurrent_spectrum` and, for built-in
    cells, :func:`saturation`. With L the dependency length (default: T):

    * ``exploding`` if the weights or the gradient are non-finite, or it grows by more than
      1e3 within L steps (observed; beyond T extrapolated with gamma);
    * ``vanishing`` if it falls below 1e-3 of its value at the loss within L steps
      (the horizon is shorter than L; beyond T extrapolated with gamma);
    * ``healthy`` otherwise.

    A network of the user's (any module holding ``torch.nn.RNN``/``LSTM``/``GRU``
    modules: several layers, bidirectional, time-major; or bptt cells it unrolls with
    :func:`bptt.unroll`, such as cells stacked by hand or a ``SequenceModel`` of
    several cells, each named by its path, ``cells.0``), or any model given ``y`` or
    ``loss_fn``, is diagnosed layer by layer under the user's loss
    (:func:`bptt.diagnose.gradient_by_layer`): each layer and direction gets its own
    verdict, numbers and remedies in ``layers``, and the verdict is the worst of
    theirs, naming the layer. Its weights, ``.grad``, buffers and mode are left as
    they were. An overflow above the recurrence is blamed on the head or the loss
    (with remedies of their own): when the gradient reaches every recurrent layer
    already non-finite, or when the loss is non-finite while every recurrent layer's
    output on the probe is finite. A head that is huge but still finite is not told
    apart: the size of dL/ds_t at the loss depends on the loss's own scale, and the
    verdicts read its ratios.

    Args:
        model: a cell, a :class:`bptt.SequenceModel`, or any module holding torch
            recurrent modules or bptt cells.
        x: a probe batch (B, T, F); for a network of the user's, what its forward
            takes.
        dependency_length: how far back the task needs information, an integer >= 1
            (None: T; beyond T the gradient is extrapolated with gamma).
        state: the initial state (None: zeros); not for a network of the user's.
        y: the targets of ``loss_fn`` (a network of the user's only).
        loss_fn: ``loss_fn(model(x), y) -> scalar`` (``loss_fn(model(x))`` without
            ``y``); None: the output projected on a fixed random unit vector.
        iters: power iterations for the Jacobian norms, >= 1.
        seed: seeds the projection and the power iterations.

    Raises:
        TypeError: ``model`` is not a module (or has no cell to follow), ``x`` is not
            a floating-point tensor, ``dependency_length``, ``iters`` or ``seed`` is not
            an integer.
        ValueError: ``x`` is not (B, T, F) with B, T >= 1 or holds NaN or inf (the input
            is at fault, not the model: no verdict is given on it); ``dependency_length``
            or ``iters`` is below 1.

    Example:
        >>> import bptt
        >>> cell = bptt.cells.RNNCell(1, 32)
        >>> with torch.no_grad():
        ...     _ = cell.weight_hh.mul_(0.1)
        >>> diagnose(cell, torch.randn(8, 60, 1)).verdict
        <Verdict.VANISHING: 'vanishing'>
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module (a cell or a model), got {_checks.shown(model)}"
        )
    if _by_layer(model, y, loss_fn):
        if state is not None:
            raise ValueError(
                "state applies to a cell; a network of the user's starts as its forward says"
            )
        return _diagnose_layers(model, x, dependency_length, y, loss_fn, iters, seed)
    cell = cell_of(model, state, name="model")
    x = probe(cell, x, state)
    steps = x.shape[1]
    if dependency_length is not None:
        dependency_length = _checks.integer("dependency_length", dependency_length, 1)
    length = steps if dependency_length is None else dependency_length
    iters, seed = iterations(iters), generator_seed(seed)
    diverged = _nonfinite_weights(model, steps, length)
    if diverged is not None:  # nothing to measure: every gradient through them is NaN
        return diverged
    measured = gradient_by_distance(cell, x, state, seed=seed)
    jac = jacobian_norms(cell, x, state, iters=iters, seed=seed)
    verdict, reasons, numbers = judge_distance(measured, length)
    numbers.update(jacobian_mean=float(jac.mean()), jacobian_max=float(jac.max()))
    numbers.update({k: v for k, v in recurrent_spectrum(cell).items() if k in ("rho", "sigma_max")})
    try:
        numbers.update(
            {f"saturation/{k}": float(v.mean()) for k, v in saturation(cell, x, state).items()}
        )
    except TypeError:
        pass  # a user cell: its gates are unknown
    remedies = _remedies(verdict, cell)
    return Diagnosis(verdict, reasons, remedies, numbers, measured["norms"], jac.mean(0))


def judge_distance(
    measured: dict[str, Any], length: int
) -> tuple[Verdict, list[str], dict[str, Any]]:
    """The verdict on one gradient-by-distance curve (:func:`gradient_by_distance`'s
    numbers) for a dependency of ``length`` steps: ``exploding`` if it is non-finite
    or grows by more than 1e3 within the dependency, ``vanishing`` if it falls below
    1e-3 of its value at the loss before it, else ``healthy`` (beyond the curve's T
    steps extrapolated with gamma).

    Returns:
        The verdict, its reasons, and the numbers of :data:`NUMBER_KEYS` it measured
        (the others None).
    """
    gamma, steps = measured["gamma"], measured["ratios"].shape[0]
    entry = measured.get("entry", 0)
    numbers: dict[str, Any] = dict.fromkeys(NUMBER_KEYS)
    if entry is None:
        numbers.update(length=steps, dependency_length=length, gamma=gamma)
        return Verdict.VANISHING, ["the gradient is exactly zero at every step"], numbers
    ratios = measured["ratios"][entry:]  # the curve from where the gradient enters
    available = ratios.shape[0]
    within = ratios[: min(length, available)]
    finite = bool(torch.isfinite(ratios).all())
    growth = float(within.max()) if finite else math.inf
    if length <= available:
        at_dependency = float(within[-1])
    elif math.isfinite(gamma) and gamma > 0:
        at_dependency = _extrapolated(float(ratios[-1]), gamma, length - available)
    else:
        at_dependency = float(ratios[-1])
    horizon = measured["horizon"]
    numbers.update(
        {
            "length": steps,
            "dependency_length": length,
            "gamma": gamma,
            "horizon": horizon,
            "growth": growth,
            "ratio_at_dependency": at_dependency,
            "underflow_at": measured["underflow_at"],
            "underflow_distance": measured["underflow_distance"],
            "subnormal_max": float(measured["subnormal_fraction"].max()),
        }
    )
    reasons: list[str] = []
    entered = measured.get("entered_at", entry)
    if available < 2 and finite and (entry > 0 or (entered or 0) > 0):
        verdict = Verdict.HEALTHY
        reasons.append(
            f"the loss reaches it at one step only (distance {entered or entry} from its "
            "end, its first step): no gradient travels through its recurrence under "
            "this loss"
        )
    elif not finite:
        verdict = Verdict.EXPLODING
        reasons.append("the hidden-state gradient became non-finite within the sequence")
    elif growth > GROWTH or at_dependency > GROWTH:
        verdict = Verdict.EXPLODING
        reasons.append(
            f"the gradient grows by {max(growth, at_dependency):.3g}x within {length} steps "
            f"(per-step rate gamma = {gamma:.4g})"
        )
    elif (horizon is not None and horizon < length) or at_dependency < RATIO:
        verdict = Verdict.VANISHING
        where = f"at distance {horizon}" if horizon is not None and horizon < length else ""
        reasons.append(
            f"the gradient falls below {RATIO:g} of its value at the loss {where} before the "
            f"dependency length {length} (gamma = {gamma:.4g}, ratio at {length}: "
            f"{at_dependency:.3g})".replace("  ", " ")
        )
        if measured["underflow_at"] is not None:
            reasons.append(f"it is exactly zero from distance {measured['underflow_at']} on")
    else:
        verdict = Verdict.HEALTHY
        reasons.append(
            f"the gradient keeps {at_dependency:.3g} of its size over {length} steps "
            f"(gamma = {gamma:.4g})"
        )
    return verdict, reasons, numbers


def _nonfinite_weights(model: nn.Module, steps: int | None, length: int | None) -> Diagnosis | None:
    """The verdict on a model whose weights hold NaN or inf (exploding: the training
    diverged), or None when they are finite. ``steps``: the probe's length, for the
    numbers (None: not known)."""
    broken = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if not broken:
        return None
    reason = (
        f"the weights hold NaN or inf ({', '.join(broken)}): the training diverged "
        "and the gradient overflowed before this"
    )
    numbers: dict[str, Any] = dict.fromkeys(NUMBER_KEYS)
    numbers.update(length=steps, dependency_length=length)
    nans = torch.full((steps or 1,), math.nan, dtype=torch.float64)
    return Diagnosis(Verdict.EXPLODING, [reason], list(REMEDIES[Verdict.EXPLODING]), numbers, nans)


def _by_layer(model: nn.Module, y: Any, loss_fn: Any) -> bool:
    """Whether ``model`` is diagnosed layer by layer: it holds torch recurrent modules
    and is not one a cell's diagnosis takes whole (a one-layer, one-direction,
    batch-first ``torch.nn.RNN``/``LSTM``/``GRU`` given no loss of its own), or it is
    given a loss."""
    if y is not None or loss_fn is not None:
        return True
    if isinstance(model, RecurrentCell) or callable(getattr(model, "recurrent_cell", None)):
        return False  # a cell, or a model that names the cell to follow
    if isinstance(model, nn.RNNBase) and type(model) in (nn.RNN, nn.LSTM, nn.GRU):
        one = model.num_layers == 1 and not model.bidirectional and not model.proj_size
        return not (one and model.batch_first)
    if isinstance(model, SequenceModel):  # one cell: a cell's diagnosis; several: by layer
        return len(model.recurrent_cells()) > 1  # the user's own cells counted too
    return bool(recurrent_layers(model))


def _diagnose_layers(
    model: nn.Module,
    x: Any,
    dependency_length: int | None,
    y: Any,
    loss_fn: Callable[..., Tensor] | None,
    iters: int,
    seed: int,
) -> Diagnosis:
    """:func:`diagnose` of a network of the user's, layer by layer."""
    if dependency_length is not None:
        dependency_length = _checks.integer("dependency_length", dependency_length, 1)
    iters, seed = iterations(iters), generator_seed(seed)
    if isinstance(x, Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        where = tuple(int(i) for i in (~torch.isfinite(x)).nonzero()[0])
        raise ValueError(
            f"x holds a non-finite value at index {where}: the input is at fault, not the "
            "model; diagnose on finite input"
        )
    diverged = _nonfinite_weights(model, None, dependency_length)
    if diverged is not None:
        return diverged
    layers = []
    arrived_nonfinite = []  # per layer: whether the gradient reached it non-finite
    outputs_finite = []  # per layer: whether what it computed on the probe is finite
    loss = math.nan
    for passed, measured in gradient_by_layer(model, x, y, loss_fn, seed=seed):
        entry = measured["entry"] or 0
        arrived_nonfinite.append(not math.isfinite(float(measured["norms"][entry])))
        loss = measured["loss"]
        with torch.no_grad():
            computed, _ = unroll(passed.cell, passed.inputs, state=passed.state)
        outputs_finite.append(bool(torch.isfinite(computed).all()))
        steps = passed.inputs.shape[1]
        length = steps if dependency_length is None else dependency_length
        verdict, reasons, numbers = judge_distance(measured, length)
        cell, inputs, state = passed.cell, passed.inputs, passed.state
        jac = jacobian_norms(cell, inputs, state, iters=iters, seed=seed)
        numbers.update(jacobian_mean=float(jac.mean()), jacobian_max=float(jac.max()))
        spectrum = recurrent_spectrum(cell)
        numbers.update({k: v for k, v in spectrum.items() if k in ("rho", "sigma_max")})
        try:
            saturated = saturation(cell, inputs, state)
        except TypeError:
            saturated = {}  # a user's cell: its gates are unknown
        numbers.update({f"saturation/{k}": float(v.mean()) for k, v in saturated.items()})
        remedies = _remedies(verdict, cell)
        layers.append(
            Diagnosis(
                verdict,
                reasons,
                remedies,
                numbers,
                measured["norms"],
                jac.mean(0),
                name=passed.name,
            )
        )
    overflowed = not math.isfinite(loss) and all(outputs_finite)
    if all(arrived_nonfinite) or overflowed:  # the recurrence is not where it overflows
        if all(arrived_nonfinite):  # the recurrence never saw a finite gradient
            reason = (
                "the gradient reaches every recurrent layer already non-finite: the head or "
                "the loss above them overflows, not the recurrence"
            )
        else:  # finite in, finite through every recurrent layer, non-finite out
            reason = (
                f"the loss is {loss} while every recurrent layer's output on the probe is "
                "finite (the weights too): the head or the loss above them overflows, not the "
                "recurrence"
            )
        worst = layers[0]
        return Diagnosis(
            Verdict.EXPLODING,
            [reason],
            list(HEAD_REMEDIES),
            dict(worst.numbers),
            worst.norms,
            worst.jacobian,
            layers,
        )
    verdict = min((layer.verdict for layer in layers), key=_SEVERITY.index)
    # the layer where it happens soonest first: a layer whose gradient reaches it only
    # through a vanishing one above it vanishes too, later
    named = sorted((layer for layer in layers if layer.verdict == verdict), key=_soonest)
    worst = named[0]
    reasons = [f"{layer.name}: {reason}" for layer in named for reason in layer.reasons]
    remedies = [replace(remedy, layer=worst.name) for remedy in worst.remedies]
    return Diagnosis(
        worst.verdict, reasons, remedies, dict(worst.numbers), worst.norms, worst.jacobian, layers
    )


_SEVERITY = (Verdict.EXPLODING, Verdict.VANISHING, Verdict.HEALTHY)


def _soonest(layer: Diagnosis) -> tuple[float, float]:
    """Order layers of one verdict: a shorter horizon, then a gradient that falls (or
    grows) faster, first."""
    numbers = layer.numbers
    horizon = numbers["horizon"] if numbers["horizon"] is not None else math.inf
    gamma = numbers["gamma"] if numbers["gamma"] is not None else math.nan
    if layer.verdict == Verdict.EXPLODING:
        growth = numbers["growth"] if numbers["growth"] is not None else math.inf
        return (-growth, -gamma if math.isfinite(gamma) else -math.inf)
    return (horizon, gamma if math.isfinite(gamma) else math.inf)


def _extrapolated(ratio: float, gamma: float, distance: int) -> float:
    """ratio * gamma ** distance, in log space: inf where it passes float's range, 0
    where it falls below it (``gamma ** distance`` alone raises OverflowError)."""
    if ratio == 0 or gamma == 1 or math.isnan(ratio):
        return ratio
    steps = math.inf if distance > 2**1000 else float(distance)
    exponent = math.log(ratio) + steps * math.log(gamma)
    return math.inf if exponent > 709 else math.exp(exponent)


def _remedies(verdict: Verdict, cell: nn.Module) -> list[Remedy]:
    """The general remedies of a verdict, less those the cell already follows."""
    remedies = list(REMEDIES[verdict])
    gated = isinstance(cell, (LSTMCell, GRUCell, ProjectedLSTMCell))
    if verdict == Verdict.VANISHING and gated:
        remedies[0] = _CHRONO
    return remedies
