"""``bptt esn``: an echo state network on Mackey-Glass or Japanese Vowels, into a run directory."""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bptt._io import atomic_torch_save, atomic_write_text
from bptt.config import ConfigError, _validate
from bptt.reservoir._data import japanese_vowels, mackey_glass
from bptt.reservoir._generate import generate, nrmse
from bptt.reservoir._reservoir import NilpotentError, Reservoir
from bptt.reservoir._ridge import Ridge

__all__ = ["ESN_TASKS", "ESN_TASK_DEFAULTS", "ESNConfig", "run_esn"]

ESN_TASKS = ("mackey-glass", "japanese-vowels")


def _choice(*allowed: str) -> dict:
    return {"choices": lambda: allowed}


def _number(kind: type, low: float, high: float | None = None, open_min: bool = False) -> dict:
    return {"kind": kind, "min": low, "max": high, "open_min": open_min}


# The settings whose default depends on the task. Mackey-Glass: the usual setting of
# the benchmark (Jaeger 2001; ReservoirPy's tutorial), 10,000 steps, the first 7,000 for
# training. Japanese Vowels: chosen on a validation split of the training utterances by
# benchmarks/esn_vowels.py (2-5 test errors of 370 for reservoir seeds 0-4). A setting
# that only one task's dict holds is that task's alone, and refused for the other.
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
_ONLY_FOR = {
    name: task
    for task, settings in ESN_TASK_DEFAULTS.items()
    for name in settings
    if not all(name in other for other in ESN_TASK_DEFAULTS.values())
}
_RUN_FILES = ("config.toml", "summary.json", "model.pt")
_STALE_FILES = ("metrics.csv", "diagnostics.jsonl")  # a training run's, overwritten


