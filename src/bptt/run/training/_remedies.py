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
from typing import Any

from bptt.diagnose import RunVerdict
from bptt.run.training._config import TrainConfig
from bptt.run.training._fields import ConfigError
from bptt.run.training._recipes import RECIPES

__all__ = ["Remedy", "remedies_for", "train_command"]

Remedy = dict[str, str]  # {"why": ..., "command": ...}
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


def remedies_for(
    verdict: RunVerdict, config: TrainConfig, run_dir: str | None = None
) -> list[Remedy]:
    """Concrete next runs for this verdict, best first (none for a healthy run).

    Args:
        verdict: the run's :class:`bptt.diagnose.RunVerdict`.
        config: the run's configuration.
        run_dir: the run's directory; each command writes beside it.

    Returns:
        Dicts with ``why`` (a sentence) and ``command`` (a ``bptt train`` line).
    """
    values = config.flat()
    first_order = config.optimizer.kind != "hf"
    lr_down, lr_up = _round(values["lr"] / 10, 3), _round(values["lr"] * 3, 3)
    options: list[tuple[str, str, dict[str, Any]]] = []  # (tag, why, values)
    kind = verdict.verdict
    if kind == "exploding":
        early = verdict.evidence.get("early_grad_norm")
        unclipped = config.clip.kind == "none" and config.clip_step_norm is None
        if unclipped and first_order and early is not None and math.isfinite(early) and early > 0:
            threshold = _round(early)
            options.append(
                (
                    "clip",
                    f"clip the gradient norm at {threshold:g}, the median of this run's first "
                    "gradient norms (clip only what is unusually large)",
                    _changed(config, clip="norm", clip_norm=threshold),
                )
            )
            options.append(
                (
                    "autoclip",
                    "or let AutoClip set the threshold from the run's own history of norms",
                    _changed(config, clip="percentile", clip_norm=None),
                )
            )
        if first_order:
            options.append(
                ("lr", f"lower the learning rate to {lr_down:g}", _changed(config, lr=lr_down))
            )
        else:
            damping = values["hf_damping"] * 10
            options.append(
                (
                    "damping",
                    f"raise Hessian-free's damping to {damping:g}: shorter, safer steps",
                    _changed(config, hf_damping=damping),
                )
            )
        if config.cell not in _GATED and config.clip_step_norm is None and first_order:
            options.append(
                (
                    "stepclip",
                    "clip the hidden-state gradient at every time step, where it explodes",
                    _changed(config, clip_step_norm=1.0),
                )
            )
    elif kind in ("dead units", "saturated"):
        if first_order:
            harm = "kill ReLUs" if kind == "dead units" else "drive units into saturation"
            options.append(
                (
                    "lr",
                    f"lower the learning rate to {lr_down:g}: large steps {harm}",
                    _changed(config, lr=lr_down),
                )
            )
        recipe = "orthogonal" if kind == "saturated" else "irnn"
        if config.method != recipe:
            options.append(
                (
                    recipe,
                    "start from a recurrent matrix that keeps units alive: --method " + recipe,
                    _fresh(config, method=recipe),
                )
            )
    elif kind == "vanishing":
        if config.method not in ("lstm-chrono", "lstm-chrono-adam"):
            if config.cell != "lstm":
                why = "a gated cell whose forget gates keep the gradient over the dependency"
            elif config.method is None and config.lstm_init == "chrono":  # had the init
                why = "chrono initialisation with the optimizer tuned for it (Adam 1e-2, "
                why += "cosine schedule, clip 1)"
            else:
                why = "chrono initialisation: forget gates set for the dependency length"
            options.append(("chrono", why, _fresh(config, method="lstm-chrono-adam")))
        if config.cell not in _GATED:
            for recipe, why in (
                ("irnn", "a ReLU RNN started at the identity (IRNN)"),
                ("orthogonal", "an orthogonal recurrent matrix: every eigenvalue of modulus 1"),
            ):
                if config.method != recipe:
                    options.append((recipe, why, _fresh(config, method=recipe)))
        if config.method != "skip" and config.cell not in _GATED:
            options.append(
                ("skip", "skip connections from 10 steps back", _fresh(config, method="skip"))
            )
    elif kind == "truncated":
        assert config.length is not None  # validation derives it from the task
        dependency = int(verdict.evidence.get("probe/dependency_length") or config.length)
        k2 = 2 * dependency
        options.append(
            (
                "k2",
                f"backpropagate over twice the dependency: --tbptt-k2 {k2}",
                _changed(config, tbptt_k2=k2),
            )
        )
    elif kind == "overfitting":
        if not config.validation_share:
            options.append(
                (
                    "val",
                    "keep the model that does best on a held-out 15% of the training set",
                    _changed(config, validation_share=0.15),
                )
            )
        if config.method != "lru" and config.cell not in ("lru", "deep-lru"):
            # measured on permuted digits: LSTM 90-92% (overfitting), LRU 98-99% (3 seeds)
            options.append(
                (
                    "lru",
                    "linear recurrent units, which generalised best on the digits here",
                    _fresh(config, method="lru", validation_share=config.validation_share),
                )
            )
        if config.optimizer.kind == "adam":
            decay = _round(max(0.05, 10 * values["weight_decay"]))
            options.append(
                (
                    "decay",
                    f"decay the weights (AdamW): --weight-decay {decay:g}",
                    _changed(config, weight_decay=decay),
                )
            )
        if config.hidden >= 8:
            smaller = config.hidden // 2
            options.append(
                ("small", f"a smaller model: {smaller} units", _changed(config, hidden=smaller))
            )
    elif kind in ("healthy but not learned", "not learned"):
        options.append(
            (
                "longer",
                f"train longer: {config.steps * 4} steps",
                _changed(config, steps=config.steps * 4),
            )
        )
        if first_order and lr_up <= 10:
            options.append(
                ("lr", f"raise the learning rate to {lr_up:g}", _changed(config, lr=lr_up))
            )
    remedies = []
    for tag, why, values in options:
        out = None if run_dir is None else f"{str(run_dir).rstrip('/')}-{tag}"
        try:
            remedies.append({"why": why, "command": train_command(values, out)})
        except ConfigError:  # a change this configuration cannot take: offer the others
            continue
    return remedies
