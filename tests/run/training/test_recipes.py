"""The paper recipes' settings reach the model and the optimizer: ``lstm-chrono`` as
Tallec & Ollivier 2018 describe it, ``lstm-chrono-adam`` as tuned here, and the
``rmsprop_alpha`` field the paper's RMSprop needs."""

import math

import pytest
import torch

from bptt.run import ConfigError, TrainConfig, initial_model
from bptt.run.training._build import make_optimizer
from bptt.tasks import make_task


def _forget_timescales(task: str, length: int, method: str) -> torch.Tensor:
    """exp(b_f) of the initial model: the chrono time scales u ~ U[1, T_max - 1]."""
    config = TrainConfig.from_dict({"task": task, "length": length, "method": method})
    model = initial_model(config, make_task(task, length))
    hidden = model.cell.hidden_size
    forget = slice(hidden, 2 * hidden)  # torch's gate order (i, f, g, o)
    bias = model.cell.bias_ih[forget] + model.cell.bias_hh[forget]
    assert torch.allclose(model.cell.bias_ih[:hidden] + model.cell.bias_hh[:hidden], -bias)
    return bias.exp()


def test_the_papers_chrono_span_is_three_halves_of_t_on_copy_and_t_on_adding():
    # copy T=100: T_max = 150 (the task's dependency length would be 111); with 128
    # draws from U[1, 149] the largest is above 111 but for odds of (110/148)^128 ~ 1e-17
    paper = _forget_timescales("copy", 100, "lstm-chrono")
    assert paper.min() >= 1 - 1e-4 and paper.max() <= 149 * (1 + 1e-5)
    assert paper.max() > 111
    tuned = _forget_timescales("copy", 100, "lstm-chrono-adam")
    assert tuned.max() <= 110 * (1 + 1e-5)
    adding = _forget_timescales("adding", 100, "lstm-chrono")
    assert adding.max() <= 99 * (1 + 1e-5) and adding.max() > 90


def test_the_papers_chrono_trains_with_rmsprop_alpha_0_9_and_no_clipping():
    config = TrainConfig.from_dict({"task": "adding", "length": 10, "method": "lstm-chrono"})
    assert config.optimizer.model_dump() == {
        "kind": "rmsprop",
        "lr": 1e-3,
        "lr_recurrent": None,
        "alpha": 0.9,
        "momentum": 0.0,
    }
    assert config.clip.kind == "none" and config.schedule.kind == "constant"
    optimizer = make_optimizer(config, initial_model(config, make_task("adding", 10)))
    assert isinstance(optimizer, torch.optim.RMSprop)
    assert [g["alpha"] for g in optimizer.param_groups] == [0.9]
    tuned = TrainConfig.from_dict({"task": "adding", "length": 10, "method": "lstm-chrono-adam"})
    assert (tuned.optimizer.kind, tuned.optimizer.lr, tuned.schedule.kind) == (
        "adam",
        1e-2,
        "cosine",
    )
    assert tuned.clip.model_dump() == {"kind": "norm", "max_norm": 1.0}


