"""Where each step's data comes from: fresh sequences, or the next window of a stream.

The run chooses its batch source once (:func:`make_batches`); the loop only asks for
the next step's loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor

from bptt.model import SequenceModel
from bptt.run._config import TrainConfig
from bptt.tasks import StreamTask, Task
from bptt.tbptt import TBPTT

__all__ = ["Rerun", "SequenceBatches", "StreamBatches", "make_batches"]

Rerun = Callable[[tuple], None]  # repeat a step's backward with extra taps


class SequenceBatches:
    """A fresh batch of sequences per step from the run's data generator.

    Each step's loss comes with a rerun: it repeats the step's forward and backward
    with extra taps (the monitor's, to locate a non-finite gradient) and then puts the
    step's gradients back. Checkpointable.
    """

    def __init__(
        self, config: TrainConfig, task: Task, model: SequenceModel, taps: tuple, seed: int
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
        return self.task.loss(self.model(x, taps=self.taps)[0], y), self.rerun(x, y)

    def rerun(self, x: Tensor, y: Tensor) -> Rerun:
        """The rerun of a step on the batch ``(x, y)``."""

        def rerun(extra: tuple) -> None:
            """Repeat the step with extra taps, leaving the gradients as they were."""
            params = list(self.model.parameters())
            kept = [p.grad for p in params]
            for p in params:
                p.grad = None
            self.task.loss(self.model(x, taps=self.taps + extra)[0], y).backward()
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
        self, config: TrainConfig, task: Task, model: SequenceModel, taps: tuple, seed: int
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


def make_batches(
    config: TrainConfig, task: Task, model: SequenceModel, taps: tuple, seed: int
) -> SequenceBatches | StreamBatches:
    """The batch source of a run: a stream task's windows, or a sequence task's batches."""
    source = StreamBatches if task.stream else SequenceBatches
    return source(config, task, model, taps, seed)
