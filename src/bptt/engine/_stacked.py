"""K runs of one architecture in one pass: the fast engines' arithmetic with a leading
run dimension, every recurrent product one batched matmul over the K stacked weights.

Seed-parallel training (:func:`bptt.run.train_stacked`) stacks the weights of K models of
the same cell class and size, runs each on its own batch, and backpropagates the sum
of their losses: each run's parameters receive their own gradient, as if trained
alone. Inside, the layout is time-major, (T, K, B, G), so each step's rows of all K
runs are one contiguous block; the backward walks back over time as the fast engines
do and forms each weight's gradient in one batched matmul after the loop. No taps:
a run whose steps need taps (per-step clipping) trains alone.

The Functions here take weights already stacked and (for the LSTM) reordered; the
wrappers build those with autograd from each cell's own parameters, so gradients
reach every cell's ``.grad`` through ``torch.stack``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from bptt._torch_compat import functorch_transforms_active
from bptt.cells import GRUCell, LSTMCell, OrthogonalRNNCell, RNNCell
from bptt.engine._fast_common import first_derivative_only
from bptt.engine._fast_rnn import elman_recurrence
from bptt.engine._unroll import _GENERIC_REQUIRED

__all__ = ["STACKABLE_CELLS", "stackable", "unroll_stacked"]

STACKABLE_CELLS = (RNNCell, OrthogonalRNNCell, LSTMCell, GRUCell)
_LSTM_TO_INNER = [3, 0, 1, 2]  # inner gate block k is torch's block _LSTM_TO_INNER[k]


def _time_major(x: Tensor) -> Tensor:
    """x (K, B, T, F) -> (K, T*B, F), each run's rows ordered by time then sample."""
    k, batch, steps, features = x.shape
    return x.transpose(1, 2).reshape(k, steps * batch, features)


def _run_major(rows: Tensor) -> Tensor:
    """(T, K, B, G) -> (K, T*B, G): each run's rows, for its weight gradients."""
    steps, k, batch, width = rows.shape
    return rows.transpose(0, 1).reshape(k, steps * batch, width)


def _project(x_rows: Tensor, w_ih: Tensor, bias: Tensor | None, out: Tensor) -> None:
    """All steps' input projections of all runs into out (T, K, B, G)."""
    steps, k, batch, width = out.shape
    projected = torch.bmm(x_rows, w_ih.transpose(1, 2))  # (K, T*B, G)
    if bias is not None:
        projected.add_(bias.unsqueeze(1))
    out.copy_(projected.view(k, steps, batch, width).transpose(0, 1))


def _outputs(hs: Tensor) -> Tensor:
    """hs (T+1, K, B, H) -> the outputs (K, B, T, H), a view."""
    return hs[1:].permute(1, 2, 0, 3)


def _deltas(grad_out: Tensor) -> Tensor:
    """The gradient reaching each step's output, time-major (T, K, B, H): always a new
    tensor (the backward writes into it; ``contiguous`` could return grad_out itself)."""
    k, batch, steps, hidden = grad_out.shape
    return grad_out.new_empty(steps, k, batch, hidden).copy_(grad_out.permute(2, 0, 1, 3))


