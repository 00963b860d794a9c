"""K runs of one architecture in one pass: the cells' own kernel with a leading run
dimension, every recurrent product one batched matmul over the K stacked weights.

Seed-parallel training (:func:`bptt.run.train_stacked`) stacks the weights of K models of
the same cell class and size, runs each on its own batch, and backpropagates the sum
of their losses: each run's parameters receive their own gradient, as if trained
alone. The kernel is the one a single run uses (:attr:`bptt.cells.RecurrentCell.kernel`,
layout (T, K, B, G), K = 1 for one run), so each run may have taps of its own, which
see what they would see in that run alone.

The kernel takes each cell's tensors stacked with autograd (``torch.stack``), so
gradients reach every cell's ``.grad``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bptt import cells as _cells
from bptt._kernels import RecurrenceKernel
from bptt._torch_compat import functorch_transforms_active
from bptt.cells import RecurrentCell, as_tuple, contract
from bptt.engine._fast import declared_kernel
from bptt.engine._unroll import _GENERIC_REQUIRED, _say_once, _triton_why
from bptt.taps import as_taps

__all__ = ["STACKABLE_CELLS", "stackable", "unroll_stacked"]

# The built-in classes whose kernel stacks, read from their declarations.
STACKABLE_CELLS: tuple[type[RecurrentCell], ...] = tuple(
    kind
    for kind in (getattr(_cells, name) for name in _cells.__all__)
    if isinstance(kind, type)
    and issubclass(kind, RecurrentCell)
    and kind.kernel is not None
    and kind.kernel.stacks
)


def stackable(cells: Sequence[nn.Module]) -> str | None:
    """Why these cells cannot run stacked (None: they can): one class whose kernel
    stacks (:data:`STACKABLE_CELLS`, exactly), the same sizes, nonlinearity, bias, dtype
    and device."""
    if not cells:
        return "no cells"
    first = cells[0]
    kernel = declared_kernel(first)
    if kernel is None or not kernel.stacks:
        return f"{type(first).__name__} has no stacked engine"
    shapes = [(n, p.shape, p.dtype, p.device) for n, p in first.named_parameters()]
    for cell in cells[1:]:
        if type(cell) is not type(first):
            return f"{type(cell).__name__} beside {type(first).__name__}"
        if [(n, p.shape, p.dtype, p.device) for n, p in cell.named_parameters()] != shapes:
            return "cells of different sizes, bias, dtype or device"
        if kernel.options(cell) != kernel.options(first):
            return "cells of different nonlinearities"
    return None


def _check_stacked_input(cells: Sequence[nn.Module], x: Tensor) -> None:
    """What :func:`unroll_stacked` refuses in x and in the context (see there)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor of shape (K, B, T, F), got {type(x).__name__}")
    k = len(cells)
    if x.dim() != 4 or x.shape[0] != k or min(x.shape[1:3]) < 1:
        shape = tuple(x.shape)
        raise ValueError(f"x must be (K={k}, B, T, F) with B, T >= 1; got {shape}")
    weight = next(cells[0].parameters())
    if not torch.is_floating_point(x) or x.dtype != weight.dtype or x.device != weight.device:
        raise ValueError(
            f"x must be in the cells' dtype and on their device ({weight.dtype} on "
            f"{weight.device}); got {x.dtype} on {x.device}"
        )
    if x.shape[3] != cells[0].input_size:
        raise ValueError(f"x has {x.shape[3]} features, the cells {cells[0].input_size}")
    required = _GENERIC_REQUIRED.get()
    if required is not None or functorch_transforms_active():
        why = required or "torch.func transforms are active"
        raise ValueError(
            f"the stacked engine's backward is hand-written, and here it cannot be ({why}): "
            "run each cell with bptt.unroll"
        )


