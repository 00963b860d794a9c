"""The pathological long-range tasks of Hochreiter & Schmidhuber (1997), in the
conventions of Martens & Sutskever (2011) and Pascanu, Mikolov & Bengio (2013).

Pascanu et al.'s code draws each batch's length from [T, 1.1 T); here every sequence
has exactly T steps, so a test set is one tensor.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bptt.tasks._base import (
    Classification,
    LastStepRegression,
    Task,
    check_length,
    resolve_generator,
)

__all__ = [
    "MemorizationTask",
    "MultiplicationTask",
    "PermutationTask",
    "TemporalOrderTask",
    "XorTask",
    "memorization",
    "multiplication",
    "random_permutation",
    "temporal_order",
    "xor_problem",
]


def _rows(batch: int) -> Tensor:
    return torch.arange(batch)


def _window(low: float, length: int, batch: int, gen: torch.Generator) -> Tensor:
    """Positions drawn from [low T, (low + 0.1) T)."""
    start, width = int(length * low), max(1, int(length * 0.1))
    return start + torch.randint(0, width, (batch,), generator=gen)


def temporal_order(
    length: int,
    batch_size: int = 1,
    *,
    bits: int = 2,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype=torch.float32,
) -> tuple[Tensor, Tensor]:
    """The temporal order problem (Pascanu et al. 2013, ``tempOrder``/``tempOrder3bit``).

    Six symbols, one-hot: A and B (channels 0, 1) and the distractors c, d, e, f. Every
    step shows a random distractor except ``bits`` steps that show A or B: for 2 bits
    one in [0.1 T, 0.2 T) and one in [0.5 T, 0.6 T); for 3 bits in [0.1 T, 0.2 T),
    [0.3 T, 0.4 T) and [0.6 T, 0.7 T). The class, read at the last step, is the
    sequence of A/B seen, sum_k v_k 2^k (4 or 8 classes).

    Returns:
        ``(x, y)``: x (B, T, 6), y (B,) int64 in [0, 2^bits).
    """
    if bits not in (2, 3):
        raise ValueError(f"bits must be 2 or 3, got {bits}")
    check_length(length, 10)
    check_length(batch_size, 1, "batch_size")
    gen = resolve_generator(seed, generator)
    starts = (0.1, 0.5) if bits == 2 else (0.1, 0.3, 0.6)
    symbols = torch.randint(2, 6, (batch_size, length), generator=gen)
    target = torch.zeros(batch_size, dtype=torch.long)
    for k, low in enumerate(starts):
        where = _window(low, length, batch_size, gen)
        value = torch.randint(0, 2, (batch_size,), generator=gen)
        symbols[_rows(batch_size), where] = value
        target += value << k
    x = nn.functional.one_hot(symbols, 6).to(dtype)
    return x.to(device), target.to(device)


def multiplication(
    length: int,
    batch_size: int = 1,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype=torch.float32,
) -> tuple[Tensor, Tensor]:
    """The multiplication problem (Pascanu et al. 2013, ``mul``).

    Channel 1 holds values U[0, 1]; channel 0 marks two steps, one in [0, 0.1 T) and one
    in [0.1 T, 0.5 T). The target, at the last step, is the product of the marked values.
    Predicting E[uv] = 1/4 gives the baseline MSE Var(uv) = 1/9 - 1/16 = 7/144.

    Returns:
        ``(x, y)``: x (B, T, 2), y (B, 1).
    """
    check_length(length, 10)
    check_length(batch_size, 1, "batch_size")
    gen = resolve_generator(seed, generator)
    values = torch.rand(batch_size, length, generator=gen, dtype=torch.float64)
    first = torch.randint(0, max(1, int(0.1 * length)), (batch_size,), generator=gen)
    span = max(1, int(0.4 * length))
    second = int(0.1 * length) + torch.randint(0, span, (batch_size,), generator=gen)
    markers = torch.zeros(batch_size, length, dtype=torch.float64)
    markers[_rows(batch_size), first] = 1.0
    markers[_rows(batch_size), second] = 1.0
    rows = _rows(batch_size)
    y = (values[rows, first] * values[rows, second]).unsqueeze(1)
    x = torch.stack([markers, values], dim=2)
    return x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)


def xor_problem(
    length: int,
    batch_size: int = 1,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype=torch.float32,
) -> tuple[Tensor, Tensor]:
    """The XOR problem (Martens & Sutskever 2011): the adding problem with random bits.

    Channel 0 holds random bits, channel 1 marks two steps, one in each half; the
    class at the last step is the XOR of the two marked bits.

    Returns:
        ``(x, y)``: x (B, T, 2), y (B,) int64 in {0, 1}.
    """
    check_length(length, 2)
    check_length(batch_size, 1, "batch_size")
    gen = resolve_generator(seed, generator)
    half = length // 2
    bits = torch.randint(0, 2, (batch_size, length), generator=gen)
    first = torch.randint(0, half, (batch_size,), generator=gen)
    second = torch.randint(half, length, (batch_size,), generator=gen)
    markers = torch.zeros(batch_size, length)
    rows = _rows(batch_size)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    y = bits[rows, first] ^ bits[rows, second]
    x = torch.stack([bits.float(), markers], dim=2)
    return x.to(device=device, dtype=dtype), y.to(device)


def random_permutation(
    length: int,
    batch_size: int = 1,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype=torch.float32,
) -> tuple[Tensor, Tensor]:
    """The random permutation problem (Pascanu et al. 2013, ``perm``).

    100 symbols, one-hot. The first step shows symbol 0 or 1; every other step a
    random symbol from 2..99. The class at the last step is the first symbol. Any
    input-independent predictor scores at best ln 2.

    Returns:
        ``(x, y)``: x (B, T, 100), y (B,) int64 in {0, 1}.
    """
    check_length(length, 2)
    check_length(batch_size, 1, "batch_size")
    gen = resolve_generator(seed, generator)
    symbols = torch.randint(2, 100, (batch_size, length), generator=gen)
    first = torch.randint(0, 2, (batch_size,), generator=gen)
    symbols[:, 0] = first
    x = nn.functional.one_hot(symbols, 100).to(dtype)
    return x.to(device), first.to(device)


MEMORY_VALUES, MEMORY_POSITIONS = 5, 10


def memorization(
    length: int,
    batch_size: int = 1,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype=torch.float32,
) -> tuple[Tensor, Tensor]:
    """Noiseless memorization (Martens & Sutskever 2011; Pascanu et al. 2013, ``mem``).

    T + 20 steps, 7 input channels: the first 10 steps show random values from 5
    symbols (channels 0-4); from step 10 on channel 5 is on, except at step T + 10,
    where channel 6 (the trigger) is. The targets are 6 classes: class 5 ("nothing")
    for the first T + 10 steps, then the 10 values. Baseline 10 ln 5 / (T + 20).

    Returns:
        ``(x, y)``: x (B, T + 20, 7), y (B, T + 20) int64.
    """
    check_length(length, 1)
    check_length(batch_size, 1, "batch_size")
    gen = resolve_generator(seed, generator)
    n, steps = MEMORY_POSITIONS, length + 2 * MEMORY_POSITIONS
    values = torch.randint(0, MEMORY_VALUES, (batch_size, n), generator=gen)
    channels = torch.full((batch_size, steps), MEMORY_VALUES, dtype=torch.long)
    channels[:, :n] = values
    channels[:, length + n] = MEMORY_VALUES + 1
    target = torch.full((batch_size, steps), MEMORY_VALUES, dtype=torch.long)
    target[:, -n:] = values
    x = nn.functional.one_hot(channels, MEMORY_VALUES + 2).to(dtype)
    return x.to(device), target.to(device)


class _LastStepClassification(Classification, Task):
    """One class per sequence, cross-entropy at the last step, solved below ``solved_below``."""

    readout = "last"
    metric = "test_ce"
    solved_below = 0.05  # about 1% errors

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        return nn.functional.cross_entropy(prediction, target)

    def is_solved(self, test_loss: float) -> bool:
        return test_loss < self.solved_below


class TemporalOrderTask(_LastStepClassification):
    """Temporal order, 2 bits (4 classes, baseline ln 4); solved below CE 0.05."""

    name = "order"
    bits = 2
    input_size = 6
    output_size = 4
    min_length = 10

    @property
    def baseline_loss(self) -> float:
        return math.log(2**self.bits)

    @property
    def dependency_length(self) -> int:
        return self.length - int(0.1 * self.length)  # from the first window to the end

    def sample(self, batch_size, generator, *, device=None, dtype=torch.float32):
        return temporal_order(
            self.length, batch_size, bits=self.bits, generator=generator, device=device, dtype=dtype
        )


class TemporalOrder3Task(TemporalOrderTask):
    """Temporal order, 3 bits (8 classes, baseline ln 8); solved below CE 0.05."""

    name = "order3"
    bits = 3
    output_size = 8


class XorTask(_LastStepClassification):
    """XOR of two marked bits (baseline ln 2); solved below CE 0.05."""

    name = "xor"
    input_size = 2
    output_size = 2
    min_length = 2

    @property
    def baseline_loss(self) -> float:
        return math.log(2)

    def sample(self, batch_size, generator, *, device=None, dtype=torch.float32):
        return xor_problem(self.length, batch_size, generator=generator, device=device, dtype=dtype)


class PermutationTask(_LastStepClassification):
    """Random permutation: recall the first of 100 symbols (baseline ln 2); solved below 0.05."""

    name = "permutation"
    input_size = 100
    output_size = 100
    min_length = 2

    @property
    def baseline_loss(self) -> float:
        return math.log(2)

    def sample(self, batch_size, generator, *, device=None, dtype=torch.float32):
        return random_permutation(
            self.length, batch_size, generator=generator, device=device, dtype=dtype
        )


class MultiplicationTask(LastStepRegression):
    """The multiplication problem: baseline MSE 7/144; solved below 0.003 (the same share
    of its baseline, 6%, as the adding problem's 0.01 of 1/6)."""

    name = "multiplication"
    input_size = 2
    output_size = 1
    solved_below = 0.003
    min_length = 10

    @property
    def baseline_loss(self) -> float:
        return 7.0 / 144.0

    def sample(self, batch_size, generator, *, device=None, dtype=torch.float32):
        return multiplication(
            self.length, batch_size, generator=generator, device=device, dtype=dtype
        )


class MemorizationTask(Classification, Task):
    """Noiseless memorization: cross-entropy over all steps; baseline 10 ln 5 / (T + 20);
    solved below 1% of it."""

    name = "memorization"
    input_size = MEMORY_VALUES + 2
    output_size = MEMORY_VALUES + 1
    readout = "all"
    metric = "test_ce"

    @property
    def baseline_loss(self) -> float:
        return MEMORY_POSITIONS * math.log(MEMORY_VALUES) / (self.length + 2 * MEMORY_POSITIONS)

    @property
    def dependency_length(self) -> int:
        return self.length + MEMORY_POSITIONS + 1

    def sample(self, batch_size, generator, *, device=None, dtype=torch.float32):
        return memorization(
            self.length, batch_size, generator=generator, device=device, dtype=dtype
        )

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        return nn.functional.cross_entropy(prediction.flatten(0, 1), target.flatten())

    def is_solved(self, test_loss: float) -> bool:
        return test_loss < 0.01 * self.baseline_loss

    def scored(self, prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """The recalled values at the last steps."""
        n = MEMORY_POSITIONS
        return super().scored(prediction[:, -n:], target[:, -n:])
