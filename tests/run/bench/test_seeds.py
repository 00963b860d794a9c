"""``bptt train --seeds``: one configuration once per seed, each seed's run equal to the
same run trained alone, a second call completing only what is missing, and every bad
combination refused in one line."""

import csv
import json

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import bptt
from bptt.cli import app
from bptt.run import ConfigError, parse_seeds, plan_seeds

runner = CliRunner()
TINY = ["--task", "adding", "--length", "6", "--cell", "gru", "--hidden", "4", "--steps", "5"]
TINY += ["--test-size", "16", "--no-progress"]


@pytest.mark.parametrize(
    ("text", "seeds"),
    [("0-3", [0, 1, 2, 3]), ("5", [5]), ("0,3,5", [0, 3, 5]), (" 0-1 , 7 ", [0, 1, 7])],
)
def test_seed_lists_and_ranges(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "expected seeds"),
        ("a", "expected seeds"),
        ("1-", "expected seeds"),
        ("-1", "expected seeds"),
        ("3-1", "runs backwards"),
        ("1,1", "given twice"),
        ("0-2,2", "given twice"),
        ("0-5000", "at most 1000"),
    ],
)
def test_bad_seed_lists_are_refused(text, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_seeds(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20))
def test_any_text_is_a_seed_list_or_a_config_error(text):
    try:
        seeds = parse_seeds(text)
    except ConfigError:
        return
    assert seeds and len(set(seeds)) == len(seeds) and all(s >= 0 for s in seeds)


def test_each_seed_is_the_run_trained_alone_and_a_second_call_trains_nothing(tmp_path):
    out = tmp_path / "seeds"
    args = ["train", *TINY, "--seeds", "0-2", "--out", str(out), "--no-report"]
    # in this process (worker processes: tests/run/bench/test_bench.py's Ray test; the report too)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "leaderboard" in result.output and not (out / "report.html").exists()
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(int(r["seed"]) for r in rows) == [0, 1, 2]
    for run in plan_seeds({"out": str(out), **_fields(TINY)}, [0, 1, 2]):
        where = out / run.name
        summary = json.loads((where / "summary.json").read_text())
        alone = bptt.train({**_fields(TINY), "seed": run.seed, "threads": summary["threads"]})
        state = torch.load(where / "model.pt", weights_only=True)
        for name, tensor in alone.model.state_dict().items():
            assert torch.equal(tensor, state[name]), (run.seed, name)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/summary.json")}
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/summary.json")} == stamps
    other = runner.invoke(app, [*args, "--lr", "0.5"])
    assert other.exit_code == 2 and "another configuration (differs in lr)" in other.output
    fewer = runner.invoke(app, [*args[:-4], "0-1", *args[-3:]])
    assert fewer.exit_code == 2 and "does not plan (seeds-adding-T6-gru-s2)" in fewer.output
    lstm = runner.invoke(app, [*args, "--cell", "lstm"])
    assert lstm.exit_code == 2 and "does not plan (seeds-adding-T6-gru-s0 and 2 more)" in (
        lstm.output
    )


def test_the_directories_are_named_by_the_validated_task_and_length(tmp_path):
    from bptt.run import TrainConfig

    default = TrainConfig.from_dict({})
    given = plan_seeds({"out": str(tmp_path), "task": default.task, "length": default.length}, [0])
    assert [r.name for r in plan_seeds({"out": str(tmp_path)}, [0])] == [given[0].name]
    assert given[0].fields["checkpoint_every"] == 100  # an interrupted seed resumes
    with pytest.raises(ConfigError, match="seed"):  # the last seed is validated too
        plan_seeds({"out": str(tmp_path)}, [0, 2**70])
    with pytest.raises(ConfigError, match="at least one seed"):
        plan_seeds({"out": str(tmp_path)}, [])


def _fields(flags: list[str]) -> dict:
    """The config fields of TINY's flags."""
    names = [f[2:].replace("-", "_") for f in flags[::2] if f != "--no-progress"]
    values = [v for f, v in zip(flags[::2], flags[1::2], strict=False) if f != "--no-progress"]
    fields = dict(zip(names, values, strict=True))
    return {k: (int(v) if v.isdigit() else v) for k, v in fields.items()}


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--seeds", "0-1", "--seed", "3"], "seed: give either"),
        (["--seeds", "0-1"], "out: --seeds writes"),
        (["--seeds", "0-1", "--threads", "1", "--out", "{out}"], "threads: with --seeds"),
        (["--seeds", "0-1", "--resume", "{out}"], "resume: not with --seeds"),
        (["--seeds", "0-1", "--overwrite", "--out", "{out}"], "overwrite: not with --seeds"),
        (["--seeds", "0-1", "--workers", "0", "--out", "{out}"], "workers: must be >= 1"),
        (["--workers", "2", "--out", "{out}"], "given with --seeds"),
        (["--no-report", "--out", "{out}"], "--no-report applies with --seeds only"),
        (["--seeds", "x", "--out", "{out}"], "seeds: expected seeds"),
        (["--seeds", "0-1", "--lr", "-1", "--out", "{out}"], "lr"),
    ],
)
def test_bad_seed_runs_are_refused_in_one_line(tmp_path, extra, needle):
    extra = [e.replace("{out}", str(tmp_path / "o")) for e in extra]
    result = runner.invoke(app, ["train", *TINY, *extra])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
