"""bptt's commands on a machine that is not idle, against plain PyTorch beside them.

Each workload runs as its own process, three ways: on an idle machine; with one
core held by a busy loop at the same priority; and run niced (``nice -n 19``, as a
background job usually is) beside that busy core. Printed: the wall time of each,
and its ratio to the idle time (the goal: at most 2x in both busy cases). The
workloads:

- ``bptt esn --task mackey-glass --units 1000`` (the compiled reservoir loop);
- a short ``bptt train`` (adding, T = 100, LSTM H = 64, 300 steps);
- the same training in plain PyTorch (``torch.nn.LSTM`` and Adam, default threads):
  what a user gets from PyTorch alone under the same conditions;
- optionally ``bptt bench`` (the quick profile, what ``make bench`` runs; minutes).

``--before SRC`` also runs bptt's workloads from another source tree (for example a
worktree of an older commit: ``git worktree add /tmp/before <commit>``) in the same
conditions, so the table shows before and after side by side.

    python benchmarks/busy_machine.py
    python benchmarks/busy_machine.py --before /tmp/before/src --repeats 3
    python benchmarks/busy_machine.py --bench --before /tmp/before/src
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent.parent / "src"

TORCH_LSTM = """
import torch, time
from torch import nn
torch.manual_seed(0)
x = torch.rand(50, 100, 2); y = torch.rand(50, 1)
lstm, head = nn.LSTM(2, 64, batch_first=True), nn.Linear(64, 1)
opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=1e-3)
for _ in range(300):
    out, _ = lstm(x)
    loss = ((head(out[:, -1]) - y) ** 2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
"""

ESN = "-m bptt esn --task mackey-glass --units 1000"
TRAIN = "-m bptt train --task adding --length 100 --cell lstm --hidden 64 --steps 300"
TRAIN += " --eval-every 300 --no-progress"
WORKLOADS = {
    "bptt esn (Mackey-Glass, 1000 units)": ESN.split(),
    "bptt train (adding T=100, LSTM 64, 300 steps)": TRAIN.split(),
    "torch.nn.LSTM alone (the same training)": ["-c", TORCH_LSTM],
}
BENCH = {"bptt bench (quick profile)": ["-m", "bptt", "bench", "--no-progress"]}
CONDITIONS = ("idle", "one core busy", "niced, one core busy")


@contextlib.contextmanager
def busy_core(condition: str) -> Iterator[None]:
    """A busy loop on the last core this process may use (none when idle)."""
    if condition == "idle":
        yield
        return
    core = sorted(os.sched_getaffinity(0))[-1]
    loop = subprocess.Popen(["taskset", "-c", str(core), sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)  # let it take the core
    try:
        yield
    finally:
        loop.kill()
        loop.wait()


def timed(args: list[str], condition: str, src: Path, out: Path, limit_s: float) -> float:
    """Seconds the workload took (inf if it ran past ``limit_s``)."""
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONWARNINGS": "ignore"}
    args = [a.replace("{out}", str(out)) for a in args]
    command = [sys.executable, *args]
    if condition.startswith("niced"):
        command = ["nice", "-n", "19", *command]
    if "bench" in args:
        command += ["--out", str(out / f"bench-{time.monotonic_ns()}")]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=limit_s)
    except subprocess.TimeoutExpired:
        return float("inf")
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, help="another source tree to time beside")
    parser.add_argument("--repeats", type=int, default=3, help="medians of this many runs")
    parser.add_argument("--bench", action="store_true", help="also time bptt bench (minutes)")
    parser.add_argument(
        "--only",
        default="",
        help="time only the workloads whose name holds one of these (esn,bench)",
    )
    parser.add_argument("--limit-s", type=float, default=1800, help="stop a run past this")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args(argv)
    workloads = {**WORKLOADS, **(BENCH if args.bench else {})}
    if args.only:
        wanted = args.only.split(",")
        workloads = {k: v for k, v in workloads.items() if any(w in k for w in wanted)}
    sources = {"after": HERE, **({"before": args.before.resolve()} if args.before else {})}
    rows = []
    console = Console()
    with tempfile.TemporaryDirectory() as scratch:
        for condition in CONDITIONS:
            with busy_core(condition):
                for name, command in workloads.items():
                    for label, src in sources.items():
                        if label == "before" and not name.startswith("bptt"):
                            continue  # PyTorch alone has no before
                        repeats = 1 if "bench" in command else args.repeats
                        if condition == "idle" and repeats > 1:  # caches warm, not counted
                            timed(command, condition, src, Path(scratch), args.limit_s)
                        times = []
                        for _ in range(repeats):
                            times.append(
                                timed(command, condition, src, Path(scratch), args.limit_s)
                            )
                            if times[-1] == float("inf"):
                                break  # past the limit once: enough said
                        row = {"workload": name, "condition": condition, "code": label}
                        row["seconds"] = statistics.median(times)
                        rows.append(row)
                        shown = ", ".join(f"{t:.2f}" for t in times)
                        console.print(f"{condition:22} {label:6} {name}: {shown} s", soft_wrap=True)
    idle = {(r["workload"], r["code"]): r["seconds"] for r in rows if r["condition"] == "idle"}
    table = Table(title="wall time on a busy machine, and its ratio to idle")
    for column in ("workload", "code", *CONDITIONS):
        table.add_column(column, justify="left" if column in ("workload", "code") else "right")
    for (name, label), base in idle.items():
        cells = []
        for condition in CONDITIONS:
            found = next(
                r["seconds"]
                for r in rows
                if (r["workload"], r["code"], r["condition"]) == (name, label, condition)
            )
            if found == float("inf"):
                cells.append(f"> {args.limit_s:.0f} s (> {args.limit_s / base:.0f}x)")
            else:
                ratio = "" if condition == "idle" else f" ({found / base:.1f}x)"
                cells.append(f"{found:.1f} s{ratio}")
        table.add_row(name, label, *cells)
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