def test_rmsprop_alpha_defaults_to_torchs_and_is_refused_where_unused():
    config = TrainConfig.from_dict({"task": "adding", "length": 5, "optimizer": "rmsprop"})
    optimizer = make_optimizer(config, initial_model(config, make_task("adding", 5)))
    reference = torch.optim.RMSprop([torch.zeros(1, requires_grad=True)])
    assert optimizer.param_groups[0]["alpha"] == reference.defaults["alpha"]
    with pytest.raises(ConfigError, match=r"rmsprop_alpha.*optimizer rmsprop"):
        TrainConfig.from_dict({"task": "adding", "length": 5, "rmsprop_alpha": 0.9})
    for bad in (0.0, 1.0, -0.5, math.nan, "x"):
        with pytest.raises(ConfigError, match="rmsprop_alpha"):
            TrainConfig.from_dict({"optimizer": "rmsprop", "rmsprop_alpha": bad})


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"method": "lstm-chrono", "optimizer": "adam"}, {"momentum": 0.9, "clip": "none"}),
        ({"method": "lstm-chrono", "optimizer": "sgd"}, {"momentum": 0.0}),
        ({"method": "exprnn", "optimizer": "adam"}, {"lr": 2e-4, "lr_recurrent": 1e-5}),
        ({"method": "lstm-chrono-adam", "clip": "none"}, {"clip_norm": None}),
        ({"method": "rnn-clip", "clip": "percentile"}, {"clip_norm": None}),
        ({"method": "lstm-chrono", "clip_norm": 1.0}, {"clip": "norm", "rmsprop_alpha": 0.9}),
    ],
)
def test_a_recipes_setting_for_what_the_user_replaced_is_dropped_not_refused(values, expected):
    config = TrainConfig.from_dict({"task": "adding", "length": 10, **values}).flat()
    assert {k: config[k] for k in expected} == expected
    assert all(config[k] == v for k, v in values.items())


@pytest.mark.parametrize(
    "values",
    [
        {"task": "copy", "length": 20, "method": "lstm-chrono", "momentum": 0.9},
        {"task": "copy", "length": 20, "method": "lstm-chrono", "rmsprop_alpha": 0.99},
        {"task": "adding", "length": 50, "method": "lstm-chrono-adam", "lr_schedule": "constant"},
        {"task": "adding", "length": 50, "method": "irnn", "lr": 1e-3, "clip": "none"},
        {"task": "adding", "length": 50, "cell": "gru", "lr": 3e-3, "seed": 4},
    ],
)
def test_a_remedys_command_line_gives_back_the_same_configuration(values):
    import shlex

    from bptt.cli import app
    from bptt.run import train_command

    line = train_command(values)
    parsed = app.get_command(None, "train").make_context("train", shlex.split(line)[2:])
    given = {k: v for k, v in parsed.params.items() if k in TrainConfig.flag_fields()}
    again = TrainConfig.from_dict({k: v for k, v in given.items() if v is not None})
    assert again.to_dict() == TrainConfig.from_dict(values).to_dict(), line


def _lstm_biases(values: dict) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.nn.Module]:
    """Per layer: the summed input-gate and forget-gate biases of the initial model."""
    config = TrainConfig.from_dict({"task": "adding", "length": 200, **values})
    model = initial_model(config, make_task("adding", 200))
    inputs, forgets = [], []
    for cell in model.recurrent_cells():
        h = cell.hidden_size
        total = cell.bias_ih + cell.bias_hh
        inputs.append(total[:h])
        forgets.append(total[h : 2 * h])  # torch's gate order (i, f, g, o)
    return inputs, forgets, model


def test_an_lstm_without_a_method_starts_from_chrono_in_every_layer():
    # no method: the forget biases are log u, u ~ U[1, T - 1] (T = 199 on adding T=200),
    # the input biases their negatives; the weights are those of torch's init
    inputs, forgets, model = _lstm_biases({"cell": "lstm", "layers": 2})
    _, _, plain = _lstm_biases({"cell": "lstm", "layers": 2, "lstm_init": "torch"})
    for i, f in zip(inputs, forgets, strict=True):
        assert f.min() >= -1e-6 and f.max() <= math.log(199) + 1e-5
        assert f.exp().mean() > 50  # U[1, 199] has mean 100: not the torch init's ~1
        assert torch.allclose(i, -f)
    for name, tensor in plain.named_parameters():
        if "bias" not in name:
            assert torch.equal(tensor, model.get_parameter(name)), name
    _, ones, _ = _lstm_biases({"cell": "lstm", "lstm_init": "forget-bias-1"})
    assert torch.allclose(ones[0], torch.ones_like(ones[0]))
    # a method's own initialisation wins: the lstm recipe's forget bias 1
    _, recipe, _ = _lstm_biases({"method": "lstm"})
    assert torch.allclose(recipe[0], torch.ones_like(recipe[0]))


