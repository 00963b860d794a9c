"""Built-in cells against torch.nn's cells and layers with copied weights (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bptt
from helpers import DT, make_cell, plain_loop, rounding_tol

TORCH_CELL = {
    "rnn-tanh": nn.RNNCell,
    "rnn-relu": nn.RNNCell,
    "lstm": nn.LSTMCell,
    "gru": nn.GRUCell,
}
TORCH_LAYER = {"rnn-tanh": nn.RNN, "rnn-relu": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

# Ours and torch's agree to rounding (helpers.rounding_tol); F = 3, H = 5, float64,
# |weights| <= 1/sqrt(H). One step: a pre-activation sums F + H products and 2 biases, the
# gates, nonlinearities and state update add at most 8 roundings; its terms (and the LSTM's
# f c + i g) add up to < 4 here (|x|, |h|, |c| < 3). A wrong gate order or sign is off by > 1e-2.
PER_STEP = 3 + 5 + 2 + 8
STEP_ATOL = rounding_tol(PER_STEP, 4.0)  # 1.6e-14
# Over T = 9 steps each step's error is carried on with a factor < 1 (one-step Jacobian norms
# 0.6-1.2, their product over the sequence < 0.15); pre-activation terms add up to < 2.3 (< 4).
STEPS = 9
LAYER_ATOL = rounding_tol(STEPS * PER_STEP, 4.0)  # 1.4e-13
# Gradients: that forward, per step a backward sum over the 4H (LSTM) pre-activation gradients
# with 9 more roundings, and B T = 18 products summed into a parameter's gradient, whose
# magnitudes add up to < 50: 4.9e-12.
GRAD_ATOL = rounding_tol(STEPS * (PER_STEP + 4 * 5 + 9) + 2 * STEPS, 50.0)


def _torch_kwargs(kind: str) -> dict:
    return {"nonlinearity": kind.split("-")[1]} if kind.startswith("rnn") else {}


@pytest.mark.parametrize("kind", TORCH_CELL)
@pytest.mark.parametrize("bias", [True, False])
def test_state_dicts_load_both_ways_and_steps_match(kind, bias, gen):
    ours = make_cell(kind)
    if not bias:
        ours = type(ours)(3, 5, bias=False, dtype=DT, **_torch_kwargs(kind))
    theirs = TORCH_CELL[kind](3, 5, bias=bias, dtype=DT, **_torch_kwargs(kind))
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 3, generator=gen, dtype=DT)
    h = torch.randn(4, 5, generator=gen, dtype=DT)
    state = (h, torch.randn(4, 5, generator=gen, dtype=DT)) if kind == "lstm" else h
    ours_out, theirs_out = ours(x, state), theirs(x, state)
    torch.testing.assert_close(ours_out, theirs_out, rtol=0, atol=STEP_ATOL)

    # and back: a fresh torch cell takes our (re-drawn) weights
    ours.reset_parameters()
    theirs.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x, state), theirs(x, state), rtol=0, atol=STEP_ATOL)


@pytest.mark.parametrize("kind", TORCH_LAYER)
@pytest.mark.parametrize("engine", ["generic", "fast"])
def test_unroll_matches_torch_layer_outputs_and_gradients(kind, engine, gen):
    cell = make_cell(kind)
    layer = TORCH_LAYER[kind](3, 5, batch_first=True, dtype=DT, **_torch_kwargs(kind))
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(layer, f"{name}_l0").copy_(getattr(cell, name))
    x = torch.randn(2, STEPS, 3, generator=gen, dtype=DT)
    w = torch.randn(2, STEPS, 5, generator=gen, dtype=DT)

    ours, _ = bptt.unroll(cell, x, engine=engine)
    theirs, _ = layer(x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=LAYER_ATOL)
    (ours * w).sum().backward()
    (theirs * w).sum().backward()
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        torch.testing.assert_close(
            getattr(cell, name).grad, getattr(layer, f"{name}_l0").grad, rtol=0, atol=GRAD_ATOL
        )


@pytest.mark.parametrize("kind", TORCH_CELL)
def test_zero_state_default_equals_explicit_zeros(kind, gen):
    cell = make_cell(kind)
    x = torch.randn(3, 4, 3, generator=gen, dtype=DT)
    default, _ = plain_loop(cell, x)
    zeros = bptt.cells.initial_state(cell, 3, dtype=DT)
    explicit, _ = plain_loop(cell, x, zeros)
    torch.testing.assert_close(default, explicit, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((0, 4), ValueError, "input_size"),
        ((3, -1), ValueError, "hidden_size"),
        ((3, 2.5), TypeError, "hidden_size"),  # not an integer: the wrong kind
    ],
)
def test_bad_sizes_are_rejected(args, error, message):
    with pytest.raises(error, match=message):
        bptt.cells.GRUCell(*args)


def test_bad_nonlinearity_is_rejected():
    with pytest.raises(ValueError, match="nonlinearity"):
        bptt.cells.RNNCell(3, 4, nonlinearity="sigmoid")


def test_user_cell_without_size_gets_a_clear_error():
    class Bare(nn.Module):
        def forward(self, x_t, state):
            return x_t

    with pytest.raises(TypeError, match="hidden_size"):
        bptt.unroll(Bare(), torch.zeros(1, 2, 3))
