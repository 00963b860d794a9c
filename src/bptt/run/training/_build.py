"""Building a run from its config: model, optimizer, clipping, data, evaluation."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from bptt import clip
from bptt.cells import make_cell
from bptt.model import SequenceModel
from bptt.run.training._config import TrainConfig
from bptt.run.training._fields import ConfigError
from bptt.run.training._recipes import LSTM_INITS, RECIPES
from bptt.run.training._settings import FirstOrder
from bptt.tasks import StreamTask, Task

__all__ = [
    "build_model",
    "evaluate",
    "evaluation_mode",
    "initial_model",
    "json_safe",
    "learning_rate",
    "make_clip_policy",
    "make_optimizer",
    "seeds",
    "step_taps",
    "test_set",
    "where_nonfinite",
]

_EVAL_CHUNK = 1000  # test sequences per forward pass


def build_model(config: TrainConfig, task: Task) -> SequenceModel:
    """The model a config describes, initialised from the global RNG (and by its method)."""
    dtype = config.torch_dtype
    directions = 2 if config.bidirectional else 1

    def cells() -> list[torch.nn.Module]:  # one per layer, each reading the layer below
        sizes = [task.input_size] + [directions * config.hidden] * (config.layers - 1)
        return [
            make_cell(config.cell, size, config.hidden, device=config.device, dtype=dtype)
            for size in sizes
        ]

    forward = cells()
    # Hessian-free runs its closures under bptt.engine.require_generic itself
    model = SequenceModel(
        forward,
        task.output_size,
        readout=task.readout,
        engine=config.engine,
        reverse=cells() if config.bidirectional else None,
        dropout=config.dropout,
    )
    method = RECIPES.get(config.method) if config.method else None
    if method is not None and method.initialise is not None:
        method.initialise(model, task)
    elif config.cell == "lstm":
        start = LSTM_INITS[config.lstm_init]  # None: torch's, as built
        if start is not None:
            start(model, task)
    return model


def initial_model(config: TrainConfig, task: Task) -> SequenceModel:
    """The model a run of this config starts from: :func:`build_model` under the run's
    own initialisation seed, the global RNG left as it was (the same weights, bit for
    bit, as the run's step 0)."""
    init_seed = seeds(config.seed)[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return build_model(config, task)


def make_clip_policy(config: TrainConfig) -> clip.ClipPolicy:
    """The parameter-gradient clipping policy a config describes (its ``clip``'s kind
    builds it)."""
    return config.clip.build()


def step_taps(config: TrainConfig) -> tuple[Any, ...]:
    """The per-time-step hidden-state gradient taps a config asks for (may be empty)."""
    if config.clip_step_norm is None and config.clip_step_value is None:
        return ()
    return clip.PerStep(config.clip_step_norm, config.clip_step_value).taps


def test_set(config: TrainConfig, task: Task) -> tuple[Tensor, Tensor]:
    """The run's held-out set: ``config.test_size`` sequences from the run's test seed.

    Its first ``probe_size`` sequences are the probe batch of the diagnoses. A stream
    task is tested on its own held-out stream; this is then only the probe batch.
    """
    generator = torch.Generator().manual_seed(seeds(config.seed)[2])
    dtype = config.torch_dtype
    size = config.probe_size if task.stream else config.test_size
    return task.test_set(size, generator, device=config.device, dtype=dtype)


def seeds(seed: int) -> tuple[int, int, int]:
    """Independent seeds for initialisation, the training stream and the test set."""
    init, data, test = np.random.SeedSequence(seed).generate_state(3, dtype=np.uint64)
    return int(init) >> 1, int(data) >> 1, int(test) >> 1


def _is_regression(config: TrainConfig) -> bool:
    from bptt.tasks import TASKS

    return TASKS[config.task].metric == "test_mse"


def parameter_groups(config: TrainConfig, model: SequenceModel) -> list[dict[str, Any]]:
    """The model's parameters as optimizer groups: one, or with ``lr_recurrent`` or
    ``weight_decay`` two, the recurrence's own parameters second (their own rate; never
    decayed: the LRU's log-parametrised eigenvalues would be pulled off their ring),
    each group's ``lr_scale`` its rate over ``lr`` (the schedule multiplies it).

    Raises:
        ConfigError: ``lr_recurrent`` for a cell that names no recurrent parameters.
    """
    optimizer = _first_order(config)
    if optimizer.lr_recurrent is None and not optimizer.decay:
        return [{"params": list(model.parameters()), "lr_scale": 1.0}]
    # by the last part of the name, so that a stacked cell's layers are found too
    recurrent = {
        id(p)
        for cell in model.recurrent_cells()
        for name, p in cell.named_parameters()
        if name.rsplit(".", 1)[-1] in set(getattr(cell, "recurrent_parameters", ()))
    }
    params = list(model.parameters())
    if not recurrent:
        if optimizer.lr_recurrent is None:  # weight decay alone: nothing to spare
            return [{"params": params, "lr_scale": 1.0}]
        message = f"cell {config.cell} names no recurrent parameters to give a rate of their own"
        raise ConfigError("lr_recurrent", message)
    rate = optimizer.lr if optimizer.lr_recurrent is None else optimizer.lr_recurrent
    return [
        {"params": [p for p in params if id(p) not in recurrent], "lr_scale": 1.0},
        {
            "params": [p for p in params if id(p) in recurrent],
            "lr": rate,
            "lr_scale": rate / optimizer.lr,
        },
    ]


def _first_order(config: TrainConfig) -> FirstOrder:
    if not isinstance(config.optimizer, FirstOrder):
        raise TypeError(f"optimizer {config.optimizer.kind} has no learning rate")
    return config.optimizer


def make_optimizer(config: TrainConfig, model: SequenceModel) -> torch.optim.Optimizer:
    """The optimizer a config describes (its ``optimizer``'s kind builds it): Adam (AdamW
    with ``weight_decay``), RMSprop or SGD (Nesterov when momentum > 0) over the model's
    parameter groups (:func:`parameter_groups`), or Hessian-free."""
    if isinstance(config.optimizer, FirstOrder):
        return config.optimizer.build(parameter_groups(config, model))
    loss = "mse" if _is_regression(config) else "cross_entropy"
    return config.optimizer.build(model, loss)


def learning_rate(config: TrainConfig, step: int, rollbacks: int = 0) -> float:
    """The learning rate of optimizer step ``step`` (1-based): the optimizer's ``lr``
    shaped by the schedule, times ``rollback_lr_factor`` per roll-back so far.

    >>> config = TrainConfig(lr=1.0, steps=3, lr_schedule="cosine", lr_end_factor=0.5)
    >>> [learning_rate(config, step) for step in (1, 2, 3)]
    [1.0, 0.75, 0.5]
    """
    scale = config.rollback_lr_factor**rollbacks
    return config.schedule.rate(_first_order(config).lr * scale, step, config.steps)


@torch.no_grad()
@contextlib.contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[None]:
    """The model in eval mode inside (no dropout between layers: a score or a probe of
    the model itself, and no draw from the generator the training masks come from), its
    mode as it was afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def evaluate(
    model: SequenceModel, task: Task, x: Tensor, y: Tensor, config: TrainConfig
) -> tuple[float, float | None]:
    """The task's test metric (over the whole test set, weighted by chunk size, or for
    a stream task over its held-out stream) and, for a task scored by accuracy, the
    share of right answers (None otherwise); in eval mode (:func:`evaluation_mode`)."""
    with evaluation_mode(model):
        return _evaluate(model, task, x, y, config)


def _evaluate(
    model: SequenceModel, task: Task, x: Tensor, y: Tensor, config: TrainConfig
) -> tuple[float, float | None]:
    if task.stream:
        stream = cast(StreamTask, task)
        return stream.evaluate(model, device=config.device, dtype=config.torch_dtype), None
    total, right, counted = 0.0, 0, 0
    for start in range(0, x.shape[0], _EVAL_CHUNK):
        xs, ys = x[start : start + _EVAL_CHUNK], y[start : start + _EVAL_CHUNK]
        prediction, _ = model(xs)
        total += task.loss(prediction, ys).item() * xs.shape[0]
        scored = task.correct(prediction, ys)
        if scored is not None:
            right, counted = right + scored[0], counted + scored[1]
    return total / x.shape[0], (right / counted if counted else None)


def json_safe(value: Any) -> Any:
    """JSON has no NaN or inf: write them as null, in nested dicts and lists too."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def where_nonfinite(watched: dict[str, Any]) -> str:
    """Where the monitor found the non-finite value, as a clause for a message."""
    parts = []
    if watched.get("nonfinite_param"):
        parts.append(f"first in {watched['nonfinite_param']}")
    if watched.get("nonfinite_step") is not None:
        parts.append(f"from time step {watched['nonfinite_step']} of the hidden-state gradient")
    return f" ({', '.join(parts)})" if parts else ""
