"""Time of bptt's clipping functions and policies next to torch.nn.utils.clip_grad_norm_.

Side by side in one process, on the same gradients: each contender clips the
gradients of (a) a 256-unit LSTM with its readout and (b) a model of 2,000 small
tensors. Before each call the gradients are restored from a copy (not timed), so
every call sees the same input; the adaptive policies first run a warm-up so their
history holds 1,000 norms. Times are medians over interleaved rounds.

    python benchmarks/clip.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import bptt
from bptt import clip

HISTORY = 1000


def lstm_parameters() -> list[nn.Parameter]:
    model = bptt.SequenceModel(bptt.cells.LSTMCell(1, 256), 10)
    return list(model.parameters())


def many_small_parameters(count: int = 2000) -> list[nn.Parameter]:
    return [nn.Parameter(torch.randn(8, 4)) for _ in range(count)]


def contenders() -> dict[str, Callable[[], Callable]]:
    """Name -> factory of a callable(params) that clips in place."""
    return {
        "torch clip_grad_norm_": lambda: (
            lambda ps: torch.nn.utils.clip_grad_norm_(ps, 1.0, foreach=True)
        ),
        "bptt clip_grad_norm_": lambda: lambda ps: clip.clip_grad_norm_(ps, 1.0, foreach=True),
        "Fixed(1.0)": lambda: clip.Fixed(1.0, foreach=True),
        "Percentile(10)": lambda: clip.Percentile(10, foreach=True),
        "Percentile(10, history=100)": lambda: clip.Percentile(10, history=100, foreach=True),
        "ZScore()": lambda: clip.ZScore(foreach=True),
        "Calibrate(200, 0.9)": lambda: clip.Calibrate(200, 0.9, foreach=True),
        "per-parameter (Keras clipnorm)": lambda: (
            lambda ps: clip.clip_grad_norm_per_parameter_(ps, 1.0, foreach=True)
        ),
    }


def measure(params: list[nn.Parameter], rounds: int, calls: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    saved = [torch.randn(p.shape, generator=gen) * 3 for p in params]
    grads = [torch.empty_like(s) for s in saved]
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    funcs = {name: make() for name, make in contenders().items()}
    for func in funcs.values():  # warm-up: fill the policies' histories
        for _ in range(HISTORY):
            torch._foreach_copy_(grads, saved)
            func(params)
    times: dict[str, list[float]] = {name: [] for name in funcs}
    for _ in range(rounds):
        for name, func in funcs.items():
            total = 0.0
            for _ in range(calls):
                torch._foreach_copy_(grads, saved)
                start = time.perf_counter()
                func(params)
                total += time.perf_counter() - start
            times[name].append(total / calls)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    console = Console(width=120)
    for label, params in (
        ("256-unit LSTM + readout", lstm_parameters()),
        ("2,000 tensors of 8x4", many_small_parameters()),
    ):
        results = measure(params, args.rounds, args.calls)
        base = results["torch clip_grad_norm_"]
        table = Table(title=f"{label}: {len(params)} tensors, {torch.get_num_threads()} threads")
        for column in ("contender", "us per call", "vs torch clip_grad_norm_(foreach=True)"):
            table.add_column(column, justify="right")
        for name, seconds in results.items():
            table.add_row(name, f"{1e6 * seconds:.1f}", f"{seconds / base:.2f}x")
        console.print(table)


if __name__ == "__main__":
    main()
