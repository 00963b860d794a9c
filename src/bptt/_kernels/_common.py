"""Pieces shared by the kernels of the built-in recurrences, written once for K runs.

Layout. Every buffer is time-major with a leading run dimension, (T, K, B, G): each
step's rows of all K runs are one contiguous block. A single run is K = 1; its
per-step tensors are then (B, G) and its products plain matrix products (``addmm``),
those of K > 1 runs (K, B, G) and batched products (``baddbmm``) over the K stacked
weights (K, G, H). :class:`Runs` hands out the per-step views and the products, so a
loop is written once for both.

Arithmetic. The input projection of all T steps is one matmul before the loop; the
backward walks back over time in chunks of a few steps, first computing for the
whole chunk at once the local derivative factors that do not depend on the flowing
gradient (few large calls, data still in cache), then for each step only what the
flowing gradient needs; the weight, bias and input gradients are summed a few chunks
at a time while those chunks are still in cache (:class:`ChunkGrads`; the Triton
kernels' Functions sum them once after their kernel), and a lone RecordNorms' norms
are taken the same way (:class:`LoneRecorders`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from bptt._kernels._workspace import WORKSPACE
from bptt.taps import Delta, RecordNorms, apply_taps

# Elements of a (chunk, K, B, G) factor block worked on at once: about 1 MB of float32,
# small enough to stay in cache for the per-step loop that follows.
_CHUNK_ELEMENTS = 1 << 18


def backward_chunks(steps: int, elements_per_step: int) -> list[tuple[int, int]]:
    """(start, end) ranges covering 0..steps-1, last chunk first."""
    size = max(1, min(steps, _CHUNK_ELEMENTS // max(1, elements_per_step)))
    starts = range(((steps - 1) // size) * size, -1, -size)
    return [(start, min(start + size, steps)) for start in starts]


@dataclass(frozen=True)
class Pass:
    """What the caller knows about a forward pass that the autograd Function cannot see.

    Attributes:
        taps: one tuple of hidden-gradient taps per run (K of them); run k's taps see
            its own delta_t, (B, H) or a tuple of such, as :func:`bptt.unroll` would
            show them for that run alone.
        grad_enabled: whether grad mode was on at the call (inside ``forward`` it is
            always off), so a pass under ``torch.no_grad()`` gives its buffers back.
        stacked: whether the per-run tensors (inputs, states, weights) come with the
            leading run dimension K; False for one run given without it.
        backend: what runs the recurrence: ``"loop"``, the loop over time in torch, or
            ``"triton"``, the Triton kernels (:mod:`bptt._kernels._triton`).
    """

    taps: tuple[tuple[Callable[[int, Delta], Delta], ...], ...]
    grad_enabled: bool
    stacked: bool = False
    backend: str = "loop"

    @overload
    def lead(self, tensor: Tensor) -> Tensor: ...
    @overload
    def lead(self, tensor: Tensor | None) -> Tensor | None: ...
    def lead(self, tensor: Tensor | None) -> Tensor | None:
        """A per-run tensor with its run dimension: as given when stacked, else (1, ...)."""
        return tensor if tensor is None or self.stacked else tensor.unsqueeze(0)

    @overload
    def unlead(self, tensor: Tensor) -> Tensor: ...
    @overload
    def unlead(self, tensor: Tensor | None) -> Tensor | None: ...
    def unlead(self, tensor: Tensor | None) -> Tensor | None:
        """The inverse of :meth:`lead`, for what goes back to the caller."""
        return tensor if tensor is None or self.stacked else tensor[0]


@dataclass(frozen=True)
class Runs:
    """The run dimension K of a pass and the products that go with it.

    ``addmm_(out, a, w)`` adds a w into out in place and ``mm(a, w, out=...)`` writes
    a w, for per-step operands: (B, ·) and a matrix for K = 1, (K, B, ·) and (K, ·, ·)
    for K > 1.
    """

    k: int

    @property
    def addmm_(self) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        if self.k == 1:
            return Tensor.addmm_
        return Tensor.baddbmm_

    @property
    def mm(self) -> Callable[..., Tensor]:
        if self.k == 1:
            return torch.mm
        return torch.bmm

    def steps(self, buffer: Tensor) -> tuple[Tensor, ...]:
        """(T, K, B, ...) -> T per-step views, (B, ...) for K = 1 else (K, B, ...)."""
        return (buffer.select(1, 0) if self.k == 1 else buffer).unbind(0)

    def step(self, tensor: Tensor) -> Tensor:
        """One step's tensor (K, B, ...) as the loops hold it."""
        return tensor.select(0, 0) if self.k == 1 else tensor

    def whole(self, tensor: Tensor) -> Tensor:
        """The inverse of :meth:`step`: (K, B, ...)."""
        return tensor.unsqueeze(0) if self.k == 1 else tensor

    @overload
    def operand(self, tensor: Tensor) -> Tensor: ...
    @overload
    def operand(self, tensor: Tensor | None) -> Tensor | None: ...
    def operand(self, tensor: Tensor | None) -> Tensor | None:
        """A per-run weight (K, G, H) or vector (K, H) as a per-step operand: (G, H) and
        (H,) for K = 1, else (K, G, H) and (K, 1, H), which broadcast over the batch."""
        if tensor is None:
            return None
        if self.k == 1:
            return tensor[0]
        return tensor.unsqueeze(1) if tensor.dim() == 2 else tensor

    def rows(self, buffer: Tensor) -> Tensor:
        """(T, K, B, G) -> (K, T*B, G): each run's rows (a view for K = 1)."""
        return buffer.transpose(0, 1).reshape(self.k, -1, buffer.shape[-1])

    def bmm(self, a: Tensor, b: Tensor) -> Tensor:
        """(K, N, M) @ (K, M, P) -> (K, N, P), a plain matrix product for K = 1."""
        return torch.mm(a[0], b[0]).unsqueeze(0) if self.k == 1 else torch.bmm(a, b)

    def taps(self, run: Pass) -> Callable[[int, Any], Any] | None:
        """The pass's taps as one call ``tap(t, delta) -> delta`` on a step's delta as
        the loops hold it (a tensor, or the LSTM's pair), or None where no run has taps
        or where :func:`lone_recorders` takes them out of the loop. For K > 1 each run's
        taps see that run's slice."""
        if not any(run.taps) or lone_recorders(run) is not None:
            return None
        if self.k == 1:
            return functools.partial(apply_taps, run.taps[0])
        return functools.partial(_tap_each_run, run.taps)


