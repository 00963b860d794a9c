"""``benchmarks/reproduce.py``'s tables from real (tiny) run directories: a solved and
an unsolved run under a row's directory names, a run of another recipe under the
third name (not counted), and ``--why``'s diagnosis of the unsolved one at
initialisation and at the end."""

import argparse
import os

import bptt
from bptt.run import LiteratureRow
from helpers import load_benchmark


def test_the_tables_count_this_rows_seeds_and_say_why_the_others_fell_short(tmp_path):
    reproduce = load_benchmark("reproduce")
    settings = {"hidden": 16, "batch_size": 32, "steps": 400}
    row = LiteratureRow("adding", 200, "lstm-chrono-adam", "anchor", settings)
    tiny = {"task": "adding", "length": 8, "method": "lstm-chrono-adam", **settings}
    tiny |= {"test_size": 64, "threads": 1, "eval_every": 20, "stop_when_solved": True}
    name = "adding-T200-lstm-chrono-adam-s{}"
    # measured: seed 0 solves adding T=8 by step 100; 3 steps solve nothing
    bptt.train({**tiny, "seed": 0, "out": str(tmp_path / name.format(0))})
    bptt.train({**tiny, "steps": 3, "seed": 1, "out": str(tmp_path / name.format(1))})
    other = {**tiny, "method": "lstm-chrono", "steps": 3, "seed": 2}  # renamed since
    bptt.train({**other, "out": str(tmp_path / name.format(2))})
    assert "method = 'lstm-chrono'" in reproduce._stale(tmp_path / name.format(2), row)
    args = argparse.Namespace(out=tmp_path, seeds=[0, 1, 2])
    table = reproduce.table([row], args).splitlines()
    assert len(table) == 3 and "| 1 of 2 (of 3 seeds) |" in table[2]
    why = reproduce.why_table([row], args).splitlines()
    assert len(why) == 3 and why[2].startswith("| adding | 200 | lstm-chrono-adam | 1 | 3 |")
    at_init = bptt.run.diagnose_run(tmp_path / name.format(1), at_init=True)
    assert f"| {at_init['ratio_at_dependency']:.2g} |" in why[2]


def test_workers_run_the_pending_seeds_side_by_side_and_skip_the_finished(tmp_path, monkeypatch):
    import json
    import sys

    reproduce = load_benchmark("reproduce")
    row = LiteratureRow("adding", 6, "gru", "anchor", {"hidden": 4, "steps": 5})
    launched = []
    # a stand-in for a training: half a second, then its summary with when it ran
    script = (
        "import json, sys, time, pathlib; start = time.time(); time.sleep(0.5); "
        "p = pathlib.Path(sys.argv[1]); p.mkdir(parents=True); "
        "(p / 'summary.json').write_text(json.dumps({'seed': int(sys.argv[2]), "
        "'start': start, 'end': time.time()}))"
    )

    def stand_in(row, seed, where, args, threads):
        launched.append((seed, threads))
        return [sys.executable, "-c", script, str(where), str(seed)]

    monkeypatch.setattr(reproduce, "_command", stand_in)
    args = argparse.Namespace(out=tmp_path, seeds=[0, 1, 2], workers=2, deadline=0, time_limit=0)
    reproduce.run_all([row], args)
    runs = [
        json.loads((tmp_path / f"adding-T6-gru-s{s}" / "summary.json").read_text())
        for s in (0, 1, 2)
    ]
    assert [r["seed"] for r in runs] == [0, 1, 2]
    assert runs[1]["start"] < runs[0]["end"]  # two at once
    assert runs[2]["start"] >= min(runs[0]["end"], runs[1]["end"])  # never three
    assert {threads for _, threads in launched} == {max(1, len(os.sched_getaffinity(0)) // 2)}
    reproduce.run_all([row], args)  # all finished: nothing launched again
    assert len(launched) == 3


def test_stack_trains_a_rows_seeds_as_one_model_and_resumes_them(tmp_path):
    reproduce = load_benchmark("reproduce")
    row = LiteratureRow("adding", 6, "gru", "anchor", {"hidden": 4, "steps": 5, "batch_size": 8})
    args = argparse.Namespace(out=tmp_path, seeds=[0, 1], steps=0, eval_every=5, device="cpu")
    args.time_limit, args.workers, args.deadline = 0, 1, 0
    command = reproduce._command(row, 0, tmp_path / "x", args, 1)
    assert "--stop-when-solved" in command and command[command.index("--hidden") + 1] == "4"
    reproduce.run_stacked([row], args)
    for seed in (0, 1):
        where = tmp_path / f"adding-T6-gru-s{seed}"
        summary = (where / "summary.json").read_text()
        alone = bptt.train({**reproduce._new_run(row, seed, tmp_path / "a", args, 1), "out": None})
        assert f'"steps_done": {alone.summary["steps_done"]}' in summary
        assert reproduce._stale(where, row) is None
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/summary.json")}
    reproduce.run_stacked([row], args)  # all finished: nothing trained again
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/summary.json")} == stamps


def test_stack_leaves_a_row_it_cannot_stack_to_the_one_at_a_time_path(tmp_path, monkeypatch):
    reproduce = load_benchmark("reproduce")
    row = LiteratureRow("adding", 6, "lru", "anchor", {"hidden": 4, "steps": 3, "batch_size": 8})
    args = argparse.Namespace(out=tmp_path, seeds=[0, 1], steps=0, eval_every=5, device="cpu")
    args.time_limit, args.workers, args.deadline = 0, 1, 0
    handed = []
    monkeypatch.setattr(reproduce, "run_all", lambda rows, a: handed.append(rows))
    reproduce.run_stacked([row], args)
    assert handed == [[row]] and not list(tmp_path.iterdir())  # nothing written by the stack


def test_an_echo_state_networks_row_runs_bptt_esn_and_shows_in_the_table(tmp_path):
    """A row of method ``esn``: each seed is a ``bptt esn`` run directory (the readout
    fitted at once), counted solved as its summary says, with its accuracy."""
    reproduce = load_benchmark("reproduce")
    settings = {"units": 60, "train_size": 300, "test_size": 200}
    row = LiteratureRow("order", 20, "esn", "anchor", settings)
    command = reproduce._command(row, 1, tmp_path / "x", argparse.Namespace(), 1)
    assert command[3:6] == ["esn", "--task", "order"] and "--units=60" in command
    args = argparse.Namespace(out=tmp_path, seeds=[0, 1], workers=1, deadline=0, time_limit=0)
    args.stack = False
    reproduce.run_stacked([row], args)  # an ESN row is never stacked: one at a time
    summaries = [reproduce._summary(tmp_path / f"order-T20-esn-s{seed}") for seed in (0, 1)]
    solved = sum(bool(s["solved"]) for s in summaries)
    table = reproduce.table([row], args).splitlines()
    assert len(table) == 3
    assert table[2].startswith(f"| order | 20 | esn | {solved} of 2 (of 2 seeds) |")
    accuracy = sorted(s["accuracy"] for s in summaries)
    assert f"accuracy {(accuracy[0] + accuracy[1]) / 2:.1%}" in table[2]  # the median of two
    assert reproduce._stale(tmp_path / "order-T20-esn-s0", row) is None
    assert reproduce.why_table([row], args).splitlines()[2:] == []  # nothing to diagnose
