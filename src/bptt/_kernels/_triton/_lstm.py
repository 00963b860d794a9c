"""The LSTM in Triton: forward and backward over the whole sequence, one launch each.

Each program takes one run k and one tile of BLOCK_B samples, holds that run's
recurrent weight (4H, H) on chip as four (H, H) blocks, one per gate in torch's order
(i, f, g, o), and walks over all T steps. Forward: gates[t], which holds step t's input
projection, becomes the activated gates (i, f, g, o) of a_t = gates[t] + h_{t-1} W_hh^T;
then c_t = f c_{t-1} + i g and h_t = o tanh(c_t). Backward, from t = T-1 down to 0: the
state's gradient (delta_h, delta_c) = (g_t + dL/da_{t+1} W_hh, dL/dc_t from step t+1)
(g_t the gradient reaching the output of step t, the final state's added to the
last), through the taps as one gradient (:mod:`bptt.taps`: the path h_t = o tanh(c_t)
is added after them), then dL/da_t, stored for the weight gradients, and
dL/dc_{t-1} = f dL/dc_t.
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
from bptt._kernels._triton._lang import OPTIONS, apply_taps_pair, blocks, sigmoid, tanh
from bptt._kernels._triton._taps import encode

# Whether these kernels were defined for Triton's interpreter (TRITON_INTERPRET=1).
INTERPRETED = bool(triton.knobs.runtime.interpret)


@triton.jit
def _forward(
    gates_ptr,
    hs_ptr,
    cs_ptr,
    w_ptr,
    steps,
    runs,
    batch,
    hidden,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """gates (T, K, B, 4H): the input projections, made the activated gates (i, f, g, o)
    in place; hs and cs (T+1, K, B, H): row 0 the start, rows 1.. written; w (K, 4H, H)."""
    k = tl.program_id(0)
    k64 = k.to(tl.int64)  # offsets in int64: T K B 4H elements may pass 2^31
    rows = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    units = tl.arange(0, BLOCK_H)
    row_ok, unit_ok = rows < batch, units < hidden
    ok = row_ok[:, None] & unit_ok[None, :]
    square_ok = unit_ok[:, None] & unit_ok[None, :]
    # w_x[j, u] = W[k, x H + u, j] for gate x: h (B, H) @ w_x is h W_x^T
    w_at = k64 * 4 * hidden * hidden + units[None, :] * hidden + units[:, None]
    gate = hidden * hidden  # elements of one gate's block
    w_i = tl.load(w_ptr + w_at, mask=square_ok, other=0.0)
    w_f = tl.load(w_ptr + w_at + gate, mask=square_ok, other=0.0)
    w_g = tl.load(w_ptr + w_at + 2 * gate, mask=square_ok, other=0.0)
    w_o = tl.load(w_ptr + w_at + 3 * gate, mask=square_ok, other=0.0)
    # elements per step; k64 * 0 makes it int64 even where Triton passes runs = 1 as a
    # constant
    step = (k64 * 0 + runs) * batch * hidden
    here = k64 * batch * hidden + rows[:, None] * hidden + units[None, :]
    here4 = k64 * batch * 4 * hidden + rows[:, None] * 4 * hidden + units[None, :]
    h = tl.load(hs_ptr + here, mask=ok, other=0.0)
    c = tl.load(cs_ptr + here, mask=ok, other=0.0)
    for t in range(steps):
        at = gates_ptr + t * 4 * step + here4
        i = sigmoid(tl.load(at, mask=ok, other=0.0) + tl.dot(h, w_i, input_precision="ieee"))
        a_f = tl.load(at + hidden, mask=ok, other=0.0)
        f = sigmoid(a_f + tl.dot(h, w_f, input_precision="ieee"))
        a_g = tl.load(at + 2 * hidden, mask=ok, other=0.0)
        g = tanh(a_g + tl.dot(h, w_g, input_precision="ieee"))
        a_o = tl.load(at + 3 * hidden, mask=ok, other=0.0)
        o = sigmoid(a_o + tl.dot(h, w_o, input_precision="ieee"))
        c = tl.where(ok, f * c + i * g, 0.0)
        h = tl.where(ok, o * tanh(c), 0.0)
        tl.store(at, i, mask=ok)
        tl.store(at + hidden, f, mask=ok)
        tl.store(at + 2 * hidden, g, mask=ok)
        tl.store(at + 3 * hidden, o, mask=ok)
        tl.store(hs_ptr + (t + 1) * step + here, h, mask=ok)
        tl.store(cs_ptr + (t + 1) * step + here, c, mask=ok)


@triton.jit
def _backward(
    g_ptr,
    grad_c_ptr,
    gates_ptr,
    cs_ptr,
    w_ptr,
    d_ptr,
    grad_h0_ptr,
    grad_c0_ptr,
    ops_ptr,
    bounds_ptr,
    slots_ptr,
    n_ops,
    records_ptr,
    steps,
    runs,
    batch,
    hidden,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """g (T, K, B, H) the gradients reaching the outputs h_t; grad_c (K, B, H) the final
    cell state's; gates (T, K, B, 4H) activated; cs (T+1, K, B, H); w (K, 4H, H)
    -> d (T, K, B, 4H) dL/da_t, grad_h0 and grad_c0 (K, B, H); the taps' records
    (R, T, B)."""
    k = tl.program_id(0)
    k64 = k.to(tl.int64)  # offsets in int64: T K B 4H elements may pass 2^31
    rows = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    units = tl.arange(0, BLOCK_H)
    row_ok, unit_ok = rows < batch, units < hidden
    ok = row_ok[:, None] & unit_ok[None, :]
    square_ok = unit_ok[:, None] & unit_ok[None, :]
    # w_x[u, j] = W[k, x H + u, j]: d_x (B, H) @ w_x is what gate x sends to h_{t-1}
    w_at = k64 * 4 * hidden * hidden + units[:, None] * hidden + units[None, :]
    gate = hidden * hidden
    w_i = tl.load(w_ptr + w_at, mask=square_ok, other=0.0)
    w_f = tl.load(w_ptr + w_at + gate, mask=square_ok, other=0.0)
    w_g = tl.load(w_ptr + w_at + 2 * gate, mask=square_ok, other=0.0)
    w_o = tl.load(w_ptr + w_at + 3 * gate, mask=square_ok, other=0.0)
    step = (k64 * 0 + runs) * batch * hidden  # as in _forward
    here = k64 * batch * hidden + rows[:, None] * hidden + units[None, :]
    here4 = k64 * batch * 4 * hidden + rows[:, None] * 4 * hidden + units[None, :]
    carry_h = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    carry_c = tl.load(grad_c_ptr + here, mask=ok, other=0.0)
    for s in range(steps):
        t = steps - 1 - s
        at = t * step + here
        delta_h = tl.where(ok, tl.load(g_ptr + at, mask=ok, other=0.0) + carry_h, 0.0)
        delta_c = tl.where(ok, carry_c, 0.0)
        delta_h, delta_c = apply_taps_pair(
            delta_h, delta_c, True, rows, row_ok, k, t, steps, batch, ops_ptr, bounds_ptr,
            slots_ptr, n_ops, records_ptr,
        )  # fmt: skip
        c_prev = tl.load(cs_ptr + at, mask=ok, other=0.0)
        tc = tanh(tl.load(cs_ptr + step + at, mask=ok, other=0.0))
        gate_at = gates_ptr + t * 4 * step + here4
        i = tl.load(gate_at, mask=ok, other=0.0)
        f = tl.load(gate_at + hidden, mask=ok, other=0.0)
        g = tl.load(gate_at + 2 * hidden, mask=ok, other=0.0)
        o = tl.load(gate_at + 3 * hidden, mask=ok, other=0.0)
        dc = delta_c + delta_h * (o * (1.0 - tc * tc))  # the whole dL/dc_t
        d_i = dc * (g * (i - i * i))
        d_f = dc * (c_prev * (f - f * f))
        d_g = dc * (i * (1.0 - g * g))
        d_o = delta_h * (tc * (o - o * o))
        d_at = d_ptr + t * 4 * step + here4
        tl.store(d_at, d_i, mask=ok)
        tl.store(d_at + hidden, d_f, mask=ok)
        tl.store(d_at + 2 * hidden, d_g, mask=ok)
        tl.store(d_at + 3 * hidden, d_o, mask=ok)
        carry_h = tl.dot(d_i, w_i, input_precision="ieee")
        carry_h = tl.dot(d_f, w_f, carry_h, input_precision="ieee")
        carry_h = tl.dot(d_g, w_g, carry_h, input_precision="ieee")
        carry_h = tl.dot(d_o, w_o, carry_h, input_precision="ieee")
        carry_c = dc * f
    tl.store(grad_h0_ptr + here, carry_h, mask=ok)
    tl.store(grad_c0_ptr + here, carry_c, mask=ok)


class TritonLSTMSequence(torch.autograd.Function):
    """:class:`bptt._kernels._lstm.LSTMSequence` with the recurrence in two Triton
    kernels: the same arguments, layout and results.

    forward(x (K, B, T, F), h0 (K, B, H), c0 (K, B, H), run, W_ih (K, 4H, F),
    W_hh (K, 4H, H), b_ih (K, 4H), b_hh (K, 4H)) -> (outputs (K, B, T, H), h_T (K, B, H),
    c_T (K, B, H)); every per-run tensor without its K for a run that is not
    ``run.stacked``; the biases may be None. float32; the taps of ``run`` only
    RecordNorms, ClipNorm, ClipValue (:func:`bptt._kernels._triton.refusal`), each
    seeing the pair (dL/dh_t, dL/dc_t) as :mod:`bptt.taps` defines it.
    """

    @staticmethod
    def forward(ctx, x, h0, c0, run: Pass, w_ih, w_hh, b_ih, b_hh):
        x, h0, c0, w_ih, w_hh = map(run.lead, (x, h0, c0, w_ih, w_hh))
        b_ih, b_hh = run.lead(b_ih), run.lead(b_hh)
        k, batch, steps, _ = x.shape
        runs, hidden = Runs(k), w_hh.shape[2]
        x_rows = run_rows(x)  # (K, T*B, F)
        gates = x.new_empty(steps, k, batch, 4 * hidden)  # (T, K, B, 4H): i, f, g, o
        project_inputs(runs, x_rows, w_ih, summed_bias(b_ih, b_hh), out=gates)
        hs = x.new_empty(steps + 1, k, batch, hidden)  # (T+1, K, B, H); outputs view it
        cs = x.new_empty(steps + 1, k, batch, hidden)  # (T+1, K, B, H)
        hs[0], cs[0] = h0, c0
        w_hh = w_hh.detach().contiguous()  # (K, 4H, H)
        block_b, block_h, tiles = blocks(batch, hidden)
        _forward[(k, tiles)](
            gates, hs, cs, w_hh, steps, k, batch, hidden,
            BLOCK_B=block_b, BLOCK_H=block_h, **OPTIONS,
        )  # fmt: skip
        ctx.save_for_backward(x_rows, w_ih, w_hh, hs)  # hs: in-place edits are caught
        ctx.buffers = gates, cs
        ctx.run = run
        final = run.unlead(hs[steps].clone()), run.unlead(cs[steps].clone())
        return run.unlead(outputs_of(hs)), *final

    @staticmethod
    @first_derivative_only
    def backward(ctx, grad_out: Tensor, grad_h_final: Tensor, grad_c_final: Tensor):
        start_backward(ctx)
        x_rows, w_ih, w_hh, hs = ctx.saved_tensors
        gates, cs = ctx.buffers
        ctx.buffers = None
        run: Pass = ctx.run
        steps, (k, batch, hidden) = hs.shape[0] - 1, hs.shape[1:]
        runs = Runs(k)
        deltas = output_grads(run.lead(grad_out), run.lead(grad_h_final))  # (T, K, B, H)
        grad_c = run.lead(grad_c_final).contiguous()  # (K, B, H)
        d_pre = gates.new_empty(steps, k, batch, 4 * hidden)  # dL/da_t, (T, K, B, 4H)
        grad_h0, grad_c0 = hs.new_empty(k, batch, hidden), hs.new_empty(k, batch, hidden)
        program = encode(run.taps, steps, batch, hs.device)
        block_b, block_h, tiles = blocks(batch, hidden)
        _backward[(k, tiles)](
            deltas, grad_c, gates, cs, w_hh, d_pre, grad_h0, grad_c0,
            program.ops, program.bounds, program.slots, program.width, program.records,
            steps, k, batch, hidden,
            BLOCK_B=block_b, BLOCK_H=block_h, **OPTIONS,
        )  # fmt: skip
        program.deliver()
        needs = ctx.needs_input_grad
        flat = runs.rows(d_pre)  # (K, T*B, 4H)
        grad_w_ih = weight_grad(needs[4], runs, flat, x_rows)
        grad_w_hh = weight_grad(needs[5], runs, flat, runs.rows(hs[:-1]))
        grad_b = flat.sum(1) if needs[6] or needs[7] else None
        grad_x = input_grad(needs[0], runs, flat, w_ih, batch)
        grad_b_hh = None if grad_b is None else grad_b.clone()  # never alias two .grad
        grads = (
            grad_x,
            grad_h0 if needs[1] else None,
            grad_c0 if needs[2] else None,
            grad_w_ih,
            grad_w_hh,
            grad_b,
            grad_b_hh,
        )
        grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b, grad_b_hh = map(run.unlead, grads)
        return grad_x, grad_h0, grad_c0, None, grad_w_ih, grad_w_hh, grad_b, grad_b_hh


FUNCTION = TritonLSTMSequence
