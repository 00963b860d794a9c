"""Two attractor basins: which basin does the starting point lie in?"""

from __future__ import annotations

import torch
from torch import Tensor

from bptt.tasks._base import LastStepRegression, check_length, resolve_generator

__all__ = ["BasinsTask", "two_basins"]


def two_basins(
    length: int,
    batch_size: int = 1,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Sequences whose answer is decided by the first step alone.

    Step 0 carries a point drawn uniformly from [-1, 1]^2; the other steps are zero.
    The target, read at the last step, is +1 if the point's first coordinate is
    positive and -1 otherwise: a network that solves it holds two attractors and
    sends every start to the one of its basin. Near the boundary between the basins
    a tiny change of the start flips the answer, which is where the gradient with
    respect to the start explodes, while inside a basin it vanishes (see
    :mod:`bptt.diagnose.attractor`).

    Returns:
        ``(x, y)``: x (B, T, 2), y (B, 1) in {-1, +1}.

    Example:
        >>> x, y = two_basins(5, 3, seed=0)
        >>> bool((x[:, 1:] == 0).all()), bool((y == torch.sign(x[:, 0, :1])).all())
        (True, True)
    """
    check_length(length, 1)
    check_length(batch_size, 1, "batch_size")
    gen = resolve_generator(seed, generator)
    start = torch.rand(batch_size, 2, generator=gen, dtype=torch.float64) * 2 - 1
    x = torch.zeros(batch_size, length, 2, dtype=torch.float64)
    x[:, 0] = start
    y = torch.where(start[:, :1] > 0, 1.0, -1.0)
    return x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)


class BasinsTask(LastStepRegression):
    """The two-basins task: MSE against +-1 at the last step.

    Baseline 1 (predicting 0); solved below a test MSE of 0.1.
    """

    name = "basins"
    input_size = 2
    output_size = 1
    solved_below = 0.1

    @property
    def baseline_loss(self) -> float:
        return 1.0

    def sample(self, batch_size, generator, *, device=None, dtype=torch.float32):
        return two_basins(self.length, batch_size, generator=generator, device=device, dtype=dtype)
