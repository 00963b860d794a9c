"""Settings chosen by a kind: the clip policy, the optimizer, the learning-rate schedule.

Each is one small pydantic model per kind, tagged by ``kind`` and validated as a
discriminated union (``{"kind": "percentile", "p": 10.0}``), with ``build()`` making
the object it describes. A field is named as the library class's argument and its
default is read from that class's signature (:func:`default_of`), so a default is
written once, in the class; only what the library leaves open (a learning rate) is
the config's own.

Each field also carries its flat key (:class:`Flag`): the command line and the
configurations written before the nesting say ``clip = "percentile"`` and
``clip_percentile = 10``. A :class:`Choice` converts that flat form to the nested one
and back, and refuses a flat setting the chosen kind does not read: which settings
apply when is the union's own knowledge, coded once.

Adding a clip policy is one class in :mod:`bptt.clip` and one model here, listed in
:data:`ClipSettings`.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, get_args

import torch
from pydantic import Field
from pydantic.fields import FieldInfo

from bptt import clip
from bptt.optim import HessianFree
from bptt.run.training._fields import Bool, ConfigError, ConfigModel, Float, Int

__all__ = [
    "CHOICES",
    "CLIP",
    "OPTIMIZER",
    "SCHEDULE",
    "Choice",
    "ClipAdaptive",
    "ClipCalibrate",
    "ClipNone",
    "ClipNorm",
    "ClipPercentile",
    "ClipSettings",
    "ClipValue",
    "ClipZScore",
    "FirstOrder",
    "Flag",
    "Kind",
    "OptimizerAdam",
    "OptimizerHF",
    "OptimizerRMSprop",
    "OptimizerSGD",
    "OptimizerSettings",
    "ScheduleConstant",
    "ScheduleCosine",
    "ScheduleSettings",
    "default_of",
]


@dataclass(frozen=True)
class Flag:
    """Marks a kind's field with its flat key: its ``--flag`` and its name in a flat
    configuration (``Flag("clip_percentile")`` on :class:`ClipPercentile`'s ``p``)."""

    name: str


def default_of(function: Callable[..., Any], name: str) -> Any:
    """The default of argument ``name`` in the signature of ``function`` (a class: its
    constructor): where a setting's default is written once.

    Example:
        >>> default_of(clip.Percentile, "p")
        10.0

    Raises:
        TypeError: the argument has no default.
    """
    parameter = inspect.signature(function).parameters[name]
    if parameter.default is inspect.Parameter.empty:
        raise TypeError(f"{getattr(function, '__qualname__', function)}({name}) has no default")
    return parameter.default


class Kind(ConfigModel):
    """One kind of a setting; a subclass sets ``kind: Literal["name"] = "name"`` and
    ``summary`` (how the kind's flag describes it in ``--help``)."""

    kind: str
    summary: ClassVar[str] = ""

    @classmethod
    def flags(cls) -> dict[str, str]:
        """Each field but ``kind``, by its flat key."""
        found: dict[str, str] = {}
        for name, field in cls.model_fields.items():
            for meta in field.metadata:
                if isinstance(meta, Flag):
                    found[meta.name] = name
        return found


# --- the clip policy of the parameters' gradient ------------------------------------------


class ClipNone(Kind):
    """No clipping: the norm is measured, nothing is clipped."""

    kind: Literal["none"] = "none"
    summary: ClassVar[str] = "none"

    def build(self) -> clip.ClipPolicy:
        """The policy: :class:`bptt.clip.NoClip`."""
        return clip.NoClip()


class ClipNorm(Kind):
    """The global norm clipped at a fixed threshold chosen by hand."""

    kind: Literal["norm"] = "norm"
    summary: ClassVar[str] = "norm (global norm at clip_norm)"
    max_norm: Annotated[Float, Flag("clip_norm")] = Field(
        gt=0.0, description="the global-norm threshold (norm) or cap (zscore)."
    )

    def build(self) -> clip.ClipPolicy:
        """The policy: :class:`bptt.clip.Fixed`."""
        return clip.Fixed(self.max_norm)


class ClipValue(Kind):
    """Every gradient element clamped to [-value, value]."""

    kind: Literal["value"] = "value"
    summary: ClassVar[str] = "value"
    value: Annotated[Float, Flag("clip_value")] = Field(
        gt=0.0, description="the element bound of value."
    )

    def build(self) -> clip.ClipPolicy:
        """The policy: :class:`bptt.clip.Value`."""
        return clip.Value(self.value)


class ClipPercentile(Kind):
    """AutoClip: the p-th percentile of the history of norms."""

    kind: Literal["percentile"] = "percentile"
    summary: ClassVar[str] = "percentile (AutoClip)"
    p: Annotated[Float, Flag("clip_percentile")] = Field(
        default_of(clip.Percentile, "p"), gt=0.0, le=100.0, description="AutoClip's percentile p."
    )
    history: Annotated[Int, Flag("clip_history")] = Field(
        0, ge=0, description="AutoClip's window of past norms; 0 keeps them all."
    )

    def build(self) -> clip.ClipPolicy:
        """The policy: :class:`bptt.clip.Percentile` (``history`` 0: all of it)."""
        return clip.Percentile(self.p, history=self.history or None)


class ClipZScore(Kind):
    """ZClip: a norm whose z-score against an EMA of past norms is too high."""

    kind: Literal["zscore"] = "zscore"
    summary: ClassVar[str] = "zscore (ZClip)"
    z: Annotated[Float, Flag("clip_z")] = Field(
        default_of(clip.ZScore, "z"), gt=0.0, description="ZClip's z-score threshold."
    )
    alpha: Annotated[Float, Flag("clip_alpha")] = Field(
        default_of(clip.ZScore, "alpha"), gt=0.0, le=0.999999, description="ZClip's EMA factor."
    )
    warmup: Annotated[Int, Flag("clip_warmup")] = Field(
        default_of(clip.ZScore, "warmup"), ge=1, description="ZClip's warm-up steps."
    )
    max_norm: Annotated[Float | None, Flag("clip_norm")] = Field(
        default_of(clip.ZScore, "max_norm"),
        gt=0.0,
        description="ZClip's fixed cap on the global norm (none: no cap).",
    )

    def build(self) -> clip.ClipPolicy:
        """The policy: :class:`bptt.clip.ZScore`."""
        return clip.ZScore(self.z, self.alpha, self.warmup, self.max_norm)


class ClipCalibrate(Kind):
    """Unclipped for some steps, then clipped at a quantile of their norms."""

    kind: Literal["calibrate"] = "calibrate"
    summary: ClassVar[str] = "calibrate"
    steps: Annotated[Int, Flag("clip_calibrate_steps")] = Field(
        default_of(clip.Calibrate, "steps"),
        ge=1,
        description="unclipped steps before calibrate fixes its threshold.",
    )
    quantile: Annotated[Float, Flag("clip_quantile")] = Field(
        default_of(clip.Calibrate, "quantile"),
        gt=0.0,
        le=1.0,
        description="the quantile of those norms that becomes it.",
    )

    def build(self) -> clip.ClipPolicy:
        """The policy: :class:`bptt.clip.Calibrate`."""
        return clip.Calibrate(self.steps, self.quantile)


class ClipAdaptive(Kind):
    """AGC (Brock et al. 2021): each unit's gradient clipped to a fraction of the norm
    of its own weights."""

    kind: Literal["agc"] = "agc"
    summary: ClassVar[str] = "agc (adaptive, each unit against its weights' norm)"
    clipping: Annotated[Float, Flag("clip_agc_ratio")] = Field(
        default_of(clip.AdaptiveClip, "clipping"),
        gt=0.0,
        description="agc: the largest ratio of a unit's gradient norm to its weights' norm "
        "(lambda).",
    )
    eps: Annotated[Float, Flag("clip_agc_eps")] = Field(
        default_of(clip.AdaptiveClip, "eps"),
        gt=0.0,
        description="agc: the least weight norm a unit counts with (lets zero-initialised "
        "biases move).",
    )

    def build(self) -> clip.ClipPolicy:
        """The policy: :class:`bptt.clip.AdaptiveClip`."""
        return clip.AdaptiveClip(self.clipping, self.eps)


ClipSettings = Annotated[
    ClipNone | ClipNorm | ClipValue | ClipPercentile | ClipZScore | ClipCalibrate | ClipAdaptive,
    Field(discriminator="kind"),
]


# --- the optimizer -----------------------------------------------------------------------


class FirstOrder(Kind):
    """A torch optimizer over parameter groups, at a learning rate the schedule shapes.

    ``state_tensors``: the tensors of each parameter's size the optimizer keeps (its
    memory estimate; Adam's two moments, RMSprop's square average and momentum).
    """

    state_tensors: ClassVar[int] = 2

    lr: Annotated[Float, Flag("lr")] = Field(3e-3, gt=0.0, le=10.0, description="learning rate.")
    lr_recurrent: Annotated[Float | None, Flag("lr_recurrent")] = Field(
        None,
        gt=0.0,
        le=10.0,
        description="learning rate of the recurrence's own parameters (W_hh; the orthogonal "
        "cell's A), as expRNN gives them (10x below lr); default: lr. Scheduled as lr is.",
    )

    @property
    def decay(self) -> float:
        """The decoupled weight decay of the non-recurrent parameters (0: none)."""
        return 0.0

    def step_settings(self, step: int) -> dict[str, Any]:
        """Each parameter group's settings for update ``step`` (1-based) besides the
        learning rate, which the schedule sets: none, or SGD's early momentum."""
        return {}

    def build(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        """The optimizer over ``groups`` (from ``parameter_groups``)."""
        raise NotImplementedError


_MOMENTUM = "momentum of sgd (Nesterov) and rmsprop."


class OptimizerAdam(FirstOrder):
    """Adam; AdamW with ``weight_decay``."""

    kind: Literal["adam"] = "adam"
    summary: ClassVar[str] = "adam"
    weight_decay: Annotated[Float, Flag("weight_decay")] = Field(
        float(default_of(torch.optim.Adam, "weight_decay")),  # torch writes an int 0
        ge=0.0,
        le=10.0,
        description="decoupled weight decay (Adam becomes AdamW, Loshchilov & Hutter 2019), "
        "on every parameter but the recurrence's own (W_hh; the LRU's eigenvalues, gamma "
        "and B, which its authors' code leaves undecayed); adam only.",
    )

    @property
    def decay(self) -> float:
        return self.weight_decay

    def build(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        """Adam, or AdamW decaying the first group (the recurrence's is the second)."""
        if self.weight_decay:
            groups[0]["weight_decay"] = self.weight_decay  # the recurrence's group: none
            return torch.optim.AdamW(groups, lr=self.lr, weight_decay=0.0)
        return torch.optim.Adam(groups, lr=self.lr)


class OptimizerSGD(FirstOrder):
    """SGD, Nesterov's when momentum > 0."""

    kind: Literal["sgd"] = "sgd"
    summary: ClassVar[str] = "sgd"
    state_tensors: ClassVar[int] = 1  # the momentum buffer
    momentum: Annotated[Float, Flag("momentum")] = Field(
        0.9, ge=0.0, le=0.999999, description=_MOMENTUM
    )
    early_momentum: Annotated[Float, Flag("early_momentum")] = Field(
        0.9,
        ge=0.0,
        le=0.999999,
        description="sgd: the momentum of the first early_momentum_steps updates (Sutskever "
        "et al. 2013 train RNNs at 0.9 for 1,000 updates, then at their momentum).",
    )
    early_momentum_steps: Annotated[Int, Flag("early_momentum_steps")] = Field(
        0,
        ge=0,
        le=100_000_000,
        description="sgd: updates at early_momentum before momentum takes over (0: none).",
    )

    def momentum_at(self, step: int) -> float:
        """The momentum of update ``step`` (1-based)."""
        return self.early_momentum if step <= self.early_momentum_steps else self.momentum

    def step_settings(self, step: int) -> dict[str, Any]:
        if not self.early_momentum_steps:
            return {}
        return {"momentum": self.momentum_at(step)}

    def build(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        """``torch.optim.SGD`` (Nesterov when momentum > 0)."""
        first = self.momentum_at(1)
        nesterov = first > 0 or self.momentum > 0
        # torch refuses Nesterov at momentum 0 when built, not when stepped: a schedule
        # that starts at 0 is built at its later momentum and set before each step
        built = max(first, self.momentum) if self.early_momentum_steps else first
        return torch.optim.SGD(groups, lr=self.lr, momentum=built, nesterov=nesterov)


class OptimizerRMSprop(FirstOrder):
    """RMSprop."""

    kind: Literal["rmsprop"] = "rmsprop"
    summary: ClassVar[str] = "rmsprop"
    alpha: Annotated[Float, Flag("rmsprop_alpha")] = Field(
        default_of(torch.optim.RMSprop, "alpha"),
        gt=0.0,
        lt=1.0,
        description="rmsprop: the moving average's weight of past squared gradients "
        "(torch's alpha; the chrono paper's 0.9).",
    )
    momentum: Annotated[Float, Flag("momentum")] = Field(
        0.9, ge=0.0, le=0.999999, description=_MOMENTUM
    )

    def build(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        """``torch.optim.RMSprop``."""
        return torch.optim.RMSprop(groups, lr=self.lr, alpha=self.alpha, momentum=self.momentum)


class OptimizerHF(Kind):
    """Hessian-free (:class:`bptt.optim.HessianFree`): no learning rate, no schedule."""

    kind: Literal["hf"] = "hf"
    summary: ClassVar[str] = "hf (Hessian-free, bptt.optim)"
    # the memory estimate's: the update, the CG residual, direction and product
    state_tensors: ClassVar[int] = 4
    damping: Annotated[Float, Flag("hf_damping")] = Field(
        default_of(HessianFree, "damping"),
        gt=0.0,
        le=1e9,
        description="Hessian-free: initial Levenberg-Marquardt damping.",
    )
    # the config's own: fewer than the library's 250, a step of a training run
    max_cg: Annotated[Int, Flag("hf_max_cg")] = Field(
        100, ge=1, le=100_000, description="Hessian-free: conjugate-gradient iterations a step."
    )
    mu: Annotated[Float, Flag("hf_mu")] = Field(
        default_of(HessianFree, "mu"),
        ge=0.0,
        le=1e9,
        description="Hessian-free: structural damping weight.",
    )
    curvature_fraction: Annotated[Float, Flag("hf_curvature_fraction")] = Field(
        1.0, gt=0.0, le=1.0, description="Hessian-free: share of the batch for curvature."
    )
    preconditioner: Annotated[Bool, Flag("hf_preconditioner")] = Field(
        default_of(HessianFree, "preconditioner"),
        description="Hessian-free: use the diagonal preconditioner.",
    )

    def build(self, model: torch.nn.Module, loss: str) -> HessianFree:
        """The optimizer of ``model``'s parameters under ``loss`` (mse, cross_entropy)."""
        return HessianFree(
            model.parameters(),
            loss=loss,
            damping=self.damping,
            mu=self.mu,
            max_cg=self.max_cg,
            preconditioner=self.preconditioner,
            module=model,  # forward-mode J v: half the cost of the reverse-mode trick
        )


OptimizerSettings = Annotated[
    OptimizerAdam | OptimizerSGD | OptimizerRMSprop | OptimizerHF,
    Field(discriminator="kind"),
]


# --- the learning-rate schedule ----------------------------------------------------------


class ScheduleConstant(Kind):
    """The same rate at every step."""

    kind: Literal["constant"] = "constant"
    summary: ClassVar[str] = "constant"

    def rate(self, lr: float, step: int, steps: int) -> float:
        """The rate of step ``step`` (1-based) of ``steps``: ``lr``."""
        return lr


class ScheduleCosine(Kind):
    """A half cosine from lr at step 1 to lr * end_factor at the last step."""

    kind: Literal["cosine"] = "cosine"
    summary: ClassVar[str] = "cosine"
    end_factor: Annotated[Float, Flag("lr_end_factor")] = Field(
        0.0, ge=0.0, le=1.0, description="the cosine schedule's last rate, over lr."
    )

    def rate(self, lr: float, step: int, steps: int) -> float:
        """The rate of step ``step`` (1-based) of ``steps`` (a fixed function of it).

        >>> ScheduleCosine(end_factor=0.5).rate(1.0, 2, 3)
        0.75
        """
        if steps == 1:
            return lr
        progress = min(step - 1, steps - 1) / (steps - 1)
        end = self.end_factor
        return lr * (end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress)))


ScheduleSettings = Annotated[ScheduleConstant | ScheduleCosine, Field(discriminator="kind")]


# --- the flat form -----------------------------------------------------------------------


def _literal(names: tuple[str, ...]) -> Any:
    any_literal: Any = Literal
    return any_literal[names]


def _either(names: list[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _is_default(value: Any, default: Any) -> bool:
    """Whether a given flat value is its key's default (as today's refusal decided:
    ``10`` is ``10.0``; ``False`` is not ``0``)."""
    if isinstance(value, bool) != isinstance(default, bool):
        return False
    try:
        return bool(value == default)
    except (TypeError, ValueError):  # an array, a value that does not compare
        return False


class Choice:
    """One setting chosen by a kind: a TrainConfig field holding a discriminated union of
    :class:`Kind` models, and its flat form (a key naming the kind, one key a setting).

    Args:
        field: the config's field (``clip``), a table in ``config.toml``.
        flag: the flat key naming the kind (``clip``, ``lr_schedule``).
        union: the ``Annotated[A | B | ..., Field(discriminator="kind")]`` of its kinds.
        description: the kind flag's ``--help``; ``{kinds}`` becomes the kinds' summaries.
        default: the kind when none is given (None: ``derive`` decides).
        derive: the kind from the other flat values, when none is given.
    """

    def __init__(
        self,
        field: str,
        flag: str,
        union: Any,
        description: str,
        default: str | None,
        derive: Callable[[Mapping[str, Any]], str] | None = None,
    ) -> None:
        self.field, self.flag, self.default, self.derive = field, flag, default, derive
        members: tuple[type[Kind], ...] = get_args(get_args(union)[0])
        self.kinds: dict[str, type[Kind]] = {k.model_fields["kind"].default: k for k in members}
        summaries = [k.summary for k in members]
        self.description = description.format(kinds=_either(summaries))
        self.settings: dict[str, FieldInfo] = {}  # flat key -> its field, the first seen
        self.readers: dict[str, list[str]] = {}  # flat key -> the kinds that read it
        self.names: dict[str, str] = {}  # field name -> flat key, across the kinds
        for name, kind in self.kinds.items():
            for key, attribute in kind.flags().items():
                if self.names.setdefault(attribute, key) != key:
                    raise TypeError(f"{self.field}.{attribute} has two flat keys")
                self.readers.setdefault(key, []).append(name)
                if key not in self.settings:
                    field_info = copy.copy(kind.model_fields[attribute])
                    if field_info.is_required():  # given with its kind, else absent
                        field_info.default = None
                    self.settings[key] = field_info

        names = tuple(self.kinds)
        annotation = _literal(names) if self.default is not None else _literal(names) | None
        kind_field = FieldInfo(
            annotation=annotation, default=self.default, description=self.description
        )
        self._flag_fields = {self.flag: kind_field, **self.settings}

    def flag_fields(self) -> dict[str, FieldInfo]:
        """The flat keys, the kind's first, each with the field that describes it."""
        return dict(self._flag_fields)

    def flat_defaults(self) -> dict[str, Any]:
        """Each flat key at its default."""
        return {key: field.default for key, field in self._flag_fields.items()}

    def kind_of(self, flat: Mapping[str, Any]) -> Any:
        """The kind the flat values choose: given, else the default; derived where
        neither names one."""
        kind = flat[self.flag] if self.flag in flat else self.default
        if kind is None and self.derive is not None:
            kind = self.derive(flat)
        return kind

    def reads(self, key: str, flat: Mapping[str, Any]) -> bool:
        """Whether the kind ``flat`` chooses reads the flat key ``key`` (True for a key
        not of this setting, and for a kind not known: the conversion refuses that)."""
        if key not in self.readers:
            return True
        kind = self.kind_of(flat)
        if not isinstance(kind, str) or kind not in self.kinds:
            return True
        return key in self.kinds[kind].flags()

    def flatten(self, table: Mapping[str, Any]) -> dict[str, Any]:
        """A nested table (``{"kind": "percentile", "p": 5}``) as flat keys.

        Raises:
            ConfigError: a key no kind of this setting has.
        """
        flat: dict[str, Any] = {}
        for name, value in table.items():
            if name == "kind":
                flat[self.flag] = value
            elif name in self.names:
                flat[self.names[name]] = value
            else:
                known = ", ".join(["kind", *self.names])
                message = f"unknown key {name!r}; known keys are {known}"
                raise ConfigError(self.field, message)
        return flat

    def nest(self, flat: dict[str, Any]) -> None:
        """Replace this setting's flat keys in ``flat`` by its table (``flat[field]``).

        Raises:
            ConfigError: an unknown kind; a setting changed from its default that the
                kind does not read; a setting the kind needs, missing.
        """
        kind = self.kind_of(flat)
        flat.pop(self.flag, None)
        if not isinstance(kind, str) or kind not in self.kinds:
            raise ConfigError(self.flag, f"must be one of {', '.join(self.kinds)}; got {kind!r}")
        model = self.kinds[kind]
        reads = model.flags()
        table: dict[str, Any] = {"kind": kind}
        for key, field in self.settings.items():
            if key not in flat:
                continue
            value = flat.pop(key)
            if key in reads:
                table[reads[key]] = value
            elif not _is_default(value, field.default):
                message = f"is used only with {self.flag} {_either(self.readers[key])}, not {kind}"
                raise ConfigError(key, message)
        for key, name in reads.items():
            if model.model_fields[name].is_required() and table.get(name) is None:
                raise ConfigError(key, f"must be given when {self.flag} is {kind}")
        flat[self.field] = table

    def flat(self, chosen: Kind) -> dict[str, Any]:
        """The flat keys of a validated kind: its own settings, the others at their
        defaults."""
        values = {**self.flat_defaults(), self.flag: chosen.kind}
        for key, name in type(chosen).flags().items():
            values[key] = getattr(chosen, name)
        return values


OPTIMIZER = Choice(
    "optimizer",
    "optimizer",
    OptimizerSettings,
    "{kinds}.",
    default="adam",
)
SCHEDULE = Choice(
    "schedule",
    "lr_schedule",
    ScheduleSettings,
    "constant, or cosine: a half cosine from lr at step 1 to lr * lr_end_factor at the "
    "last step (a fixed function of the step).",
    default="constant",
)
CLIP = Choice(
    "clip",
    "clip",
    ClipSettings,
    "clipping of the parameters' gradient: {kinds}; default: norm if clip_norm is given, "
    "else none.",
    default=None,
    derive=lambda flat: "norm" if flat.get("clip_norm") is not None else "none",
)
CHOICES: tuple[Choice, ...] = (OPTIMIZER, SCHEDULE, CLIP)