def _input_grad(needed: bool, d_rows: Tensor, w_ih: Tensor, batch: int) -> Tensor | None:
    """dL/dx (K, B, T, F) from each run's pre-activation gradients (K, T*B, G)."""
    if not needed:
        return None
    k, rows, _ = d_rows.shape
    return torch.bmm(d_rows, w_ih).view(k, rows // batch, batch, -1).transpose(1, 2)


class StackedElman(torch.autograd.Function):
    """K Elman RNNs from the zero state: h_t = f(W_ih x_t + b + W_hh h_{t-1}), f tanh,
    ReLU or modReLU (bias ``b_mod``).

    forward(x (K, B, T, F), activation, W_ih (K, H, F), W_hh (K, H, H), b (K, H) or
    None, b_mod (K, H) or None) -> outputs (K, B, T, H).
    """

    @staticmethod
    def forward(ctx, x, activation: str, w_ih, w_hh, bias, b_mod):
        k, batch, steps, _ = x.shape
        hidden = w_hh.shape[1]
        x_rows = _time_major(x)
        hs = x.new_zeros(steps + 1, k, batch, hidden)  # (T+1, K, B, H), hs[0] = 0
        _project(x_rows, w_ih, bias, hs[1:])
        shift = None if b_mod is None else b_mod.unsqueeze(1)  # (K, 1, H)
        elman_recurrence(hs.unbind(0), w_hh.transpose(1, 2), activation, shift, Tensor.baddbmm_)
        ctx.save_for_backward(x_rows, w_ih, w_hh, hs)
        ctx.activation, ctx.batch = activation, batch
        return _outputs(hs)

    @staticmethod
    @first_derivative_only
    def backward(ctx, grad_out: Tensor):
        x_rows, w_ih, w_hh, hs = ctx.saved_tensors
        steps = hs.shape[0] - 1
        h = hs[1:]
        if ctx.activation == "relu":  # h >= 0: sign(h) is the indicator of h > 0
            d_pre = torch.sign(h)
        elif ctx.activation == "modrelu":  # 1 where h != 0
            d_pre = torch.sign(h).abs_()
        else:
            d_pre = torch.addcmul(torch.ones_like(h), h, h, value=-1.0)  # 1 - h^2
        d_steps, deltas = d_pre.unbind(0), _deltas(grad_out).unbind(0)
        delta = deltas[-1]
        for t in range(steps - 1, -1, -1):
            d_a = d_steps[t].mul_(delta)  # (K, B, H): dL/da_t
            if t:
                delta = deltas[t - 1].baddbmm_(d_a, w_hh)
        needs = ctx.needs_input_grad
        d_rows = _run_major(d_pre)  # (K, T*B, H)
        grad_w_ih = torch.bmm(d_rows.transpose(1, 2), x_rows) if needs[2] else None
        grad_w_hh = None
        if needs[3]:
            grad_w_hh = torch.bmm(d_rows.transpose(1, 2), _run_major(hs[:-1]))
        grad_b = d_rows.sum(1) if needs[4] else None
        grad_b_mod = None
        if ctx.activation == "modrelu" and needs[5]:  # sum over t of dL/da_t sign(h_t)
            grad_b_mod = (d_rows * _run_major(h).sign()).sum(1)
        grad_x = _input_grad(needs[0], d_rows, w_ih, ctx.batch)
        return grad_x, None, grad_w_ih, grad_w_hh, grad_b, grad_b_mod


class StackedLSTM(torch.autograd.Function):
    """K LSTMs from the zero state, gate blocks in the fast engine's inner order
    (o, i, f, g).

    forward(x (K, B, T, F), W_ih (K, 4H, F), W_hh (K, 4H, H), b (K, 4H) or None)
    -> outputs (K, B, T, H).
    """

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, bias):
        k, batch, steps, _ = x.shape
        hidden = w_hh.shape[2]
        h3 = 3 * hidden
        x_rows = _time_major(x)
        gates = x.new_empty(steps, k, batch, 4 * hidden)  # (T, K, B, 4H)
        cs = x.new_zeros(steps + 1, k, batch, hidden)  # cs[0] = 0
        tanh_c = x.new_empty(steps, k, batch, hidden)
        hs = x.new_zeros(steps + 1, k, batch, hidden)  # hs[0] = 0
        _project(x_rows, w_ih, bias, gates)
        w_hh_t = w_hh.transpose(1, 2)
        rows, sig, tanh_g = gates.unbind(0), gates[..., :h3].unbind(0), gates[..., h3:].unbind(0)
        o, i, f = (gates[..., j * hidden : (j + 1) * hidden].unbind(0) for j in range(3))
        h_steps, c_steps, tc_steps = hs.unbind(0), cs.unbind(0), tanh_c.unbind(0)
        for t in range(steps):
            rows[t].baddbmm_(h_steps[t], w_hh_t)  # (K, B, 4H) pre-activations
            sig[t].sigmoid_()
            tanh_g[t].tanh_()
            c = torch.mul(f[t], c_steps[t], out=c_steps[t + 1]).addcmul_(i[t], tanh_g[t])
            torch.mul(o[t], torch.tanh(c, out=tc_steps[t]), out=h_steps[t + 1])
        ctx.save_for_backward(x_rows, w_ih, w_hh, hs, gates, cs, tanh_c)
        ctx.batch = batch
        return _outputs(hs)

    @staticmethod
    @first_derivative_only
    def backward(ctx, grad_out: Tensor):
        x_rows, w_ih, w_hh, hs, gates, cs, tanh_c = ctx.saved_tensors
        steps, k, batch, hidden = tanh_c.shape
        h2, h3 = 2 * hidden, 3 * hidden
        ones = tanh_c.new_ones(1, 1, 1, 1)
        # the local factors of every step first (tanh c * o', i * ..., c_{t-1} * f',
        # i * g'), then multiplied by the flowing gradient step by step
        sig, g = gates[..., :h3], gates[..., h3:]
        d_pre = torch.empty_like(gates)
        torch.addcmul(sig, sig, sig, value=-1.0, out=d_pre[..., :h3])  # s(1 - s)
        torch.addcmul(ones, g, g, value=-1.0, out=d_pre[..., h3:])  # 1 - g^2
        d_pre[..., :hidden].mul_(tanh_c)
        d_pre[..., hidden:h2].mul_(g)
        d_pre[..., h2:h3].mul_(cs[:-1])
        d_pre[..., h3:].mul_(gates[..., hidden:h2])
        h_to_c = torch.addcmul(ones, tanh_c, tanh_c, value=-1.0).mul_(gates[..., :hidden])
        d_rows, d_o = d_pre.unbind(0), d_pre[..., :hidden].unbind(0)
        d_ifg = d_pre[..., hidden:].view(steps, k, batch, 3, hidden).unbind(0)
        f_steps, k_steps = gates[..., h2:h3].unbind(0), h_to_c.unbind(0)
        deltas = _deltas(grad_out).unbind(0)
        delta_h, delta_c = deltas[-1], torch.zeros_like(deltas[-1])
        for t in range(steps - 1, -1, -1):
            dc = torch.addcmul(delta_c, delta_h, k_steps[t])  # (K, B, H): dL/dc_t
            d_o[t].mul_(delta_h)
            d_ifg[t].mul_(dc.unsqueeze(-2))
            if t:
                delta_h = deltas[t - 1].baddbmm_(d_rows[t], w_hh)
                delta_c = dc.mul_(f_steps[t])
        needs = ctx.needs_input_grad
        flat = _run_major(d_pre)  # (K, T*B, 4H)
        grad_w_ih = torch.bmm(flat.transpose(1, 2), x_rows) if needs[1] else None
        grad_w_hh = torch.bmm(flat.transpose(1, 2), _run_major(hs[:-1])) if needs[2] else None
        grad_b = flat.sum(1) if needs[3] else None
        return _input_grad(needs[0], flat, w_ih, ctx.batch), grad_w_ih, grad_w_hh, grad_b


