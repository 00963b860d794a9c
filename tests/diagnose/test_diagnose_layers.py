"""The diagnosis of the user's own network: torch recurrent modules of several layers,
bidirectional, time-major, inside a module of theirs, under their loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import bptt
from bptt.diagnose import diagnose, gradient_by_layer, recurrent_layers
from bptt.diagnose._layers import _tapped
from helpers import DT, rounding_tol

KINDS = {
    "rnn-tanh": lambda **kw: nn.RNN(nonlinearity="tanh", **kw),
    "rnn-relu": lambda **kw: nn.RNN(nonlinearity="relu", **kw),
    "lstm": nn.LSTM,
    "gru": nn.GRU,
}


KINDS["lstm-proj"] = lambda **kw: nn.LSTM(proj_size=2, **kw)  # h (B, 2), c (B, 5)


def _module(kind: str, **kwargs) -> nn.RNNBase:
    torch.manual_seed(0)
    return KINDS[kind](input_size=3, hidden_size=5, dtype=DT, **kwargs)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_the_tapped_layers_compute_what_torch_computes(kind, batch_first, bidirectional):
    module = _module(
        kind, num_layers=2, batch_first=batch_first, bidirectional=bidirectional, dropout=0.3
    )
    module.eval()  # dropout between layers off: torch's and ours then agree exactly
    gen = torch.Generator().manual_seed(1)
    shape = (4, 7, 3) if batch_first else (7, 4, 3)
    x = torch.randn(*shape, generator=gen, dtype=DT)
    width = 2 if kind == "lstm-proj" else 5  # what h holds: the projection's P, or H
    h0 = torch.randn(4 if bidirectional else 2, 4, width, generator=gen, dtype=DT)
    c0 = torch.randn(4 if bidirectional else 2, 4, 5, generator=gen, dtype=DT)
    hx = (h0, c0) if kind.startswith("lstm") else h0
    weights = torch.randn(*shape[:2], width * (1 + bidirectional), generator=gen, dtype=DT)

    def run(tapped: bool):
        leaf = x.clone().requires_grad_(True)
        if tapped:
            with _tapped(module) as passes:
                out, final = module(leaf, hx)
            assert len(passes) == (4 if bidirectional else 2)
        else:
            out, final = module(leaf, hx)
        (grad,) = torch.autograd.grad((out * weights).sum(), leaf)
        return out, final, grad

    ours, theirs = run(True), run(False)
    # float64, 2 layers of 7 steps: rounding stays within a few units of 1e-16
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours[1], theirs[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours[2], theirs[2], rtol=1e-12, atol=1e-12)
    assert "forward" not in module.__dict__  # the class's forward again


@pytest.mark.parametrize("kind", ["rnn-tanh", "lstm", "gru", "lstm-proj"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("lengths", [[7, 5, 5, 2], [5, 7, 2, 5]])  # sorted, and not
def test_packed_sequences_run_as_torch_runs_them(kind, bidirectional, lengths):
    module = _module(kind, num_layers=2, batch_first=True, bidirectional=bidirectional)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 7, 3, generator=gen, dtype=DT)
    width = 2 if kind == "lstm-proj" else 5
    weights = torch.randn(4, 7, width * (1 + bidirectional), generator=gen, dtype=DT)
    ordered = lengths == sorted(lengths, reverse=True)

    def run(tapped: bool):
        leaf = x.clone().requires_grad_(True)
        packed = pack_padded_sequence(leaf, lengths, batch_first=True, enforce_sorted=ordered)
        if tapped:
            with _tapped(module) as passes:
                out, final = module(packed)
            assert all(torch.equal(p.lengths.cpu(), torch.tensor(lengths)) for p in passes)
        else:
            out, final = module(packed)
        padded, _ = pad_packed_sequence(out, batch_first=True)
        states = torch.cat([f.flatten() for f in final]) if isinstance(final, tuple) else final
        loss = (padded * weights).sum() + states.sum()  # the outputs and final states
        (grad,) = torch.autograd.grad(loss, leaf)
        return padded, states, grad

    for ours, theirs in zip(run(True), run(False), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_a_packed_batch_is_measured_from_each_sequences_own_end():
    module = _module("gru", batch_first=True, bidirectional=True)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(4, 30, 3, generator=gen, dtype=DT)
    lengths = [30, 20, 10, 25]
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    measured = dict((p.name, m) for p, m in gradient_by_layer(module, packed))
    forward, backward = measured["gru layer 0"], measured["gru layer 0 backward"]
    # read at each sequence's own last step: the forward direction from there back, as
    # far as the longest; the backward direction only at its first step
    assert forward["entered_at"] == 0 and forward["norms"].shape == (30,)
    alone = []
    for b, length in enumerate(lengths):  # each sequence by itself, unpadded
        found = gradient_by_layer(module, x[b : b + 1, :length])[0][1]["norms"]
        alone.append(torch.nn.functional.pad(found, (0, 30 - length), value=math.nan))
    stacked = torch.stack(alone)
    expected = stacked.nan_to_num(0).sum(0) / (~stacked.isnan()).sum(0)
    torch.testing.assert_close(forward["norms"], expected, rtol=1e-10, atol=0)
    assert backward["entered_at"] == 9 and backward["norms"].shape == (1,)


def test_an_unbatched_sequence_runs_as_torch_runs_it():
    module = _module("gru", num_layers=2)
    x = torch.randn(6, 3, dtype=DT)
    with _tapped(module):
        ours, final = module(x)
    theirs, expected = module(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, expected, rtol=1e-12, atol=1e-12)


def _reference_norms(module: nn.RNNBase, x: torch.Tensor, weights: torch.Tensor):
    """||dL/dh_t|| of every layer (one direction, batch first), by a plain autograd loop
    over torch.nn cells with the module's weights: h_t kept, its .grad read."""
    kind = nn.GRUCell if isinstance(module, nn.GRU) else nn.RNNCell
    extra = {} if kind is nn.GRUCell else {"nonlinearity": module.nonlinearity}
    layer_input, kept = x, []
    for layer in range(module.num_layers):
        cell = kind(layer_input.shape[-1], module.hidden_size, dtype=DT, **extra)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(module, f"{name}_l{layer}"))
        h = x.new_zeros(x.shape[0], module.hidden_size)
        states = []
        for t in range(x.shape[1]):
            h = cell(layer_input[:, t], h)
            h.retain_grad()
            states.append(h)
        kept.append(states)
        layer_input = torch.stack(states, 1)
    (layer_input * weights).sum().backward()
    return [torch.stack([h.grad.norm(dim=1) for h in states], 1) for states in kept]  # (B, T)


