"""K runs of one architecture as one stacked model, against K runs one after another.

The question behind seed-parallel training (``bptt train --seeds 0-7 --stack``): on a
CPU, a recurrent training step at H <= 128 is partly per-call overhead, so K runs whose
weights are stacked, each kernel call serving all K, may cost less than K separate
runs. The stacked side is what ``--stack`` does each step: ``bptt.engine.unroll_stacked``
(one batched matmul a step over the K runs' weights, a hand-written backward), the K
readouts in one batched matmul, the sum of the K losses backpropagated once, and each
run's own Adam step. The separate side is what a user gets without it: one model each,
bptt's fast engine, ``loss.backward()``, Adam. Both do the same K training steps on the
same data; printed: seconds per round of K steps and the ratio.

The last columns bound what any stacking can win: one run of the same model at batch
K*B does the recurrence's arithmetic of K runs at batch B in single, larger matrix
products and pays each call's overhead once, as a stacked step would (which does the
same arithmetic in K smaller products, and K optimizer updates where this does one,
so it can only be slower); the separate runs' time over this one run's is therefore
an upper bound on the speed-up of stacking. Where it is near 1 the step is
arithmetic, not overhead, and stacking runs has nothing to win.

    python benchmarks/batched.py                     # K in 1,2,4,8,16; rnn, lstm, gru; H 64, 128
    python benchmarks/batched.py --cells lstm --hidden 64 --ks 1,8 --batch 4
    python benchmarks/batched.py --bound-only --batch 4     # the bound alone
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

import bptt
from bptt.engine import unroll_stacked
from bptt.run import keep_freed_memory

CELLS = {"rnn": bptt.cells.RNNCell, "lstm": bptt.cells.LSTMCell, "gru": bptt.cells.GRUCell}


def _models(cell: str, hidden: int, k: int) -> list[bptt.SequenceModel]:
    return [bptt.SequenceModel(CELLS[cell](2, hidden), 1) for _ in range(k)]


def separate(models, xs, ys) -> float:
    """One step of each run, one after another (fast engine, backward, Adam)."""
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
    start = time.perf_counter()
    for model, optimizer, x, y in zip(models, optimizers, xs, ys, strict=True):
        loss = torch.nn.functional.mse_loss(model(x)[0], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def one_batch(model, x, y) -> float:
    """One step of one run on all K batches at once (batch K*B): the bound's side."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    loss = torch.nn.functional.mse_loss(model(x)[0], y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def stacked(models, xs, ys) -> float:
    """One step of all K runs at once, as ``--stack`` takes it."""
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
    start = time.perf_counter()
    outputs = unroll_stacked([m.cell for m in models], xs)  # (K, B, T, H)
    weight = torch.stack([m.head.weight for m in models]).transpose(1, 2)  # (K, H, 1)
    bias = torch.stack([m.head.bias for m in models]).unsqueeze(1)  # (K, 1, 1)
    predictions = torch.baddbmm(bias, outputs[:, :, -1], weight)  # (K, B, 1)
    for optimizer in optimizers:
        optimizer.zero_grad()
    losses = [torch.nn.functional.mse_loss(p, y) for p, y in zip(predictions, ys, strict=True)]
    torch.stack(losses).sum().backward()
    for optimizer in optimizers:
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--hidden", default="64,128")
    parser.add_argument("--ks", default="1,2,4,8,16")
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bound-only", action="store_true", help="skip the stacked runs")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="keep glibc malloc's defaults (bptt's command line keeps freed memory)",
    )
    args = parser.parse_args()
    if not args.default_malloc:
        keep_freed_memory()  # as `bptt train` does; large blocks otherwise fault in anew
    table = Table(title=f"K training steps, T={args.length}, B={args.batch}, "
                  f"{torch.get_num_threads()} threads (median of {args.repeats})")  # fmt: skip
    columns = ["cell", "H", "K", "separate (s)"]
    if not args.bound_only:
        columns += ["stacked (s)", "separate / stacked"]
    for column in (*columns, "one run, batch K*B (s)", "bound: separate / it"):
        table.add_column(column, justify="right")
    for cell in args.cells.split(","):
        for hidden in (int(h) for h in args.hidden.split(",")):
            for k in (int(v) for v in args.ks.split(",")):
                torch.manual_seed(0)
                models = _models(cell, hidden, k)
                xs, ys = bptt.tasks.adding_problem(args.length, k * args.batch, seed=0)
                xs = xs.reshape(k, args.batch, args.length, 2)
                ys = ys.reshape(k, args.batch, 1)
                x_all, y_all = xs.reshape(-1, args.length, 2), ys.reshape(-1, 1)
                ours, theirs, whole = [], [], []
                for _ in range(args.repeats + 1):  # the first of each is a warm-up
                    theirs.append(separate(models, xs, ys))
                    whole.append(one_batch(models[0], x_all, y_all))
                    if args.bound_only:
                        continue
                    ours.append(stacked(models, xs, ys))
                a = statistics.median(theirs[1:])
                row = [cell, str(hidden), str(k), f"{a:.4f}"]
                if not args.bound_only:
                    b = statistics.median(ours[1:])
                    row += [f"{b:.4f}", f"{a / b:.2f}x"]
                d = statistics.median(whole[1:])
                table.add_row(*row, f"{d:.4f}", f"{a / d:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
