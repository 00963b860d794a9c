"""``diagnose_run(..., at_init=True)``: the model a run started from, rebuilt from its
directory, against a real run whose weights never moved (its final model *is* its
initial one) and a real run that learned."""

import json

import torch
from click.testing import CliRunner

import bptt
from bptt.cli import app

CONFIG = {"task": "adding", "length": 6, "cell": "gru", "hidden": 4, "steps": 5}
CONFIG |= {"test_size": 16, "threads": 1, "seed": 3}


def _frozen(step, model):
    """Zero every gradient: RMSprop then moves no weight (its step is g / sqrt(v))."""
    for parameter in model.parameters():
        parameter.grad.zero_()


def test_the_initial_model_is_the_one_a_frozen_run_ends_with(tmp_path):
    # a recipe with its own initialiser (chrono biases), run in a process of its own
    chrono = {**CONFIG, "task": "copy", "length": 5, "cell": "lstm", "method": "lstm-chrono"}
    bptt.train({**chrono, "out": str(tmp_path / "frozen")}, on_gradients=_frozen)
    config, task, final = bptt.run.load_run(tmp_path / "frozen")
    start = bptt.run.initial_model(config, task)
    other_seed = bptt.run.initial_model(config.model_copy(update={"seed": 4}), task)
    assert not torch.equal(other_seed.cell.bias_ih, start.cell.bias_ih)
    start_state, final_state = start.state_dict(), final.state_dict()
    assert start_state.keys() == final_state.keys()
    for name, tensor in start_state.items():
        assert torch.equal(tensor, final_state[name]), name
    at_init = bptt.run.diagnose_run(tmp_path / "frozen", probe=8, at_init=True)
    at_end = bptt.run.diagnose_run(tmp_path / "frozen", probe=8)
    assert at_init["norms"] == at_end["norms"] and at_init["gamma"] == at_end["gamma"]
    assert "evidence" in at_end and not at_init["evidence"]  # the probe's verdict alone


def test_a_run_that_learned_differs_from_its_start_and_the_command_shows_both(tmp_path):
    out = tmp_path / "run"
    bptt.train({**CONFIG, "steps": 60, "lr": 1e-2, "out": str(out)})
    at_init = bptt.run.diagnose_run(out, probe=8, at_init=True)
    at_end = bptt.run.diagnose_run(out, probe=8)
    assert at_init["norms"] != at_end["norms"]
    result = CliRunner().invoke(app, ["diagnose", str(out), "--at-init", "--json", "--probe", "8"])
    assert result.exit_code == 0 and json.loads(result.output)["norms"] == at_init["norms"]
    table = CliRunner().invoke(app, ["diagnose", str(out), "--at-init"])
    assert table.exit_code == 0 and "initial model of" in table.output


def test_at_init_needs_only_a_config_and_says_when_there_is_none(tmp_path):
    missing = CliRunner().invoke(app, ["diagnose", str(tmp_path), "--at-init"])
    assert missing.exit_code == 2 and "config.toml" in missing.output


def test_at_init_refuses_a_damaged_config_in_one_line(tmp_path):
    (tmp_path / "config.toml").write_text("task = [unclosed\n")
    damaged = CliRunner().invoke(app, ["diagnose", str(tmp_path), "--at-init"])
    assert damaged.exit_code == 2 and "config.toml" in damaged.output
    assert len(damaged.output.strip().splitlines()) == 1
    (tmp_path / "config.toml").write_text('task = "adding"\nhidden = -3\n')
    invalid = CliRunner().invoke(app, ["diagnose", str(tmp_path), "--at-init"])
    assert invalid.exit_code == 2 and "hidden" in invalid.output
