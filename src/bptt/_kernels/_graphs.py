"""CUDA graphs for the recurrence kernels' loops: a pass's forward and backward captured
once per shape, then replayed.

On a GPU the loop kernels launch several small kernels a step forward and more
backward; at T = 784 that is over ten thousand launches a training step, each a few
microseconds of the CPU's time, and the GPU waits on Python. The shapes of a training
run do not change, so the first pass of a shape is captured as two CUDA graphs (the
forward; the backward with its taps) and every later pass copies its inputs into the
captured ones and replays them.

What is captured: a pass of the loop kernels (not the Triton ones, one launch each
already) with gradients wanted, whose taps are the built-in :class:`~bptt.taps.RecordNorms`,
:class:`~bptt.taps.ClipNorm` and :class:`~bptt.taps.ClipValue` (their bounds part of
what is captured). Everything else runs uncaptured, as before: a tap of the user's own
(its Python runs at every step), a forward without backward, a pass inside a CUDA graph
being captured already, a third pass of a shape while two still wait for their
backward (a capture serves one pass at a time, its memory being that pass's; a shape
gets two, for a bidirectional layer's two directions), a shape whose capture failed
(logged once). ``BPTT_CUDA_GRAPHS=0`` in the environment turns the graphs off. A
capture serves one thread's pass at a time; a capture in progress forbids other
threads' CUDA work (torch's default capture mode), so capture in a training loop's
thread, not beside a data-loading thread that uses CUDA.

The bookkeeping (:class:`Capture`, :class:`GraphedPass`) is the same whatever replays:
the inputs copied into the captured ones, outputs and gradients copied out (the next
replay overwrites the graph's own), each RecordNorms handed its norms. The CPU tests
check it with the graph replaced by direct execution (:class:`DirectExecution`,
:func:`direct_execution`); on a device, ``benchmarks/gpu.py`` holds the captured
results to the uncaptured ones.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from bptt._kernels._common import Pass, first_derivative_only, start_backward
from bptt._kernels._workspace import WORKSPACE
from bptt.taps import ClipNorm, ClipValue, RecordNorms

_LOG = logging.getLogger("bptt.engine")
_MAX_CAPTURES = 6  # captures kept: each holds its pass's activations on the device
# captures of one shape: a bidirectional layer's two directions, or same-width layers,
# are passes of one shape pending at once (each waits for its backward)
_PER_SHAPE = 2
_WARMUPS = 2  # passes before capturing (lazy initialisation, cuBLAS workspaces), as torch asks
_BUILT_IN = (RecordNorms, ClipNorm, ClipValue)

Body = Callable[[], Sequence[Tensor | None]]


class CudaGraph:
    """One ``torch.cuda.CUDAGraph``: :meth:`capture` a body once, :meth:`replay` it."""

    warm_up = True  # a few uncaptured passes on a side stream first, as torch asks

    def __init__(self, pool: Any = None) -> None:
        self.graph = torch.cuda.CUDAGraph()
        self._pool = pool

    def pool(self) -> Any:
        """The graph's memory pool, for a graph captured after it to share."""
        return self.graph.pool()

    def capture(self, body: Body) -> tuple[Tensor | None, ...]:
        """Run ``body`` under capture; its results are the tensors replays rewrite."""
        with torch.cuda.graph(self.graph, pool=self._pool):
            return tuple(body())

    def replay(self) -> None:
        self.graph.replay()


class DirectExecution:
    """In place of a CUDA graph where none can be captured (the CPU tests of the
    bookkeeping): :meth:`capture` runs the body and keeps its results; :meth:`replay`
    runs it again and copies the new results into them, as a replay rewrites the
    captured memory."""

    warm_up = False

    def __init__(self, pool: Any = None) -> None:
        self._body: Body | None = None
        self._results: tuple[Tensor | None, ...] = ()

    def pool(self) -> Any:
        return None

    def capture(self, body: Body) -> tuple[Tensor | None, ...]:
        self._body = body
        self._results = tuple(body())
        return self._results

    def replay(self) -> None:
        assert self._body is not None, "capture() first"
        with torch.enable_grad():  # replayed inside an autograd Function's forward
            results = self._body()
        with torch.no_grad():
            for kept, new in zip(self._results, results, strict=True):
                if kept is not None and new is not None:
                    kept.copy_(new)


_direct = threading.local()


@contextmanager
def direct_execution() -> Iterator[None]:
    """Within: passes on any device take the graph path, with :class:`DirectExecution`
    for the graphs (the CPU tests of the bookkeeping). The captures made within are
    dropped on leaving."""
    _direct.depth = getattr(_direct, "depth", 0) + 1
    try:
        yield
    finally:
        _direct.depth -= 1
        CAPTURES.clear()


def _direct_active() -> bool:
    return getattr(_direct, "depth", 0) > 0


