"""``benchmarks/reproduce.py``'s tables from real (tiny) run directories: a solved and
an unsolved run under a row's directory names, a run of another recipe under the
third name (not counted), and ``--why``'s diagnosis of the unsolved one at
initialisation and at the end."""

import argparse
import importlib.util
from pathlib import Path

import bptt
from bptt.run import LiteratureRow


def _reproduce():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("reproduce", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tables_count_this_rows_seeds_and_say_why_the_others_fell_short(tmp_path):
    reproduce = _reproduce()
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
