"""Subnormal floats: detecting and switching the CPU's flush-to-zero mode.

Vanishing gradients shrink towards zero and pass through the subnormal range
(below 1.2e-38 in float32) on the way; CPU arithmetic on subnormals is an order of
magnitude slower. Flushing them to zero costs only values that small.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["flush_denormal", "flushing_denormals"]


def flushing_denormals() -> bool:
    """Whether this thread's float arithmetic currently flushes subnormals to zero."""
    tiny = torch.tensor([1e-38], dtype=torch.float32)
    return (tiny * 1e-3).item() == 0.0  # 1e-41 is subnormal: zero only when flushed


@contextlib.contextmanager
def flush_denormal(enabled: bool = True) -> Iterator[bool]:
    """Within the block, flush subnormals to zero (or not); restore the mode after it.

    Yields whether the mode could be set (``torch.set_flush_denormal`` needs SSE3 on
    x86 and is unsupported on some CPUs).

    Example:
        >>> with flush_denormal(True) as supported:
        ...     inside = flushing_denormals()
        >>> (inside or not supported), flushing_denormals()
        (True, False)
    """
    previous = flushing_denormals()
    supported = torch.set_flush_denormal(enabled)
    try:
        yield supported
    finally:
        torch.set_flush_denormal(previous)
