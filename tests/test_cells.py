"""Built-in cells against torch.nn's cells and layers with copied weights (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bptt
from helpers import DT, make_cell, plain_loop

TORCH_CELL = {
    "rnn-tanh": nn.RNNCell,
    "rnn-relu": nn.RNNCell,
    "lstm": nn.LSTMCell,
    "gru": nn.GRUCell,
}
TORCH_LAYER = {"rnn-tanh": nn.RNN, "rnn-relu": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


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
    torch.testing.assert_close(ours_out, theirs_out, rtol=0, atol=1e-14)

    # and back: a fresh torch cell takes our (re-drawn) weights
    ours.reset_parameters()
    theirs.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x, state), theirs(x, state), rtol=0, atol=1e-14)


@pytest.mark.parametrize("kind", TORCH_LAYER)
@pytest.mark.parametrize("engine", ["generic", "fast"])
def test_unroll_matches_torch_layer_outputs_and_gradients(kind, engine, gen):
    cell = make_cell(kind)
    layer = TORCH_LAYER[kind](3, 5, batch_first=True, dtype=DT, **_torch_kwargs(kind))
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(layer, f"{name}_l0").copy_(getattr(cell, name))
    x = torch.randn(2, 9, 3, generator=gen, dtype=DT)
    w = torch.randn(2, 9, 5, generator=gen, dtype=DT)

    ours, _ = bptt.unroll(cell, x, engine=engine)
    theirs, _ = layer(x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-13)
    (ours * w).sum().backward()
    (theirs * w).sum().backward()
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        torch.testing.assert_close(
            getattr(cell, name).grad, getattr(layer, f"{name}_l0").grad, rtol=0, atol=1e-12
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
    ("args", "message"),
    [((0, 4), "input_size"), ((3, -1), "hidden_size"), ((3, 2.5), "hidden_size")],
)
def test_bad_sizes_are_rejected(args, message):
    with pytest.raises(ValueError, match=message):
        bptt.cells.GRU(*args)


def test_bad_nonlinearity_is_rejected():
    with pytest.raises(ValueError, match="nonlinearity"):
        bptt.cells.RNN(3, 4, nonlinearity="sigmoid")


def test_user_cell_without_size_gets_a_clear_error():
    class Bare(nn.Module):
        def forward(self, x_t, state):
            return x_t

    with pytest.raises(TypeError, match="hidden_size"):
        bptt.unroll(Bare(), torch.zeros(1, 2, 3))