def _tap_each_run(taps: tuple[tuple, ...], t: int, delta: Delta) -> Delta:
    """delta_t (K, B, H), or a tuple of such, through each run's own taps; the same
    object back where every tap only observed."""
    seen: list[Delta] = []
    changed = False
    for k, own in enumerate(taps):
        mine: Delta = tuple(d[k] for d in delta) if isinstance(delta, tuple) else delta[k]
        out = apply_taps(own, t, mine) if own else mine
        changed = changed or out is not mine
        seen.append(out)
    if not changed:
        return delta
    if isinstance(delta, tuple):
        return tuple(torch.stack([s[i] for s in seen]) for i in range(len(delta)))  # type: ignore[index]
    return torch.stack(seen)  # type: ignore[arg-type]


class LoneRecorders:
    """One :class:`bptt.taps.RecordNorms` per run and no other tap: the common case of
    a monitored run, taken out of the backward loop.

    An observer alone changes nothing the loop computes, and every step's delta stays
    in buffers that the loop finishes once and never pools (the deltas of :func:`output_grads`,
    the LSTM's cell-state carry), so the norms are computed a chunk of steps at a time,
    when the chunk is done and still in cache, instead of one small call per step (at
    B = 64, H = 64 on one core a step's norm cost about a tenth of the LSTM's backward
    step), and handed over once at the end.
    """

    def __init__(self, recorders: tuple[RecordNorms, ...]) -> None:
        self.recorders = recorders  # run k's
        self._norms: Tensor | None = None  # (T, K, B) float64

    def take(self, start: int, end: int, *components: Tensor) -> None:
        """Norm steps start..end-1 from the state's components, all (T, K, B, H) with
        row t the delta_t a tap would have seen: per sample the norm over the components
        side by side, accumulated in float64 (:func:`bptt.taps.per_sample_norm`)."""
        first = components[0]
        if self._norms is None:
            self._norms = first.new_empty(first.shape[:-1], dtype=torch.float64)
        into = self._norms[start:end]
        if len(components) == 1:
            torch.linalg.vector_norm(first[start:end].double(), dim=-1, out=into)
            return
        parts = [torch.linalg.vector_norm(c[start:end].double(), dim=-1) for c in components]
        torch.sum(torch.stack(parts).square_(), 0, out=into).sqrt_()

    def deliver(self) -> None:
        """Hand each run's RecordNorms its norms (T, B)."""
        assert self._norms is not None, "take() every step first"
        for k, recorder in enumerate(self.recorders):
            recorder.record(self._norms[:, k].contiguous())


