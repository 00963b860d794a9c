"""Steps to solve, per method: adding at T in {100, 200} and copy at T in {50, 100}.

Each run trains one recipe (``bptt.run.RECIPES``) on one task until an evaluation (every
100 steps) finds it solved, or the step budget runs out; two runs at a time, one
thread each. The table gives the first solved step, or "-" when the budget ended
first, and the final test loss against the baseline. Results go to
``runs/methods/methods.csv`` as they come; a second call with the same ``--out`` and
``--budget`` skips the runs already there (an interrupted table resumes).

    python benchmarks/methods.py --budget 10000 --seeds 0
"""

from __future__ import annotations

import argparse
import functools
import itertools
from pathlib import Path

from rich.console import Console
from rich.table import Table

import bptt
from _matrix import optional_int, run_matrix
from bptt.run import RECIPES

SETTINGS = (("adding", 100), ("adding", 200), ("copy", 50), ("copy", 100))


ROW_TYPES = {"method": str, "task": str, "length": int, "seed": int}
ROW_TYPES |= {"solved_step": optional_int, "steps_done": int, "final_loss": float}
ROW_TYPES |= {"baseline": float, "wall_s": float, "budget": int}


def run(method: str, task: str, length: int, seed: int, budget: int) -> dict:
    config = {"method": method, "task": task, "length": length, "seed": seed, "steps": budget}
    config.update({"eval_every": 100, "stop_when_solved": True, "threads": 1, "monitor": False})
    summary = bptt.train(config).summary
    keys = ("method", "task", "length", "seed", "solved_step", "steps_done", "final_loss")
    row = {k: summary[k] for k in keys}
    row.update({"baseline": summary["baseline_loss"], "wall_s": summary["wall_s"]})
    row["budget"] = budget
    return row


def _fraction(share: float) -> str:
    """A final loss as a share of the baseline, as the README's table writes it."""
    return f"{share:.2f}" if share >= 0.1 else f"{share:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--methods", default=",".join(RECIPES))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/methods"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    jobs = [(m, t, n, s) for m, (t, n), s in itertools.product(methods, SETTINGS, seeds)]
    rows = list(
        run_matrix(
            args.out / "methods.csv",
            ROW_TYPES,
            jobs,
            key=lambda r: (r["method"], r["task"], r["length"], r["seed"]),
            work=functools.partial(run, budget=args.budget),
            workers=args.workers,
            keep=lambda r: r["budget"] == args.budget,
        )
    )
    table = Table(title=f"steps to solve (budget {args.budget}, eval every 100, seeds {seeds})")
    table.add_column("method")
    for task, length in SETTINGS:
        table.add_column(f"{task} T={length}", justify="right")
    for method in methods:
        cells = []
        for task, length in SETTINGS:
            found = [
                r for r in rows if (r["method"], r["task"], r["length"]) == (method, task, length)
            ]
            cells.append(
                " / ".join(
                    f"{r['solved_step']}"
                    if r["solved_step"]
                    else f"- ({_fraction(r['final_loss'] / r['baseline'])})"
                    for r in sorted(found, key=lambda r: r["seed"])
                )
            )
        table.add_row(method, *cells)
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
