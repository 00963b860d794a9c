"""The attractor picture: inside a basin the gradient vanishes, at its boundary it explodes.

A 2-unit tanh RNN h <- tanh(W h) with W = diag(gain, decay), gain > 1 > decay, has
two stable fixed points (+-h*, 0) and one saddle at 0: every start with h1 > 0 ends
at the right attractor and every start with h1 < 0 at the left one. The derivative
of the final state with respect to the start, ||dh_T/dh_0||, is then ~0 anywhere
inside a basin (small differences of the start make no difference at the end) and
huge along the boundary h1 = 0 (a tiny difference decides the attractor).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from bptt import _checks
from bptt.cells import RNNCell
from bptt.engine import unroll

__all__ = ["basin_gradient_map", "image_formats", "plot_basin_gradients", "two_basin_cell"]


def two_basin_cell(gain: float = 2.0, decay: float = 0.5, dtype=torch.float64) -> RNNCell:
    """The 2-unit tanh RNN h <- tanh(diag(gain, decay) h) (no input, no bias)."""
    if not gain > 1 > decay >= 0:
        raise ValueError(f"two basins need gain > 1 > decay >= 0, got {gain}, {decay}")
    cell = RNNCell(1, 2, dtype=dtype)
    with torch.no_grad():
        cell.weight_hh.copy_(torch.diag(torch.tensor([gain, decay], dtype=dtype)))
        cell.weight_ih.zero_()
        cell.bias_ih.zero_()
        cell.bias_hh.zero_()
    return cell


MAX_STEPS = 10_000  # beyond this every start has long since reached its attractor
MAX_RESOLUTION = 1_001


def basin_gradient_map(
    cell: nn.Module, extent: float = 1.0, resolution: int = 101, steps: int = 30
) -> dict[str, Any]:
    """||dh_T/dh_0|| (spectral norm) over a grid of starting states of a 2-unit cell.

    Args:
        cell: a cell with a state of 2 units (e.g. :func:`two_basin_cell`).
        extent: the grid spans [-extent, extent]^2 (> 0, finite).
        resolution: points per side, 2 to 1,001.
        steps: T, the steps run from each start (with zero input), 1 to 10,000.

    Returns:
        A dict with ``axis`` (resolution,), ``norms`` and ``final`` (each
        (resolution, resolution), indexed [h2, h1]): the gradient norm (inf where
        the Jacobian overflowed), and the first coordinate of the final state (its
        sign names the basin).

    Raises:
        ValueError: the cell has not 2 hidden units, or an argument is out of range.
        TypeError: an argument is not a number of the right kind.
    """
    if not isinstance(cell, nn.Module) or getattr(cell, "hidden_size", None) != 2:
        raise ValueError(f"basin_gradient_map needs a cell with 2 hidden units, got {cell!r}")
    _checks.integer("resolution", resolution, 2, MAX_RESOLUTION)
    _checks.integer("steps", steps, 1, MAX_STEPS)
    _checks.real("extent", extent, 0.0, 1e6, open_low=True)
    weight = next(cell.parameters())
    axis = torch.linspace(-extent, extent, resolution, dtype=weight.dtype)
    h2, h1 = torch.meshgrid(axis, axis, indexing="ij")
    start = torch.stack([h1.reshape(-1), h2.reshape(-1)], dim=1).requires_grad_(True)
    features = cast(int, cell.input_size)
    inputs = torch.zeros(start.shape[0], steps, features, dtype=weight.dtype)
    _, state = unroll(cell, inputs, state=start, engine="generic")
    final = cast(torch.Tensor, state)  # a state of one tensor, as the start given
    rows = [torch.autograd.grad(final[:, k].sum(), start, retain_graph=True)[0] for k in range(2)]
    jacobian = torch.stack(rows, dim=1)  # (N, 2, 2): each start's dh_T/dh_0
    finite = torch.isfinite(jacobian).all(dim=(1, 2))  # (N,); the SVD refuses inf and NaN
    norms = torch.full(finite.shape, math.inf, dtype=jacobian.dtype)
    norms[finite] = torch.linalg.matrix_norm(jacobian[finite], ord=2)
    shape = (resolution, resolution)
    return {
        "axis": axis,
        "norms": norms.reshape(shape),
        "final": final[:, 0].detach().reshape(shape),
    }


def image_formats() -> dict[str, str]:
    """The image formats :func:`plot_basin_gradients` writes: suffix -> description."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return FigureCanvasAgg(Figure()).get_supported_filetypes()


def plot_basin_gradients(result: dict[str, Any], path: str | Path) -> Path:
    """Save the two panels (basins; log10 ||dh_T/dh_0||) as an image; returns the path.

    The format follows the suffix (see :func:`image_formats`). Drawn on a figure of
    its own, without pyplot: the caller's matplotlib backend is left as it was.

    Raises:
        ValueError: the suffix is missing or not an image format.
        OSError: the file cannot be written.
    """
    from matplotlib.figure import Figure

    path = Path(path)
    suffix = path.suffix.lstrip(".").lower()
    if suffix not in image_formats():
        known = ", ".join(sorted(image_formats()))
        raise ValueError(f"path must end in an image format ({known}), got {str(path)!r}")
    axis = result["axis"].numpy()
    span = [axis[0], axis[-1], axis[0], axis[-1]]
    norms = torch.log10(result["norms"].clamp(1e-300, 1e300)).numpy()
    fig = Figure(figsize=(10, 4.2))
    left, right = fig.subplots(1, 2)
    left.imshow(result["final"].sign().numpy(), origin="lower", extent=span, cmap="coolwarm")
    left.set_title("basin of the final state (sign of h1)")
    image = right.imshow(norms, origin="lower", extent=span, cmap="magma")
    right.set_title("log10 ||dh_T / dh_0||: ~0 inside, huge at the boundary")
    for ax in (left, right):
        ax.set_xlabel("h1 at the start")
        ax.set_ylabel("h2 at the start")
    fig.colorbar(image, ax=right)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
