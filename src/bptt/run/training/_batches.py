"""Where each step's data comes from: fresh sequences, or the next window of a stream.

The run chooses its batch source once (:func:`make_batches`); the loop only asks for
the next step's loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch
from torch import Tensor

from bptt.model import SequenceModel
from bptt.run.training._config import TrainConfig
from bptt.tasks import StreamTask, Task
from bptt.tbptt import TBPTT

__all__ = ["Rerun", "SequenceBatches", "StreamBatches", "make_batches"]

Rerun = Callable[[tuple[Any, ...]], None]  # repeat a step's backward with extra taps


class SequenceBatches:
    """A fresh batch of sequences per step from the run's data generator.

    Each step's loss comes with a rerun: it repeats the step's forward and backward
    with extra taps (the monitor's, to locate a non-finite gradient) and then puts the
    step's gradients back. Checkpointable.
    """

    def __init__(
        self,
        config: TrainConfig,
        task: Task,
        model: SequenceModel,
        taps: tuple[Any, ...],
        seed: int,
    ) -> None:
        self.config, self.task, self.model, self.taps = config, task, model, taps
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self) -> tuple[Tensor, Tensor]:
        """The next batch ``(x, y)``, x of shape (B, T, F)."""
        return self.task.sample(
            self.config.batch_size,
            self.generator,
            device=self.config.device,
            dtype=self.config.torch_dtype,
        )

    def next(self) -> tuple[Tensor, Rerun | None]:
        """The next step's loss (its graph built) and its rerun."""
        x, y = self.sample()
        masks = _generator_states(x.device) if self.model.dropout else None
        loss = self.task.loss(self.model(x, taps=self.taps)[0], y)
        return loss, self.rerun(x, y, masks)

    def rerun(self, x: Tensor, y: Tensor, masks: Any = None) -> Rerun:
        """The rerun of a step on the batch ``(x, y)``; ``masks``: the random
        generators' states before the step's forward, so that the rerun drops what the
        step dropped (None: the model has no dropout)."""

        def rerun(extra: tuple[Any, ...]) -> None:
            """Repeat the step with extra taps, leaving the gradients and the random
            generators as they were. In a model of several layers or directions the
            extra taps (a record of one unroll) see the top layer's forward unroll,
            where the loss's gradient enters the recurrence."""
            units = self.model.unrolls
            taps: Any = self.taps + extra
            if len(units) > 1:
                top = (self.model.num_layers - 1, 0)
                taps = {unit: self.taps + (extra if unit == top else ()) for unit in units}
            params = list(self.model.parameters())
            kept = [p.grad for p in params]
            for p in params:
                p.grad = None
            with _replayed(masks, x.device):
                torch.autograd.backward(self.task.loss(self.model(x, taps=taps)[0], y))
            for p, grad in zip(params, kept, strict=True):
                p.grad = grad

        return rerun

    def state_dict(self) -> dict[str, Any]:
        """The data generator's state."""
        return {"generator": self.generator.get_state(), "stream": None, "tbptt": None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`."""
        self.generator.set_state(state["generator"])


class StreamBatches:
    """The next window of truncated backprop through time, TBPTT(k1, k2), over B
    parallel streams. No rerun: the window's state has moved on. Checkpointable."""

    def __init__(
        self,
        config: TrainConfig,
        task: Task,
        model: SequenceModel,
        taps: tuple[Any, ...],
        seed: int,
    ) -> None:
        self.config = config
        self.generator = torch.Generator().manual_seed(seed)
        self.trainer = TBPTT(model, config.tbptt_k1, config.tbptt_k2, task.loss, None, taps=taps)
        self.stream = cast(StreamTask, task).open_stream(  # a task with stream set
            config.batch_size, self.generator, device=config.device, dtype=config.torch_dtype
        )

    def next(self) -> tuple[Tensor, Rerun | None]:
        """The loss of the window that is due after the next k1 steps."""
        x, y = self.stream.next(self.config.tbptt_k1)
        (loss,) = list(self.trainer.losses(x, y))  # exactly one window is due
        return loss, None

    def state_dict(self) -> dict[str, Any]:
        """The generator's state, where the streams are and TBPTT's carried state."""
        return {
            "generator": self.generator.get_state(),
            "stream": self.stream.state_dict(),
            "tbptt": self.trainer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`."""
        self.generator.set_state(state["generator"])
        self.stream.load_state_dict(state["stream"])
        self.trainer.load_state_dict(state["tbptt"])


def _generator_states(device: torch.device) -> tuple[Tensor, Tensor | None]:
    """The CPU generator's state and the accelerator's (None on the CPU)."""
    accelerator = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), accelerator


@contextlib.contextmanager
def _replayed(states: Any, device: torch.device) -> Iterator[None]:
    """Inside, the generators as ``states`` had them (nothing when None); afterwards as
    they were before."""
    if states is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(states[0])
        if states[1] is not None:
            torch.cuda.set_rng_state(states[1], device)
        yield


def make_batches(
    config: TrainConfig, task: Task, model: SequenceModel, taps: tuple[Any, ...], seed: int
) -> SequenceBatches | StreamBatches:
    """The batch source of a run: a stream task's windows, or a sequence task's batches."""
    source = StreamBatches if task.stream else SequenceBatches
    return source(config, task, model, taps, seed)
