"""Draw the figures of the docs pages from small, seeded runs of the library itself.

    python docs/make_figures.py            # every figure, into docs/figures/
    python docs/make_figures.py taps tbptt # some of them

Each figure is what the page's capability produces on a real run (a few seconds to a
minute each on two CPU cores); nothing is drawn from hand-made numbers.
"""

from __future__ import annotations

import csv
import math
import sys
import tempfile
from pathlib import Path

import torch
from matplotlib.figure import Figure

import bptt
import bptt.init
from bptt.diagnose import gradient_by_distance
from bptt.taps import RecordNorms

HERE = Path(__file__).resolve().parent / "figures"


def _save(figure: Figure, name: str) -> None:
    HERE.mkdir(exist_ok=True)
    figure.savefig(HERE / f"{name}.svg", bbox_inches="tight", metadata={"Date": None})
    print(f"wrote {HERE / name}.svg")


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def taps() -> None:
    """||dL/ds_t|| per step (RecordNorms) of a tanh RNN and an LSTM at initialisation."""
    figure = Figure(figsize=(6, 3.2))
    axes = figure.add_subplot()
    x, y = bptt.tasks.adding_problem(100, 64, seed=0)
    for name, cell in (
        ("tanh RNN", bptt.cells.RNNCell(2, 64)),
        ("LSTM", bptt.cells.LSTMCell(2, 64)),
    ):
        torch.manual_seed(0)
        cell.reset_parameters()
        record = RecordNorms()
        model = bptt.SequenceModel(cell, 1)
        prediction, _ = model(x, taps=[record])
        torch.nn.functional.mse_loss(prediction, y).backward()
        axes.semilogy(record.norms.mean(0).detach(), label=name)
    axes.set_xlabel("step t")
    axes.set_ylabel("mean ||dL/ds_t||")
    axes.set_title("adding, T=100: the loss at the last step, seen from every step")
    axes.legend()
    _save(figure, "taps")


def diagnostics() -> None:
    """The gradient by distance of five cells at initialisation."""
    figure = Figure(figsize=(6, 3.2))
    axes = figure.add_subplot()
    x, _ = bptt.tasks.adding_problem(200, 32, seed=0)
    torch.manual_seed(0)
    cells = {
        "tanh RNN": bptt.cells.RNNCell(2, 64),
        "orthogonal RNN": bptt.cells.OrthogonalRNNCell(2, 64),
        "LSTM": bptt.cells.LSTMCell(2, 64),
        "LSTM, chrono init": bptt.init.chrono_(bptt.cells.LSTMCell(2, 64), 200),
        "LRU": bptt.cells.LRUCell(2, 64),
    }
    for name, cell in cells.items():
        found = gradient_by_distance(cell, x)
        axes.semilogy(found["ratios"], label=f"{name} (gamma {found['gamma']:.3f})")
    axes.set_xlabel("distance d = T - 1 - t")
    axes.set_ylabel("||dL/ds_t|| / ||dL/ds_{T-1}||")
    axes.set_title("gradient by distance at initialisation, T=200")
    axes.legend(fontsize=8)
    _save(figure, "diagnostics")


