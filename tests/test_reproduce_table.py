"""``benchmarks/reproduce.py``'s tables from real (tiny) run directories: a solved and
an unsolved run under a row's directory names, and ``--why``'s diagnosis of the
unsolved one at initialisation and at the end."""

import argparse
import importlib.util
from pathlib import Path

import bptt


def _reproduce():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("reproduce", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tables_count_solved_seeds_and_say_why_the_others_fell_short(tmp_path):
    reproduce = _reproduce()
    row = next(r for r in reproduce.ROWS if r.named_by("adding:200:lstm-chrono-adam"))
    tiny = {"task": "adding", "length": 8, "cell": "lstm", "hidden": 16, "test_size": 64}
    tiny |= {"threads": 1, "eval_every": 20, "stop_when_solved": True}
    # measured: seed 0 solves adding T=8 by step 200 at lr 1e-2; 3 steps solve nothing
    bptt.train(
        {
            **tiny,
            "lr": 1e-2,
            "steps": 400,
            "seed": 0,
            "out": str(tmp_path / "adding-T200-lstm-chrono-adam-s0"),
        }
    )
    bptt.train(
        {**tiny, "steps": 3, "seed": 1, "out": str(tmp_path / "adding-T200-lstm-chrono-adam-s1")}
    )
    args = argparse.Namespace(out=tmp_path, seeds=[0, 1, 2])
    table = reproduce.table([row], args).splitlines()
    assert len(table) == 3 and "| 1 of 2 (of 3 seeds) |" in table[2]
    why = reproduce.why_table([row], args).splitlines()
    assert len(why) == 3 and why[2].startswith("| adding | 200 | lstm-chrono-adam | 1 | 3 |")
    at_init = bptt.run.diagnose_run(tmp_path / "adding-T200-lstm-chrono-adam-s1", at_init=True)
    assert f"| {at_init['ratio_at_dependency']:.2g} |" in why[2]
