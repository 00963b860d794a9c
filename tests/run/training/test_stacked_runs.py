"""Runs that differ only in seed, trained as one stacked model: each equal to the same
run trained alone (float64, to rounding), a stacked job killed and resumed equal bit for
bit to the uninterrupted one, a run that ends or fails leaving the others undisturbed,
and every combination that cannot stack refused in one line."""

from __future__ import annotations

import csv

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from bptt.cli import app
from bptt.run import (
    SHARED_FIELDS,
    ConfigError,
    NonFiniteError,
    TrainConfig,
    stack_refusal,
    train,
    train_stacked,
)

# float64; the stacked and the lone run group the same products differently, a few
# roundings of 1e-16 per step, carried through a few dozen optimizer steps of a
# contracting recurrence: 1e-9 is far above that and far below any real difference.
TOL = 1e-9
BASE = {
    "task": "adding",
    "length": 12,
    "cell": "lstm",
    "hidden": 6,
    "steps": 24,
    "batch_size": 8,
    "eval_every": 8,
    "test_size": 32,
    "probe_size": 8,
    "dtype": "float64",
    "checkpoint_every": 8,
}


def _fields(**fields):
    """BASE with ``fields`` over it; a field given as None is left out."""
    return {k: v for k, v in {**BASE, **fields}.items() if v is not None}


def _configs(tmp_path, name: str, seeds=(0, 1, 2), **fields):
    return [{**_fields(**fields), "seed": s, "out": str(tmp_path / name / f"s{s}")} for s in seeds]


def _losses(path) -> list[float]:
    with open(path / "metrics.csv", encoding="utf-8") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def _assert_same_params(a, b, tol: float | None = TOL) -> None:
    theirs = dict(b.named_parameters())
    for name, p in a.named_parameters():
        if tol is None:
            assert torch.equal(p, theirs[name]), name
        else:
            torch.testing.assert_close(p, theirs[name], rtol=tol, atol=tol, msg=name)


@pytest.mark.parametrize(
    "fields",
    [
        {},  # LSTM, Adam, last-step readout
        {"cell": "gru", "clip": "norm", "clip_norm": 0.5},
        {"task": "copy", "length": 6, "method": "exprnn", "cell": None, "hidden": 8},
        {"cell": "rnn", "optimizer": "sgd", "lr": 0.05, "lr_schedule": "cosine"},
        {"cell": "gru", "layers": 2, "bidirectional": True},
    ],
    ids=["lstm", "gru-clipped", "exprnn-copy", "rnn-sgd-cosine", "gru-2-layers-bidirectional"],
)
def test_each_stacked_run_is_the_run_trained_alone(tmp_path, fields):
    if fields.get("method") == "exprnn":
        fields = {**fields, "rebase_every": 5}  # dtriv: each run's base moved on its own
    stacked = train_stacked(_configs(tmp_path, "stacked", seeds=(0, 1), **fields))
    for s, result in enumerate(stacked):
        alone = train({**_fields(**fields), "seed": s, "out": str(tmp_path / f"alone{s}")})
        _assert_same_params(result.model, alone.model)
        assert result.summary["steps_done"] == alone.summary["steps_done"] == BASE["steps"]
        torch.testing.assert_close(
            result.summary["final_loss"], alone.summary["final_loss"], rtol=TOL, atol=TOL
        )
        torch.testing.assert_close(
            _losses(result.run_dir), _losses(alone.run_dir), rtol=TOL, atol=TOL
        )
        assert result.summary["verdict"] == alone.summary["verdict"]
    finals = [r.summary["final_loss"] for r in stacked]
    assert len(set(finals)) == 2  # two seeds, two different runs


@pytest.mark.parametrize(
    "fields",
    [{"cell": "rnn", "clip_step_norm": 0.02}, {"clip_step_value": 0.002, "layers": 2}],
    ids=["rnn-step-norm", "lstm-2-layers-step-value"],
)
def test_stacked_runs_clip_each_time_step_as_the_run_alone_does(tmp_path, fields):
    # each run's per-step taps in the stacked kernel: every unroll of its own model
    stacked = train_stacked(_configs(tmp_path, "stacked", seeds=(0, 1), **fields))
    for s, result in enumerate(stacked):
        alone = train({**_fields(**fields), "seed": s, "out": str(tmp_path / f"alone{s}")})
        _assert_same_params(result.model, alone.model)
        torch.testing.assert_close(
            _losses(result.run_dir), _losses(alone.run_dir), rtol=TOL, atol=TOL
        )
    # and the clipping acted: without it the same run ends elsewhere
    free = {**fields, "clip_step_norm": None, "clip_step_value": None}
    unclipped = train({**_fields(**free), "seed": 0, "out": str(tmp_path / "free")})
    moved = [
        (p - q).abs().max().item()
        for p, q in zip(stacked[0].model.parameters(), unclipped.model.parameters(), strict=True)
    ]
    assert max(moved) > 1e3 * TOL


