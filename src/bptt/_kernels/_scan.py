"""A parallel scan over time for diagonal linear recurrences (the LRU, minGRU, minLSTM).

h_t = lambda * h_{t-1} + b_t with a constant complex lambda per unit is an associative
scan. PyTorch has no scan primitive (pytorch #50688, #95408), so :func:`linear_scan`
is written with plain tensor operations, chunked: about 2 sqrt(T) vectorised
operations and two passes over the data instead of T small steps, a log-depth scan
across the chunks, and memory O(B T N).

Backward is the same recurrence run backwards with conj(lambda): the total
hidden-state gradient delta_t = g_t + conj(lambda) * delta_{t+1}. Without taps it is
a reverse scan. With taps each delta_t must pass through them before it flows to
step t-1 (a clipping tap makes the recursion nonlinear), so it runs as a loop over the
steps, each an elementwise complex product: the tap contract of every other engine.

The min cells (:class:`bptt.cells.MinGRUCell`, :class:`bptt.cells.MinLSTMCell`) have a
coefficient that changes with the step, h_t = a_t * h_{t-1} + b_t, a_t in (0, 1) and
b_t > 0 given as logarithms: :func:`log_linear_scan` is the log-space scan of Feng et
al. 2024 (chunked as above), :class:`GatedLogScan` its autograd Function, whose backward is
the same recurrence run backwards in plain space (the gradients have either sign).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from bptt._kernels._common import first_derivative_only
from bptt._kernels._kernel import Kernel, State, Taps
from bptt.taps import apply_taps

__all__ = [
    "DEEP_LRU",
    "GATED_LOG_SCAN",
    "LRU",
    "GatedLogScan",
    "LinearScan",
    "gated_scan_reverse",
    "linear_scan",
    "log_linear_scan",
]


def linear_scan(
    lam: Tensor, drive: Tensor, h0: Tensor | None = None, *, reverse: bool = False
) -> Tensor:
    """h_t = lam * h_{t-1} + drive_t for every t, by a chunked scan (no autograd).

    The T steps are cut into K chunks of C (about sqrt(T) each). Within the chunks, a
    loop over the C positions advances all K chunks at once (each iteration one
    elementwise product over (B, K, N)); then the chunks' last states are carried
    across chunks by a log-depth scan over K; then each chunk adds lam^(i+1) times the
    carry it starts from, in one pass. About two passes over the data and 2 sqrt(T)
    small operations, where a plain log-depth (Hillis-Steele) scan makes log2(T) passes,
    each allocating a temporary as large as the sequence: on the CPU that version was
    memory-bound (T=4000, B=32, N=128: 5.2 s a training step).

    Args:
        lam: (N,) complex, the same at every step.
        drive: (B, T, N) complex.
        h0: (B, N) complex state before the first step (None: zeros).
        reverse: run from the last step to the first (h_t = lam * h_{t+1} + drive_t,
            h0 after the last step): the backward pass's recurrence.

    Returns:
        (B, T, N) complex.
    """
    batch, steps, units = drive.shape
    chunk = max(1, math.isqrt(steps))
    count = -(-steps // chunk)  # K chunks; the last one padded
    h = drive.new_empty(batch, count * chunk, units)
    h[:, :steps] = drive
    h[:, steps:] = 0  # zero drive beyond T (the padding's states are dropped)
    blocks = h.view(batch, count, chunk, units)
    if reverse:  # the same, mirrored: positions run from the end of each chunk
        if h0 is not None:
            h[:, steps - 1] += lam * h0
        for i in range(chunk - 2, -1, -1):
            blocks[:, :, i] += lam * blocks[:, :, i + 1]
        starts = blocks[:, :, 0]
    else:
        if h0 is not None:
            h[:, 0] += lam * h0
        for i in range(1, chunk):  # within every chunk at once
            blocks[:, :, i] += lam * blocks[:, :, i - 1]
        starts = blocks[:, :, -1]
    if count > 1:
        carry = starts.flip(1) if reverse else starts.clone()  # (B, K, N), zero starts
        power, offset = lam**chunk, 1
        while offset < count:  # carried across chunks, log2(K) passes over (B, K, N)
            carry[:, offset:] = carry[:, offset:] + power * carry[:, :-offset]
            power, offset = power * power, offset * 2
        exponents = torch.arange(1, chunk + 1, device=lam.device).unsqueeze(1)  # (C, 1)
        if reverse:
            # chunk k (from the front) receives lam^(C - i) times the carry of chunk k + 1
            powers = lam ** exponents.flip(0)
            blocks[:, :-1] += powers * carry.flip(1)[:, 1:].unsqueeze(2)
        else:
            blocks[:, 1:] += lam**exponents * carry[:, :-1].unsqueeze(2)
    return h[:, :steps]


def _complex(real: Tensor) -> Tensor:
    """(..., 2N) real, Re and Im interleaved -> (..., N) complex (a view)."""
    return torch.view_as_complex(real.reshape(*real.shape[:-1], -1, 2))


def _real(values: Tensor) -> Tensor:
    """(..., N) complex -> (..., 2N) real, Re and Im interleaved (a view)."""
    return torch.view_as_real(values).flatten(-2)


class LinearScan(torch.autograd.Function):
    """states = scan(lambda, drive, h0) on real interleaved tensors, taps in backward.

    Inputs: lam_re, lam_im (N,); drive (B, T, 2N); h0 (B, 2N); taps. Output: the
    states (B, T, 2N).
    """

    @staticmethod
    def forward(ctx, lam_re, lam_im, drive, h0, taps: Sequence):
        lam = torch.complex(lam_re, lam_im)
        states = _real(linear_scan(lam, _complex(drive.contiguous()), _complex(h0.contiguous())))
        ctx.taps = taps
        ctx.save_for_backward(lam_re, lam_im, h0, states)
        return states

    @staticmethod
    @first_derivative_only
    def backward(ctx, grad_states):
        lam_re, lam_im, h0, states = ctx.saved_tensors
        back = torch.complex(lam_re, -lam_im)  # conj(lambda): the adjoint of the step
        g = _complex(grad_states.contiguous())
        if ctx.taps:
            deltas = torch.empty_like(g)
            carry = torch.zeros_like(g[:, 0])
            for t in range(g.shape[1] - 1, -1, -1):
                tapped = apply_taps(ctx.taps, t, _real(g[:, t] + carry))
                deltas[:, t] = _complex(tapped.contiguous())
                carry = back * deltas[:, t]
        else:
            deltas = linear_scan(back, g, reverse=True)
        h = _complex(states)
        start = _complex(h0.contiguous())
        grad_lam = (deltas[:, 1:] * h[:, :-1].conj()).sum((0, 1))
        grad_lam += (deltas[:, 0] * start.conj()).sum(0)
        grad_h0 = _real(back * deltas[:, 0])
        return grad_lam.real, grad_lam.imag, _real(deltas), grad_h0, None


def log_linear_scan(log_a: Tensor, log_b: Tensor, h0: Tensor | None = None) -> Tensor:
    """h_t = exp(log_a_t) * h_{t-1} + exp(log_b_t) for every t, in log space (no autograd).

    The log-space scan of Feng et al. 2024 (appendix B): log h_t =
    logaddexp(log a_t + log h_{t-1}, log b_t), never forming a_t or b_t. The paper's
    code evaluates it over the whole sequence in Heinsen's closed form, a*_t = cumsum
    log a, log h_t = a*_t + logcumsumexp(log b - a*)_t; that loses about
    eps * |a*_t| of relative precision (a*_t and the logcumsumexp are large and of
    opposite sign), measured in float32 at 1.1e-4 (T=1000) to 2.5e-3 (T=10^4, strongly
    forgetting gates), and torch's CPU ``logcumsumexp`` is slow (27 ns an element). So
    here the T steps are cut into K chunks of C (about sqrt(T) each): within the chunks
    the log-space recurrence runs position by position, all K chunks at once (C
    ``logaddexp`` over (B, K, N)); the chunks' last states, and the start h0, are then
    carried from chunk to chunk in plain space (h0 may have any sign there, where log
    space needs h > 0), each chunk adding exp(cumsum log a) times the state it starts
    from. Measured in float32 against float64: a relative error of 3e-7 (T=1000) to
    2.6e-6 (T=10^4, sum log a = -3e4) where the whole-sequence form has 1.1e-4 to
    2.5e-3; in float64 both are within 5e-12. The logaddexp loop costs C small
    operations where logcumsumexp costs one slow one: 0.03 s against 0.11 s for
    (32, 1000, 128) on one CPU thread.

    Args:
        log_a: (B, T, N), log of the coefficients (finite).
        log_b: (B, T, N), log of the drive b_t > 0 (finite).
        h0: (B, N) state before the first step, any sign (None: zeros).

    Returns:
        (B, T, N): the states after each step.
    """
    batch, steps, units = log_a.shape
    chunk = max(1, math.isqrt(steps))
    count = -(-steps // chunk)  # K chunks; the last one padded (its extra states dropped)
    pad = count * chunk - steps
    if pad:
        log_a = torch.cat([log_a, log_a.new_zeros(batch, pad, units)], 1)
        log_b = torch.cat([log_b, log_b.new_zeros(batch, pad, units)], 1)
    la = log_a.reshape(batch, count, chunk, units)
    blocks = log_b.reshape(batch, count, chunk, units).clone()  # (B, K, C, N): log h
    for i in range(1, chunk):  # within every chunk at once, from a zero start
        torch.logaddexp(la[:, :, i] + blocks[:, :, i - 1], blocks[:, :, i], out=blocks[:, :, i])
    blocks.exp_()
    decay = la.cumsum(2).exp_()  # prod of a within the chunk up to each position
    carry = h0
    for k in range(count):  # the state each chunk starts from, carried in plain space
        if carry is not None:
            blocks[:, k] += decay[:, k] * carry.unsqueeze(1)
        carry = blocks[:, k, -1]
    return blocks.reshape(batch, count * chunk, units)[:, :steps]


def gated_scan_reverse(coeff: Tensor, drive: Tensor) -> Tensor:
    """d_t = drive_t + coeff_t * d_{t+1} from the last step to the first (d_T = 0), in
    plain space, chunked as :func:`linear_scan` (no autograd): the backward pass of a
    recurrence with coefficients that change with the step.

    Args:
        coeff: (B, T, N), real; coeff_t multiplies d_{t+1} (the last one is unused).
        drive: (B, T, N), real, any sign.

    Returns:
        (B, T, N).
    """
    batch, steps, units = drive.shape
    chunk = max(1, math.isqrt(steps))
    count = -(-steps // chunk)
    d = drive.new_zeros(batch, count * chunk, units)
    c = coeff.new_zeros(batch, count * chunk, units)  # zero beyond T: nothing comes back
    d[:, :steps], c[:, :steps] = drive, coeff
    blocks, gains = d.view(batch, count, chunk, units), c.view(batch, count, chunk, units)
    reach = torch.empty_like(gains)  # prod of coeff from each position to the chunk's end
    reach[:, :, -1] = gains[:, :, -1]
    for i in range(chunk - 2, -1, -1):  # within every chunk at once
        blocks[:, :, i] += gains[:, :, i] * blocks[:, :, i + 1]
        torch.mul(gains[:, :, i], reach[:, :, i + 1], out=reach[:, :, i])
    for k in range(count - 2, -1, -1):  # each chunk receives the next one's first value
        blocks[:, k] += reach[:, k] * blocks[:, k + 1, 0].unsqueeze(1)
    return d[:, :steps]


class GatedLogScan(torch.autograd.Function):
    """states = scan(a, b, h0) with h_t = a_t h_{t-1} + b_t, from log a and log b, taps
    in backward.

    Inputs: log_a, log_b (B, T, N); h0 (B, N), any sign; taps. Output: the states
    (B, T, N). Backward: delta_t = tap(t, g_t + a_{t+1} delta_{t+1}), dL/dlog a_t =
    delta_t a_t h_{t-1}, dL/dlog b_t = delta_t b_t, dL/dh0 = a_1 delta_1: without taps
    a reverse scan (:func:`gated_scan_reverse`), with taps a loop over the steps.
    """

    @staticmethod
    def forward(ctx, log_a, log_b, h0, taps: Sequence):
        states = log_linear_scan(log_a, log_b, h0)
        ctx.taps = taps
        ctx.save_for_backward(log_a, log_b, h0, states)
        return states

    @staticmethod
    @first_derivative_only  # a second derivative: bptt.unroll(..., engine="generic")
    def backward(ctx, grad_states):
        log_a, log_b, h0, states = ctx.saved_tensors
        a = log_a.exp()  # (B, T, N)
        if ctx.taps:
            deltas = torch.empty_like(grad_states)
            carry = torch.zeros_like(grad_states[:, 0])
            for t in range(grad_states.shape[1] - 1, -1, -1):
                deltas[:, t] = apply_taps(ctx.taps, t, grad_states[:, t] + carry)
                carry = a[:, t] * deltas[:, t]
        else:
            deltas = gated_scan_reverse(torch.cat([a[:, 1:], a[:, :1] * 0], 1), grad_states)
        before = torch.cat([h0.unsqueeze(1), states[:, :-1]], 1)  # h_{t-1}: (B, T, N)
        grad_log_a = deltas * a * before
        grad_log_b = deltas * log_b.exp()
        return grad_log_a, grad_log_b, a[:, 0] * deltas[:, 0], None


def scan_unit(unit: Any, z: Tensor, start: Tensor, taps: Taps = ()) -> Tensor:
    """One LRU's states (B, T, 2N) over the inputs z (B, T, F) by its scan."""
    lam_re, lam_im = unit.eigenvalues()
    return LinearScan.apply(lam_re, lam_im, unit.input_drive(z), start, taps)


