"""A small pool of scratch buffers for the fast engines.

A fast engine keeps several (T, B, kH) buffers alive from forward to backward. Fresh
allocations of that size are served by new pages from the operating system, and
touching them for the first time cost more than the recurrence itself (measured:
filling a fresh 100 MB buffer took 25 ms, an existing one 3.4 ms). Buffers that
never leave the engine are therefore taken from this pool and given back when the
backward pass (or a forward pass without backward) is done with them. Buffers a
caller can see (the outputs) are never pooled.

While a CUDA graph is captured (:mod:`bptt._kernels._graphs`) the pool stands aside
(:meth:`Workspace.private`): the graph's replays write its buffers long after the
capture gave them back, so they must never serve another pass.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

_MAX_PER_KEY = 2


class Workspace:
    """Free buffers by (shape, dtype, device), at most two of each kept."""

    def __init__(self) -> None:
        self._free: dict[tuple, list[Tensor]] = {}
        self._lock = threading.Lock()
        self._private = threading.local()  # .depth > 0: this thread bypasses the pool

    @contextmanager
    def private(self) -> Iterator[None]:
        """Within: :meth:`take` allocates anew and :meth:`give` keeps nothing, in this
        thread (for a pass captured into a CUDA graph, whose buffers the graph owns)."""
        self._private.depth = getattr(self._private, "depth", 0) + 1
        try:
            yield
        finally:
            self._private.depth -= 1

    def _bypassed(self, like: Tensor) -> bool:
        """In :meth:`private`, or on a CUDA stream being captured (autograd runs a CUDA
        backward on a thread of its own, which :meth:`private` does not reach)."""
        if getattr(self._private, "depth", 0) > 0:
            return True
        return like.is_cuda and torch.cuda.is_current_stream_capturing()

    def take(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """An uninitialised buffer of ``shape`` with ``like``'s dtype and device."""
        if self._bypassed(like):
            return torch.empty(shape, dtype=like.dtype, device=like.device)
        key = (tuple(shape), like.dtype, like.device)
        with self._lock:
            free = self._free.get(key)
            if free:
                return free.pop()
        return torch.empty(shape, dtype=like.dtype, device=like.device)

    def give(self, *buffers: Tensor) -> None:
        """Return buffers taken with :meth:`take`; nothing may use them afterwards."""
        if buffers and self._bypassed(buffers[0]):
            return
        with self._lock:
            for buffer in buffers:
                free = self._free.setdefault((tuple(buffer.shape), buffer.dtype, buffer.device), [])
                if len(free) < _MAX_PER_KEY:
                    free.append(buffer)

    def clear(self) -> None:
        """Drop every kept buffer."""
        with self._lock:
            self._free.clear()


WORKSPACE = Workspace()
