"""Edge cases a review of the run loop, the checkpoints and the diagnosis found."""

from __future__ import annotations

import json
import math
import shlex

import pytest
import torch

import bptt
from bptt.diagnose import RunRecord, diagnose, gradient_by_distance, judge_run
from bptt.run import Checkpoints, json_safe

TINY = {"task": "adding", "length": 6, "cell": "gru", "hidden": 4, "threads": 1, "test_size": 32}


def test_an_echo_run_does_not_count_its_warm_up_windows_as_non_finite(tmp_path):
    # the first windows of a delayed echo have no target: once NaN, they rolled the run
    # back to step 0 forever (5 in a row at the default patience)
    config = {"task": "echo", "length": 200, "cell": "gru", "hidden": 8, "threads": 1}
    config.update({"tbptt_k1": 32, "steps": 12, "checkpoint_every": 4, "out": str(tmp_path)})
    summary = bptt.train(config).summary
    assert summary["nonfinite_steps"] == 0 and summary["rollbacks"] == 0
    assert summary["steps_done"] == 12


def test_windows_without_a_target_do_not_make_an_echo_run_look_exploding():
    # the first windows of a delayed echo have no target, so no gradient: as the early
    # level (0), they made every later norm "1000x its early level" (verdict exploding)
    config = {"task": "echo", "length": 16, "cell": "gru", "hidden": 8, "threads": 1}
    config.update({"tbptt_k1": 4, "tbptt_k2": 8, "steps": 30, "lr": 2e-2})
    summary = bptt.train(config).summary
    record = summary["run_record"]
    assert record["early_norm"] and min(record["early_norm"]) > 0
    assert record["norm_growth_step"] is None and summary["verdict"] != "exploding"
    unit = RunRecord()
    for step in range(1, 5):
        unit.update(step, 1.4, 0.0)
    unit.update(5, 1.4, 1e-4)
    unit.update(6, 1.4, 0.2)  # the early level: the median of the non-zero norms
    assert unit.early_norm == [1e-4, 0.2] and unit.norm_growth_step is None
    unit.update(7, 1.4, 1e3)
    assert unit.norm_growth_step == 7


def test_the_checkpoint_a_run_resumes_from_is_the_one_it_rolls_back_to(tmp_path):
    store = Checkpoints(tmp_path)
    store.save(10, {"step": 10, "w": torch.arange(3.0)})
    fresh = Checkpoints(tmp_path)  # as after a restart
    state = fresh.latest()
    assert fresh.last is not None and fresh.last[0] == 10
    assert torch.equal(fresh.latest_in_memory()["w"], state["w"])


def test_a_run_that_stopped_solved_and_was_killed_in_its_diagnosis_resumes_to_the_same_end(
    tmp_path,
):
    config = {**TINY, "length": 4, "hidden": 8, "lr": 0.02, "steps": 600}
    config.update({"stop_when_solved": True, "checkpoint_every": 50, "out": str(tmp_path)})
    first = bptt.train(config).summary
    assert first["steps_done"] < 600
    for name in ("summary.json", "model.pt"):  # as if killed during the final diagnosis
        (tmp_path / name).unlink()
    again = bptt.resume(tmp_path).summary
    assert again["steps_done"] == first["steps_done"]


def test_a_run_record_comes_back_from_its_json():
    record = RunRecord()
    record.update(1, math.nan, math.nan)  # nothing finite yet: peaks still -inf
    state = json.loads(json.dumps(json_safe(record.state_dict())))
    back = RunRecord()
    back.load_state_dict({**state, "not_a_field": 1})
    assert back.peak_loss == -math.inf and back.nonfinite_steps == 1
    assert back.evidence()["peak_loss"] is None
    assert not hasattr(back, "not_a_field")


def test_without_a_probe_the_verdict_does_not_claim_the_gradient_was_measured():
    record = RunRecord()
    for step in range(1, 11):
        record.update(step, 0.2, 1.0)
    verdict = judge_run(record, None, final_loss=0.2, baseline=0.17, solved=False)
    assert verdict.verdict == "not learned"
    assert "not measured" in verdict.reasons[-1]


def test_a_training_set_learned_and_the_test_set_not_is_overfitting():
    def record_of(late_loss):
        record = RunRecord()
        for step in range(1, 101):  # from ln 10 down to the late level
            record.update(step, max(2.3 * 0.9**step, late_loss), 1.0)
        return record

    memorised = record_of(0.01)
    verdict = judge_run(memorised, None, final_loss=0.33, baseline=2.3, solved=False,
                        training_set=True)  # fmt: skip
    assert verdict.verdict == "overfitting" and "33x higher" in verdict.reasons[-1]
    assert verdict.evidence["late_loss"] == pytest.approx(0.01)
    # a generated task draws fresh data: its training loss estimates the test loss
    generated = judge_run(memorised, None, final_loss=0.33, baseline=2.3, solved=False)
    assert generated.verdict == "not learned"
    near = judge_run(record_of(0.1), None, final_loss=0.33, baseline=2.3, solved=False,
                     training_set=True)  # fmt: skip
    assert near.verdict == "not learned"  # 3.3x: within what a gap between sets gives
    at_baseline = judge_run(memorised, None, final_loss=2.4, baseline=2.3, solved=False,
                            training_set=True)  # fmt: skip
    assert at_baseline.verdict != "overfitting"  # learned nothing that generalises at all
    solved = judge_run(memorised, None, final_loss=0.1, baseline=2.3, solved=True,
                       training_set=True)  # fmt: skip
    assert solved.verdict == "healthy"
    # the remedies: hold out a validation split, an LRU, weight decay, a smaller model
    config = bptt.run.TrainConfig.from_dict({"task": "pdigits", "cell": "lstm", "hidden": 64})
    commands = [r["command"] for r in bptt.run.remedies_for(verdict, config, "runs/x")]
    assert len(commands) == 4 and "--validation-share 0.15" in commands[0]
    assert "--method lru" in commands[1] and "--weight-decay 0.05" in commands[2]
    assert "--hidden 32" in commands[3]