def test_runs_of_other_rates_optimizers_clipping_and_budgets_stack_too(tmp_path):
    own = [
        {"lr": 0.05, "steps": 10},
        {"optimizer": "rmsprop", "lr": 3e-3, "clip": "norm", "clip_norm": 0.1},
        {"optimizer": "sgd", "lr": 0.1, "lr_schedule": "cosine", "method": "lstm-chrono-adam"},
    ]
    configs = _configs(tmp_path, "mixed")
    for config, fields in zip(configs, own, strict=True):
        config.update(fields)
    stacked = train_stacked(configs)
    for config, result in zip(configs, stacked, strict=True):
        alone = train({**config, "out": str(tmp_path / f"alone{config['seed']}")})
        _assert_same_params(result.model, alone.model)
        assert _losses(result.run_dir) == pytest.approx(_losses(alone.run_dir), rel=TOL)
    assert [r.summary["steps_done"] for r in stacked] == [10, 24, 24]


def test_a_killed_stacked_job_resumes_bit_for_bit(tmp_path):
    whole = train_stacked(_configs(tmp_path, "whole"))

    def crash(step, model):  # the first run's step 13, before its update: a kill
        if step == 13:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_stacked(_configs(tmp_path, "cut"), on_gradients=crash)
    resumed = train_stacked(_configs(tmp_path, "cut"))  # from each run's step-8 checkpoint
    for a, b in zip(whole, resumed, strict=True):
        _assert_same_params(a.model, b.model, tol=None)
        assert _losses(a.run_dir) == _losses(b.run_dir)
        assert a.summary["final_loss"] == b.summary["final_loss"]


def test_runs_resumed_from_different_checkpoints_end_as_the_uninterrupted_ones(tmp_path):
    whole = train_stacked(_configs(tmp_path, "whole"))

    def crash(step, model):
        if step == 21:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_stacked(_configs(tmp_path, "cut"), on_gradients=crash)
    checkpoints = sorted((tmp_path / "cut" / "s1" / "checkpoints").iterdir())
    checkpoints[-1].unlink()  # as if killed while writing it: run 1 goes on from step 8,
    with pytest.warns(UserWarning, match="incomplete"):  # the others from step 16
        resumed = train_stacked(_configs(tmp_path, "cut"))
    for a, b in zip(whole, resumed, strict=True):
        _assert_same_params(a.model, b.model)
        assert _losses(a.run_dir) == pytest.approx(_losses(b.run_dir), rel=TOL)


def test_a_directory_holding_another_configuration_is_refused(tmp_path):
    train_stacked(_configs(tmp_path, "x", seeds=(0,)))
    configs = _configs(tmp_path, "x", seeds=(0, 1), lr=0.5)
    with pytest.raises(ConfigError, match=r"another configuration \(differs in lr"):
        train_stacked(configs)
    assert not (tmp_path / "x" / "s1").exists()  # refused before anything was written


def test_a_run_that_ends_or_fails_leaves_the_others_undisturbed(tmp_path):
    whole = train_stacked(_configs(tmp_path, "whole", nonfinite="raise"))
    configs = _configs(tmp_path, "mixed", nonfinite="raise")  # run 1 stopped by the NaN below
    configs[0]["time_limit_s"] = 1e-9  # out of time after its first step
    calls = []

    def poison(step, model):  # run 1's weights made NaN at step 4 (run 0 has left by then):
        calls.append(step)  # its step 5 is NaN through the stacked forward and backward
        if step == 4 and calls.count(4) == 1:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    with pytest.raises(NonFiniteError, match="step 5"):
        train_stacked(configs, on_gradients=poison)
    cut = (tmp_path / "mixed" / "s0" / "summary.json").read_text()
    assert '"time_limited": true' in cut and '"steps_done": 1,' in cut
    assert '"error"' in (tmp_path / "mixed" / "s1" / "summary.json").read_text()
    # run 2 trained on alone for its steps, equal to the stack of three that ran it
    alone = train({**_fields(nonfinite="raise"), "seed": 2, "out": str(tmp_path / "alone2")})
    assert _losses(tmp_path / "mixed" / "s2") == pytest.approx(_losses(whole[2].run_dir), rel=TOL)
    assert _losses(tmp_path / "mixed" / "s2") == pytest.approx(_losses(alone.run_dir), rel=TOL)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"batch_size": 4}, "differ in batch_size"),
        ({"hidden": 5}, "differ in hidden"),
        ({"length": 13}, "differ in length"),
        ({"optimizer": "hf"}, "Hessian-free"),
    ],
)
def test_runs_that_differ_in_what_a_stack_shares_are_refused(tmp_path, fields, needle):
    configs = _configs(tmp_path, "x", seeds=(0, 1))
    configs[1].update(fields)
    with pytest.raises(ConfigError, match=needle):
        train_stacked(configs)
    assert not (tmp_path / "x").exists()  # refused before anything was written


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"optimizer": "hf", "batch_size": 16}, "Hessian-free"),
        ({"cell": "lru"}, "no stacked engine"),
        ({"engine": "generic"}, "engine = generic"),
        ({"task": "text", "length": 10, "tbptt_k1": 10}, "truncated"),
        ({"layers": 2, "dropout": 0.1}, "dropout between layers"),
    ],
)
def test_what_the_stacked_engine_cannot_run_is_refused(tmp_path, fields, needle):
    with pytest.raises(ConfigError, match=needle):
        train_stacked(_configs(tmp_path, "x", seeds=(0, 1), **fields))