def clipping() -> None:
    """An LSTM under Nesterov SGD at lr 0.5: unclipped, its gradient norm explodes;
    AutoClip keeps it near 1."""
    figure = Figure(figsize=(6, 3.2))
    axes = figure.add_subplot()
    base = {"task": "adding", "length": 30, "cell": "lstm", "hidden": 32, "steps": 300}
    base.update({"optimizer": "sgd", "lr": 0.5, "momentum": 0.9, "log_every": 1, "seed": 0})
    base.update({"nonfinite_patience": 0})
    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in (("unclipped", {}), ("AutoClip (p=10)", {"clip": "percentile"})):
            out = Path(tmp) / label.split()[0]
            bptt.train({**base, **extra, "out": str(out)})
            rows = _metrics(out)
            steps = [int(r["step"]) for r in rows]
            norms = [float(r["grad_norm"]) for r in rows]
            finite = [n if math.isfinite(n) else float("nan") for n in norms]
            axes.semilogy(steps, finite, label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("gradient norm before clipping")
    axes.set_title("LSTM, Nesterov SGD at lr 0.5")
    axes.legend()
    _save(figure, "clipping")


def tbptt() -> None:
    """Echo of the symbol 8 steps back, TBPTT with k2 = 4 (blind to it) and k2 = 16."""
    figure = Figure(figsize=(6, 3.2))
    axes = figure.add_subplot()
    base = {"task": "echo", "length": 8, "cell": "gru", "hidden": 32, "steps": 600}
    base.update({"tbptt_k1": 4, "eval_every": 50, "seed": 0})
    with tempfile.TemporaryDirectory() as tmp:
        for k2 in (4, 16):
            out = Path(tmp) / f"k{k2}"
            summary = bptt.train({**base, "tbptt_k2": k2, "out": str(out)}).summary
            rows = [r for r in _metrics(out) if r["test_loss"]]
            axes.plot(
                [int(r["step"]) for r in rows],
                [float(r["test_loss"]) / summary["baseline_loss"] for r in rows],
                label=f"k1=4, k2={k2}: {summary['verdict']}",
            )
    axes.set_xlabel("update")
    axes.set_ylabel("test loss / baseline")
    axes.set_title("delayed echo over 8 steps, truncated BPTT")
    axes.legend()
    _save(figure, "tbptt")


def cells() -> None:
    """Where the recurrences' eigenvalues start: the LRU's ring, the orthogonal circle."""
    figure = Figure(figsize=(4.2, 4.2))
    axes = figure.add_subplot()
    torch.manual_seed(0)
    lru = bptt.cells.LRUCell(1, 64)
    re, im = (part.detach() for part in lru.eigenvalues())
    ortho = torch.linalg.eigvals(bptt.cells.OrthogonalRNNCell(1, 64).weight_hh.detach())
    rnn = torch.linalg.eigvals(bptt.cells.RNNCell(1, 64).weight_hh.detach())
    axes.scatter(rnn.real, rnn.imag, s=8, label="tanh RNN, torch's init")
    axes.scatter(ortho.real, ortho.imag, s=8, label="orthogonal RNN")
    axes.scatter(re, im, s=8, label="LRU (0.9 <= |lambda| <= 0.999)")
    circle = torch.linspace(0, 2 * math.pi, 200)
    axes.plot(torch.cos(circle), torch.sin(circle), color="grey", linewidth=0.8)
    axes.set_aspect("equal")
    axes.set_title("eigenvalues of W_hh at initialisation")
    axes.legend(fontsize=7, loc="lower left")
    _save(figure, "cells")


def reservoir() -> None:
    """An echo state network trained on Mackey-Glass, then generating on its own."""
    from bptt.reservoir import Reservoir, Ridge, generate, mackey_glass, nrmse

    series = mackey_glass(2600, seed=0).reshape(1, -1, 1)
    series = (series - series.mean()) / series.std()
    train, test = series[:, :2000], series[:, 2000:]
    esn = Reservoir(500, spectral_radius=1.25, leak_rate=0.3, seed=0)
    states = esn.run(train[:, :-1])
    readout = Ridge(alpha=1e-6).fit(states, train[:, 1:], washout=100)
    predicted = generate(esn, readout, train[:, -200:], 400)
    figure = Figure(figsize=(6, 3))
    axes = figure.add_subplot()
    axes.plot(test[0, :400, 0], label="Mackey-Glass")
    axes.plot(
        predicted[:, 0],
        "--",
        label=f"ESN generating (NRMSE {nrmse(predicted[:, 0], test[0, :400, 0]):.2g})",
    )
    axes.set_xlabel("step after training")
    axes.legend(fontsize=8)
    _save(figure, "reservoir")


def hessian_free() -> None:
    """Hessian-free on a tanh RNN, adding T=20: the loss per step."""
    from bptt.optim import HessianFree

    torch.manual_seed(0)
    model = bptt.SequenceModel(bptt.cells.RNNCell(2, 32), 1)
    x, y = bptt.tasks.adding_problem(20, 500, seed=0)

    def closure():
        prediction = model(x)[0]
        return torch.nn.functional.mse_loss(prediction, y), prediction

    hf = HessianFree(model.parameters(), loss="mse", max_cg=50, module=model)
    losses = [float(hf.step(closure)) for _ in range(30)]
    figure = Figure(figsize=(6, 3))
    axes = figure.add_subplot()
    axes.semilogy(range(1, 31), losses, marker=".")
    axes.axhline(1 / 6, color="grey", linestyle=":", label="baseline 1/6")
    axes.set_xlabel("Hessian-free step")
    axes.set_ylabel("training MSE")
    axes.legend()
    _save(figure, "hessian-free")


def bench() -> None:
    """A small matrix bench (adding T=30: tanh RNN, LSTM, IRNN), the report's overlaid
    test curves."""
    from bptt.run import plan_bench, read_results, run_bench
    from bptt.run._figures import overlaid_test_curves

    with tempfile.TemporaryDirectory() as tmp:
        runs = plan_bench(
            "matrix", tasks=["adding"], lengths=[30], methods=["rnn", "lstm", "irnn"], steps=1500
        )
        run_bench(runs, Path(tmp), progress=False, report=False)
        curves = []
        for row in read_results(Path(tmp) / "results.csv"):
            rows = [r for r in _metrics(Path(tmp) / row["run_dir"]) if r["test_loss"]]
            steps = [int(r["step"]) for r in rows]
            values = [float(r["test_loss"]) / float(row["baseline"]) for r in rows]
            curves.append((row["method"], steps, values))
    figure = overlaid_test_curves(curves, title="adding, T=30", ylabel="test MSE / baseline")
    _save(figure, "bench")


FIGURES = {
    "taps": taps,
    "diagnostics": diagnostics,
    "clipping": clipping,
    "tbptt": tbptt,
    "cells": cells,
    "reservoir": reservoir,
    "hessian-free": hessian_free,
    "bench": bench,
}

if __name__ == "__main__":
    names = sys.argv[1:] or list(FIGURES)
    for name in names:
        FIGURES[name]()
