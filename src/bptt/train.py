"""The one training loop: a validated config in, a trained model and a run directory out."""

from __future__ import annotations

import contextlib
import math
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor

from bptt import clip
from bptt.cells import make_cell
from bptt.config import ConfigError, TrainConfig, load_toml
from bptt.diagnose import Monitor, diagnose
from bptt.methods import METHODS
from bptt.model import SequenceModel
from bptt.precision import flush_denormal
from bptt.rundir import RunDirectory
from bptt.tasks import Task, make_task
from bptt.tbptt import TBPTT

__all__ = [
    "NonFiniteError",
    "TrainResult",
    "build_model",
    "json_safe",
    "load_run",
    "make_clip_policy",
    "make_progress",
    "step_taps",
    "test_set",
    "train",
]


class NonFiniteError(RuntimeError):
    """A step's loss or gradient was NaN or inf and the config says ``nonfinite = "raise"``."""


_EVAL_CHUNK = 1000  # test sequences per forward pass


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        config: the validated configuration.
        summary: the outcome, as written to ``summary.json``.
        model: the trained model.
        run_dir: the run directory, or None when ``config.out`` is None.
    """

    config: TrainConfig
    summary: dict[str, Any]
    model: SequenceModel
    run_dir: Path | None


def build_model(config: TrainConfig, task: Task) -> SequenceModel:
    """The model a config describes, initialised from the global RNG (and by its method)."""
    dtype = getattr(torch, config.dtype)
    cell = make_cell(config.cell, task.input_size, config.hidden, device=config.device, dtype=dtype)
    model = SequenceModel(cell, task.output_size, readout=task.readout, engine=config.engine)
    method = METHODS.get(config.method) if config.method else None
    if method is not None and method.initialise is not None:
        method.initialise(model, task.dependency_length)
    return model


def make_clip_policy(config: TrainConfig) -> clip.ClipPolicy:
    """The parameter-gradient clipping policy a config describes."""
    if config.clip == "norm":
        return clip.Fixed(config.clip_norm)
    if config.clip == "value":
        return clip.Value(config.clip_value)
    if config.clip == "percentile":
        history = config.clip_history or None
        return clip.Percentile(config.clip_percentile, history=history)
    if config.clip == "zscore":
        return clip.ZScore(config.clip_z, config.clip_alpha, config.clip_warmup, config.clip_norm)
    if config.clip == "calibrate":
        return clip.Calibrate(config.clip_calibrate_steps, config.clip_quantile)
    return clip.NoClip()


def step_taps(config: TrainConfig) -> tuple:
    """The per-time-step hidden-state gradient taps a config asks for (may be empty)."""
    if config.clip_step_norm is None and config.clip_step_value is None:
        return ()
    return clip.PerStep(config.clip_step_norm, config.clip_step_value).taps


def make_progress() -> Progress:
    """The rich progress display used by training and the benchmark."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


def train(
    config: TrainConfig | dict[str, Any],
    *,
    progress: bool | Progress = False,
    overwrite: bool = False,
) -> TrainResult:
    """Train one model as configured; write the run directory if ``config.out`` is set.

    Each step draws a fresh batch from the task's generator, backpropagates through
    time (with the per-step clipping taps, if any), clips the gradient with the
    configured policy and takes an optimizer step. A step whose loss or gradient is
    not finite is skipped (its gradients dropped) and counted, or raises
    :class:`NonFiniteError` when ``nonfinite = "raise"``. The test set is evaluated
    every ``eval_every`` steps and at the end; ``summary["final_loss"]`` is the final
    test loss. With ``monitor`` on, every logged row carries the columns of
    :class:`bptt.diagnose.Monitor` and the final model is diagnosed into
    ``summary["verdict"]``; ``diagnose_every`` adds diagnoses during training to
    ``diagnostics.jsonl``.

    The same config and seed give the same metrics (on the same device and build).
    The flush-to-zero mode and thread count are set for the run and restored after it.

    Args:
        config: a :class:`TrainConfig` or a mapping of its fields.
        progress: True to show a progress bar, or a ``rich`` Progress to add a bar to.
        overwrite: allow writing into a run directory that already holds a run.

    Returns:
        A :class:`TrainResult`.

    Raises:
        bptt.config.ConfigError: an invalid config, or ``out`` cannot be a directory.
        FileExistsError: ``config.out`` already holds a run and overwrite is False.
        NonFiniteError: a non-finite step with ``nonfinite = "raise"``.
    """
    if not isinstance(config, TrainConfig):
        config = TrainConfig.from_dict(config)
    run_dir = None
    if config.out is not None:
        try:
            run_dir = RunDirectory(config.out, overwrite=overwrite)
        except FileExistsError:
            raise
        except OSError as err:
            reason = err.strerror or str(err)
            raise ConfigError(
                "out", f"cannot use {config.out} as a run directory: {reason}"
            ) from err
    with (
        flush_denormal(config.flush_denormal),
        _threads(config.threads),
        _progress_bar(progress, config) as advance,
    ):
        try:
            summary, model = _fit(config, run_dir, advance)
        finally:
            if run_dir is not None:
                run_dir.close()
    return TrainResult(config, summary, model, None if run_dir is None else run_dir.path)


