"""The one training loop: a validated config in, a trained model and a run directory out."""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress
from torch import nn

from bptt.model import SequenceModel
from bptt.run.training._build import build_model, json_safe, make_clip_policy, step_taps, test_set
from bptt.run.training._checkpoint import CheckpointError
from bptt.run.training._config import TrainConfig
from bptt.run.training._errors import first_line, load_failure
from bptt.run.training._fields import ConfigError, load_toml
from bptt.run.training._io import read_bounded, tensor_bytes
from bptt.run.training._loop import NonFiniteError, Run, RunStopped
from bptt.run.training._rundir import (
    RunDirectory,
    RunDirectoryBusy,
    RunDirectoryError,
    read_summary,
)
from bptt.run.training._session import (
    open_run_directory,
    refuse_oversized_runs,
    run_environment,
)
from bptt.tasks import Task, make_task

__all__ = [
    "NonFiniteError",
    "RunDirectoryBusy",
    "RunDirectoryError",
    "RunStopped",
    "TrainResult",
    "build_model",
    "json_safe",
    "load_run",
    "load_run_config",
    "make_clip_policy",
    "resume",
    "step_taps",
    "test_set",
    "train",
]


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        config: the validated configuration.
        summary: the outcome, as written to ``summary.json``.
        model: the trained model.
        run_dir: the run directory, or None when ``config.out`` is None.
    """

    config: TrainConfig
    summary: dict[str, Any]
    model: SequenceModel
    run_dir: Path | None


def train(
    config: TrainConfig | dict[str, Any],
    *,
    progress: bool | Progress = False,
    overwrite: bool = False,
    on_gradients: Callable[[int, nn.Module], None] | None = None,
) -> TrainResult:
    """Train one model as configured; write the run directory if ``config.out`` is set.

    Each step draws a fresh batch from the task's generator (for a stream task: the
    next window of TBPTT), backpropagates through time (with the per-step clipping
    taps, if any), clips the gradient with the configured policy and takes an
    optimizer step. A step whose loss or gradient is not finite is skipped (its
    gradients dropped) and counted, or raises :class:`NonFiniteError` when
    ``nonfinite = "raise"``; after ``nonfinite_patience`` such steps in a row the run
    rolls back to its last checkpoint of ``checkpoint_every`` with a lower learning
    rate. Checkpoints (every ``checkpoint_every`` steps or ``checkpoint_every_s``
    seconds, whichever comes first) let :func:`resume` continue a killed run bit for
    bit. The
    test set is evaluated every ``eval_every`` steps and at the end;
    ``summary["final_loss"]`` is the final test loss. With ``monitor`` on, every logged
    row carries the columns of :class:`bptt.diagnose.Monitor` and the final model is
    diagnosed into ``summary["verdict"]``; ``diagnose_every`` adds diagnoses during
    training to ``diagnostics.jsonl``.

    The same config and seed give the same metrics (on the same device and build, with
    the same thread count: ``threads = 0`` takes the cores other processes leave free
    when the run starts, and a product may round otherwise on another count; the
    count used is in ``summary["threads"]``, and a resumed run keeps it). The
    flush-to-zero mode and thread count are set for the run and restored after it.

    Args:
        config: a :class:`TrainConfig` or a mapping of its fields.
        progress: True to show a progress bar, or a ``rich`` Progress to add a bar to.
        overwrite: allow writing into a run directory that already holds a run.
        on_gradients: ``on_gradients(step, model)``, called after every backward and
            before monitoring and clipping (gradient surgery; fault injection).

    Returns:
        A :class:`TrainResult`.

    Raises:
        bptt.run.ConfigError: an invalid config, or ``out`` cannot be a directory.
        FileExistsError: ``config.out`` already holds a run and overwrite is False.
        RunDirectoryBusy: another process is writing ``config.out``.
        RunDirectoryError: ``config.toml`` could not be written (nothing was trained).
        RunStopped: a file of the run directory could not be written during the run;
            it stopped, its checkpoints intact (the message says how to resume).
        NonFiniteError: a non-finite step with ``nonfinite = "raise"``.
    """
    if not isinstance(config, TrainConfig):
        config = TrainConfig.from_dict(config)
    refuse_oversized_runs([config])
    run_dir = None if config.out is None else open_run_directory(config.out, overwrite=overwrite)
    with run_environment(config, progress) as advance:
        try:
            run = Run(config, run_dir, on_gradients)
            if run_dir is not None:
                run_dir.write_config(config)
            summary = run.run(advance)
        finally:
            if run_dir is not None:
                run_dir.close()
    return TrainResult(config, summary, run.model, None if run_dir is None else run_dir.path)


def resume(
    path: str | Path,
    *,
    steps: int | None = None,
    progress: bool | Progress = False,
    restart: bool = False,
    time_limit_s: float | None = None,
    on_gradients: Callable[[int, nn.Module], None] | None = None,
) -> TrainResult:
    """Continue the run in ``path`` from its newest intact checkpoint, to its end.

    ``steps`` moves that end (``config.toml`` is rewritten): a finished run trains on,
    to the same parameters as a run given that many steps from the start (it needs
    its checkpoints: ``checkpoint_every`` > 0). Refused for a cosine learning-rate
    schedule, which is spread over the original steps.

    The run's own ``config.toml`` is used. Rows of ``metrics.csv`` and
    ``diagnostics.jsonl`` logged after that checkpoint are dropped (they are logged
    again), so a run killed at any point and resumed leaves the same files and ends
    with the same parameters, bit for bit on the CPU, as one never interrupted. A
    corrupt or truncated newest checkpoint is skipped with a warning for the one
    before. A run with no checkpoint that logged no step starts from step 0; one that
    logged steps, or whose checkpoints are all corrupt, is refused (its record is never
    overwritten to start again), unless ``restart`` asks to train it again from step 0.

    Args:
        path: the run directory.
        steps: a new end for the run (None keeps its own).
        progress: as in :func:`train`.
        restart: train again from step 0 when no checkpoint is intact (the
            corrupt ones are removed, and the steps logged are logged anew).
        time_limit_s: a new limit on the run's training time, counted from its start
            (0: none); a run that stopped out of time goes on until it is spent.
        on_gradients: as in :func:`train`.

    Raises:
        bptt.run.ConfigError: no run there, its checkpoint belongs to another
            configuration, ``steps`` cannot apply, the run finished without a
            checkpoint (its files are left as they are), or no checkpoint is intact
            and ``restart`` is False (its files are left as they are).
        RunDirectoryBusy: another process is writing the run directory.
        RunDirectoryError: its files could not be rewritten (nothing was trained).
        RunStopped, NonFiniteError: as in :func:`train`.
    """
    path = _run_directory(path, "resume")
    config = TrainConfig.saved_in(path)
    budget = config.steps  # the end the run had so far
    extending = steps is not None and steps != config.steps
    if extending:
        ended = _steps_done(path)
        if ended is not None and ended < config.steps:
            message = (
                f"the run ended at step {ended}, before its {config.steps} steps (solved "
                "with stop_when_solved, or out of time): a run given more steps from the "
                "start would have ended there too; train a new run instead"
            )
            raise ConfigError("steps", message)
        if config.schedule.kind != "constant":
            message = (
                f"the {config.schedule.kind} learning-rate schedule is spread over the run's "
                f"{config.steps} steps; a run with another budget must start again"
            )
            raise ConfigError("steps", message)
        config = config.replace(steps=steps)
    if time_limit_s is not None:
        config = config.replace(time_limit_s=time_limit_s)
    refuse_oversized_runs([config])
    run_dir = open_run_directory(path, resume=True)
    with run_environment(config, progress) as advance:
        try:
            run = continued_run(
                config, run_dir, restart=restart, budget=budget, on_gradients=on_gradients
            )
            summary = run.run(advance)
        finally:
            run_dir.close()
    return TrainResult(config, summary, run.model, run_dir.path)


def continued_run(
    config: TrainConfig,
    run_dir: RunDirectory,
    *,
    restart: bool = False,
    budget: int | None = None,
    on_gradients: Callable[[int, nn.Module], None] | None = None,
) -> Run:
    """The run of ``run_dir`` at its newest intact checkpoint, its config.toml rewritten
    and the rows logged after that checkpoint dropped: ready to go on.

    ``budget``: the step budget the run had before ``config`` (None: the same);
    ``on_gradients``: as in :func:`train`.

    Raises:
        bptt.run.ConfigError: as in :func:`resume`.
    """
    path = run_dir.path
    budget = config.steps if budget is None else budget
    extending = budget != config.steps
    run = Run(config, run_dir, on_gradients)
    try:
        _continue(run, path, restart, extending, budget)
    except BaseException:
        run.close()
        raise
    return run


def _continue(run: Run, path: Path, restart: bool, extending: bool, budget: int) -> None:
    """Load the newest intact checkpoint into ``run``, rewrite config.toml, rewind the logs."""
    config, run_dir = run.config, run.run_dir
    assert run_dir is not None  # continued_run's
    state = _latest_state(run, restart)
    if state is None and not restart and (path / "summary.json").is_file():
        message = (
            f"{path} finished without a checkpoint (checkpoint_every = "
            f"{config.checkpoint_every}): there is nothing to continue from, and "
            "starting again would erase it"
        )
        raise ConfigError("resume", message)
    if state is None and not restart and _logged_steps(path):
        message = (
            f"{path} has no checkpoint to continue from (checkpoint_every = "
            f"{config.checkpoint_every}), and starting again would erase the steps it "
            "logged: resume with --restart (restart=True) to train it again from step 0"
        )
        raise ConfigError("resume", message)
    if state is not None:
        run.load_state_dict(state)
    if run.step > config.steps:
        message = f"the run has already taken {run.step} steps; give more than that"
        raise ConfigError("steps", message)
    run_dir.write_config(config)
    # the old last step was logged as the last; a longer run logs it only on schedule
    off_schedule = extending and run.step == budget and budget % config.log_every
    run_dir.rewind(run.step, metrics_before=run.step if off_schedule else None)


def _latest_state(run: Run, restart: bool) -> dict[str, Any] | None:
    """The newest intact checkpoint's state; None to start again from step 0."""
    try:
        state = run.checkpoints.latest(map_location=run.config.device)
    except CheckpointError as err:
        if not restart:
            message = (
                f"{err}. Nothing to continue from: resume with --restart (restart=True) "
                "to train the run again from step 0"
            )
            raise ConfigError("resume", message) from err
        try:
            run.checkpoints.clear()
        except CheckpointError as failed:
            raise ConfigError("resume", str(failed)) from failed
        return None
    return state