@pytest.mark.parametrize(
    "values",
    [
        {"cell": "gru", "lstm_init": "torch"},
        {"method": "lstm-chrono-adam", "lstm_init": "forget-bias-1"},
        {"cell": "lstm", "lstm_init": "zeros"},
    ],
)
def test_lstm_init_is_refused_where_nothing_reads_it(values):
    with pytest.raises(ConfigError, match="lstm_init"):
        TrainConfig.from_dict({"task": "adding", "length": 10, **values})


def test_a_run_saved_before_lstm_init_existed_keeps_torchs_init():
    # an LSTM run without an initialising method started from torch's init then: its
    # config.toml and checkpoints lack the field, and read back as it was made
    saved = TrainConfig(task="adding", length=10, cell="lstm", lstm_init="torch").to_dict()
    del saved["lstm_init"]
    old = TrainConfig.from_saved(saved)
    assert old.lstm_init == "torch"
    assert old.differing_fields(saved) == []
    assert TrainConfig(task="adding", length=10).differing_fields(saved) == ["lstm_init"]
    recipe = TrainConfig.from_dict({"task": "adding", "length": 10, "method": "lstm"}).to_dict()
    del recipe["lstm_init"]
    assert TrainConfig.from_saved(recipe).lstm_init == "chrono"  # the method initialised it


# The settings each paper recipe cites, with where they were read (the recipes' module
# docstring says what differs). S13: Sutskever, Martens, Dahl & Hinton 2013 (section 4.1,
# Table 4; section 4.2). MS11: Martens & Sutskever 2011 as its released code runs it
# (Sutskever's HF-RNN, github.com/barapa/HF-RNN: opt/r/demo.py, opt/hf.py).
CITED = {
    "esn-momentum": {
        "hidden": (100, "S13 4: the 100 tanh units of Martens & Sutskever 2011"),
        "batch_size": (100, "S13 4.2: minibatches of 100 sequences"),
        "momentum": (0.995, "S13 Table 5: mu_0 = 0.995 with Nesterov, best in every row"),
        "early_momentum": (0.9, "S13 4.2: 0.9 for the first 1,000 updates"),
        "early_momentum_steps": (1000, "S13 4.2"),
        "clip": ("none", "S13: no clipping is mentioned"),
    },
    "hf": {
        "hidden": (100, "MS11 demo.py: 100 tanh units"),
        "batch_size": (10_000, "MS11 hf.py: 10 batches of 1,000 for the gradient"),
        "hf_curvature_fraction": (0.1, "MS11 hf.py: GN_batches = [0], 1,000 sequences"),
        "hf_mu": (0.03, "MS11 demo.py: damping [1, 0.03] x outputs x 0.01"),
        "hf_damping": (0.01, "MS11 demo.py: 0.01 per output; addition has one"),
        "hf_max_cg": (300, "MS11 demo.py: max_cg_iter = 300"),
        "clip": ("none", "MS11: Hessian-free damps, never clips"),
    },
}


@pytest.mark.parametrize("method", sorted(CITED))
def test_the_paper_recipes_hold_the_settings_they_cite(method):
    flat = TrainConfig.from_dict({"task": "adding", "length": 20, "method": method}).flat()
    found = {name: flat[name] for name in CITED[method]}
    assert found == {name: value for name, (value, _) in CITED[method].items()}
    assert flat["cell"] == "rnn" and flat["optimizer"] == ("hf" if method == "hf" else "sgd")


def _recurrent(model):
    return model.cell.weight_hh.detach().double()


