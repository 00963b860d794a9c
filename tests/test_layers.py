"""SequenceModel with several layers and both directions: held to torch.nn.RNN/LSTM/GRU
of as many layers with copied weights (float64), outputs, final states and every
gradient; taps per layer against autograd; state, dropout, loading and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bptt
from bptt.model import SequenceModel
from bptt.run import ConfigError, TrainConfig
from bptt.taps import RecordNorms
from helpers import DT, rounding_tol

TORCH_LAYERS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
OURS = {"rnn": bptt.cells.RNNCell, "lstm": bptt.cells.LSTMCell, "gru": bptt.cells.GRUCell}
F, H, OUT = 3, 5, 2


def _pair(kind: str, layers: int, bidirectional: bool, readout: str, engine: str = "auto"):
    """A torch layer of ``layers`` layers and our model with its weights copied."""
    torch.manual_seed(0)
    theirs = TORCH_LAYERS[kind](
        F, H, num_layers=layers, batch_first=True, bidirectional=bidirectional, dtype=DT
    )
    directions = 2 if bidirectional else 1

    def copy(layer: int, suffix: str) -> nn.Module:
        cell = OURS[kind](F if layer == 0 else directions * H, H, dtype=DT)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(theirs, f"{name}_l{layer}{suffix}"))
        return cell

    forward = [copy(layer, "") for layer in range(layers)]
    reverse = [copy(layer, "_reverse") for layer in range(layers)] if bidirectional else None
    ours = SequenceModel(forward, OUT, readout=readout, engine=engine, reverse=reverse)
    return theirs, ours


def _their_prediction(theirs: nn.Module, head: nn.Linear, x, readout: str, bidirectional: bool):
    out, _ = theirs(x)  # (B, T, D H)
    if readout == "all":
        return head(out)
    if bidirectional:  # the backward direction has read the whole sequence at step 0
        return head(torch.cat([out[:, -1, :H], out[:, 0, H:]], dim=-1))
    return head(out[:, -1])


def _final_hidden(state, kind: str) -> list[torch.Tensor]:
    """Our final state (one per unroll) as torch's h_n rows."""
    return [s[0] if kind == "lstm" else s for s in state]  # every model here has several


@pytest.mark.parametrize("engine", ["generic", "fast"])
@pytest.mark.parametrize("readout", ["last", "all"])
@pytest.mark.parametrize(
    ("kind", "layers", "bidirectional"),
    [("lstm", 2, False), ("lstm", 2, True), ("gru", 3, False), ("gru", 2, True), ("rnn", 2, True)],
)
def test_outputs_states_and_every_gradient_equal_torchs_layers(
    kind, layers, bidirectional, readout, engine
):
    theirs, ours = _pair(kind, layers, bidirectional, readout, engine)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 9, F, dtype=DT, generator=gen)
    target_shape = (4, OUT) if readout == "last" else (4, 9, OUT)
    weights = torch.randn(target_shape, dtype=DT, generator=gen)
    x_ours, x_theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)

    y, state = ours(x_ours)
    expected = _their_prediction(theirs, ours.head, x_theirs, readout, bidirectional)
    _, h_n = theirs(x)
    h_n = h_n[0] if kind == "lstm" else h_n  # (L D, B, H), the order of ours.unrolls
    # float64, 3 layers of 9 steps of sums of about 10 terms each: far below 1e-12
    tol = rounding_tol(layers * 9 * 12, 10.0)
    torch.testing.assert_close(y, expected, rtol=0, atol=tol)
    finals = _final_hidden(state, kind)
    assert len(finals) == len(ours.unrolls) == h_n.shape[0]
    for unit, ((layer, direction), h) in enumerate(zip(ours.unrolls, finals, strict=True)):
        torch.testing.assert_close(h, h_n[unit], rtol=0, atol=tol, msg=f"{layer}, {direction}")

    (y * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=0, atol=tol)
    for unit, cell in zip(ours.unrolls, ours.recurrent_cells(), strict=True):
        layer, direction = unit
        suffix = "_reverse" if direction else ""
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            mine = getattr(cell, name).grad
            torch.testing.assert_close(
                mine, getattr(theirs, f"{name}_l{layer}{suffix}").grad, rtol=0, atol=tol
            )


