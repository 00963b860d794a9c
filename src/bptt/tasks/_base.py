"""What every task gives the training loop."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor


def resolve_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    """The CPU generator a data generator draws from: a given one, or one seeded with seed.

    Raises:
        ValueError: both a seed and a generator are given.
    """
    if seed is not None and generator is not None:
        raise ValueError("give either seed= or generator=, not both")
    if generator is not None:
        return generator
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


def check_length(length: int, minimum: int, name: str = "length") -> None:
    """Raise ValueError unless length is an integer >= minimum."""
    if isinstance(length, bool) or not isinstance(length, int) or length < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {length!r}")


class Task(ABC):
    """A supervised sequence task: data, loss, trivial baseline and when it is solved.

    Attributes:
        name: short name used by the CLI.
        length: the task's length parameter (its meaning is the task's own).
        input_size: F, features per step of x.
        output_size: O, readout size.
        readout: ``"last"`` (one prediction per sequence) or ``"all"`` (one per step).
        baseline_loss: the loss of the best input-independent predictor.
        metric: name of the loss reported as ``final_loss``.
        stream: whether the task is read as a stream (:class:`bptt.tasks.StreamTask`,
            trained by truncated BPTT) rather than in batches of sequences.
    """

    name: str
    length: int
    input_size: int
    output_size: int
    readout: str
    metric: str
    stream: bool = False
    min_length: int = 1
    fixed_length: int | None = None  # a task whose sequences always have this many steps

    def __init__(self, length: int) -> None:
        check_length(length, self.min_length)
        self.length = length

    @property
    def dependency_length(self) -> int:
        """How many steps back the target can depend on the input (default: T)."""
        return self.length

    @property
    @abstractmethod
    def baseline_loss(self) -> float:
        """Loss of the trivial, input-independent predictor."""

    @abstractmethod
    def sample(
        self,
        batch_size: int,
        generator: torch.Generator,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> tuple[Tensor, Tensor]:
        """A batch ``(x, y)`` with x of shape (B, T, F)."""

    #: whether :meth:`hold_out` can set part of a fixed training set aside
    has_training_set: bool = False

    def hold_out(self, share: float) -> tuple[Tensor, Tensor]:
        """Set aside a fixed ``share`` of the training set as a validation set, which
        training batches no longer draw from; returns it as ``(x, y)``.

        Only a task with a fixed training set (:attr:`has_training_set`) has one to
        split: a generated task draws fresh data at every step, so its test set is
        already unseen.

        Raises:
            ValueError: the task generates its data, or ``share`` is not in (0, 0.5).
        """
        raise ValueError(f"task {self.name} generates its data: it has no training set to split")

    def test_set(
        self,
        size: int,
        generator: torch.Generator,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> tuple[Tensor, Tensor]:
        """The held-out set: ``size`` fresh samples (a task with fixed data overrides it)."""
        return self.sample(size, generator, device=device, dtype=dtype)

    @abstractmethod
    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """The scalar training and test loss."""

    @abstractmethod
    def is_solved(self, test_loss: float) -> bool:
        """Whether a test loss counts as solving the task."""

    def correct(self, prediction: Tensor, target: Tensor) -> tuple[int, int] | None:
        """How many of the answers scored by accuracy are right, and of how many; None
        for a task not scored by accuracy (regression)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(length={self.length})"


class Classification:
    """A task scored by accuracy as well as cross-entropy: logits (..., C) against class
    indices (...); the steps :meth:`scored` keeps count (all, unless a task says)."""

    def scored(self, prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """The predictions (N, C) and targets (N,) accuracy counts."""
        return prediction.reshape(-1, prediction.shape[-1]), target.reshape(-1)

    def correct(self, prediction: Tensor, target: Tensor) -> tuple[int, int]:
        logits, classes = self.scored(prediction, target)
        return int((logits.argmax(-1) == classes).sum()), int(classes.numel())


class LastStepRegression(Task):
    """A task with one real-valued answer per sequence: MSE at the last step, solved
    below ``solved_below``."""

    readout = "last"
    metric = "test_mse"
    solved_below: float

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        return torch.nn.functional.mse_loss(prediction, target)

    def is_solved(self, test_loss: float) -> bool:
        return test_loss < self.solved_below
