"""Remedies that fit the run: each a ``bptt train`` command the user can paste.

What to change depends on the verdict, the cell, the optimizer and the clipping in
force, and on the run's own numbers: an exploding run without clipping is told to clip
at the median of its own first gradient norms (clip what is unusually large); a
clipped run that still exploded is told to lower the learning rate; an LSTM is never
told to use an LSTM. Every command is validated as a :class:`TrainConfig` before it is
offered.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable
from typing import Any

from bptt.diagnose import RunVerdict, Verdict
from bptt.run.training._config import TrainConfig
from bptt.run.training._fields import ConfigError
from bptt.run.training._recipes import RECIPES

__all__ = ["RemedyLine", "remedies_for", "train_command"]

RemedyLine = dict[str, str]  # {"why": ..., "command": ...}: RunSummary's RemedyCommand
_KEPT = (
    "task", "length", "hidden", "layers", "bidirectional", "dropout", "steps", "batch_size",
    "seed", "dtype", "device", "threads",
)  # fmt: skip
_GATED = ("lstm", "gru")


def _round(value: float, digits: int = 2) -> float:
    """``digits`` significant digits: a number a person would type."""
    return float(f"{value:.{digits}g}")


def train_command(values: dict[str, Any], out: str | None = None) -> str:
    """The ``bptt train`` command line that gives ``values`` (fields at their default
    left out).

    Raises:
        ConfigError: the values are not a valid configuration.
    """
    config = TrainConfig.from_dict({k: v for k, v in values.items() if k != "out"})
    defaults = TrainConfig.flat_defaults()
    given = config.flat()
    if values.get("method") is not None:  # the recipe fills its own fields
        given = {k: v for k, v in values.items() if k != "out"}
        defaults.update(RECIPES[values["method"]].settings)  # what it fills, left out
    parts = ["bptt train"]
    for name, value in given.items():
        if value is None or value == defaults.get(name) or name == "out":
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{flag[2:]}")
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    if out is not None:
        parts.append(f"--out {shlex.quote(out)}")
    return " ".join(parts)


def _changed(config: TrainConfig, **changes: Any) -> dict[str, Any]:
    """The same run with ``changes``, without the time limit that may have cut it (a
    next run given the same limit would be cut where this one was)."""
    return {**config.flat(), "time_limit_s": 0.0, **changes}


def _fresh(config: TrainConfig, **changes: Any) -> dict[str, Any]:
    """A new run of the same task and budget with other settings (e.g. a recipe)."""
    kept = {k: v for k, v in config.flat().items() if k in _KEPT}
    return {**kept, **changes}


Option = tuple[str, str, dict[str, Any]]  # (tag for the directory, why, the run's values)


def remedies_for(
    verdict: RunVerdict, config: TrainConfig, run_dir: str | None = None
) -> list[RemedyLine]:
    """Concrete next runs for this verdict, best first (none for a healthy run).

    Args:
        verdict: the run's :class:`bptt.diagnose.RunVerdict`.
        config: the run's configuration.
        run_dir: the run's directory; each command writes beside it.

    Returns:
        Dicts with ``why`` (a sentence) and ``command`` (a ``bptt train`` line).
    """
    options = _OPTIONS[verdict.verdict](verdict, config) if verdict.verdict in _OPTIONS else []
    remedies = []
    for tag, why, values in options:
        out = None if run_dir is None else f"{str(run_dir).rstrip('/')}-{tag}"
        try:
            remedies.append({"why": why, "command": train_command(values, out)})
        except ConfigError:  # a change this configuration cannot take: offer the others
            continue
    return remedies


def _first_order(config: TrainConfig) -> bool:
    """Whether the run's optimizer takes a learning rate (all but Hessian-free)."""
    return config.optimizer.kind != "hf"


def _lr_scaled(config: TrainConfig, factor: float) -> float:
    """The run's learning rate times ``factor``, to three digits."""
    return _round(config.flat()["lr"] * factor, 3)


def _exploding(verdict: RunVerdict, config: TrainConfig) -> list[Option]:
    """Clip at the run's own early norms (or let AutoClip choose), a lower rate (or
    more damping), per-step clipping for an ungated cell."""
    options: list[Option] = []
    first_order = _first_order(config)
    early = verdict.evidence.get("early_grad_norm")
    unclipped = config.clip.kind == "none" and config.clip_step_norm is None
    if unclipped and first_order and early is not None and math.isfinite(early) and early > 0:
        threshold = _round(early)
        why = (
            f"clip the gradient norm at {threshold:g}, the median of this run's first "
            "gradient norms (clip only what is unusually large)"
        )
        options.append(("clip", why, _changed(config, clip="norm", clip_norm=threshold)))
        why = "or let AutoClip set the threshold from the run's own history of norms"
        options.append(("autoclip", why, _changed(config, clip="percentile", clip_norm=None)))
    if first_order:
        lr_down = _lr_scaled(config, 0.1)
        options.append(
            ("lr", f"lower the learning rate to {lr_down:g}", _changed(config, lr=lr_down))
        )
    else:
        damping = config.flat()["hf_damping"] * 10
        why = f"raise Hessian-free's damping to {damping:g}: shorter, safer steps"
        options.append(("damping", why, _changed(config, hf_damping=damping)))
    if config.cell not in _GATED and config.clip_step_norm is None and first_order:
        why = "clip the hidden-state gradient at every time step, where it explodes"
        options.append(("stepclip", why, _changed(config, clip_step_norm=1.0)))
    return options


