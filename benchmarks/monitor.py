"""Training wall time with the Monitor at its defaults against without, side by side.

The same configuration (an LSTM on the adding problem) is trained with
``monitor = true`` and ``monitor = false``, interleaved, several times; the table
gives the median wall time of the training loop (``summary["wall_s"]``) and the
ratio, plus the one-off diagnosis of the final model that ``monitor = true`` adds
at the end (``summary["diagnose_s"]``).

    python benchmarks/monitor.py
"""

from __future__ import annotations

import argparse
import statistics

import torch
from rich.console import Console
from rich.table import Table

import bptt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args()
    base = {
        "task": "adding",
        "length": args.length,
        "cell": args.cell,
        "hidden": args.hidden,
        "steps": args.steps,
        "eval_every": args.steps,
    }
    walls: dict[bool, list[float]] = {True: [], False: []}
    diagnose_s: list[float] = []
    bptt.train({**base, "steps": 5})  # warm-up
    for _ in range(args.repeats):
        for monitor in (True, False):
            summary = bptt.train({**base, "monitor": monitor}).summary
            walls[monitor].append(summary["wall_s"])
            if monitor:
                diagnose_s.append(summary["diagnose_s"])
    on, off = statistics.median(walls[True]), statistics.median(walls[False])
    table = Table(
        title=f"{args.cell} H={args.hidden}, adding T={args.length}, {args.steps} steps, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    for column in ("", "training loop (s)", "final diagnosis (s)"):
        table.add_column(column, justify="right")
    table.add_row("monitor off", f"{off:.3f}", "-")
    table.add_row("monitor on (defaults)", f"{on:.3f}", f"{statistics.median(diagnose_s):.3f}")
    table.add_row("overhead", f"{100 * (on / off - 1):+.1f}%", "")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
