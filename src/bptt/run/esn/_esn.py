"""``bptt esn``: an echo state network on Mackey-Glass, Japanese Vowels or a long-range
pathological task (adding, multiplication, XOR, temporal order), into a run directory."""

from __future__ import annotations

import time
from typing import Any, Literal, TypeVar, get_args

import numpy as np
import torch
from pydantic import Field, model_validator
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bptt.reservoir import NilpotentError, Reservoir, Ridge, generate, nrmse
from bptt.run.training import (
    ConfigError,
    ConfigModel,
    Float,
    Int,
    RunDirectory,
    RunDirectoryError,
    Text,
    esn_memory,
    refuse_oversized,
    run_threads,
    seeds,
)
from bptt.tasks import TASKS, japanese_vowels, mackey_glass, make_task

__all__ = ["ESN_TASKS", "ESN_TASK_DEFAULTS", "ESNConfig", "run_esn"]

ESNTaskName = Literal[
    "mackey-glass", "japanese-vowels", "adding", "multiplication", "xor", "order", "order3"
]
ESN_TASKS: tuple[ESNTaskName, ...] = get_args(ESNTaskName)

# The settings whose default depends on the task. Mackey-Glass: the usual setting of
# the benchmark (Jaeger 2001; ReservoirPy's tutorial), 10,000 steps, the first 7,000 for
# training. Japanese Vowels: chosen on a validation split of the training utterances by
# benchmarks/esn_vowels.py (2-5 test errors of 370 for reservoir seeds 0-4). The
# long-range tasks (the readout of each sequence's last state, fitted on 4,000 training
# sequences): a leaky-integrator reservoir, as Sutskever et al. 2013 report for addition
# and multiplication (Jaeger 2012, personal communication) and Pascanu et al. 2013 for
# the Hochreiter-Schmidhuber benchmark; chosen at T = 100 on adding and temporal order
# (seed 0, 1,000 test sequences; 500 units, spectral radius 0.9 and 1, leak 1, 0.1,
# 0.02, input scaling 0.1 and 1, ridge 1e-6, 1e-3, 0.1): without leaking (leak 1) the
# reservoir stays at the baseline (adding MSE 0.17, temporal order 75% errors); leak
# 0.02 with inputs at 1 reached MSE 0.0015 on adding and no error on temporal order. A
# setting that only some tasks' dicts hold is theirs alone, refused for the others.
ESN_TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "mackey-glass": {
        "units": 1000,
        "spectral_radius": 1.25,
        "leak_rate": 0.3,
        "input_scaling": 1.0,
        "ridge": 1e-6,
        "washout": 100,
        "steps": 10_000,
        "train_steps": 7_000,
        "free_steps": 84,
    },
    "japanese-vowels": {
        "units": 500,
        "spectral_radius": 0.5,
        "leak_rate": 0.6,
        "input_scaling": 1.0,
        "ridge": 1e-2,
        "reduce": "mean",
        "ensemble": 1,
    },
}
ESN_TASK_DEFAULTS["mackey-glass"]["input_density"] = 0.1
ESN_TASK_DEFAULTS["japanese-vowels"]["input_density"] = 0.1
SEQUENCE_TASKS = ("adding", "multiplication", "xor", "order", "order3")
for _task in SEQUENCE_TASKS:
    ESN_TASK_DEFAULTS[_task] = {
        "units": 500,
        "spectral_radius": 1.0,
        "leak_rate": 0.02,
        "input_scaling": 1.0,
        "input_density": 1.0,
        "ridge": 1e-6,
        "length": 100,
        "train_size": 4000,
        "test_size": 1000,
    }
# each setting some tasks have and others not: the tasks that have it
_ONLY_FOR = {
    name: tuple(task for task, settings in ESN_TASK_DEFAULTS.items() if name in settings)
    for settings in ESN_TASK_DEFAULTS.values()
    for name in settings
    if not all(name in other for other in ESN_TASK_DEFAULTS.values())
}
_FREE_RUN = "free_run"  # the outcome's rows of the free run, written to free_run.csv
# Pascanu, Mikolov & Bengio 2013 count a classification solved below 1% errors; the
# ridge readout's scores are no probabilities, so no cross-entropy is scored
SOLVED_ERROR_RATE = 0.01