@pytest.mark.parametrize("kind", ["rnn-tanh", "gru"])
def test_each_layers_gradient_is_the_total_gradient_autograd_gives(kind):
    module = _module(kind, num_layers=3, batch_first=True)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 9, 3, generator=gen, dtype=DT)
    weights = torch.randn(4, 9, 5, generator=gen, dtype=DT)
    measured = gradient_by_layer(module, x, loss_fn=lambda out: (out[0] * weights).sum())
    expected = _reference_norms(module, x, weights)
    assert [passed.name for passed, _ in measured] == [f"{kind[:3]} layer {i}" for i in range(3)]
    for (passed, numbers), reference in zip(measured, expected, strict=True):
        torch.testing.assert_close(passed.record.norms, reference, rtol=1e-10, atol=1e-14)
        # by distance: the batch's mean, the last step first
        torch.testing.assert_close(numbers["norms"], reference.mean(0).flip(0), rtol=1e-10, atol=0)


class _Classifier(nn.Module):
    """A user's module: a batch norm, a time-major 2-layer bidirectional LSTM, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(3)
        self.encoder = nn.LSTM(3, 8, num_layers=2, bidirectional=True, dropout=0.5)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (T, B, 3)
        x = self.norm(x.permute(1, 2, 0)).permute(2, 0, 1)
        out, _ = self.encoder(x)
        return self.head(out[-1])


def test_a_users_network_is_left_as_it_was():
    torch.manual_seed(0)
    model = _Classifier().train()  # dropout and the batch norm's statistics live
    x, y = torch.randn(30, 6, 3), torch.randint(0, 4, (6,))
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    found = diagnose(model, x, y=y, loss_fn=nn.functional.cross_entropy)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), rng)
    assert "forward" not in model.encoder.__dict__
    names = [layer.name for layer in found.layers]
    assert names == [
        "encoder layer 0",
        "encoder layer 0 backward",
        "encoder layer 1",
        "encoder layer 1 backward",
    ]
    assert found.verdict in ("exploding", "vanishing", "healthy")
    assert found.to_dict()["layers"][3]["name"] == "encoder layer 1 backward"


def _rnn_with_layer_scaled(layer: int, scale: float, direction: str = "") -> nn.RNN:
    module = _module("rnn-tanh", num_layers=2, batch_first=True, bidirectional=bool(direction))
    with torch.no_grad():
        for name, weight in module.named_parameters():
            if name.startswith("weight_hh"):
                nn.init.orthogonal_(weight)  # gradients kept: a healthy start
        getattr(module, f"weight_hh_l{layer}{direction}").mul_(scale)
    return module


def test_the_verdict_names_the_layer_where_the_gradient_vanishes():
    module = _rnn_with_layer_scaled(1, 0.05)  # the second layer forgets at once
    x = torch.randn(8, 60, 3, dtype=DT, generator=torch.Generator().manual_seed(3))
    found = diagnose(module, x)
    by_name = {layer.name: layer.verdict for layer in found.layers}
    assert by_name["rnn layer 1"] == "vanishing"
    assert found.verdict == "vanishing" and found.reasons[0].startswith("rnn layer 1:")
    assert found.remedies and all(str(r).startswith("rnn layer 1: ") for r in found.remedies)
    assert all(r.layer == "rnn layer 1" for r in found.remedies)


def test_the_verdict_names_the_direction_that_explodes():
    module = _rnn_with_layer_scaled(0, 3.0, "_reverse")  # only the backward direction
    x = 0.01 * torch.randn(8, 40, 3, dtype=DT, generator=torch.Generator().manual_seed(4))
    found = diagnose(module, x)
    verdicts = {layer.name: layer.verdict for layer in found.layers}
    assert verdicts["rnn layer 0 backward"] == "exploding"
    assert verdicts["rnn layer 0"] != "exploding"
    assert found.verdict == "exploding" and "rnn layer 0 backward" in found.reasons[0]
    # read at the last step, the top layer's backward direction gets its gradient at its
    # first step only: nothing travels through its recurrence, and it is said so
    top = next(layer for layer in found.layers if layer.name == "rnn layer 1 backward")
    assert top.verdict == "healthy" and "at one step only (distance 39" in top.reasons[0]


def test_a_curve_starts_where_the_gradient_enters():
    from bptt.diagnose import by_distance

    norms = torch.tensor([[0.5, 1.0, 0.0, 0.0]], dtype=DT)  # by step; the last two unreached
    measured = by_distance(norms, torch.zeros(4), torch.zeros(4), DT)
    assert measured["entry"] == 2 and measured["ratios"][2:].tolist() == [1.0, 0.5]
    assert measured["horizon"] is None and measured["underflow_at"] is None
    nothing = by_distance(torch.zeros(1, 3, dtype=DT), torch.zeros(3), torch.zeros(3), DT)
    assert nothing["entry"] is None


def test_a_one_layer_batch_first_module_is_still_diagnosed_as_a_cell():
    module = _module("gru", batch_first=True)
    found = diagnose(module, torch.randn(4, 20, 3, dtype=DT))
    assert found.layers == [] and found.name is None


@pytest.mark.parametrize(
    ("call", "error", "needle"),
    [
        (lambda m, x: diagnose(m, x, y=x), ValueError, "y is given without loss_fn"),
        (lambda m, x: diagnose(m, x * math.nan), ValueError, "non-finite"),
        (lambda m, x: diagnose(m, x, state=x[0]), ValueError, "state applies to a cell"),
        (lambda m, x: diagnose(m, x, loss_fn=5), TypeError, "loss_fn"),
        (lambda m, x: diagnose(m, x, loss_fn=lambda out: out[0]), ValueError, "scalar"),
    ],
)
def test_what_the_layered_diagnosis_cannot_take_is_named(call, error, needle):
    module = _module("lstm", num_layers=2, batch_first=True)
    with pytest.raises(error, match=needle):
        call(module, torch.randn(2, 5, 3, dtype=DT))
    assert "forward" not in module.__dict__


def test_recurrent_layers_finds_each_module_by_name():
    model = _Classifier()
    assert [name for name, _ in recurrent_layers(model)] == ["encoder"]
    assert recurrent_layers(nn.Linear(2, 2)) == []
    with pytest.raises(TypeError, match=r"holds no torch\.nn\.RNN"):
        gradient_by_layer(nn.Linear(2, 2), torch.randn(2, 2))


def test_a_network_whose_weights_hold_nan_is_exploding_naming_them():
    model = _Classifier()
    with torch.no_grad():
        model.encoder.weight_hh_l1[0, 0] = math.nan
    found = diagnose(model, torch.randn(10, 3, 3))
    assert found.verdict == "exploding" and "encoder.weight_hh_l1" in found.reasons[0]


class _Regressor(nn.Module):
    """A 2-layer LSTM read at the last step by a linear head of the user's."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lstm = nn.LSTM(3, 8, num_layers=2, batch_first=True)
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0][:, -1])


