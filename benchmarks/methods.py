"""Steps to solve, per method: adding at T in {100, 200} and copy at T in {50, 100}.

Each run trains one method (``bptt.methods``) on one task until an evaluation (every
100 steps) finds it solved, or the step budget runs out; two runs at a time, one
thread each. The table gives the first solved step, or "-" when the budget ended
first, and the final test loss against the baseline. Results go to
``runs/methods/methods.csv`` as they come; a second call with the same ``--out`` and
``--budget`` skips the runs already there (an interrupted table resumes).

    python benchmarks/methods.py --budget 10000 --seeds 0
"""

from __future__ import annotations

import argparse
import csv
import itertools
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from rich.console import Console
from rich.table import Table

import bptt
from bptt.methods import METHODS

SETTINGS = (("adding", 100), ("adding", 200), ("copy", 50), ("copy", 100))


FIELDS = ["method", "task", "length", "seed", "solved_step", "steps_done", "final_loss"]
FIELDS += ["baseline", "wall_s", "budget"]


def _read_rows(path: Path) -> list[dict]:
    """Rows of an earlier, possibly interrupted, call, typed as ``run`` returns them."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != FIELDS:
            raise SystemExit(f"{path} has other columns than {FIELDS}: use another --out")
        return [
            {
                **row,
                "length": int(row["length"]),
                "seed": int(row["seed"]),
                "solved_step": int(row["solved_step"]) if row["solved_step"] else None,
                "steps_done": int(row["steps_done"]),
                "final_loss": float(row["final_loss"]),
                "baseline": float(row["baseline"]),
                "wall_s": float(row["wall_s"]),
                "budget": int(row["budget"]),
            }
            for row in reader
        ]


def run(method: str, task: str, length: int, seed: int, budget: int) -> dict:
    config = {"method": method, "task": task, "length": length, "seed": seed, "steps": budget}
    config.update({"eval_every": 100, "stop_when_solved": True, "threads": 1, "monitor": False})
    summary = bptt.train(config).summary
    keys = ("method", "task", "length", "seed", "solved_step", "steps_done", "final_loss")
    row = {k: summary[k] for k in keys}
    row.update({"baseline": summary["baseline_loss"], "wall_s": summary["wall_s"]})
    row["budget"] = budget
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/methods"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "methods.csv"
    earlier = [r for r in _read_rows(path) if r["budget"] == args.budget]
    done = {(r["method"], (r["task"], r["length"]), r["seed"]) for r in earlier}
    jobs = [j for j in itertools.product(methods, SETTINGS, seeds) if j not in done]
    print(f"{len(earlier)} runs already in {path}; {len(jobs)} to do", flush=True)
    rows = list(earlier)
    fresh = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as handle, ProcessPoolExecutor(args.workers) as pool:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        if fresh:
            writer.writeheader()
        futures = [pool.submit(run, m, t, n, s, args.budget) for m, (t, n), s in jobs]
        for future in as_completed(futures):
            row = future.result()
            rows.append(row)
            writer.writerow(row)
            handle.flush()
            print(row, flush=True)
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
                    f"{r['solved_step']}" if r["solved_step"] else f"- ({r['final_loss']:.3g})"
                    for r in sorted(found, key=lambda r: r["seed"])
                )
            )
        table.add_row(method, *cells)
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