@dataclass
class ESNConfig:
    """One echo-state-network run.

    A setting left as None takes the task's value from :data:`ESN_TASK_DEFAULTS`; a
    setting of one task given for the other is refused.

    Attributes:
        task: ``mackey-glass`` (default; one-step-ahead prediction, then 84 steps
            free-running) or ``japanese-vowels`` (speaker classification, 370 test
            utterances).
        units: reservoir size N (default: Mackey-Glass 1000, Japanese Vowels 500).
        spectral_radius: the exact spectral radius of the reservoir matrix W (default:
            Mackey-Glass 1.25, Japanese Vowels 0.5).
        leak_rate: the units' leak rate a in (0, 1] (default: Mackey-Glass 0.3, Japanese
            Vowels 0.6).
        input_scaling: scale of the input weights (default 1 for both tasks).
        density: share of nonzero entries of W (default 0.1).
        input_density: share of nonzero entries of the input weights (default 0.1).
        bias: the units' bias (default 0).
        ridge: the readout's penalty (default: Mackey-Glass 1e-6, Japanese Vowels 1e-2).
        washout: Mackey-Glass only: steps of the series left out of the fit (default 100).
        steps: Mackey-Glass only: length of the series (default 10000).
        train_steps: Mackey-Glass only: steps used for the fit; the rest is the test
            (default 7000).
        free_steps: Mackey-Glass only: steps run free after teacher forcing ends
            (default 84).
        reduce: Japanese Vowels only: ``mean`` (default) or ``last`` state of each
            utterance.
        ensemble: Japanese Vowels only: reservoirs (seeds seed, seed + 1, ...) whose
            readouts' class scores are averaged (default 1).
        seed: seeds the reservoir (and the series' history) (default 0).
        dtype: the states' precision, ``float64`` (default) or ``float32`` (faster for
            batches; the readout is solved in float64 either way).
        out: the run directory; None writes no files.
    """

    task: str = field(default="mackey-glass", metadata=_choice(*ESN_TASKS))
    units: int | None = field(default=None, metadata=_number(int, 1, 20_000))
    spectral_radius: float | None = field(default=None, metadata=_number(float, 0.0, 100.0))
    leak_rate: float | None = field(default=None, metadata=_number(float, 0.0, 1.0, open_min=True))
    input_scaling: float | None = field(default=None, metadata=_number(float, 0.0, 1e6))
    density: float = field(default=0.1, metadata=_number(float, 0.0, 1.0, open_min=True))
    input_density: float = field(default=0.1, metadata=_number(float, 0.0, 1.0, open_min=True))
    bias: float = field(default=0.0, metadata=_number(float, -1e6, 1e6))
    ridge: float | None = field(default=None, metadata=_number(float, 0.0, 1e6))
    washout: int | None = field(default=None, metadata=_number(int, 0, 1_000_000))
    steps: int | None = field(default=None, metadata=_number(int, 10, 10_000_000))
    train_steps: int | None = field(default=None, metadata=_number(int, 2, 10_000_000))
    free_steps: int | None = field(default=None, metadata=_number(int, 2, 100_000))
    reduce: str | None = field(default=None, metadata=_choice("mean", "last"))
    ensemble: int | None = field(default=None, metadata=_number(int, 1, 1000))
    seed: int = field(default=0, metadata=_number(int, 0, 2**63 - 1))
    dtype: str = field(default="float64", metadata=_choice("float64", "float32"))
    out: str | None = field(default=None, metadata={"kind": str})

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            try:
                setattr(self, f.name, _validate(f, getattr(self, f.name)))
            except OverflowError:  # an int beyond float's range, given from Python
                message = "must be finite; got an integer beyond float's range"
                raise ConfigError(f.name, message) from None
        for name, task in _ONLY_FOR.items():
            if task != self.task and getattr(self, name) is not None:
                raise ConfigError(name, f"is used only with task {task}, not {self.task}")
        for name, value in ESN_TASK_DEFAULTS[self.task].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.task == "mackey-glass":
            if self.train_steps + self.free_steps >= self.steps:
                raise ConfigError(
                    "train_steps",
                    f"train_steps + free_steps must stay below steps ({self.steps}); got "
                    f"{self.train_steps} + {self.free_steps}",
                )
            if self.washout >= self.train_steps:
                raise ConfigError(
                    "washout", f"must be below train_steps ({self.train_steps}); got {self.washout}"
                )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ESNConfig:
        """A validated config; unknown keys raise :class:`bptt.config.ConfigError`.

        Example:
            >>> ESNConfig.from_dict({"task": "japanese-vowels"}).units
            500
        """
        if not isinstance(values, dict):
            raise ConfigError("config", f"must be a table of settings; got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(
                    str(key), f"unknown key; known keys are {', '.join(sorted(known))}"
                )
        return cls(**values)