def _fit(config: TrainConfig, run_dir: RunDirectory | None, advance) -> tuple[dict, SequenceModel]:
    task = make_task(config.task, config.length)
    init_seed, data_seed, _ = _seeds(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = build_model(config, task)
    optimizer = _make_optimizer(config, model)
    x_test, y_test = test_set(config, task)
    if run_dir is not None:
        run_dir.write_config(config)

    params = [p for p in model.parameters() if p.requires_grad]
    policy = make_clip_policy(config)
    monitor = None
    if config.monitor:
        monitor = Monitor(model, window=config.spike_window, z=config.spike_z)
    taps = step_taps(config)
    probe = x_test[: config.probe_size]
    batches = _losses(config, task, model, optimizer, taps, data_seed)
    start = time.perf_counter()
    nonfinite_steps = clipped_steps = 0
    solved_step = None
    steps_done = 0
    loss_value = test_loss = math.nan
    for step, (loss, rerun) in zip(range(1, config.steps + 1), batches, strict=False):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        watched = {}
        if monitor is not None:  # before clipping; a non-finite step is rerun to locate it
            # locating costs a step: do it for the first non-finite step and logged ones
            logged = step % config.log_every == 0 or step == config.steps
            wanted = logged or nonfinite_steps == 0 or config.nonfinite == "raise"
            watched = monitor.step(step, loss, rerun=rerun if wanted else None)
        grad_norm = policy(params)  # clips in place; the norm before clipping
        loss_value, norm_value = loss.item(), grad_norm.item()
        finite = math.isfinite(loss_value) and math.isfinite(norm_value)
        clipped = finite and policy.clipped
        stop = not finite and config.nonfinite == "raise"
        if finite:
            optimizer.step()
            clipped_steps += clipped
        else:
            optimizer.zero_grad(set_to_none=True)
            nonfinite_steps += 1
        last = step == config.steps or stop
        evaluated = step % config.eval_every == 0 or last
        if evaluated:
            test_loss = _evaluate(model, task, x_test, y_test, config)
            if solved_step is None and task.is_solved(test_loss):
                solved_step = step
                last = last or config.stop_when_solved
        if run_dir is not None and (step % config.log_every == 0 or last):
            row = {
                **watched,
                "step": step,
                "loss": loss_value,
                "grad_norm": norm_value,
                "clip_threshold": policy.threshold,
                "clipped": clipped,
                "nonfinite": not finite,
                "lr": optimizer.param_groups[0]["lr"],
                "test_loss": test_loss if evaluated else None,
                "wall_s": round(time.perf_counter() - start, 4),
            }
            run_dir.log(row)
        if stop:
            message = (
                f"step {step}: non-finite loss ({loss_value}) or gradient norm ({norm_value})"
                f'{_where(watched)}; set nonfinite = "skip" to skip such steps'
            )
            if run_dir is not None:  # the row above is logged; the summary says why it ended
                run_dir.write_summary({"task": config.task, "steps_done": step, "error": message})
            raise NonFiniteError(message)
        if run_dir is not None and config.diagnose_every and step % config.diagnose_every == 0:
            found = diagnose(model, probe, task.dependency_length)
            run_dir.append_json("diagnostics.jsonl", json_safe({"step": step, **found.to_dict()}))
        advance(loss_value)
        steps_done = step
        if last:
            break

    diverged = not math.isfinite(test_loss) or not all(
        bool(torch.isfinite(p).all()) for p in model.parameters()
    )
    wall = time.perf_counter() - start
    verdict = None
    if monitor is not None and not diverged:
        verdict = diagnose(model, probe, task.dependency_length).verdict
    summary = {
        "task": config.task,
        "length": config.length,
        "method": config.method,
        "cell": config.cell,
        "hidden": config.hidden,
        "optimizer": config.optimizer,
        "lr": config.lr,
        "clip": config.clip,
        "clip_norm": config.clip_norm,
        "clip_step_norm": config.clip_step_norm,
        "clipped_steps": clipped_steps,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "steps": config.steps,
        "steps_done": steps_done,
        **({"tbptt_k1": config.tbptt_k1, "tbptt_k2": config.tbptt_k2} if config.tbptt_k1 else {}),
        "metric": task.metric,
        "final_loss": test_loss,
        "train_loss": loss_value,
        "baseline_loss": task.baseline_loss,
        "solved": task.is_solved(test_loss),
        "solved_step": solved_step,
        "nonfinite_steps": nonfinite_steps,
        "spikes": None if monitor is None else monitor.spikes,
        "diverged": diverged,
        "verdict": "exploding" if diverged else verdict,
        "threads": torch.get_num_threads(),  # results depend on it in the last bits
        "wall_s": round(wall, 3),  # the training loop, evaluations included
        "diagnose_s": round(time.perf_counter() - start - wall, 3),
    }
    if run_dir is not None:
        run_dir.save_model(model)
        run_dir.write_summary(json_safe(summary))
    return summary, model


def _losses(
    config: TrainConfig,
    task: Task,
    model: SequenceModel,
    optimizer: torch.optim.Optimizer,
    taps: tuple,
    seed: int,
) -> Iterator[tuple[Tensor, Callable[[tuple], None] | None]]:
    """Each optimizer step's loss (after its forward), with a way to rerun the step.

    Sequence tasks: a fresh batch per step. Stream tasks: the next window of
    truncated backprop through time, TBPTT(k1, k2), over B parallel streams (no rerun:
    the window's state has moved on).
    """
    generator = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, config.dtype)
    if getattr(task, "stream", False):
        trainer = TBPTT(model, config.tbptt_k1, config.tbptt_k2, task.loss, None, taps=taps)
        stream = task.open_stream(config.batch_size, generator, device=config.device, dtype=dtype)
        while True:
            x, y = stream.next(config.tbptt_k1)
            for loss in trainer.losses(x, y):
                yield loss, None
    while True:
        x, y = task.sample(config.batch_size, generator, device=config.device, dtype=dtype)

        def rerun(extra: tuple, x: Tensor = x, y: Tensor = y) -> None:
            optimizer.zero_grad(set_to_none=True)
            task.loss(model(x, taps=taps + extra)[0], y).backward()

        yield task.loss(model(x, taps=taps)[0], y), rerun


