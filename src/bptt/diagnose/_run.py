"""The verdict over a whole training run: what the run saw, with the probe of its model.

A spike detector compares each step with a trailing window, so steady exponential
growth (the commonest explosion) never looks like a spike. :class:`RunRecord` keeps,
in constant memory, what the whole run did instead: the early level of the loss and
of the gradient norm, how far they rose above it and when, non-finite and clipped
steps. :func:`judge_run` combines it with :func:`bptt.diagnose.diagnose`'s probe of
the final model into one verdict with its evidence.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from bptt.diagnose._kinds import Verdict
from bptt.diagnose._verdict import Diagnosis, _finite_or_none

__all__ = ["EARLY_STEPS", "RUN_VERDICTS", "RunRecord", "RunVerdict", "judge_run"]

EARLY_STEPS = 5  # the first finite steps set a run's early level (before a fast explosion)
GRADIENT_GROWTH = 1e3  # a gradient norm this far above its early level is an explosion
LOSS_GROWTH = 10.0  # a loss this far above max(its early level, the baseline) diverged
DEAD = 0.5  # half the ReLUs at exactly 0 on average
SATURATED = 0.5  # half the tanh units beyond |0.99| on average
NONFINITE_SHARE = 0.1  # a tenth of the steps skipped as NaN or inf
LATE_STEPS = 20  # the last finite steps set a run's late training-loss level
OVERFIT_GAP = 5.0  # a test loss this far above the late training loss: memorised

RUN_VERDICTS = tuple(Verdict)  # worst first; each equal to its string


@dataclass
class RunRecord:
    """What a training run saw, step by step, in constant memory (checkpointable).

    Call :meth:`update` after every step with its loss, its gradient norm (before
    clipping) and whether it was clipped.

    Attributes:
        steps: steps recorded.
        nonfinite_steps: steps whose loss or gradient norm was NaN or inf.
        clipped_steps: steps the clip policy scaled.
        early_loss, early_norm: the first :data:`EARLY_STEPS` finite values of steps
            with a non-zero gradient.
        first_nonfinite: the first non-finite step (None: none).
        peak_loss, peak_loss_step, peak_norm, peak_norm_step: the largest finite
            values and where they happened.
        last_loss: the last finite training loss.
        late_loss: the last :data:`LATE_STEPS` finite training losses.
        norm_growth_step: the first step whose gradient norm passed
            :data:`GRADIENT_GROWTH` times the early level (None: never).
    """

    steps: int = 0
    nonfinite_steps: int = 0
    clipped_steps: int = 0
    early_loss: list[float] = field(default_factory=list)
    early_norm: list[float] = field(default_factory=list)
    first_nonfinite: int | None = None
    peak_loss: float = -math.inf
    peak_loss_step: int | None = None
    peak_norm: float = -math.inf
    peak_norm_step: int | None = None
    last_loss: float = math.nan
    late_loss: list[float] = field(default_factory=list)
    norm_growth_step: int | None = None

    def update(self, step: int, loss: float, grad_norm: float, clipped: bool = False) -> None:
        """Record one step (1-based ``step``)."""
        self.steps += 1
        self.clipped_steps += bool(clipped)
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            self.nonfinite_steps += 1
            if self.first_nonfinite is None:
                self.first_nonfinite = step
            return
        # a step with no gradient at all (a truncated-BPTT window before the first
        # target) says nothing about the gradient's level: it would make any later
        # norm look like an explosion
        if len(self.early_loss) < EARLY_STEPS and grad_norm > 0:
            self.early_loss.append(loss)
            self.early_norm.append(grad_norm)
        if loss > self.peak_loss:
            self.peak_loss, self.peak_loss_step = loss, step
        if grad_norm > self.peak_norm:
            self.peak_norm, self.peak_norm_step = grad_norm, step
        self.last_loss = loss
        self.late_loss = [*self.late_loss[1 - LATE_STEPS :], loss]
        early = self.early_norm_level
        if (
            self.norm_growth_step is None
            and early is not None
            and grad_norm > GRADIENT_GROWTH * early
        ):
            self.norm_growth_step = step

    @property
    def early_loss_level(self) -> float | None:
        """The median of the early losses (None before the first finite step)."""
        return statistics.median(self.early_loss) if self.early_loss else None

    @property
    def late_loss_level(self) -> float | None:
        """The median of the last training losses (None before the first finite step)."""
        return statistics.median(self.late_loss) if self.late_loss else None

    @property
    def early_norm_level(self) -> float | None:
        """The median of the early gradient norms (None before the first finite step)."""
        return statistics.median(self.early_norm) if self.early_norm else None

    def state_dict(self) -> dict[str, Any]:
        """Numbers and lists only (loads with ``weights_only=True``)."""
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (or its JSON, where NaN and inf are null).

        Keys that are not fields are ignored.
        """
        fresh = RunRecord()
        for key in vars(fresh):
            if key not in state:
                continue
            value = state[key]
            default = getattr(fresh, key)
            if value is None and isinstance(default, float):
                value = default  # JSON wrote the starting -inf or NaN as null
            setattr(self, key, list(value) if isinstance(value, list) else value)

    def evidence(self) -> dict[str, Any]:
        """A flat dict of what the run saw, with stable keys."""
        return {
            "steps": self.steps,
            "nonfinite_steps": self.nonfinite_steps,
            "first_nonfinite_step": self.first_nonfinite,
            "clipped_steps": self.clipped_steps,
            "early_loss": self.early_loss_level,
            "peak_loss": _finite_or_none(self.peak_loss),
            "peak_loss_step": self.peak_loss_step,
            "last_loss": _finite_or_none(self.last_loss),
            "late_loss": self.late_loss_level,
            "early_grad_norm": self.early_norm_level,
            "peak_grad_norm": _finite_or_none(self.peak_norm),
            "peak_grad_norm_step": self.peak_norm_step,
            "grad_norm_growth_step": self.norm_growth_step,
        }


