"""Training-step time of bptt's fast engine against torch.nn's recurrent layers.

Side by side in one process, on the same weights and inputs: forward + backward of
the built-in RNN, LSTM and GRU with ``RecordNorms`` on (per-sample norm of the
hidden-state gradient at every step) against ``torch.nn.RNN``/``LSTM``/``GRU``
(which record nothing). The loss reads the last step, as in sequential MNIST.
Times are medians over interleaved repeats. A second table shows what subnormal
floats cost on the CPU, with flush-to-zero off and on. A third times the orthogonal
RNN (W = exp(A - A^T)) with modReLU against tanh, fast engine and generic, at the
expRNN copy task's size (T = 200, B = 128, H = 190): the goal is modReLU within 1.3x
of tanh. A fourth times the linear recurrent unit (LRU): its parallel scan against
the sequential recurrence (the generic engine) at T = 1000 and 4000, and against
``torch.nn.LSTM`` at T = 1000 with the same hidden size (goals: the scan at least 5x
faster than the loop at T = 4000; an LRU step at T = 4000 no slower than the LSTM's
at T = 1000).

    python benchmarks/engine.py                 # T=784, B=64, F=1, H in {64, 128, 256}
    python benchmarks/engine.py --profile lstm:128
    python benchmarks/engine.py --orthogonal-only
    python benchmarks/engine.py --lru-only
    python benchmarks/engine.py --lru-only --keep-freed-memory   # as `bptt train` runs
    python benchmarks/engine.py --main-only --hidden 64,128      # the first table alone
    python benchmarks/engine.py --main-only --cpu-time           # on a machine others share
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import bptt
from bptt.precision import flush_denormal
from bptt.taps import RecordNorms

OURS = {"rnn": bptt.cells.RNNCell, "lstm": bptt.cells.LSTMCell, "gru": bptt.cells.GRUCell}
THEIRS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def make_pair(kind: str, features: int, hidden: int) -> tuple[nn.Module, nn.Module]:
    """Our cell and torch's layer with the same weights."""
    ours = OURS[kind](features, hidden)
    theirs = THEIRS[kind](features, hidden, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(theirs, f"{name}_l0").copy_(getattr(ours, name))
    return ours, theirs


def step_ours(cell: nn.Module, x: torch.Tensor, w: torch.Tensor) -> RecordNorms:
    record = RecordNorms()
    out, _ = bptt.unroll(cell, x, taps=[record])
    (out[:, -1] * w).sum().backward()
    return record


def step_theirs(layer: nn.Module, x: torch.Tensor, w: torch.Tensor) -> None:
    out, _ = layer(x)
    (out[:, -1] * w).sum().backward()


# What median_seconds reads: the wall clock, or with --cpu-time this process's CPU time
# (steadier on a machine whose cores other work shares; blind to waits).
CLOCK = [time.perf_counter]


def median_seconds(fn, repeats: int) -> list[float]:
    clock = CLOCK[0]
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return times


def compare(kind: str, steps: int, batch: int, features: int, hidden: int, repeats: int):
    """Median seconds (ours, theirs) of a training step, interleaved."""
    gen = torch.Generator().manual_seed(0)
    ours, theirs = make_pair(kind, features, hidden)
    x = torch.randn(batch, steps, features, generator=gen)
    w = torch.randn(hidden, generator=gen)
    # same weights, same answer: check before timing
    record = step_ours(ours, x, w)
    step_theirs(theirs, x, w)
    assert torch.isfinite(record.norms).all()
    torch.testing.assert_close(ours.weight_hh.grad, theirs.weight_hh_l0.grad, rtol=1e-3, atol=1e-5)
    ours_t, theirs_t = [], []
    for _ in range(repeats):
        ours.zero_grad()
        theirs.zero_grad()
        ours_t += median_seconds(lambda: step_ours(ours, x, w), 1)
        theirs_t += median_seconds(lambda: step_theirs(theirs, x, w), 1)
    return statistics.median(ours_t), statistics.median(theirs_t)


def orthogonal_table(repeats: int, steps: int = 200, batch: int = 128, hidden: int = 190) -> Table:
    """A training step of the orthogonal RNN: modReLU against tanh, on each engine."""
    table = Table(title=f"orthogonal RNN training step, T={steps}, B={batch}, H={hidden}")
    for column in ("nonlinearity", "engine", "ms", "vs tanh (fast)"):
        table.add_column(column, justify="right")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, steps, 10, generator=gen)
    w = torch.randn(hidden, generator=gen)
    cells = {k: bptt.cells.OrthogonalRNNCell(10, hidden, k) for k in ("tanh", "modrelu")}

    def step(cell, engine):
        def once():
            cell.zero_grad()
            out, _ = bptt.unroll(cell, x, engine=engine)
            (out[:, -1] * w).sum().backward()

        return once

    runs = {(k, e): step(c, e) for k, c in cells.items() for e in ("fast", "generic")}
    times: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    for _ in range(repeats):  # interleaved
        for key, run in runs.items():
            times[key] += median_seconds(run, 1)
    base = statistics.median(times[("tanh", "fast")])
    for (kind, engine), values in times.items():
        ms = statistics.median(values)
        table.add_row(kind, engine, f"{1e3 * ms:.0f}", f"{ms / base:.2f}x")
    return table


