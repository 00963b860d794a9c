"""The built-in taps as a small program the backward kernel runs at every step.

Each run's taps become a row of operations, in list order: an op code, its bound
(float64) and, for a :class:`bptt.taps.RecordNorms`, the slot of the record buffer its
norms go to. Runs with fewer taps are padded with :data:`NONE`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bptt.taps import ClipNorm, ClipValue, RecordNorms

# Op codes, read by the kernels.
NONE, RECORD, CLIP_NORM, CLIP_VALUE = 0, 1, 2, 3


@dataclass(frozen=True)
class TapProgram:
    """The taps of K runs, ready for a kernel.

    Attributes:
        ops: int32 (K, N), the op codes, N the most taps of any run (at least 1).
        bounds: float64 (K, N), ClipNorm's ``max_norm`` or ClipValue's ``value``.
        slots: int32 (K, N), a RecordNorms' row of :attr:`records`.
        records: float64 (R, T, B), the norms each RecordNorms records, step by step
            (R at least 1); NaN until the kernel writes them.
        recorders: the RecordNorms taps, in slot order.
    """

    ops: Tensor
    bounds: Tensor
    slots: Tensor
    records: Tensor
    recorders: tuple[RecordNorms, ...]

    @property
    def width(self) -> int:
        """N, the ops per run."""
        return self.ops.shape[1]

    def deliver(self) -> None:
        """Hand each RecordNorms its norms (T, B), in the taps' order: a tap listed
        twice keeps what its later place recorded, as when called step by step."""
        for slot, tap in enumerate(self.recorders):
            tap.record(self.records[slot])


def encode(
    taps: Sequence[Sequence[Any]], steps: int, batch: int, device: torch.device
) -> TapProgram:
    """Each run's taps (only RecordNorms, ClipNorm, ClipValue) as a :class:`TapProgram`
    for a pass of ``steps`` steps over ``batch`` samples."""
    width = max(1, *(len(own) for own in taps))
    ops = [[NONE] * width for _ in taps]
    bounds = [[0.0] * width for _ in taps]
    slots = [[0] * width for _ in taps]
    recorders: list[RecordNorms] = []
    for k, own in enumerate(taps):
        for i, tap in enumerate(own):
            if type(tap) is RecordNorms:
                ops[k][i], slots[k][i] = RECORD, len(recorders)
                recorders.append(tap)
            elif type(tap) is ClipNorm:
                ops[k][i], bounds[k][i] = CLIP_NORM, float(tap.max_norm)
            elif type(tap) is ClipValue:
                ops[k][i], bounds[k][i] = CLIP_VALUE, float(tap.value)
            else:  # refusal() keeps these away
                raise TypeError(f"tap {tap!r} does not run inside the Triton kernel")
    shape = (max(1, len(recorders)), steps, batch)
    return TapProgram(
        ops=torch.tensor(ops, dtype=torch.int32, device=device),
        bounds=torch.tensor(bounds, dtype=torch.float64, device=device),
        slots=torch.tensor(slots, dtype=torch.int32, device=device),
        records=torch.full(shape, math.nan, dtype=torch.float64, device=device),
        recorders=tuple(recorders),
    )