class StackedGRU(torch.autograd.Function):
    """K GRUs (torch.nn.GRUCell's formulation, gates (r, z, n)) from the zero state.

    forward(x (K, B, T, F), W_ih (K, 3H, F), W_hh (K, 3H, H), b_in (K, 3H) or None:
    b_ih with b_hr and b_hz folded in, b_hn (K, H) or None) -> outputs (K, B, T, H).
    """

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_in, b_hn):
        k, batch, steps, _ = x.shape
        hidden = w_hh.shape[2]
        h2 = 2 * hidden
        x_rows = _time_major(x)
        gates = x.new_empty(steps, k, batch, 3 * hidden)  # (T, K, B, 3H): r, z, n
        hh = x.new_empty(steps, k, batch, 3 * hidden)  # W_hh h_{t-1} (+ b_hn)
        hs = x.new_zeros(steps + 1, k, batch, hidden)
        _project(x_rows, w_ih, b_in, gates)
        w_hh_t = w_hh.transpose(1, 2)
        shift = None if b_hn is None else b_hn.unsqueeze(1)  # (K, 1, H)
        rz, n = gates[..., :h2].unbind(0), gates[..., h2:].unbind(0)
        r, z = gates[..., :hidden].unbind(0), gates[..., hidden:h2].unbind(0)
        hh_rows, hh_rz, hh_n = hh.unbind(0), hh[..., :h2].unbind(0), hh[..., h2:].unbind(0)
        h_steps = hs.unbind(0)
        for t in range(steps):
            torch.bmm(h_steps[t], w_hh_t, out=hh_rows[t])  # (K, B, 3H)
            if shift is not None:
                hh_n[t].add_(shift)
            rz[t].add_(hh_rz[t]).sigmoid_()
            n[t].addcmul_(r[t], hh_n[t]).tanh_()
            torch.lerp(n[t], h_steps[t], z[t], out=h_steps[t + 1])  # n + z (h - n)
        ctx.save_for_backward(x_rows, w_ih, w_hh, hs, gates, hh)
        ctx.batch = batch
        return _outputs(hs)

    @staticmethod
    @first_derivative_only
    def backward(ctx, grad_out: Tensor):
        x_rows, w_ih, w_hh, hs, gates, hh = ctx.saved_tensors
        steps, k, batch = gates.shape[:3]
        hidden = hs.shape[3]
        h2 = 2 * hidden
        ones = hs.new_ones(1, 1, 1, 1)
        # d_in = dL/d(input pre-activations), d_hh = dL/d(W_hh h_{t-1} + b_hh): first
        # the local factors of every step, then times the flowing gradient
        d_in, d_hh = torch.empty_like(gates), torch.empty_like(hh)
        r, z, n = gates.split(hidden, dim=-1)
        d_r, d_z, d_n = d_in.split(hidden, dim=-1)
        torch.addcmul(ones, n, n, value=-1.0, out=d_n)  # 1 - n^2
        torch.addcmul(d_n, d_n, z, value=-1.0, out=d_n)  # (1 - z)(1 - n^2)
        sig = gates[..., :h2]
        torch.addcmul(sig, sig, sig, value=-1.0, out=d_in[..., :h2])  # s(1 - s), r and z
        d_z.mul_(torch.sub(hs[:-1], n, out=d_hh[..., hidden:h2]))  # (h_{t-1} - n) z'
        d_r.mul_(hh[..., h2:]).mul_(d_n)  # (W_hn h + b_hn) r' (1 - z)(1 - n^2)
        d_hh[..., :h2].copy_(d_in[..., :h2])
        torch.mul(d_n, r, out=d_hh[..., h2:])
        d_in3 = d_in.view(steps, k, batch, 3, hidden).unbind(0)
        d_hh3, d_hh_rows = d_hh.view(steps, k, batch, 3, hidden).unbind(0), d_hh.unbind(0)
        z_steps = gates[..., hidden:h2].unbind(0)
        deltas = _deltas(grad_out).unbind(0)
        delta = deltas[-1]
        for t in range(steps - 1, -1, -1):
            scale = delta.unsqueeze(-2)  # (K, B, 1, H)
            d_in3[t].mul_(scale)
            d_hh3[t].mul_(scale)
            if t:
                delta = deltas[t - 1].addcmul_(delta, z_steps[t]).baddbmm_(d_hh_rows[t], w_hh)
        needs = ctx.needs_input_grad
        in_rows, hh_rows = _run_major(d_in), _run_major(d_hh)  # (K, T*B, 3H)
        grad_w_ih = torch.bmm(in_rows.transpose(1, 2), x_rows) if needs[1] else None
        grad_w_hh = None
        if needs[2]:
            grad_w_hh = torch.bmm(hh_rows.transpose(1, 2), _run_major(hs[:-1]))
        grad_b_in = in_rows.sum(1) if needs[3] else None
        grad_b_hn = hh_rows[..., h2:].sum(1) if needs[4] else None
        grad_x = _input_grad(needs[0], in_rows, w_ih, ctx.batch)
        return grad_x, grad_w_ih, grad_w_hh, grad_b_in, grad_b_hn


