"""Pieces the Triton kernels share: the built-in taps at a step, the activations, the
launch shape.

Every function here but :func:`blocks` is ``@triton.jit``, called from inside a kernel
on one program's tile: the rows of a tile of the batch, every unit of the state.
"""

from __future__ import annotations

import triton
import triton.language as tl

# Compiler options, stated: fused multiply-adds on (Triton 3.9 warns where the default is
# left to it, and the default changes in 3.10).
OPTIONS = {"enable_fp_fusion": True}

# the op codes of bptt._kernels._triton._taps
_RECORD = tl.constexpr(1)
_CLIP_NORM = tl.constexpr(2)
_CLIP_VALUE = tl.constexpr(3)


def blocks(batch: int, hidden: int) -> tuple[int, int, int]:
    """BLOCK_B, BLOCK_H (powers of two, at least 16: the smallest tl.dot) and the number
    of tiles of the batch per run."""
    block_h = max(16, triton.next_power_of_2(hidden))
    block_b = 16 if block_h > 32 else 32
    block_b = min(block_b, max(16, triton.next_power_of_2(batch)))
    return block_b, block_h, triton.cdiv(batch, block_b)


@triton.jit
def row_norms(delta, other, PAIR: tl.constexpr):
    """Each row's Euclidean norm, accumulated in float64: (BLOCK_B,) float64; with
    PAIR, the norm of both tiles side by side (a tuple state's whole gradient)."""
    wide = delta.to(tl.float64)
    total = tl.sum(wide * wide, axis=1)
    if PAIR:
        more = other.to(tl.float64)
        total += tl.sum(more * more, axis=1)
    return tl.sqrt(total)


@triton.jit
def _clamp(delta, bound):
    """delta clamped to [-bound, bound], NaN staying NaN."""
    return tl.where(delta > bound, bound, tl.where(delta < -bound, -bound, delta))


@triton.jit
def apply_taps_pair(
    delta,
    other,
    PAIR: tl.constexpr,
    rows,
    row_ok,
    k,
    t,
    steps,
    batch,
    ops_ptr,
    bounds_ptr,
    slots_ptr,
    n_ops,
    records_ptr,
):
    """delta_t of run k through that run's taps, in list order
    (:mod:`bptt._kernels._triton._taps`): ``delta`` (BLOCK_B, BLOCK_H) and, with PAIR,
    ``other``, the second component of a tuple state's gradient (the LSTM's dL/dc_t),
    the two seen as one gradient as :mod:`bptt.taps` defines it (one norm over both,
    one coefficient for both). Without PAIR ``other`` is ignored and returned as given.
    Padded rows and units hold 0 and stay 0.

    RecordNorms writes each row's float64 norm to its record (R, T, B) at step t.
    ClipNorm scales each row by max_norm / max(norm, max_norm), computed in float64 and
    applied in float32, as :class:`bptt.taps.ClipNorm` does (a NaN norm gives a NaN
    coefficient: clipping never hides a non-finite gradient). ClipValue clamps each
    element to the bound rounded to float32, a NaN staying NaN, as ``Tensor.clamp``.
    """
    for i in range(n_ops):
        at = k * n_ops + i
        op = tl.load(ops_ptr + at)
        if op == _RECORD:
            slot = tl.load(slots_ptr + at).to(tl.int64)
            norms = row_norms(delta, other, PAIR)
            tl.store(records_ptr + (slot * steps + t) * batch + rows, norms, mask=row_ok)
        elif op == _CLIP_NORM:
            bound = tl.load(bounds_ptr + at)
            norms = row_norms(delta, other, PAIR)
            floor = tl.where(norms > bound, norms, bound)
            floor = tl.where(norms != norms, norms, floor)  # NaN stays NaN
            coef = (bound / floor).to(tl.float32)
            delta = delta * coef[:, None]
            if PAIR:
                other = other * coef[:, None]
        elif op == _CLIP_VALUE:
            bound = tl.load(bounds_ptr + at).to(tl.float32)
            delta = _clamp(delta, bound)
            if PAIR:
                other = _clamp(other, bound)
    return delta, other


@triton.jit
def apply_taps(
    delta,
    rows,
    row_ok,
    k,
    t,
    steps,
    batch,
    ops_ptr,
    bounds_ptr,
    slots_ptr,
    n_ops,
    records_ptr,
):
    """delta_t (BLOCK_B, BLOCK_H) of run k through that run's taps: a state of one
    tensor (:func:`apply_taps_pair` without PAIR)."""
    delta, _ = apply_taps_pair(
        delta, delta, False, rows, row_ok, k, t, steps, batch, ops_ptr, bounds_ptr,
        slots_ptr, n_ops, records_ptr,
    )  # fmt: skip
    return delta


@triton.jit
def tanh(a):
    """tanh elementwise: sign(a) (1 - e) / (1 + e), e = exp(-2|a|) <= 1: no overflow,
    and an absolute error of a few float32 ulps of 1 near 0; NaN in, NaN out."""
    e = tl.exp(-2.0 * tl.abs(a))
    magnitude = (1.0 - e) / (1.0 + e)
    return tl.where(a < 0, -magnitude, magnitude)


@triton.jit
def activate(a, b_mod, ACT: tl.constexpr):
    """f(a) elementwise: tanh (ACT 0), ReLU (1) or modReLU (2, with bias b_mod
    (BLOCK_H,)); NaN in, NaN out."""
    if ACT == 0:
        out = tanh(a)
    elif ACT == 1:
        out = tl.where(a < 0, 0.0, a)
    else:
        lifted = tl.abs(a) + b_mod[None, :]
        lifted = tl.where(lifted < 0, 0.0, lifted)
        out = tl.where(a > 0, lifted, tl.where(a < 0, -lifted, 0.0 * lifted))
    return out


@triton.jit
def slope(h, ACT: tl.constexpr):
    """f'(a) from h = f(a): 1 - h^2 for tanh, 1 where h > 0 for ReLU, 1 where h != 0
    for modReLU (its derivative in a)."""
    if ACT == 0:
        out = 1.0 - h * h
    elif ACT == 1:
        out = tl.where(h > 0, 1.0, 0.0)
    else:
        out = tl.where(h != 0, 1.0, 0.0)
    return out


@triton.jit
def sigmoid(a):
    """The logistic function elementwise, from e = exp(-|a|) <= 1: no overflow, and a
    relative error of a few float32 ulps on both sides of 0; NaN in, NaN out."""
    e = tl.exp(-tl.abs(a))
    return tl.where(a < 0, e / (1.0 + e), 1.0 / (1.0 + e))