def test_a_state_carried_over_continues_the_sequence_as_one_pass():
    _, ours = _pair("lstm", 2, False, "all")
    x = torch.randn(3, 12, F, dtype=DT, generator=torch.Generator().manual_seed(2))
    whole, final = ours(x)
    first, middle = ours(x[:, :5])
    second, end = ours(x[:, 5:], state=middle)
    tol = rounding_tol(2 * 12 * 12, 10.0)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=0, atol=tol)
    for a, b in zip(final, end, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=tol)
    with pytest.raises(ValueError, match="one state per unroll"):
        ours(x, state=middle[:1])


def _states_by_hand(ours: SequenceModel, x: torch.Tensor):
    """The two layers run step by step with every state kept as a graph node, and the
    prediction: the reference for what the taps see (dL/dh_t of each layer)."""
    states, inputs = [], x
    for cell in ours.cells:
        h = torch.zeros(x.shape[0], H, dtype=DT)
        layer = []
        for t in range(x.shape[1]):
            h = cell(inputs[:, t], h)
            layer.append(h)
        states.append(layer)
        inputs = torch.stack(layer, dim=1)
    return states, ours.head(inputs[:, -1])


def test_taps_given_per_layer_see_each_layers_own_gradient():
    _, ours = _pair("gru", 2, False, "last")
    x = torch.randn(4, 8, F, dtype=DT, generator=torch.Generator().manual_seed(3))
    records = {(0, 0): RecordNorms(), (1, 0): RecordNorms()}
    y, _ = ours(x, taps={unit: [tap] for unit, tap in records.items()})
    y.sum().backward()
    states, expected = _states_by_hand(ours, x)
    grads = torch.autograd.grad(expected.sum(), [h for layer in states for h in layer])
    tol = rounding_tol(2 * 8 * 12, 10.0)
    for layer in (0, 1):
        by_hand = torch.stack([g.norm(dim=1) for g in grads[layer * 8 : (layer + 1) * 8]], 1)
        torch.testing.assert_close(records[(layer, 0)].norms, by_hand, rtol=0, atol=tol)


def test_a_shared_tap_runs_in_every_unroll_and_a_recording_one_must_be_given_per_unroll():
    _, ours = _pair("lstm", 2, True, "last")
    x = torch.randn(2, 6, F, dtype=DT)
    seen: list[int] = []
    y, _ = ours(x, taps=[lambda t, delta: seen.append(t) or delta])
    y.sum().backward()
    assert len(seen) == 4 * 6  # every step of every layer and direction
    with pytest.raises(ValueError, match="give it to one"):
        ours(x, taps=[RecordNorms()])
    with pytest.raises(ValueError, match=r"names unrolls this model has not: \[\(2, 0\)\]"):
        ours(x, taps={(2, 0): []})


def test_dropout_falls_between_layers_in_training_only():
    torch.manual_seed(0)
    cells = [bptt.cells.LSTMCell(F, H, dtype=DT), bptt.cells.LSTMCell(H, H, dtype=DT)]
    ours = SequenceModel(cells, OUT, readout="all", dropout=0.5)  # the fast engine
    x = torch.randn(3, 7, F, dtype=DT)

    def by_hand(training: bool) -> torch.Tensor:  # the same draws from the same generator
        first, _ = bptt.unroll(cells[0], x, engine="generic")
        dropped = nn.functional.dropout(first, 0.5, training)
        return ours.head(bptt.unroll(cells[1], dropped, engine="generic")[0])

    for training in (True, False):
        ours.train(training)
        torch.manual_seed(5)
        mine = ours(x)[0]
        torch.manual_seed(5)
        # the same elements dropped whatever the engine's layout: rounding alone differs
        tol = rounding_tol(2 * 7 * 12, 10.0)
        torch.testing.assert_close(mine, by_hand(training), rtol=0, atol=tol)
    ours.train()
    torch.manual_seed(5)
    dropped = ours(x)[0]
    ours.eval()
    assert not torch.equal(dropped, ours(x)[0])