def test_a_head_that_overflows_is_blamed_not_the_recurrence():
    model = _Regressor()
    with torch.no_grad():
        model.head.weight.fill_(3e38)  # float32's largest is 3.4e38: the output overflows
    x, y = torch.randn(4, 20, 3), torch.randn(4, 1)
    found = diagnose(model, x, y=y, loss_fn=nn.functional.mse_loss)
    assert found.verdict == "exploding" and "the head or the loss" in found.reasons[0]
    assert found.remedies[0].change == "inspect_head" and len(found.layers) == 2
    sound = _Regressor()  # the same network with its head as initialised
    assert "the head" not in diagnose(sound, x, y=y, loss_fn=nn.functional.mse_loss).reasons[0]


# bptt cells inside the user's module: each unroll of one is a layer, named by its path


class _Stacked(nn.Module):
    """A user's stack of bptt cells, as a multi-layer SequenceModel holds them: a
    ModuleList of cells, each unrolled with bptt.unroll on the outputs of the one
    before, and a linear readout of every step."""

    def __init__(self, engine: str = "auto") -> None:
        super().__init__()
        torch.manual_seed(3)
        self.cells = nn.ModuleList(
            [bptt.cells.LSTMCell(3, 5, dtype=DT), bptt.cells.GRUCell(5, 4, dtype=DT)]
        )
        self.head = nn.Linear(4, 2, dtype=DT)
        self.engine = engine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for cell in self.cells:
            x, _ = bptt.unroll(cell, x, engine=self.engine)
        return self.head(x)  # (B, T, 2)


