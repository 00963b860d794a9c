"""Free-running generation and the error measure of the reservoir tasks."""

from __future__ import annotations

import torch
from torch import Tensor

from bptt.reservoir._reservoir import Reservoir
from bptt.reservoir._ridge import Ridge

__all__ = ["generate", "nrmse"]


def nrmse(prediction: Tensor, target: Tensor) -> float:
    """Root-mean-square error divided by the target's standard deviation."""
    error = (prediction.double() - target.double()).square().mean().sqrt()
    return float(error / target.double().std())


def generate(reservoir: Reservoir, readout: Ridge, warmup: Tensor, steps: int) -> Tensor:
    """Teacher-force the reservoir through ``warmup`` (1, T, F), then run free for
    ``steps`` steps, each prediction fed back as the next input.

    Returns:
        The free-running predictions, a tensor (steps, F).
    """
    states = reservoir.run(warmup, reset=True)  # (1, T, N)
    value = readout.predict(states[0, -1])  # the prediction for the step after warmup
    out = []
    for _ in range(steps):
        out.append(value)
        state = reservoir.run(value.reshape(1, 1, -1).to(warmup.dtype))  # carries on
        value = readout.predict(state[0, -1])
    return torch.stack(out)
