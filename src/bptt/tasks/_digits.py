"""Sequential digits: scikit-learn's bundled 8x8 digits read one pixel per step."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bptt.tasks._base import Classification, Task

__all__ = ["DigitsTask", "PermutedDigitsTask", "load_digits"]

PIXELS = 64
TEST_SHARE = 0.2
_SPLIT_SEED = 2026  # the fixed train/test split
_PERMUTATION_SEED = 1997  # the fixed pixel order of the permuted task
_VALIDATION_SEED = 2027  # which training images a validation split takes


def load_digits() -> tuple[Tensor, Tensor]:
    """All 1,797 digits as (N, 64, 1) pixel sequences in [0, 1] and (N,) labels.

    The images ship inside scikit-learn (``sklearn.datasets.load_digits``), so nothing
    is downloaded.

    Raises:
        ImportError: scikit-learn is missing (with how to install it).
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as err:  # pragma: no cover - installed with the project
        raise ImportError("the digits tasks need scikit-learn: pip install scikit-learn") from err
    data = sklearn_digits()
    pixels = torch.tensor(data.images, dtype=torch.float64).reshape(-1, PIXELS, 1) / 16.0
    return pixels, torch.tensor(data.target, dtype=torch.long)


class DigitsTask(Classification, Task):
    """Sequential digits, T = 64 (row by row), 10 classes, cross-entropy at the last step.

    A fixed split holds out 20% of the 1,797 images as the test set; training batches
    are drawn from the rest, less a validation set if :meth:`hold_out` took one.
    Baseline ln 10; solved below a test cross-entropy of 0.2. The task's length must be
    64.
    """

    name = "digits"
    input_size = 1
    output_size = 10
    readout = "last"
    metric = "test_ce"
    min_length = PIXELS
    fixed_length = PIXELS
    solved_below = 0.2
    order: Tensor | None = None  # a pixel permutation, for the permuted variant
    has_training_set = True

    def __init__(self, length: int = PIXELS) -> None:
        if length != PIXELS:
            raise ValueError(f"digits sequences have {PIXELS} steps; length must be {PIXELS}")
        super().__init__(length)
        pixels, labels = load_digits()
        if self.order is not None:
            pixels = pixels[:, self.order]
        split = torch.randperm(
            labels.shape[0], generator=torch.Generator().manual_seed(_SPLIT_SEED)
        )
        cut = int(labels.shape[0] * (1 - TEST_SHARE))
        self._train = pixels[split[:cut]], labels[split[:cut]]
        self._test = pixels[split[cut:]], labels[split[cut:]]

    @property
    def baseline_loss(self) -> float:
        return math.log(10)

    def hold_out(self, share: float) -> tuple[Tensor, Tensor]:
        """A fixed ``share`` of the training images (the same for every seed) as a
        validation set ``(x (V, 64, 1), y (V,))``, removed from the training batches.

        >>> x, y = DigitsTask().hold_out(0.1)
        >>> tuple(x.shape), tuple(y.shape)
        ((143, 64, 1), (143,))
        """
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 0.5:
            raise ValueError(f"share must be a number in (0, 0.5), got {share!r}")
        pixels, labels = self._train
        count = labels.shape[0]
        order = torch.randperm(count, generator=torch.Generator().manual_seed(_VALIDATION_SEED))
        cut = int(count * share)
        if cut < 1:
            raise ValueError(f"share {share} of {count} training images is no image")
        self._train = pixels[order[cut:]], labels[order[cut:]]
        return pixels[order[:cut]], labels[order[:cut]]

    def sample(self, batch_size, generator, *, device=None, dtype=torch.float32):
        pixels, labels = self._train
        pick = torch.randint(0, labels.shape[0], (batch_size,), generator=generator)
        return pixels[pick].to(device=device, dtype=dtype), labels[pick].to(device)

    def test_set(self, size, generator, *, device=None, dtype=torch.float32):
        """The held-out 20% (all of it, whatever ``size``)."""
        pixels, labels = self._test
        return pixels.to(device=device, dtype=dtype), labels.to(device)

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        return nn.functional.cross_entropy(prediction, target)

    def is_solved(self, test_loss: float) -> bool:
        return test_loss < self.solved_below


class PermutedDigitsTask(DigitsTask):
    """Sequential digits with the pixels in a fixed random order (seed 1997): neighbours in
    the image are no longer neighbours in time."""

    name = "pdigits"
    order = torch.randperm(PIXELS, generator=torch.Generator().manual_seed(_PERMUTATION_SEED))