def test_a_one_cell_model_saved_before_layers_loads():
    torch.manual_seed(0)
    model = SequenceModel(bptt.cells.RNNCell(F, H), OUT)
    old = {k.replace("cells.0.", "cell."): v.clone() for k, v in model.state_dict().items()}
    assert "cell.weight_hh" in old
    fresh = SequenceModel(bptt.cells.RNNCell(F, H), OUT)
    fresh.load_state_dict(old)
    for name, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    assert fresh.cell is fresh.cells[0]


@pytest.mark.parametrize(
    ("build", "error", "needle"),
    [
        (lambda: SequenceModel([], OUT), TypeError, "non-empty sequence of cells"),
        (lambda: SequenceModel("lstm", OUT), TypeError, "non-empty sequence of cells"),
        (lambda: SequenceModel([bptt.cells.RNNCell(F, H), 3], OUT), TypeError, "must hold cells"),
        (
            lambda: SequenceModel([bptt.cells.RNNCell(F, H), bptt.cells.RNNCell(F, H)], OUT),
            ValueError,
            "layer 1's RNNCell reads 3 features, but layer 0 writes 5",
        ),
        (
            lambda: SequenceModel(
                [bptt.cells.RNNCell(F, H), bptt.cells.RNNCell(H, H)],
                OUT,
                reverse=[bptt.cells.RNNCell(F, H), bptt.cells.RNNCell(H, H)],
            ),
            ValueError,
            "layer 1's RNNCell reads 5 features, but layer 0 writes 10",
        ),
        (
            lambda: SequenceModel(
                [bptt.cells.RNNCell(F, H)], OUT, reverse=[bptt.cells.RNNCell(F, H)] * 2
            ),
            ValueError,
            "one cell per layer",
        ),
        (lambda: SequenceModel(bptt.cells.RNNCell(F, H), OUT, dropout=1.0), ValueError, "below 1"),
        (lambda: SequenceModel(bptt.cells.RNNCell(F, H), OUT, dropout=-0.1), ValueError, ">= 0"),
        (lambda: SequenceModel(bptt.cells.RNNCell(F, H), OUT, dropout="x"), TypeError, "real"),
    ],
)
def test_bad_layers_are_refused_with_what_is_wrong(build, error, needle):
    with pytest.raises(error, match=needle):
        build()


