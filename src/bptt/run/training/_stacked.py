"""K runs of one model on one task, trained as one stacked model: runs that share the
architecture and the shape of the data (task, length, cell, hidden size, batch size,
dtype, device, threads) and differ in anything a run does after its backward or before
its first step (seed, learning rate, optimizer, clipping, schedule, step budget,
initialisation recipe). Each step, every run draws its own batch from its own generator, one stacked
forward and backward (:func:`bptt.engine.unroll_stacked`, each recurrent product one
batched matmul over the K runs' weights) gives each run its own gradients, and then
each run goes on alone: its monitor, clip policy, optimizer, evaluations, run
directory, checkpoints and summary, as :func:`bptt.run.train` would give it.

A run that is solved (with ``stop_when_solved``), out of time, or stopped by a
non-finite step leaves the stack; the others go on. Each run checkpoints its own
state, so a killed stacked job resumes from the run directories.

Where it pays: a step whose time is per-call overhead rather than arithmetic (small
batches and hidden sizes on a CPU; a GPU). ``python benchmarks/batched.py`` measures it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from rich.progress import Progress
from torch import Tensor, nn

from bptt.cells import contract
from bptt.engine import stackable, unroll_stacked
from bptt.model import SequenceModel
from bptt.run.training._batches import SequenceBatches
from bptt.run.training._build import build_model
from bptt.run.training._config import TrainConfig
from bptt.run.training._fields import ConfigError
from bptt.run.training._loop import NOT_COMPARED, NonFiniteError, Run, RunStopped
from bptt.run.training._rundir import RunDirectory, RunDirectoryError
from bptt.run.training._session import (
    make_progress,
    open_run_directory,
    progress_bar,
    refuse_oversized_runs,
    run_environment,
)
from bptt.run.training._train import TrainResult, continued_run
from bptt.tasks import make_task

__all__ = ["SHARED_FIELDS", "shared_settings", "stack_refusal", "train_stacked"]

# what the runs of one stack share: the model's shape and the data's, the engine, and
# the process's environment (threads, flush-to-zero); the rest is each run's own
SHARED_FIELDS = (
    "task", "length", "cell", "hidden", "layers", "bidirectional", "batch_size", "engine",
    "device", "dtype", "flush_denormal", "threads",
)  # fmt: skip


def _why_not(configs: Sequence[TrainConfig]) -> str | None:
    """Why these configs cannot train stacked (None: they can), before building anything."""
    first = shared_settings(configs[0])
    for config in configs[1:]:
        theirs = shared_settings(config)
        differ = [k for k in SHARED_FIELDS if theirs[k] != first[k]]
        if differ:
            return f"the runs differ in {', '.join(differ)}, which a stack shares"
    outs = [c.out for c in configs if c.out is not None]
    if len({str(Path(o).resolve()) for o in outs}) < len(outs):
        return "two runs share a run directory"
    for config in configs:
        if config.optimizer.kind == "hf":
            return "Hessian-free steps evaluate their own closures"
        if config.tbptt_k1:
            return "truncated backprop through time carries each run's stream state"
        if config.dropout:
            return "dropout between layers draws each run's masks from its own generator"
    if configs[0].engine == "generic":
        return "engine = generic asks for the step-by-step engine"
    if configs[0].engine == "triton":  # a stack's taps are checked per step, not before
        return (
            "engine = triton is not offered for a stack: engine = auto runs it in Triton "
            "on CUDA where the kernels apply"
        )
    return None


def shared_settings(config: TrainConfig) -> dict[str, Any]:
    """The fields of ``config`` that every run of its stack must share."""
    values = config.flat()
    return {name: values[name] for name in SHARED_FIELDS}


def stack_refusal(configs: Sequence[TrainConfig]) -> str | None:
    """Why these runs cannot train as one stack (None: they can), decided before any
    file is written: :func:`_why_not`, then whether the configured cell has a stacked
    engine (one model built aside, the global RNG left as it was)."""
    reason = _why_not(configs)
    if reason is not None:
        return reason
    config = configs[0]
    assert config.length is not None  # validation derives it from the task
    with torch.random.fork_rng(devices=[]):
        model = build_model(config, make_task(config.task, config.length))
    # each layer and direction runs stacked with its twins of the other runs
    return next(filter(None, (stackable([cell]) for cell in model.recurrent_cells())), None)


def _stacked_predictions(
    models: Sequence[SequenceModel],
    x: Tensor,
    taps: Sequence[tuple[Any, ...]],
    engine: str = "auto",
) -> Tensor:
    """Each model's prediction on its own inputs: x (K, B, T, F) -> (K, B, O), or
    (K, B, T, O) for a readout of every step. Layer by layer, each layer's K cells
    (each direction's) stacked (no dropout: a stack refuses it); ``taps[k]``, run k's
    per-step taps, run in each of its unrolls, as a lone run's model runs them;
    ``engine``: :func:`bptt.engine.unroll_stacked`'s ("auto": Triton on CUDA where
    the kernels apply, else the loop)."""
    first = models[0]
    outputs = x
    each = list(taps) if any(taps) else None  # no taps: the engine's plain path
    for layer in range(first.num_layers):
        cells = [m.cells[layer] for m in models]
        forward = unroll_stacked(cells, outputs, taps=each, engine=engine)  # (K, B, T, H)
        if first.bidirectional:
            cells = [m.reverse_cells[layer] for m in models]
            backward = unroll_stacked(cells, outputs.flip(2), taps=each, engine=engine).flip(2)
            forward = torch.cat([forward, backward], dim=-1)
        outputs = forward
    if first.readout == "last" and first.bidirectional:  # the backward cells end at step 0
        half = outputs.shape[-1] - contract(first.reverse_cells[-1]).hidden_size
        last = torch.cat([outputs[:, :, -1, :half], outputs[:, :, 0, half:]], dim=-1)
        outputs = last.unsqueeze(2)  # (K, B, 1, W)
    weight = torch.stack([m.head.weight for m in models]).transpose(1, 2)  # (K, H, O)
    bias = torch.stack([m.head.bias for m in models])  # (K, O)
    if models[0].readout == "last":
        return torch.baddbmm(bias.unsqueeze(1), outputs[:, :, -1], weight)
    return torch.matmul(outputs, weight.unsqueeze(1)) + bias[:, None, None]


def _saved_config(config: TrainConfig) -> TrainConfig | None:
    """The config of the run already in ``config.out`` (None: no run there yet).

    Raises:
        ConfigError: that run is of another configuration (beyond its time limit).
    """
    if config.out is None or not (Path(config.out) / "config.toml").is_file():
        return None
    where = Path(config.out)
    saved = TrainConfig.saved_in(where)
    differ = config.differing_fields(saved, ignore=NOT_COMPARED)  # out, time limit
    if differ:
        message = (
            f"{where} holds a run of another configuration (differs in {', '.join(differ)}): "
            "continue it with bptt train --resume, or give another out"
        )
        raise ConfigError("out", message)
    return saved


def _build_run(
    config: TrainConfig,
    run_dir: RunDirectory | None,
    resumed: bool,
    on_gradients: Callable[[int, nn.Module], None] | None,
) -> Run:
    """The run of ``config`` in its opened directory: new (its config.toml written), or
    continued from the newest checkpoint there (as :func:`bptt.run.resume`)."""
    if resumed:
        assert run_dir is not None  # only a run directory holds a run to continue
        return continued_run(config, run_dir, on_gradients=on_gradients)
    run = Run(config, run_dir, on_gradients)
    if run_dir is not None:
        try:
            run_dir.write_config(config)
        except BaseException:
            run.close()
            raise
    return run


def train_stacked(
    configs: Sequence[TrainConfig | dict[str, Any]],
    *,
    progress: bool | Progress = False,
    overwrite: bool = False,
    on_gradients: Callable[[int, nn.Module], None] | None = None,
) -> list[TrainResult]:
    """Train K runs of one model on one task as one stacked model; each ends as
    :func:`bptt.run.train` would end it alone. The runs share :data:`SHARED_FIELDS`
    (the model's and the data's shape, the environment) and may differ in the rest:
    seeds, learning rates, optimizers, clipping, schedules, step budgets, recipes.

    A config whose ``out`` already holds a run of the same configuration goes on from
    its newest checkpoint (as :func:`bptt.run.resume`), so the same call, repeated
    after a crash, completes the runs. Each run's steps equal its steps alone up to
    rounding (the same products in another grouping); a stacked job killed and resumed
    with every run at the same checkpoint ends bit for bit as the uninterrupted one.
    Each run's clock is the stacked job's: its ``wall_s`` and ``time_limit_s`` count
    the time of every run's steps, not its own alone.

    Args:
        configs: the runs' configurations (or mappings of their fields), K >= 1.
        progress: True for a progress bar per run, or a ``rich`` Progress to add them to.
        overwrite: allow a new run in a directory that holds files but no config.toml.
        on_gradients: as in :func:`bptt.run.train`, called for each run.

    Returns:
        One :class:`TrainResult` per config, in order.

    Raises:
        bptt.run.ConfigError: an invalid config, configs that cannot train stacked
            (a shared field differs, a cell without a stacked engine, HF, TBPTT,
            dropout between layers), or an ``out`` holding a run of another
            configuration.
        RunDirectoryBusy, FileExistsError: as in :func:`bptt.run.train`.
        RunStopped: a run's directory could not be written (the others finished).
        NonFiniteError: a run's non-finite step with ``nonfinite = "raise"`` (the
            others finished first).
    """
    if isinstance(configs, TrainConfig | dict) or not configs:
        raise ConfigError("configs", "expected a non-empty list of run configurations")
    checked = [c if isinstance(c, TrainConfig) else TrainConfig.from_dict(c) for c in configs]
    reason = stack_refusal(checked)
    if reason is not None:
        raise ConfigError("stack", f"these runs cannot train stacked: {reason}")
    refuse_oversized_runs(checked)
    display = make_progress() if progress is True else progress
    with contextlib.ExitStack() as stack, run_environment(checked[0], False):
        # every directory opened (and a begun run's config checked) before any is
        # written: a busy, taken or different one refuses the whole job
        opened: list[tuple[RunDirectory | None, bool]] = []
        for config in checked:
            resumed = _saved_config(config) is not None
            run_dir = None
            if config.out is not None:
                run_dir = open_run_directory(config.out, overwrite=overwrite, resume=resumed)
                stack.callback(run_dir.close)
            opened.append((run_dir, resumed))
        runs: list[Run] = []
        for config, (run_dir, resumed) in zip(checked, opened, strict=True):
            run = _build_run(config, run_dir, resumed, on_gradients)
            runs.append(run)
            stack.callback(run.close)
        # refused above, before any file was written; the built runs agree
        by_unroll = zip(*(run.model.recurrent_cells() for run in runs), strict=True)
        assert all(stackable(list(twins)) is None for twins in by_unroll)
        assert all(isinstance(run.batches, SequenceBatches) for run in runs)
        if display is not False and progress is True:
            display.start()
            stack.callback(display.stop)
        advances = [
            stack.enter_context(progress_bar(display, c, label=f"seed {c.seed}")) for c in checked
        ]
        summaries = _lockstep(runs, advances)
    errors = [s for s in summaries if isinstance(s, Exception)]
    if errors:
        raise errors[0]
    results = []
    for run, summary in zip(runs, summaries, strict=True):
        where = None if run.run_dir is None else run.run_dir.path
        results.append(TrainResult(run.config, summary, run.model, where))
    return results


def _lockstep(runs: list[Run], advances: list[Callable[..., None]]) -> list[Any]:
    """Step every unfinished run together until each has ended; each run's summary,
    or the exception that stopped it."""
    outcome: list[Any] = [None] * len(runs)
    for index, run in enumerate(runs):
        _guarded(index, run, outcome, run.begin)
    while True:
        active = [i for i, run in enumerate(runs) if not run.ended and outcome[i] is None]
        if not active:
            break
        sources = [cast(SequenceBatches, runs[i].batches) for i in active]  # checked before
        batches = [source.sample() for source in sources]  # each from its own generator
        models = [runs[i].model for i in active]
        for i in active:
            runs[i].optimizer.zero_grad(set_to_none=True)
        inputs = torch.stack([x for x, _ in batches])
        engine = "auto" if runs[active[0]].config.engine == "auto" else "fast"
        taps = [source.taps for source in sources]
        predictions = _stacked_predictions(models, inputs, taps, engine)
        losses = [
            runs[i].task.loss(prediction, y)
            for i, prediction, (_, y) in zip(active, predictions, batches, strict=True)
        ]
        # each run's loss reaches only its own parameters: the sum's gradient is theirs
        torch.autograd.backward(torch.stack(losses).sum())
        for i, source, loss, (x, y) in zip(active, sources, losses, batches, strict=True):
            computed = (loss.detach(), source.rerun(x, y))
            _guarded(
                i, runs[i], outcome, functools.partial(runs[i].step_once, advances[i], computed)
            )
    for index, run in enumerate(runs):
        if outcome[index] is None:
            _guarded(index, run, outcome, functools.partial(run.finish, advances[index]))
    return outcome


def _guarded(index: int, run: Run, outcome: list[Any], action: Callable[[], Any]) -> None:
    """Do one run's part; what stops that run (a run directory that cannot be written, a
    non-finite step told to raise) becomes its outcome instead of stopping the others.
    Any other exception (an interrupt, a fault in ``on_gradients``) stops every run;
    each resumes from its own checkpoints."""
    try:
        result = action()
    except RunDirectoryError as err:
        outcome[index] = RunStopped(run.stopped_message(err))
        return
    except NonFiniteError as err:
        outcome[index] = err
        return
    if isinstance(result, dict):
        outcome[index] = result