_T = TypeVar("_T")


def _filled(value: _T | None) -> _T:
    """A task setting after validation, which fills every one the task has."""
    assert value is not None
    return value


def _task_label(task: str) -> str:
    """How the help texts name a task's defaults (the long-range tasks share theirs)."""
    return "the long-range tasks" if task in SEQUENCE_TASKS else task.split("-")[0].title()


def _by_task(setting: str) -> str:
    """The help text's note of a setting's default for each task that has it."""
    shown: dict[str, str] = {}  # label -> default
    for task, defaults in ESN_TASK_DEFAULTS.items():
        if setting in defaults:
            value = defaults[setting]
            text = f"{value:g}" if isinstance(value, (int, float)) else str(value)
            shown[_task_label(task)] = text
    values = ", ".join(f"{label} {text}" for label, text in shown.items())
    if setting not in _ONLY_FOR:
        return f" (default: {values})"
    tasks = _ONLY_FOR[setting]
    if set(tasks) == set(SEQUENCE_TASKS):
        return f" (the long-range tasks only; default: {shown[_task_label(tasks[0])]})"
    return f" ({', '.join(tasks)} only; default: {values})"


class ESNConfig(ConfigModel):
    """One echo-state-network run; saved as the run's ``config.toml``.

    A setting left as None takes the task's value from :data:`ESN_TASK_DEFAULTS`; a
    setting of one task given for the other is refused.

    Example:
        >>> ESNConfig.from_dict({"task": "japanese-vowels"}).units
        500
    """

    task: ESNTaskName = Field(
        "mackey-glass",
        description="mackey-glass (one-step-ahead prediction, then a free run) or "
        "japanese-vowels (speaker classification, 370 test utterances).",
    )
    units: Int | None = Field(
        None, ge=1, le=20_000, description="reservoir size N" + _by_task("units") + "."
    )
    spectral_radius: Float | None = Field(
        None,
        ge=0.0,
        le=100.0,
        description="the exact spectral radius of W" + _by_task("spectral_radius") + ".",
    )
    leak_rate: Float | None = Field(
        None, gt=0.0, le=1.0, description="the units' leak rate" + _by_task("leak_rate") + "."
    )
    input_scaling: Float | None = Field(
        None,
        ge=0.0,
        le=1e6,
        description="scale of the input weights" + _by_task("input_scaling") + ".",
    )
    density: Float = Field(0.1, gt=0.0, le=1.0, description="share of nonzero entries of W.")
    input_density: Float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="share of nonzero entries of the input weights"
        + _by_task("input_density")
        + ".",
    )
    bias: Float = Field(0.0, ge=-1e6, le=1e6, description="the units' bias.")
    ridge: Float | None = Field(
        None, ge=0.0, le=1e6, description="the readout's penalty" + _by_task("ridge") + "."
    )
    washout: Int | None = Field(
        None,
        ge=0,
        le=1_000_000,
        description="steps of the series left out of the fit" + _by_task("washout") + ".",
    )
    steps: Int | None = Field(
        None, ge=10, le=10_000_000, description="length of the series" + _by_task("steps") + "."
    )
    train_steps: Int | None = Field(
        None,
        ge=2,
        le=10_000_000,
        description="steps used for the fit; the rest is the test" + _by_task("train_steps") + ".",
    )
    free_steps: Int | None = Field(
        None,
        ge=2,
        le=100_000,
        description="steps run free after teacher forcing ends" + _by_task("free_steps") + ".",
    )
    reduce: Literal["mean", "last"] | None = Field(
        None, description="mean or last state of each utterance" + _by_task("reduce") + "."
    )
    ensemble: Int | None = Field(
        None,
        ge=1,
        le=1000,
        description="reservoirs (seeds seed, seed + 1, ...) whose class scores are "
        "averaged" + _by_task("ensemble") + ".",
    )
    length: Int | None = Field(
        None, ge=2, le=1_000_000, description="sequence length T" + _by_task("length") + "."
    )
    train_size: Int | None = Field(
        None,
        ge=2,
        le=10_000_000,
        description="training sequences the readout is fitted on" + _by_task("train_size") + ".",
    )
    test_size: Int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="test sequences (the test set of a training run of the same seed)"
        + _by_task("test_size")
        + ".",
    )
    seed: Int = Field(0, ge=0, le=2**63 - 1, description="seeds the reservoir and the series.")
    dtype: Literal["float64", "float32"] = Field(
        "float64",
        description="the states' precision (float32 is faster for batches; the readout "
        "is solved in float64 either way).",
    )
    out: Text | None = Field(None, description="the run directory; none writes no files.")

    @model_validator(mode="after")
    def _task_settings(self) -> ESNConfig:
        for name, tasks in _ONLY_FOR.items():
            if self.task not in tasks and getattr(self, name) is not None:
                which = "task " + tasks[0] if len(tasks) == 1 else "tasks " + ", ".join(tasks)
                raise ConfigError(name, f"is used only with {which}, not {self.task}")
        for name, value in ESN_TASK_DEFAULTS[self.task].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.task == "mackey-glass":
            train_steps, washout = _filled(self.train_steps), _filled(self.washout)
            if train_steps + _filled(self.free_steps) >= _filled(self.steps):
                raise ConfigError(
                    "train_steps",
                    f"train_steps + free_steps must stay below steps ({self.steps}); got "
                    f"{self.train_steps} + {self.free_steps}",
                )
            if washout >= train_steps:
                raise ConfigError(
                    "washout", f"must be below train_steps ({self.train_steps}); got {self.washout}"
                )
        if self.task in SEQUENCE_TASKS:
            task = TASKS[self.task]
            if _filled(self.length) < task.min_length:
                message = f"task {self.task} needs length >= {task.min_length}; got {self.length}"
                raise ConfigError("length", message)
        return self