def _reference_state_gradients(model: _Stacked, x: torch.Tensor, weights: torch.Tensor):
    """||dL/ds_t|| of each cell (B, T), by a plain loop over torch.nn cells holding the
    model's weights: s_t = (h_t, c_t) as the input of everything after step t (a clone
    of each part, which alone is read after step t), its gradient by autograd.grad."""
    torch_cells = [nn.LSTMCell(3, 5, dtype=DT), nn.GRUCell(5, 4, dtype=DT)]
    for theirs, ours in zip(torch_cells, model.cells, strict=True):
        theirs.load_state_dict(ours.state_dict())
    layer_input, kept = x, []
    for cell in torch_cells:
        state, states, outputs = None, [], []
        for t in range(x.shape[1]):
            stepped = cell(layer_input[:, t], state)
            parts = stepped if isinstance(stepped, tuple) else (stepped,)
            after = tuple(p.clone() for p in parts)  # s_t as read after step t
            states.append(after)
            outputs.append(after[0])
            state = after if isinstance(stepped, tuple) else after[0]
        kept.append(states)
        layer_input = torch.stack(outputs, 1)
    loss = (model.head(layer_input) * weights).sum()
    flat = [p for states in kept for s in states for p in s]
    found = torch.autograd.grad(loss, flat, allow_unused=True)  # the last c_t: unread
    grads = iter(torch.zeros_like(p) if g is None else g for p, g in zip(flat, found, strict=True))
    norms = []
    for states in kept:
        per_step = []
        for s in states:
            parts = [next(grads) for _ in s]
            per_step.append(torch.cat(parts, 1).norm(dim=1))
        norms.append(torch.stack(per_step, 1))  # (B, T)
    return norms


