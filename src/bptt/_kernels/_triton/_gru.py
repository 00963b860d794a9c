"""The GRU in Triton (torch.nn.GRUCell's formulation): forward and backward over the
whole sequence, one launch each.

Each program takes one run k and one tile of BLOCK_B samples, holds that run's
recurrent weight (3H, H) on chip as three (H, H) blocks, one per gate in torch's order
(r, z, n), and walks over all T steps. Forward: gates[t] holds step t's input
projection (b_hr and b_hz folded in); with hh_x = h_{t-1} W_hx^T, r = sigmoid(gates_r +
hh_r), z = sigmoid(gates_z + hh_z), n = tanh(gates_n + r (hh_n + b_hn)), h_t = n +
z (h_{t-1} - n); gates[t] becomes (r, z, n) and hn[t] keeps hh_n + b_hn. Backward, from
t = T-1 down to 0: delta_t = g_t + what step t+1 sends back (g_t the gradient reaching
the output of step t, the final state's added to the last), through the taps, then the
pre-activation gradients of the input side (r, z, n) and of the hidden side (r, z,
r dL/dn), stored for the weight gradients, and what reaches h_{t-1}: z delta_t plus the
hidden side's gradients times W_hh.
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
    gru_biases,
    input_grad,
    output_grads,
    outputs_of,
    project_inputs,
    run_rows,
    start_backward,
    weight_grad,
)
from bptt._kernels._triton._lang import OPTIONS, apply_taps, blocks, sigmoid, tanh
from bptt._kernels._triton._taps import encode

# Whether these kernels were defined for Triton's interpreter (TRITON_INTERPRET=1).
INTERPRETED = bool(triton.knobs.runtime.interpret)


@triton.jit
def _forward(
    gates_ptr,
    hn_ptr,
    hs_ptr,
    w_ptr,
    b_hn_ptr,
    steps,
    runs,
    batch,
    hidden,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """gates (T, K, B, 3H): the input projections, made the activated gates (r, z, n) in
    place; hn (T, K, B, H) written, W_hn h_{t-1} + b_hn; hs (T+1, K, B, H): row 0 the
    start, rows 1.. written; w (K, 3H, H); b_hn (K, H)."""
    k = tl.program_id(0)
    k64 = k.to(tl.int64)  # offsets in int64: T K B 3H elements may pass 2^31
    rows = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    units = tl.arange(0, BLOCK_H)
    row_ok, unit_ok = rows < batch, units < hidden
    ok = row_ok[:, None] & unit_ok[None, :]
    square_ok = unit_ok[:, None] & unit_ok[None, :]
    # w_x[j, u] = W[k, x H + u, j] for gate x: h (B, H) @ w_x is h W_hx^T
    w_at = k64 * 3 * hidden * hidden + units[None, :] * hidden + units[:, None]
    gate = hidden * hidden  # elements of one gate's block
    w_r = tl.load(w_ptr + w_at, mask=square_ok, other=0.0)
    w_z = tl.load(w_ptr + w_at + gate, mask=square_ok, other=0.0)
    w_n = tl.load(w_ptr + w_at + 2 * gate, mask=square_ok, other=0.0)
    b_hn = tl.load(b_hn_ptr + k * hidden + units, mask=unit_ok, other=0.0)
    # elements per step; k64 * 0 makes it int64 even where Triton passes runs = 1 as a
    # constant
    step = (k64 * 0 + runs) * batch * hidden
    here = k64 * batch * hidden + rows[:, None] * hidden + units[None, :]
    here3 = k64 * batch * 3 * hidden + rows[:, None] * 3 * hidden + units[None, :]
    h = tl.load(hs_ptr + here, mask=ok, other=0.0)
    for t in range(steps):
        at = gates_ptr + t * 3 * step + here3
        r = sigmoid(tl.load(at, mask=ok, other=0.0) + tl.dot(h, w_r, input_precision="ieee"))
        a_z = tl.load(at + hidden, mask=ok, other=0.0)
        z = sigmoid(a_z + tl.dot(h, w_z, input_precision="ieee"))
        hn = tl.dot(h, w_n, input_precision="ieee") + b_hn[None, :]
        n = tanh(tl.load(at + 2 * hidden, mask=ok, other=0.0) + r * hn)
        h = tl.where(ok, n + z * (h - n), 0.0)
        tl.store(at, r, mask=ok)
        tl.store(at + hidden, z, mask=ok)
        tl.store(at + 2 * hidden, n, mask=ok)
        tl.store(hn_ptr + t * step + here, hn, mask=ok)
        tl.store(hs_ptr + (t + 1) * step + here, h, mask=ok)


@triton.jit
def _backward(
    g_ptr,
    gates_ptr,
    hn_ptr,
    hs_ptr,
    w_ptr,
    d_in_ptr,
    d_hh_ptr,
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
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """g (T, K, B, H) the gradients reaching the outputs; gates (T, K, B, 3H) activated;
    hn (T, K, B, H); hs (T+1, K, B, H); w (K, 3H, H) -> d_in (T, K, B, 3H), dL/d(input
    pre-activations), d_hh (T, K, B, 3H), dL/d(W_hh h_{t-1} + b_hh), grad_h0 (K, B, H);
    the taps' records (R, T, B)."""
    k = tl.program_id(0)
    k64 = k.to(tl.int64)  # offsets in int64: T K B 3H elements may pass 2^31
    rows = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    units = tl.arange(0, BLOCK_H)
    row_ok, unit_ok = rows < batch, units < hidden
    ok = row_ok[:, None] & unit_ok[None, :]
    square_ok = unit_ok[:, None] & unit_ok[None, :]
    # w_x[u, j] = W[k, x H + u, j]: d_x (B, H) @ w_x is what gate x sends to h_{t-1}
    w_at = k64 * 3 * hidden * hidden + units[:, None] * hidden + units[None, :]
    gate = hidden * hidden
    w_r = tl.load(w_ptr + w_at, mask=square_ok, other=0.0)
    w_z = tl.load(w_ptr + w_at + gate, mask=square_ok, other=0.0)
    w_n = tl.load(w_ptr + w_at + 2 * gate, mask=square_ok, other=0.0)
    step = (k64 * 0 + runs) * batch * hidden  # as in _forward
    here = k64 * batch * hidden + rows[:, None] * hidden + units[None, :]
    here3 = k64 * batch * 3 * hidden + rows[:, None] * 3 * hidden + units[None, :]
    carry = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    for s in range(steps):
        t = steps - 1 - s
        at = t * step + here
        delta = tl.where(ok, tl.load(g_ptr + at, mask=ok, other=0.0) + carry, 0.0)
        delta = apply_taps(
            delta, rows, row_ok, k, t, steps, batch, ops_ptr, bounds_ptr, slots_ptr, n_ops,
            records_ptr,
        )  # fmt: skip
        h_prev = tl.load(hs_ptr + at, mask=ok, other=0.0)
        hn = tl.load(hn_ptr + at, mask=ok, other=0.0)
        gate_at = gates_ptr + t * 3 * step + here3
        r = tl.load(gate_at, mask=ok, other=0.0)
        z = tl.load(gate_at + hidden, mask=ok, other=0.0)
        n = tl.load(gate_at + 2 * hidden, mask=ok, other=0.0)
        d_n = delta * ((1.0 - z) * (1.0 - n * n))
        d_z = delta * ((h_prev - n) * (z - z * z))
        d_r = d_n * (hn * (r - r * r))
        d_hn = d_n * r
        d_at = t * 3 * step + here3
        tl.store(d_in_ptr + d_at, d_r, mask=ok)
        tl.store(d_in_ptr + d_at + hidden, d_z, mask=ok)
        tl.store(d_in_ptr + d_at + 2 * hidden, d_n, mask=ok)
        tl.store(d_hh_ptr + d_at, d_r, mask=ok)
        tl.store(d_hh_ptr + d_at + hidden, d_z, mask=ok)
        tl.store(d_hh_ptr + d_at + 2 * hidden, d_hn, mask=ok)
        carry = tl.dot(d_r, w_r, delta * z, input_precision="ieee")
        carry = tl.dot(d_z, w_z, carry, input_precision="ieee")
        carry = tl.dot(d_hn, w_n, carry, input_precision="ieee")
    tl.store(grad_h0_ptr + here, carry, mask=ok)


