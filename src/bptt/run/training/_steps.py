"""How one optimizer step is taken: first order (backward, monitor, clip, step), or
Hessian-free (the optimizer evaluates, solves and steps itself).

The run chooses its step rule once (:func:`make_step_rule`); the loop calls it and
reads its :class:`StepReport`, never asking which optimizer it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn

from bptt.cells import OrthogonalRNNCell
from bptt.clip import ClipPolicy
from bptt.diagnose import Monitor
from bptt.model import SequenceModel
from bptt.run.training._batches import SequenceBatches, StreamBatches
from bptt.run.training._build import learning_rate
from bptt.run.training._config import TrainConfig
from bptt.run.training._counters import RunCounters
from bptt.run.training._settings import FirstOrder, OptimizerHF
from bptt.tasks import Task

if TYPE_CHECKING:
    from bptt.optim import HessianFree

__all__ = ["FirstOrderStep", "HessianFreeStep", "StepReport", "make_step_rule"]

GradientHook = Callable[[int, nn.Module], None]


@dataclass
class StepReport:
    """What one step did.

    Attributes:
        loss: the step's training loss (before the step).
        grad_norm: the gradient's norm before clipping.
        finite: whether both were finite (else the step was skipped).
        clipped: whether clipping changed the gradient.
        watched: the monitor's (or the optimizer's) flat dict for the metrics row.
    """

    loss: float
    grad_norm: float
    finite: bool
    clipped: bool = False
    watched: dict[str, Any] = field(default_factory=dict)


class FirstOrderStep:
    """Backward through the batch source's loss, the monitor, the clip policy, then
    the optimizer's step at the scheduled rate; a non-finite step is skipped.

    Args:
        config: the run's configuration.
        model, optimizer, batches, policy, monitor: the run's parts (monitor may be None).
        on_gradients: ``on_gradients(step, model)`` after each backward, before
            monitoring and clipping (gradient surgery; fault injection in tests).
    """

    def __init__(
        self,
        config: TrainConfig,
        model: SequenceModel,
        optimizer: torch.optim.Optimizer,
        batches: SequenceBatches | StreamBatches,
        policy: ClipPolicy,
        monitor: Monitor | None,
        on_gradients: GradientHook | None = None,
    ) -> None:
        self.config, self.model, self.optimizer, self.batches = config, model, optimizer, batches
        self.policy, self.monitor, self.on_gradients = policy, monitor, on_gradients
        self.params = [p for p in model.parameters() if p.requires_grad]

    @property
    def reported_lr(self) -> float:
        """The configured learning rate, for the summary."""
        return cast(FirstOrder, self.config.optimizer).lr  # what built the optimizer

    def __call__(
        self, step: int, counters: RunCounters, computed: tuple[Tensor, Any] | None = None
    ) -> StepReport:
        """Take step ``step`` (1-based); ``counters`` are the run's (read only).

        ``computed``: the step's ``(loss, rerun)`` with its gradients already in the
        parameters' ``.grad`` (several runs stacked into one backward); None: this
        draws the batch and backpropagates.
        """
        config = self.config
        if computed is None:
            loss, rerun = self.batches.next()
            self.optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
        else:
            loss, rerun = computed
        if self.on_gradients is not None:
            self.on_gradients(step, self.model)
        watched: dict[str, Any] = {}
        if self.monitor is not None:  # before clipping; a non-finite step is rerun
            logged = step % config.log_every == 0 or step == config.steps
            wanted = logged or counters.nonfinite_steps == 0 or config.nonfinite == "raise"
            watched = self.monitor.step(step, loss, rerun=rerun if wanted else None)
        grad_norm = self.policy(self.params)  # clips in place; the norm before clipping
        loss_value, norm_value = loss.item(), grad_norm.item()
        finite = math.isfinite(loss_value) and math.isfinite(norm_value)
        if finite:
            rate = learning_rate(config, step, counters.rollbacks)
            settings = cast(FirstOrder, config.optimizer).step_settings(step)
            for group in self.optimizer.param_groups:
                group["lr"] = rate * group.get("lr_scale", 1.0)  # older checkpoints: none
                group.update(settings)
            self.optimizer.step()
            if config.rebase_every and step % config.rebase_every == 0:
                for cell in self.model.recurrent_cells():  # the config checked the cell
                    cast(OrthogonalRNNCell, cell).rebase()
        else:
            self.optimizer.zero_grad(set_to_none=True)
        return StepReport(loss_value, norm_value, finite, finite and self.policy.clipped, watched)

    def after_rollback(self, rollbacks: int) -> None:
        """Nothing to do: the learning rate is set before each step, roll-backs counted."""


class HessianFreeStep:
    """One Hessian-free step on the next batch, its curvature on the batch's first
    share (``hf_curvature_fraction``); structural damping sees the hidden states."""

    def __init__(
        self,
        config: TrainConfig,
        task: Task,
        model: SequenceModel,
        optimizer: HessianFree,
        batches: SequenceBatches,
    ) -> None:
        self.config, self.task, self.model = config, task, model
        self.optimizer, self.batches = optimizer, batches

    @property
    def reported_lr(self) -> None:
        """Hessian-free has no learning rate of the config's (damping sets its steps)."""
        return None

    def __call__(
        self, step: int, counters: RunCounters, computed: tuple[Tensor, Any] | None = None
    ) -> StepReport:
        """Take step ``step``; the optimizer's numbers go into the metrics row.

        Raises:
            ValueError: ``computed`` given (Hessian-free evaluates its own closures).
        """
        if computed is not None:
            raise ValueError("a Hessian-free step computes its own gradients")
        x, y = self.batches.sample()
        settings = cast(OptimizerHF, self.config.optimizer)  # what built the optimizer
        share = max(1, round(x.shape[0] * settings.curvature_fraction))
        structural = settings.mu > 0  # then the hidden states join the outputs

        def closure(x: Tensor = x, y: Tensor = y) -> tuple[Tensor, ...]:
            if structural:
                prediction, hidden = self.model.predict_with_hidden(x)
                return self.task.loss(prediction, y), prediction, hidden
            prediction = self.model(x)[0]
            return self.task.loss(prediction, y), prediction

        def curvature(x: Tensor = x[:share], y: Tensor = y[:share]) -> tuple[Tensor, ...]:
            return closure(x, y)

        loss = float(self.optimizer.step(closure, curvature if share < x.shape[0] else None))
        last = self.optimizer.last
        norm = float(last.get("grad_norm", 0.0))
        finite = math.isfinite(loss) and math.isfinite(norm)
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
        watched = {k: last[k] for k in ("cg_iters", "damping", "rho", "alpha")}
        return StepReport(loss, norm, finite, False, watched)

    def after_rollback(self, rollbacks: int) -> None:
        """Back at a checkpoint: a trust region shrunk by more damping."""
        scale = self.config.rollback_lr_factor**rollbacks
        for group in self.optimizer.param_groups:
            group["damping"] = max(
                group["damping"], cast(OptimizerHF, self.config.optimizer).damping / scale
            )


def make_step_rule(
    config: TrainConfig,
    task: Task,
    model: SequenceModel,
    optimizer: torch.optim.Optimizer,
    batches: SequenceBatches | StreamBatches,
    policy: ClipPolicy,
    monitor: Monitor | None,
    on_gradients: GradientHook | None = None,
) -> FirstOrderStep | HessianFreeStep:
    """The step rule the config's optimizer needs."""
    if isinstance(config.optimizer, OptimizerHF):
        # make_optimizer's HessianFree; the config refuses hf for a stream task
        hf, sequences = cast("HessianFree", optimizer), cast(SequenceBatches, batches)
        return HessianFreeStep(config, task, model, hf, sequences)
    return FirstOrderStep(config, model, optimizer, batches, policy, monitor, on_gradients)