class _OwnStart(torch.nn.Module):
    """A cell with its own initial_state and output, and no hidden_size."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(6, 4)

    def initial_state(self, batch_size, *, device=None, dtype=None):
        zero = torch.zeros(batch_size, 4, device=device, dtype=dtype)
        return zero, zero.clone()

    def output(self, state):
        return state[1]  # the second part: not what the default would pick

    def forward(self, x_t, state):
        h = torch.tanh(self.linear(torch.cat([x_t, state[0]], -1)))
        return h, 2 * h


def test_a_user_cell_is_asked_for_its_own_start_and_output(gen):
    cell = _OwnStart()
    x = torch.randn(3, 7, 2, generator=gen)
    outputs, _ = bptt.unroll(cell, x)
    first, _ = cell(x[:, 0], cell.initial_state(3))
    torch.testing.assert_close(outputs[:, 0], 2 * first)  # its output(), not state[0]
    found = gradient_by_distance(cell, x)  # needs no hidden_size
    assert found["norms"].shape == (7,)


def test_a_time_major_torch_layer_is_diagnosed_as_its_batch_first_twin(gen):
    time_major = torch.nn.GRU(2, 4)
    batch_first = torch.nn.GRU(2, 4, batch_first=True)
    batch_first.load_state_dict(time_major.state_dict())
    x = torch.randn(3, 5, 2, generator=gen)  # (B, T, F)
    found = diagnose(time_major, x.transpose(0, 1))  # read (T, B, F), as it reads it
    twin = diagnose(batch_first, x)  # one batch-first layer: a cell's diagnosis
    assert [layer.name for layer in found.layers] == ["gru layer 0"]
    assert found.verdict == twin.verdict
    torch.testing.assert_close(found.norms, twin.norms, rtol=1e-5, atol=0)


def test_a_remedy_command_survives_a_run_directory_with_a_space(tmp_path):
    out = tmp_path / "my runs" / "x"
    config = {**TINY, "optimizer": "sgd", "lr": 0.5, "momentum": 0.9, "steps": 30}
    summary = bptt.train({**config, "out": str(out)}).summary
    command = summary["diagnosis"]["remedies"][0]["command"]
    args = shlex.split(command)
    assert args[args.index("--out") + 1].startswith(str(out))


def test_truncation_shorter_than_the_dependency_is_the_verdict(tmp_path):
    # a delayed echo over 8 steps trained by TBPTT with k2 = 4: the model's gradient is
    # healthy, but no update sees the dependency; the remedy is a longer k2
    config = {"task": "echo", "length": 8, "cell": "gru", "hidden": 8, "threads": 1}
    config.update({"tbptt_k1": 4, "tbptt_k2": 4, "steps": 20, "out": str(tmp_path / "k4")})
    summary = bptt.train(config).summary
    assert summary["verdict"] == "truncated"
    assert any("fewer than the dependency length 8" in r for r in summary["diagnosis"]["reasons"])
    command = summary["diagnosis"]["remedies"][0]["command"]
    assert "--tbptt-k2 16" in command
    again = bptt.run.diagnose_run(tmp_path / "k4")
    assert again["verdict"] == "truncated"
    longer = bptt.train({**config, "tbptt_k2": 16, "out": None}).summary
    assert longer["verdict"] != "truncated"


def test_the_remedies_of_a_run_cut_by_its_time_limit_do_not_carry_the_limit():
    import bptt

    # a GRU cut after one step is healthy but not learned: "train longer" and "raise the
    # learning rate", the same run with one change each
    config = {"task": "adding", "length": 8, "cell": "gru", "hidden": 4, "steps": 50}
    summary = bptt.train({**config, "test_size": 16, "time_limit_s": 1e-9}).summary
    assert summary["time_limited"] and summary["steps_done"] == 1
    assert summary["verdict"] == "healthy but not learned"
    commands = [r["command"] for r in summary["diagnosis"]["remedies"]]
    assert commands and not any("--time-limit-s" in command for command in commands)


def test_a_solved_run_that_exploded_on_the_way_is_healthy_and_keeps_the_episode_as_history():
    """As temporal order T=500 seed 2 (benchmarks/reproduce.py): its gradient norm went past
    1000x its early level at step 237 under clipping, then it solved the task at step
    3,000. Its verdict is healthy for the solve alone; the explosion is what it came
    through, not a reason for "healthy"; unsolved, the same record is exploding."""
    record = RunRecord()
    for step in range(1, 301):  # the gradient norm rises 1.05x a step from step 40
        record.update(step, 2.0 / step**0.5, 0.1 * 1.05 ** max(step - 40, 0))
    solved = judge_run(record, None, final_loss=0.04, baseline=2.08, solved=True)
    assert solved.verdict == "healthy" and solved.reasons == [
        "the task is solved (test 0.04, baseline 2.08)"
    ]
    assert len(solved.history) == 1 and "gradient norm rose from 0.1" in solved.history[0]
    assert solved.to_dict()["history"] == solved.history
    unsolved = judge_run(record, None, final_loss=0.5, baseline=2.08, solved=False)
    assert unsolved.verdict == "exploding" and unsolved.reasons == solved.history
    assert unsolved.history == []