class LRUKernel(Kernel):
    """The LRU by a parallel scan: the drive of every step in one matmul, the states by
    a log-depth scan, the outputs in one matmul (of the last step alone with
    ``last_only``: the readout Re(C h) is then no longer a (B T, 2N) x (2N, H) product);
    taps in the scan's backward. For a cell with ``eigenvalues()``, ``input_drive(x)``
    and ``output(states)``."""

    def run(self, cell: Any, x: Tensor, state: State, taps: Taps, last_only: bool):
        states = scan_unit(cell, x, state, taps)  # type: ignore[arg-type]
        return cell.output(states[:, -1:] if last_only else states), states[:, -1]


class DeepLRUKernel(Kernel):
    """The stacked LRU layer by layer (``cell.run_layers``), each LRU by its scan (the
    last layer's readout and mixing at the last step alone with ``last_only``). Taps
    see the whole state of a step (every layer's) at once, which only a step-by-step
    run has: with taps it does not apply (None), and the engine runs step by step."""

    def run(self, cell: Any, x: Tensor, state: State, taps: Taps, last_only: bool):
        if taps:
            return None
        return cell.run_layers(x, state, scan_unit, last_only=last_only)


class GatedLogScanKernel(Kernel):
    """minGRU and minLSTM by the paper's log-space scan: log a_t and log b_t of every
    step in one matmul (``cell.log_coefficients(x)``), the states by a chunked
    log-space scan, taps in its backward (dL/dh_{t-1} = a_t dL/dh_t, a loop; without
    taps a reverse scan)."""

    def run(self, cell: Any, x: Tensor, state: State, taps: Taps, last_only: bool):
        log_a, log_b = cell.log_coefficients(x)  # (B, T, H) each
        states = GatedLogScan.apply(log_a, log_b, state, taps)
        return (states[:, -1:] if last_only else states), states[:, -1]


LRU = LRUKernel()
DEEP_LRU = DeepLRUKernel()
GATED_LOG_SCAN = GatedLogScanKernel()
