"""K runs of one architecture as one stacked model, against K runs one after another.

The question behind seed-parallel training (issue: many runs for the price of one): on
a CPU, a recurrent training step at H <= 128 is dominated by per-call overhead, so K
runs whose weights are stacked, each kernel call serving all K, should cost far less
than K separate runs. Here the stacked runs are ``torch.func.vmap`` over
``functional_call`` of one model with K stacked parameter sets (each run its own data
batch), gradients by ``torch.func.grad``, and one Adam step on the stacked tensors
(Adam is elementwise, so each run's update is its own). The separate runs are what a
user gets today: one model each, bptt's fast engine, ``loss.backward()``, Adam. For
the LSTM a third column runs the K LSTMs in one plain loop of batched matmuls
(``torch.baddbmm`` over (K, B, H) states) with autograd's backward. All
sides do the same K training steps on the same data; printed: seconds per round of K
steps and the ratio.

The last columns bound what any stacking can win: one run of the same model at batch
K*B does the recurrence's arithmetic of K runs at batch B in single, larger matrix
products and pays each call's overhead once, as a stacked step would (which does the
same arithmetic in K smaller products, and K optimizer updates where this does one,
so it can only be slower); the separate runs' time over this one run's is therefore
an upper bound on the speed-up of stacking. Where it is near 1 the step is
arithmetic, not overhead, and stacking runs has nothing to win.

    python benchmarks/batched.py                     # K in 1,2,4,8,16; rnn, lstm, gru; H 64, 128
    python benchmarks/batched.py --cells lstm --hidden 64 --ks 1,8
    python benchmarks/batched.py --bound-only --batch 4     # the bound alone, fast
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table
from torch.func import functional_call, grad, stack_module_state, vmap

import bptt

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
    """One step of all K runs at once: vmap over the stacked parameters."""
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    optimizer = torch.optim.Adam(params.values(), lr=1e-3)

    def loss_of(p, b, x, y):
        return torch.nn.functional.mse_loss(functional_call(base, (p, b), (x,))[0], y)

    gradient = vmap(grad(loss_of))
    start = time.perf_counter()
    grads = gradient(params, buffers, xs, ys)
    for name, tensor in params.items():
        tensor.grad = grads[name]
    optimizer.step()
    return time.perf_counter() - start


def _stacked_lstm_loss(weights, x, y):
    """K LSTMs in one loop: batched matmuls over the stacked weights (autograd backward).

    weights: w_ih (K, 4H, F), w_hh (K, 4H, H), b (K, 1, 4H), w_out (K, H, 1), b_out
    (K, 1, 1); x (K, B, T, F), y (K, B, 1). The loss is the sum of the K runs' losses,
    so each run's gradient is its own.
    """
    w_ih, w_hh, b, w_out, b_out = weights
    k, batch, steps, _ = x.shape
    hidden = w_hh.shape[-1]
    h = x.new_zeros(k, batch, hidden)
    c = x.new_zeros(k, batch, hidden)
    drive = torch.baddbmm(b, x.reshape(k, batch * steps, -1), w_ih.transpose(1, 2))
    drive = drive.reshape(k, batch, steps, 4 * hidden)
    for t in range(steps):
        gates = torch.baddbmm(drive[:, :, t], h, w_hh.transpose(1, 2))
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
    prediction = torch.baddbmm(b_out, h, w_out)
    return ((prediction - y) ** 2).mean(dim=(1, 2)).sum()


def stacked_bmm(models, xs, ys) -> float:
    """One step of K LSTMs by batched matmuls and autograd (LSTM only)."""
    cells = [m.cell for m in models]
    weights = [
        torch.stack([c.weight_ih for c in cells]).detach().requires_grad_(),
        torch.stack([c.weight_hh for c in cells]).detach().requires_grad_(),
        torch.stack([(c.bias_ih + c.bias_hh)[None] for c in cells]).detach().requires_grad_(),
        torch.stack([m.head.weight.T for m in models]).detach().requires_grad_(),
        torch.stack([m.head.bias[None] for m in models]).detach().requires_grad_(),
    ]
    optimizer = torch.optim.Adam(weights, lr=1e-3)
    start = time.perf_counter()
    loss = _stacked_lstm_loss(weights, xs, ys)
    optimizer.zero_grad()
    loss.backward()
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
    parser.add_argument("--bound-only", action="store_true", help="skip vmap and bmm")
    args = parser.parse_args()
    table = Table(title=f"K training steps, T={args.length}, B={args.batch}, "
                  f"{torch.get_num_threads()} threads (median of {args.repeats})")  # fmt: skip
    columns = ["cell", "H", "K", "separate (s)"]
    if not args.bound_only:
        columns += ["vmap (s)", "separate / vmap", "bmm (s)", "separate / bmm"]
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
                ours, theirs, bmm, whole = [], [], [], []
                for _ in range(args.repeats + 1):  # the first of each is a warm-up
                    theirs.append(separate(models, xs, ys))
                    whole.append(one_batch(models[0], x_all, y_all))
                    if args.bound_only:
                        continue
                    ours.append(stacked(models, xs, ys))
                    if cell == "lstm":
                        bmm.append(stacked_bmm(models, xs, ys))
                a = statistics.median(theirs[1:])
                row = [cell, str(hidden), str(k), f"{a:.4f}"]
                if not args.bound_only:
                    b = statistics.median(ours[1:])
                    row += [f"{b:.4f}", f"{a / b:.2f}x"]
                    if bmm:
                        c = statistics.median(bmm[1:])
                        row += [f"{c:.4f}", f"{a / c:.2f}x"]
                    else:
                        row += ["-", "-"]
                d = statistics.median(whole[1:])
                table.add_row(*row, f"{d:.4f}", f"{a / d:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