def _harmed_units(verdict: RunVerdict, config: TrainConfig) -> list[Option]:
    """Dead ReLUs or saturated units: a lower rate, a recurrence that keeps them alive."""
    options: list[Option] = []
    dead = verdict.verdict == Verdict.DEAD_UNITS
    if _first_order(config):
        lr_down = _lr_scaled(config, 0.1)
        harm = "kill ReLUs" if dead else "drive units into saturation"
        why = f"lower the learning rate to {lr_down:g}: large steps {harm}"
        options.append(("lr", why, _changed(config, lr=lr_down)))
    recipe = "irnn" if dead else "orthogonal"
    if config.method != recipe:
        why = "start from a recurrent matrix that keeps units alive: --method " + recipe
        options.append((recipe, why, _fresh(config, method=recipe)))
    return options


def _vanishing(verdict: RunVerdict, config: TrainConfig) -> list[Option]:
    """Chrono initialisation (an LSTM never told to use an LSTM), and for an ungated
    cell the IRNN, the orthogonal RNN and skip connections."""
    options: list[Option] = []
    if config.method not in ("lstm-chrono", "lstm-chrono-adam"):
        if config.cell != "lstm":
            why = "a gated cell whose forget gates keep the gradient over the dependency"
        elif config.method is None and config.lstm_init == "chrono":  # had the init
            why = "chrono initialisation with the optimizer tuned for it (Adam 1e-2, "
            why += "cosine schedule, clip 1)"
        else:
            why = "chrono initialisation: forget gates set for the dependency length"
        options.append(("chrono", why, _fresh(config, method="lstm-chrono-adam")))
    if config.cell in _GATED:
        return options
    for recipe, why in (
        ("irnn", "a ReLU RNN started at the identity (IRNN)"),
        ("orthogonal", "an orthogonal recurrent matrix: every eigenvalue of modulus 1"),
        ("skip", "skip connections from 10 steps back"),
    ):
        if config.method != recipe:
            options.append((recipe, why, _fresh(config, method=recipe)))
    return options


def _truncated(verdict: RunVerdict, config: TrainConfig) -> list[Option]:
    """Backpropagate over twice the dependency."""
    assert config.length is not None  # validation derives it from the task
    dependency = int(verdict.evidence.get("probe/dependency_length") or config.length)
    k2 = 2 * dependency
    why = f"backpropagate over twice the dependency: --tbptt-k2 {k2}"
    return [("k2", why, _changed(config, tbptt_k2=k2))]


def _overfitting(verdict: RunVerdict, config: TrainConfig) -> list[Option]:
    """A validation split, linear recurrent units, weight decay, a smaller model."""
    options: list[Option] = []
    if not config.validation_share:
        why = "keep the model that does best on a held-out 15% of the training set"
        options.append(("val", why, _changed(config, validation_share=0.15)))
    if config.method != "lru" and config.cell not in ("lru", "deep-lru"):
        # measured on permuted digits: LSTM 90-92% (overfitting), LRU 98-99% (3 seeds)
        why = "linear recurrent units, which generalised best on the digits here"
        share = config.validation_share
        options.append(("lru", why, _fresh(config, method="lru", validation_share=share)))
    if config.optimizer.kind == "adam":
        decay = _round(max(0.05, 10 * config.flat()["weight_decay"]))
        why = f"decay the weights (AdamW): --weight-decay {decay:g}"
        options.append(("decay", why, _changed(config, weight_decay=decay)))
    if config.hidden >= 8:
        smaller = config.hidden // 2
        why = f"a smaller model: {smaller} units"
        options.append(("small", why, _changed(config, hidden=smaller)))
    return options


def _not_learned(verdict: RunVerdict, config: TrainConfig) -> list[Option]:
    """Train longer, or at a higher rate."""
    steps = config.steps * 4
    options: list[Option] = [
        ("longer", f"train longer: {steps} steps", _changed(config, steps=steps))
    ]
    lr_up = _lr_scaled(config, 3)
    if _first_order(config) and lr_up <= 10:
        options.append(("lr", f"raise the learning rate to {lr_up:g}", _changed(config, lr=lr_up)))
    return options


_OPTIONS: dict[Verdict, Callable[[RunVerdict, TrainConfig], list[Option]]] = {
    Verdict.EXPLODING: _exploding,
    Verdict.DEAD_UNITS: _harmed_units,
    Verdict.SATURATED: _harmed_units,
    Verdict.VANISHING: _vanishing,
    Verdict.TRUNCATED: _truncated,
    Verdict.OVERFITTING: _overfitting,
    Verdict.HEALTHY_NOT_LEARNED: _not_learned,
    Verdict.NOT_LEARNED: _not_learned,
}
