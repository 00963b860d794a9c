"""The price of truncation: delayed-echo accuracy against the delay d, for two k2.

A GRU is trained with TBPTT(k1, k2) to output the symbol it read d steps ago (4
symbols, chance 25%); with k2 below d the gradient that would tie an output to its
input is cut, so the echo is not learned, while with k2 above d it is.

    python benchmarks/tbptt_echo.py
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

import bptt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delays", default="2,4,8,12,16,24")
    parser.add_argument("--k1", type=int, default=4)
    parser.add_argument("--k2", default="8,32")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    delays = [int(d) for d in args.delays.split(",")]
    k2s = [int(k) for k in args.k2.split(",")]
    table = Table(
        title=f"delayed echo, GRU H=32, TBPTT(k1={args.k1}, k2), {args.steps} updates, "
        f"seed {args.seed}: test accuracy (chance 25%)"
    )
    table.add_column("d", justify="right")
    for k2 in k2s:
        table.add_column(f"k2 = {k2}", justify="right")
    base = {"task": "echo", "cell": "gru", "hidden": 32, "steps": args.steps, "lr": 2e-2}
    base.update({"batch_size": 32, "monitor": False, "seed": args.seed, "eval_every": args.steps})
    for d in delays:
        row = [str(d)]
        for k2 in k2s:
            config = {**base, "length": d, "tbptt_k1": min(args.k1, k2), "tbptt_k2": k2}
            result = bptt.train(config)
            accuracy = bptt.tasks.make_task("echo", d).accuracy(result.model)
            row.append(f"{100 * accuracy:.1f}%")
        table.add_row(*row)
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