@pytest.mark.parametrize("engine", ["generic", "fast"])
def test_a_stack_of_bptt_cells_is_measured_as_autograd_measures_it(engine):
    model = _Stacked(engine)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(4, 9, 3, generator=gen, dtype=DT)
    weights = torch.randn(4, 9, 2, generator=gen, dtype=DT)
    measured = gradient_by_layer(model, x, loss_fn=lambda out: (out * weights).sum())
    expected = _reference_state_gradients(model, x, weights)
    assert [passed.name for passed, _ in measured] == ["cells.0", "cells.1"]
    assert [passed.layer for passed, _ in measured] == [None, None]
    assert measured[0][0].cell is model.cells[0]  # the model's own cell, not a copy
    # float64: 2 layers of 9 steps of products of width <= 20, terms of the size of
    # the largest gradient; rounding alone moves each norm by far less than this
    for (passed, numbers), reference in zip(measured, expected, strict=True):
        tol = rounding_tol(2 * 9 * 20 * 4, float(reference.max()))
        torch.testing.assert_close(passed.record.norms, reference, rtol=0, atol=tol)
        torch.testing.assert_close(numbers["norms"], reference.mean(0).flip(0), rtol=0, atol=tol)
        assert numbers["entered_at"] == 0


def test_a_stack_of_bptt_cells_is_left_as_it_was():
    model = _Stacked()
    x = torch.randn(4, 12, 3, dtype=DT)
    y = torch.randn(4, 12, 2, dtype=DT)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.25)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    found = diagnose(model, x, y=y, loss_fn=nn.functional.mse_loss)
    assert [layer.name for layer in found.layers] == ["cells.0", "cells.1"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert all(torch.equal(p.grad, torch.full_like(p, 0.25)) for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    assert "saturation/f" in found.layers[0].numbers and "saturation/z" in found.layers[1].numbers
    # with no loss, a module of several cells is diagnosed by layer all the same
    assert [layer.name for layer in diagnose(model, x).layers] == ["cells.0", "cells.1"]
    # and outside a diagnosis, unroll is as it was: no taps, no watch
    from bptt.engine._unroll import _EXTRA_TAPS

    assert _EXTRA_TAPS.get() is None


def test_a_frozen_stack_of_cells_is_measured_all_the_same():
    model = _Stacked().requires_grad_(False)  # no weight asks for a gradient
    x = torch.randn(2, 6, 3, dtype=DT)
    measured = gradient_by_layer(model, x)
    assert all(bool((passed.record.norms > 0).all()) for passed, _ in measured)


class _BothWays(nn.Module):
    """A user's bidirectional layer built by hand: one cell run on the sequence and on
    it flipped, the second call's outputs flipped back."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.cell = bptt.cells.RNNCell(3, 5, dtype=DT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        forward, _ = bptt.unroll(self.cell, x)
        backward, _ = bptt.unroll(self.cell, x.flip(1))
        return torch.cat([forward, backward.flip(1)], -1)[:, -1]


def test_a_cell_unrolled_twice_is_two_passes_by_call():
    model = _BothWays()
    x = torch.randn(3, 8, 3, dtype=DT)
    measured = dict((p.name, m) for p, m in gradient_by_layer(model, x))
    assert list(measured) == ["cell[call 0]", "cell[call 1]"]
    # each along its own unroll's time axis: the first is read at its last step; the
    # second (the flipped input) at its last output flipped back, its own first step
    assert measured["cell[call 0]"]["entered_at"] == 0
    assert measured["cell[call 1]"]["entered_at"] == 7
    found = diagnose(model, x)
    assert [layer.name for layer in found.layers] == ["cell[call 0]", "cell[call 1]"]


class _Mixed(nn.Module):
    """A torch GRU, then a bptt LSTM cell on its outputs, then a head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.encoder = nn.GRU(3, 6, batch_first=True, bidirectional=True, dtype=DT)
        self.decoder = bptt.cells.LSTMCell(12, 4, dtype=DT)
        self.head = nn.Linear(4, 1, dtype=DT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.encoder(x)
        out, _ = bptt.unroll(self.decoder, out)
        return self.head(out[:, -1])


def test_a_module_holding_torch_layers_and_bptt_cells_gets_both():
    model = _Mixed()
    assert [name for name, _ in recurrent_layers(model)] == ["encoder", "decoder"]
    x = torch.randn(4, 10, 3, dtype=DT)
    found = diagnose(model, x)
    names = [layer.name for layer in found.layers]
    assert names == ["encoder layer 0", "encoder layer 0 backward", "decoder"]
    assert "forward" not in model.encoder.__dict__


def test_a_module_with_no_recurrence_is_refused_after_its_forward():
    with pytest.raises(TypeError, match=r"ran no bptt\.unroll of a cell it holds"):
        gradient_by_layer(nn.Sequential(nn.Linear(3, 2)), torch.randn(2, 3))


def test_recurrent_layers_lists_bptt_cells_but_not_a_cells_own_parts():
    model = nn.ModuleDict(
        {"deep": bptt.cells.DeepLRUCell(3, 4, layers=2), "gru": bptt.cells.GRUCell(3, 4)}
    )
    assert [name for name, _ in recurrent_layers(model)] == ["deep", "gru"]


def test_a_sequence_model_given_a_loss_is_diagnosed_by_its_cell_path():
    model = bptt.SequenceModel(bptt.cells.OrthogonalRNNCell(3, 6, dtype=DT), 1)
    x, y = torch.randn(4, 15, 3, dtype=DT), torch.randn(4, 1, dtype=DT)
    found = diagnose(model, x, y=y, loss_fn=lambda out, y: nn.functional.mse_loss(out[0], y))
    assert [layer.name for layer in found.layers] == ["cells.0"]
    assert not any(k.startswith("saturation/") for k in found.layers[0].numbers)
    # an orthogonal recurrence keeps the gradient: no layer is said to lose it
    assert found.verdict == "healthy"


def test_an_lstm_with_a_projection_is_diagnosed_layer_by_layer():
    module = _module("lstm-proj", num_layers=2, batch_first=True, bidirectional=True)
    x = torch.randn(3, 12, 3, dtype=DT)
    found = diagnose(module, x)
    assert [layer.name for layer in found.layers] == [
        "lstm layer 0",
        "lstm layer 0 backward",
        "lstm layer 1",
        "lstm layer 1 backward",
    ]
    numbers = found.layers[0].numbers
    assert numbers["rho"] is not None and "saturation/f" in numbers
    assert "forward" not in module.__dict__
    # the projected cell's step is torch's: one step of a one-layer module
    from bptt.diagnose._projected import projected_copy

    one = _module("lstm-proj", batch_first=True)
    cell = projected_copy(one, "_l0")
    h, c = cell(x[:, 0], cell.initial_state(3, dtype=DT))
    _, (h_n, c_n) = one(x[:, :1])
    torch.testing.assert_close(h, h_n[0], rtol=0, atol=rounding_tol(40, 1.0))
    torch.testing.assert_close(c, c_n[0], rtol=0, atol=rounding_tol(40, 1.0))
    with pytest.raises(ValueError, match="proj_size must be"):
        type(cell)(3, 4, 4)
