"""Fast engine for the GRU (torch.nn.GRUCell's formulation, gates (r, z, n))."""

from __future__ import annotations

import torch
from torch import Tensor

from bptt.engine._fast_common import (
    Pass,
    backward_chunks,
    first_derivative_only,
    input_grad,
    output_grads,
    parameter_grads,
    project_inputs,
    release_if_no_backward,
    start_backward,
    time_major_rows,
)
from bptt.engine._workspace import WORKSPACE
from bptt.taps import apply_taps


class GRUSequence(torch.autograd.Function):
    """The GRU over T steps, taps in backward.

    forward(x (B, T, F), h0 (B, H), run, W_ih, W_hh, b_ih, b_hh)
    -> (outputs (B, T, H), h_T (B, H)).
    """

    @staticmethod
    def forward(ctx, x, h0, run: Pass, w_ih, w_hh, b_ih, b_hh):
        batch, steps, _ = x.shape
        hidden = w_hh.shape[1]
        h2 = 2 * hidden
        x_rows = time_major_rows(x)  # (T*B, F)
        gates = WORKSPACE.take((steps, batch, 3 * hidden), x)  # (T, B, 3H): r, z, n
        hh = WORKSPACE.take((steps, batch, 3 * hidden), x)  # (T, B, 3H): W_hh h_{t-1} (+ b_hn)
        hs = x.new_empty(steps + 1, batch, hidden)  # (T+1, B, H), hs[0] = h0; outputs view it
        hs[0] = h0
        # b_hr and b_hz only add to the pre-activation: fold them into the input side;
        # b_hn sits inside r * (W_hn h + b_hn) and is added at each step.
        bias = None
        if b_ih is not None:
            bias = b_ih.clone()
            bias[:h2] += b_hh[:h2]
        b_hn = None if b_hh is None else b_hh[h2:]
        project_inputs(x_rows, w_ih, bias, out=gates)
        w_hh_t = w_hh.t()
        # Per-step views made in one call each, not by slicing inside the loop.
        rz, n = gates[..., :h2].unbind(0), gates[..., h2:].unbind(0)
        r, z = gates[..., :hidden].unbind(0), gates[..., hidden:h2].unbind(0)
        hh_rows, hh_rz, hh_n = hh.unbind(0), hh[..., :h2].unbind(0), hh[..., h2:].unbind(0)
        h_steps = hs.unbind(0)
        for t in range(steps):
            torch.mm(h_steps[t], w_hh_t, out=hh_rows[t])  # (B, 3H)
            if b_hn is not None:
                hh_n[t].add_(b_hn)
            rz[t].add_(hh_rz[t]).sigmoid_()
            n[t].addcmul_(r[t], hh_n[t]).tanh_()
            torch.lerp(n[t], h_steps[t], z[t], out=h_steps[t + 1])  # n + z * (h - n)
        ctx.save_for_backward(x_rows, w_ih, w_hh, hs)  # hs: in-place edits are caught
        ctx.buffers = gates, hh
        ctx.taps = run.taps
        release_if_no_backward(ctx, run, gates, hh)
        return hs[1:].transpose(0, 1), hs[steps].clone()

    @staticmethod
    @first_derivative_only
    def backward(ctx, grad_out: Tensor, grad_final: Tensor):
        start_backward(ctx)
        x_rows, w_ih, w_hh, hs = ctx.saved_tensors
        gates, hh = ctx.buffers
        taps = ctx.taps
        steps, batch, hidden = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
        h2 = 2 * hidden
        ones = hs.new_ones(1, 1, 1)
        # d_in[t] = dL/d(input pre-activations); d_hh[t] = dL/d(W_hh h_{t-1} + b_hh).
        # Both are first the local factors for a chunk of steps, then times delta_t.
        d_in = WORKSPACE.take((steps, batch, 3 * hidden), hs)  # (T, B, 3H), blocks (r, z, n)
        d_hh = WORKSPACE.take((steps, batch, 3 * hidden), hs)  # (T, B, 3H)
        d_in3 = d_in.view(steps, batch, 3, hidden).unbind(0)
        d_hh3, d_hh_rows = d_hh.view(steps, batch, 3, hidden).unbind(0), d_hh.unbind(0)
        z_steps = gates[..., hidden:h2].unbind(0)
        deltas = output_grads(grad_out, grad_final).unbind(0)  # T x (B, H)

        delta = deltas[-1]
        grad_h0 = None
        for start, end in backward_chunks(steps, batch * 3 * hidden):
            gate, d, e = gates[start:end], d_in[start:end], d_hh[start:end]
            r, z, n = gate.split(hidden, dim=2)
            d_r, d_z, d_n = d.split(hidden, dim=2)
            torch.addcmul(ones, n, n, value=-1.0, out=d_n)  # 1 - n^2
            torch.addcmul(d_n, d_n, z, value=-1.0, out=d_n)  # (1 - z)(1 - n^2)
            sig = gate[..., :h2]
            torch.addcmul(sig, sig, sig, value=-1.0, out=d[..., :h2])  # s(1 - s) for r and z
            d_z.mul_(torch.sub(hs[start:end], n, out=e[..., hidden:h2]))  # (h_{t-1} - n) z'
            d_r.mul_(hh[start:end, :, h2:]).mul_(d_n)  # (W_hn h + b_hn) r' (1 - z)(1 - n^2)
            e[..., :h2].copy_(d[..., :h2])
            torch.mul(d_n, r, out=e[..., h2:])
            for t in range(end - 1, start - 1, -1):
                if taps:
                    delta = apply_taps(taps, t, delta)
                scale = delta.unsqueeze(1)  # (B, 1, H)
                d_in3[t].mul_(scale)
                d_hh3[t].mul_(scale)
                if t:
                    delta = deltas[t - 1].addcmul_(delta, z_steps[t]).addmm_(d_hh_rows[t], w_hh)
                elif ctx.needs_input_grad[1]:
                    grad_h0 = torch.addmm(delta * z_steps[0], d_hh_rows[0], w_hh)

        needs = ctx.needs_input_grad
        in_rows = d_in.view(steps * batch, 3 * hidden)
        hh_rows = d_hh.view(steps * batch, 3 * hidden)
        h_prev_rows = hs[:-1].reshape(-1, hidden)
        grad_w_ih, grad_b_ih = parameter_grads((needs[3], needs[5]), in_rows, x_rows)
        grad_w_hh, grad_b_hh = parameter_grads((needs[4], needs[6]), hh_rows, h_prev_rows)
        grad_x = input_grad(needs[0], in_rows, w_ih, batch, steps)
        WORKSPACE.give(d_in, d_hh, gates, hh)
        return grad_x, grad_h0, None, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh
