"""A run's scores: the test set at each evaluation or, with a validation split, the
validation set at each evaluation, the best model kept, and the test set scored once
at the end on the model the validation chose."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from bptt.model import SequenceModel
from bptt.run.training._build import evaluate, test_set
from bptt.run.training._config import TrainConfig
from bptt.run.training._counters import RunCounters
from bptt.run.training._fields import ConfigError
from bptt.tasks import Task

__all__ = ["Evaluation"]


class Evaluation:
    """The held-out sets of a run and what was chosen on them.

    Attributes:
        x_test, y_test: the test set (``config.test_size`` sequences from the run's test
            seed; its first ``probe_size`` are the diagnoses' probe batch).
        validation: ``(x, y)`` taken out of the training set, or None.
        best: with validation, the best model so far: ``{"step", "score", "model"}``
            (checkpointed with the run).
    """

    def __init__(self, config: TrainConfig, task: Task) -> None:
        self.config, self.task = config, task
        self.x_test, self.y_test = test_set(config, task)
        # taken out of the training set before the batches are drawn from it
        self.validation = _validation_set(config, task) if config.validation_share else None
        self.best: dict[str, Any] | None = None

    def due(self, step: int, last: bool) -> bool:
        """Whether step ``step`` is evaluated: every ``eval_every`` steps, and the last."""
        return step % self.config.eval_every == 0 or last

    def score(self, model: SequenceModel, step: int, counters: RunCounters) -> float:
        """Score the validation set (keeping the best model) or else the test set,
        into ``counters``; returns the loss the task is judged solved on."""
        if self.validation is None:
            counters.test_loss, counters.test_accuracy = evaluate(
                model, self.task, self.x_test, self.y_test, self.config
            )
            return float(counters.test_loss)
        # only the planned evaluations may be chosen: a run cut by its time limit and
        # resumed chooses as the uninterrupted run does
        planned = step % self.config.eval_every == 0 or step == self.config.steps
        return self._validate(model, step, counters, candidate=planned)

    def _validate(
        self, model: SequenceModel, step: int, counters: RunCounters, candidate: bool
    ) -> float:
        """Score the validation set; a ``candidate`` model is kept if it is the best so
        far (accuracy, then loss). Returns the validation loss."""
        assert self.validation is not None  # called only with a validation set
        x_val, y_val = self.validation
        loss, accuracy = evaluate(model, self.task, x_val, y_val, self.config)
        counters.val_loss, counters.val_accuracy = loss, accuracy
        score = (accuracy if accuracy is not None else -math.inf, -loss)
        better = self.best is None or score > tuple(self.best["score"])
        if candidate and math.isfinite(loss) and better:
            kept = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.best = {"step": step, "score": list(score), "model": kept}
        return loss

    def select_best(self, model: SequenceModel, counters: RunCounters) -> dict[str, Any]:
        """With validation: load the best model into ``model`` and score the test set
        once on it; the summary's fields on the choice ({} without validation)."""
        if self.validation is None:
            return {}
        chosen = {"selected_step": None, "val_loss": None, "val_accuracy": None}
        if self.best is not None:
            model.load_state_dict(self.best["model"])
            accuracy, negative_loss = self.best["score"]
            chosen = {
                "selected_step": self.best["step"],
                "val_loss": -negative_loss,
                "val_accuracy": None if accuracy == -math.inf else accuracy,
            }
        counters.test_loss, counters.test_accuracy = evaluate(
            model, self.task, self.x_test, self.y_test, self.config
        )
        return {**chosen, "validation_share": self.config.validation_share}


def _validation_set(config: TrainConfig, task: Any) -> tuple[Tensor, Tensor]:
    """The task's validation split, on the run's device and dtype.

    Raises:
        ConfigError: the share is too small to take a single example.
    """
    try:
        x, y = task.hold_out(config.validation_share)
    except ValueError as err:
        raise ConfigError("validation_share", str(err)) from None
    return x.to(device=config.device, dtype=config.torch_dtype), y.to(config.device)
