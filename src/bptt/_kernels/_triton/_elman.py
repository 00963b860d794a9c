"""The Elman RNN in Triton: forward and backward over the whole sequence, one launch each.

Each program takes one run k and one tile of BLOCK_B samples, holds that run's
recurrent weight (H, H) on chip and walks over all T steps. Forward: hs[t + 1], which
holds step t's input projection, becomes f(hs[t + 1] + h_t W_hh^T). Backward, from
t = T-1 down to 0: delta_t = g_t + dL/da_{t+1} W_hh (g_t the gradient reaching the
output of step t, the final state's added to the last), through the taps, then dL/da_t
= f'(a_t) delta_t, stored for the weight gradients.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from bptt._kernels._common import (
    Pass,
    Runs,
    first_derivative_only,
    input_grad,
    output_grads,
    outputs_of,
    project_inputs,
    run_rows,
    start_backward,
    summed_bias,
    weight_grad,
)
from bptt._kernels._triton._lang import OPTIONS, activate, apply_taps, blocks, slope
from bptt._kernels._triton._taps import encode

# Whether these kernels were defined for Triton's interpreter (TRITON_INTERPRET=1).
INTERPRETED = bool(triton.knobs.runtime.interpret)

_ACTIVATIONS = {"tanh": 0, "relu": 1, "modrelu": 2}


@triton.jit
def _forward(
    hs_ptr,
    w_ptr,
    b_mod_ptr,
    steps,
    runs,
    batch,
    hidden,
    ACT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """hs (T+1, K, B, H): row 0 the start, rows 1.. the input projections, made states
    in place; w (K, H, H); b_mod (K, H)."""
    k = tl.program_id(0)
    k64 = k.to(tl.int64)  # offsets in int64: T K B H elements may pass 2^31
    rows = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    units = tl.arange(0, BLOCK_H)
    row_ok, unit_ok = rows < batch, units < hidden
    ok = row_ok[:, None] & unit_ok[None, :]
    # w_t[j, i] = W[k, i, j]: h (B, H) @ w_t is h W^T
    w_at = k64 * hidden * hidden + units[None, :] * hidden + units[:, None]
    w_t = tl.load(w_ptr + w_at, mask=unit_ok[:, None] & unit_ok[None, :], other=0.0)
    b_mod = tl.load(b_mod_ptr + k * hidden + units, mask=unit_ok, other=0.0)
    # elements per step; k64 * 0 makes it int64 even where Triton passes runs = 1 as a
    # constant
    step = (k64 * 0 + runs) * batch * hidden
    here = k64 * batch * hidden + rows[:, None] * hidden + units[None, :]
    h = tl.load(hs_ptr + here, mask=ok, other=0.0)
    for t in range(steps):
        at = hs_ptr + (t + 1) * step + here
        a = tl.load(at, mask=ok, other=0.0) + tl.dot(h, w_t, input_precision="ieee")
        h = tl.where(ok, activate(a, b_mod, ACT), 0.0)
        tl.store(at, h, mask=ok)


@triton.jit
def _backward(
    g_ptr,
    hs_ptr,
    w_ptr,
    d_ptr,
    grad_h0_ptr,
    ops_ptr,
    bounds_ptr,
    slots_ptr,
    n_ops,
    records_ptr,
    steps,
    runs,
    batch,
    hidden,
    ACT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """g (T, K, B, H) the gradients reaching the outputs; hs (T+1, K, B, H); w (K, H, H)
    -> d (T, K, B, H) dL/da_t, grad_h0 (K, B, H); the taps' records (R, T, B)."""
    k = tl.program_id(0)
    k64 = k.to(tl.int64)  # offsets in int64: T K B H elements may pass 2^31
    rows = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    units = tl.arange(0, BLOCK_H)
    row_ok, unit_ok = rows < batch, units < hidden
    ok = row_ok[:, None] & unit_ok[None, :]
    # w[i, j] = W[k, i, j]: d_a (B, H) @ w is what reaches h_{t-1}
    w_at = k64 * hidden * hidden + units[:, None] * hidden + units[None, :]
    w = tl.load(w_ptr + w_at, mask=unit_ok[:, None] & unit_ok[None, :], other=0.0)
    step = (k64 * 0 + runs) * batch * hidden  # as in _forward
    here = k64 * batch * hidden + rows[:, None] * hidden + units[None, :]
    carry = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    for s in range(steps):
        t = steps - 1 - s
        at = t * step + here
        delta = tl.where(ok, tl.load(g_ptr + at, mask=ok, other=0.0) + carry, 0.0)
        delta = apply_taps(
            delta, rows, row_ok, k, t, steps, batch, ops_ptr, bounds_ptr, slots_ptr, n_ops,
            records_ptr,
        )  # fmt: skip
        h = tl.load(hs_ptr + step + at, mask=ok, other=0.0)
        d_a = delta * slope(h, ACT)
        tl.store(d_ptr + at, d_a, mask=ok)
        carry = tl.dot(d_a, w, input_precision="ieee")
    tl.store(grad_h0_ptr + here, carry, mask=ok)


