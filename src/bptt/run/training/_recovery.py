"""Nothing lost, and a diverging run brought back: the checkpoints a run writes (every
``checkpoint_every`` steps, the points a roll-back returns to, and every
``checkpoint_every_s`` seconds, points to resume from only) and the count of
non-finite steps in a row that sends it back to the last one."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bptt.run.training._checkpoint import CheckpointError, Checkpoints
from bptt.run.training._config import TrainConfig
from bptt.run.training._counters import RunCounters
from bptt.run.training._rundir import RunDirectory

__all__ = ["Recovery"]


class Recovery:
    """When to checkpoint and when to roll back, and the checkpoints themselves.

    Args:
        config: the run's configuration (``checkpoint_every``, ``checkpoint_every_s``,
            ``keep_checkpoints``, ``nonfinite_patience``).
        run_dir: where the checkpoints go (None: kept in memory only, for roll-backs).
    """

    def __init__(self, config: TrainConfig, run_dir: RunDirectory | None) -> None:
        self.config, self.run_dir = config, run_dir
        directory = None if run_dir is None else run_dir.path / "checkpoints"
        self.checkpoints = Checkpoints(directory, config.keep_checkpoints)
        self.saved_at = time.perf_counter()  # when the last checkpoint was written

    def save(
        self,
        step: int,
        state: Callable[[], dict[str, Any]],
        model: nn.Module,
        counters: RunCounters,
        scheduled: bool = True,
    ) -> None:
        """Save ``state()`` as step ``step``'s checkpoint; a ``scheduled`` one (of
        ``checkpoint_every``) is also a point a roll-back returns to, one of the clock
        only a point to resume from, so the clock never changes what a run computes.
        Non-finite weights are not saved; a write that fails is counted in
        ``counters.checkpoint_errors`` and warned of, and the run goes on."""
        self.saved_at = time.perf_counter()
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            warnings.warn(f"step {step}: non-finite weights, no checkpoint written", stacklevel=3)
            return
        if self.run_dir is not None:
            self.run_dir.start()  # an earlier run's checkpoints go before the first is written
        try:
            self.checkpoints.save(step, state(), rollback_point=scheduled)
        except CheckpointError as err:
            counters.checkpoint_errors += 1
            warnings.warn(str(err), stacklevel=3)

    def should_roll_back(self, counters: RunCounters) -> bool:
        """``nonfinite_patience`` non-finite steps in a row, and a checkpoint to go to."""
        patience = self.config.nonfinite_patience
        return bool(patience) and counters.streak >= patience and self.checkpoints.last is not None

    def due(self, step: int, last: bool, counters: RunCounters) -> tuple[bool, bool]:
        """Whether step ``step`` is checkpointed: ``(due, scheduled)``, scheduled for a
        step of ``checkpoint_every`` (or the last), else by the clock. A step inside a
        non-finite streak is no good point to come back to."""
        config = self.config
        every = config.checkpoint_every
        scheduled = (step % every == 0 or last) if every > 0 else False
        every_s = config.checkpoint_every_s
        timely = 0 < every_s <= time.perf_counter() - self.saved_at and not last
        return (scheduled or timely) and counters.streak == 0, scheduled
