"""The Elman RNN's kernel (tanh, ReLU or modReLU), K runs at once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    lone_recorders,
    output_grads,
    outputs_of,
    project_inputs,
    run_rows,
    start_backward,
    summed_bias,
    tanh_via_sigmoid,
    time_major,
)
from bptt._kernels._kernel import RecurrenceKernel
from bptt._kernels._workspace import WORKSPACE

ACTIVATIONS = ("tanh", "relu", "modrelu")


def elman_recurrence(
    h_steps: Sequence[Tensor],
    w_hh_t: Tensor,
    activation: str,
    b_mod: Tensor | None,
    product: Callable[[Tensor, Tensor, Tensor], Tensor],
    via_sigmoid: bool = False,
) -> None:
    """The recurrence in place: ``h_steps[t + 1]``, holding step t's input projection,
    becomes f(it + h_t W_hh^T). ``product(out, h, w_t)`` adds h w_t into out in place
    (:attr:`Runs.addmm_`); ``b_mod`` broadcasts against a step's state (modReLU's bias).
    With ``via_sigmoid`` the input projection and the weight come doubled, and tanh is
    taken as 2 sigmoid(2a) - 1 (:func:`bptt._kernels._common.tanh_via_sigmoid`)."""
    if activation == "modrelu":
        assert b_mod is not None  # the cell has it when its nonlinearity is modReLU
        sign = torch.empty_like(h_steps[0])
        for t in range(len(h_steps) - 1):
            a = product(h_steps[t + 1], h_steps[t], w_hh_t)
            torch.sign(a, out=sign)
            a.abs_().add_(b_mod).relu_().mul_(sign)
        return
    if via_sigmoid:
        minus_one = h_steps[0].new_full((), -1.0)
        for t in range(len(h_steps) - 1):
            a = product(h_steps[t + 1], h_steps[t], w_hh_t).sigmoid_()
            torch.add(minus_one, a, alpha=2.0, out=a)
        return
    activate = torch.relu_ if activation == "relu" else torch.tanh_
    for t in range(len(h_steps) - 1):
        activate(product(h_steps[t + 1], h_steps[t], w_hh_t))


class RNNSequence(torch.autograd.Function):
    """h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) over T steps for K runs, taps in
    backward.

    ``f`` is tanh, ReLU, or modReLU (Arjovsky et al. 2016): f(a) = sign(a) relu(|a| + b)
    with a learnt bias b (H,) per unit, whose derivative needs only h: df/da is 1
    where h != 0 and 0 elsewhere, df/db is sign(h).

    forward(x (K, B, T, F), h0 (K, B, H), run, activation, W_ih (K, H, F), W_hh (K, H, H),
    b_ih (K, H), b_hh (K, H), b_mod (K, H)) -> (outputs (K, B, T, H), h_T (K, B, H));
    every per-run tensor without its K for a run that is not ``run.stacked``; biases
    may be None (``b_mod`` is modReLU's bias, None otherwise).
    """

    @staticmethod
    def forward(ctx, x, h0, run: Pass, activation: str, w_ih, w_hh, b_ih, b_hh, b_mod=None):
        x, h0, w_ih, w_hh = run.lead(x), run.lead(h0), run.lead(w_ih), run.lead(w_hh)
        b_ih, b_hh, b_mod = run.lead(b_ih), run.lead(b_hh), run.lead(b_mod)
        k, batch, steps, _ = x.shape
        runs, hidden = Runs(k), w_hh.shape[1]
        x_rows = run_rows(x)  # (K, T*B, F)
        hs = x.new_empty(steps + 1, k, batch, hidden)  # (T+1, K, B, H): h0, then h_0 .. h_{T-1}
        hs[0] = h0
        # Each step's input projection is written where its state will be, then
        # completed in place: no allocation inside the loop.
        bias, w_x, w_step = summed_bias(b_ih, b_hh), w_ih, w_hh
        via_sigmoid = activation == "tanh" and tanh_via_sigmoid(x)
        if via_sigmoid:  # every pre-activation doubled
            bias, w_x, w_step = doubled_rows(bias), doubled_rows(w_ih), doubled_rows(w_hh)
        project_inputs(runs, x_rows, w_x, bias, out=hs[1:])
        w_hh_t = runs.operand(w_step).transpose(-1, -2)
        elman_recurrence(
            runs.steps(hs), w_hh_t, activation, runs.operand(b_mod), runs.addmm_, via_sigmoid
        )
        ctx.save_for_backward(x_rows, w_ih, w_hh, hs)  # hs: in-place edits are caught
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
        tap, product, w = runs.taps(run), runs.addmm_, runs.operand(w_hh)
        # d_pre[t] = f'(a_t) for a chunk of steps, then times delta_t: dL/da_t.
        d_pre = WORKSPACE.take((steps, k, batch, hidden), hs)  # (T, K, B, H)
        d_steps = runs.steps(d_pre)
        delta_rows = output_grads(run.lead(grad_out), run.lead(grad_final))  # (T, K, B, H)
        deltas = runs.steps(delta_rows)
        ones = hs.new_ones(())
        needs = ctx.needs_input_grad
        x_steps, w_x = time_major(x_rows, batch), w_ih if needs[0] else None
        inputs = ChunkGrads(runs, d_pre, x_steps, w_x, needs[4], needs[6] or needs[7])
        states = ChunkGrads(runs, d_pre, hs[:-1], None, needs[5], False)  # h_{t-1} meets W_hh
        delta = deltas[-1]
        grad_h0 = None
        work = ChunkWork(inputs, states, lone_recorders(run), (delta_rows,))  # each chunk's sums
        for start, end in backward_chunks(steps, k * batch * hidden):
            h = hs[start + 1 : end + 1]
            if ctx.activation == "relu":  # h >= 0, so sign(h) is the indicator of h > 0
                torch.sign(h, out=d_pre[start:end])
            elif ctx.activation == "modrelu":  # 1 where h != 0
                torch.sign(h, out=d_pre[start:end]).abs_()
            else:
                torch.addcmul(ones, h, h, value=-1.0, out=d_pre[start:end])
            for t in range(end - 1, start - 1, -1):
                if tap is not None:
                    delta = tap(t, delta)
                d_a = d_steps[t].mul_(delta)
                if t:
                    delta = product(deltas[t - 1], d_a, w)
                elif ctx.needs_input_grad[1]:
                    grad_h0 = runs.whole(runs.mm(d_a, w))
            work.done(start, end)
        work.finish()
        grad_w_ih, grad_w_hh, grad_x = inputs.weight_grad, states.weight_grad, inputs.operand_grad
        grad_b = inputs.bias_grad
        grad_b_mod = None
        if ctx.activation == "modrelu" and needs[8]:  # dL/db = sum over t of dL/da_t sign(h_t)
            grad_b_mod = (runs.rows(d_pre) * runs.rows(hs[1:]).sign()).sum(1)
        WORKSPACE.give(d_pre)
        grad_b_hh = None if grad_b is None else grad_b.clone()  # never alias two .grad
        grads = (grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b, grad_b_hh, grad_b_mod)
        grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b, grad_b_hh, grad_b_mod = map(
            run.unlead, grads
        )
        return grad_x, grad_h0, None, None, grad_w_ih, grad_w_hh, grad_b, grad_b_hh, grad_b_mod


class ElmanKernel(RecurrenceKernel):
    """:class:`RNNSequence` for a cell with ``weight_ih``, ``weight_hh``, ``bias_ih``,
    ``bias_hh`` (or None), ``nonlinearity`` and, for modReLU, ``modrelu_bias``: the
    Elman RNN, and the orthogonal RNN in every nonlinearity (its ``weight_hh``,
    exp(A - A^T), computed once per pass; the gradient reaches A through autograd of
    ``matrix_exp``)."""

    function = RNNSequence
    triton = "elman"  # bptt._kernels._triton._elman

    def options(self, cell: Any) -> tuple:
        return (cell.nonlinearity,)

    def parameters(self, cell: Any) -> tuple[Tensor | None, ...]:
        modrelu = cell.modrelu_bias if cell.nonlinearity == "modrelu" else None
        return cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, modrelu


ELMAN = ElmanKernel()
