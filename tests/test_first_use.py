"""What a newcomer calls first, answered with a result or a clear error: torch's own
cells in ``unroll``, NaN inputs and weights, the attractor picture, the engine switch."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch

import bptt
from bptt.diagnose import NUMBER_KEYS, diagnose
from bptt.diagnose.attractor import basin_gradient_map, plot_basin_gradients, two_basin_cell
from bptt.engine import require_generic

DT = torch.float64


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_torch_cells_unroll_without_a_state_as_torch_runs_them(kind, gen):
    cell = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell, "rnn": torch.nn.RNNCell}[kind]
    cell = cell(2, 6, dtype=DT)
    x = torch.randn(3, 7, 2, generator=gen, dtype=DT)
    outputs, final = bptt.unroll(cell, x)
    state, expected = None, []
    for x_t in x.unbind(1):  # torch's own loop, from torch's own zero state
        state = cell(x_t, state)
        expected.append(state[0] if kind == "lstm" else state)
    torch.testing.assert_close(outputs, torch.stack(expected, 1), rtol=0, atol=0)
    torch.testing.assert_close(final, state, rtol=0, atol=0)


def test_the_finite_scan_of_the_inputs_is_asked_for(gen):
    cell = bptt.cells.GRUCell(2, 3)
    x = torch.randn(2, 5, 2, generator=gen)
    x[1, 3, 0] = math.nan
    outputs, _ = bptt.unroll(cell, x)  # by default no scan: the NaN flows to the outputs
    assert not torch.isfinite(outputs[1, 3:]).any() and torch.isfinite(outputs[0]).all()
    with pytest.raises(ValueError, match=r"non-finite value \(nan\) at sample 1, step 3"):
        bptt.unroll(cell, x, check_finite=True)


def test_a_model_with_nan_weights_is_diagnosed_as_exploding_not_a_linalg_error(gen):
    model = bptt.SequenceModel(bptt.cells.LSTMCell(2, 8), 1)
    with torch.no_grad():
        model.cell.weight_hh[3, 1] = math.nan
        model.head.weight[0, 0] = math.inf
    found = diagnose(model, torch.randn(4, 10, 2, generator=gen), 5)
    assert found.verdict == "exploding"
    assert "cells.0.weight_hh" in found.reasons[0] and "head.weight" in found.reasons[0]
    assert set(NUMBER_KEYS) <= set(found.numbers) and found.numbers["dependency_length"] == 5
    assert found.remedies and found.norms.shape == (10,) and found.norms.isnan().all()
    assert found.to_dict()["norms"] == [None] * 10  # JSON-ready


def test_diagnose_refuses_what_is_not_a_model_or_a_probe(gen):
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        diagnose("lstm", torch.randn(2, 5, 1))
    with pytest.raises(ValueError, match=r"x must be a probe batch of shape \(B, T, F\)"):
        diagnose(bptt.cells.RNNCell(1, 4), torch.randn(5, 1))


def test_the_diagnosis_always_has_its_stable_keys(gen):
    class Plain(torch.nn.Module):  # a user cell: no weight_hh, no gates
        def __init__(self):
            super().__init__()
            self.hidden_size = 4
            self.linear = torch.nn.Linear(5, 4)

        def forward(self, x_t, state):
            return torch.tanh(self.linear(torch.cat([x_t, state], -1)))

    found = diagnose(Plain(), torch.randn(3, 6, 1, generator=gen))
    assert set(NUMBER_KEYS) <= set(found.numbers) and found.numbers["rho"] is None


def test_an_overflowing_jacobian_is_an_infinite_norm_not_an_svd_error():
    # h1 = 0 exactly is the saddle: the gradient there grows by 2 a step, past 1e308
    result = basin_gradient_map(two_basin_cell(), resolution=3, steps=1100)
    norms = result["norms"]
    assert torch.isinf(norms[:, 1]).all()  # the column of starts with h1 = 0
    assert (norms[:, [0, 2]] == 0).all()  # inside the basins: underflowed to 0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 10_001}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"resolution": 1}, "resolution"),
        ({"resolution": True}, "resolution"),
        ({"extent": -1.0}, "extent"),
        ({"extent": math.nan}, "extent"),
    ],
)
def test_the_attractor_map_refuses_bad_settings_by_name(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=f"^{name} must be"):
        basin_gradient_map(two_basin_cell(), **kwargs)


def test_drawing_the_figure_leaves_the_callers_backend_alone(tmp_path):
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a notebook's or a GUI's choice, say
    try:
        result = basin_gradient_map(two_basin_cell(), resolution=5, steps=3)
        path = plot_basin_gradients(result, tmp_path / "picture.svg")
        assert matplotlib.get_backend() == "svg"
        assert path.read_text().lstrip().startswith("<?xml")
        with pytest.raises(ValueError, match="image format"):
            plot_basin_gradients(result, tmp_path / "picture.txt")
    finally:
        matplotlib.use(before)


def test_require_generic_picks_autograd_for_auto_and_refuses_fast(gen):
    cell = bptt.cells.LSTMCell(2, 4, dtype=DT)
    x = torch.randn(2, 6, 2, generator=gen, dtype=DT)
    fast, _ = bptt.unroll(cell, x)
    with require_generic("the graph is differentiated twice"):
        generic, _ = bptt.unroll(cell, x)
        with pytest.raises(ValueError, match="differentiated twice; use 'auto' or 'generic'"):
            bptt.unroll(cell, x, engine="fast")
        # double backward works here: what the fast engine's own backward refuses
        (grad,) = torch.autograd.grad(generic.sum(), cell.weight_hh, create_graph=True)
        grad.sum().backward()
    torch.testing.assert_close(generic, fast)  # the same numbers either way
    assert bptt.unroll(cell, x, engine="fast")[0].grad_fn is not None  # outside: fast again


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_torch_recurrent_layers_are_diagnosed_through_a_copy_of_their_cell(kind, gen):
    from bptt.diagnose._trajectory import cell_of

    layer = getattr(torch.nn, kind)(2, 6, batch_first=True, dtype=DT)
    x = torch.randn(3, 9, 2, generator=gen, dtype=DT)
    cell = cell_of(layer)
    outputs, _ = bptt.unroll(cell, x)
    reference, _ = layer(x)  # torch's own fused layer: the copy computes the same function
    torch.testing.assert_close(outputs, reference, rtol=0, atol=1e-13)
    found, direct = diagnose(layer, x, 5), diagnose(cell, x, 5)
    assert found.verdict == direct.verdict and found.numbers == direct.numbers


def test_what_cannot_be_diagnosed_says_what_is_needed(gen):
    x = torch.randn(2, 5, 2, generator=gen)
    with pytest.raises(TypeError, match=r"recurrent_cell\(\) method"):
        diagnose(torch.nn.Linear(2, 4), x)


def test_stacked_and_bidirectional_torch_layers_are_diagnosed_layer_by_layer(gen):
    x = torch.randn(2, 5, 2, generator=gen)
    stacked = diagnose(torch.nn.LSTM(2, 4, num_layers=2, batch_first=True), x)
    assert [layer.name for layer in stacked.layers] == ["lstm layer 0", "lstm layer 1"]
    both = diagnose(torch.nn.GRU(2, 4, bidirectional=True, batch_first=True), x)
    assert [layer.name for layer in both.layers] == ["gru layer 0", "gru layer 0 backward"]


def test_a_users_model_gives_its_cell_through_the_adapter(gen):
    class Tagger(torch.nn.Module):  # unrolls a torch LSTMCell itself
        def __init__(self):
            super().__init__()
            self.step = torch.nn.LSTMCell(2, 8)
            self.out = torch.nn.Linear(8, 3)

        def recurrent_cell(self):
            return self.step

    model = Tagger()
    x = torch.randn(4, 12, 2, generator=gen)
    found = diagnose(model, x)
    copy = bptt.cells.LSTMCell(2, 8)
    copy.load_state_dict(model.step.state_dict())
    assert found.numbers == diagnose(copy, x).numbers


def test_a_vanishing_lstm_is_not_told_to_use_a_gated_cell(gen):
    cell = bptt.cells.LSTMCell(1, 16)
    with torch.no_grad():
        cell.bias_ih[16:32].fill_(-8.0)  # forget gates shut: nothing is carried
    found = diagnose(cell, torch.randn(4, 60, 1, generator=gen))
    assert found.verdict == "vanishing"
    assert not any(remedy.change == "gated_cell" for remedy in found.remedies)
    assert found.remedies[0].change == "chrono_init" and "chrono" in found.remedies[0].why