def graph_refusal(x: Tensor, run: Pass, live: Sequence[Tensor | None]) -> str | None:
    """Why this pass runs uncaptured (None: it is captured or replayed): ``live`` the
    tensors the kernel's Function takes, in order."""
    if x.device.type != "cuda" and not _direct_active():  # first: every CPU pass asks
        return f"x is on {x.device.type}, not CUDA"
    if os.environ.get("BPTT_CUDA_GRAPHS", "") == "0":
        return "BPTT_CUDA_GRAPHS=0"
    if x.is_cuda and torch.cuda.is_current_stream_capturing():
        return "a CUDA graph is being captured around this pass already"
    if run.backend != "loop":
        return f"the {run.backend} kernels run uncaptured"
    if not run.grad_enabled or not any(t is not None and t.requires_grad for t in live):
        return "no gradient is wanted (a forward alone)"
    for own in run.taps:
        for tap in own:
            if type(tap) not in _BUILT_IN:
                return f"a tap of its own ({type(tap).__name__}) runs its Python at every step"
    return None


def _tap_signature(tap: Any) -> tuple:
    if type(tap) is ClipNorm:
        return ("ClipNorm", float(tap.max_norm))
    if type(tap) is ClipValue:
        return ("ClipValue", float(tap.value))
    return ("RecordNorms",)


def _copy_of(tap: Any, steps: int) -> Any:
    """A tap of the same kind and bound, for the captured pass."""
    if type(tap) is ClipNorm:
        return ClipNorm(tap.max_norm)
    if type(tap) is ClipValue:
        return ClipValue(tap.value)
    record = RecordNorms()
    record.begin(steps)
    return record