class _Sum(torch.autograd.Function):
    """a + b, whose backward gives each input a gradient tensor of its own: autograd's
    add hands both the same tensor, and two biases' ``.grad`` would then be one tensor
    (in-place clipping would scale it twice)."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:
        return a + b

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        return grad, grad.clone()


def stackable(cells: Sequence[nn.Module]) -> str | None:
    """Why these cells cannot run stacked (None: they can): one built-in class
    (:data:`STACKABLE_CELLS`, exactly), the same sizes, nonlinearity, bias, dtype and device."""
    if not cells:
        return "no cells"
    first = cells[0]
    if type(first) not in STACKABLE_CELLS:
        return f"{type(first).__name__} has no stacked engine"
    shapes = [(n, p.shape, p.dtype, p.device) for n, p in first.named_parameters()]
    for cell in cells[1:]:
        if type(cell) is not type(first):
            return f"{type(cell).__name__} beside {type(first).__name__}"
        if [(n, p.shape, p.dtype, p.device) for n, p in cell.named_parameters()] != shapes:
            return "cells of different sizes, bias, dtype or device"
        if getattr(cell, "nonlinearity", None) != getattr(first, "nonlinearity", None):
            return "cells of different nonlinearities"
    return None


def _stacked(cells: Sequence[nn.Module], name: str) -> Tensor | None:
    """The cells' tensors ``name`` stacked, (K, ...); None for cells that have none."""
    values = [cast(Tensor | None, getattr(cell, name)) for cell in cells]
    if values[0] is None:
        return None
    return torch.stack(cast(list[Tensor], values))


