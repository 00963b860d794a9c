"""What a run needs around it in the process: its directory opened with clear errors,
flush-to-zero and threads set for it and put back, and its progress bar. Shared by
the one-run loop (:mod:`._train`) and the stacked driver (:mod:`._stacked`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bptt.precision import flush_denormal
from bptt.run.training._config import TrainConfig
from bptt.run.training._cores import run_threads
from bptt.run.training._fields import ConfigError
from bptt.run.training._footprint import refuse_oversized, train_memory
from bptt.run.training._rundir import RunDirectory, RunDirectoryError
from bptt.tasks import make_task

__all__ = [
    "make_progress",
    "open_run_directory",
    "progress_bar",
    "refuse_oversized_runs",
    "run_environment",
]


def make_progress() -> Progress:
    """The rich progress display used by training and the benchmark."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


def refuse_oversized_runs(configs: list[TrainConfig]) -> None:
    """Refuse runs (trained together: stacked) whose memory cannot fit, before any of
    them allocates or writes a file.

    Raises:
        ConfigError: naming the fields, the estimate and the memory available.
    """
    first = configs[0]
    assert first.length is not None  # validation derives it from the task
    task = make_task(first.task, first.length)
    need = train_memory(first, task.input_size, task.output_size, runs=len(configs))
    refuse_oversized(need, first.device)


def open_run_directory(
    path: str | Path, *, overwrite: bool = False, resume: bool = False
) -> RunDirectory:
    """The run directory at ``path``, held for this process (see :class:`RunDirectory`).

    Raises:
        ConfigError: ``path`` cannot be a run directory (the system's reason).
        FileExistsError, RunDirectoryError: as :class:`RunDirectory` raises them.
    """
    try:
        return RunDirectory(path, overwrite=overwrite, resume=resume)
    except (FileExistsError, RunDirectoryError):
        raise
    except OSError as err:
        reason = err.strerror or str(err)
        raise ConfigError("out", f"cannot use {path} as a run directory: {reason}") from err


@contextlib.contextmanager
def run_environment(
    config: TrainConfig, progress: bool | Progress
) -> Iterator[Callable[..., None]]:
    """Flush-to-zero, threads and the progress bar for the run, restored after it."""
    with (
        flush_denormal(config.flush_denormal),
        run_threads(config.threads),
        progress_bar(progress, config) as advance,
    ):
        yield advance


@contextlib.contextmanager
def progress_bar(
    progress: bool | Progress, config: TrainConfig, label: str | None = None
) -> Iterator[Callable[..., None]]:
    """Yields ``advance(step, loss, status=None)``, which shows the run at that step
    (and what it is doing, if not training); ``label`` is added to the bar's name."""
    if progress is False:
        yield lambda step, loss, status=None: None
        return
    owner = progress is True
    display = make_progress() if progress is True else progress
    name = f"{config.task} T={config.length} {config.method or config.cell}"
    label = name if label is None else f"{name} {label}"
    bar = display.add_task(label, total=config.steps, loss="-")

    def advance(step: int, loss: float, status: str | None = None) -> None:
        description = label if status is None else f"{label}: {status}"
        display.update(bar, completed=step, loss=f"{loss:.4g}", description=description)

    if owner:
        display.start()
    try:
        yield advance
    finally:
        if owner:
            display.stop()
