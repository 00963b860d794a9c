"""The copy-memory task (Hochreiter & Schmidhuber 1997, in the convention of
Arjovsky et al. 2016)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bptt.tasks._base import Classification, Task, check_length, resolve_generator

__all__ = ["CopyTask", "copy_memory"]

SYMBOLS = 8  # data symbols 1..8; 0 is the blank, 9 the delimiter
SEQUENCE = 10  # symbols to remember
BLANK, DELIMITER = 0, 9
INPUT_CLASSES = 10
OUTPUT_CLASSES = 9  # blank and the 8 symbols: the delimiter is never a target


def copy_memory(
    length: int,
    batch_size: int = 1,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Sequences of the copy-memory task with a delay of ``length`` blanks.

    Input, T + 20 steps: 10 symbols drawn uniformly from {1..8}, then T - 1 blanks (0),
    the delimiter (9), and 10 more blanks. Target: T + 10 blanks, then the 10 symbols.
    Inputs are one-hot over 10 classes; targets are class indices over 9 (blank and
    the 8 symbols).

    The best input-independent predictor says blank for the first T + 10 steps and
    is uniform over the 8 symbols for the last 10, so the baseline cross-entropy per
    step is 10 ln 8 / (T + 20).

    Args:
        length: T, the delay, at least 1.
        batch_size: B.
        seed: seeds a fresh generator (exclusive with ``generator``).
        generator: a CPU generator to draw from (to continue a stream).
        device, dtype: where the tensors go and the dtype of x.

    Returns:
        ``(x, y)``: x (B, T + 20, 10) one-hot, y (B, T + 20) int64 class indices.

    References:
        Arjovsky, Shah & Bengio (2016), Unitary evolution recurrent neural networks,
        section 4.1.

    Example:
        >>> x, y = copy_memory(5, 2, seed=0)
        >>> x.shape, y.shape
        (torch.Size([2, 25, 10]), torch.Size([2, 25]))
        >>> bool((y[:, -10:] == x[:, :10].argmax(-1)).all())
        True
    """
    check_length(length, 1)
    check_length(batch_size, 1, "batch_size")
    gen = resolve_generator(seed, generator)
    steps = length + 2 * SEQUENCE
    symbols = torch.randint(1, SYMBOLS + 1, (batch_size, SEQUENCE), generator=gen)
    tokens = torch.full((batch_size, steps), BLANK, dtype=torch.long)
    tokens[:, :SEQUENCE] = symbols
    tokens[:, SEQUENCE + length - 1] = DELIMITER
    target = torch.full((batch_size, steps), BLANK, dtype=torch.long)
    target[:, -SEQUENCE:] = symbols
    x = torch.nn.functional.one_hot(tokens, INPUT_CLASSES).to(dtype)  # (B, T+20, 10)
    return x.to(device), target.to(device)


class CopyTask(Classification, Task):
    """The copy-memory task as a training task: cross-entropy over all steps.

    Baseline 10 ln 8 / (T + 20); solved when the test cross-entropy is below 1% of it.
    Accuracy counts the 10 recalled symbols (the blanks elsewhere are easy).
    """

    name = "copy"
    input_size = INPUT_CLASSES
    output_size = OUTPUT_CLASSES
    readout = "all"
    metric = "test_ce"
    solved_fraction = 0.01

    @property
    def dependency_length(self) -> int:
        """The first symbol (step 0) is recalled at step T + 10."""
        return self.length + SEQUENCE + 1

    @property
    def baseline_loss(self) -> float:
        return SEQUENCE * math.log(SYMBOLS) / (self.length + 2 * SEQUENCE)

    def sample(self, batch_size, generator, *, device=None, dtype=torch.float32):
        return copy_memory(self.length, batch_size, generator=generator, device=device, dtype=dtype)

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        # prediction (B, T+20, 9) logits, target (B, T+20)
        return torch.nn.functional.cross_entropy(prediction.flatten(0, 1), target.flatten())

    def is_solved(self, test_loss: float) -> bool:
        return test_loss < self.solved_fraction * self.baseline_loss

    def scored(self, prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """The last 10 steps: the recall."""
        return super().scored(prediction[:, -SEQUENCE:], target[:, -SEQUENCE:])