def lone_recorders(run: Pass) -> LoneRecorders | None:
    """The pass's :class:`LoneRecorders` where every run's taps are exactly one
    RecordNorms (its type, not a subclass, whose call may do more), else None."""
    if run.taps and all(len(own) == 1 and type(own[0]) is RecordNorms for own in run.taps):
        return LoneRecorders(tuple(own[0] for own in run.taps))  # type: ignore[misc]
    return None


def tanh_via_sigmoid(x: Tensor) -> bool:
    """Whether the loops compute tanh(a) as 2 sigmoid(2a) - 1 for a pass on x, the 2
    folded into the weights' rows: on the CPU in float32 and float64, where torch's tanh
    cost about five sigmoids an element (4,096 float32 on one core, AVX-512: 11.3
    against 2.6 us). Not on a GPU, where the extra operation is one more launch a step,
    nor in bfloat16 or float16, whose 8 and 11 bits the subtraction would cancel.

    The price is accuracy near 0: the identity's error is absolute, a few units in the
    last place of 1 (at most about 3e-7 in float32, 6e-16 in float64), where torch's
    tanh errs by about one unit relative to its result. States of order 1 do not notice;
    in float32 states of order 0.01 come out about 1e-5 off relative (a few 1e-7
    absolute), against about 1e-7 with tanh itself.
    """
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


@overload
def doubled_rows(tensor: Tensor, start: int = 0, end: int | None = None) -> Tensor: ...
@overload
def doubled_rows(tensor: None, start: int = 0, end: int | None = None) -> None: ...
def doubled_rows(tensor: Tensor | None, start: int = 0, end: int | None = None) -> Tensor | None:
    """A copy of a (K, G, ...) weight or (K, G) bias with rows start..end-1 of G doubled
    (the pre-activations that :func:`tanh_via_sigmoid` doubles)."""
    if tensor is None:
        return None
    doubled = tensor.clone()
    doubled[:, start:end] *= 2.0
    return doubled


def run_rows(x: Tensor) -> Tensor:
    """x (K, B, T, F) -> (K, T*B, F), each run's rows ordered by time then sample."""
    k, batch, steps, features = x.shape
    return x.transpose(1, 2).reshape(k, steps * batch, features)


def project_inputs(runs: Runs, x_rows: Tensor, w_ih: Tensor, bias: Tensor | None, out: Tensor):
    """All steps' input projections of all runs into out (T, K, B, G): x W_ih^T + bias;
    x_rows (K, T*B, F), w_ih (K, G, F), bias (K, G) or None."""
    steps, k, batch, width = out.shape
    if k == 1:  # out is contiguous: its rows are those of x
        out_rows = out.view(steps * batch, width)
        if bias is None:
            torch.mm(x_rows[0], w_ih[0].t(), out=out_rows)
        else:
            torch.addmm(bias[0], x_rows[0], w_ih[0].t(), out=out_rows)
        return
    projected = torch.bmm(x_rows, w_ih.transpose(1, 2))  # (K, T*B, G)
    if bias is not None:
        projected.add_(bias.unsqueeze(1))
    out.copy_(projected.view(k, steps, batch, width).transpose(0, 1))