def test_the_momentum_recipe_starts_from_sutskevers_reservoir():
    """S13 Table 4: 15 incoming recurrent weights a unit at spectral radius 1.1; inputs
    0.001 N(0, 1) where distractors are (adding), 0.1 on memorization; the readout 0.1
    N(0, 1) with its bias at the mean target; hidden biases 0."""
    from bptt.init import spectral_radius

    for task, length, scale in (("adding", 20, 0.001), ("memorization", 20, 0.1)):
        config = TrainConfig.from_dict({"task": task, "length": length, "method": "esn-momentum"})
        problem = make_task(task, length)
        model = initial_model(config, problem)
        w = _recurrent(model)
        assert (w != 0).sum(dim=1).tolist() == [15] * 100
        # rescaled in float64, stored in float32: each entry rounded (relative 6e-8), and
        # the eigenvalues of this non-normal matrix move by up to its condition times that
        assert spectral_radius(w) == pytest.approx(1.1, rel=1e-4)
        inputs = model.cell.weight_ih.detach().double()
        # the sample std of n N(0, s^2) draws is s within 5 / sqrt(2n) (5 sigma) of it
        assert abs(inputs.std().item() / scale - 1) < 5 / math.sqrt(2 * inputs.numel())
        head = model.head.weight.detach().double()
        assert abs(head.std().item() / 0.1 - 1) < 5 / math.sqrt(2 * head.numel())
        assert not model.cell.bias_ih.any() and not model.cell.bias_hh.any()
        _, y = problem.sample(4000, torch.Generator().manual_seed(1))
        if task == "adding":  # the mean of the sum of two U[0, 1]: 1 (std of a mean of 1000: 0.013)
            assert model.head.bias.item() == pytest.approx(y.mean().item(), abs=0.06)
        else:  # the softmax of the bias: the class frequencies of the sample
            frequencies = torch.bincount(y.reshape(-1), minlength=problem.output_size)
            expected = frequencies.double() / frequencies.sum()
            shown = torch.softmax(model.head.bias.detach().double(), 0)
            assert torch.allclose(shown, expected, atol=0.02)


def test_the_hf_recipe_starts_from_martens_sparse_initialisation():
    """MS11's code: 15 incoming weights a unit from N(0, 1/15) in every matrix, the input
    weights then x 0.25 (all of adding's 2 inputs connect), biases 0."""
    config = TrainConfig.from_dict({"task": "adding", "length": 20, "method": "hf"})
    model = initial_model(config, make_task("adding", 20))
    w = _recurrent(model)
    assert (w != 0).sum(dim=1).tolist() == [15] * 100
    nonzero = w[w != 0]
    assert abs(nonzero.std().item() * math.sqrt(15) - 1) < 5 / math.sqrt(2 * nonzero.numel())
    inputs = model.cell.weight_ih.detach().double()
    assert bool((inputs != 0).all())  # 2 inputs, fewer than 15: every one drawn
    assert abs(inputs.std().item() * math.sqrt(15) / 0.25 - 1) < 5 / math.sqrt(2 * 200)
    assert (model.head.weight != 0).sum().item() == 15
    biases = (model.cell.bias_ih, model.cell.bias_hh, model.head.bias)
    assert not any(bool(b.any()) for b in biases)


def test_the_momentum_recipe_builds_on_a_stream_and_from_an_early_momentum_of_0():
    """A stream's first targets are ignored (negative): the readout's bias counts the
    rest. SGD whose early momentum is 0 (torch refuses Nesterov at 0 when built) is built
    at its later momentum and steps at 0 first."""
    config = TrainConfig.from_dict({"task": "echo", "length": 4, "method": "esn-momentum"})
    model = initial_model(config, make_task("echo", 4))
    assert torch.isfinite(model.head.bias).all()
    flat = {"task": "echo", "length": 4, "optimizer": "sgd", "lr": 1e-3, "momentum": 0.9}
    zero_first = TrainConfig.from_dict(flat | {"early_momentum": 0.0, "early_momentum_steps": 2})
    optimizer = make_optimizer(zero_first, model)
    assert [g["nesterov"] for g in optimizer.param_groups] == [True] * len(optimizer.param_groups)
    assert zero_first.optimizer.step_settings(1) == {"momentum": 0.0}
