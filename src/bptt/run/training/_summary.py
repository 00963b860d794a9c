"""What ``summary.json`` holds, as a typed record: validated when a run writes it and
when anything reads it back.

One model serves the three kinds of summary a run directory may hold: a training
run's (``bptt train``: the outcome, then its verdict and diagnosis), an echo state
network's (``bptt esn``: its scores) and the stub of a run stopped by a non-finite
step (``task``, ``steps_done``, ``error``). Every known key is typed and optional but
``task``; keys it does not know are kept (a file written by a later version reads).
A training run writes a number JSON cannot hold (NaN, inf) as null.

Whatever reads a summary reads it as this model (:func:`~bptt.run.training.read_summary`
gives one), by attribute, so a key renamed here fails the type check of its readers.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bptt.diagnose import Verdict

__all__ = ["RemedyCommand", "RunDiagnosis", "RunSummary", "summary_problem"]


class _Record(BaseModel):
    # keys of a later version are kept; numbers stay the type they were written as
    model_config = ConfigDict(extra="allow", strict=False)


class RemedyCommand(_Record):
    """A remedy of a run: why, and the ``bptt train`` command that applies it."""

    why: str
    command: str


class RunDiagnosis(_Record):
    """The reasons for a run's verdict, what it came through on the way, its
    remedies and the numbers behind them (``evidence``: the run's record and the
    probe's numbers, flat keys)."""

    reasons: list[str]
    history: list[str] = []
    remedies: list[RemedyCommand] = []
    evidence: dict[str, Any] = {}


class RunSummary(_Record):
    """``summary.json``. A training run's keys (None where it has no value, e.g. a
    regression task's accuracy), then the echo state network's (None in a training
    run's); anything written by a later version comes as an extra key.

    Example:
        >>> RunSummary.model_validate({"task": "adding", "verdict": "vanishing"}).verdict
        <Verdict.VANISHING: 'vanishing'>
    """

    task: str
    # what was trained
    length: int | None = None
    method: str | None = None
    cell: str | None = None
    hidden: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    clip: str | None = None
    clip_norm: float | None = None
    clip_step_norm: float | None = None
    batch_size: int | None = None
    seed: int | None = None
    steps: int | None = None
    tbptt_k1: int | None = None
    tbptt_k2: int | None = None
    threads: int | None = None
    # what it reached
    steps_done: int | None = None
    time_limited: bool | None = None
    metric: str | None = None
    final_loss: float | None = None
    accuracy: float | None = None
    train_loss: float | None = None
    baseline_loss: float | None = None
    solved: bool | None = None
    solved_step: int | None = None
    selected_step: int | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    validation_share: float | None = None
    # what it went through
    clipped_steps: int | None = None
    nonfinite_steps: int | None = None
    rollbacks: int | None = None
    checkpoint_errors: int | None = None
    spikes: int | None = None
    diverged: bool | None = None
    wall_s: float | None = None
    error: str | None = None
    # its verdict (None until the final diagnosis has run); one this version does not
    # know (written by a later one) stays a string
    verdict: Verdict | str | None = Field(None, union_mode="left_to_right")
    diagnosis: RunDiagnosis | None = None
    run_record: dict[str, Any] | None = None
    probe: dict[str, Any] | None = None
    diagnose_s: float | None = None  # present once the final diagnosis has run
    # an echo state network's (bptt esn): its reservoir and scores
    units: int | None = None
    nrmse: float | None = None
    nrmse_84: float | None = None
    nrmse_free: float | None = None
    free_steps: int | None = None
    test_errors: int | None = None
    test_size: int | None = None


def summary_problem(summary: Any) -> str | None:
    """Why ``summary`` is not a valid :class:`RunSummary` (its first error, with the
    key), or None if it is."""
    try:
        RunSummary.model_validate(summary)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "summary"
        return f"{where}: {first['msg']}"
    return None