class TritonRNNSequence(torch.autograd.Function):
    """:class:`bptt._kernels._elman.RNNSequence` with the recurrence in two Triton
    kernels: the same arguments, layout and results.

    forward(x (K, B, T, F), h0 (K, B, H), run, activation, W_ih (K, H, F), W_hh (K, H, H),
    b_ih (K, H), b_hh (K, H), b_mod (K, H)) -> (outputs (K, B, T, H), h_T (K, B, H));
    every per-run tensor without its K for a run that is not ``run.stacked``; biases
    may be None. float32; the taps of ``run`` only RecordNorms, ClipNorm, ClipValue
    (:func:`bptt._kernels._triton.refusal`).
    """

    @staticmethod
    def forward(ctx, x, h0, run: Pass, activation: str, w_ih, w_hh, b_ih, b_hh, b_mod=None):
        x, h0, w_ih, w_hh = run.lead(x), run.lead(h0), run.lead(w_ih), run.lead(w_hh)
        b_ih, b_hh, b_mod = run.lead(b_ih), run.lead(b_hh), run.lead(b_mod)
        k, batch, steps, _ = x.shape
        runs, hidden = Runs(k), w_hh.shape[1]
        x_rows = run_rows(x)  # (K, T*B, F)
        hs = x.new_empty(steps + 1, k, batch, hidden)  # (T+1, K, B, H)
        hs[0] = h0
        project_inputs(runs, x_rows, w_ih, summed_bias(b_ih, b_hh), out=hs[1:])
        w_hh = w_hh.detach().contiguous()  # (K, H, H)
        b_mod = hs.new_zeros(k, hidden) if b_mod is None else b_mod.detach().contiguous()
        block_b, block_h, tiles = blocks(batch, hidden)
        act = _ACTIVATIONS[activation]
        _forward[(k, tiles)](
            hs, w_hh, b_mod, steps, k, batch, hidden,
            ACT=act, BLOCK_B=block_b, BLOCK_H=block_h, **OPTIONS,
        )  # fmt: skip
        ctx.save_for_backward(x_rows, w_ih, w_hh, hs)
        ctx.run, ctx.activation = run, activation
        return run.unlead(outputs_of(hs)), run.unlead(hs[steps].clone())

    @staticmethod
    @first_derivative_only
    def backward(ctx, grad_out: Tensor, grad_final: Tensor):
        start_backward(ctx)
        x_rows, w_ih, w_hh, hs = ctx.saved_tensors
        run: Pass = ctx.run
        steps, (k, batch, hidden) = hs.shape[0] - 1, hs.shape[1:]
        runs = Runs(k)
        deltas = output_grads(run.lead(grad_out), run.lead(grad_final))  # (T, K, B, H)
        d_pre = torch.empty_like(deltas)  # dL/da_t
        grad_h0 = hs.new_empty(k, batch, hidden)
        program = encode(run.taps, steps, batch, hs.device)
        block_b, block_h, tiles = blocks(batch, hidden)
        _backward[(k, tiles)](
            deltas, hs, w_hh, d_pre, grad_h0,
            program.ops, program.bounds, program.slots, program.width, program.records,
            steps, k, batch, hidden,
            ACT=_ACTIVATIONS[ctx.activation], BLOCK_B=block_b, BLOCK_H=block_h, **OPTIONS,
        )  # fmt: skip
        program.deliver()
        needs = ctx.needs_input_grad
        d_rows = runs.rows(d_pre)  # (K, T*B, H)
        grad_w_ih = weight_grad(needs[4], runs, d_rows, x_rows)
        grad_w_hh = weight_grad(needs[5], runs, d_rows, runs.rows(hs[:-1]))
        grad_b = d_rows.sum(1) if needs[6] or needs[7] else None
        grad_x = input_grad(needs[0], runs, d_rows, w_ih, batch)
        grad_b_mod = None
        if ctx.activation == "modrelu" and needs[8]:  # dL/db = sum over t of dL/da_t sign(h_t)
            grad_b_mod = (d_rows * runs.rows(hs[1:]).sign()).sum(1)
        grad_b_hh = None if grad_b is None else grad_b.clone()  # never alias two .grad
        grads = (grad_x, grad_h0 if needs[1] else None, grad_w_ih, grad_w_hh, grad_b, grad_b_hh)
        grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b, grad_b_hh, grad_b_mod = map(
            run.unlead, (*grads, grad_b_mod)
        )
        return grad_x, grad_h0, None, None, grad_w_ih, grad_w_hh, grad_b, grad_b_hh, grad_b_mod


FUNCTION = TritonRNNSequence