def test_the_one_cell_name_of_a_model_of_several_says_what_to_use():
    model = SequenceModel([bptt.cells.RNNCell(F, H), bptt.cells.RNNCell(H, H)], OUT)
    with pytest.raises(AttributeError, match=r"no single cell: use model\.cells"):
        _ = model.cell
    assert not hasattr(model, "cell")
    with pytest.raises(AttributeError, match="no single cell"):
        model.cell = bptt.cells.RNNCell(F, H)
    one = SequenceModel(bptt.cells.RNNCell(F, H), OUT, reverse=[])  # empty: forward only
    replacement = bptt.cells.RNNCell(F, H)
    one.cell = replacement  # replaces the cell, registers nothing beside it
    assert one.cell is replacement and one.cells[0] is replacement
    assert sorted(one.state_dict()) == sorted(
        [f"cells.0.{n}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        + ["head.weight", "head.bias"]
    )
    assert model.num_layers == 2 and not model.bidirectional
    assert model.unrolls == [(0, 0), (1, 0)]


# --- in a training config and on the command line ----------------------------------------

RUN = {"task": "adding", "length": 8, "hidden": 6, "steps": 6, "batch_size": 8}


def test_a_config_of_layers_builds_them_each_reading_the_one_below():
    from bptt.run import build_model
    from bptt.tasks import make_task

    config = TrainConfig(**RUN, cell="gru", layers=3, bidirectional=True, dropout=0.2)
    model = build_model(config, make_task("adding", 8))
    assert model.num_layers == 3 and model.bidirectional and model.dropout == 0.2
    assert [c.input_size for c in model.cells] == [2, 12, 12]
    assert model.head.in_features == 12
    assert config.differing_fields(TrainConfig(**RUN, cell="gru")) == [
        "bidirectional",
        "dropout",
        "layers",
    ]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"layers": 0}, "layers"),
        ({"layers": 65}, "layers"),
        ({"layers": 2, "dropout": 1.0}, "dropout"),
        ({"dropout": 0.1}, "dropout"),  # one layer: nothing between layers
        ({"task": "echo", "bidirectional": True}, "bidirectional"),
        ({"layers": 2, "dropout": 0.1, "optimizer": "hf", "clip": "none"}, "dropout"),
    ],
)
def test_bad_layer_settings_name_their_field(fields, field):
    with pytest.raises(ConfigError) as found:
        TrainConfig(**{**RUN, **fields})
    assert found.value.field == field


def test_a_recipe_initialises_every_layer_and_a_recurrent_rate_reaches_every_layer():
    from bptt.run import build_model
    from bptt.run.training._build import make_optimizer
    from bptt.tasks import make_task

    config = TrainConfig(**RUN, method="lstm-chrono-adam", layers=2, bidirectional=True)
    model = build_model(config, make_task("adding", 8))
    hidden = config.hidden
    for cell in model.recurrent_cells():  # chrono: the input gates' bias is -(forget's)
        forget = cell.bias_ih[hidden : 2 * hidden] + cell.bias_hh[hidden : 2 * hidden]
        assert bool((forget > 0).all()) and not torch.equal(forget, torch.zeros(hidden))
    rates = TrainConfig(**RUN, cell="rnn", layers=2, lr_recurrent=1e-4)
    model = build_model(rates, make_task("adding", 8))
    groups = make_optimizer(rates, model).param_groups
    recurrent = {id(p) for p in groups[1]["params"]}
    assert recurrent == {id(c.weight_hh) for c in model.cells}


def test_two_layers_train_by_truncated_bptt_on_a_stream():
    result = bptt.train(
        {"task": "echo", "length": 200, "hidden": 8, "steps": 4, "layers": 2, "monitor": False}
    )
    assert result.summary["steps_done"] == 4 and result.model.num_layers == 2


def test_the_command_line_trains_layers_and_refuses_bad_ones_in_one_line():
    from click.testing import CliRunner

    from bptt.cli import app

    runner = CliRunner()
    args = ["train", "--task", "adding", "--length", "8", "--hidden", "6", "--steps", "3"]
    fine = runner.invoke(app, [*args, "--layers", "2", "--bidirectional", "--no-out"])
    assert fine.exit_code == 0, fine.output
    for bad in (["--layers", "0"], ["--layers", "x"], ["--layers", "2", "--dropout", "1"]):
        result = runner.invoke(app, [*args, *bad, "--no-out"])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output


def test_a_run_of_layers_is_diagnosed_and_reported_per_layer(tmp_path):
    from bptt.run import write_report

    out = tmp_path / "run"
    config = {**RUN, "length": 12, "steps": 5, "layers": 2, "bidirectional": True}
    result = bptt.train({**config, "out": str(out)})
    curves = result.summary["probe"]["layers"]
    assert list(curves) == ["cells.0", "reverse_cells.0", "cells.1", "reverse_cells.1"]
    assert all(len(norms) == 12 for norms in curves.values())
    for remedy in result.summary["diagnosis"]["remedies"]:  # a remedy keeps the layers
        if remedy["command"].startswith("bptt train"):
            assert "--layers 2 --bidirectional" in remedy["command"]
    html = write_report(out).read_text(encoding="utf-8")
    assert "reverse_cells.1" in html and "each layer and direction" in html


