"""What a run counts as it goes, typed: the steps it skipped, clipped and rolled back,
where it was solved, its last scores and its clock, around the library's
:class:`bptt.diagnose.RunRecord` (what the run saw, for its verdict), which holds the
step counts both share. Saved in every checkpoint as the plain dict checkpoints have
always held (:meth:`RunCounters.state_dict`) beside the record's own."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from bptt.diagnose import RunRecord

__all__ = ["RunCounters"]

# the checkpoint's counters dict: these first, from the record, then the fields below
_FROM_RECORD = ("nonfinite_steps", "clipped_steps")


@dataclass
class RunCounters:
    """A run's counters and its record.

    Attributes:
        record: what the run saw step by step, for its verdict
            (:class:`bptt.diagnose.RunRecord`); it counts the skipped and clipped steps.
        rollbacks: returns to a checkpoint after a non-finite streak.
        streak: non-finite steps in a row, now.
        solved_step: the first evaluation that judged the task solved (None: none).
        loss: the last step's training loss (NaN where that step was not finite).
        test_loss, test_accuracy: the last test scores (accuracy None for a regression).
        val_loss, val_accuracy: the last validation scores, with a validation split.
        wall_s: seconds of the loop so far, over every resumption.
        checkpoint_errors: checkpoints that could not be written.
    """

    record: RunRecord = field(default_factory=RunRecord)
    rollbacks: int = 0
    streak: int = 0
    solved_step: int | None = None
    loss: float = math.nan
    test_loss: float = math.nan
    test_accuracy: float | None = None
    val_loss: float = math.nan
    val_accuracy: float | None = None
    wall_s: float = 0.0
    checkpoint_errors: int = 0

    @property
    def nonfinite_steps(self) -> int:
        """Steps whose loss or gradient was NaN or inf (skipped)."""
        return self.record.nonfinite_steps

    @property
    def clipped_steps(self) -> int:
        """Finite steps the clip policy scaled (a skipped step counts as not clipped)."""
        return self.record.clipped_steps

    def count(self, step: int, loss: float, grad_norm: float, clipped: bool) -> None:
        """One step (1-based) in the record and the streak; ``clipped`` only for a
        finite step."""
        self.record.update(step, loss, grad_norm, clipped)
        finite = math.isfinite(loss) and math.isfinite(grad_norm)
        self.streak = 0 if finite else self.streak + 1
        self.loss = loss

    def state_dict(self) -> dict[str, Any]:
        """The counters as a checkpoint holds them (the record: :meth:`record_state`)."""
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "record"}
        return {name: getattr(self, name) for name in _FROM_RECORD} | own

    def record_state(self) -> dict[str, Any]:
        """The record as a checkpoint holds it."""
        return self.record.state_dict()

    @classmethod
    def from_state(cls, state: dict[str, Any], record: dict[str, Any] | None) -> RunCounters:
        """The counters of a checkpoint (``state``) and its record. One written before a
        counter existed has it at its start (an older checkpoint has no
        ``checkpoint_errors``); one written before the record was kept, or whose record
        began after the run did, carries the counters' step counts into the record."""
        known = {f.name for f in fields(cls)} - {"record"}
        counters = cls(**{k: v for k, v in state.items() if k in known})
        if record is not None:
            counters.record.load_state_dict(record)
        for name in _FROM_RECORD:  # a record begun after the run: the counters' counts
            counted = max(getattr(counters.record, name), int(state.get(name, 0)))
            setattr(counters.record, name, counted)
        return counters