class TritonGRUSequence(torch.autograd.Function):
    """:class:`bptt._kernels._gru.GRUSequence` with the recurrence in two Triton
    kernels: the same arguments, layout and results.

    forward(x (K, B, T, F), h0 (K, B, H), run, W_ih (K, 3H, F), W_hh (K, 3H, H),
    b_ih (K, 3H), b_hh (K, 3H)) -> (outputs (K, B, T, H), h_T (K, B, H)); every per-run
    tensor without its K for a run that is not ``run.stacked``; the biases may be None.
    float32; the taps of ``run`` only RecordNorms, ClipNorm, ClipValue
    (:func:`bptt._kernels._triton.refusal`).
    """

    @staticmethod
    def forward(ctx, x, h0, run: Pass, w_ih, w_hh, b_ih, b_hh):
        x, h0, w_ih, w_hh = map(run.lead, (x, h0, w_ih, w_hh))
        b_ih, b_hh = run.lead(b_ih), run.lead(b_hh)
        k, batch, steps, _ = x.shape
        runs, hidden = Runs(k), w_hh.shape[2]
        x_rows = run_rows(x)  # (K, T*B, F)
        bias, b_hn = gru_biases(b_ih, b_hh)  # b_hn added in the kernel
        b_hn = None if b_hn is None else b_hn.detach().contiguous()  # (K, H)
        gates = x.new_empty(steps, k, batch, 3 * hidden)  # (T, K, B, 3H): r, z, n
        project_inputs(runs, x_rows, w_ih, bias, out=gates)
        hn = x.new_empty(steps, k, batch, hidden)  # (T, K, B, H): W_hn h_{t-1} + b_hn
        hs = x.new_empty(steps + 1, k, batch, hidden)  # (T+1, K, B, H); outputs view it
        hs[0] = h0
        w_hh = w_hh.detach().contiguous()  # (K, 3H, H)
        b_hn = x.new_zeros(k, hidden) if b_hn is None else b_hn
        block_b, block_h, tiles = blocks(batch, hidden)
        _forward[(k, tiles)](
            gates, hn, hs, w_hh, b_hn, steps, k, batch, hidden,
            BLOCK_B=block_b, BLOCK_H=block_h, **OPTIONS,
        )  # fmt: skip
        ctx.save_for_backward(x_rows, w_ih, w_hh, hs)  # hs: in-place edits are caught
        ctx.buffers = gates, hn
        ctx.run = run
        return run.unlead(outputs_of(hs)), run.unlead(hs[steps].clone())

    @staticmethod
    @first_derivative_only
    def backward(ctx, grad_out: Tensor, grad_final: Tensor):
        start_backward(ctx)
        x_rows, w_ih, w_hh, hs = ctx.saved_tensors
        gates, hn = ctx.buffers
        ctx.buffers = None
        run: Pass = ctx.run
        steps, (k, batch, hidden) = hs.shape[0] - 1, hs.shape[1:]
        runs = Runs(k)
        deltas = output_grads(run.lead(grad_out), run.lead(grad_final))  # (T, K, B, H)
        d_in = gates.new_empty(steps, k, batch, 3 * hidden)  # (T, K, B, 3H): r, z, n
        d_hh = gates.new_empty(steps, k, batch, 3 * hidden)  # (T, K, B, 3H)
        grad_h0 = hs.new_empty(k, batch, hidden)
        program = encode(run.taps, steps, batch, hs.device)
        block_b, block_h, tiles = blocks(batch, hidden)
        _backward[(k, tiles)](
            deltas, gates, hn, hs, w_hh, d_in, d_hh, grad_h0,
            program.ops, program.bounds, program.slots, program.width, program.records,
            steps, k, batch, hidden,
            BLOCK_B=block_b, BLOCK_H=block_h, **OPTIONS,
        )  # fmt: skip
        program.deliver()
        needs = ctx.needs_input_grad
        in_rows, hh_rows = runs.rows(d_in), runs.rows(d_hh)  # (K, T*B, 3H)
        grad_w_ih = weight_grad(needs[3], runs, in_rows, x_rows)
        grad_w_hh = weight_grad(needs[4], runs, hh_rows, runs.rows(hs[:-1]))
        grad_b_ih = in_rows.sum(1) if needs[5] else None
        grad_b_hh = hh_rows.sum(1) if needs[6] else None
        grad_x = input_grad(needs[0], runs, in_rows, w_ih, batch)
        grads = (grad_x, grad_h0 if needs[1] else None, grad_w_ih, grad_w_hh)
        grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh = map(
            run.unlead, (*grads, grad_b_ih, grad_b_hh)
        )
        return grad_x, grad_h0, None, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh


FUNCTION = TritonGRUSequence