class Capture:
    """One shape's pass, captured: its static inputs, outputs and gradients, and the
    two graphs that rewrite them.

    Args:
        function: the kernel's autograd Function.
        live: the first pass's tensors (x, the state's parts, the parameters; None for
            an absent bias), in the Function's order; copied as the static inputs.
        split, options: the Function is called as
            ``function.apply(*live[:split], run, *options, *live[split:])``.
        run: the first pass's :class:`Pass` (its taps' kinds and bounds are kept).
        make_graph: a :class:`CudaGraph` or :class:`DirectExecution` factory.
    """

    def __init__(
        self,
        function: type[torch.autograd.Function],
        live: Sequence[Tensor | None],
        split: int,
        options: tuple,
        run: Pass,
        make_graph: type[CudaGraph] | type[DirectExecution],
    ) -> None:
        self.inputs = [None if t is None else t.detach().clone() for t in live]
        for static, given in zip(self.inputs, live, strict=True):
            if static is not None and given is not None:
                static.requires_grad_(given.requires_grad)
        self.wanted = [i for i, t in enumerate(self.inputs) if t is not None and t.requires_grad]
        steps = live[0].shape[-2] if live[0] is not None else 0  # x (..., T, F)
        self.taps = tuple(tuple(_copy_of(tap, steps) for tap in own) for own in run.taps)
        captured_run = Pass(self.taps, True, run.stacked, run.backend)
        arguments = (*self.inputs[:split], captured_run, *options, *self.inputs[split:])
        self._apply = lambda: function.apply(*arguments)
        self._outputs: tuple[Tensor, ...] = ()  # the last forward body's, with autograd
        self.grad_outputs: list[Tensor] = []  # static: the outputs' incoming gradients
        self._busy: weakref.ref | None = None  # the pending pass's autograd node
        if make_graph.warm_up:
            self._warm_up()
        with WORKSPACE.private():
            self.forward_graph = make_graph()
            self.outputs = self.forward_graph.capture(self._forward_body)
            self._make_grad_outputs()
            self.backward_graph = make_graph(self.forward_graph.pool())
            self.input_grads = self.backward_graph.capture(self._backward_body)

    def _make_grad_outputs(self) -> None:
        """The static incoming gradients, once, outside any capture."""
        if not self.grad_outputs:
            self.grad_outputs = [torch.zeros_like(o.detach()) for o in self._outputs]

    def _forward_body(self) -> list[Tensor]:
        self._outputs = tuple(self._apply())
        return [o.detach() for o in self._outputs]

    def _backward_body(self) -> tuple[Tensor | None, ...]:
        wanted = [t for t in self.inputs if t is not None and t.requires_grad]
        return torch.autograd.grad(
            self._outputs, wanted, grad_outputs=self.grad_outputs, allow_unused=True
        )

    def _warm_up(self) -> None:
        """A few uncaptured passes on a side stream before capturing, as torch asks."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), WORKSPACE.private():
            for _ in range(_WARMUPS):
                self._forward_body()
                self._make_grad_outputs()
                self._backward_body()
        torch.cuda.current_stream().wait_stream(stream)

    @property
    def busy(self) -> bool:
        """Whether a forward replayed here still waits for its backward: its autograd
        node is alive (it dies with the graph, backward or not)."""
        return self._busy is not None and self._busy() is not None

    def claim(self, node: Any) -> None:
        """Mark the capture busy with a pass whose autograd node is ``node``."""
        self._busy = weakref.ref(node)

    def forward(self, live: Sequence[Tensor | None]) -> tuple[Tensor, ...]:
        """Copy the pass's inputs in, replay the forward, and hand out copies of the
        outputs (the next replay rewrites the captured ones)."""
        with torch.no_grad():
            for static, given in zip(self.inputs, live, strict=True):
                if static is not None and given is not None:
                    static.copy_(given)
        self.forward_graph.replay()
        return tuple(o.clone() for o in self.outputs if o is not None)

    def backward(self, grads: Sequence[Tensor], taps: tuple[tuple, ...]) -> list[Tensor | None]:
        """Copy the outputs' gradients in, replay the backward, hand each RecordNorms of
        ``taps`` (the pass's own, matching the captured ones) its norms, and return the
        gradients of the inputs, in the Function's order (None where not wanted)."""
        with torch.no_grad():
            for static, grad in zip(self.grad_outputs, grads, strict=True):
                static.copy_(grad)
        self.backward_graph.replay()
        self._busy = None
        for own, captured in zip(taps, self.taps, strict=True):
            for tap, twin in zip(own, captured, strict=True):
                if type(tap) is RecordNorms:
                    tap.record(twin.norms.t().clone())  # (T, B)
        result: list[Tensor | None] = [None] * len(self.inputs)
        for i, given in zip(self.wanted, self.input_grads, strict=True):
            result[i] = None if given is None else given.clone()
        return result


class GraphedPass(torch.autograd.Function):
    """A kernel's pass through its :class:`Capture`: forward(capture, taps, *live) ->
    the kernel Function's outputs; the gradients of ``live`` in backward."""

    @staticmethod
    def forward(ctx, capture: Capture, taps: tuple[tuple, ...], *live: Tensor | None):
        ctx.capture, ctx.taps = capture, taps
        capture.claim(ctx)  # Captures.run checked it was free, under its lock
        return capture.forward(live)

    @staticmethod
    @first_derivative_only
    def backward(ctx, *grads: Tensor):
        start_backward(ctx)  # one backward: the graph's memory is the next pass's
        return (None, None, *ctx.capture.backward(grads, ctx.taps))


class Captures:
    """The captures by shape (at most :data:`_PER_SHAPE` a shape and :data:`_MAX_CAPTURES`
    in all, the least recently used shape dropped first) and the shapes whose capture
    failed. A capture serves one pass at a time: a pass takes a free one under the lock.
    """

    def __init__(self) -> None:
        self._kept: OrderedDict[tuple, list[Capture]] = OrderedDict()
        self._failed: set[tuple] = set()
        self._lock = threading.Lock()
        self.made = 0  # captures made so far (the tests and gpu.py count them)
        self.failed = 0  # captures that raised

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()
            self._failed.clear()

    def run(
        self,
        function: type[torch.autograd.Function],
        live: Sequence[Tensor | None],
        split: int,
        options: tuple,
        run: Pass,
    ) -> tuple[Tensor, ...] | None:
        """The pass through a free capture of its shape (made when none is free and the
        shape has fewer than :data:`_PER_SHAPE`), or None where it must run uncaptured:
        the shape's capture failed, or every capture of it is busy."""
        key = (
            function,
            tuple(
                None if t is None else (tuple(t.shape), t.dtype, t.device, t.requires_grad)
                for t in live
            ),
            split,
            options,
            run.stacked,
            tuple(tuple(_tap_signature(tap) for tap in own) for own in run.taps),
        )
        with self._lock:
            if key in self._failed:
                return None
            kept = self._kept.setdefault(key, [])
            self._kept.move_to_end(key)
            free = next((c for c in kept if not c.busy), None)
            if free is not None:
                return GraphedPass.apply(free, run.taps, *live)  # claims it, under the lock
            if len(kept) >= _PER_SHAPE:
                return None
        make_graph: type[CudaGraph] | type[DirectExecution]
        make_graph = DirectExecution if _direct_active() else CudaGraph
        device = live[0].device if live[0] is not None else None
        try:
            with torch.cuda.device(device) if make_graph is CudaGraph else _nothing():
                capture = Capture(function, live, split, options, run, make_graph)
        except Exception as error:  # a capture that fails leaves the shape uncaptured
            _LOG.warning(
                "CUDA graph capture failed (%s: %s); this shape runs uncaptured",
                type(error).__name__,
                error,
            )
            with self._lock:
                self.failed += 1
                self._failed.add(key)
            return None
        with self._lock:
            self.made += 1
            self._kept.setdefault(key, []).append(capture)
            while sum(map(len, self._kept.values())) > _MAX_CAPTURES:
                self._kept.popitem(last=False)  # a busy one lives on in its pass's node
            return GraphedPass.apply(capture, run.taps, *live)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


CAPTURES = Captures()
