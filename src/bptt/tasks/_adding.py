"""The adding problem (Hochreiter & Schmidhuber 1997, in the convention of Le et al. 2015
and Arjovsky et al. 2016)."""

from __future__ import annotations

import torch
from torch import Tensor

from bptt.tasks._base import LastStepRegression, check_length, resolve_generator

__all__ = ["AddingTask", "adding_problem"]


def adding_problem(
    length: int,
    batch_size: int = 1,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Sequences of the adding problem.

    Each sequence has ``length`` steps of two features: a value drawn from U[0, 1] and a
    marker that is 1 at exactly two steps, one drawn uniformly from the first half
    (steps 0 .. length//2 - 1) and one from the second half, and 0 elsewhere. The
    target is the sum of the two marked values, read at the last step.

    Predicting the mean sum, 1, gives the baseline MSE Var(U1 + U2) = 2/12 = 1/6.

    Args:
        length: T, at least 2.
        batch_size: B.
        seed: seeds a fresh generator (exclusive with ``generator``).
        generator: a CPU generator to draw from (to continue a stream).
        device, dtype: where and in which precision the tensors are returned.

    Returns:
        ``(x, y)``: x (B, T, 2), y (B, 1).

    References:
        Le, Jaitly & Hinton (2015), A simple way to initialize recurrent networks of
        rectified linear units; Arjovsky, Shah & Bengio (2016), Unitary evolution
        recurrent neural networks.

    Example:
        >>> x, y = adding_problem(10, 4, seed=0)
        >>> x.shape, y.shape, x[..., 1].sum(1).tolist()
        (torch.Size([4, 10, 2]), torch.Size([4, 1]), [2.0, 2.0, 2.0, 2.0])
    """
    check_length(length, 2)
    check_length(batch_size, 1, "batch_size")
    gen = resolve_generator(seed, generator)
    half = length // 2
    values = torch.rand(batch_size, length, generator=gen, dtype=torch.float64)
    first = torch.randint(0, half, (batch_size,), generator=gen)
    second = torch.randint(half, length, (batch_size,), generator=gen)
    markers = torch.zeros(batch_size, length, dtype=torch.float64)
    rows = torch.arange(batch_size)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = torch.stack([values, markers], dim=2)  # (B, T, 2)
    y = (values * markers).sum(1, keepdim=True)  # (B, 1)
    return x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)


class AddingTask(LastStepRegression):
    """The adding problem as a training task: MSE at the last step.

    Baseline MSE 1/6; solved when the test MSE is below 0.01.
    """

    name = "adding"
    input_size = 2
    output_size = 1
    solved_below = 0.01
    min_length = 2

    @property
    def baseline_loss(self) -> float:
        return 1.0 / 6.0

    def sample(self, batch_size, generator, *, device=None, dtype=torch.float32):
        return adding_problem(
            self.length, batch_size, generator=generator, device=device, dtype=dtype
        )