def lru_table(repeats: int, batch: int = 32, hidden: int = 128) -> Table:
    """A training step (forward + backward, loss at the last step) of the LRU by its
    scan (its readout at the last step alone, ``last_only``; at every step; with
    RecordNorms, whose backward is a loop over the steps) and by the sequential loop,
    beside torch.nn.LSTM at T = 1000."""
    table = Table(title=f"LRU training step, B={batch}, F=1, H=N={hidden}")
    for column in ("model", "T", "engine", "ms", "vs scan at this T"):
        table.add_column(column, justify="right")
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(hidden, generator=gen)
    cell = bptt.cells.LRUCell(1, hidden)
    lstm = nn.LSTM(1, hidden, batch_first=True)

    def lru_step(x, engine, taps=(), last_only=True):
        def once():
            cell.zero_grad()
            made = [tap() for tap in taps]
            out, _ = bptt.unroll(cell, x, engine=engine, taps=made, last_only=last_only)
            (out[:, -1] * w).sum().backward()

        return once

    lstm_x = torch.randn(batch, 1000, 1, generator=gen)
    lstm_ms = 1e3 * statistics.median(median_seconds(lambda: step_theirs(lstm, lstm_x, w), repeats))
    for steps in (1000, 4000):
        x = torch.randn(batch, steps, 1, generator=gen)
        runs = {engine: lru_step(x, engine) for engine in ("fast", "generic")}
        runs["fast+taps"] = lru_step(x, "fast", (RecordNorms,))
        runs["fast, every output"] = lru_step(x, "fast", last_only=False)
        times: dict[str, list[float]] = {engine: [] for engine in runs}
        for _ in range(repeats):  # interleaved
            for engine, run in runs.items():
                times[engine] += median_seconds(run, 1)
        scan = 1e3 * statistics.median(times["fast"])
        loop = 1e3 * statistics.median(times["generic"])
        tapped = 1e3 * statistics.median(times["fast+taps"])
        every = 1e3 * statistics.median(times["fast, every output"])
        table.add_row("LRU", str(steps), "scan", f"{scan:.0f}", "1.00x")
        table.add_row(
            "LRU", str(steps), "scan, C h at every step", f"{every:.0f}", f"{every / scan:.2f}x"
        )
        table.add_row(
            "LRU", str(steps), "scan + RecordNorms", f"{tapped:.0f}", f"{tapped / scan:.2f}x"
        )
        table.add_row("LRU", str(steps), "sequential", f"{loop:.0f}", f"{loop / scan:.2f}x")
        table.add_row(
            "torch.nn.LSTM", "1000", "torch.nn", f"{lstm_ms:.0f}", f"{lstm_ms / scan:.2f}x"
        )
    return table


