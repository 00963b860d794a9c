"""The LSTM's kernel, K runs at once.

Inside, the gate blocks are reordered from torch's (i, f, g, o) to (o, i, f, g), so
the three sigmoid gates are one contiguous block (one activation call in forward,
one derivative call in backward) and the three gates driven by dL/dc are one block
(one multiply per step in backward).

On the CPU every tanh of the forward is computed as 2 sigmoid(2a) - 1
(:func:`bptt._kernels._common.tanh_via_sigmoid`), so all four gate blocks take one
sigmoid over the step's contiguous row (the g block's weight rows and bias doubled
once a pass) and tanh(c) a doubling, a sigmoid and a rescaling.
"""

from __future__ import annotations

from typing import Any, overload

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
    release_if_no_backward,
    run_rows,
    start_backward,
    summed_bias,
    tanh_via_sigmoid,
    time_major,
)
from bptt._kernels._kernel import RecurrenceKernel
from bptt._kernels._workspace import WORKSPACE

_TO_INNER = [3, 0, 1, 2]  # inner block k holds torch block _TO_INNER[k]
_TO_TORCH = [1, 2, 3, 0]  # torch block k lives at inner block _TO_TORCH[k]


@overload
def _reorder(tensor: Tensor, order: list[int]) -> Tensor: ...
@overload
def _reorder(tensor: Tensor | None, order: list[int]) -> Tensor | None: ...
def _reorder(tensor: Tensor | None, order: list[int]) -> Tensor | None:
    """Permute the four gate blocks along dim 1 of a (K, 4H, ...) tensor."""
    if tensor is None:
        return None
    k, gates, *rest = tensor.shape
    blocks = tensor.view(k, 4, gates // 4, *rest)
    return blocks[:, order].reshape(tensor.shape)


class LSTMSequence(torch.autograd.Function):
    """The LSTM over T steps for K runs, taps in backward.

    forward(x (K, B, T, F), h0 (K, B, H), c0 (K, B, H), run, W_ih (K, 4H, F),
    W_hh (K, 4H, H), b_ih (K, 4H), b_hh (K, 4H)) -> (outputs (K, B, T, H), h_T (K, B, H),
    c_T (K, B, H)); every per-run tensor without its K for a run that is not
    ``run.stacked``; the biases may be None.
    """

    @staticmethod
    def forward(ctx, x, h0, c0, run: Pass, w_ih, w_hh, b_ih, b_hh):
        x, h0, c0, w_ih, w_hh = map(run.lead, (x, h0, c0, w_ih, w_hh))
        b_ih, b_hh = run.lead(b_ih), run.lead(b_hh)
        k, batch, steps, _ = x.shape
        runs, hidden = Runs(k), w_hh.shape[2]
        h3 = 3 * hidden
        w_ih_in, w_hh_in = _reorder(w_ih, _TO_INNER), _reorder(w_hh, _TO_INNER)
        x_rows = run_rows(x)  # (K, T*B, F)
        gates = WORKSPACE.take((steps, k, batch, 4 * hidden), x)  # blocks (o, i, f, g)
        cs = WORKSPACE.take((steps + 1, k, batch, hidden), x)  # (T+1, K, B, H), cs[0] = c0
        tanh_c = WORKSPACE.take((steps, k, batch, hidden), x)  # (T, K, B, H)
        hs = x.new_empty(steps + 1, k, batch, hidden)  # hs[0] = h0; outputs view it
        hs[0], cs[0] = h0, c0
        # gates[t] holds the input projection, completed in place into the activated gates.
        bias = _reorder(summed_bias(b_ih, b_hh), _TO_INNER)
        via_sigmoid = tanh_via_sigmoid(x)
        w_x, w_step = w_ih_in, w_hh_in  # the g block's rows doubled for via_sigmoid
        if via_sigmoid:
            w_x, w_step = doubled_rows(w_ih_in, h3), doubled_rows(w_hh_in, h3)
            bias = doubled_rows(bias, h3)
        project_inputs(runs, x_rows, w_x, bias, out=gates)
        w_hh_t, product = runs.operand(w_step).transpose(-1, -2), runs.addmm_
        # Per-step views made in one call each, not by slicing inside the loop.
        rows, sig, tanh_g = map(runs.steps, (gates, gates[..., :h3], gates[..., h3:]))
        o, i, f = (runs.steps(gates[..., j * hidden : (j + 1) * hidden]) for j in range(3))
        h_steps, c_steps, tc_steps = map(runs.steps, (hs, cs, tanh_c))
        minus_one = x.new_full((), -1.0)
        for t in range(steps):
            product(rows[t], h_steps[t], w_hh_t)  # (K, B, 4H) pre-activations
            if via_sigmoid:
                rows[t].sigmoid_()  # o, i, f, and sigmoid(2 a_g)
                torch.add(minus_one, tanh_g[t], alpha=2.0, out=tanh_g[t])  # g
            else:
                sig[t].sigmoid_()
                tanh_g[t].tanh_()
            c = torch.mul(f[t], c_steps[t], out=c_steps[t + 1]).addcmul_(i[t], tanh_g[t])
            if via_sigmoid:
                tc = torch.add(c, c, out=tc_steps[t]).sigmoid_()  # (a scalar 2 costs a copy)
                torch.add(minus_one, tc, alpha=2.0, out=tc)  # tanh(c)
            else:
                tc = torch.tanh(c, out=tc_steps[t])
            torch.mul(o[t], tc, out=h_steps[t + 1])
        ctx.save_for_backward(x_rows, w_ih_in, w_hh_in, hs)  # hs: in-place edits are caught
        ctx.buffers = gates, cs, tanh_c
        ctx.run = run
        c_last = cs[steps].clone()  # before the buffer can go back to the pool
        release_if_no_backward(ctx, run, gates, cs, tanh_c)
        return run.unlead(outputs_of(hs)), run.unlead(hs[steps].clone()), run.unlead(c_last)

    @staticmethod
    @first_derivative_only
    def backward(ctx, grad_out: Tensor, grad_h_final: Tensor, grad_c_final: Tensor):
        start_backward(ctx)
        x_rows, w_ih_in, w_hh_in, hs = ctx.saved_tensors
        gates, cs, tanh_c = ctx.buffers
        run: Pass = ctx.run
        steps, k, batch, hidden = tanh_c.shape
        runs = Runs(k)
        tap, product, w = runs.taps(run), runs.addmm_, runs.operand(w_hh_in)
        h2, h3 = 2 * hidden, 3 * hidden
        # d_pre[t] = dL/d(pre-activations) (o, i, f, g): first the local factors
        # (tanh c * o', g * i', c_{t-1} * f', i * g'), then multiplied by the gradient.
        d_pre = WORKSPACE.take((steps, k, batch, 4 * hidden), tanh_c)  # (T, K, B, 4H)
        h_to_c = WORKSPACE.take((steps, k, batch, hidden), tanh_c)  # o * (1 - tanh(c)^2)
        ones = tanh_c.new_ones(())
        d_rows, d_o = runs.steps(d_pre), runs.steps(d_pre[..., :hidden])
        d_ifg = runs.steps(d_pre[..., hidden:].unflatten(-1, (3, hidden)))  # (K, B, 3, H)
        f_steps, k_steps = runs.steps(gates[..., h2:h3]), runs.steps(h_to_c)
        delta_rows = output_grads(run.lead(grad_out), run.lead(grad_h_final))  # (T, K, B, H)
        deltas = runs.steps(delta_rows)
        # carry[t] = delta^c_t, what flows into c_t from step t+1 (the pair's second half
        # a tap sees at t): fresh, like delta_rows, since taps may keep what they see.
        carry = torch.empty_like(delta_rows)
        carry[-1] = run.lead(grad_c_final)
        carries = runs.steps(carry)

        needs = ctx.needs_input_grad
        x_steps, w_x = time_major(x_rows, batch), w_ih_in if needs[0] else None
        inputs = ChunkGrads(runs, d_pre, x_steps, w_x, needs[4], needs[6] or needs[7])
        states = ChunkGrads(runs, d_pre, hs[:-1], None, needs[5], False)  # h_{t-1} meets W_hh

        delta_h, delta_c = deltas[-1], carries[-1]
        grad_h0 = grad_c0 = None
        pair = (delta_rows, carry)
        work = ChunkWork(inputs, states, lone_recorders(run), pair)  # each chunk's sums
        for start, end in backward_chunks(steps, k * batch * 4 * hidden):
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
                if tap is not None:
                    delta_h, delta_c = tap(t, (delta_h, delta_c))
                # total dL/dc_t, written where delta^c_{t-1} will be
                dc = torch.addcmul(delta_c, delta_h, k_steps[t], out=carries[t - 1] if t else None)
                d_o[t].mul_(delta_h)
                d_ifg[t].mul_(dc.unsqueeze(-2))
                if t:
                    delta_h = product(deltas[t - 1], d_rows[t], w)
                    delta_c = dc.mul_(f_steps[t])
                else:
                    if ctx.needs_input_grad[1]:
                        grad_h0 = runs.whole(runs.mm(d_rows[0], w))
                    if ctx.needs_input_grad[2]:
                        grad_c0 = runs.whole(dc.mul_(f_steps[0]))
            work.done(start, end)

        work.finish()
        grad_w_ih, grad_w_hh, grad_x = inputs.weight_grad, states.weight_grad, inputs.operand_grad
        WORKSPACE.give(d_pre, h_to_c, gates, cs, tanh_c)
        grad_b = _reorder(inputs.bias_grad, _TO_TORCH)
        grad_b_hh = None if grad_b is None else grad_b.clone()  # never alias two .grad
        return (
            run.unlead(grad_x),
            run.unlead(grad_h0),
            run.unlead(grad_c0),
            None,
            run.unlead(_reorder(grad_w_ih, _TO_TORCH)),
            run.unlead(_reorder(grad_w_hh, _TO_TORCH)),
            run.unlead(grad_b),
            run.unlead(grad_b_hh),
        )


class LSTMKernel(RecurrenceKernel):
    """:class:`LSTMSequence` for a cell with ``weight_ih``, ``weight_hh``, ``bias_ih``
    and ``bias_hh`` (or None) in torch's gate order, and the state ``(h, c)``."""

    function = LSTMSequence
    triton = "lstm"  # bptt._kernels._triton._lstm

    def parameters(self, cell: Any) -> tuple[Tensor | None, ...]:
        return cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh


LSTM = LSTMKernel()
