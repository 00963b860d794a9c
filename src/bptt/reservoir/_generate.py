"""Free-running generation and the error measure of the reservoir tasks."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from bptt import _checks
from bptt.reservoir._reservoir import Reservoir
from bptt.reservoir._ridge import Ridge

__all__ = ["generate", "nrmse"]


def nrmse(prediction: Tensor | np.ndarray, target: Tensor | np.ndarray) -> float:
    """Root-mean-square error divided by the target's standard deviation (n - 1).

    Args:
        prediction, target: tensors or NumPy arrays of the same shape, at least two
            values, finite; the target not constant.

    Raises:
        TypeError: an argument that is not a tensor or array of real numbers.
        ValueError: shapes that differ, fewer than two values, NaN or inf, or a
            constant target (its standard deviation is 0).

    Example:
        >>> round(nrmse(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 2.0, 3.0])), 6)
        0.57735
    """
    for name, value in (("prediction", prediction), ("target", target)):
        if not isinstance(value, (Tensor, np.ndarray)):
            raise TypeError(f"{name} must be a tensor or array, got {_checks.shown(value)}")
    if tuple(prediction.shape) != tuple(target.shape):
        raise ValueError(
            f"prediction and target must have the same shape, got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}"
        )
    guess = torch.from_numpy(_checks.array("prediction", prediction))
    truth = torch.from_numpy(_checks.array("target", target))
    if truth.numel() < 2:
        raise ValueError(f"target needs at least two values, got shape {tuple(truth.shape)}")
    spread = truth.std()
    if spread == 0:
        raise ValueError("target is constant (standard deviation 0): the NRMSE is undefined")
    error = (guess - truth).square().mean().sqrt()
    return float(error / spread)


def generate(
    reservoir: Reservoir, readout: Ridge, warmup: Tensor | np.ndarray, steps: int
) -> Tensor:
    """Teacher-force the reservoir through ``warmup`` (1, T, F), then run free for
    ``steps`` steps, each prediction fed back as the next input.

    Args:
        reservoir: the reservoir (its carried state is replaced).
        readout: a readout fitted on that reservoir's states, with F outputs.
        warmup: the input series (1, T, F), T >= 1.
        steps: free-running steps (0 gives an empty result).

    Returns:
        The free-running predictions, a float64 tensor (steps, F).

    Raises:
        TypeError: an argument of the wrong kind.
        ValueError: an unfitted readout, or one whose size does not fit the reservoir
            and the warmup; a warmup that is not (1, T, F); negative steps.
    """
    if not isinstance(reservoir, Reservoir):
        raise TypeError(f"reservoir must be a Reservoir, got {type(reservoir).__name__}")
    if not isinstance(readout, Ridge):
        raise TypeError(f"readout must be a Ridge, got {type(readout).__name__}")
    steps = _checks.integer("steps", steps, 0)
    if readout.weight is None:
        raise ValueError("readout is not fitted yet: fit it on the reservoir's states first")
    if not isinstance(warmup, (Tensor, np.ndarray)):
        raise TypeError(f"warmup must be a tensor or array (1, T, F), got {_checks.shown(warmup)}")
    if warmup.ndim != 3 or warmup.shape[0] != 1 or 0 in warmup.shape:
        raise ValueError(f"warmup must have shape (1, T, F), T, F >= 1, got {tuple(warmup.shape)}")
    warmup = _checks.array("warmup", warmup, axes=("series", "step", "feature"))
    units, outputs = readout.weight.shape
    inputs = reservoir.W_in.shape[1] if reservoir.W_in is not None else warmup.shape[2]
    if inputs != warmup.shape[2]:
        raise ValueError(
            f"warmup has {warmup.shape[2]} features a step but the reservoir's W_in takes {inputs}"
        )
    if units != reservoir.units or outputs != warmup.shape[2]:
        raise ValueError(
            f"readout maps {units} states to {outputs} outputs, but the reservoir has "
            f"{reservoir.units} units and warmup {warmup.shape[2]} features a step (each "
            "prediction is the next input)"
        )
    states = reservoir.run(warmup, reset=True)  # (1, T, N)
    value = readout.predict(states[0, -1])  # the prediction for the step after warmup
    out = []
    for step in range(steps):
        if not torch.isfinite(value).all():  # an unbounded activation can overflow
            raise ValueError(f"the free run overflowed at step {step}: the prediction is {value}")
        out.append(value)
        state = reservoir.run(value.reshape(1, 1, -1))  # carries on
        value = readout.predict(state[0, -1])
    return torch.stack(out) if out else torch.empty((0, outputs), dtype=torch.float64)