def subnormal_table(repeats: int) -> Table:
    """Backward time of an LSTM with the loss at the last step, flush-to-zero off and on."""
    table = Table(title="subnormal floats: LSTM, B=50, H=128, loss at the last step (backward ms)")
    for column in ("T", "flush", "torch.nn.LSTM", "bptt LSTM"):
        table.add_column(column, justify="right")
    gen = torch.Generator().manual_seed(0)
    for steps in (150, 200):
        ours, theirs = make_pair("lstm", 1, 128)
        x = torch.randn(50, steps, 1, generator=gen)
        w = torch.randn(128, generator=gen)
        for flush in (False, True):
            with flush_denormal(flush):

                def backward_ms(module, run, x=x, w=w):
                    def once():
                        out, _ = run(module, x)
                        loss = (out[:, -1] * w).sum()
                        start = time.perf_counter()
                        loss.backward()
                        return time.perf_counter() - start

                    once()
                    return 1e3 * statistics.median(once() for _ in range(repeats))

                theirs_ms = backward_ms(theirs, lambda m, v: m(v))
                ours_ms = backward_ms(ours, lambda m, v: bptt.unroll(m, v, taps=[RecordNorms()]))
            table.add_row(
                str(steps), "on" if flush else "off", f"{theirs_ms:.0f}", f"{ours_ms:.0f}"
            )
    return table


def profile(spec: str, steps: int, batch: int, features: int) -> None:
    kind, hidden = spec.split(":")
    ours, _ = make_pair(kind, features, int(hidden))
    x = torch.randn(batch, steps, features)
    w = torch.randn(int(hidden))
    step_ours(ours, x, w)
    with torch.profiler.profile() as prof:
        step_ours(ours, x, w)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=784)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--features", type=int, default=1)
    parser.add_argument("--hidden", default="64,128,256")
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--profile", metavar="CELL:H", help="profile one configuration instead")
    parser.add_argument("--no-subnormal", action="store_true", help="skip the subnormal table")
    parser.add_argument(
        "--orthogonal-only", action="store_true", help="only the orthogonal RNN's table"
    )
    parser.add_argument("--lru-only", action="store_true", help="only the LRU's table")
    parser.add_argument(
        "--main-only", action="store_true", help="only the first table (RNN, LSTM, GRU)"
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time by the process's CPU time, not the wall clock (for a shared machine)",
    )
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="as bptt's command line does: freed memory kept by malloc for the next step",
    )
    args = parser.parse_args()
    if args.cpu_time:
        CLOCK[0] = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.keep_freed_memory:
        from bptt.run import keep_freed_memory

        keep_freed_memory()
    console = Console(width=120)
    with flush_denormal(True):  # as training does; the subnormal table shows both
        if args.orthogonal_only:
            console.print(orthogonal_table(args.repeats))
            return
        if args.lru_only:
            console.print(lru_table(args.repeats))
            return
        if args.profile:
            profile(args.profile, args.steps, args.batch, args.features)
            return
        table = Table(
            title=f"training step, T={args.steps}, B={args.batch}, F={args.features}, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}"
            + (", CPU time" if args.cpu_time else "")
        )
        for column in ("cell", "H", "bptt + RecordNorms (ms)", "torch.nn (ms)", "ratio"):
            table.add_column(column, justify="right")
        for kind in args.cells.split(","):
            for hidden in (int(h) for h in args.hidden.split(",")):
                ours, theirs = compare(
                    kind, args.steps, args.batch, args.features, hidden, args.repeats
                )
                ratio = ours / theirs
                table.add_row(
                    kind,
                    str(hidden),
                    f"{1e3 * ours:.0f}",
                    f"{1e3 * theirs:.0f}",
                    f"[{'green' if ratio <= 1.0 else 'red'}]{ratio:.2f}x[/]",
                )
                console.print(f"{kind} H={hidden}: {ratio:.2f}x", highlight=False)
        console.print(table)
        if args.main_only:
            return
        console.print(orthogonal_table(args.repeats))
        console.print(lru_table(args.repeats))
    if not args.no_subnormal:
        console.print(subnormal_table(args.repeats))


if __name__ == "__main__":
    main()
