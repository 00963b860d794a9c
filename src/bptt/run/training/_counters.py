"""What a run counts as it goes, typed: the steps it skipped, clipped and rolled back,
where it was solved, its last scores and its clock. Saved in every checkpoint as a
plain dict (:meth:`RunCounters.state_dict`), the form checkpoints have always held."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["RunCounters"]


@dataclass
class RunCounters:
    """A run's counters (what the whole run saw for its verdict is its
    :class:`bptt.diagnose.RunRecord`).

    Attributes:
        nonfinite_steps: steps whose loss or gradient was NaN or inf.
        clipped_steps: finite steps the clip policy scaled.
        rollbacks: returns to a checkpoint after a non-finite streak.
        streak: non-finite steps in a row, now.
        solved_step: the first evaluation that judged the task solved (None: none).
        loss: the last step's training loss.
        test_loss, test_accuracy: the last test scores (accuracy None for a regression).
        val_loss, val_accuracy: the last validation scores, with a validation split.
        wall_s: seconds of the loop so far, over every resumption.
        checkpoint_errors: checkpoints that could not be written.
    """

    nonfinite_steps: int = 0
    clipped_steps: int = 0
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

    def state_dict(self) -> dict[str, Any]:
        """The counters as a checkpoint holds them."""
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RunCounters:
        """The counters of a checkpoint; one written before a counter existed has it
        at its start (an older checkpoint has no ``checkpoint_errors``)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in known})
