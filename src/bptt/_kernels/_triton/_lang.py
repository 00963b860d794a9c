"""Pieces the Triton kernels share: the built-in taps at a step, the activations.

Every function here is ``@triton.jit``, called from inside a kernel on one program's
tile: the rows of a tile of the batch, every unit of the state.
"""

from __future__ import annotations

import triton
import triton.language as tl

# the op codes of bptt._kernels._triton._taps
_RECORD = tl.constexpr(1)
_CLIP_NORM = tl.constexpr(2)
_CLIP_VALUE = tl.constexpr(3)


@triton.jit
def row_norms(delta):
    """Each row's Euclidean norm, accumulated in float64: (BLOCK_B,) float64."""
    wide = delta.to(tl.float64)
    return tl.sqrt(tl.sum(wide * wide, axis=1))


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
    """delta_t (BLOCK_B, BLOCK_H) of run k through that run's taps, in list order
    (:mod:`bptt._kernels._triton._taps`); padded rows and units hold 0 and stay 0.

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
            norms = row_norms(delta)
            tl.store(records_ptr + (slot * steps + t) * batch + rows, norms, mask=row_ok)
        elif op == _CLIP_NORM:
            bound = tl.load(bounds_ptr + at)
            norms = row_norms(delta)
            floor = tl.where(norms > bound, norms, bound)
            floor = tl.where(norms != norms, norms, floor)  # NaN stays NaN
            coef = (bound / floor).to(tl.float32)
            delta = delta * coef[:, None]
        elif op == _CLIP_VALUE:
            bound = tl.load(bounds_ptr + at).to(tl.float32)
            delta = tl.where(delta > bound, bound, tl.where(delta < -bound, -bound, delta))
    return delta


@triton.jit
def activate(a, b_mod, ACT: tl.constexpr):
    """f(a) elementwise: tanh (ACT 0), ReLU (1) or modReLU (2, with bias b_mod
    (BLOCK_H,)); NaN in, NaN out."""
    if ACT == 0:
        # tanh(a) = sign(a) (1 - e) / (1 + e), e = exp(-2|a|) <= 1: no overflow, and an
        # absolute error of a few float32 ulps of 1 near 0.
        e = tl.exp(-2.0 * tl.abs(a))
        magnitude = (1.0 - e) / (1.0 + e)
        out = tl.where(a < 0, -magnitude, magnitude)
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
