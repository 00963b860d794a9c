"""Fast engine for the Elman RNN (tanh, ReLU or modReLU)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
    start_backward,
    summed_bias,
    time_major_rows,
)
from bptt.engine._workspace import WORKSPACE
from bptt.taps import apply_taps

ACTIVATIONS = ("tanh", "relu", "modrelu")


def elman_recurrence(
    h_steps: Sequence[Tensor],
    w_hh_t: Tensor,
    activation: str,
    b_mod: Tensor | None,
    product: Callable[[Tensor, Tensor, Tensor], Tensor],
) -> None:
    """The recurrence in place: ``h_steps[t + 1]``, holding step t's input projection,
    becomes f(it + h_t W_hh^T). ``product(out, h, w_t)`` adds h w_t into out in place:
    ``Tensor.addmm_`` for one run (B, H), ``Tensor.baddbmm_`` for K stacked runs
    (K, B, H); ``b_mod`` broadcasts against a step's state (modReLU's bias)."""
    if activation == "modrelu":
        assert b_mod is not None  # the cell has it when its nonlinearity is modReLU
        sign = torch.empty_like(h_steps[0])
        for t in range(len(h_steps) - 1):
            a = product(h_steps[t + 1], h_steps[t], w_hh_t)
            torch.sign(a, out=sign)
            a.abs_().add_(b_mod).relu_().mul_(sign)
        return
    activate = torch.relu_ if activation == "relu" else torch.tanh_
    for t in range(len(h_steps) - 1):
        activate(product(h_steps[t + 1], h_steps[t], w_hh_t))


class RNNSequence(torch.autograd.Function):
    """h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) over T steps, taps in backward.

    ``f`` is tanh, ReLU, or modReLU (Arjovsky et al. 2016): f(a) = sign(a) relu(|a| + b)
    with a learnt bias b (H,) per unit, whose derivative needs only h: df/da is 1
    where h != 0 and 0 elsewhere, df/db is sign(h).

    forward(x (B, T, F), h0 (B, H), run, activation, W_ih, W_hh, b_ih, b_hh, b_mod)
    -> (outputs (B, T, H), h_T (B, H)); ``b_mod`` is modReLU's bias (None otherwise).
    """

    @staticmethod
    def forward(ctx, x, h0, run: Pass, activation: str, w_ih, w_hh, b_ih, b_hh, b_mod=None):
        batch, steps, _ = x.shape
        hidden = w_hh.shape[0]
        x_rows = time_major_rows(x)  # (T*B, F)
        hs = x.new_empty(steps + 1, batch, hidden)  # (T+1, B, H): h0, then h_0 .. h_{T-1}
        hs[0] = h0
        # Each step's input projection is written where its state will be, then
        # completed in place: no allocation inside the loop.
        project_inputs(x_rows, w_ih, summed_bias(b_ih, b_hh), out=hs[1:])
        elman_recurrence(hs.unbind(0), w_hh.t(), activation, b_mod, Tensor.addmm_)
        ctx.save_for_backward(x_rows, w_ih, w_hh, hs)  # hs: in-place edits are caught
        ctx.taps, ctx.activation = run.taps, activation
        return hs[1:].transpose(0, 1), hs[steps].clone()

    @staticmethod
    @first_derivative_only
    def backward(ctx, grad_out: Tensor, grad_final: Tensor):
        start_backward(ctx)
        x_rows, w_ih, w_hh, hs = ctx.saved_tensors
        taps = ctx.taps
        steps, batch, hidden = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
        # d_pre[t] = f'(a_t) for a chunk of steps, then times delta_t: dL/da_t.
        d_pre = WORKSPACE.take((steps, batch, hidden), hs)  # (T, B, H)
        d_steps = d_pre.unbind(0)
        deltas = output_grads(grad_out, grad_final).unbind(0)  # T x (B, H)
        ones = hs.new_ones(1, 1, 1)
        delta = deltas[-1]
        grad_h0 = None
        for start, end in backward_chunks(steps, batch * hidden):
            h = hs[start + 1 : end + 1]
            if ctx.activation == "relu":  # h >= 0, so sign(h) is the indicator of h > 0
                torch.sign(h, out=d_pre[start:end])
            elif ctx.activation == "modrelu":  # 1 where h != 0
                torch.sign(h, out=d_pre[start:end]).abs_()
            else:
                torch.addcmul(ones, h, h, value=-1.0, out=d_pre[start:end])
            for t in range(end - 1, start - 1, -1):
                if taps:
                    delta = apply_taps(taps, t, delta)
                d_a = d_steps[t].mul_(delta)
                if t:
                    delta = deltas[t - 1].addmm_(d_a, w_hh)
                elif ctx.needs_input_grad[1]:
                    grad_h0 = d_a @ w_hh
        needs = ctx.needs_input_grad
        d_rows = d_pre.view(steps * batch, hidden)
        grad_w_ih, grad_b = parameter_grads((needs[4], needs[6] or needs[7]), d_rows, x_rows)
        grad_w_hh, _ = parameter_grads((needs[5], False), d_rows, hs[:-1].reshape(-1, hidden))
        grad_x = input_grad(needs[0], d_rows, w_ih, batch, steps)
        grad_b_mod = None
        if ctx.activation == "modrelu" and needs[8]:  # dL/db = sum over t of dL/da_t sign(h_t)
            grad_b_mod = (d_rows * hs[1:].reshape(-1, hidden).sign()).sum(0)
        WORKSPACE.give(d_pre)
        grad_b_hh = None if grad_b is None else grad_b.clone()  # never alias two .grad
        return grad_x, grad_h0, None, None, grad_w_ih, grad_w_hh, grad_b, grad_b_hh, grad_b_mod