def summed_bias(b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor | None:
    """b_ih + b_hh, or None for a cell without bias."""
    if b_ih is None:
        return None
    assert b_hh is not None  # a cell has both biases or neither
    return b_ih + b_hh


def gru_biases(b_ih: Tensor | None, b_hh: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    """The GRU's biases as its kernels add them, (K, 3H) each in: b_hr and b_hz only add
    to the pre-activation, so they fold into the input side's bias (K, 3H); b_hn sits
    inside r * (W_hn h + b_hn) and is returned apart, (K, H) (a view). None, None for a
    cell without bias."""
    if b_ih is None:
        return None, None
    assert b_hh is not None  # a cell has both biases or neither
    h2 = 2 * (b_hh.shape[-1] // 3)
    bias = b_ih.clone()
    bias[:, :h2] += b_hh[:, :h2]
    return bias, b_hh[:, h2:]


def output_grads(grad_out: Tensor, grad_final: Tensor) -> Tensor:
    """The gradients reaching each step's output, time-major: a new (T, K, B, H) tensor
    from grad_out (K, B, T, H) and the final state's gradient (K, B, H).

    The final state's gradient is added to the last row, which is then delta_{T-1}.
    The backward loop turns row t-1 into delta_{t-1} in place by adding what flows
    back from step t. The buffer is fresh, never pooled: taps may keep the deltas
    they are shown.
    """
    k, batch, steps, hidden = grad_out.shape
    rows = grad_out.new_empty(steps, k, batch, hidden)
    rows.copy_(grad_out.permute(2, 0, 1, 3))
    rows[-1].add_(grad_final)
    return rows


def outputs_of(hs: Tensor) -> Tensor:
    """hs (T+1, K, B, H), hs[0] the start -> the outputs (K, B, T, H), a view."""
    return hs[1:].permute(1, 2, 0, 3)


def first_derivative_only(backward: Callable[..., Any]) -> Callable[..., Any]:
    """A hand-written backward that has no derivative of its own: torch's
    ``once_differentiable``, and a clear error for ``create_graph=True``, which
    ``once_differentiable`` lets through when the incoming gradient is a constant (a
    loss linear in the outputs), treating this backward's result as one: a second
    derivative that would be silently wrong."""
    inner = once_differentiable(backward)

    @functools.wraps(backward)
    def wrapper(ctx: Any, *grads: Any) -> Any:
        if torch.is_grad_enabled():  # backward runs in grad mode only under create_graph
            raise RuntimeError(
                "the fast engine's backward has no derivative of its own (create_graph="
                "True): use bptt.unroll(..., engine='generic'), or run inside "
                "bptt.engine.require_generic"
            )
        return inner(ctx, *grads)

    return wrapper


def start_backward(ctx) -> None:
    """Refuse a second backward: the scratch buffers went back to the workspace."""
    if getattr(ctx, "consumed", False):
        raise RuntimeError(
            "the fast engine supports one backward pass per forward pass (retain_graph is "
            "not supported); use bptt.unroll(..., engine='generic') to backward twice"
        )
    ctx.consumed = True


def release_if_no_backward(ctx, run: Pass, *buffers: Tensor) -> None:
    """Give the scratch buffers back at once when no backward will need them."""
    if not (run.grad_enabled and any(ctx.needs_input_grad)):
        WORKSPACE.give(*buffers)


def weight_grad(needed: bool, runs: Runs, d_rows: Tensor, inputs_rows: Tensor) -> Tensor | None:
    """Each run's gradient of a weight (K, G, F) from its pre-activation gradients
    d_rows (K, N, G) and the rows it multiplied, inputs_rows (K, N, F)."""
    return runs.bmm(d_rows.transpose(1, 2), inputs_rows) if needed else None


# Rows (steps x batch) of pre-activation gradients a ChunkGrads product takes at least:
# enough for the matrix products to run at full speed, few enough to stay in cache.
_GRAD_ROWS = 1024


class ChunkGrads:
    """The gradients that flow through one block of pre-activations to its operand,
    summed a few chunks of the backward at a time, while their rows are still in cache:
    the weight's (d^T operand), the bias's (d summed over rows) and the operand's own
    (d W, the inputs' gradient).

    After the loop these were one pass each over the whole (T, K, B, G) buffer, read
    back from memory (the LSTM's at T = 784, B = 64, H = 64 is 51 MB, and a pass took
    as long as a sixth of the backward loop); this way they read what the loop has
    just written.

    Args:
        runs: the pass's run dimension.
        d: (T, K, B, G), the pre-activations' gradients the backward loop fills.
        operand: (T, K, B, F) time-major: the rows the weight multiplied (the inputs,
            or the states h_{t-1}).
        weight: (K, G, F), for the operand's gradient; None where it is not needed.
        want_weight, want_bias: whether to sum the weight's and the bias's gradients.

    Attributes (after :meth:`finish`):
        weight_grad: (K, G, F), or None.
        bias_grad: (K, G), or None.
        operand_grad: (K, B, T, F) (``unroll``'s layout of the inputs), or None.
    """

    def __init__(
        self,
        runs: Runs,
        d: Tensor,
        operand: Tensor,
        weight: Tensor | None,
        want_weight: bool,
        want_bias: bool,
    ) -> None:
        steps, k, batch, features = operand.shape
        self.runs, self.d, self.operand, self.weight = runs, d, operand, weight
        self.want_weight, self.want_bias = want_weight, want_bias
        self.weight_grad: Tensor | None = None
        self.bias_grad: Tensor | None = None
        self._operand_grad = (  # (K, T, B, F)
            None if weight is None else operand.new_empty(k, steps, batch, features)
        )
        self._pending: tuple[int, int] | None = None  # steps done, not yet summed

    @property
    def operand_grad(self) -> Tensor | None:
        return None if self._operand_grad is None else self._operand_grad.transpose(1, 2)

    def done(self, start: int, end: int) -> None:
        """Steps start..end-1 of d are complete (called in the backward's order: each
        range ends where the one before began)."""
        if self._pending is not None:
            end = self._pending[1]
        self._pending = (start, end)
        if (end - start) * self.d.shape[2] >= _GRAD_ROWS:
            self.finish()

    def finish(self) -> None:
        """Sum the steps still pending (call once the loop is over)."""
        if self._pending is None:
            return
        start, end = self._pending
        self._pending = None
        runs = self.runs
        rows = runs.rows(self.d[start:end])  # (K, C*B, G): a view for K = 1
        if self.want_weight:
            d_t, operand = rows.transpose(1, 2), runs.rows(self.operand[start:end])
            if self.weight_grad is None:
                self.weight_grad = runs.bmm(d_t, operand)
            elif runs.k == 1:
                self.weight_grad[0].addmm_(d_t[0], operand[0])
            else:
                self.weight_grad.baddbmm_(d_t, operand)
        if self.want_bias:
            summed = rows.sum(1)  # (K, G)
            self.bias_grad = summed if self.bias_grad is None else self.bias_grad.add_(summed)
        if self._operand_grad is not None and self.weight is not None:
            grads = runs.bmm(rows, self.weight)  # (K, C*B, F)
            self._operand_grad[:, start:end] = grads.view(runs.k, end - start, -1, grads.shape[-1])


class ChunkWork:
    """What a backward hands over as each chunk of steps is done: the gradient sums of
    its input side and its state side (:class:`ChunkGrads`) and a lone RecordNorms'
    norms (:class:`LoneRecorders`, None where the taps are not that), these taken from
    ``components``, the (T, K, B, H) delta buffers (the LSTM's pair, else one)."""

    def __init__(
        self,
        inputs: ChunkGrads,
        states: ChunkGrads,
        recorders: LoneRecorders | None,
        components: tuple[Tensor, ...],
    ) -> None:
        self.inputs, self.states = inputs, states
        self.recorders, self.components = recorders, components

    def done(self, start: int, end: int) -> None:
        """Steps start..end-1 are complete (in the backward's order)."""
        if self.recorders is not None:
            self.recorders.take(start, end, *self.components)
        self.inputs.done(start, end)
        self.states.done(start, end)

    def finish(self) -> None:
        """After the loop: sum what is pending and hand the norms over."""
        self.inputs.finish()
        self.states.finish()
        if self.recorders is not None:
            self.recorders.deliver()


def time_major(rows: Tensor, batch: int) -> Tensor:
    """(K, T*B, F) rows, time then sample -> the (T, K, B, F) view of them."""
    k, count, features = rows.shape
    return rows.view(k, count // batch, batch, features).transpose(0, 1)


def input_grad(needed: bool, runs: Runs, d_rows: Tensor, w_ih: Tensor, batch: int):
    """dL/dx (K, B, T, F) from each run's (K, T*B, G) pre-activation gradients."""
    if not needed:
        return None
    k, rows, _ = d_rows.shape
    return runs.bmm(d_rows, w_ih).view(k, rows // batch, batch, -1).transpose(1, 2)