def _reservoir(config: ESNConfig, offset: int = 0) -> Reservoir:
    try:
        return Reservoir(
            config.units,
            spectral_radius=config.spectral_radius,
            leak_rate=config.leak_rate,
            input_scaling=config.input_scaling,
            density=config.density,
            input_density=config.input_density,
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
    stages.begin(f"series and reservoir ({config.units} units)")
    series = mackey_glass(config.steps, seed=config.seed)  # (T, 1) float64
    reservoir, readout = _reservoir(config), Ridge(config.ridge)
    stages.done()
    stages.begin(f"driving the reservoir ({config.steps - 1} steps)")
    inputs, targets = series[:-1][None], series[1:][None]  # predict the next value
    states = reservoir.run(inputs, reset=True)  # (1, T-1, N)
    stages.done()
    stages.begin("fitting the readout")
    cut = config.train_steps
    _fit(readout, states[:, :cut], targets[:, :cut], washout=config.washout)
    predicted = readout.predict(states[:, cut:])
    stages.done()
    stages.begin(f"running free ({config.free_steps} steps)")
    free = generate(reservoir, readout, inputs[:, :cut], config.free_steps)
    stages.done()
    truth = series[cut : cut + config.free_steps]
    at_end = float((free[-1] - truth[-1]).abs() / series[cut:].std())
    outcome = {
        "nrmse": nrmse(predicted, targets[:, cut:]),
        "nrmse_84": at_end,  # the error at the last free-running step
        "nrmse_free": nrmse(free, truth),
        "free_steps": config.free_steps,
    }
    return outcome, reservoir, readout


def _japanese_vowels(config: ESNConfig, stages: _Stages) -> tuple[dict[str, Any], Reservoir, Ridge]:
    stages.begin("loading Japanese Vowels")
    data = japanese_vowels()
    stages.done()
    scores = 0.0
    for k in range(config.ensemble):
        member = f"reservoir {k + 1} of {config.ensemble}: " if config.ensemble > 1 else ""
        stages.begin(f"{member}training utterances")
        reservoir, readout = _reservoir(config, k), Ridge(config.ridge)
        x, lengths, labels = data["train"]
        features = reservoir.features(x, lengths, config.reduce)
        _fit(readout, features, torch.nn.functional.one_hot(labels, 9).double())
        stages.done()
        stages.begin(f"{member}test utterances")
        x, lengths, labels = data["test"]
        test = reservoir.features(x, lengths, config.reduce)
        scores = scores + readout.predict(test)
        stages.done()
    errors = int((scores.argmax(-1) != labels).sum())
    return {"test_errors": errors, "test_size": int(labels.shape[0])}, reservoir, readout


def _run_directory(out: str, overwrite: bool) -> Path:
    """The run directory, created and found writable, or a ConfigError naming ``out``."""
    path = Path(out)
    try:
        if path.exists() and not path.is_dir():
            raise ConfigError("out", f"{out} exists and is not a directory")
        held = [name for name in _RUN_FILES if (path / name).exists()]
        if held and not overwrite:
            raise ConfigError(
                "out",
                f"{out} already holds a run ({held[0]}); choose another directory or overwrite it",
            )
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # files can be written there
            pass
    except (OSError, ValueError) as err:  # ValueError: a NUL in the path
        if isinstance(err, ConfigError):
            raise
        reason = getattr(err, "strerror", None) or str(err)
        raise ConfigError("out", f"cannot write a run directory at {out}: {reason}") from None
    return path


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
        for Japanese Vowels ``test_errors`` of ``test_size``; and ``wall_s``.

    Raises:
        ConfigError: an invalid setting, or a reservoir or readout it makes impossible
            (a W with no cycle: raise density or units; a singular readout: raise
            ridge), or an ``out`` that is a file, cannot be created or written, or holds
            a run while ``overwrite`` is False.
        ImportError: Japanese Vowels without sktime.
    """
    if not isinstance(config, ESNConfig):
        config = ESNConfig.from_dict(config)
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    path = _run_directory(config.out, overwrite) if config.out is not None else None
    start = time.perf_counter()
    if config.task == "mackey-glass":
        work, total, label = _mackey_glass, 4, "Mackey-Glass"
    else:
        work, total, label = _japanese_vowels, 1 + 2 * config.ensemble, "Japanese Vowels"
    with _Stages(progress, label, total) as stages:
        outcome, reservoir, readout = work(config, stages)
    summary = {"task": config.task, "units": config.units, "seed": config.seed, **outcome}
    summary["wall_s"] = round(time.perf_counter() - start, 3)
    if path is not None:
        values = {k: v for k, v in dataclasses.asdict(config).items() if v is not None}
        weights = {**reservoir.weights(), "W_out": torch.from_numpy(readout.weight)}
        weights["b_out"] = torch.from_numpy(readout.bias)
        try:
            for name in _STALE_FILES:  # no file of an overwritten run beside the new ones
                (path / name).unlink(missing_ok=True)
            atomic_write_text(path / "config.toml", tomli_w.dumps(values))
            atomic_torch_save(weights, path / "model.pt")
            atomic_write_text(path / "summary.json", json.dumps(summary, indent=2) + "\n")
        except OSError as err:
            reason = err.strerror or str(err)
            raise ConfigError("out", f"cannot write the run to {path}: {reason}") from None
    return summary
