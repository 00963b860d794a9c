"""Triton kernels for the built-in recurrences: the whole sequence in one launch, the
built-in taps inside the backward kernel.

What runs where. For a pass of T steps, the input projection of all steps is one
matmul (torch) and the weight gradients are one matmul each after the backward, as in
the loop (:mod:`bptt._kernels._common`); the recurrence itself, forward and backward,
is one kernel launch each: a program per run and tile of the batch walks over all T
steps with the recurrent weight held on chip. The backward kernel computes, at each
step, delta_t = dL/dh_t, passes it through the pass's taps and stores dL/da_t, the
pre-activation gradient the weight gradients are made of. The layout is the loop's,
(T, K, B, ·) with a leading run dimension K (K = 1 for one run), so stacked runs use
the same kernel.

Which taps run inside: :class:`bptt.taps.RecordNorms`, :class:`bptt.taps.ClipNorm` and
:class:`bptt.taps.ClipValue` (those exact classes), in any number and order; each run
of a stacked pass its own. Each is computed as the tap computes it (the norm in
float64, the clip coefficient ``max_norm / max(norm, max_norm)`` in float64, then
applied in the gradient's dtype; a NaN norm gives a NaN coefficient), so the results
are those of :func:`bptt.unroll` with any other engine. Any other tap: the loop.

The recurrences with kernels (:data:`KERNELS`): the Elman RNN (tanh, ReLU, modReLU;
the orthogonal RNN too), the LSTM, whose taps see the pair (dL/dh_t, dL/dc_t) as
:mod:`bptt.taps` defines it (one norm over both, one clip coefficient for both), and the
GRU (torch's formulation, r applied to W_hn h + b_hn).

Limits (see :func:`refusal`): float32, a hidden size at most :data:`MAX_HIDDEN` of the
kernel (each program holds the recurrent weight whole, G H x H for G gate blocks, at
most 128 x 128 elements; no tiling yet). On the CPU the kernels run in Triton's
interpreter (``TRITON_INTERPRET=1`` in the environment before Triton is imported: a
setting of the whole process), which is how the tests check them on a machine without
a GPU.

This package imports Triton only when a kernel is first used: bptt imports and runs
without it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from bptt.taps import ClipNorm, ClipValue, RecordNorms

__all__ = [
    "INSIDE_TAPS",
    "KERNELS",
    "MAX_HIDDEN",
    "NO_KERNEL",
    "function",
    "interpreted",
    "refusal",
]

# The taps the backward kernel computes itself (exact classes: a subclass may change
# what it computes).
INSIDE_TAPS: tuple[type, ...] = (RecordNorms, ClipNorm, ClipValue)

# The kernels with a Triton version: name -> module in this package.
KERNELS = {
    "elman": "bptt._kernels._triton._elman",
    "lstm": "bptt._kernels._triton._lstm",
    "gru": "bptt._kernels._triton._gru",
}

# Each kernel's largest hidden size: a program holds the recurrent weight (G H, H) on
# chip over the whole sequence, G H^2 elements for G gate blocks, at most 128^2 (the
# Elman RNN's at H = 128; H is padded to a power of two). Larger ones need the weight
# tiled (not yet done).
MAX_HIDDEN = {"elman": 128, "lstm": 64, "gru": 64}

# Why a cell whose kernel has no Triton version is refused.
NO_KERNEL = "this cell has no Triton kernel yet (the Elman RNN, the LSTM and the GRU have)"

# What each kernel holds on chip, for the refusal: its recurrent weight's shape.
_WEIGHT = {"elman": "(H, H)", "lstm": "(4H, H)", "gru": "(3H, H)"}


@functools.cache
def available() -> bool:
    """Whether Triton is installed (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def interpreted() -> bool:
    """Whether the kernels run in Triton's interpreter: as they were defined, once they
    are, else as ``TRITON_INTERPRET`` says. Triton reads it for the whole process (when
    it is imported, as a kernel is defined and as it runs): set it before."""
    for module in KERNELS.values():
        loaded = sys.modules.get(module)
        if loaded is not None:
            return bool(loaded.INTERPRETED)
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def refusal(name: str | None, x: Tensor, hidden: int, taps: Sequence[Sequence[Any]]) -> str | None:
    """Why the Triton kernels cannot run this pass, or None where they can.

    Args:
        name: the kernel's Triton version (:attr:`RecurrenceKernel.triton`), None: none.
        x: the inputs, (B, T, F) or (K, B, T, F).
        hidden: the state's width H.
        taps: each run's taps.

    Returns:
        A sentence fragment saying what stands in the way, or None.
    """
    if name is None or name not in KERNELS:
        return NO_KERNEL
    if not available():
        return "Triton is not installed (pip install 'bptt[gpu]', Linux x86-64)"
    if x.device.type == "cpu":
        if not interpreted():
            return (
                "x is on the CPU: the Triton kernels run on CUDA tensors, or on the CPU in "
                "Triton's interpreter (TRITON_INTERPRET=1 set before Triton is imported)"
            )
    elif x.device.type != "cuda":
        return f"x is on {x.device}: the Triton kernels run on CUDA tensors"
    if x.dtype != torch.float32:
        return f"x is {x.dtype}: the Triton kernels are float32"
    if hidden > MAX_HIDDEN[name]:
        return (
            f"hidden size {hidden} > {MAX_HIDDEN[name]}: the {name} kernels hold the "
            f"recurrent weight {_WEIGHT[name]} whole on chip (no tiling yet)"
        )
    for own in taps:
        for tap in own:
            if type(tap) not in INSIDE_TAPS:
                return (
                    f"tap {type(tap).__name__} runs only in the loop (inside the Triton kernel: "
                    f"RecordNorms, ClipNorm, ClipValue)"
                )
    return None


def function(name: str) -> type[torch.autograd.Function]:
    """The autograd Function of a kernel's Triton version (imports Triton)."""
    module = importlib.import_module(KERNELS[name])
    return module.FUNCTION
