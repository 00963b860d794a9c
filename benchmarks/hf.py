"""Hessian-free against first-order methods on the pathological problems.

Two parts:

``products``: the cost of one Gauss-Newton-vector product (what each conjugate-gradient
iteration pays) relative to one gradient evaluation (forward and backward) on the same
batch, for a 100-unit tanh RNN, with J v by forward mode (``module=``, the default in
training) and by the reverse-mode double-vjp trick. The target is at most 3x.

``runs``: addition, multiplication, XOR and temporal order with a 100-unit tanh RNN at
T in {50, 100, 200}, trained by HF, by SGD with Nesterov momentum and by Adam (both
first-order ones with global-norm clipping at 1), each run for the same wall time
(``--budget-s``, one thread, two runs at a time) and stopped at the first evaluation
that finds the task solved. The table gives per task, length and optimizer the solved
seeds and the median wall time to solve. Rows go to ``runs/hf/runs.csv`` as they come;
a second call with the same ``--out`` skips the runs already there (an interrupted matrix
resumes, and ``--seeds`` can be extended).

    python benchmarks/hf.py products
    python benchmarks/hf.py runs --budget-s 60 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import functools
import itertools
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import bptt
from _matrix import boolean, run_matrix
from bptt.optim import HessianFree

HIDDEN = 100
TASKS = ("adding", "multiplication", "xor", "order")
LENGTHS = (50, 100, 200)
OPTIMIZERS = {  # the settings each optimizer trains with; cell and size are shared
    "hf": {
        "optimizer": "hf",
        "batch_size": 500,
        "hf_curvature_fraction": 0.2,
        "hf_damping": 1.0,
        "hf_mu": 0.03,
        "hf_max_cg": 100,
        "eval_every": 1,
    },
    "sgd": {
        "optimizer": "sgd",
        "lr": 0.01,
        "momentum": 0.9,
        "clip": "norm",
        "clip_norm": 1.0,
        "eval_every": 100,
    },
    "adam": {"optimizer": "adam", "lr": 1e-3, "clip": "norm", "clip_norm": 1.0, "eval_every": 100},
}


# --- products --------------------------------------------------------------------------


def _timed(work, repeats: int) -> float:
    work()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    return (time.perf_counter() - start) / repeats


def _product_costs(length: int, batch: int, repeats: int) -> tuple[float, float, float]:
    """Seconds per gradient; forward-mode and reverse-mode product costs in gradients."""
    torch.manual_seed(0)
    model = bptt.SequenceModel(bptt.cells.RNNCell(2, HIDDEN), 1, engine="generic")
    x, y = torch.randn(batch, length, 2), torch.randn(batch, 1)
    params = list(model.parameters())

    def closure():
        out = model(x)[0]
        return torch.nn.functional.mse_loss(out, y), out

    gradient_s = _timed(lambda: torch.autograd.grad(closure()[0], params), repeats)
    v = torch.randn(sum(p.numel() for p in params))
    forward = HessianFree(params, module=model).curvature_product(closure)
    reverse = HessianFree(params).curvature_product(closure)
    forward_s = _timed(lambda: forward(v), repeats)
    reverse_s = _timed(lambda: reverse(v), repeats)
    return gradient_s, forward_s / gradient_s, reverse_s / gradient_s


def products(lengths: list[int], batch: int, repeats: int) -> None:
    table = Table(title=f"one Gauss-Newton product / one gradient (H={HIDDEN}, B={batch})")
    for column in ("T", "gradient ms", "forward-mode GN", "reverse-mode GN"):
        table.add_column(column, justify="right")
    for length in lengths:
        gradient_s, forward, reverse = _product_costs(length, batch, repeats)
        table.add_row(str(length), f"{gradient_s * 1e3:.1f}", f"{forward:.2f}x", f"{reverse:.2f}x")
    Console().print(table)


# --- runs ------------------------------------------------------------------------------


ROW_TYPES = {"optimizer": str, "task": str, "length": int, "seed": int, "solved": boolean}
ROW_TYPES |= {"steps_done": int, "wall_s": float, "final_loss": float, "baseline": float}
ROW_TYPES |= {"budget_s": float}


def run(optimizer: str, task: str, length: int, seed: int, budget_s: float) -> dict:
    config = {"task": task, "length": length, "cell": "rnn", "hidden": HIDDEN, "seed": seed}
    config.update({"steps": 10**8, "time_limit_s": budget_s, "stop_when_solved": True})
    config.update({"threads": 1, "monitor": False, **OPTIMIZERS[optimizer]})
    summary = bptt.train(config).summary
    return {
        "optimizer": optimizer,
        "task": task,
        "length": length,
        "seed": seed,
        "solved": summary["solved_step"] is not None,
        "steps_done": summary["steps_done"],
        "wall_s": summary["wall_s"],
        "final_loss": summary["final_loss"],
        "baseline": summary["baseline_loss"],
        "budget_s": budget_s,
    }


def runs(args: argparse.Namespace) -> None:
    seeds = [int(s) for s in args.seeds.split(",")]
    tasks, lengths = args.tasks.split(","), [int(n) for n in args.lengths.split(",")]
    optimizers = args.optimizers.split(",")
    jobs = [(o, t, n, s) for t, n, o, s in itertools.product(tasks, lengths, optimizers, seeds)]
    rows = list(
        run_matrix(
            args.out / "runs.csv",
            ROW_TYPES,
            jobs,
            key=lambda r: (r["optimizer"], r["task"], r["length"], r["seed"]),
            work=functools.partial(run, budget_s=args.budget_s),
            workers=args.workers,
            keep=lambda r: r["budget_s"] == args.budget_s,
        )
    )
    title = f"solved seeds, median wall to solve ({args.budget_s:g} s per run, seeds {seeds})"
    table = Table(title=title)
    table.add_column("task")
    table.add_column("T", justify="right")
    for optimizer in optimizers:
        table.add_column(optimizer, justify="right")
    for task, length in itertools.product(tasks, lengths):
        cells = []
        for optimizer in optimizers:
            found = [
                r
                for r in rows
                if (r["task"], r["length"], r["optimizer"]) == (task, length, optimizer)
            ]
            solved = [r["wall_s"] for r in found if r["solved"]]
            median = f" {statistics.median(solved):.0f} s" if solved else ""
            losses = (
                ""
                if solved
                else f" ({min(r['final_loss'] / r['baseline'] for r in found):.2f} of baseline)"
            )
            cells.append(f"{len(solved)}/{len(found)}{median}{losses}")
        table.add_row(task, str(length), *cells)
    Console(width=140).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    product_parser = commands.add_parser("products", help="GN product cost vs a gradient")
    product_parser.add_argument("--lengths", default="50,100,200")
    product_parser.add_argument("--batch", type=int, default=100)
    product_parser.add_argument("--repeats", type=int, default=10)
    run_parser = commands.add_parser("runs", help="the optimizer comparison")
    run_parser.add_argument("--budget-s", type=float, default=60.0)
    run_parser.add_argument("--seeds", default="0,1,2")
    run_parser.add_argument("--tasks", default=",".join(TASKS))
    run_parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    run_parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    run_parser.add_argument("--workers", type=int, default=2)
    run_parser.add_argument("--out", type=Path, default=Path("runs/hf"))
    args = parser.parse_args()
    if args.command == "products":
        products([int(n) for n in args.lengths.split(",")], args.batch, args.repeats)
    else:
        runs(args)


if __name__ == "__main__":
    main()
