"""Japanese Vowels as a training task for recurrent networks trained end to end."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bptt.tasks._base import Classification, Task
from bptt.tasks._series import japanese_vowels

__all__ = ["VowelsTask"]

FRAMES = 29  # the longest utterance


class VowelsTask(Classification, Task):
    """Speaker classification of Japanese Vowels (9 speakers), read at the last frame.

    The utterances (7 to 29 frames of 12 coefficients, from sktime's copy of the data)
    are padded with zeros at the *front* to 29 frames, so the last step of every
    sequence is its last real frame. Training batches are drawn from the 270 training
    utterances; the test set is the 370 test utterances. Baseline ln 9; solved below a
    test cross-entropy of 0.05. The task's length must be 29.
    """

    name = "vowels"
    input_size = 12
    output_size = 9
    readout = "last"
    metric = "test_ce"
    min_length = FRAMES
    fixed_length = FRAMES
    solved_below = 0.05

    def __init__(self, length: int = FRAMES) -> None:
        if length != FRAMES:
            raise ValueError(f"vowels sequences have {FRAMES} frames; length must be {FRAMES}")
        super().__init__(length)
        data = japanese_vowels()
        self._train, self._test = (self._front_padded(*data[s]) for s in ("train", "test"))

    @staticmethod
    def _front_padded(x: Tensor, lengths: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        padded = torch.zeros(x.shape[0], FRAMES, x.shape[2], dtype=x.dtype)
        for i, n in enumerate(lengths.tolist()):
            padded[i, FRAMES - n :] = x[i, :n]
        return padded, labels

    @property
    def baseline_loss(self) -> float:
        return math.log(9)

    def sample(self, batch_size, generator, *, device=None, dtype=torch.float32):
        x, labels = self._train
        pick = torch.randint(0, labels.shape[0], (batch_size,), generator=generator)
        return x[pick].to(device=device, dtype=dtype), labels[pick].to(device)

    def test_set(self, size, generator, *, device=None, dtype=torch.float32):
        """The 370 test utterances (all of them, whatever ``size``)."""
        x, labels = self._test
        return x.to(device=device, dtype=dtype), labels.to(device)

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        return nn.functional.cross_entropy(prediction, target)

    def is_solved(self, test_loss: float) -> bool:
        return test_loss < self.solved_below
