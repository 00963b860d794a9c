"""``unroll``: the one entry point that runs a cell over time, choosing an engine."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from bptt import _checks
from bptt._kernels import NO_TRITON_KERNEL, Kernel, RecurrenceKernel
from bptt._torch_compat import functorch_transforms_active
from bptt.cells import State, check_input, check_state, contract
from bptt.engine._fast import declared_kernel, fast_engine_for, run_fast
from bptt.engine._generic import unroll_generic
from bptt.taps import Delta, as_taps

__all__ = ["ENGINES", "require_generic", "triton_refusal", "unroll"]

_LOG = logging.getLogger("bptt.engine")

EngineName = Literal["auto", "generic", "fast", "triton"]
ENGINES: tuple[EngineName, ...] = get_args(EngineName)

# Why the generic engine is required in the current context (None: it is not).
_GENERIC_REQUIRED: ContextVar[str | None] = ContextVar("bptt_generic_required", default=None)

# A diagnosis's watch over the cells of a model (private to bptt.diagnose; None: none).
# While set, every :func:`unroll` first calls ``watch(cell, x, state)``: None leaves the
# call as it is; a pair ``(x', taps')`` runs it on ``x'`` (the same values; the watcher
# may give it a graph so that the backward reaches every step) with ``taps'`` appended
# after the caller's taps (they record what each step's backward uses, after any
# clipping of the caller's). The engine is chosen as for any call with taps: every
# engine accepts them. Per thread (a forward run in other threads is not watched).
Watch = Callable[[nn.Module, Tensor, State | None], tuple[Tensor, Sequence[Callable]] | None]
_EXTRA_TAPS: ContextVar[Watch | None] = ContextVar("bptt_extra_taps", default=None)


@contextlib.contextmanager
def _watch_unrolls(watch: Watch) -> Iterator[None]:
    """Inside it, every :func:`unroll` asks ``watch(cell, x, state)`` first (see
    ``_EXTRA_TAPS``). Private: the hook through which :func:`bptt.diagnose.diagnose`
    taps the cells a user's module unrolls itself; not for users. Per thread; an inner
    watch replaces an outer one until it ends."""
    token = _EXTRA_TAPS.set(watch)
    try:
        yield
    finally:
        _EXTRA_TAPS.reset(token)


@contextlib.contextmanager
def require_generic(reason: str) -> Iterator[None]:
    """Inside it, :func:`unroll` with ``engine="auto"`` runs the generic (autograd)
    engine, and ``engine="fast"`` is a ValueError that gives ``reason``.

    For code that differentiates an unrolled graph more than once (double backward,
    forward-mode products), which the fast engine's hand-written backward does not
    support; Hessian-free runs its closures inside it. Per thread and nestable.

    Example:
        >>> import bptt
        >>> with require_generic("the graph is differentiated twice"):
        ...     out, _ = bptt.unroll(bptt.cells.RNNCell(2, 4), torch.randn(3, 5, 2))
    """
    token = _GENERIC_REQUIRED.set(reason)
    try:
        yield
    finally:
        _GENERIC_REQUIRED.reset(token)


def unroll(
    cell: nn.Module,
    x: Tensor,
    state: State | None = None,
    taps: Sequence[Callable[[int, Delta], Delta]] | None = (),
    engine: str = "auto",
    *,
    check_finite: bool = False,
    last_only: bool = False,
) -> tuple[Tensor, State]:
    """Run a one-step cell over a batch of sequences, with hidden-gradient taps.

    During backward, each step's total hidden-state gradient delta_t = dL/ds_t passes
    through ``taps`` in list order before it flows on to step t-1; see
    :mod:`bptt.taps` for exactly what a tap sees.

    Args:
        cell: a module with ``forward(x_t, state) -> state``; built-in cells
            (:class:`bptt.cells.RNNCell`, ``LSTM``, ``GRU``) also have a fast engine.
        x: inputs (B, T, F), batch first.
        state: initial state, (B, H) or a tuple of such tensors; None means the
            cell's zero state.
        taps: callables ``tap(t, delta) -> delta``, in a list or tuple (None: none).
        engine: ``"generic"`` (autograd through the cell, any cell), ``"fast"``
            (built-in cells: input projection for all steps in one matmul, a
            hand-written backward loop, weight gradients as one matmul after it),
            ``"triton"`` (the fast engine with the recurrence in Triton kernels, forward
            and backward one launch each over the whole sequence, the taps
            RecordNorms, ClipNorm and ClipValue inside the backward kernel: the RNN
            (H <= 128), the LSTM and the GRU (H <= 64) on float32 CUDA tensors; see
            :func:`triton_refusal`), or ``"auto"``
            (fast where it applies; on CUDA the Triton kernels where they apply, else
            the loop, logging why on the ``bptt.engine`` logger once per reason). All
            give the same results, to float32 rounding. On CUDA the fast loop of a
            training pass whose taps are built-in (RecordNorms, ClipNorm, ClipValue) is
            captured as CUDA graphs, forward and backward, the first time its shape is
            seen and replayed after; a tap of its own, a forward alone, or a third
            pass of a shape while two wait for their backward runs uncaptured
            (``BPTT_CUDA_GRAPHS=0`` in the environment turns the graphs off).
        check_finite: scan x for NaN and inf first and name the first one's
            position. Off by default: the scan is a pass over x and, on an
            accelerator, a wait for the device on every call (measured on the CPU:
            0.2% of an LSTM forward at H=128, B=50, T=100; 1.6% at H=256, T=1000,
            F=64); a NaN input otherwise shows as NaN outputs.
        last_only: return the last step's output alone, (B, 1, H). A linear recurrent
            unit then computes its readout Re(C h) at that step only (and a stacked
            one its last layer's mixing): for a loss at the last step, the same
            results for less work. Every step's state, and the taps, are as without.

    Returns:
        ``(outputs, final_state)``: outputs (B, T, H), the output of every step (the
        state, or its first element for a tuple state; (B, 1, H) with ``last_only``);
        final_state as the cell returns it. The fast engine's outputs are a view of
        the buffer its backward reads: modifying them in place is refused by autograd;
        clone them first.

    Raises:
        ValueError: x is not (B, T, F) with T >= 1 and F the cell's input size, holds a
            NaN or inf (with ``check_finite``; its position is named), the state does
            not match (structure, shape or dtype), or the engine is unknown or does not
            apply.
        TypeError: ``taps`` is not a sequence of callables (one tap alone is refused:
            pass ``[tap]``), or the state is not a tensor or a tuple of tensors.

    Example:
        >>> import bptt
        >>> out, (h, c) = bptt.unroll(bptt.cells.LSTMCell(2, 8), torch.randn(4, 10, 2))
        >>> out.shape, h.shape
        (torch.Size([4, 10, 8]), torch.Size([4, 8]))
    """
    _check_input(cell, x, check_finite)
    taps = as_taps(taps)
    watch = _EXTRA_TAPS.get()
    watched = None if watch is None else watch(cell, x, state)
    if watched is not None:  # a diagnosis follows this cell (bptt.diagnose)
        x, extra = watched
        taps = (*taps, *extra)
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {_checks.shown(engine)}")
    required = _GENERIC_REQUIRED.get()
    if required is not None:
        if engine in ("fast", "triton"):
            raise ValueError(
                f"engine={engine!r} cannot run here: {required}; use 'auto' or 'generic'"
            )
        engine = "generic"
    stated = contract(cell)
    if state is None:
        state = stated.initial_state(x.shape[0], device=x.device, dtype=x.dtype)
    else:
        check_state(cell, state, x)
    for tap in taps:
        begin = getattr(tap, "begin", None)
        if callable(begin):
            begin(x.shape[1])

    fast = fast_engine_for(cell, x) if engine != "generic" else None
    if engine in ("fast", "triton") and fast is None:
        raise ValueError(
            f"engine={engine!r} applies to the built-in cells bptt.engine.has_fast_engine names "
            f"(RNN, LSTM, GRU, orthogonal, LRU, minGRU, minLSTM) on floating "
            f"inputs of their dtype outside torch.func transforms; got {type(cell).__name__} "
            f"with x of dtype {x.dtype}. Use engine='generic' or 'auto'."
        )
    if fast is not None and (engine == "triton" or (engine == "auto" and x.is_cuda)):
        why = _triton_why(fast, x, state, taps)
        if why is None and isinstance(fast, RecurrenceKernel):  # _triton_why checked it
            inside: tuple = taps  # each one a built-in tap (_triton_why checked)
            return fast.run(cell, x, state, inside, bool(last_only), backend="triton")
        if engine == "triton":
            raise ValueError(
                f"engine='triton' cannot run {type(cell).__name__} here: {why}. "
                f"Use engine='auto' or 'fast'."
            )
        _say_once(f"engine='auto' runs {type(cell).__name__} in the loop, not Triton: {why}")
    if fast is not None:
        result = run_fast(fast, cell, x, state, taps, bool(last_only))
        if result is not None:  # None: not with these taps (the deep LRU), step by step
            return result
    outputs, final = unroll_generic(cell, x, state, taps, stated.output, stated.sequence_step())
    return (outputs[:, -1:] if last_only else outputs), final


def triton_refusal(
    cell: nn.Module,
    x: Tensor,
    state: State | None = None,
    taps: Sequence[Callable[[int, Delta], Delta]] | None = (),
) -> str | None:
    """Why ``unroll(cell, x, state, taps, engine="triton")`` would be refused, None where
    it runs; ``engine="auto"`` runs the Triton kernels on CUDA exactly where this is None.

    What stands in the way, in the order checked: a cell without a Triton kernel (the
    RNN, the orthogonal RNN, the LSTM and the GRU have one), Triton not installed (the ``gpu``
    extra), x not on CUDA (on the CPU the kernels run only in Triton's interpreter,
    ``TRITON_INTERPRET=1``), x not float32, a hidden size above the kernel's limit (128
    for the RNN, 64 for the LSTM and the GRU: each program holds the whole recurrent
    weight), a tap
    other than
    :class:`bptt.taps.RecordNorms`, :class:`~bptt.taps.ClipNorm`,
    :class:`~bptt.taps.ClipValue`.

    Args:
        cell: the cell, as for :func:`unroll`.
        x: inputs (B, T, F).
        state: the initial state, None for the cell's zero state.
        taps: the taps the call would pass.

    Returns:
        A sentence saying why not, or None.

    Example:
        >>> import bptt
        >>> print(triton_refusal(bptt.cells.MinGRUCell(2, 4), torch.randn(3, 5, 2)))
        this cell has no Triton kernel yet (the Elman RNN, the LSTM and the GRU have)
    """
    _check_input(cell, x, False)
    required = _GENERIC_REQUIRED.get()
    if required is not None:
        return f"the generic engine is required here: {required}"
    if declared_kernel(cell) is None:
        return "this cell has no fast engine, and so no Triton kernel"
    fast = fast_engine_for(cell, x)
    if fast is None:
        return "x's dtype or device is not the weights', or a torch.func transform is active"
    if state is None:
        state = contract(cell).initial_state(x.shape[0], device=x.device, dtype=x.dtype)
    return _triton_why(fast, x, state, as_taps(taps))


def _triton_why(
    kernel: Kernel, x: Tensor, state: State, taps: tuple, stacked: bool = False
) -> str | None:
    """Why the kernel's Triton version cannot run this pass, None where it can: one
    run's ``taps``, or with ``stacked`` K runs' (x (K, B, T, F))."""
    if not isinstance(kernel, RecurrenceKernel) or kernel.triton is None:
        return NO_TRITON_KERNEL
    return kernel.triton_refusal(x, state, taps if stacked else (taps,))


def _say_once(message: str) -> None:
    """Log ``message`` at INFO on ``bptt.engine``, once per process (auto's fallbacks
    would otherwise repeat at every step of training)."""
    if message not in _SAID:
        _SAID.add(message)
        _LOG.info(message)


_SAID: set[str] = set()


def _check_input(cell: nn.Module, x: Tensor, check_finite: bool) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor of shape (B, T, F), got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"x must have shape (B, T, F), got a tensor of shape {tuple(x.shape)}")
    if x.shape[1] < 1 or x.shape[0] < 1:
        raise ValueError(f"x must hold at least one sample and one step, got {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    transformed = functorch_transforms_active()  # no data-dependent checks there
    if check_finite and not transformed and not bool(torch.isfinite(x).all()):
        sample, step, feature = (int(i) for i in (~torch.isfinite(x)).nonzero()[0])
        value = x[sample, step, feature].item()
        raise ValueError(
            f"x holds a non-finite value ({value}) at sample {sample}, step {step}, "
            f"feature {feature}"
        )
    check_input(cell, x)
