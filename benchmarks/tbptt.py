"""TBPTT(k1, k2): memory over long streams, and time against full BPTT and a plain loop.

Three measurements, each printed as a table:

1. Peak resident memory of training on a delayed-echo stream of 10^4 and of 10^6 steps
   (each in a fresh process; the stream is generated chunk by chunk, so only TBPTT's
   own buffers can grow). Target: growth at most 5%.
2. Time per stream step of k1 = k2 against full BPTT (one update over the whole
   stream), same data, same model.
3. Time per stream step of k1 < k2 against a straightforward autograd implementation
   of the same definition: a Python loop over the cell from the stored, detached state
   at t - k2, the loss on the last k1 steps. Target: at most 1.0x.

    python benchmarks/tbptt.py
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from rich.console import Console
from rich.table import Table

import bptt


def _model(cell: str, hidden: int, symbols: int = 4) -> bptt.SequenceModel:
    torch.manual_seed(0)
    return bptt.SequenceModel(bptt.cells.make_cell(cell, symbols, hidden), symbols, readout="all")


def memory_run(steps: int, k1: int, k2: int, batch: int, hidden: int) -> dict:
    """Train on an echo stream of ``steps`` steps; report peak RSS (runs in a child)."""
    task = bptt.tasks.make_task("echo", 5)
    model = _model("gru", hidden)
    trainer = bptt.TBPTT(model, k1, k2, task.loss, torch.optim.SGD(model.parameters(), lr=0.05))
    stream = task.open_stream(batch, torch.Generator().manual_seed(0))
    chunk = 1000
    for _ in range(steps // chunk):
        trainer.step(*stream.next(chunk))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"steps": steps, "peak_mib": peak_kib / 1024, "updates": trainer.updates}


def _time_per_step(fn, steps: int, repeats: int) -> float:
    fn()  # warm-up
    best = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best.append(time.perf_counter() - start)
    return sorted(best)[len(best) // 2] / steps


def full_vs_truncated(cell: str, hidden: int, batch: int, steps: int, k: int, repeats: int):
    """Seconds per stream step: one full-BPTT update over the stream, and TBPTT(k, k)."""
    task = bptt.tasks.make_task("echo", 5)
    x, y = task.open_stream(batch, torch.Generator().manual_seed(0)).next(steps)
    model = _model(cell, hidden)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def full():
        opt.zero_grad()
        task.loss(model(x)[0], y).backward()
        opt.step()

    def truncated():
        bptt.TBPTT(model, k, k, task.loss, opt).fit(x, y)

    return _time_per_step(full, steps, repeats), _time_per_step(truncated, steps, repeats)


def plain_loop(model, x, y, k1, k2, loss_fn, opt) -> None:
    """The definition written out: a Python loop over cells, detach at the window start."""
    stored = {0: None}
    for t in range(k1, x.shape[1] + 1, k1):
        start = max(0, t - k2)
        state, outputs = stored[start], []
        for step in range(start + 1, t + 1):
            state = model.cell(x[:, step - 1], state)
            outputs.append(state[0] if isinstance(state, tuple) else state)
            if step == t + k1 - k2:
                kept = (
                    tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
                )
                stored[step] = kept
        loss = loss_fn(model.head(torch.stack(outputs[-k1:], 1)), y[:, t - k1 : t])
        opt.zero_grad()
        loss.backward()
        opt.step()


def overlapping(cell: str, hidden: int, batch: int, steps: int, k1: int, k2: int, repeats: int):
    """Seconds per stream step of TBPTT(k1, k2) and of the plain loop, same work."""
    task = bptt.tasks.make_task("echo", 5)
    x, y = task.open_stream(batch, torch.Generator().manual_seed(0)).next(steps)
    model = _model(cell, hidden)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    ours = _time_per_step(
        lambda: bptt.TBPTT(model, k1, k2, task.loss, opt).fit(x, y), steps, repeats
    )
    theirs = _time_per_step(lambda: plain_loop(model, x, y, k1, k2, task.loss, opt), steps, repeats)
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long", type=int, default=1_000_000, help="steps of the long stream")
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_run(args.memory_child, 50, 100, 4, 16)))
        return
    console = Console(width=120)
    torch.set_flush_denormal(True)

    memory = Table(title="peak resident memory, GRU H=16, B=4, TBPTT(50, 100), echo stream")
    for column in ("stream steps", "updates", "peak MiB"):
        memory.add_column(column, justify="right")
    peaks = []
    for steps in (10_000, args.long):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(steps)],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(out.stdout)
        peaks.append(row["peak_mib"])
        memory.add_row(f"{steps:,}", f"{row['updates']:,}", f"{row['peak_mib']:.1f}")
    memory.caption = f"growth {100 * (peaks[1] / peaks[0] - 1):+.1f}% (target at most +5%)"
    console.print(memory)

    versus_full = Table(
        title="seconds per stream step: full BPTT vs TBPTT(k, k), 2,000 steps, B=32"
    )
    for column in ("cell", "H", "k", "full BPTT (us)", "TBPTT (us)", "ratio"):
        versus_full.add_column(column, justify="right")
    for cell in ("lstm", "gru"):
        full, truncated = full_vs_truncated(cell, 128, 32, 2000, 50, args.repeats)
        versus_full.add_row(
            cell,
            "128",
            "50",
            f"{1e6 * full:.1f}",
            f"{1e6 * truncated:.1f}",
            f"{truncated / full:.2f}x",
        )
    console.print(versus_full)

    versus_loop = Table(
        title="seconds per stream step: TBPTT(k1, k2) vs a plain autograd loop, B=32"
    )
    for column in ("cell", "H", "k1", "k2", "plain loop (us)", "bptt TBPTT (us)", "ratio"):
        versus_loop.add_column(column, justify="right")
    for cell in ("rnn", "lstm", "gru"):
        for k1, k2 in ((10, 50), (25, 100)):
            ours, theirs = overlapping(cell, 128, 32, 1000, k1, k2, args.repeats)
            versus_loop.add_row(
                cell,
                "128",
                str(k1),
                str(k2),
                f"{1e6 * theirs:.1f}",
                f"{1e6 * ours:.1f}",
                f"[{'green' if ours <= theirs else 'red'}]{ours / theirs:.2f}x[/]",
            )
    console.print(versus_loop)


if __name__ == "__main__":
    main()
