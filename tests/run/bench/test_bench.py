"""``bptt bench``: profiles, results.csv, the leaderboard, resuming, the executors."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bptt.cli import app
from bptt.run import (
    CLIP_DEMO,
    LITERATURE_ROWS,
    RESULT_FIELDS,
    ConfigError,
    plan_bench,
    read_results,
    run_bench,
)
from bptt.run.bench._executors import threads_per_worker
from bptt.run.bench._literature import published_result
from bptt.run.bench._plan import QUICK_METHODS
from bptt.run.bench._results import aggregate, typed_row

runner = CliRunner()

# A tiny matrix: two recipes, two seeds, a few steps each.
TINY = ["--profile", "matrix", "--tasks", "adding", "--lengths", "5", "--methods", "rnn,lstm"]
TINY += ["--steps", "4", "--hidden", "4", "--no-progress", "--no-report"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _without_time(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in rows]


def test_the_quick_profile_tells_the_story():
    runs = plan_bench()
    groups = {run.group for run in runs}
    assert groups == {"four-ways", "methods", "clipping", "truncation", "reservoir"}
    assert runs[0].group == "four-ways"  # the report's lead section
    four = [r for r in runs if r.group == "four-ways"]
    assert {r.task for r in four} == {"order"} and {r.length for r in four} == {100}
    assert {r.fields.get("method") for r in four if r.kind == "train"} == {
        "rnn",
        "lstm-chrono-adam",
        "hf",
        "esn-momentum",
    }
    assert [r.kind for r in four].count("esn") == 1
    methods = [r for r in runs if r.group == "methods"]
    assert [(r.task, r.length, r.method.split(",")[0]) for r in methods] == [
        m[:3] for m in QUICK_METHODS
    ]
    assert {r.method for r in methods if r.task == "adding"} >= {"rnn", "lstm"}
    assert {r.method for r in methods if r.task == "copy"} == {"rnn", "orthogonal"}
    assert "irnn, lr 0.001" in {r.method for r in methods}
    clipping = [r for r in runs if r.group == "clipping"]
    assert all(r.fields["lr"] == CLIP_DEMO["lr"] for r in clipping)
    assert {r.fields.get("clip_step_norm") for r in clipping} > {None}  # a per-step run
    # each until solved: run on, SGD at 0.5 drifts off again and ends "not solved"
    assert all(r.fields["stop_when_solved"] and r.fields["steps"] == 2000 for r in clipping)
    truncation = [r for r in runs if r.group == "truncation"]
    k2 = sorted(r.fields["tbptt_k2"] for r in truncation)
    assert k2[0] < truncation[0].length < k2[-1]  # one shorter than the delay, one longer
    assert len({r.name for r in runs}) == len(runs)
    assert all(r.fields["checkpoint_every"] > 0 for r in runs if r.kind == "train")


def test_the_full_profile_is_the_literature_table():
    runs = plan_bench("full")
    assert len(runs) == 3 * len(LITERATURE_ROWS)
    assert all(run.published for run in runs)
    copy = plan_bench("full", tasks=["copy"], lengths=[1000], seeds=[0])
    assert [(r.task, r.length, r.method) for r in copy] == [
        ("copy", 1000, "exprnn"),
        ("copy", 1000, "dtriv"),  # expRNN's code's default beside its static mode
        ("copy", 1000, "lru"),  # the LRU beside the best first-wave method
        ("copy", 1000, "mingru"),  # and the minimal GRU (Feng et al. 2024)
    ]
    lru = plan_bench("full", methods=["lru"], seeds=[0])
    assert sorted((r.task, r.length) for r in lru) == [
        *((task, length) for task in ("adding", "copy") for length in (1000, 2000, 5000)),
        ("pdigits", 64),
    ]
    assert "0.0121" in published_result("adding", 5000, "lru")
    assert "expRNN" in published_result("copy", 1000, "exprnn")
    assert published_result("copy", 1000, "rnn") is None


def test_a_results_row_is_read_from_the_typed_summary():
    from bptt.run import RunSummary
    from bptt.run.bench._plan import PlannedRun
    from bptt.run.bench._results import is_finished, result_row

    train = PlannedRun("matrix", "rnn", "train", {"task": "adding", "length": 5, "seed": 1})
    # written before the final diagnosis (no diagnose_s), by an older version: the keys
    # it lacks read as none
    first = RunSummary.model_validate({"task": "adding", "solved_step": 40, "diverged": True})
    assert not is_finished(train, first) and not is_finished(train, None)
    row = result_row(train, first)
    assert row["outcome"] == "solved, then diverged" and row["verdict"] is None
    assert row["solved"] is False and row["final_metric"] is None and row["horizon"] is None
    judged = {"verdict": "vanishing", "diagnose_s": 0.5, "time_limited": True}
    judged["diagnosis"] = {"reasons": ["r"], "evidence": {"probe/horizon": 3}}
    last = RunSummary.model_validate({"task": "adding", "final_loss": 0.5, **judged})
    row = result_row(train, last)
    assert is_finished(train, last) and row["outcome"] == "stopped by its time limit"
    assert row["verdict"] == "vanishing" and type(row["verdict"]) is str  # the csv's text
    assert (row["final_metric"], row["horizon"]) == (0.5, 3)
    esn = PlannedRun("reservoir", "esn", "esn", {"task": "mackey-glass", "seed": 1})
    fitted = RunSummary.model_validate({"task": "mackey-glass", "nrmse": 0.01, "wall_s": 2.0})
    row = result_row(esn, fitted)
    assert is_finished(esn, fitted) and row["outcome"] == "fitted"
    assert (row["final_metric"], row["wall_seconds"]) == (0.01, 2.0)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"profile": "fast"}, "profile"),
        ({"profile": "matrix"}, "matrix needs"),
        ({"profile": "matrix", "tasks": ["adding"], "lengths": [5], "methods": ["x"]}, "unknown"),
        ({"seeds": [-1]}, "seeds"),
        ({"seeds": [True]}, "seeds"),
        ({"lengths": ["5"]}, "lengths"),
        ({"steps": 0}, "steps"),
        ({"hidden": 0}, "hidden"),
        ({"tasks": ["nothing"]}, "no run"),
        ({"profile": "matrix", "tasks": ["adding"], "lengths": [0], "methods": ["rnn"]}, "length"),
        (
            {"profile": "matrix", "tasks": ["adding"], "lengths": [5], "methods": ["rnn", "rnn"]},
            "twice",
        ),
    ],
)
def test_bad_plans_are_refused_before_anything_runs(kwargs, needle):
    profile = kwargs.pop("profile", "quick")
    with pytest.raises(ConfigError, match=needle):
        plan_bench(profile, **kwargs)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--profile", "nope"], "profile"),
        (["--seeds", "0,x"], "seeds"),
        (["--workers", "0"], "workers"),
        (["--executor", "dask"], "executor"),
        (["--profile", "matrix", "--tasks", "adding"], "matrix needs"),
        (["--methods", "nonsense"], "no run"),
    ],
)
def test_bad_bench_flags_exit_2_in_one_line(tmp_path, args, needle):
    result = runner.invoke(app, ["bench", *args, "--out", str(tmp_path / "b")])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert not (tmp_path / "b" / "results.csv").exists()


def test_bench_writes_results_leaderboard_and_report(tmp_path):
    out = tmp_path / "bench"
    args = [*TINY, "--seeds", "0,1", "--out", str(out)]
    args.remove("--no-report")
    result = runner.invoke(app, ["bench", *args])
    assert result.exit_code == 0, result.output
    assert "leaderboard" in result.output and "report.html" in result.output
    rows = _rows(out)
    assert list(rows[0]) == list(RESULT_FIELDS)
    assert [(r["method"], r["seed"]) for r in rows] == [
        ("rnn", "0"),
        ("rnn", "1"),
        ("lstm", "0"),
        ("lstm", "1"),
    ]
    for row in rows:
        summary = json.loads((out / row["run_dir"] / "summary.json").read_text())
        assert float(row["final_metric"]) == summary["final_loss"]
        assert row["solved"] == str(summary["solved"]) and row["verdict"] == summary["verdict"]
        assert row["solved_at_step"] == "" and row["outcome"] == "not solved"
        assert (out / row["run_dir"] / "report.html").is_file()
    page = (out / "report.html").read_text()
    assert page.count("<img class='figure'") >= 2 and "rnn" in page
    assert all(f"{r['run_dir']}/report.html" in page for r in rows)


def test_a_second_bench_call_skips_finished_runs(tmp_path):
    out = tmp_path / "bench"
    assert runner.invoke(app, ["bench", *TINY, "--out", str(out)]).exit_code == 0
    first = _rows(out)
    stamps = {r["run_dir"]: (out / r["run_dir"] / "model.pt").stat().st_mtime_ns for r in first}
    assert runner.invoke(app, ["bench", *TINY, "--out", str(out)]).exit_code == 0
    assert _rows(out) == first  # the same rows, wall seconds included: nothing re-ran
    after = {r["run_dir"]: (out / r["run_dir"] / "model.pt").stat().st_mtime_ns for r in first}
    assert after == stamps


def test_a_killed_bench_completes_only_what_is_missing(tmp_path):
    """SIGKILL during the second run; the rerun resumes it and gives the rows of a bench
    never interrupted (wall seconds aside)."""
    args = ["--profile", "matrix", "--tasks", "adding", "--lengths", "8"]
    args += ["--methods", "rnn,lstm", "--steps", "300", "--hidden", "8", "--no-progress"]
    args += ["--no-report"]
    command = [sys.executable, "-m", "bptt", "bench", *args]
    whole = tmp_path / "whole"
    subprocess.run([*command, "--out", str(whole)], check=True, capture_output=True, timeout=300)
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [*command, "--out", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    second = killed / "matrix-adding-T8-lstm-s0" / "checkpoints"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if second.is_dir() and len(list(second.glob("*.pt"))) >= 2:
            break  # the second run is under way, past its first checkpoints
        time.sleep(0.05)
    assert process.poll() is None, "the bench ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert len(_rows(killed)) == 1
    subprocess.run([*command, "--out", str(killed)], check=True, capture_output=True, timeout=300)
    assert _without_time(_rows(killed)) == _without_time(_rows(whole))


def test_run_bench_refuses_bad_arguments_before_writing(tmp_path):
    runs = plan_bench("matrix", tasks=["adding"], lengths=[5], methods=["rnn"], steps=2)
    for kwargs, error in (
        ({"executor": "dask"}, ValueError),
        ({"workers": 0}, ValueError),
        ({"workers": True}, ValueError),
    ):
        with pytest.raises(error):
            run_bench(runs, tmp_path / "b", progress=False, **kwargs)
    with pytest.raises(TypeError, match="PlannedRun"):
        run_bench([{"task": "adding"}], tmp_path / "b")  # type: ignore[list-item]
    with pytest.raises(TypeError, match="PlannedRun"):
        run_bench([], tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_workers_divide_the_cores():
    assert threads_per_worker(1, 2) == 2
    assert threads_per_worker(2, 2) == 1
    assert threads_per_worker(3, 2) == 1
    assert threads_per_worker(2, 16) == 8


def test_ray_gives_the_rows_of_the_local_executor(tmp_path):
    """A 2-run matrix on a local Ray cluster and in two local worker processes: each
    run with one thread on both sides, so the rows agree exactly (wall seconds aside)."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'bptt[ray]')")
    runs = plan_bench(
        "matrix",
        tasks=["adding"],
        lengths=[6],
        methods=["rnn", "gru"],
        seeds=[0],
        steps=20,
        hidden=8,
    )
    local = run_bench(runs, tmp_path / "local", workers=2, progress=False, report=False)
    on_ray = run_bench(
        runs, tmp_path / "ray", executor="ray", workers=2, progress=False, report=False
    )
    assert len(local) == 2
    assert _without_time(read_results(tmp_path / "ray" / "results.csv")) == _without_time(
        read_results(tmp_path / "local" / "results.csv")
    )
    assert [r["final_metric"] for r in on_ray] == [r["final_metric"] for r in local]
    # the report's leaderboard (from the file) and the terminal's (from memory) agree
    from_file = [typed_row(r) for r in read_results(tmp_path / "local" / "results.csv")]
    assert aggregate(from_file) == aggregate(local)


def test_a_bench_rerun_with_other_settings_into_the_same_directory_is_refused(tmp_path):
    from click.testing import CliRunner

    from bptt.cli import app

    flags = ["bench", "--profile", "matrix", "--tasks", "adding", "--lengths", "6"]
    flags += ["--methods", "gru", "--hidden", "4", "--no-report", "--no-progress"]
    flags += ["--out", str(tmp_path / "b")]
    first = CliRunner().invoke(app, [*flags, "--steps", "3"])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, [*flags, "--steps", "4"])
    assert again.exit_code == 2 and "another configuration (differs in" in again.output
    assert "steps" in again.output and "use another --out" in again.output
    same = CliRunner().invoke(app, [*flags, "--steps", "3"])  # the same plan: reused
    assert same.exit_code == 0, same.output
