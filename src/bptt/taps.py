"""Hidden-state gradient taps: see and change dL/dh_t at every step of backprop through time.

The contract (one definition for every engine). Let s_t be the state a cell returns
at step t (t = 0 .. T-1) and L the loss. During backward, once every use of s_t has
sent its gradient back (the readout of step t, step t+1, and the final state if the
loss uses it), the engine holds

    delta_t = dL/ds_t,

the gradient of L with respect to s_t seen as the input of everything after step t.
Before step t's backward runs, ``delta_t`` passes through the taps in list order,
``delta_t = tap(t, delta_t)``, and the tapped value is what step t's backward uses:
for the gradient that flows on to s_{t-1}, for the parameter gradients of step t and
for the gradient of x_t. Taps are called for t = T-1, T-2, ..., 0.

What a tap sees:

* a cell whose state is one tensor (RNN, GRU, most user cells): a tensor of the
  state's shape, (B, H);
* a cell whose state is a tuple: a tuple of the same length, one gradient per
  component. For the LSTM, ``(dL/dh_t, dL/dc_t)``, where dL/dc_t is the gradient
  that reaches c_t from step t+1 (and from the final state): the path through
  h_t = o_t * tanh(c_t) lies inside step t and is added after the taps.

A tap returns the same structure with the same shapes. It may return its input
unchanged (an observer) or a new value. Per-sample quantities are taken over the
whole state: the norm of a tuple is the norm of all its components together.

A tap may define ``begin(num_steps)``; :func:`bptt.unroll` calls it when a forward
pass over ``num_steps`` steps starts, so the tap can size its buffers. A tap
instance serves one unroll per backward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, overload, runtime_checkable

import torch
from torch import Tensor

from bptt import _checks

Delta = Tensor | tuple[Tensor, ...]

__all__ = [
    "ClipNorm",
    "ClipValue",
    "Delta",
    "RecordNorms",
    "Tap",
    "apply_taps",
    "as_taps",
    "per_sample_norm",
]


@runtime_checkable
class Tap(Protocol):
    """Anything called as ``tap(t, delta) -> delta`` during backward."""

    def __call__(self, t: int, delta: Delta) -> Delta: ...


def per_sample_norm(delta: Delta, *, out: Tensor | None = None) -> Tensor:
    """The Euclidean norm of each sample's gradient over the whole state, in float64.

    Accumulated in float64 whatever the gradient's dtype: in float32 the squares of
    elements beyond 1.8e19 overflow and below 1e-19 underflow, so a float32 norm
    reads inf or 0 for gradients that are finite and nonzero, exactly where
    exploding and vanishing gradients live.

    Args:
        delta: a tensor (B, ...) or a tuple of such tensors.
        out: optional float64 tensor (B,) to write the result into.

    Returns:
        A float64 tensor (B,).

    Example:
        >>> per_sample_norm((torch.tensor([[3.0]]), torch.tensor([[4.0]])))
        tensor([5.], dtype=torch.float64)
        >>> per_sample_norm(torch.full((1, 4), 1e30))  # float32 overflows, float64 does not
        tensor([2.0000e+30], dtype=torch.float64)
    """
    if isinstance(delta, tuple):  # one norm over the components side by side
        delta = torch.cat([_rows(d) for d in delta], dim=1) if len(delta) > 1 else delta[0]
    return torch.linalg.vector_norm(_rows(delta), dim=1, dtype=torch.float64, out=out)


def _rows(delta: Tensor) -> Tensor:
    """delta as (B, N): one row per sample."""
    return delta if delta.dim() == 2 else delta.flatten(1)


@overload
def _scale(delta: Tensor, coef: Tensor) -> Tensor: ...
@overload
def _scale(delta: tuple[Tensor, ...], coef: Tensor) -> tuple[Tensor, ...]: ...
def _scale(delta: Delta, coef: Tensor) -> Delta:
    """Multiply each sample's gradient by coef (B,), keeping the gradient's dtype."""
    if isinstance(delta, tuple):
        return tuple(_scale(d, coef) for d in delta)
    return delta * coef.to(delta.dtype).view(-1, *([1] * (delta.dim() - 1)))


@overload
def apply_taps(taps: Sequence[Callable[[int, Delta], Delta]], t: int, delta: Tensor) -> Tensor: ...
@overload
def apply_taps(
    taps: Sequence[Callable[[int, Delta], Delta]], t: int, delta: tuple[Tensor, ...]
) -> tuple[Tensor, ...]: ...
def apply_taps(taps: Sequence[Callable[[int, Delta], Delta]], t: int, delta: Delta) -> Delta:
    """Pass delta_t through the taps in order, checking each keeps the structure.

    Raises:
        TypeError: a tap returned something of another structure or shape.
    """
    for tap in taps:
        out = tap(t, delta)
        if out is delta:  # an observer: nothing to check
            continue
        if isinstance(delta, tuple):
            ok = isinstance(out, tuple) and len(out) == len(delta)
            ok = ok and all(o.shape == d.shape for o, d in zip(out, delta, strict=True))
        else:
            ok = isinstance(out, Tensor) and out.shape == delta.shape
        if not ok:
            raise TypeError(
                f"tap {tap!r} must return a gradient of the structure it was given "
                f"({_describe(delta)}), got {_describe(out)}"
            )
        delta = out
    return delta


def as_taps(taps: object) -> tuple[Callable[[int, Delta], Delta], ...]:
    """``taps`` as a tuple of callables: a sequence (list, tuple, any iterable) of taps;
    None, like an empty list, means none.

    Raises:
        TypeError: ``taps`` is not an iterable of callables (a lone tap included:
            pass it as ``[tap]``).
    """
    if taps is None:
        return ()
    if isinstance(taps, (str, bytes, Tensor)) or not isinstance(taps, Iterable):
        hint = ": pass one tap as taps=[tap]" if callable(taps) else ""
        raise TypeError(
            f"taps must be a sequence of callables tap(t, delta), got {_checks.shown(taps)}{hint}"
        )
    out = tuple(taps)
    for index, tap in enumerate(out):
        if not callable(tap):
            raise TypeError(
                f"taps[{index}] must be callable as tap(t, delta), got {_checks.shown(tap)}"
            )
    return out


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"tensor {tuple(value.shape)}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_describe(v) for v in value) + ")"
    return type(value).__name__


def _positive(name: str, value: float) -> float:
    return _checks.real(name, value, 0.0, open_low=True)


class RecordNorms:
    """Record the norm of each sample's delta_t at every step (an observer).

    After backward, ``norms`` is a float64 tensor (B, T): ``norms[b, t]`` is the norm of
    sample b's delta_t as this tap saw it, that is after the taps before it in the
    list and before any tap after it (see :func:`per_sample_norm`). Steps that
    backward never reached hold NaN.

    Example:
        >>> import bptt
        >>> cell, rec = bptt.cells.RNNCell(1, 4), RecordNorms()
        >>> out, _ = bptt.unroll(cell, torch.randn(2, 5, 1), taps=[rec])
        >>> out[:, -1].sum().backward()
        >>> rec.norms.shape
        torch.Size([2, 5])
    """

    def __init__(self) -> None:
        self._num_steps: int | None = None
        self._buffer: Tensor | None = None  # (T, B): one contiguous row per step

    def begin(self, num_steps: int) -> None:
        """Start a new record for an unroll of num_steps steps."""
        self._num_steps = num_steps
        self._buffer = None

    def __call__(self, t: int, delta: Delta) -> Delta:
        if self._num_steps is None:
            raise RuntimeError("RecordNorms.begin(num_steps) was not called; use it via unroll")
        if self._buffer is None:
            first = delta[0] if isinstance(delta, tuple) else delta
            shape = (self._num_steps, first.shape[0])
            self._buffer = torch.full(shape, math.nan, dtype=torch.float64, device=first.device)
        per_sample_norm(delta, out=self._buffer[t])
        return delta

    def record(self, norms: Tensor) -> None:
        """Take a whole backward pass's norms at once, as if called at every step: for
        an engine that computes them inside its own backward (the Triton kernels).

        Args:
            norms: float64 (T, B), row t the per-sample norms of delta_t.

        Raises:
            RuntimeError: :meth:`begin` was not called.
            ValueError: ``norms`` is not float64 (T, B) for this unroll's T.
        """
        if self._num_steps is None:
            raise RuntimeError("RecordNorms.begin(num_steps) was not called; use it via unroll")
        if norms.dtype != torch.float64 or norms.dim() != 2 or norms.shape[0] != self._num_steps:
            raise ValueError(
                f"norms must be float64 ({self._num_steps}, B), got {norms.dtype} "
                f"{tuple(norms.shape)}"
            )
        self._buffer = norms

    @property
    def norms(self) -> Tensor:
        """Tensor (B, T) of per-sample delta_t norms from the last backward pass."""
        if self._buffer is None:
            raise RuntimeError("no norms recorded yet: run a backward pass through the unroll")
        return self._buffer.t()

    def __repr__(self) -> str:
        return "RecordNorms()"


class ClipNorm:
    """Clip each sample's delta_t to a norm of at most ``max_norm`` at every step.

    The direction is kept; a sample whose norm exceeds ``max_norm`` is scaled by
    ``max_norm / norm`` (no epsilon, unlike :func:`torch.nn.utils.clip_grad_norm_`,
    so that clipping twice changes nothing). This clips only the part that explodes,
    the gradient flowing back through time, before it meets the next Jacobian. A sample whose
    delta_t holds NaN or inf comes out non-finite (NaN), for the monitor to report:
    clipping never hides a non-finite gradient.

    Args:
        max_norm: the bound, positive and finite.

    References:
        Pascanu, Mikolov & Bengio (2013), On the difficulty of training recurrent
        neural networks, section 3.2.
    """

    def __init__(self, max_norm: float) -> None:
        self.max_norm = _positive("max_norm", max_norm)

    def __call__(self, t: int, delta: Delta) -> Delta:
        # torch.div, not `scalar / tensor` (a reciprocal times the scalar): a sample
        # at or below the bound gets a factor of exactly 1.
        coef = torch.div(self.max_norm, per_sample_norm(delta).clamp_(min=self.max_norm))
        return _scale(delta, coef)

    def __repr__(self) -> str:
        return f"ClipNorm(max_norm={self.max_norm})"


class ClipValue:
    """Clamp every element of delta_t to [-value, value] at every step.

    Args:
        value: the bound, positive and finite.
    """

    def __init__(self, value: float) -> None:
        self.value = _positive("value", value)

    def __call__(self, t: int, delta: Delta) -> Delta:
        if isinstance(delta, tuple):
            return tuple(d.clamp(-self.value, self.value) for d in delta)
        return delta.clamp(-self.value, self.value)

    def __repr__(self) -> str:
        return f"ClipValue(value={self.value})"
