"""Training that survives SIGKILL, NaN, corrupt checkpoints, full disks and bad input."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import bptt
from bptt.run import CheckpointError, Checkpoints, ConfigError, load_checkpoint
from run_files import params, rows

RUN = ["--task", "adding", "--length", "12", "--cell", "lstm", "--hidden", "16"]
RUN += ["--steps", "240", "--checkpoint-every", "20", "--clip", "percentile"]
RUN += ["--threads", "1", "--eval-every", "60", "--no-progress", "--log-every", "10"]


def _bptt(*args: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with open(log, "ab") as sink:  # the child keeps its own handle
        return subprocess.Popen(
            [sys.executable, "-m", "bptt", "train", *args],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=env,
        )


@pytest.mark.slow
def test_a_run_killed_with_sigkill_and_resumed_ends_bitwise_equal(tmp_path):
    log = tmp_path / "stderr.log"
    reference = tmp_path / "reference"
    assert _bptt(*RUN, "--out", str(reference), log=log).wait(timeout=300) == 0

    killed = tmp_path / "killed"
    checkpoints = killed / "checkpoints"
    rng = random.Random(7)
    process = _bptt(*RUN, "--out", str(killed), log=log)
    kills = mid_training = 0
    while True:
        if kills == 4:  # enough: let this attempt finish
            assert process.wait(timeout=300) == 0, log.read_text()
            break
        if rng.random() < 0.7:  # mostly once training runs, else at any moment (imports too)
            while process.poll() is None and not any(checkpoints.glob("*.sha256")):
                time.sleep(0.01)
        deadline = time.time() + rng.uniform(0.0, 1.2)
        while time.time() < deadline and process.poll() is None:
            time.sleep(0.01)
        if process.poll() is not None:
            assert process.returncode == 0, log.read_text()
            break
        during = any(checkpoints.glob("*.sha256"))
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        mid_training += during
        if (killed / "config.toml").exists():
            process = _bptt("--resume", str(killed), "--no-progress", log=log)
        else:  # killed before it wrote anything: start it again
            process = _bptt(*RUN, "--out", str(killed), "--overwrite", log=log)
    assert kills >= 3 and mid_training >= 2, (kills, mid_training)
    ours, theirs = params(killed), params(reference)
    for name in theirs:
        assert torch.equal(ours[name], theirs[name]), name
    assert rows(killed) == rows(reference)  # every logged row, once, the same
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["steps_done"] == 240


def test_nan_gradients_are_skipped_then_rolled_back_with_a_lower_rate(tmp_path):
    injected = {"calls": 0}

    def poison(step, model):  # the 30th to 33rd backward passes get NaN gradients
        injected["calls"] += 1
        if 30 <= injected["calls"] <= 33:
            next(model.parameters()).grad.fill_(math.nan)

    config = {"task": "adding", "length": 8, "cell": "gru", "hidden": 8, "steps": 60}
    config.update({"checkpoint_every": 10, "nonfinite_patience": 3, "rollback_lr_factor": 0.25})
    config.update({"log_every": 1, "threads": 1, "out": str(tmp_path), "lr": 0.004})
    summary = bptt.train(config, on_gradients=poison).summary
    assert summary["nonfinite_steps"] == 4 and summary["rollbacks"] == 1
    assert summary["steps_done"] == 60 and not summary["diverged"]
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    nonfinite = [int(r["step"]) for r in rows if r["nonfinite"] == "1"]
    # steps 30-32 (backward passes 30-32) in a row, roll back to step 20; the 33rd
    # backward pass is the replayed step 21
    assert nonfinite == [30, 31, 32, 21]
    assert {float(r["lr"]) for r in rows[:29]} == {0.004}
    assert [int(r["step"]) for r in rows[29:34]] == [30, 31, 32, 21, 22]
    assert float(rows[-1]["lr"]) == pytest.approx(0.004 * 0.25)
    for path in Checkpoints(tmp_path / "checkpoints").paths():
        state = load_checkpoint(path)
        assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
    store = Checkpoints(tmp_path, keep=3)
    for step in (1, 2, 3):
        store.save(step, {"step": step, "w": torch.full((4,), float(step))})
    newest = store.paths()[0]
    newest.write_bytes(newest.read_bytes()[:-7])
    with pytest.warns(UserWarning, match="corrupt or truncated"):
        assert store.latest()["step"] == 2
    (store.paths()[1].with_name(store.paths()[1].name + ".sha256")).unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.latest()["step"] == 1
    messages = [str(w.message) for w in caught]
    assert "corrupt or truncated" in messages[0] and "incomplete" in messages[1]


@settings(max_examples=25, deadline=None)
@given(cut=st.floats(0.0, 0.999))
def test_any_truncation_of_a_checkpoint_is_detected(tmp_path_factory, cut):
    directory = tmp_path_factory.mktemp("ckpt")
    path = Checkpoints(directory).save(5, {"w": torch.arange(100.0), "step": 5})
    payload = path.read_bytes()
    path.write_bytes(payload[: int(len(payload) * cut)])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_a_failed_checkpoint_write_keeps_the_earlier_ones_and_is_reported(tmp_path, monkeypatch):
    import bptt.run.training._checkpoint as checkpoint

    real = checkpoint.atomic_write_bytes
    calls = {"n": 0}

    def full_disk(path, data):
        calls["n"] += 1
        if calls["n"] == 3:  # the third checkpoint: the disk is full
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", full_disk)
    config = {"task": "adding", "length": 6, "cell": "rnn", "hidden": 4, "steps": 40}
    config.update({"checkpoint_every": 10, "threads": 1, "out": str(tmp_path)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = bptt.train(config).summary
    assert summary["checkpoint_errors"] == 1 and summary["steps_done"] == 40
    assert any("No space left" in str(w.message) for w in caught)
    steps = [load_checkpoint(p)["step"] for p in Checkpoints(tmp_path / "checkpoints").paths()]
    assert steps == [40, 30, 10]  # 20 failed; the others are intact


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path):
    config = {"task": "adding", "length": 6, "cell": "rnn", "hidden": 4, "steps": 20}
    bptt.train({**config, "checkpoint_every": 10, "threads": 1, "out": str(tmp_path)})
    toml = (tmp_path / "config.toml").read_text().replace("hidden = 4", "hidden = 5")
    (tmp_path / "config.toml").write_text(toml)
    with pytest.raises(bptt.run.ConfigError, match="hidden is 4 there and 5 here"):
        bptt.train.__globals__["resume"](tmp_path)


# --- bad input: every invalid one is a clear error ---------------------------------------

shapes = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)
dtypes = st.sampled_from([torch.float32, torch.float64, torch.int64, torch.bool])


@settings(max_examples=300, deadline=None)
@given(shape=shapes, dtype=dtypes, poison=st.sampled_from([None, math.nan, math.inf]))
def test_unroll_answers_any_input_with_a_result_or_a_clear_error(shape, dtype, poison):
    cell = bptt.cells.GRUCell(3, 4)
    x = torch.zeros(shape, dtype=dtype)
    poisoned = poison is not None and x.numel() > 0 and dtype.is_floating_point
    if poisoned:
        x.view(-1)[-1] = poison
    try:
        out, _ = bptt.unroll(cell, x.float() if dtype == torch.float32 else x, check_finite=True)
    except (ValueError, TypeError) as err:
        message = str(err)
        assert any(
            word in message
            for word in ("shape", "expected", "dtype", "non-finite", "floating", "least")
        )
        if poisoned and x.dim() == 3 and x.shape[2] == 3:
            assert "non-finite" in message and "step" in message
        return
    assert x.dim() == 3 and x.shape[2] == 3 and x.numel() > 0 and out.shape == (*x.shape[:2], 4)


flag_values = st.one_of(
    st.integers(-5, 5).map(str), st.sampled_from(["", "x", "1e400", "nan", "-1.5"])
)
flags = st.sampled_from(
    [
        "--length",
        "--hidden",
        "--steps",
        "--lr",
        "--clip-norm",
        "--batch-size",
        "--threads",
        "--cell",
        "--task",
        "--optimizer",
        "--momentum",
        "--clip",
        "--spike-z",
        "--eval-every",
    ]
)


@settings(max_examples=60, deadline=None)
@given(flag=flags, value=flag_values)
def test_any_bad_flag_is_a_one_line_error_with_exit_code_2(flag, value):
    from click.testing import CliRunner

    from bptt.cli import app

    args = [
        "train",
        flag,
        value,
        "--steps",
        "1",
        "--hidden",
        "2",
        "--test-size",
        "4",
        "--no-progress",
    ]
    if flag in ("--steps", "--hidden"):
        args = ["train", flag, value, "--test-size", "4", "--no-progress", "--length", "4"]
    result = CliRunner().invoke(app, args)
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        assert "error" in result.output.lower() or "invalid" in result.output.lower()


EXTENDABLE = {"task": "adding", "length": 8, "cell": "gru", "hidden": 8, "threads": 1}
EXTENDABLE.update({"checkpoint_every": 10, "eval_every": 10, "log_every": 5})


def test_a_finished_run_trains_on_to_the_run_given_more_steps_from_the_start(tmp_path):
    bptt.train({**EXTENDABLE, "steps": 40, "out": str(tmp_path / "long")})
    bptt.train({**EXTENDABLE, "steps": 20, "out": str(tmp_path / "short")})
    result = bptt.resume(tmp_path / "short", steps=40)
    assert result.summary["steps_done"] == 40
    ours, theirs = params(tmp_path / "short"), params(tmp_path / "long")
    for name in theirs:
        assert torch.equal(ours[name], theirs[name]), name
    assert rows(tmp_path / "short") == rows(tmp_path / "long")
    assert "steps = 40" in (tmp_path / "short" / "config.toml").read_text()
    with pytest.raises(ConfigError, match="already taken 40 steps"):
        bptt.resume(tmp_path / "short", steps=30)


def test_a_scheduled_run_refuses_a_new_step_budget(tmp_path):
    config = {**EXTENDABLE, "steps": 20, "lr_schedule": "cosine", "out": str(tmp_path)}
    bptt.train(config)
    with pytest.raises(ConfigError, match="cosine learning-rate schedule"):
        bptt.resume(tmp_path, steps=40)
    bptt.resume(tmp_path, steps=20)  # the same budget is no change


def test_resume_on_the_command_line_takes_steps_and_nothing_else(tmp_path):
    bptt.train({**EXTENDABLE, "steps": 10, "out": str(tmp_path)})
    command = [sys.executable, "-m", "bptt", "train", "--resume", str(tmp_path), "--no-progress"]
    refused = subprocess.run([*command, "--lr", "0.1"], capture_output=True, text=True)
    assert refused.returncode == 2 and "only --steps" in refused.stderr
    done = subprocess.run([*command, "--steps", "20"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["steps_done"] == 20


def test_a_finished_run_without_checkpoints_is_left_intact(tmp_path):
    bptt.train({**EXTENDABLE, "steps": 10, "checkpoint_every": 0, "out": str(tmp_path)})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ConfigError, match="finished without a checkpoint"):
        bptt.resume(tmp_path, steps=20)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_checkpoint_from_before_a_new_setting_existed_still_resumes(tmp_path):
    bptt.train({**EXTENDABLE, "steps": 20, "out": str(tmp_path / "old")})
    bptt.train({**EXTENDABLE, "steps": 30, "out": str(tmp_path / "new")})
    checkpoints = Checkpoints(tmp_path / "old" / "checkpoints")
    state = checkpoints.latest()
    for added_later in ("lr_schedule", "lr_end_factor"):  # as written by an older version
        del state["config"][added_later]
    checkpoints.save(state["step"], state)
    bptt.resume(tmp_path / "old", steps=30)
    ours, theirs = params(tmp_path / "old"), params(tmp_path / "new")
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)


def test_extending_a_run_that_ended_off_the_logging_schedule_logs_as_the_longer_run(tmp_path):
    # found in review: step 23 was logged (and evaluated) as the last step of the short
    # run; the 40-step run logs every 5 and evaluates every 10
    config = {**EXTENDABLE, "checkpoint_every": 23}
    bptt.train({**config, "steps": 40, "out": str(tmp_path / "long")})
    bptt.train({**config, "steps": 23, "out": str(tmp_path / "short")})
    bptt.resume(tmp_path / "short", steps=40)
    assert rows(tmp_path / "short") == rows(tmp_path / "long")


def test_a_run_that_ended_solved_is_not_extended(tmp_path):
    config = {"task": "adding", "length": 4, "cell": "gru", "hidden": 8, "threads": 1}
    config.update({"checkpoint_every": 50, "stop_when_solved": True, "lr": 0.02})
    summary = bptt.train({**config, "steps": 600, "out": str(tmp_path)}).summary
    assert summary["steps_done"] < 600  # solved first
    with pytest.raises(ConfigError, match=f"ended at step {summary['steps_done']}"):
        bptt.resume(tmp_path, steps=1200)


def test_a_run_out_of_time_goes_on_when_given_more_time(tmp_path):
    config = {**EXTENDABLE, "steps": 400, "eval_every": 10000, "log_every": 1000}
    config["checkpoint_every"] = 1000  # the last step's checkpoint only
    stopped = bptt.train({**config, "time_limit_s": 0.05, "out": str(tmp_path)}).summary
    assert stopped["time_limited"] and stopped["steps_done"] < 400
    again = bptt.resume(tmp_path)  # the same limit: it ended, and ends at once
    assert again.summary["steps_done"] == stopped["steps_done"]
    more = bptt.resume(tmp_path, time_limit_s=0).summary  # no limit now
    assert more["steps_done"] == 400 and not more["time_limited"]
    assert "time_limit_s = 0.0" in (tmp_path / "config.toml").read_text()  # the new limit