def _per_run_taps(taps: object, k: int) -> tuple[tuple, ...]:
    """``taps`` as K tuples of taps (None: none for any run)."""
    if taps is None:
        return ((),) * k
    if isinstance(taps, (str, bytes, Tensor)) or not isinstance(taps, Sequence):
        raise TypeError(f"taps must be a sequence of K={k} sequences of taps, one per run")
    if len(taps) != k:
        raise ValueError(f"taps must hold one sequence of taps per run (K={k}), got {len(taps)}")
    return tuple(as_taps(own) for own in taps)


def unroll_stacked(
    cells: Sequence[nn.Module],
    x: Tensor,
    taps: Sequence[Sequence] | None = None,
    engine: str = "auto",
) -> Tensor:
    """Run K cells of one kind, each over its own inputs, from the zero state.

    Args:
        cells: K cells that :func:`stackable` accepts.
        x: (K, B, T, F), run k's inputs at ``x[k]``.
        taps: None, or K sequences of taps: ``taps[k]`` are run k's, called during
            backward as ``bptt.unroll(cells[k], x[k], taps=taps[k])`` would call them
            (each sees run k's delta_t, (B, H) or the LSTM's pair).
        engine: ``"fast"`` (the loop kernels), ``"triton"`` (the Triton kernels, K runs
            in one launch each way; refused, saying why, where
            :func:`bptt.engine.triton_refusal` would refuse one of the runs), or
            ``"auto"``: Triton on CUDA where it runs, else the loop, logging why once
            (as :func:`bptt.unroll` does).

    Returns:
        outputs (K, B, T, H); each cell's parameters get their own gradient on backward.

    Raises:
        TypeError: x is not a tensor; ``taps`` is not K sequences of callables.
        ValueError: the cells cannot run stacked; x is not a floating-point (K, B, T, F)
            tensor for K cells of input size F, in their dtype and on their device;
            ``taps`` does not hold K sequences; the engine is unknown, or ``"triton"``
            where it cannot run; or the context needs a differentiable backward
            (torch.func transforms, :func:`bptt.engine.require_generic`), which the
            hand-written one is not.

    Example:
        >>> import bptt, torch
        >>> cells = [bptt.cells.GRUCell(2, 4) for _ in range(3)]
        >>> records = [[bptt.taps.RecordNorms()] for _ in cells]
        >>> out = unroll_stacked(cells, torch.randn(3, 5, 7, 2), taps=records)
        >>> out[:, :, -1].sum().backward()
        >>> out.shape, records[2][0].norms.shape
        (torch.Size([3, 5, 7, 4]), torch.Size([5, 7]))
    """
    if engine not in ("auto", "fast", "triton"):
        raise ValueError(f"engine must be 'auto', 'fast' or 'triton', got {engine!r}")
    reason = stackable(cells)
    if reason is not None:
        raise ValueError(f"these cells cannot run stacked: {reason}")
    _check_stacked_input(cells, x)
    per_run = _per_run_taps(taps, len(cells))
    k, batch, steps, _ = x.shape
    for tap in (tap for own in per_run for tap in own):
        begin = getattr(tap, "begin", None)
        if callable(begin):
            begin(steps)
    start = contract(cells[0]).initial_state(k * batch, device=x.device, dtype=x.dtype)
    parts = tuple(s.view(k, batch, *s.shape[1:]) for s in as_tuple(start))  # (K, B, H)
    state = parts if isinstance(start, tuple) else parts[0]
    kernel = declared_kernel(cells[0])
    assert kernel is not None  # stackable said so
    backend = "loop"
    if engine == "triton" or (engine == "auto" and x.is_cuda):
        why = _triton_why(kernel, x, state, per_run, stacked=True)
        if why is None:
            backend = "triton"
        elif engine == "triton":
            raise ValueError(f"engine='triton' cannot run these cells stacked here: {why}")
        else:
            _say_once(
                f"unroll_stacked runs {type(cells[0]).__name__} in the loop, not Triton: {why}"
            )
    if backend == "triton":
        assert isinstance(kernel, RecurrenceKernel)  # _triton_why said it has a Triton version
        outputs, _ = kernel.run_stacked(cells, x, state, per_run, backend="triton")
    else:
        outputs, _ = kernel.run_stacked(cells, x, state, per_run)
    return outputs