@dataclass
class RunVerdict:
    """One verdict over a run, its reasons and the evidence behind them.

    Attributes:
        verdict: a :class:`Verdict` (one of :data:`RUN_VERDICTS`; equal to its string).
        diverged: the loss ended non-finite or far above its start and the baseline.
        reasons: sentences, each with its numbers and steps.
        evidence: the run's :meth:`RunRecord.evidence` and the probe's numbers.
        history: what the run came through on its way that did not decide the verdict
            (a solved run whose gradient norm exploded for a while), one sentence each.
    """

    verdict: Verdict
    diverged: bool
    reasons: list[str]
    evidence: dict[str, Any]
    history: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "verdict": self.verdict,
            "diverged": self.diverged,
            "reasons": self.reasons,
            "history": self.history,
            "evidence": self.evidence,
        }


def _largest(numbers: dict[str, Any], keys: tuple[str, ...]) -> float:
    values = [numbers[k] for k in keys if isinstance(numbers.get(k), float)]
    return max(values) if values else 0.0


def judge_run(
    record: RunRecord,
    probe: Diagnosis | None,
    *,
    final_loss: float,
    baseline: float | None,
    solved: bool,
    truncation: int | None = None,
    training_set: bool = False,
) -> RunVerdict:
    """The verdict over a run: exploding, truncated, overfitting, dead units, saturated,
    vanishing, healthy but not learned, or healthy.

    In this order: a run that diverged (its final loss non-finite, or above
    :data:`LOSS_GROWTH` times both its early level and the baseline), whose gradient
    norm rose :data:`GRADIENT_GROWTH` times above its early level, or skipped a tenth of
    its steps as non-finite, without solving the task, is ``exploding``; a solved run
    is ``healthy``; then the probe of the final model decides (its gradient growing
    within the dependency: ``exploding``); a run trained by truncated BPTT over fewer
    steps than the dependency spans is ``truncated`` (no update ever saw the gradient
    that ties an output to its cause, however healthy the model's gradient is); a run
    on a fixed training set whose test loss ended :data:`OVERFIT_GAP` times above its
    late training loss (and below the baseline) is ``overfitting`` (it learned the
    training set: the gradient reached what it needed); then the probe again (half its
    ReLUs dead: ``dead units``; half its tanh units saturated: ``saturated``; its
    gradient fading before the dependency: ``vanishing``); a run whose gradients reach
    the dependency but which did not solve the task is ``healthy but not learned``.

    Args:
        record: what the run saw.
        probe: the diagnosis of the final model (None: none was made, e.g. NaN weights).
        final_loss: the final test metric.
        baseline: the task's baseline loss (None if it has none).
        solved: whether the task counts as solved.
        truncation: the steps each update backpropagated (truncated BPTT's k2), None
            for full backprop through time.
        training_set: whether the run trained on a fixed set (digits), which it can
            memorise; a generated task's training loss estimates its test loss.

    Example:
        >>> record = RunRecord()
        >>> for step in range(1, 61):
        ...     record.update(step, loss=1.5 * 2.0**step, grad_norm=3.0 * 1.5**step)
        >>> judge_run(record, None, final_loss=1e18, baseline=0.17, solved=False).verdict
        <Verdict.EXPLODING: 'exploding'>
    """
    evidence: dict[str, Any] = record.evidence()
    numbers = {} if probe is None else probe.numbers
    evidence.update({f"probe/{k}": v for k, v in numbers.items()})
    reasons: list[str] = []
    early = record.early_loss_level
    reference = max(v for v in (early, baseline, 0.0) if v is not None)
    diverged = not math.isfinite(final_loss) or (
        reference > 0 and final_loss > LOSS_GROWTH * reference
    )
    if diverged:
        reasons.append(
            f"the loss ended at {final_loss:.3g}, above {LOSS_GROWTH:g}x its early level "
            f"{_g(early)} and the baseline {_g(baseline)}"
            + (
                f" (peak {record.peak_loss:.3g} at step {record.peak_loss_step})"
                if record.peak_loss_step is not None
                else ""
            )
        )
    grew = record.norm_growth_step is not None
    if grew:
        reasons.append(
            f"the gradient norm rose from {_g(record.early_norm_level)} to "
            f"{record.peak_norm:.3g} (step {record.peak_norm_step}), past "
            f"{GRADIENT_GROWTH:g}x its early level from step {record.norm_growth_step}"
        )
    skipped = record.steps and record.nonfinite_steps >= NONFINITE_SHARE * record.steps
    if record.nonfinite_steps:
        reasons.append(
            f"{record.nonfinite_steps} of {record.steps} steps were NaN or inf, the first "
            f"at step {record.first_nonfinite}"
        )
    if diverged or ((grew or skipped) and not solved):
        return RunVerdict(Verdict.EXPLODING, diverged, reasons, evidence)
    if solved:  # what it came through on the way is history, not a reason for "healthy"
        solved_reason = f"the task is solved (test {final_loss:.3g}, baseline {_g(baseline)})"
        return RunVerdict(Verdict.HEALTHY, False, [solved_reason], evidence, history=reasons)
    if probe is not None and probe.verdict == Verdict.EXPLODING:
        return RunVerdict(Verdict.EXPLODING, False, reasons + probe.reasons, evidence)
    dependency = numbers.get("dependency_length")
    if truncation is not None and isinstance(dependency, int) and truncation < dependency:
        evidence["truncation"] = truncation
        reasons.append(
            f"truncated BPTT backpropagates {truncation} steps, fewer than the dependency "
            f"length {dependency}: no update sees the gradient that ties an output to its "
            f"cause (test {final_loss:.3g}, baseline {_g(baseline)})"
        )
        return RunVerdict(Verdict.TRUNCATED, False, reasons, evidence)
    late = record.late_loss_level
    below_baseline = baseline is None or final_loss < baseline
    if training_set and late is not None and below_baseline and final_loss > OVERFIT_GAP * late:
        reasons.append(
            f"the training loss ended at {late:.3g} (median of the last {len(record.late_loss)}"
            f" steps), the test loss at {final_loss:.3g}: {final_loss / max(late, 1e-300):.0f}x"
            " higher; the model learned its training set, not the task"
        )
        return RunVerdict(Verdict.OVERFITTING, False, reasons, evidence)
    dead = numbers.get("saturation/dead")
    if isinstance(dead, float) and dead >= DEAD:
        reasons.append(f"{dead:.0%} of the ReLU units are at exactly 0 on average: dead")
        return RunVerdict(Verdict.DEAD_UNITS, False, reasons, evidence)
    saturated = _largest(numbers, ("saturation/tanh", "saturation/g", "saturation/n"))
    if saturated >= SATURATED:
        reasons.append(f"{saturated:.0%} of the tanh units are beyond |0.99| on average")
        return RunVerdict(Verdict.SATURATED, False, reasons, evidence)
    if probe is not None and probe.verdict == Verdict.VANISHING:
        return RunVerdict(Verdict.VANISHING, False, reasons + probe.reasons, evidence)
    if probe is None:
        reasons.append(
            f"the task is not solved (test {final_loss:.3g}, baseline {_g(baseline)}); the "
            "model's gradient was not measured (the monitor was off)"
        )
        return RunVerdict(Verdict.NOT_LEARNED, False, reasons, evidence)
    reasons += probe.reasons
    reasons.append(
        f"the task is not solved (test {final_loss:.3g}, baseline {_g(baseline)}) though the "
        "gradient reaches the dependency: the optimisation budget or the learning rate"
    )
    return RunVerdict(Verdict.HEALTHY_NOT_LEARNED, False, reasons, evidence)


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