def _reservoir(config: ESNConfig, offset: int = 0) -> Reservoir:
    try:
        return Reservoir(
            _filled(config.units),
            spectral_radius=_filled(config.spectral_radius),
            leak_rate=_filled(config.leak_rate),
            input_scaling=_filled(config.input_scaling),
            density=config.density,
            input_density=_filled(config.input_density),
            bias=config.bias,
            seed=config.seed + offset,
            dtype=getattr(torch, config.dtype),
        )
    except NilpotentError as err:
        raise ConfigError("density", str(err)) from None


def _fit(readout: Ridge, *args: Any, **kwargs: Any) -> Ridge:
    try:
        return readout.fit(*args, **kwargs)
    except np.linalg.LinAlgError as err:  # alpha 0 and a state that never varies
        raise ConfigError("ridge", f"{err}: raise ridge above 0") from None


class _Stages:
    """A progress display of a run's stages (a no-op unless shown)."""

    def __init__(self, show: bool, label: str, total: int) -> None:
        self._display = None
        if show:
            self._display = Progress(
                TextColumn(label),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._display.add_task("", total=total)

    def __enter__(self) -> _Stages:
        if self._display is not None:
            self._display.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._display is not None:
            self._display.stop()

    def begin(self, stage: str) -> None:
        """Show the stage now running."""
        if self._display is not None:
            self._display.update(self._task, description=stage)

    def done(self) -> None:
        """Count the running stage as done."""
        if self._display is not None:
            self._display.advance(self._task)


def _mackey_glass(config: ESNConfig, stages: _Stages) -> tuple[dict[str, Any], Reservoir, Ridge]:
    steps, free_steps = _filled(config.steps), _filled(config.free_steps)
    stages.begin(f"series and reservoir ({config.units} units)")
    series = mackey_glass(steps, seed=config.seed)  # (T, 1) float64
    reservoir, readout = _reservoir(config), Ridge(_filled(config.ridge))
    stages.done()
    stages.begin(f"driving the reservoir ({steps - 1} steps)")
    inputs, targets = series[:-1][None], series[1:][None]  # predict the next value
    states = reservoir.run(inputs, reset=True)  # (1, T-1, N)
    stages.done()
    stages.begin("fitting the readout")
    cut = _filled(config.train_steps)
    _fit(readout, states[:, :cut], targets[:, :cut], washout=config.washout)
    predicted = readout.predict(states[:, cut:])
    stages.done()
    stages.begin(f"running free ({free_steps} steps)")
    free = generate(reservoir, readout, inputs[:, :cut], free_steps)
    stages.done()
    truth = series[cut : cut + free_steps]
    at_end = float((free[-1] - truth[-1]).abs() / series[cut:].std())
    rows = [
        {"step": step + 1, "truth": float(true), "predicted": float(guess)}
        for step, (true, guess) in enumerate(zip(truth[:, 0], free.reshape(-1), strict=True))
    ]
    outcome = {
        "nrmse": nrmse(predicted, targets[:, cut:]),
        "nrmse_84": at_end,  # the error at the last free-running step
        "nrmse_free": nrmse(free, truth),
        "free_steps": config.free_steps,
        _FREE_RUN: rows,  # not the summary's: free_run.csv, the report's figure of it
    }
    return outcome, reservoir, readout


def _japanese_vowels(config: ESNConfig, stages: _Stages) -> tuple[dict[str, Any], Reservoir, Ridge]:
    stages.begin("loading Japanese Vowels")
    data = japanese_vowels()
    stages.done()
    ensemble, reduce = _filled(config.ensemble), _filled(config.reduce)
    scores: torch.Tensor | float = 0.0
    for k in range(ensemble):
        member = f"reservoir {k + 1} of {ensemble}: " if ensemble > 1 else ""
        stages.begin(f"{member}training utterances")
        reservoir, readout = _reservoir(config, k), Ridge(_filled(config.ridge))
        x, lengths, labels = data["train"]
        features = reservoir.features(x, lengths, reduce)
        _fit(readout, features, torch.nn.functional.one_hot(labels, 9).double())
        stages.done()
        stages.begin(f"{member}test utterances")
        x, lengths, labels = data["test"]
        test = reservoir.features(x, lengths, reduce)
        scores = scores + readout.predict(test)
        stages.done()
    assert isinstance(scores, torch.Tensor)  # ensemble >= 1
    errors = int((scores.argmax(-1) != labels).sum())
    return {"test_errors": errors, "test_size": int(labels.shape[0])}, reservoir, readout


def _sequence_task(config: ESNConfig, stages: _Stages) -> tuple[dict[str, Any], Reservoir, Ridge]:
    """The readout of each sequence's last state, fitted on ``train_size`` sequences of the
    training stream of a run of this seed and scored on its test set."""
    task = make_task(config.task, _filled(config.length))
    train_seed, test_seed = seeds(config.seed)[1:]
    dtype = torch.float64  # the task's draws; the reservoir runs in config.dtype
    stages.begin(f"sequences and reservoir ({config.units} units)")
    generator = torch.Generator().manual_seed(train_seed)
    x, y = task.sample(_filled(config.train_size), generator, dtype=dtype)
    reservoir, readout = _reservoir(config), Ridge(_filled(config.ridge))
    stages.done()
    regression = task.metric == "test_mse"

    def targets(y: torch.Tensor) -> torch.Tensor:  # (B, O): the value, or the one-hot class
        if regression:
            return y.reshape(y.shape[0], -1).double()
        return torch.nn.functional.one_hot(y.reshape(-1), task.output_size).double()

    stages.begin(f"driving the reservoir ({config.train_size} sequences of {task.length})")
    _fit(readout, reservoir.features(x, reduce="last"), targets(y))
    stages.done()
    stages.begin(f"test sequences ({config.test_size})")
    generator = torch.Generator().manual_seed(test_seed)
    x, y = task.test_set(_filled(config.test_size), generator, dtype=dtype)
    scores = readout.predict(reservoir.features(x, reduce="last"))
    stages.done()
    outcome: dict[str, Any] = {"length": task.length}
    if regression:
        mse = float(((scores - targets(y)) ** 2).mean())
        outcome |= {"metric": task.metric, "final_loss": mse, "baseline_loss": task.baseline_loss}
        return {**outcome, "solved": task.is_solved(mse)}, reservoir, readout
    errors = int((scores.argmax(-1) != y.reshape(-1)).sum())
    size = int(y.numel())
    # the share of errors, against chance's (every class but one wrong)
    outcome |= {"metric": "test_error_rate", "final_loss": errors / size}
    outcome |= {"baseline_loss": 1 - 1 / task.output_size, "accuracy": 1 - errors / size}
    outcome |= {"test_errors": errors, "test_size": size}
    return {**outcome, "solved": errors < SOLVED_ERROR_RATE * size}, reservoir, readout


def _open(out: str, overwrite: bool) -> RunDirectory:
    """The locked run directory, or a ConfigError naming ``out``."""
    try:
        return RunDirectory(out, overwrite=overwrite)
    except FileExistsError as err:
        raise ConfigError("out", str(err)) from None
    except RunDirectoryError:
        raise
    except (OSError, ValueError) as err:  # ValueError: a NUL in the path
        reason = getattr(err, "strerror", None) or str(err)
        raise ConfigError("out", f"cannot write a run directory at {out}: {reason}") from None


def run_esn(
    config: ESNConfig | dict[str, Any], *, overwrite: bool = False, progress: bool = False
) -> dict[str, Any]:
    """Fit the configured ESN and score it; with ``config.out``, write ``config.toml``
    (the settings used, task defaults included), ``summary.json`` and ``model.pt`` (the
    reservoir's and the readout's weights: W, W_in, bias, W_out, b_out) there.

    Args:
        config: an :class:`ESNConfig` or a mapping of its fields.
        overwrite: replace the files of an earlier run in ``config.out`` (else such a
            directory is refused before anything runs).
        progress: show the run's stages (series, reservoir drive, fit, free run or
            ensemble members) on stderr.

    Returns:
        The summary: task, units, seed, and for Mackey-Glass ``nrmse`` (one step
        ahead on the test part), ``nrmse_84`` (the error at the last free-running
        step, over the test part's standard deviation), ``nrmse_free``, ``free_steps``;
        for Japanese Vowels ``test_errors`` of ``test_size``; for a long-range task
        ``length``, ``metric`` (the task's MSE, or ``test_error_rate`` for a
        classification, with ``test_errors`` of ``test_size`` and ``accuracy``: the ridge
        readout gives no probabilities), ``final_loss`` in it, ``baseline_loss`` (the
        trivial predictor's; chance's error rate), ``solved``; and ``wall_s``. On
        Mackey-Glass the run directory also holds ``free_run.csv`` (step, truth,
        predicted: the free run).

    Raises:
        ConfigError: an invalid setting, or a reservoir or readout it makes impossible
            (a W with no cycle: raise density or units; a singular readout: raise
            ridge), or an ``out`` that is a file, cannot be created or written, or holds
            a run while ``overwrite`` is False.
        RunDirectoryBusy: another process is writing ``out``.
        RunDirectoryError: a file of the run directory could not be written.
        ImportError: Japanese Vowels without sktime.
    """
    if not isinstance(config, ESNConfig):
        config = ESNConfig.from_dict(config)
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    refuse_oversized(esn_memory(config))
    run_dir = None if config.out is None else _open(config.out, overwrite)
    try:
        start = time.perf_counter()
        if config.task == "mackey-glass":
            work, total, label = _mackey_glass, 4, "Mackey-Glass"
        elif config.task in SEQUENCE_TASKS:
            work, total, label = _sequence_task, 3, f"{config.task} T={config.length}"
        else:
            work, total = _japanese_vowels, 1 + 2 * _filled(config.ensemble)
            label = "Japanese Vowels"
        with run_threads(), _Stages(progress, label, total) as stages:
            outcome, reservoir, readout = work(config, stages)
        free_run = outcome.pop(_FREE_RUN, None)
        summary = {"task": config.task, "units": config.units, "seed": config.seed, **outcome}
        summary["wall_s"] = round(time.perf_counter() - start, 3)
        if run_dir is not None:
            weights = {**reservoir.weights(), "W_out": torch.from_numpy(readout.weight)}
            weights["b_out"] = torch.from_numpy(readout.bias)
            run_dir.write_config(config)
            run_dir.save_state(weights)
            if free_run:
                run_dir.write_table("free_run.csv", free_run)
            run_dir.write_summary(summary)
    finally:
        if run_dir is not None:
            run_dir.close()
    return summary
