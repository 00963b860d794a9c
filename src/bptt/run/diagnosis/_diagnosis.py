"""``bptt diagnose RUN_DIR``: the verdict over a finished run, from its directory."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bptt.diagnose import Diagnosis, RunRecord, diagnose, judge_run
from bptt.precision import flush_denormal
from bptt.run.training import (
    ConfigError,
    TrainConfig,
    evaluation_mode,
    initial_model,
    json_safe,
    load_run,
    load_run_config,
    read_summary,
    remedies_for,
    test_set,
)
from bptt.tasks import Task

__all__ = ["diagnose_run"]


def diagnose_run(
    path: str | Path,
    *,
    probe: int = 32,
    dependency_length: int | None = None,
    at_init: bool = False,
) -> dict[str, Any]:
    """The verdict over a finished run: what the run saw (from its ``summary.json``)
    with a fresh probe of its model on ``probe`` test sequences.

    Args:
        path: the run directory.
        probe: probe sequences, from the run's own test set.
        dependency_length: how far back the task depends (None: the task's own).
        at_init: probe the model the run started from instead (rebuilt from
            ``config.toml`` and the seed, bit for bit the run's step 0; any run
            directory with a config, finished or not): the probe's verdict alone.
            Beside the final model's, it says whether training opened or closed the
            gradient's path back to the dependency.

    Returns:
        JSON-ready: ``verdict``, ``diverged``, ``reasons``, ``remedies`` (dicts with
        ``why`` and a ``bptt train`` ``command``), ``evidence``, and the probe's
        numbers and ``norms`` by distance. A run directory written before the run
        verdict existed is judged on the probe alone.

    Raises:
        ConfigError: no finished run there, or a bad ``probe`` or dependency length.
    """
    path = Path(path)
    if isinstance(probe, bool) or not isinstance(probe, int) or probe < 1:
        raise ConfigError("probe", f"must be >= 1; got {probe}")
    config, task, found = _probe(path, probe, dependency_length, at_init)
    summary = None if at_init else read_summary(path)
    if summary is None or summary.run_record is None:
        # at init, or an older run directory: the probe alone, with the library's
        # remedies (what to change and why: no run to make a command of)
        return json_safe({**found.to_dict(), "diverged": None, "evidence": {}})
    record = RunRecord()
    record.load_state_dict(summary.run_record)
    final = summary.final_loss
    verdict = judge_run(
        record,
        found,
        final_loss=math.nan if final is None else final,
        baseline=task.baseline_loss,
        solved=bool(summary.solved),
        truncation=config.tbptt_k2 or None,
        training_set=task.has_training_set,
    )
    return json_safe(
        {
            **found.to_dict(),
            **verdict.to_dict(),
            "remedies": remedies_for(verdict, config, str(path)),
        }
    )


def _probe(
    path: Path, probe: int, dependency_length: int | None, at_init: bool
) -> tuple[TrainConfig, Task, Diagnosis]:
    """The run's config and task, and the diagnosis of its final (or initial) model on
    the first ``probe`` sequences of its test set."""
    if at_init:
        config, task = load_run_config(path)
        model = initial_model(config, task)
    else:
        config, task, model = load_run(path)
    x, _ = test_set(config, task)
    length = task.dependency_length if dependency_length is None else dependency_length
    if length < 1:
        raise ConfigError("dependency_length", f"must be >= 1; got {length}")
    with flush_denormal(config.flush_denormal), evaluation_mode(model):
        return config, task, diagnose(model, x[:probe], length)
