"""The GRU's kernel (torch.nn.GRUCell's formulation, gates (r, z, n)), K runs at once."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bptt._kernels._common import (
    ChunkGrads,
    ChunkWork,
    Pass,
    Runs,
    backward_chunks,
    doubled_rows,
    first_derivative_only,
    gru_biases,
    lone_recorders,
    output_grads,
    outputs_of,
    project_inputs,
    release_if_no_backward,
    run_rows,
    start_backward,
    tanh_via_sigmoid,
    time_major,
)
from bptt._kernels._kernel import RecurrenceKernel
from bptt._kernels._workspace import WORKSPACE


class GRUSequence(torch.autograd.Function):
    """The GRU over T steps for K runs, taps in backward.

    forward(x (K, B, T, F), h0 (K, B, H), run, W_ih (K, 3H, F), W_hh (K, 3H, H),
    b_ih (K, 3H), b_hh (K, 3H)) -> (outputs (K, B, T, H), h_T (K, B, H)); every per-run
    tensor without its K for a run that is not ``run.stacked``; the biases may be None.
    """

    @staticmethod
    def forward(ctx, x, h0, run: Pass, w_ih, w_hh, b_ih, b_hh):
        x, h0, w_ih, w_hh = map(run.lead, (x, h0, w_ih, w_hh))
        b_ih, b_hh = run.lead(b_ih), run.lead(b_hh)
        k, batch, steps, _ = x.shape
        runs, hidden = Runs(k), w_hh.shape[2]
        h2 = 2 * hidden
        x_rows = run_rows(x)  # (K, T*B, F)
        gates = WORKSPACE.take((steps, k, batch, 3 * hidden), x)  # (T, K, B, 3H): r, z, n
        hh = WORKSPACE.take((steps, k, batch, 3 * hidden), x)  # W_hh h_{t-1} (+ b_hn)
        hs = x.new_empty(steps + 1, k, batch, hidden)  # hs[0] = h0; outputs view it
        hs[0] = h0
        bias, b_hn = gru_biases(b_ih, b_hh)  # b_hn added at each step
        w_x, w_step = w_ih, w_hh
        # On the CPU n = tanh(a) as 2 sigmoid(2a) - 1: the n block's rows doubled on both
        # sides, so hh[..., 2H:] holds 2 (W_hn h + b_hn) (the backward halves it).
        ctx.via_sigmoid = via_sigmoid = tanh_via_sigmoid(x)
        if via_sigmoid:
            w_x, w_step, bias = (
                doubled_rows(w_ih, h2),
                doubled_rows(w_hh, h2),
                doubled_rows(bias, h2),
            )
            b_hn = None if b_hn is None else b_hn * 2.0
        b_hn = runs.operand(b_hn)
        project_inputs(runs, x_rows, w_x, bias, out=gates)
        w_hh_t, mm = runs.operand(w_step).transpose(-1, -2), runs.mm
        # Per-step views made in one call each, not by slicing inside the loop.
        rz, n = runs.steps(gates[..., :h2]), runs.steps(gates[..., h2:])
        r, z = runs.steps(gates[..., :hidden]), runs.steps(gates[..., hidden:h2])
        hh_rows, hh_rz, hh_n = map(runs.steps, (hh, hh[..., :h2], hh[..., h2:]))
        h_steps = runs.steps(hs)
        minus_one = x.new_full((), -1.0)
        for t in range(steps):
            mm(h_steps[t], w_hh_t, out=hh_rows[t])  # (K, B, 3H)
            if b_hn is not None:
                hh_n[t].add_(b_hn)
            rz[t].add_(hh_rz[t]).sigmoid_()
            if via_sigmoid:
                n_t = n[t].addcmul_(r[t], hh_n[t]).sigmoid_()
                torch.add(minus_one, n_t, alpha=2.0, out=n_t)
            else:
                n[t].addcmul_(r[t], hh_n[t]).tanh_()
            torch.lerp(n[t], h_steps[t], z[t], out=h_steps[t + 1])  # n + z * (h - n)
        ctx.save_for_backward(x_rows, w_ih, w_hh, hs)  # hs: in-place edits are caught
        ctx.buffers = gates, hh
        ctx.run = run
        release_if_no_backward(ctx, run, gates, hh)
        return run.unlead(outputs_of(hs)), run.unlead(hs[steps].clone())

    @staticmethod
    @first_derivative_only
    def backward(ctx, grad_out: Tensor, grad_final: Tensor):
        start_backward(ctx)
        x_rows, w_ih, w_hh, hs = ctx.saved_tensors
        gates, hh = ctx.buffers
        run: Pass = ctx.run
        steps, (k, batch, hidden) = hs.shape[0] - 1, hs.shape[1:]
        runs = Runs(k)
        tap, product, w = runs.taps(run), runs.addmm_, runs.operand(w_hh)
        h2 = 2 * hidden
        ones = hs.new_ones(())
        # d_in[t] = dL/d(input pre-activations); d_hh[t] = dL/d(W_hh h_{t-1} + b_hh).
        # Both are first the local factors for a chunk of steps, then times delta_t.
        d_in = WORKSPACE.take((steps, k, batch, 3 * hidden), hs)  # (T, K, B, 3H): r, z, n
        d_hh = WORKSPACE.take((steps, k, batch, 3 * hidden), hs)  # (T, K, B, 3H)
        d_in3 = runs.steps(d_in.unflatten(-1, (3, hidden)))
        d_hh3, d_hh_rows = runs.steps(d_hh.unflatten(-1, (3, hidden))), runs.steps(d_hh)
        z_steps = runs.steps(gates[..., hidden:h2])
        delta_rows = output_grads(run.lead(grad_out), run.lead(grad_final))  # (T, K, B, H)
        deltas = runs.steps(delta_rows)

        needs = ctx.needs_input_grad
        x_steps, w_x = time_major(x_rows, batch), w_ih if needs[0] else None
        inputs = ChunkGrads(runs, d_in, x_steps, w_x, needs[3], needs[5])  # through d_in
        states = ChunkGrads(runs, d_hh, hs[:-1], None, needs[4], needs[6])  # through d_hh
        delta = deltas[-1]
        grad_h0 = None
        work = ChunkWork(inputs, states, lone_recorders(run), (delta_rows,))  # each chunk's sums
        for start, end in backward_chunks(steps, k * batch * 3 * hidden):
            gate, d, e = gates[start:end], d_in[start:end], d_hh[start:end]
            r, z, n = gate.split(hidden, dim=-1)
            d_r, d_z, d_n = d.split(hidden, dim=-1)
            torch.addcmul(ones, n, n, value=-1.0, out=d_n)  # 1 - n^2
            torch.addcmul(d_n, d_n, z, value=-1.0, out=d_n)  # (1 - z)(1 - n^2)
            sig = gate[..., :h2]
            torch.addcmul(sig, sig, sig, value=-1.0, out=d[..., :h2])  # s(1 - s) for r and z
            d_z.mul_(torch.sub(hs[start:end], n, out=e[..., hidden:h2]))  # (h_{t-1} - n) z'
            d_r.mul_(hh[start:end, ..., h2:]).mul_(d_n)  # (W_hn h + b_hn) r' (1 - z)(1 - n^2)
            if ctx.via_sigmoid:  # hh held it doubled
                d_r.mul_(0.5)
            e[..., :h2].copy_(d[..., :h2])
            torch.mul(d_n, r, out=e[..., h2:])
            for t in range(end - 1, start - 1, -1):
                if tap is not None:
                    delta = tap(t, delta)
                scale = delta.unsqueeze(-2)  # (K, B, 1, H)
                d_in3[t].mul_(scale)
                d_hh3[t].mul_(scale)
                if t:
                    delta = product(deltas[t - 1].addcmul_(delta, z_steps[t]), d_hh_rows[t], w)
                elif ctx.needs_input_grad[1]:
                    grad_h0 = runs.whole(product(delta * z_steps[0], d_hh_rows[0], w))
            work.done(start, end)

        work.finish()
        grad_w_ih, grad_w_hh, grad_x = inputs.weight_grad, states.weight_grad, inputs.operand_grad
        grad_b_ih, grad_b_hh = inputs.bias_grad, states.bias_grad
        WORKSPACE.give(d_in, d_hh, gates, hh)
        grads = grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh
        grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh = map(run.unlead, grads)
        return grad_x, grad_h0, None, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh


class GRUKernel(RecurrenceKernel):
    """:class:`GRUSequence` for a cell with ``weight_ih``, ``weight_hh``, ``bias_ih``
    and ``bias_hh`` (or None), gates (r, z, n)."""

    function = GRUSequence
    triton = "gru"  # bptt._kernels._triton._gru

    def parameters(self, cell: Any) -> tuple[Tensor | None, ...]:
        return cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh


GRU = GRUKernel()
