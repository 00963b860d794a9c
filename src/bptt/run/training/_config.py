"""The training configuration: one model, every field validated, unknown keys refused.

A configuration comes from defaults, then a TOML file, then command-line flags, each
overriding the one before. Every error names the field and what it accepts.

The clip policy, the optimizer and the learning-rate schedule are nested models, one
per kind (``bptt.run.training._settings``), saved as the tables ``[clip]``,
``[optimizer]`` and ``[schedule]`` of ``config.toml``. The flat form of the command
line and of the runs written before the nesting (``clip = "percentile"``,
``clip_percentile = 10``, ``lr = 1e-3``) is read too: :meth:`TrainConfig.flat` gives
it back, one key a flag.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import tomli_w
import torch
from pydantic import Field, model_validator
from pydantic.fields import FieldInfo

from bptt.cells import cell_names, make_cell
from bptt.diagnose import Monitor
from bptt.engine import EngineName, has_fast_engine, has_triton_kernel, triton_refusal
from bptt.run.training._errors import first_line
from bptt.run.training._fields import (
    Bool,
    ConfigError,
    ConfigModel,
    Float,
    Int,
    Names,
    Text,
    load_toml,
)
from bptt.run.training._recipes import RECIPES
from bptt.run.training._settings import (
    CHOICES,
    CLIP,
    OPTIMIZER,
    SCHEDULE,
    ClipNone,
    ClipSettings,
    FirstOrder,
    Kind,
    OptimizerAdam,
    OptimizerSettings,
    ScheduleConstant,
    ScheduleSettings,
    default_of,
)
from bptt.tasks import TASKS

__all__ = [
    "CLIPS",
    "DTYPES",
    "LR_SCHEDULES",
    "NONFINITE",
    "OPTIMIZERS",
    "TrainConfig",
    "as_before",
]

DtypeName = Literal["float32", "float64"]
NonfiniteName = Literal["skip", "raise"]
LSTMInitName = Literal["chrono", "forget-bias-1", "torch"]
OPTIMIZERS: tuple[str, ...] = tuple(OPTIMIZER.kinds)
DTYPES: tuple[DtypeName, ...] = get_args(DtypeName)
CLIPS: tuple[str, ...] = tuple(CLIP.kinds)
NONFINITE: tuple[NonfiniteName, ...] = get_args(NonfiniteName)
LR_SCHEDULES: tuple[str, ...] = tuple(SCHEDULE.kinds)

Task = Annotated[Text, Names(lambda: TASKS)]
Cell = Annotated[Text, Names(cell_names)]
RecipeName = Annotated[Text, Names(lambda: RECIPES)]

# Set while a run's own config.toml is read: complete already, its recipe not reapplied.
_SAVED: ContextVar[bool] = ContextVar("bptt_saved_config", default=False)

# Settings read only by a first-order optimizer (one with a learning rate), beside its own.
_FIRST_ORDER_ONLY = ("lr_schedule", "lr_end_factor", "rebase_every")


class TrainConfig(ConfigModel):
    """Everything that defines one training run; saved as the run's ``config.toml``.

    Each flag's description is its ``--help`` text (:meth:`flag_fields`);
    :meth:`from_dict` takes a TOML table (nested or flat) or flags. Fields left None are
    derived: ``clip`` from ``clip_norm``, ``length`` from the task,
    ``tbptt_k1``/``tbptt_k2`` for a stream.

    Example:
        >>> config = TrainConfig(task="copy", length=50, clip="percentile", clip_percentile=5)
        >>> config.clip
        ClipPercentile(kind='percentile', p=5.0, history=0)
        >>> config.flat()["clip_percentile"], config.optimizer.kind
        (5.0, 'adam')
    """

    method: RecipeName | None = Field(
        None,
        description="a recipe (bptt.run.RECIPES) whose settings fill the fields not given "
        "explicitly.",
    )
    task: Task = Field("adding", description="the task (bptt.tasks.TASKS).")
    length: Int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="the task's length T (adding: sequence length; copy: the delay); "
        "default: the task's fixed length (digits: 64) or 100.",
    )
    cell: Cell = Field(
        "lstm", description="the recurrent cell (bptt.cells; register_cell adds yours)."
    )
    hidden: Int = Field(128, ge=1, le=65_536, description="hidden units H.")
    # Measured (seed 0, bptt train --cell lstm --layers 2 --task adding --length 200,
    # Adam 3e-3, 2,000 steps): torch's init ended at 0.1661 test MSE and forget bias 1
    # at 0.1669 (the baseline 0.1667, both judged vanishing); chrono solved it by step
    # 1,000. The chrono initialisation needs no setting beyond the task's own length.
    lstm_init: LSTMInitName = Field(
        "chrono",
        description="how an LSTM starts when no method initialises it: chrono (Tallec & "
        "Ollivier 2018: forget biases log U[1, T_max - 1], input biases their negatives, "
        "T_max the task's dependency length), forget-bias-1 (Gers et al. 2000; Keras' "
        "default) or torch (torch.nn.LSTM's uniform).",
    )
    layers: Int = Field(
        1,
        ge=1,
        le=64,
        description="recurrent layers, each reading the outputs of the one below.",
    )
    bidirectional: Bool = Field(
        False,
        description="every layer also runs a cell backward in time (sequence tasks; a "
        "stream's future is not there to read).",
    )
    dropout: Float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="dropout on the inputs of layers 2 .. L in training (torch.nn.LSTM's "
        "dropout); layers >= 2 only.",
    )
    steps: Int = Field(2000, ge=1, le=100_000_000, description="optimizer steps.")
    batch_size: Int = Field(50, ge=1, le=1_000_000, description="sequences per step.")
    optimizer: OptimizerSettings = Field(
        default_factory=lambda: OptimizerAdam.model_validate({}),
        description="the optimizer and its settings (flat: optimizer, lr, momentum, hf_damping, "
        "...).",
    )
    schedule: ScheduleSettings = Field(
        default_factory=ScheduleConstant,
        description="the learning-rate schedule (flat: lr_schedule, lr_end_factor).",
    )
    rebase_every: Int = Field(
        0,
        ge=0,
        le=1_000_000_000,
        description="orthogonal cells: every so many steps, fold exp(A - A^T) into the "
        "base and restart A at 0 (dynamic trivialization, dtriv); 0: never (expRNN).",
    )
    clip: ClipSettings = Field(
        default_factory=ClipNone,
        description="the clip policy of the parameters' gradient and its settings (flat: "
        "clip, clip_norm, clip_percentile, ...).",
    )
    clip_step_norm: Float | None = Field(
        None,
        gt=0.0,
        description="clip each sample's hidden-state gradient to this norm at every "
        "time step (combines with any clip).",
    )
    clip_step_value: Float | None = Field(
        None, gt=0.0, description="clamp the hidden-state gradient's elements every step."
    )
    nonfinite: NonfiniteName = Field(
        "skip",
        description="a step whose loss or gradient is NaN or inf: skip it (counted) or "
        "raise an error.",
    )
    monitor: Bool = Field(
        True,
        description="watch every step (gradient norms per parameter, spikes, where a "
        "non-finite value starts) and diagnose the final model.",
    )
    spike_window: Int = Field(
        default_of(Monitor, "window"),
        ge=2,
        le=100_000,
        description="steps in the spike detectors' window.",
    )
    spike_z: Float = Field(
        default_of(Monitor, "z"),
        gt=0.0,
        description="robust z-score above which a value is a spike.",
    )
    diagnose_every: Int = Field(
        0,
        ge=0,
        description="steps between diagnoses into diagnostics.jsonl; 0 for none.",
    )
    tensorboard: Bool = Field(
        False,
        description="also write TensorBoard event files to RUN_DIR/tensorboard (every "
        "logged row as scalars, each diagnosis's gradient by distance as a figure; needs "
        "--out and the tensorboard package).",
    )
    probe_size: Int = Field(
        32, ge=1, le=100_000, description="test sequences in the diagnoses' probe batch."
    )
    stop_when_solved: Bool = Field(
        False, description="end the run at the first evaluation that finds it solved."
    )
    validation_share: Float = Field(
        0.0,
        ge=0.0,
        lt=0.5,
        description="share of a fixed training set (digits, pdigits) set aside for "
        "validation: the evaluations during training score it, the run keeps the model of "
        "the best one (accuracy, else loss), and the test set is scored once, at the end, "
        "on that model; 0: none (the test set is evaluated during training).",
    )
    time_limit_s: Float = Field(
        0.0,
        ge=0.0,
        description="end the run at the first step past this many seconds; 0 for none.",
    )
    checkpoint_every: Int = Field(
        100,
        ge=0,
        description="steps between checkpoints (also at step 0 and the end), the points "
        "nonfinite_patience rolls back to; 0 for none (checkpoint_every_s still saves "
        "by the clock unless it is 0 too).",
    )
    checkpoint_every_s: Float = Field(
        120.0,
        ge=0.0,
        description="seconds between checkpoints, whichever of this and checkpoint_every "
        "comes first (a killed run loses at most this much); 0 for none.",
    )
    keep_checkpoints: Int = Field(
        3, ge=1, le=1000, description="checkpoints kept on disk, newest first."
    )
    nonfinite_patience: Int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="non-finite steps in a row before a roll-back to the last checkpoint "
        "of checkpoint_every with a lower rate; 0 never (a run's divergence is shown, not "
        "hidden; the bench's and --seeds runs use 5).",
    )
    rollback_lr_factor: Float = Field(
        0.5, gt=0.0, le=1.0, description="each roll-back multiplies the rate by this."
    )
    tbptt_k1: Int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="stream tasks: steps between truncated-BPTT updates; 0 means 32.",
    )
    tbptt_k2: Int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="steps each update backpropagates (>= k1); 0 means k1.",
    )
    seed: Int = Field(
        0, ge=0, le=2**63 - 1, description="seeds initialisation, training data, test set."
    )
    test_size: Int = Field(1000, ge=1, le=10_000_000, description="held-out sequences.")
    eval_every: Int = Field(
        100,
        ge=1,
        description="steps between evaluations (of the validation split, if any; "
        "else of the test set).",
    )
    log_every: Int = Field(10, ge=1, description="steps between rows of metrics.csv.")
    engine: EngineName = Field(
        "auto",
        description="the unroll engine: auto, generic, fast or triton (bptt.unroll; triton: "
        "the Triton kernels of the RNN, LSTM and GRU, on CUDA, float32, one layer).",
    )
    device: Text = Field("cpu", description="torch device, e.g. cpu or cuda:0.")
    dtype: DtypeName = Field("float32", description="float32 or float64.")
    flush_denormal: Bool = Field(
        True, description="flush subnormal floats to zero while training (much faster)."
    )
    threads: Int = Field(
        0,
        ge=0,
        le=1024,
        description="torch threads for the run; 0: torch's setting, lowered to the cores "
        "other processes leave free (a resumed run keeps the count it began with).",
    )
    out: Text | None = Field(None, description="the run directory; none writes no files.")

    @classmethod
    def from_saved(cls, values: dict[str, Any]) -> TrainConfig:
        """A run's own ``config.toml`` (nested, or flat as written before the nesting):
        complete already (its recipe was applied when the run was made), so a field it
        leaves out is None, not the recipe's value.

        Raises:
            ConfigError: an unknown key, or a value its field refuses.
        """
        if isinstance(values, dict) and "units" in values and "hidden" not in values:
            message = (
                "this is an echo state network's run (written by bptt esn): it has no "
                "training to resume or gradients to diagnose; its result is its summary.json"
            )
            raise ConfigError("run", message)
        token = _SAVED.set(True)
        try:
            return cls.from_dict({**as_before(values), **values})
        finally:
            _SAVED.reset(token)

    @classmethod
    def saved_in(cls, path: str | Path) -> TrainConfig:
        """The configuration of the run in directory ``path`` (its ``config.toml``), with
        ``out`` set to ``path`` wherever the directory has moved since.

        Raises:
            ConfigError: the file is missing, not TOML, or not a valid configuration.
        """
        return cls.from_saved({**load_toml(Path(path) / "config.toml"), "out": str(path)})

    @classmethod
    def flag_fields(cls) -> dict[str, FieldInfo]:
        """The flat keys (one a flag of ``bptt train``), in order, each with its field:
        a nested setting's kind and each of its kinds' settings in its place."""
        return dict(_flag_fields())

    @classmethod
    def flat_defaults(cls) -> dict[str, Any]:
        """Each flat key at its default (None: derived or not given)."""
        return {key: field.default for key, field in _flag_fields().items()}

    @classmethod
    def error_field(cls, loc: tuple[int | str, ...]) -> str:
        """The flat key of a nested setting's error (``clip.percentile.p`` is
        ``clip_percentile``), as the command line and flat configurations name it."""
        for choice in CHOICES:
            if loc and loc[0] == choice.field:
                if len(loc) >= 3 and loc[1] in choice.kinds:
                    keys = {v: k for k, v in choice.kinds[str(loc[1])].flags().items()}
                    return keys.get(str(loc[2]), choice.flag)
                return choice.flag
        return super().error_field(loc)

    @classmethod
    def flatten(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """A configuration's table (a TOML file's) in the flat form, not yet validated:
        what flags are merged into, key by key (``bptt train --config FILE --lr ...``).

        Raises:
            ConfigError: a nested table's key that no kind of its setting has.
        """
        return _flatten(values)

    def flat(self) -> dict[str, Any]:
        """The flat form, as today's command line and runs written before the nesting
        have it: every flat key, a kind's settings at their values, the settings of the
        kinds not chosen at their defaults. :meth:`from_dict` reads it back."""
        values: dict[str, Any] = {}
        for name in type(self).model_fields:
            choice = _CHOICE_OF.get(name)
            if choice is None:
                values[name] = getattr(self, name)
            else:
                values.update(choice.flat(getattr(self, name)))
        return values

    def to_dict(self) -> dict[str, Any]:
        """The flat form (:meth:`flat`): what command lines, checkpoints and comparisons
        use; ``model_dump()`` is the nested one."""
        return self.flat()

    def to_toml(self) -> str:
        """TOML text of the config, the nested settings as tables; None is left out."""
        return tomli_w.dumps(_without_none(self.model_dump()))

    def differing_fields(
        self, other: TrainConfig | Mapping[str, Any], ignore: Collection[str] = ()
    ) -> list[str]:
        """The flat keys, sorted, in which this configuration and ``other`` differ, beside
        those in ``ignore``. ``other`` may be a saved configuration's table (a
        checkpoint's, nested or flat): a key it lacks was added since, and counts at its
        default.
        """
        if isinstance(other, TrainConfig):
            theirs = other.flat()
        else:
            theirs = {**self.flat_defaults(), **as_before(other), **_flatten(other)}
        mine = self.flat()
        keys = (set(mine) | set(theirs)) - set(ignore)
        return sorted(k for k in keys if mine.get(k) != theirs.get(k))

    @model_validator(mode="before")
    @classmethod
    def _nested(cls, values: Any) -> Any:
        """Flat keys and nested tables alike to the nested form: tables flattened (a flat
        key given beside a table wins), the recipe's settings filled in, then each
        nested setting's flat keys gathered into its table (:class:`Choice` refuses a
        setting its kind does not read)."""
        if not isinstance(values, dict):
            return values
        flat = _flatten(values)
        if not _SAVED.get() and flat.get("method") is not None:
            flat = _recipe_first(flat)
        schedule = SCHEDULE.kind_of(flat)
        if _first_order(flat) is False and isinstance(schedule, str) and schedule != "constant":
            message = f"is used only with optimizer {_either(_FIRST_ORDER)}, not hf"
            raise ConfigError("lr_schedule", message)  # hf: no rate to schedule
        for choice in CHOICES:
            choice.nest(flat)
        return flat

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        self.check_names()  # the task must be known before it is asked anything
        _check_device(self.device)
        task = TASKS[self.task]
        fixed = task.fixed_length
        if self.length is None:
            self.length = fixed or 100
        if fixed is not None and self.length != fixed:
            raise ConfigError("length", f"task {self.task} has {fixed} steps; got {self.length}")
        if self.length < task.min_length:
            message = f"must be >= {task.min_length} for task {self.task}; got {self.length}"
            raise ConfigError("length", message)
        self._refuse_unused_settings()
        if self.validation_share and not task.has_training_set:
            message = f"task {self.task} generates fresh data: it has no training set to split"
            raise ConfigError("validation_share", message)
        if self.optimizer.kind == "hf":
            if task.stream:
                raise ConfigError("optimizer", "hf trains sequence tasks, not streams")
            if self.clip.kind != "none" or self.clip_step_norm or self.clip_step_value:
                raise ConfigError("clip", "hf controls its steps by damping; use clip none")
            if self.engine in ("fast", "triton"):
                message = f"hf needs forward-mode AD: engine auto or generic, not {self.engine}"
                raise ConfigError("engine", message)
            if self.dropout:
                message = (
                    "hf evaluates each step's closure several times (gradient, curvature, "
                    "its reduction ratio): dropout would draw another network each time"
                )
                raise ConfigError("dropout", message)
        if self.bidirectional and task.stream:
            message = f"task {self.task} is a stream: a step's future is not there to read"
            raise ConfigError("bidirectional", message)
        if self.engine in ("fast", "triton") and not _fast_cell(self.cell, self.engine):
            message = f"cell {self.cell} has no {self.engine} engine: engine auto or generic"
            raise ConfigError("engine", message)
        if self.engine == "triton":
            self._refuse_triton(task.input_size)
        self._derive_truncation(task.stream)
        return self

    def _refuse_triton(self, input_size: int) -> None:
        """Refuse ``engine = "triton"`` where its kernels would refuse the run's first
        unroll (device, dtype, hidden size: asked of a probe of the run's cell) or a
        diagnosis (a network of several unrolls is diagnosed with taps of its own)."""
        reason: str | None
        if self.layers > 1 or self.bidirectional:
            reason = (
                "a network of several unrolls is diagnosed layer by layer with taps the "
                "Triton kernels do not run"
            )
        else:
            dtype, device = self.torch_dtype, self.device
            cell = make_cell(self.cell, input_size, self.hidden, device=device, dtype=dtype)
            probe = torch.zeros(1, 1, input_size, device=device, dtype=dtype)
            reason = triton_refusal(cell, probe)
        if reason is not None:
            raise ConfigError("engine", f"triton cannot run this: {reason}; engine auto or fast")

    def _derive_truncation(self, stream: bool) -> None:
        if not stream:
            if self.tbptt_k1 or self.tbptt_k2:
                field_name = "tbptt_k1" if self.tbptt_k1 else "tbptt_k2"
                streams = ", ".join(k for k, v in TASKS.items() if v.stream)
                raise ConfigError(field_name, f"applies only to stream tasks ({streams})")
            return
        self.tbptt_k1 = self.tbptt_k1 or 32
        self.tbptt_k2 = self.tbptt_k2 or self.tbptt_k1
        if self.tbptt_k1 > self.tbptt_k2:
            message = f"must be <= tbptt_k2 ({self.tbptt_k2}); got {self.tbptt_k1}"
            raise ConfigError("tbptt_k1", message)

    def _refuse_unused_settings(self) -> None:
        """A setting changed from its default where nothing reads it is a mistake (the
        nested settings' own are refused by their kinds, :class:`Choice`)."""
        used_by = {
            "rebase_every": (
                self.cell.startswith("orthogonal") and isinstance(self.optimizer, FirstOrder),
                "an orthogonal cell and optimizer adam, sgd or rmsprop",
            ),
            "spike_window": (self.monitor, "monitor on"),
            "spike_z": (self.monitor, "monitor on"),
            "dropout": (self.layers >= 2, "layers >= 2 (it falls between layers)"),
            "lstm_init": (
                self.cell == "lstm" and not _initialises(self.method),
                "cell lstm and no method that initialises it (lstm, lstm-chrono, ...)",
            ),
        }
        fields = type(self).model_fields
        for name, (used, where) in used_by.items():
            if not used and getattr(self, name) != fields[name].default:
                raise ConfigError(name, f"is used only with {where}")

    @property
    def torch_dtype(self) -> torch.dtype:
        """``dtype`` as a torch dtype."""
        dtype: torch.dtype = getattr(torch, self.dtype)
        return dtype


_CHOICE_OF = {choice.field: choice for choice in CHOICES}
_FIRST_ORDER = [name for name, kind in OPTIMIZER.kinds.items() if issubclass(kind, FirstOrder)]


@cache
def _flag_fields() -> dict[str, FieldInfo]:
    fields: dict[str, FieldInfo] = {}
    for name, field in TrainConfig.model_fields.items():
        choice = _CHOICE_OF.get(name)
        fields.update({name: field} if choice is None else choice.flag_fields())
    return fields


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _without_none(table: dict[str, Any]) -> dict[str, Any]:
    """A table without its None values, nested tables too (TOML has no null)."""
    return {
        k: _without_none(v) if isinstance(v, dict) else v for k, v in table.items() if v is not None
    }


def _flatten(values: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration's keys, its nested settings (tables or models) as flat keys; a
    flat key given beside a table wins over the table's."""
    flat: dict[str, Any] = {}
    given: dict[str, Any] = {}
    for key, value in values.items():
        choice = _CHOICE_OF.get(str(key))
        if choice is not None and isinstance(value, Kind):
            value = value.model_dump()
        if choice is not None and isinstance(value, Mapping):
            flat.update(choice.flatten(value))
        elif choice is not None and choice.flag != choice.field:  # [schedule]: a table only
            message = f"must be a table (kind = one of {', '.join(choice.kinds)}); got {value!r}"
            raise ConfigError(choice.field, message)
        else:
            given[str(key)] = value
    return {**flat, **given}


def _first_order(flat: Mapping[str, Any]) -> bool | None:
    """Whether the optimizer the flat values name has a learning rate (None: unknown)."""
    kind = OPTIMIZER.kind_of(flat)
    return kind in _FIRST_ORDER if isinstance(kind, str) and kind in OPTIMIZER.kinds else None


def _recipe_first(values: dict[str, Any]) -> dict[str, Any]:
    """A recipe's settings fill the keys not given; another cell is refused. A recipe's
    setting for what the user replaced (its RMSprop's momentum under ``optimizer adam``,
    its clip_norm under ``clip none``) is dropped, not refused."""
    name = values["method"]
    if not isinstance(name, str) or name not in RECIPES:
        raise ConfigError("method", f"must be one of {', '.join(RECIPES)}; got {name!r}")
    settings = RECIPES[name].settings
    cell = values.get("cell")
    if cell is not None and cell != settings["cell"]:
        raise ConfigError("cell", f"method {name} uses cell {settings['cell']}, not {cell}")
    merged = {**settings, **values}
    return {k: v for k, v in merged.items() if k in values or _setting_applies(k, merged)}


def _setting_applies(key: str, merged: Mapping[str, Any]) -> bool:
    """Whether the flat key ``key`` is read under the merged values (its kind reads it;
    a schedule and a rebase need a first-order optimizer)."""
    if key in _FIRST_ORDER_ONLY and _first_order(merged) is False:
        return False
    return all(choice.reads(key, merged) for choice in CHOICES)


def _initialises(method: str | None) -> bool:
    """Whether the recipe ``method`` (None: no recipe) sets the initial weights."""
    return method is not None and RECIPES[method].initialise is not None


def as_before(saved: Mapping[str, Any]) -> dict[str, Any]:
    """For a saved configuration (a ``config.toml``'s or a checkpoint's table): the
    fields it lacks because it was written before they existed, at the value that was
    then in effect, so that such a run resumes, and is compared, as it was made. One so
    far: ``lstm_init``, torch's initialisation for an LSTM no method initialised."""
    method = saved.get("method")
    initialised = isinstance(method, str) and method in RECIPES and _initialises(method)
    if "lstm_init" in saved or saved.get("cell") != "lstm" or initialised:
        return {}
    return {"lstm_init": "torch"}


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


def _fast_cell(name: str, engine: str) -> bool:
    """Whether the cell called ``name`` has a fast engine (``engine="fast"``) or Triton
    kernels (``"triton"``): asked of a 1 x 2 cell built on the meta device (no memory,
    no draw from torch's generator), or on the CPU for a registered builder that cannot
    build there."""
    try:
        cell = make_cell(name, 1, 2, device="meta")
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        cell = make_cell(name, 1, 2)
    return has_triton_kernel(cell) if engine == "triton" else has_fast_engine(cell)
