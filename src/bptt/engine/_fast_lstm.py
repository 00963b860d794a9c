"""Fast engine for the LSTM.

Inside, the gate blocks are reordered from torch's (i, f, g, o) to (o, i, f, g), so
the three sigmoid gates are one contiguous block (one activation call in forward,
one derivative call in backward) and the three gates driven by dL/dc are one block
(one multiply per step in backward).
"""

from __future__ import annotations

from typing import overload

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
    summed_bias,
    time_major_rows,
)
from bptt.engine._workspace import WORKSPACE
from bptt.taps import apply_taps

_TO_INNER = [3, 0, 1, 2]  # inner block k holds torch block _TO_INNER[k]
_TO_TORCH = [1, 2, 3, 0]  # torch block k lives at inner block _TO_TORCH[k]


@overload
def _reorder(tensor: Tensor, order: list[int]) -> Tensor: ...
@overload
def _reorder(tensor: Tensor | None, order: list[int]) -> Tensor | None: ...
def _reorder(tensor: Tensor | None, order: list[int]) -> Tensor | None:
    """Permute the four gate blocks along dim 0 of a (4H, ...) tensor."""
    if tensor is None:
        return None
    blocks = tensor.view(4, tensor.shape[0] // 4, *tensor.shape[1:])
    return blocks[order].reshape(tensor.shape)


class LSTMSequence(torch.autograd.Function):
    """The LSTM over T steps, taps in backward.

    forward(x (B, T, F), h0 (B, H), c0 (B, H), run, W_ih, W_hh, b_ih, b_hh)
    -> (outputs (B, T, H), h_T (B, H), c_T (B, H)).
    """

    @staticmethod
    def forward(ctx, x, h0, c0, run: Pass, w_ih, w_hh, b_ih, b_hh):
        batch, steps, _ = x.shape
        hidden = w_hh.shape[1]
        h3 = 3 * hidden
        w_ih_in, w_hh_in = _reorder(w_ih, _TO_INNER), _reorder(w_hh, _TO_INNER)
        x_rows = time_major_rows(x)  # (T*B, F)
        gates = WORKSPACE.take((steps, batch, 4 * hidden), x)  # (T, B, 4H), blocks (o, i, f, g)
        cs = WORKSPACE.take((steps + 1, batch, hidden), x)  # (T+1, B, H), cs[0] = c0
        tanh_c = WORKSPACE.take((steps, batch, hidden), x)  # (T, B, H)
        hs = x.new_empty(steps + 1, batch, hidden)  # (T+1, B, H), hs[0] = h0; outputs view it
        hs[0], cs[0] = h0, c0
        # gates[t] holds the input projection, completed in place into the activated gates.
        project_inputs(x_rows, w_ih_in, _reorder(summed_bias(b_ih, b_hh), _TO_INNER), out=gates)
        w_hh_t = w_hh_in.t()
        # Per-step views made in one call each, not by slicing inside the loop.
        rows, sig, tanh_g = gates.unbind(0), gates[..., :h3].unbind(0), gates[..., h3:].unbind(0)
        o, i, f = (gates[..., k * hidden : (k + 1) * hidden].unbind(0) for k in range(3))
        h_steps, c_steps, tc_steps = hs.unbind(0), cs.unbind(0), tanh_c.unbind(0)
        for t in range(steps):
            rows[t].addmm_(h_steps[t], w_hh_t)  # (B, 4H) pre-activations
            sig[t].sigmoid_()
            tanh_g[t].tanh_()
            c = torch.mul(f[t], c_steps[t], out=c_steps[t + 1]).addcmul_(i[t], tanh_g[t])
            torch.mul(o[t], torch.tanh(c, out=tc_steps[t]), out=h_steps[t + 1])
        ctx.save_for_backward(x_rows, w_ih_in, w_hh_in, hs)  # hs: in-place edits are caught
        ctx.buffers = gates, cs, tanh_c
        ctx.taps = run.taps
        c_last = cs[steps].clone()  # before the buffer can go back to the pool
        release_if_no_backward(ctx, run, gates, cs, tanh_c)
        return hs[1:].transpose(0, 1), hs[steps].clone(), c_last

    @staticmethod
    @first_derivative_only
    def backward(ctx, grad_out: Tensor, grad_h_final: Tensor, grad_c_final: Tensor):
        start_backward(ctx)
        x_rows, w_ih_in, w_hh_in, hs = ctx.saved_tensors
        gates, cs, tanh_c = ctx.buffers
        taps = ctx.taps
        steps, batch, hidden = tanh_c.shape
        h2, h3 = 2 * hidden, 3 * hidden
        # d_pre[t] = dL/d(pre-activations) (o, i, f, g): first the local factors
        # (tanh c * o', g * i', c_{t-1} * f', i * g'), then multiplied by the gradient.
        d_pre = WORKSPACE.take((steps, batch, 4 * hidden), tanh_c)  # (T, B, 4H)
        h_to_c = WORKSPACE.take((steps, batch, hidden), tanh_c)  # (T, B, H): o * (1 - tanh(c)^2)
        ones = tanh_c.new_ones(1, 1, 1)
        d_rows, d_o = d_pre.unbind(0), d_pre[..., :hidden].unbind(0)
        d_ifg = d_pre[..., hidden:].view(steps, batch, 3, hidden).unbind(0)
        f_steps, k_steps = gates[..., h2:h3].unbind(0), h_to_c.unbind(0)
        deltas = output_grads(grad_out, grad_h_final).unbind(0)  # T x (B, H)

        delta_h = deltas[-1]
        delta_c = grad_c_final
        grad_h0 = grad_c0 = None
        for start, end in backward_chunks(steps, batch * 4 * hidden):
            gate, d, tc = gates[start:end], d_pre[start:end], tanh_c[start:end]
            sig, g = gate[..., :h3], gate[..., h3:]
            torch.addcmul(sig, sig, sig, value=-1.0, out=d[..., :h3])  # s(1 - s)
            torch.addcmul(ones, g, g, value=-1.0, out=d[..., h3:])
            d[..., :hidden].mul_(tc)
            d[..., hidden:h2].mul_(g)
            d[..., h2:h3].mul_(cs[start:end])
            d[..., h3:].mul_(gate[..., hidden:h2])
            torch.addcmul(ones, tc, tc, value=-1.0, out=h_to_c[start:end]).mul_(gate[..., :hidden])
            for t in range(end - 1, start - 1, -1):
                if taps:
                    delta_h, delta_c = apply_taps(taps, t, (delta_h, delta_c))
                dc = torch.addcmul(delta_c, delta_h, k_steps[t])  # (B, H): total dL/dc_t
                d_o[t].mul_(delta_h)
                d_ifg[t].mul_(dc.unsqueeze(1))
                if t:
                    delta_h = deltas[t - 1].addmm_(d_rows[t], w_hh_in)
                    delta_c = dc.mul_(f_steps[t])
                else:
                    grad_h0 = d_rows[0] @ w_hh_in if ctx.needs_input_grad[1] else None
                    grad_c0 = dc.mul_(f_steps[0]) if ctx.needs_input_grad[2] else None

        needs = ctx.needs_input_grad
        flat = d_pre.view(steps * batch, 4 * hidden)
        grad_w_ih, grad_b = parameter_grads((needs[4], needs[6] or needs[7]), flat, x_rows)
        grad_w_hh, _ = parameter_grads((needs[5], False), flat, hs[:-1].reshape(-1, hidden))
        grad_x = input_grad(needs[0], flat, w_ih_in, batch, steps)
        WORKSPACE.give(d_pre, h_to_c, gates, cs, tanh_c)
        grad_b = _reorder(grad_b, _TO_TORCH)
        grad_b_hh = None if grad_b is None else grad_b.clone()  # never alias two .grad
        return (
            grad_x,
            grad_h0,
            grad_c0,
            None,
            _reorder(grad_w_ih, _TO_TORCH),
            _reorder(grad_w_hh, _TO_TORCH),
            grad_b,
            grad_b_hh,
        )
