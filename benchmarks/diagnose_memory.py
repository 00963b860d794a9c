"""Peak memory and time of one diagnosis, as the sequence grows.

``bptt.diagnose.diagnose`` on an LSTM (H=128) with a probe of 32 sequences, each length
measured in a fresh process so that its peak resident memory is its own (and the
baseline, a process that imports torch and bptt and builds the model, beside it).
The diagnosis should need memory for the states of the trajectory, not for T steps of
autograd graph. With ``--layers N`` the model is a ``torch.nn.LSTM`` of N layers (batch
first), diagnosed layer by layer (``bptt.diagnose.gradient_by_layer``; the goal for
N = 2, H = 256, T = 1000: under 1.5 GB and 60 s):

    python benchmarks/diagnose_memory.py [--lengths 500,2000,5000] [--hidden 128]
    python benchmarks/diagnose_memory.py --layers 2 --hidden 256 --lengths 1000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table


def _measure(length: int, hidden: int, probe: int, diagnose: bool, layers: int = 0) -> dict:
    import torch

    import bptt
    from bptt.diagnose import diagnose as run_diagnosis

    torch.manual_seed(0)
    if layers:
        model = torch.nn.LSTM(2, hidden, num_layers=layers, batch_first=True)
    else:
        model = bptt.cells.LSTMCell(2, hidden)
    x = torch.randn(probe, length, 2)
    start = time.perf_counter()
    verdict = run_diagnosis(model, x, length).verdict if diagnose else None
    return {
        "length": length,
        "seconds": time.perf_counter() - start,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "verdict": verdict,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="500,2000,5000")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--probe", type=int, default=32)
    parser.add_argument("--layers", type=int, default=0, help="a torch.nn.LSTM of N layers")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        found = _measure(args.child, args.hidden, args.probe, not args.baseline, args.layers)
        print(json.dumps(found))
        return
    what = f"torch.nn.LSTM, {args.layers} layers" if args.layers else "LSTM cell"
    table = Table(title=f"diagnose(): {what}, H={args.hidden}, probe of {args.probe}")
    for column in ("T", "peak RSS (MB)", "above the baseline (MB)", "seconds", "verdict"):
        table.add_column(column, justify="right")
    lengths = [int(v) for v in args.lengths.split(",")]

    def child(length: int, baseline: bool) -> dict:
        command = [sys.executable, __file__, "--child", str(length)]
        command += ["--hidden", str(args.hidden), "--probe", str(args.probe)]
        command += ["--layers", str(args.layers)]
        done = subprocess.run(
            command + (["--baseline"] if baseline else []),
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    base = child(lengths[-1], baseline=True)["peak_mb"]
    for length in lengths:  # one process at a time: never two at once on this machine
        row = child(length, baseline=False)
        table.add_row(
            str(length),
            f"{row['peak_mb']:.0f}",
            f"{row['peak_mb'] - base:.0f}",
            f"{row['seconds']:.1f}",
            str(row["verdict"]),
        )
    Console().print(table)
    Console().print(f"baseline (imports, model, probe of T={lengths[-1]}): {base:.0f} MB")


if __name__ == "__main__":
    main()