def test_scores_and_probes_run_without_dropout_and_leave_the_mode_as_it_was():
    from bptt.run import build_model, test_set
    from bptt.run.training._build import evaluate
    from bptt.tasks import make_task

    config = TrainConfig(**RUN, cell="gru", layers=2, dropout=0.5, test_size=50)
    task = make_task("adding", 8)
    model = build_model(config, task)
    x, y = test_set(config, task)
    rng = torch.get_rng_state()
    first, second = evaluate(model, task, x, y, config), evaluate(model, task, x, y, config)
    assert first == second and model.training  # no masks drawn, training mode kept
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_nonfinite_step_of_a_model_of_layers_is_located_with_the_steps_own_masks():
    from bptt.diagnose import Monitor
    from bptt.run import build_model
    from bptt.run.training._batches import SequenceBatches
    from bptt.tasks import make_task

    config = TrainConfig(**RUN, cell="gru", layers=2, bidirectional=True, dropout=0.5)
    task = make_task("adding", 8)
    model = build_model(config, task)
    loss, rerun = SequenceBatches(config, task, model, (), seed=0).next()
    loss.backward()
    records = [RecordNorms(), RecordNorms()]
    rng = torch.get_rng_state()
    for record in records:
        rerun((record,))
    assert torch.equal(torch.get_rng_state(), rng)  # the generators as they were
    torch.testing.assert_close(records[0].norms, records[1].norms, rtol=0, atol=0)
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    row = Monitor(model).step(1, float("nan"), rerun=rerun)
    # the top layer's forward cell, where the NaN enters: at the readout's step
    assert row["nonfinite"] and row["nonfinite_step"] == 7


def test_truncated_bptt_refuses_a_record_shared_by_the_layers():
    from bptt.tbptt import TBPTT

    model = SequenceModel([bptt.cells.RNNCell(F, H), bptt.cells.RNNCell(H, H)], OUT, readout="all")
    with pytest.raises(ValueError, match="keeps a record of one unroll"):
        TBPTT(model, 4, 4, nn.functional.mse_loss, None, taps=[RecordNorms()])


class _UsersCell(nn.Module):
    """A user's own tanh cell: no bptt base class, a hidden size and a zero state."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.linear = nn.Linear(input_size + hidden_size, hidden_size, dtype=DT)

    def initial_state(self, batch_size, *, device=None, dtype=None):
        return torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)

    def forward(self, x_t, h):
        return torch.tanh(self.linear(torch.cat([x_t, h], dim=1)))


def test_a_model_of_the_users_own_cells_in_layers_is_diagnosed_layer_by_layer():
    from bptt.diagnose import diagnose

    model = SequenceModel([_UsersCell(F, H), _UsersCell(H, H)], OUT)
    found = diagnose(model, torch.randn(4, 10, F, dtype=DT))
    assert [layer.name for layer in found.layers] == ["cells.0", "cells.1"]
    assert all(layer.norms.shape == (10,) for layer in found.layers)


@pytest.mark.parametrize("readout", ["last", "all"])
def test_the_prediction_with_hidden_outputs_is_the_forward_prediction(readout):
    _, ours = _pair("gru", 2, True, readout)
    x = torch.randn(3, 7, F, dtype=DT, generator=torch.Generator().manual_seed(4))
    prediction, hidden = ours.predict_with_hidden(x)
    tol = rounding_tol(2 * 7 * 12, 10.0)
    torch.testing.assert_close(prediction, ours(x)[0], rtol=0, atol=tol)
    assert hidden.shape == (3, 7, 2 * H)
