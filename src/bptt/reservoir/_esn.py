"""``bptt esn``: an echo state network on Mackey-Glass or Japanese Vowels, into a run directory."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bptt._io import atomic_torch_save, atomic_write_text
from bptt.config import ConfigError, _validate
from bptt.reservoir._data import japanese_vowels, mackey_glass
from bptt.reservoir._generate import generate, nrmse
from bptt.reservoir._reservoir import Reservoir
from bptt.reservoir._ridge import Ridge

__all__ = ["ESN_TASKS", "ESNConfig", "run_esn"]

ESN_TASKS = ("mackey-glass", "japanese-vowels")


def _choice(*allowed: str) -> dict:
    return {"choices": lambda: allowed}


def _number(kind: type, low: float, high: float | None = None, open_min: bool = False) -> dict:
    return {"kind": kind, "min": low, "max": high, "open_min": open_min}


@dataclass
class ESNConfig:
    """One echo-state-network run.

    Attributes:
        task: ``mackey-glass`` (one-step-ahead prediction, then 84 steps free-running)
            or ``japanese-vowels`` (speaker classification, 370 test utterances).
        units: reservoir size N.
        spectral_radius: the exact spectral radius of the reservoir matrix W.
        leak_rate: the units' leak rate a in (0, 1].
        input_scaling: scale of the input weights.
        density: share of nonzero entries of W.
        input_density: share of nonzero entries of the input weights.
        bias: the units' bias.
        ridge: the readout's penalty.
        washout: Mackey-Glass: steps of each series left out of the fit.
        steps: Mackey-Glass: length of the series.
        train_steps: Mackey-Glass: steps used for the fit; the rest is the test.
        free_steps: Mackey-Glass: steps run free after teacher forcing ends.
        reduce: Japanese Vowels: ``mean`` or ``last`` state of each utterance.
        ensemble: Japanese Vowels: reservoirs (seeds seed, seed + 1, ...) whose
            readouts' class scores are averaged.
        seed: seeds the reservoir (and the series' history).
        dtype: the states' precision, ``float64`` or ``float32`` (faster for batches;
            the readout is solved in float64 either way).
        out: the run directory; None writes no files.
    """

    task: str = field(default="mackey-glass", metadata=_choice(*ESN_TASKS))
    units: int = field(default=1000, metadata=_number(int, 1, 20_000))
    spectral_radius: float = field(default=1.25, metadata=_number(float, 0.0, 100.0))
    leak_rate: float = field(default=0.3, metadata=_number(float, 0.0, 1.0, open_min=True))
    input_scaling: float = field(default=1.0, metadata=_number(float, 0.0, 1e6))
    density: float = field(default=0.1, metadata=_number(float, 0.0, 1.0, open_min=True))
    input_density: float = field(default=0.1, metadata=_number(float, 0.0, 1.0, open_min=True))
    bias: float = field(default=0.0, metadata=_number(float, -1e6, 1e6))
    ridge: float = field(default=1e-6, metadata=_number(float, 0.0, 1e6))
    washout: int = field(default=100, metadata=_number(int, 0, 1_000_000))
    steps: int = field(default=10_000, metadata=_number(int, 10, 10_000_000))
    train_steps: int = field(default=7_000, metadata=_number(int, 2, 10_000_000))
    free_steps: int = field(default=84, metadata=_number(int, 1, 100_000))
    reduce: str = field(default="mean", metadata=_choice("mean", "last"))
    ensemble: int = field(default=1, metadata=_number(int, 1, 1000))
    seed: int = field(default=0, metadata=_number(int, 0, 2**63 - 1))
    dtype: str = field(default="float64", metadata=_choice("float64", "float32"))
    out: str | None = field(default=None, metadata={"kind": str})

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _validate(f, getattr(self, f.name)))
        if self.train_steps + self.free_steps >= self.steps:
            raise ConfigError(
                "train_steps", f"train_steps + free_steps must stay below steps ({self.steps})"
            )
        if self.washout >= self.train_steps:
            raise ConfigError("washout", f"must be below train_steps ({self.train_steps})")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ESNConfig:
        """A validated config; unknown keys raise :class:`bptt.config.ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(
                    str(key), f"unknown key; known keys are {', '.join(sorted(known))}"
                )
        return cls(**values)


def _reservoir(config: ESNConfig, offset: int = 0) -> Reservoir:
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


def _mackey_glass(config: ESNConfig) -> tuple[dict[str, Any], Reservoir, Ridge]:
    series = mackey_glass(config.steps, seed=config.seed)  # (T, 1) float64
    reservoir, readout = _reservoir(config), Ridge(config.ridge)
    inputs, targets = series[:-1][None], series[1:][None]  # predict the next value
    states = reservoir.run(inputs, reset=True)  # (1, T-1, N)
    cut = config.train_steps
    readout.fit(states[:, :cut], targets[:, :cut], washout=config.washout)
    predicted = readout.predict(states[:, cut:])
    free = generate(reservoir, readout, inputs[:, :cut], config.free_steps)
    truth = series[cut : cut + config.free_steps]
    at_end = float((free[-1] - truth[-1]).abs() / series[cut:].std())
    outcome = {
        "nrmse": nrmse(predicted, targets[:, cut:]),
        "nrmse_84": at_end,  # the error at the last free-running step
        "nrmse_free": nrmse(free, truth),
        "free_steps": config.free_steps,
    }
    return outcome, reservoir, readout


def _japanese_vowels(config: ESNConfig) -> tuple[dict[str, Any], Reservoir, Ridge]:
    data = japanese_vowels()
    scores = 0.0
    for k in range(config.ensemble):
        reservoir, readout = _reservoir(config, k), Ridge(config.ridge)
        x, lengths, labels = data["train"]
        features = reservoir.features(x, lengths, config.reduce)
        readout.fit(features, torch.nn.functional.one_hot(labels, 9).double())
        x, lengths, labels = data["test"]
        test = reservoir.features(x, lengths, config.reduce)
        scores = scores + readout.predict(test)
    errors = int((scores.argmax(-1) != labels).sum())
    return {"test_errors": errors, "test_size": int(labels.shape[0])}, reservoir, readout


def run_esn(config: ESNConfig | dict[str, Any]) -> dict[str, Any]:
    """Fit the configured ESN; write ``config.toml``, ``summary.json`` and ``model.pt``
    (reservoir and readout weights) to ``config.out``; returns the summary."""
    if not isinstance(config, ESNConfig):
        config = ESNConfig.from_dict(config)
    start = time.perf_counter()
    work = _mackey_glass if config.task == "mackey-glass" else _japanese_vowels
    outcome, reservoir, readout = work(config)
    summary = {"task": config.task, "units": config.units, "seed": config.seed, **outcome}
    summary["wall_s"] = round(time.perf_counter() - start, 3)
    if config.out is not None:
        import json

        import tomli_w

        path = Path(config.out)
        path.mkdir(parents=True, exist_ok=True)
        values = {k: v for k, v in dataclasses.asdict(config).items() if v is not None}
        atomic_write_text(path / "config.toml", tomli_w.dumps(values))
        weights = {**reservoir.weights(), "W_out": torch.from_numpy(readout.weight)}
        weights["b_out"] = torch.from_numpy(readout.bias)
        atomic_torch_save(weights, path / "model.pt")
        atomic_write_text(path / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
