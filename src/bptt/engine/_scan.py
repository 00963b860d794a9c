"""A parallel scan over time for diagonal linear recurrences (the LRU).

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from bptt.taps import apply_taps

__all__ = ["LinearScan", "linear_scan"]


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