@pytest.mark.parametrize("bad", [[], {}, {"seed": 1}])
def test_not_a_list_of_configs_is_refused(bad):
    with pytest.raises(ConfigError, match="non-empty list"):
        train_stacked(bad)


def test_two_runs_in_one_directory_are_refused(tmp_path):
    configs = _configs(tmp_path, "x", seeds=(0, 1))
    configs[1]["out"] = configs[0]["out"]
    with pytest.raises(ConfigError, match="share a run directory"):
        train_stacked(configs)


def test_cli_stacks_the_seeds_and_tabulates_them(tmp_path):
    runner = CliRunner()
    fields = {"task": "adding", "length": 6, "cell": "gru", "hidden": 4, "steps": 5}
    fields.update(test_size=16, dtype="float64")
    flags = ["train", "--no-progress", "--no-report"]
    for name, value in fields.items():
        flags += ["--" + name.replace("_", "-"), str(value)]
    out = tmp_path / "seeds"
    result = runner.invoke(app, [*flags, "--seeds", "0-2", "--stack", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out / "results.csv", newline="") as handle:
        assert sorted(int(row["seed"]) for row in csv.DictReader(handle)) == [0, 1, 2]
    for seed in range(3):
        where = out / f"seeds-adding-T6-gru-s{seed}"
        state = torch.load(where / "model.pt", weights_only=True)
        alone = train({**fields, "seed": seed})
        for name, tensor in alone.model.state_dict().items():
            torch.testing.assert_close(state[name], tensor, rtol=TOL, atol=TOL, msg=name)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/summary.json")}
    again = runner.invoke(app, [*flags, "--seeds", "0-2", "--stack", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/summary.json")} == stamps
    for extra, needle in ((["--seeds", "0-1", "--workers", "2"], "no --workers"), ([], "--seeds")):
        bad = runner.invoke(app, [*flags, *extra, "--stack", "--out", str(out / "b")])
        assert bad.exit_code == 2 and needle in bad.output, bad.output


def test_bench_stacks_each_configuration_s_seeds_and_leaves_the_rest(tmp_path, monkeypatch):
    import bptt.run.bench._executors as executors

    stacked = []
    original = executors.train_stacked

    def recording(configs, **kwargs):
        stacked.append(sorted((c.method, c.seed) for c in configs))
        return original(configs, **kwargs)

    monkeypatch.setattr(executors, "train_stacked", recording)
    flags = ["bench", "--profile", "matrix", "--tasks", "adding", "--lengths", "6"]
    flags += ["--methods", "lstm,lru", "--seeds", "0,1", "--steps", "4", "--hidden", "4"]
    flags += ["--no-report", "--no-progress", "--out", str(tmp_path / "b")]
    result = CliRunner().invoke(app, [*flags, "--stack"])
    assert result.exit_code == 0, result.output
    assert stacked == [[("lstm", 0), ("lstm", 1)]]  # the LRU has no stacked engine
    with open(tmp_path / "b" / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["method"], r["seed"]) for r in rows) == [
        ("lru", "0"), ("lru", "1"), ("lstm", "0"), ("lstm", "1")
    ]  # fmt: skip
    again = CliRunner().invoke(app, [*flags, "--stack"])
    assert again.exit_code == 0 and len(stacked) == 1  # all finished: nothing stacked again
    bad = CliRunner().invoke(app, [*flags, "--stack", "--workers", "2"])
    assert bad.exit_code != 0 and "not with --executor ray or --workers" in bad.output


_ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["gru", "rnn", "lru", "hf", "cosine", "norm", "generic", "copy", "text"]),
)


_FIELDS = [f for f in TrainConfig.flag_fields() if f != "device"]


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from(_FIELDS), value=_ANY_VALUE)
def test_any_second_run_stacks_or_is_refused_in_one_line(field, value):
    base = {k: v for k, v in BASE.items() if k != "checkpoint_every"}
    first = TrainConfig.from_dict(base)
    try:
        second = TrainConfig.from_dict({**base, field: value})
    except ConfigError:
        return  # a bad value is the config's to refuse (tests/run/training/test_config.py)
    reason = stack_refusal([first, second])
    assert reason is None or (isinstance(reason, str) and "\n" not in reason)
    differ = [k for k in SHARED_FIELDS if getattr(first, k) != getattr(second, k)]
    if differ:
        assert reason is not None and differ[0] in reason