def _where(watched: dict[str, Any]) -> str:
    """Where the monitor found the non-finite value, as a clause for a message."""
    parts = []
    if watched.get("nonfinite_param"):
        parts.append(f"first in {watched['nonfinite_param']}")
    if watched.get("nonfinite_step") is not None:
        parts.append(f"from time step {watched['nonfinite_step']} of the hidden-state gradient")
    return f" ({', '.join(parts)})" if parts else ""


def test_set(config: TrainConfig, task: Task) -> tuple[Tensor, Tensor]:
    """The run's held-out set: ``config.test_size`` sequences from the run's test seed.

    Its first ``probe_size`` sequences are the probe batch of the diagnoses. A stream
    task is tested on its own held-out stream; this is then only the probe batch.
    """
    generator = torch.Generator().manual_seed(_seeds(config.seed)[2])
    dtype = getattr(torch, config.dtype)
    size = config.probe_size if getattr(task, "stream", False) else config.test_size
    return task.test_set(size, generator, device=config.device, dtype=dtype)


def load_run(path: str | Path) -> tuple[TrainConfig, Task, SequenceModel]:
    """The config, task and trained model of a finished run directory.

    The model's weights load with ``weights_only=True``.

    Raises:
        ConfigError: the directory lacks ``config.toml`` or ``model.pt``, or they are
            not a valid configuration and model.
    """
    path = Path(path)
    for name in ("config.toml", "model.pt"):
        if not (path / name).is_file():
            raise ConfigError("run", f"{path} holds no {name}: not a finished run directory")
    config = TrainConfig.from_dict(load_toml(path / "config.toml"))
    task = make_task(config.task, config.length)
    model = build_model(config, task)
    try:
        state = torch.load(path / "model.pt", map_location=config.device, weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as err:
        raise ConfigError(
            "run", f"{path / 'model.pt'} does not load into the model: {err}"
        ) from err
    return config, task, model


def _seeds(seed: int) -> tuple[int, int, int]:
    """Independent seeds for initialisation, the training stream and the test set."""
    init, data, test = np.random.SeedSequence(seed).generate_state(3, dtype=np.uint64)
    return int(init) >> 1, int(data) >> 1, int(test) >> 1


def _make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr, momentum=config.momentum)
    nesterov = config.momentum > 0
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=nesterov)


@torch.no_grad()
def _evaluate(model: SequenceModel, task: Task, x: Tensor, y: Tensor, config: TrainConfig) -> float:
    """The task's test metric: over the whole test set (weighted by chunk size), or
    for a stream task over its held-out stream."""
    if getattr(task, "stream", False):
        return task.evaluate(model, device=config.device, dtype=getattr(torch, config.dtype))
    total = 0.0
    for start in range(0, x.shape[0], _EVAL_CHUNK):
        xs, ys = x[start : start + _EVAL_CHUNK], y[start : start + _EVAL_CHUNK]
        prediction, _ = model(xs)
        total += task.loss(prediction, ys).item() * xs.shape[0]
    return total / x.shape[0]


def json_safe(summary: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN or inf: write them as null."""
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in summary.items()
    }


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    if count <= 0:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _progress_bar(progress: bool | Progress, config: TrainConfig) -> Iterator:
    if progress is False:
        yield lambda loss: None
        return
    owner = progress is True
    display = make_progress() if owner else progress
    label = f"{config.task} T={config.length} {config.cell}"
    bar = display.add_task(label, total=config.steps, loss="-")
    if owner:
        display.start()
    try:
        yield lambda loss: display.update(bar, advance=1, loss=f"{loss:.4g}")
    finally:
        if owner:
            display.stop()