def _logged_steps(path: Path) -> bool:
    """Whether metrics.csv holds at least one row (a header line and more)."""
    try:
        with open(path / "metrics.csv", "rb") as handle:
            return handle.read(1 << 16).count(b"\n") > 1  # the head only: it may be huge
    except OSError:
        return False


def _steps_done(path: Path) -> int | None:
    """The steps a finished run took, from its summary; None while it is unfinished."""
    summary = read_summary(path)
    return None if summary is None else summary.steps_done


def load_run_config(path: str | Path) -> tuple[TrainConfig, Task]:
    """The config and task of the run directory ``path`` (finished or not).

    Raises:
        ConfigError: no ``config.toml`` there, or not a valid configuration.
    """
    path = _run_directory(path, "run")
    config = TrainConfig.from_saved(load_toml(path / "config.toml"))
    assert config.length is not None  # validation derives it from the task
    return config, make_task(config.task, config.length)


def load_run(path: str | Path) -> tuple[TrainConfig, Task, SequenceModel]:
    """The config, task and trained model of a finished run directory.

    The model's weights load with ``weights_only=True``.

    Raises:
        ConfigError: the directory lacks ``config.toml`` or ``model.pt``, or they are
            not a valid configuration and model.
    """
    path = _run_directory(path, "run")
    if not (path / "model.pt").is_file():
        raise ConfigError("run", f"{path} holds no model.pt: not a finished run directory")
    config, task = load_run_config(path)
    model = build_model(config, task)
    try:
        payload = read_bounded(path / "model.pt", tensor_bytes())
        state = torch.load(io.BytesIO(payload), map_location=config.device, weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as err:
        raise ConfigError("run", f"{path / 'model.pt'} does not load: {load_failure(err)}") from err
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        message = f"{path / 'model.pt'} holds a {type(state).__name__}, not a model's state_dict"
        raise ConfigError("run", message)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as err:
        reason = first_line(err)
        message = f"{path / 'model.pt'} does not fit the model of config.toml: {reason}"
        raise ConfigError("run", message) from err
    return config, task, model


def _run_directory(path: str | Path, field: str) -> Path:
    """``path`` as a run directory: one that exists and holds a config.toml.

    Raises:
        ConfigError: under ``field``, saying which it is not.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(field, f"{path} does not exist")
    if not path.is_dir():
        raise ConfigError(field, f"{path} is a file, not a run directory")
    if not (path / "config.toml").is_file():
        raise ConfigError(field, f"{path} holds no config.toml: not a run directory")
    return path