def _check_stacked_input(cells: Sequence[nn.Module], x: Tensor) -> None:
    """What :func:`unroll_stacked` refuses in x and in the context (see there)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor of shape (K, B, T, F), got {type(x).__name__}")
    k = len(cells)
    if x.dim() != 4 or x.shape[0] != k or min(x.shape[1:3]) < 1:
        shape = tuple(x.shape)
        raise ValueError(f"x must be (K={k}, B, T, F) with B, T >= 1; got {shape}")
    weight = next(cells[0].parameters())
    if not torch.is_floating_point(x) or x.dtype != weight.dtype or x.device != weight.device:
        raise ValueError(
            f"x must be in the cells' dtype and on their device ({weight.dtype} on "
            f"{weight.device}); got {x.dtype} on {x.device}"
        )
    if x.shape[3] != cells[0].input_size:
        raise ValueError(f"x has {x.shape[3]} features, the cells {cells[0].input_size}")
    required = _GENERIC_REQUIRED.get()
    if required is not None or functorch_transforms_active():
        why = required or "torch.func transforms are active"
        raise ValueError(
            f"the stacked engine's backward is hand-written, and here it cannot be ({why}): "
            "run each cell with bptt.unroll"
        )


def unroll_stacked(cells: Sequence[nn.Module], x: Tensor) -> Tensor:
    """Run K cells of one kind, each over its own inputs, from the zero state.

    Args:
        cells: K cells that :func:`stackable` accepts.
        x: (K, B, T, F), run k's inputs at ``x[k]``.

    Returns:
        outputs (K, B, T, H); each cell's parameters get their own gradient on backward.

    Raises:
        TypeError: x is not a tensor.
        ValueError: the cells cannot run stacked; x is not a floating-point (K, B, T, F)
            tensor for K cells of input size F, in their dtype and on their device; or
            the context needs a differentiable backward (torch.func transforms,
            :func:`bptt.engine.require_generic`), which the hand-written one is not.
    """
    reason = stackable(cells)
    if reason is not None:
        raise ValueError(f"these cells cannot run stacked: {reason}")
    _check_stacked_input(cells, x)
    first = cells[0]
    hidden = cast(int, first.hidden_size)
    w_ih = cast(Tensor, _stacked(cells, "weight_ih"))
    w_hh = cast(Tensor, _stacked(cells, "weight_hh"))  # the orthogonal cell's exp, once each
    b_ih, b_hh = _stacked(cells, "bias_ih"), _stacked(cells, "bias_hh")
    bias = None if b_ih is None or b_hh is None else _Sum.apply(b_ih, b_hh)
    if isinstance(first, RNNCell | OrthogonalRNNCell):
        modrelu = first.nonlinearity == "modrelu"
        b_mod = _stacked(cells, "modrelu_bias") if modrelu else None
        return StackedElman.apply(x, first.nonlinearity, w_ih, w_hh, bias, b_mod)
    if isinstance(first, LSTMCell):

        def inner(w: Tensor) -> Tensor:  # (K, 4H, ...): torch's gate blocks to (o, i, f, g)
            return w.view(w.shape[0], 4, hidden, *w.shape[2:])[:, _LSTM_TO_INNER].flatten(1, 2)

        inner_bias = None if bias is None else inner(bias)
        return StackedLSTM.apply(x, inner(w_ih), inner(w_hh), inner_bias)
    b_in = b_hn = None  # GRU: b_hr and b_hz fold into the input side, b_hn stays inside
    if b_ih is not None and b_hh is not None:
        b_hn = b_hh[:, 2 * hidden :]
        b_in = _Sum.apply(b_ih, torch.cat([b_hh[:, : 2 * hidden], torch.zeros_like(b_hn)], 1))
    return StackedGRU.apply(x, w_ih, w_hh, b_in, b_hn)
