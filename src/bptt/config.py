"""The training configuration: one dataclass, every field validated, unknown keys refused.

A configuration comes from defaults, then a TOML file, then command-line flags, each
overriding the one before. Every error names the field and what it accepts.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

import tomli_w
import torch

from bptt._errors import first_line
from bptt.cells import cell_names
from bptt.engine import ENGINES
from bptt.methods import METHODS
from bptt.tasks import TASKS

__all__ = [
    "CLIPS",
    "DTYPES",
    "LR_SCHEDULES",
    "NONFINITE",
    "OPTIMIZERS",
    "ConfigError",
    "TrainConfig",
    "load_toml",
]

OPTIMIZERS = ("adam", "sgd", "rmsprop", "hf")
DTYPES = ("float32", "float64")
CLIPS = ("none", "norm", "value", "percentile", "zscore", "calibrate")
NONFINITE = ("skip", "raise")
LR_SCHEDULES = ("constant", "cosine")


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message

    def __reduce__(self):  # picklable: it crosses process pools (benchmarks, Ray)
        return type(self), (self.field, self.message)


def _choice(*allowed: str) -> dict:
    return {"choices": lambda: allowed}


def _dynamic_choice(names) -> dict:
    return {"choices": names}


def _int(minimum: int, maximum: int | None = None) -> dict:
    return {"kind": int, "min": minimum, "max": maximum}


def _float(minimum: float, maximum: float | None = None, open_min: bool = False) -> dict:
    return {"kind": float, "min": minimum, "max": maximum, "open_min": open_min}


@dataclass
class TrainConfig:
    """Everything that defines one training run; saved as the run's ``config.toml``.

    Attributes:
        method: a recipe of :mod:`bptt.methods` (``irnn``, ``lstm-chrono``, ...) whose
            settings fill the fields not given explicitly; None for none.
        task: ``adding``, ``copy``, ``basins``, ``echo`` or ``text``.
        length: the task's length T (adding: sequence length; copy: the delay); None
            means the task's fixed length (digits: 64) or 100.
        cell: ``rnn`` (tanh), ``rnn-relu``, ``lstm``, ``gru``, or a name given to
            :func:`bptt.cells.register_cell`.
        hidden: hidden units H.
        steps: optimizer steps.
        batch_size: sequences per step.
        lr: learning rate.
        optimizer: ``adam``, ``sgd``, ``rmsprop`` or ``hf`` (Hessian-free, see
            :class:`bptt.optim.HessianFree`).
        lr_schedule: ``constant``, or ``cosine``: the learning rate follows a half cosine
            from ``lr`` at step 1 to ``lr * lr_end_factor`` at step ``steps`` (a fixed
            function of the step, so a resumed run follows it exactly).
        lr_end_factor: the cosine schedule's final learning rate as a fraction of ``lr``.
        momentum: momentum of ``sgd`` (Nesterov) and ``rmsprop``.
        hf_damping: Hessian-free: the initial Levenberg-Marquardt damping lambda.
        hf_max_cg: Hessian-free: cap on conjugate-gradient iterations per step.
        hf_mu: Hessian-free: structural damping weight (penalises hidden-state change).
        hf_curvature_fraction: Hessian-free: share of the batch used for curvature.
        hf_preconditioner: Hessian-free: use the diagonal preconditioner.
        clip: how the parameters' gradient is clipped: ``none``, ``norm`` (global norm at
            ``clip_norm``), ``value`` (elements at ``clip_value``), ``percentile``
            (AutoClip), ``zscore`` (ZClip, capped at ``clip_norm`` if given) or
            ``calibrate``. None means ``norm`` when ``clip_norm`` is set, else ``none``.
        clip_norm: the global-norm threshold (``norm``) or cap (``zscore``).
        clip_value: the element bound of ``value`` clipping.
        clip_percentile: AutoClip's percentile p in (0, 100].
        clip_history: AutoClip's window of past norms; 0 keeps them all.
        clip_z: ZClip's z-score threshold.
        clip_alpha: ZClip's EMA factor.
        clip_warmup: ZClip's warm-up steps.
        clip_calibrate_steps: unclipped steps before ``calibrate`` fixes its threshold.
        clip_quantile: the quantile of those steps' norms that becomes the threshold.
        clip_step_norm: clip each sample's hidden-state gradient to this norm at every
            time step (a tap; combines with any ``clip``).
        clip_step_value: clamp the hidden-state gradient's elements at every step.
        nonfinite: a step whose loss or gradient is NaN or inf: ``skip`` it (drop the
            gradients, no optimizer step, counted) or ``raise`` an error.
        monitor: watch every step (per-parameter gradient norms, loss and gradient-norm
            spikes, the time step of a non-finite hidden-state gradient) into
            ``metrics.csv``, and diagnose the final model into ``summary.json``.
        spike_window: steps in the spike detectors' trailing window.
        spike_z: robust z-score above which a loss or gradient norm is a spike.
        diagnose_every: steps between diagnoses of the model on a probe batch, appended
            to ``diagnostics.jsonl``; 0 for none during training.
        probe_size: sequences in that probe batch (taken from the test set).
        stop_when_solved: end the run at the first evaluation that finds the task
            solved (``summary["steps_done"]`` says where); for steps-to-solve tables.
        time_limit_s: end the run (evaluated, logged and checkpointed as at its last
            step) at the first step that ends past this many seconds of training;
            0 for none. For equal-time comparisons; the step count then varies.
        checkpoint_every: steps between checkpoints (under ``out/checkpoints``, and in
            memory), also written at step 0 and at the end; 0 for none.
        keep_checkpoints: checkpoints kept on disk, newest first.
        nonfinite_patience: after this many consecutive non-finite steps the run rolls
            back to its last checkpoint and lowers the learning rate; 0 never rolls
            back (needs ``checkpoint_every``).
        rollback_lr_factor: each roll-back multiplies the learning rate by this.
        tbptt_k1: for a stream task (``echo``, ``text``), steps between updates of
            truncated backprop through time; 0 means 32.
        tbptt_k2: steps each update backpropagates (>= k1); 0 means k1.
        seed: seeds initialisation, the training stream and the test set.
        test_size: held-out sequences for the test loss.
        eval_every: steps between test evaluations (the last step is always evaluated).
        log_every: steps between rows of ``metrics.csv`` (the last step is always logged).
        engine: ``auto``, ``generic`` or ``fast`` (see :func:`bptt.unroll`).
        device: torch device, e.g. ``cpu`` or ``cuda:0``.
        dtype: ``float32`` or ``float64``.
        flush_denormal: flush subnormal floats to zero during training. Vanishing
            gradients underflow into subnormals, and CPU arithmetic on them is an
            order of magnitude slower; the values lost are below 1.2e-38 (float32).
        threads: torch intra-op threads for the run; 0 keeps torch's setting.
        out: the run directory; None writes no files.
    """

    method: str | None = field(default=None, metadata=_dynamic_choice(lambda: tuple(METHODS)))
    task: str = field(default="adding", metadata=_dynamic_choice(lambda: tuple(TASKS)))
    length: int | None = field(default=None, metadata=_int(1, 1_000_000))
    cell: str = field(default="lstm", metadata=_dynamic_choice(cell_names))
    hidden: int = field(default=128, metadata=_int(1, 65_536))
    steps: int = field(default=2000, metadata=_int(1, 100_000_000))
    batch_size: int = field(default=50, metadata=_int(1, 1_000_000))
    lr: float = field(default=3e-3, metadata=_float(0.0, 10.0, open_min=True))
    optimizer: str = field(default="adam", metadata=_choice(*OPTIMIZERS))
    lr_schedule: str = field(default="constant", metadata=_choice(*LR_SCHEDULES))
    lr_end_factor: float = field(default=0.0, metadata=_float(0.0, 1.0))
    momentum: float = field(default=0.9, metadata=_float(0.0, 0.999999))
    hf_damping: float = field(default=1.0, metadata=_float(0.0, 1e9, open_min=True))
    hf_max_cg: int = field(default=100, metadata=_int(1, 100_000))
    hf_mu: float = field(default=0.0, metadata=_float(0.0, 1e9))
    hf_curvature_fraction: float = field(default=1.0, metadata=_float(0.0, 1.0, open_min=True))
    hf_preconditioner: bool = field(default=False, metadata={"kind": bool})
    clip: str | None = field(default=None, metadata=_choice(*CLIPS))
    clip_norm: float | None = field(default=None, metadata=_float(0.0, None, open_min=True))
    clip_value: float | None = field(default=None, metadata=_float(0.0, None, open_min=True))
    clip_percentile: float = field(default=10.0, metadata=_float(0.0, 100.0, open_min=True))
    clip_history: int = field(default=0, metadata=_int(0))
    clip_z: float = field(default=2.5, metadata=_float(0.0, None, open_min=True))
    clip_alpha: float = field(default=0.97, metadata=_float(0.0, 0.999999, open_min=True))
    clip_warmup: int = field(default=25, metadata=_int(1))
    clip_calibrate_steps: int = field(default=200, metadata=_int(1))
    clip_quantile: float = field(default=0.9, metadata=_float(0.0, 1.0, open_min=True))
    clip_step_norm: float | None = field(default=None, metadata=_float(0.0, None, open_min=True))
    clip_step_value: float | None = field(default=None, metadata=_float(0.0, None, open_min=True))
    nonfinite: str = field(default="skip", metadata=_choice(*NONFINITE))
    monitor: bool = field(default=True, metadata={"kind": bool})
    spike_window: int = field(default=50, metadata=_int(2, 100_000))
    spike_z: float = field(default=6.0, metadata=_float(0.0, None, open_min=True))
    diagnose_every: int = field(default=0, metadata=_int(0))
    probe_size: int = field(default=32, metadata=_int(1, 100_000))
    stop_when_solved: bool = field(default=False, metadata={"kind": bool})
    time_limit_s: float = field(default=0.0, metadata=_float(0.0, None))
    checkpoint_every: int = field(default=0, metadata=_int(0))
    keep_checkpoints: int = field(default=3, metadata=_int(1, 1000))
    nonfinite_patience: int = field(default=5, metadata=_int(0, 1_000_000))
    rollback_lr_factor: float = field(default=0.5, metadata=_float(0.0, 1.0, open_min=True))
    tbptt_k1: int = field(default=0, metadata=_int(0, 1_000_000))
    tbptt_k2: int = field(default=0, metadata=_int(0, 1_000_000))
    seed: int = field(default=0, metadata=_int(0, 2**63 - 1))
    test_size: int = field(default=1000, metadata=_int(1, 10_000_000))
    eval_every: int = field(default=100, metadata=_int(1))
    log_every: int = field(default=10, metadata=_int(1))
    engine: str = field(default="auto", metadata=_choice(*ENGINES))
    device: str = field(default="cpu", metadata={"kind": str})
    dtype: str = field(default="float32", metadata=_choice(*DTYPES))
    flush_denormal: bool = field(default=True, metadata={"kind": bool})
    threads: int = field(default=0, metadata=_int(0, 1024))
    out: str | None = field(default=None, metadata={"kind": str})

    def __post_init__(self) -> None:
        for f in fields(self):
            setattr(self, f.name, _validate(f, getattr(self, f.name)))
        _check_device(self.device)
        if self.method is not None and self.method not in METHODS:
            raise ConfigError("method", f"must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.clip is None:
            self.clip = "norm" if self.clip_norm is not None else "none"
        if self.clip == "norm" and self.clip_norm is None:
            raise ConfigError("clip_norm", "must be given when clip is norm")
        if self.clip == "value" and self.clip_value is None:
            raise ConfigError("clip_value", "must be given when clip is value")
        if self.clip_norm is not None and self.clip not in ("norm", "zscore"):
            raise ConfigError(
                "clip_norm", f"is used only with clip norm or zscore, not {self.clip}"
            )
        if self.clip_value is not None and self.clip != "value":
            raise ConfigError("clip_value", f"is used only with clip value, not {self.clip}")
        task = TASKS[self.task]
        fixed = getattr(task, "fixed_length", None)
        if self.length is None:
            self.length = fixed or 100
        if fixed is not None and self.length != fixed:
            raise ConfigError("length", f"task {self.task} has {fixed} steps; got {self.length}")
        minimum = task.min_length
        if self.length < minimum:
            raise ConfigError(
                "length", f"must be >= {minimum} for task {self.task}; got {self.length}"
            )
        self._refuse_unused_settings()
        stream = getattr(TASKS[self.task], "stream", False)
        if self.optimizer == "hf":
            if stream:
                raise ConfigError("optimizer", "hf trains sequence tasks, not streams")
            if self.clip != "none" or self.clip_step_norm or self.clip_step_value:
                raise ConfigError("clip", "hf controls its steps by damping; use clip none")
            if self.engine == "fast":
                raise ConfigError("engine", "hf needs forward-mode AD: engine auto or generic")
        if not stream and (self.tbptt_k1 or self.tbptt_k2):
            field_name = "tbptt_k1" if self.tbptt_k1 else "tbptt_k2"
            streams = ", ".join(k for k, v in TASKS.items() if getattr(v, "stream", False))
            raise ConfigError(field_name, f"applies only to stream tasks ({streams})")
        if stream:
            self.tbptt_k1 = self.tbptt_k1 or 32
            self.tbptt_k2 = self.tbptt_k2 or self.tbptt_k1
            if self.tbptt_k1 > self.tbptt_k2:
                message = f"must be <= tbptt_k2 ({self.tbptt_k2}); got {self.tbptt_k1}"
                raise ConfigError("tbptt_k1", message)

    def _refuse_unused_settings(self) -> None:
        """A setting changed from its default where nothing reads it is a mistake."""
        defaults = {f.name: f.default for f in fields(self)}
        used_by = {
            "clip_percentile": (self.clip == "percentile", "clip percentile"),
            "clip_history": (self.clip == "percentile", "clip percentile"),
            "clip_z": (self.clip == "zscore", "clip zscore"),
            "clip_alpha": (self.clip == "zscore", "clip zscore"),
            "clip_warmup": (self.clip == "zscore", "clip zscore"),
            "clip_calibrate_steps": (self.clip == "calibrate", "clip calibrate"),
            "clip_quantile": (self.clip == "calibrate", "clip calibrate"),
            "momentum": (self.optimizer in ("sgd", "rmsprop"), "optimizer sgd or rmsprop"),
            "lr": (self.optimizer != "hf", "optimizer adam, sgd or rmsprop"),
            "lr_schedule": (self.optimizer != "hf", "optimizer adam, sgd or rmsprop"),
            "lr_end_factor": (self.lr_schedule == "cosine", "lr_schedule cosine"),
            "hf_damping": (self.optimizer == "hf", "optimizer hf"),
            "hf_max_cg": (self.optimizer == "hf", "optimizer hf"),
            "hf_mu": (self.optimizer == "hf", "optimizer hf"),
            "hf_curvature_fraction": (self.optimizer == "hf", "optimizer hf"),
            "hf_preconditioner": (self.optimizer == "hf", "optimizer hf"),
            "spike_window": (self.monitor, "monitor on"),
            "spike_z": (self.monitor, "monitor on"),
        }
        for name, (used, where) in used_by.items():
            if not used and getattr(self, name) != defaults[name]:
                raise ConfigError(name, f"is used only with {where}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A validated config from a mapping; unknown keys raise :class:`ConfigError`.

        With a ``method``, its settings fill the fields the mapping does not give; a
        different ``cell`` than the method's is refused.
        """
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                known_keys = ", ".join(sorted(known))
                raise ConfigError(str(key), f"unknown key; known keys are {known_keys}")
        name = values.get("method")
        if name is not None:
            if not isinstance(name, str) or name not in METHODS:
                raise ConfigError("method", f"must be one of {', '.join(METHODS)}; got {name!r}")
            settings = METHODS[name].settings
            cell = values.get("cell")
            if cell is not None and cell != settings["cell"]:
                message = f"method {name} uses cell {settings['cell']}, not {cell}"
                raise ConfigError("cell", message)
            values = {**settings, **values}
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with some fields changed (None values are ignored)."""
        return self.from_dict(
            {**self.to_dict(), **{k: v for k, v in changes.items() if v is not None}}
        )

    def to_dict(self) -> dict[str, Any]:
        """All fields, None included."""
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """TOML text of the config; fields that are None are left out (TOML has no null)."""
        return tomli_w.dumps({k: v for k, v in self.to_dict().items() if v is not None})


def load_toml(path: str | Path) -> dict[str, Any]:
    """The table of a TOML config file, as a dict (not yet validated).

    Raises:
        ConfigError: the file cannot be read or is not valid TOML.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError("config", f"cannot read {path}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError("config", f"{path} is not UTF-8 text: {err.reason}") from err
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError("config", f"{path} is not valid TOML: {err}") from err


def _validate(f: dataclasses.Field, value: Any) -> Any:
    spec = f.metadata
    if value is None:
        if f.default is None:
            return None
        raise ConfigError(f.name, "must be given")
    if "choices" in spec:
        allowed = spec["choices"]()
        if value not in allowed:
            raise ConfigError(f.name, f"must be one of {', '.join(allowed)}; got {value!r}")
        return value
    kind = spec["kind"]
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f.name, f"must be true or false; got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f.name, f"must be a non-empty string; got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f.name, f"must be a number; got {value!r}")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f.name, f"must be an integer; got {value!r}")
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f.name, f"must be finite; got {value!r}")
    lo, hi = spec.get("min"), spec.get("max")
    too_low = lo is not None and (value <= lo if spec.get("open_min") else value < lo)
    too_high = hi is not None and value > hi
    if too_low or too_high:
        lower = f"> {lo}" if spec.get("open_min") else f">= {lo}"
        bound = lower if hi is None else f"{lower} and <= {hi}"
        raise ConfigError(f.name, f"must be {bound}; got {value!r}")
    return value


def _check_device(device: str) -> None:
    """The device must parse and hold real data on this machine."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ConfigError("device", f"not a torch device: {device!r}") from err
    if parsed.type == "meta":
        raise ConfigError("device", "meta tensors hold no data; choose cpu or an accelerator")
    if parsed.type != "cpu" and not _available(parsed.type):
        message = f"{device!r} is not usable here: torch finds no {parsed.type} device; use cpu"
        raise ConfigError("device", message)
    try:
        torch.zeros(1, device=parsed)
    except (RuntimeError, AssertionError, ValueError, ImportError) as err:
        reason = first_line(err).split(". ")[0]  # torch's dispatcher text runs on for lines
        raise ConfigError("device", f"{device!r} is not usable here: {reason}") from err


def _available(kind: str) -> bool:
    """Whether torch has a working backend of this device type (cuda, mps, xpu, ...)."""
    try:
        module = getattr(torch.backends if kind == "mps" else torch, kind, None)
        is_available = getattr(module, "is_available", None)
        return bool(is_available()) if callable(is_available) else True
    except (RuntimeError, ImportError):
        return False
