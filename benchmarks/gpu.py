"""Training-step time of bptt's fast engines on a GPU against cuDNN (and FlashRNN).

Side by side in one process, on the same weights and inputs: forward + backward of
the built-in RNN, LSTM and GRU through ``bptt.unroll`` with ``RecordNorms`` on
(per-sample norm of the hidden-state gradient at every step) against
``torch.nn.RNN``/``LSTM``/``GRU`` (cuDNN on CUDA; they record nothing), float32,
T = 784, B = 64, F = 1 (sequential MNIST's shape), H in {128, 256, 512, 1024}. The
loss reads the last step. Each time is the median of 5 interleaved repeats after a
warm-up, with the device synchronised before and after each step; the table gives
the ratio ours / theirs.

Before timing, every row checks that ours and torch's outputs, input gradients and
recurrent weight gradients agree (a loss over every step, TF32 off) to a tolerance
derived from float32 rounding, and prints the largest relative difference. TF32 stays
off for the timings too, so the timed arithmetic is the checked one.

Then the Triton engine (``engine="triton"``) where bptt runs it (CUDA, float32, H up
to 128 for the RNN and 64 for the LSTM and the GRU; elsewhere the refusal is printed):
first checked against the generic engine in float64 on the device (T = 64, B = 16,
RecordNorms then ClipNorm at the median norm, so that clipping acts; every gradient
and the recorded norms), then timed beside the fast loop and torch.nn at the table's T
and B, H in {32, 64, 128}. Before it, the fast loop captured as CUDA graphs (on CUDA
by default) against the same loop uncaptured (``BPTT_CUDA_GRAPHS=0``), at the smallest
and largest H: checked to agree over three passes whose weights change, then timed
(the torch.nn table's bptt column is the captured loop). Then K = 8 runs stacked
(``bptt.engine.unroll_stacked``) against the same 8 runs one after another at H = 128,
checked to agree run by run.
Then, for scale, the generic (autograd) engine at H = 128 and 512 with fewer repeats,
and FlashRNN (``import flashrnn``) where it imports, compiles and runs; otherwise one
line says why it was skipped. A global deadline (``--budget-s``) skips the rows that
would not fit, with a printed note; every line is flushed as it is printed, and the
results are written as JSON after every row (``--json``; by default ``$OUT/gpu.json``
where the variable OUT is set), so a run cut short still leaves what it measured.
Exit status: 0; 1 if a check disagreed, a row failed or none ran; 2 if CUDA was asked
for and is not there.

    python benchmarks/gpu.py                          # on the GPU machine
    python benchmarks/gpu.py --hidden 128,512 --repeats 3
    python benchmarks/gpu.py --device cpu --smoke     # here: tiny sizes, a few seconds
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import json
import math
import os
import platform
import statistics
import sys
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

try:
    import bptt
except ImportError:  # on the device machine the checkout's editable install may not apply
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import bptt
from bptt._kernels._graphs import CAPTURES
from bptt.engine import triton_refusal, unroll_stacked
from bptt.taps import RecordNorms

OURS = {"rnn": bptt.cells.RNNCell, "lstm": bptt.cells.LSTMCell, "gru": bptt.cells.GRUCell}
THEIRS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
# FlashRNN's names for the same recurrences (its "elman" is the tanh RNN)
FLASHRNN_FUNCTION = {"rnn": "elman", "lstm": "lstm", "gru": "gru"}
# (gates of R, gates of W x, gates interacting, gates in total, states), as FlashRNN
# 1.0's rnn_function_registry lists them; read from the package where it has them
FLASHRNN_GATES = {
    "elman": (1, 1, 1, 1, 1),
    "lstm": (4, 4, 4, 4, 2),
    "gru": (3, 3, 4, 4, 1),
}

FULL = {"length": 784, "batch": 64, "hidden": "128,256,512,1024", "repeats": 5}
FULL |= {"triton_hidden": "32,64,128", "stack_hidden": "128", "stack": 8}
SMOKE = {"length": 20, "batch": 4, "hidden": "8,16", "repeats": 2}
SMOKE |= {"triton_hidden": "8", "stack_hidden": "8", "stack": 3}
# the Triton check's size: small, so that the float64 reference is quick on any device
TRITON_CHECK = {"length": 64, "batch": 16}
EPS32 = torch.finfo(torch.float32).eps


# ----------------------------------------------------------------------------- output


def say(*parts: object) -> None:
    print(*parts, flush=True)


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A table through rich where it imports, else as plain aligned text."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
        say(title)
        say("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
        for row in rows:
            say("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*row)
    Console(width=130).print(table)
    sys.stdout.flush()


class Budget:
    """A global deadline: what is left of ``seconds`` counted from now."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def left(self) -> float:
        """Seconds left (negative once past the deadline)."""
        return self.seconds - (time.perf_counter() - self.start)

    def left_text(self) -> str:
        return f"{max(self.left(), 0.0):.0f} s of the budget left"

    def used(self) -> float:
        return time.perf_counter() - self.start


# ----------------------------------------------------------------------- environment


def disable_tf32() -> dict[str, object]:
    """TF32 off for cuBLAS matmuls and cuDNN (convolutions and RNNs); what was set.

    The legacy flags (``allow_tf32``) are set; newer torch maps them onto its
    ``fp32_precision`` settings, which are read back where they exist."""
    with warnings.catch_warnings():  # some torch versions call the legacy flags deprecated
        warnings.simplefilter("ignore")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        state: dict[str, object] = {
            "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        }
        # "none" on one of these means: as the level above (backends: the global one)
        for name in ("backends", "cuda.matmul", "cudnn", "cudnn.rnn"):
            module: object = torch.backends
            try:
                for part in name.split(".") if name != "backends" else ():
                    module = getattr(module, part)
                value = getattr(module, "fp32_precision", None)
            except Exception:  # an older torch: no such setting
                value = None
            if value is not None:
                state[f"{name}.fp32_precision"] = value
    return state


def environment(device: torch.device) -> dict[str, object]:
    """Versions and the device, each read defensively (a missing piece reads None)."""

    def read(fn: Callable[[], object]) -> object:
        try:
            return fn()
        except Exception as error:  # report, don't crash
            return f"unavailable ({type(error).__name__})"

    env: dict[str, object] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": read(torch.cuda.is_available),
        "cudnn": read(torch.backends.cudnn.version),
        "bptt": getattr(bptt, "__version__", None),
        "device": str(device),
    }
    if device.type == "cuda":
        env["device_name"] = read(lambda: torch.cuda.get_device_name(device))
        env["capability"] = read(lambda: list(torch.cuda.get_device_capability(device)))
    else:
        env["device_name"] = platform.processor() or platform.machine()
        env["threads"] = torch.get_num_threads()
    return env


# ------------------------------------------------------------------------- the steps


def make_pair(kind: str, features: int, hidden: int, device: torch.device):
    """Our cell and torch's layer with the same weights, on the device."""
    ours = OURS[kind](features, hidden)
    theirs = THEIRS[kind](features, hidden, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(theirs, f"{name}_l0").copy_(getattr(ours, name))
    return ours.to(device), theirs.to(device)  # .to() re-flattens cuDNN's weights


def step_ours(cell: nn.Module, x: torch.Tensor, w: torch.Tensor, engine: str = "fast") -> None:
    out, _ = bptt.unroll(cell, x, taps=[RecordNorms()], engine=engine)
    (out[:, -1] * w).sum().backward()


def step_theirs(layer: nn.Module, x: torch.Tensor, w: torch.Tensor) -> None:
    out, _ = layer(x)
    (out[:, -1] * w).sum().backward()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call, the device idle before and done after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def tolerance(steps: int, hidden: int, features: int) -> float:
    """The largest relative difference two correct float32 evaluations should show.

    Each step's results are dot products of H + F terms (plus a few pointwise
    roundings), whose rounding error, with errors of random sign, grows like
    sqrt(H + F) * eps (Higham, Accuracy and Stability, 2nd ed., sec. 2.8: the
    probabilistic form of the bound gamma_n = n u / (1 - n u)). Over T steps of a
    contracting recurrence (the default initialisations are) the steps' independent
    errors add like a random walk, sqrt(T); the backward pass sums as many terms
    again. The factor 16 covers the several roundings per step (gates, products,
    nonlinearities) and two implementations summing in different orders (cuDNN
    against cuBLAS), so the tolerance is 16 eps sqrt(T (H + F)): 6e-4 at T = 784,
    H = 128 and 1.7e-3 at H = 1024, 2.6e-5 at the smoke size. A missing term or a
    wrong sign moves results by order one, far above it.
    """
    return 16 * EPS32 * math.sqrt(steps * (hidden + features))


def relative_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max |ours - theirs| / max |theirs| (a max-norm relative difference)."""
    a, b = ours.detach().double(), theirs.detach().double()
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / max(scale, torch.finfo(torch.float64).tiny)


def check_agreement(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> dict[str, object]:
    """Outputs, input gradients and recurrent weight gradients, ours against torch's,
    for a loss over every step (so every step's gradient is checked)."""
    batch, steps, features = x.shape
    hidden = ours.hidden_size
    gen = torch.Generator().manual_seed(1)
    readout = torch.randn(batch, steps, hidden, generator=gen).to(x.device)
    x_ours = x.detach().clone().requires_grad_(True)
    x_theirs = x.detach().clone().requires_grad_(True)
    record = RecordNorms()
    out_ours, _ = bptt.unroll(ours, x_ours, taps=[record])
    (out_ours * readout).sum().backward()
    out_theirs, _ = theirs(x_theirs)
    (out_theirs * readout).sum().backward()
    diffs = {
        "output": relative_difference(out_ours, out_theirs),
        "input_grad": relative_difference(x_ours.grad, x_theirs.grad),
        "weight_hh_grad": relative_difference(ours.weight_hh.grad, theirs.weight_hh_l0.grad),
    }
    tol = tolerance(steps, hidden, features)
    norms_finite = bool(torch.isfinite(record.norms).all().item())
    ours.zero_grad(set_to_none=True)
    theirs.zero_grad(set_to_none=True)
    worst = max(diffs.values())
    return {
        "max_rel_diff": diffs,
        "worst": worst,
        "tol": tol,
        "norms_finite": norms_finite,
        "agree": bool(worst <= tol and norms_finite),
    }


def interleaved(
    runs: dict[str, Callable[[], object]], repeats: int, device: torch.device, budget: Budget
) -> dict[str, list[float]]:
    """Seconds of each run, ``repeats`` rounds of one call each; at least one round,
    then no round that starts past the deadline."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(repeats):
        if round_ > 0 and budget.left() <= 0:
            break
        for name, run in runs.items():
            times[name].append(timed(run, device))
    return times


# -------------------------------------------------------------------------- the rows


def compare_row(
    kind: str, args: argparse.Namespace, hidden: int, device: torch.device, budget: Budget
) -> dict[str, object]:
    """One row: the agreement check, a warm-up, then interleaved timings."""
    started = time.perf_counter()
    torch.manual_seed(0)
    ours, theirs = make_pair(kind, args.features, hidden, device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.length, args.features, generator=gen).to(device)
    w = torch.randn(hidden, generator=gen).to(device)
    check = check_agreement(ours, theirs, x)
    runs = {"ours": lambda: step_ours(ours, x, w), "theirs": lambda: step_theirs(theirs, x, w)}
    for run in runs.values():  # warm-up: allocations, cuDNN plans, the workspace pool
        timed(run, device)
    times = interleaved(runs, args.repeats, device, budget)
    ours_s = statistics.median(times["ours"])
    theirs_s = statistics.median(times["theirs"])
    return {
        "cell": kind,
        "hidden": hidden,
        "ours_s": ours_s,
        "theirs_s": theirs_s,
        "ratio": ours_s / theirs_s,
        "ours_times": times["ours"],
        "theirs_times": times["theirs"],
        "repeats": len(times["ours"]),
        "check": check,
        "wall_s": time.perf_counter() - started,
    }


def generic_row(
    kind: str, args: argparse.Namespace, hidden: int, device: torch.device, budget: Budget
) -> dict[str, object]:
    """The generic engine beside the fast one on the same cell: a check that they agree
    (last-step loss, recurrent weight gradient and the recorded norms), then timings
    with as many repeats as the budget allows (each call's cost read off the check)."""
    started = time.perf_counter()
    torch.manual_seed(0)
    cell = OURS[kind](args.features, hidden).to(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.length, args.features, generator=gen).to(device)
    w = torch.randn(hidden, generator=gen).to(device)
    grads, norms, first = {}, {}, {}
    for engine in ("generic", "fast"):  # the check, and the warm-up
        record = RecordNorms()

        def once(engine=engine, record=record):
            out, _ = bptt.unroll(cell, x, taps=[record], engine=engine)
            (out[:, -1] * w).sum().backward()

        cell.zero_grad(set_to_none=True)
        first[engine] = timed(once, device)
        grads[engine] = cell.weight_hh.grad.detach().clone()
        norms[engine] = record.norms.detach().clone()
    cell.zero_grad(set_to_none=True)
    diffs = {
        "weight_hh_grad": relative_difference(grads["generic"], grads["fast"]),
        "norms": relative_difference(norms["generic"], norms["fast"]),
    }
    tol = tolerance(args.length, hidden, args.features)
    per_round = first["generic"] + first["fast"]
    repeats = min(args.generic_repeats, int(max(budget.left(), 0) // max(per_round, 1e-9)))
    row: dict[str, object] = {
        "cell": kind,
        "hidden": hidden,
        "check": {
            "max_rel_diff": diffs,
            "tol": tol,
            "agree": bool(max(diffs.values()) <= tol),
        },
        "first_call_s": first,
    }
    if repeats < 1:
        row |= {"generic_s": None, "fast_s": None, "repeats": 0}
        row["note"] = f"not timed: a round takes {per_round:.1f} s, {budget.left_text()}"
    else:
        runs = {
            "generic": lambda: step_ours(cell, x, w, "generic"),
            "fast": lambda: step_ours(cell, x, w, "fast"),
        }
        times = interleaved(runs, repeats, device, budget)
        generic_s = statistics.median(times["generic"])
        fast_s = statistics.median(times["fast"])
        row |= {
            "generic_s": generic_s,
            "fast_s": fast_s,
            "ratio": generic_s / fast_s,
            "generic_times": times["generic"],
            "fast_times": times["fast"],
            "repeats": len(times["generic"]),
        }
    row["wall_s"] = time.perf_counter() - started
    return row


def reference_pass(cell: nn.Module, x: torch.Tensor, readout: torch.Tensor, engine: str, taps):
    """Outputs and the gradients of x and of every parameter for a loss over every step."""
    cell.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out, _ = bptt.unroll(cell, x, taps=taps, engine=engine)
    (out * readout).sum().backward()
    results = {"output": out.detach(), "input_grad": x.grad}
    results |= {f"{name}_grad": p.grad for name, p in cell.named_parameters()}
    cell.zero_grad(set_to_none=True)
    return results


def triton_check(kind: str, hidden: int, features: int, device: torch.device) -> dict:
    """The Triton kernels (float32) and the fast loop against the generic engine in
    float64 on the device, at T = 64, B = 16, with RecordNorms then ClipNorm (bound at
    the median norm, so that about half the steps are clipped): outputs, input and
    parameter gradients, the recorded norms. Triton runs float32 only (bptt refuses
    float64 there), so float64 is the reference's."""
    steps, batch = TRITON_CHECK["length"], TRITON_CHECK["batch"]
    torch.manual_seed(0)
    cell = OURS[kind](features, hidden).to(device)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(batch, steps, features, generator=gen).to(device)
    readout = torch.randn(batch, steps, hidden, generator=gen).to(device)
    probe = RecordNorms()
    reference_pass(cell, x, readout, "fast", [probe])
    bound = float(probe.norms.median())  # about half the samples' steps above it
    wide = copy.deepcopy(cell).double()
    ref_taps = [RecordNorms(), bptt.taps.ClipNorm(bound)]
    reference = reference_pass(wide, x.double(), readout.double(), "generic", ref_taps)
    tol = tolerance(steps, hidden, features)
    out: dict[str, object] = {"tol": tol, "clip_bound": bound}
    for engine in ("triton", "fast"):
        taps = [RecordNorms(), bptt.taps.ClipNorm(bound)]
        got = reference_pass(cell, x, readout, engine, taps)
        diffs = {name: relative_difference(got[name], ref) for name, ref in reference.items()}
        diffs["norms"] = relative_difference(taps[0].norms, ref_taps[0].norms)
        worst = max(diffs.values())
        out[engine] = {"max_rel_diff": diffs, "worst": worst, "agree": bool(worst <= tol)}
    out["agree"] = all(out[e]["agree"] for e in ("triton", "fast"))  # type: ignore[index]
    return out


def triton_row(
    kind: str, args: argparse.Namespace, hidden: int, device: torch.device, budget: Budget
) -> dict[str, object]:
    """The Triton engine: its check (:func:`triton_check`), then a training step with
    RecordNorms timed against the fast loop and torch.nn at the benchmark's T and B."""
    started = time.perf_counter()
    check = triton_check(kind, hidden, args.features, device)
    torch.manual_seed(0)
    ours, theirs = make_pair(kind, args.features, hidden, device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.length, args.features, generator=gen).to(device)
    w = torch.randn(hidden, generator=gen).to(device)
    runs = {
        "triton": lambda: step_ours(ours, x, w, "triton"),
        "fast": lambda: step_ours(ours, x, w, "fast"),
        "theirs": lambda: step_theirs(theirs, x, w),
    }
    first = {name: timed(run, device) for name, run in runs.items()}  # compiles, warms up
    times = interleaved(runs, args.repeats, device, budget)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "cell": kind,
        "hidden": hidden,
        "check": check,
        "first_call_s": first,
        "triton_s": medians["triton"],
        "fast_s": medians["fast"],
        "theirs_s": medians["theirs"],
        "triton_over_theirs": medians["triton"] / medians["theirs"],
        "triton_over_fast": medians["triton"] / medians["fast"],
        "times": times,
        "repeats": len(times["triton"]),
        "wall_s": time.perf_counter() - started,
    }


def stacked_row(
    kind: str, args: argparse.Namespace, hidden: int, device: torch.device, budget: Budget
) -> dict[str, object]:
    """K runs of one cell as one stacked model (``bptt.engine.unroll_stacked``, each run
    with its RecordNorms) against the same K runs one after another, a training step of
    all K each (forward and backward; no optimizer), both with engine "auto" (on CUDA
    the Triton kernels where they run: the RNN at H <= 128, else the loop). Checked
    first: each run's outputs and recurrent weight gradient the same both ways."""
    started = time.perf_counter()
    k = args.stack
    cells = []
    for seed in range(k):
        torch.manual_seed(seed)
        cells.append(OURS[kind](args.features, hidden).to(device))
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(k, args.batch, args.length, args.features, generator=gen).to(device)
    w = torch.randn(k, 1, hidden, generator=gen).to(device)

    def stacked() -> list[torch.Tensor]:
        out = unroll_stacked(cells, x, taps=[[RecordNorms()] for _ in cells])
        (out[:, :, -1] * w).sum().backward()
        return [out[j, :, -1].detach() for j in range(k)]

    def separate() -> list[torch.Tensor]:
        outs = []
        for j, cell in enumerate(cells):
            out, _ = bptt.unroll(cell, x[j], taps=[RecordNorms()])
            (out[:, -1] * w[j]).sum().backward()
            outs.append(out[:, -1].detach())
        return outs

    grads = {}
    lasts = {}
    for name, fn in (("stacked", stacked), ("separate", separate)):
        for cell in cells:
            cell.zero_grad(set_to_none=True)
        lasts[name] = fn()
        grads[name] = [cell.weight_hh.grad.detach().clone() for cell in cells]
    diffs = {
        "output": max(map(relative_difference, lasts["stacked"], lasts["separate"])),
        "weight_hh_grad": max(map(relative_difference, grads["stacked"], grads["separate"])),
    }
    tol = tolerance(args.length, hidden, args.features)
    times = interleaved({"stacked": stacked, "separate": separate}, args.repeats, device, budget)
    stacked_s, separate_s = (statistics.median(times[n]) for n in ("stacked", "separate"))
    return {
        "cell": kind,
        "hidden": hidden,
        "k": k,
        "check": {"max_rel_diff": diffs, "tol": tol, "agree": max(diffs.values()) <= tol},
        "stacked_s": stacked_s,
        "separate_s": separate_s,
        "speedup": separate_s / stacked_s,
        "times": times,
        "repeats": len(times["stacked"]),
        "wall_s": time.perf_counter() - started,
    }


@contextlib.contextmanager
def cuda_graphs(enabled: bool):
    """bptt's CUDA graphs on or off (``BPTT_CUDA_GRAPHS``), put back afterwards."""
    saved = os.environ.get("BPTT_CUDA_GRAPHS")
    os.environ["BPTT_CUDA_GRAPHS"] = "1" if enabled else "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["BPTT_CUDA_GRAPHS"]
        else:
            os.environ["BPTT_CUDA_GRAPHS"] = saved


def graphs_row(
    kind: str, args: argparse.Namespace, hidden: int, device: torch.device, budget: Budget
) -> dict[str, object]:
    """The fast loop captured as CUDA graphs against the same loop uncaptured: three
    passes each (the weights changed between them, as training does), every result the
    same to float32 rounding, then both timed. On the CPU nothing is captured: both
    sides are the loop (the row checks the toggle)."""
    started = time.perf_counter()
    torch.manual_seed(0)
    cell = OURS[kind](args.features, hidden).to(device)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(args.batch, args.length, args.features, generator=gen).to(device)
    readout = torch.randn(args.batch, args.length, hidden, generator=gen).to(device)
    nudges = [0.01 * torch.randn(p.shape, generator=gen).to(device) for p in cell.parameters()]
    made, failed = CAPTURES.made, CAPTURES.failed
    worst = 0.0
    for _ in range(3):
        taps = {True: [RecordNorms(), bptt.taps.ClipNorm(1.0)], False: None}
        got = {}
        for enabled in (True, False):
            taps[enabled] = [RecordNorms(), bptt.taps.ClipNorm(1.0)]
            with cuda_graphs(enabled):
                got[enabled] = reference_pass(cell, x, readout, "fast", taps[enabled])
            got[enabled]["norms"] = taps[enabled][0].norms
        worst = max(worst, *(relative_difference(got[True][n], got[False][n]) for n in got[False]))
        with torch.no_grad():
            for p, nudge in zip(cell.parameters(), nudges, strict=True):
                p.add_(nudge)
    tol = tolerance(args.length, hidden, args.features)
    # on CUDA the captured side must really have been captured (a failed capture falls
    # back to the loop, logged, and would otherwise read as "agree, 1.0x")
    captures = {"made": CAPTURES.made - made, "failed": CAPTURES.failed - failed}
    captured = captures["made"] > 0 and captures["failed"] == 0
    if device.type != "cuda":
        captured = captures["failed"] == 0  # the CPU captures nothing (BPTT_CUDA_GRAPHS aside)
    w = torch.randn(hidden, generator=gen).to(device)

    def step(enabled: bool) -> Callable[[], None]:
        def once() -> None:
            with cuda_graphs(enabled):
                step_ours(cell, x, w)

        return once

    runs = {"captured": step(True), "uncaptured": step(False)}
    for run in runs.values():
        timed(run, device)
    times = interleaved(runs, args.repeats, device, budget)
    captured_s, uncaptured_s = (statistics.median(times[n]) for n in runs)
    return {
        "cell": kind,
        "hidden": hidden,
        "check": {
            "worst": worst,
            "tol": tol,
            "captures": captures,
            "agree": worst <= tol and captured,
        },
        "captured_s": captured_s,
        "uncaptured_s": uncaptured_s,
        "speedup": uncaptured_s / captured_s,
        "times": times,
        "repeats": len(times["captured"]),
        "wall_s": time.perf_counter() - started,
    }


def load_flashrnn() -> tuple[Callable | None, dict[str, tuple], str]:
    """FlashRNN's ``flashrnn`` function and its gate counts, or None and why not."""
    errors = []
    for name in ("flashrnn.flashrnn", "flashrnn"):  # the wheel nests a package of one name
        try:
            module = importlib.import_module(name)
        except Exception as error:
            errors.append(f"import {name}: {type(error).__name__}: {error}")
            if isinstance(error, ModuleNotFoundError) and error.name == "flashrnn":
                break
            continue
        fn = getattr(module, "flashrnn", None)
        if callable(fn) and not isinstance(fn, types.ModuleType):
            gates = dict(FLASHRNN_GATES)
            try:
                registry = importlib.import_module("flashrnn.flashrnn.flashrnn")
                for function, entry in registry.rnn_function_registry.items():
                    gates[function] = tuple(entry["gates_states"])
            except Exception:  # keep the counts written above
                pass
            return fn, gates, ""
        errors.append(f"{name} has no callable flashrnn")
    return None, {}, "; ".join(errors)


def flashrnn_row(
    fn: Callable,
    gates: dict[str, tuple],
    kind: str,
    args: argparse.Namespace,
    hidden: int,
    device: torch.device,
    budget: Budget,
) -> dict[str, object]:
    """FlashRNN's training step at this size (its own random weights: its gate layout
    is not torch's, so this row is timing only), the input projection included as a
    Linear layer, float32, the first backend that runs."""
    function = FLASHRNN_FUNCTION[kind]
    gates_r, gates_w, _, gates_t, _ = gates[function]
    batch, steps, features = args.batch, args.length, args.features
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, steps, features, generator=gen).to(device)
    w = torch.randn(hidden, generator=gen).to(device)
    proj = nn.Linear(features, gates_w * hidden).to(device)
    recurrent = (torch.randn(gates_r, 1, hidden, hidden, generator=gen) / hidden**0.5).to(device)
    recurrent.requires_grad_(True)
    bias = torch.zeros(gates_t, 1, hidden, device=device, requires_grad=True)
    errors = []
    for backend in ("cuda_fused", "cuda"):

        def once(backend=backend):
            wx = proj(x).view(batch, steps, gates_w, 1, hidden)
            h, _ = fn(
                Wx=wx, R=recurrent, b=bias, states=None, function=function,
                backend=backend, dtype="float32",
            )  # fmt: skip
            (h[0][:, -1].reshape(batch, hidden) * w).sum().backward()

        try:
            first = timed(once, device)  # compiles the kernels on first use
        except Exception as error:
            errors.append(f"{backend}: {type(error).__name__}: {str(error)[:200]}")
            continue
        times = interleaved({"flashrnn": once}, args.repeats, device, budget)["flashrnn"]
        return {
            "cell": kind,
            "hidden": hidden,
            "backend": backend,
            "flashrnn_s": statistics.median(times),
            "flashrnn_times": times,
            "first_call_s": first,
            "repeats": len(times),
        }
    raise RuntimeError("; ".join(errors))


# -------------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes (T=20, B=4, H=8,16, 2 repeats)"
    )
    parser.add_argument("--length", type=int, help="T (784; smoke 20)")
    parser.add_argument("--batch", type=int, help="B (64; smoke 4)")
    parser.add_argument("--features", type=int, default=1, help="F (1)")
    parser.add_argument("--hidden", help="comma-separated H (128,256,512,1024; smoke 8,16)")
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--repeats", type=int, help="timed repeats per row (5; smoke 2)")
    parser.add_argument(
        "--generic-hidden",
        help="H at which the generic engine is timed, among --hidden (128,512; smoke all)",
    )
    parser.add_argument("--generic-repeats", type=int, help="at most this many (3; smoke 2)")
    parser.add_argument("--no-generic", action="store_true", help="skip the generic engine")
    parser.add_argument(
        "--triton-hidden", help="H for the Triton engine's rows (32,64,128; smoke 8)"
    )
    parser.add_argument("--no-triton", action="store_true", help="skip the Triton engine")
    parser.add_argument("--stack", type=int, help="K runs stacked against K separate (8; smoke 3)")
    parser.add_argument("--stack-hidden", help="H for the stacked rows (128; smoke 8)")
    parser.add_argument("--no-stack", action="store_true", help="skip the stacked runs")
    parser.add_argument(
        "--no-graphs", action="store_true", help="skip CUDA graphs against uncaptured"
    )
    parser.add_argument("--no-flashrnn", action="store_true", help="skip FlashRNN")
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="skip rows past this many seconds (420)"
    )
    parser.add_argument(
        "--json", help="write the results here (default: $OUT/gpu.json where OUT is set)"
    )
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.hidden = [int(h) for h in str(args.hidden).split(",") if h]
    args.triton_hidden = [int(h) for h in str(args.triton_hidden).split(",") if h]
    args.stack_hidden = [int(h) for h in str(args.stack_hidden).split(",") if h]
    if args.stack < 2:
        parser.error(f"--stack must be at least 2, got {args.stack}")
    args.cells = [c for c in args.cells.split(",") if c]
    unknown = [c for c in args.cells if c not in OURS]
    if unknown:
        parser.error(f"unknown cells {unknown}; choose among {sorted(OURS)}")
    if args.generic_hidden is None:
        args.generic_hidden = list(args.hidden) if args.smoke else [128, 512]
    else:
        args.generic_hidden = [int(h) for h in args.generic_hidden.split(",") if h]
    if args.generic_repeats is None:
        args.generic_repeats = min(args.repeats, 3)
    if args.json is None and os.environ.get("OUT"):
        args.json = str(Path(os.environ["OUT"]) / "gpu.json")
    return args


class Session:
    """One run's settings, deadline and results, saved as JSON after every row."""

    def __init__(self, args: argparse.Namespace, device: torch.device, env: dict) -> None:
        self.args, self.device, self.env = args, device, env
        self.budget = Budget(args.budget_s)
        self.results: dict = {
            "env": env,
            "config": {
                "length": args.length,
                "batch": args.batch,
                "features": args.features,
                "hidden": args.hidden,
                "cells": args.cells,
                "repeats": args.repeats,
                "dtype": "float32",
                "budget_s": args.budget_s,
                "triton_hidden": args.triton_hidden,
                "stack": args.stack,
                "stack_hidden": args.stack_hidden,
                "smoke": args.smoke,
            },
            "tf32": {},
            "rows": [],
            "generic": [],
            "triton": {"rows": [], "refused": []},
            "stacked": [],
            "graphs": [],
            "flashrnn": {"available": False, "reason": "", "rows": []},
            "skipped": [],
        }

    def save(self) -> None:
        self.results["wall_s"] = self.budget.used()
        if self.args.json:
            path = Path(self.args.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(path.suffix + ".tmp")
            temporary.write_text(json.dumps(self.results, indent=1, default=str))
            temporary.replace(path)

    def skip(self, note: str) -> None:
        say(f"skipped {note}")
        self.results["skipped"].append(note)

    def attempt(
        self, label: str, kind: str, hidden: int, table: list, make_row: Callable[[], dict]
    ) -> dict | None:
        """A row into ``table``; a row that raises (out of memory, ...) is recorded
        with its error and the run goes on."""
        try:
            row = make_row()
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            say(f"{label} {kind} H={hidden}: FAILED {message}")
            table.append({"cell": kind, "hidden": hidden, "error": message})
            self.save()
            return None
        table.append(row)
        self.save()
        return row


def against_torch(run: Session) -> None:
    """Ours against torch.nn, each row checked first; H outer, so that a deadline
    leaves every cell at the smaller sizes."""
    args, budget = run.args, run.budget
    rows = run.results["rows"]
    last_wall: dict[str, float] = {}
    for hidden in args.hidden:
        for kind in args.cells:
            estimate = 1.5 * last_wall.get(kind, 0.0)
            if budget.left() <= 0 or budget.left() < estimate:
                run.skip(
                    f"{kind} H={hidden}: {budget.left_text()}, "
                    f"the row would take about {estimate:.0f} s"
                )
                continue
            row = run.attempt(
                "torch.nn comparison",
                kind,
                hidden,
                rows,
                lambda kind=kind, hidden=hidden: compare_row(
                    kind, args, hidden, run.device, budget
                ),
            )
            if row is None:
                continue
            last_wall[kind] = row["wall_s"]
            check = row["check"]
            say(
                f"{kind} H={hidden}: {'agree' if check['agree'] else 'DISAGREE'} "
                f"(max rel diff {check['worst']:.2e}, tol {check['tol']:.1e}); "
                f"ours {1e3 * row['ours_s']:.2f} ms, torch.nn {1e3 * row['theirs_s']:.2f} ms, "
                f"ratio {row['ratio']:.2f}x [{row['repeats']} repeats, row {row['wall_s']:.1f} s]"
            )
    done = sorted(
        (r for r in rows if "error" not in r),
        key=lambda r: (args.cells.index(r["cell"]), r["hidden"]),
    )
    theirs = "cuDNN" if run.device.type == "cuda" else run.device.type.upper()
    print_table(
        f"training step on {run.env['device_name']}, T={args.length}, B={args.batch}, "
        f"F={args.features}, float32, TF32 off, torch {run.env['torch']}",
        [
            "cell",
            "H",
            "check (max rel diff)",
            "bptt fast + RecordNorms (ms)",
            f"torch.nn {theirs} (ms)",
            "ours / theirs",
        ],
        [
            [
                r["cell"],
                str(r["hidden"]),
                f"{'agree' if r['check']['agree'] else 'DISAGREE'} {r['check']['worst']:.1e}",
                f"{1e3 * r['ours_s']:.2f}",
                f"{1e3 * r['theirs_s']:.2f}",
                f"{r['ratio']:.2f}x",
            ]
            for r in done
        ],
    )


def generic_engine(run: Session) -> None:
    """The generic (autograd) engine beside the fast one, for scale."""
    args, budget = run.args, run.budget
    table = run.results["generic"]
    sizes = [h for h in args.hidden if h in args.generic_hidden]
    if args.no_generic:
        run.skip("the generic engine (--no-generic)")
        return
    if not sizes:
        run.skip(f"the generic engine: none of H={args.generic_hidden} among --hidden")
        return
    last = 0.0
    for hidden in sizes:
        for kind in args.cells:
            if budget.left() <= 0 or budget.left() < 1.5 * last:
                run.skip(f"generic {kind} H={hidden}: {budget.left_text()}")
                continue
            row = run.attempt(
                "generic",
                kind,
                hidden,
                table,
                lambda kind=kind, hidden=hidden: generic_row(
                    kind, args, hidden, run.device, budget
                ),
            )
            if row is None:
                continue
            last = row["wall_s"]
            verdict = "agrees with fast" if row["check"]["agree"] else "DISAGREES with fast"
            timing = (
                f"generic {1e3 * row['generic_s']:.1f} ms, fast {1e3 * row['fast_s']:.2f} ms, "
                f"{row['ratio']:.1f}x [{row['repeats']} repeats]"
                if row["generic_s"] is not None
                else row["note"]
            )
            say(f"generic {kind} H={hidden}: {verdict}; {timing}")
    timed_rows = [r for r in table if r.get("generic_s") is not None]
    if timed_rows:
        print_table(
            f"generic (autograd) engine against the fast one, T={args.length}, B={args.batch}",
            ["cell", "H", "generic (ms)", "fast (ms)", "generic / fast"],
            [
                [
                    r["cell"],
                    str(r["hidden"]),
                    f"{1e3 * r['generic_s']:.1f}",
                    f"{1e3 * r['fast_s']:.2f}",
                    f"{r['ratio']:.1f}x",
                ]
                for r in timed_rows
            ],
        )


def triton_engine(run: Session) -> None:
    """The Triton engine where bptt runs it (CUDA, float32, H within the kernels'
    limits): checked against float64 on the device, then timed beside the fast loop
    and torch.nn. Where it is refused, the reason is recorded instead."""
    args, budget = run.args, run.budget
    triton = run.results["triton"]
    if args.no_triton:
        run.skip("the Triton engine (--no-triton)")
        return
    last = 0.0
    for hidden in args.triton_hidden:
        for kind in args.cells:
            probe = OURS[kind](args.features, hidden).to(run.device)
            x = torch.zeros(1, 2, args.features, device=run.device)
            reason = triton_refusal(probe, x, taps=[RecordNorms()])
            if reason is not None:
                triton["refused"].append({"cell": kind, "hidden": hidden, "reason": reason})
                say(f"triton {kind} H={hidden}: not run: {reason}")
                continue
            if budget.left() <= 0 or budget.left() < 1.5 * last:
                run.skip(f"triton {kind} H={hidden}: {budget.left_text()}")
                continue
            row = run.attempt(
                "triton",
                kind,
                hidden,
                triton["rows"],
                lambda kind=kind, hidden=hidden: triton_row(kind, args, hidden, run.device, budget),
            )
            if row is None:
                continue
            last = row["wall_s"]
            check = row["check"]
            say(
                f"triton {kind} H={hidden}: {'agree' if check['agree'] else 'DISAGREE'} with "
                f"float64 (worst triton {check['triton']['worst']:.2e}, fast "
                f"{check['fast']['worst']:.2e}, tol {check['tol']:.1e}); triton "
                f"{1e3 * row['triton_s']:.2f} ms, fast {1e3 * row['fast_s']:.2f} ms, "
                f"torch.nn {1e3 * row['theirs_s']:.2f} ms [{row['repeats']} repeats]"
            )
    done = [r for r in triton["rows"] if "error" not in r]
    if done:
        print_table(
            f"Triton engine, T={args.length}, B={args.batch}, float32, with RecordNorms",
            ["cell", "H", "check", "triton (ms)", "fast (ms)", "torch.nn (ms)", "triton / torch"],
            [
                [
                    r["cell"],
                    str(r["hidden"]),
                    "agree" if r["check"]["agree"] else "DISAGREE",
                    f"{1e3 * r['triton_s']:.2f}",
                    f"{1e3 * r['fast_s']:.2f}",
                    f"{1e3 * r['theirs_s']:.2f}",
                    f"{r['triton_over_theirs']:.2f}x",
                ]
                for r in done
            ],
        )


def stacked_runs(run: Session) -> None:
    """K runs stacked against K runs one after another (engine "auto", RecordNorms on
    each run), a training step of all K."""
    args, budget = run.args, run.budget
    table = run.results["stacked"]
    if args.no_stack:
        run.skip("the stacked runs (--no-stack)")
        return
    last = 0.0
    for hidden in args.stack_hidden:
        for kind in args.cells:
            if budget.left() <= 0 or budget.left() < 1.5 * last:
                run.skip(f"stacked {kind} H={hidden}: {budget.left_text()}")
                continue
            row = run.attempt(
                "stacked",
                kind,
                hidden,
                table,
                lambda kind=kind, hidden=hidden: stacked_row(
                    kind, args, hidden, run.device, budget
                ),
            )
            if row is None:
                continue
            last = row["wall_s"]
            say(
                f"stacked {kind} H={hidden} K={row['k']}: "
                f"{'agree' if row['check']['agree'] else 'DISAGREE'}; stacked "
                f"{1e3 * row['stacked_s']:.1f} ms, separate {1e3 * row['separate_s']:.1f} ms, "
                f"{row['speedup']:.2f}x [{row['repeats']} repeats]"
            )
    done = [r for r in table if "error" not in r]
    if done:
        print_table(
            f"K={args.stack} runs stacked against separate, T={args.length}, B={args.batch}",
            ["cell", "H", "check", "stacked (ms)", "separate (ms)", "separate / stacked"],
            [
                [
                    r["cell"],
                    str(r["hidden"]),
                    "agree" if r["check"]["agree"] else "DISAGREE",
                    f"{1e3 * r['stacked_s']:.1f}",
                    f"{1e3 * r['separate_s']:.1f}",
                    f"{r['speedup']:.2f}x",
                ]
                for r in done
            ],
        )


def graphed_loop(run: Session) -> None:
    """The fast loop captured as CUDA graphs against uncaptured (:func:`graphs_row`),
    at the smallest H of the table (where launches weigh most) and the largest."""
    args, budget = run.args, run.budget
    table = run.results["graphs"]
    if args.no_graphs:
        run.skip("the CUDA graphs' rows (--no-graphs)")
        return
    last = 0.0
    for hidden in sorted({min(args.hidden), max(args.hidden)}):
        for kind in args.cells:
            if budget.left() <= 0 or budget.left() < 1.5 * last:
                run.skip(f"graphs {kind} H={hidden}: {budget.left_text()}")
                continue
            row = run.attempt(
                "graphs",
                kind,
                hidden,
                table,
                lambda kind=kind, hidden=hidden: graphs_row(kind, args, hidden, run.device, budget),
            )
            if row is None:
                continue
            last = row["wall_s"]
            say(
                f"graphs {kind} H={hidden}: {'agree' if row['check']['agree'] else 'DISAGREE'} "
                f"(max rel diff {row['check']['worst']:.1e}); captured "
                f"{1e3 * row['captured_s']:.2f} ms, uncaptured {1e3 * row['uncaptured_s']:.2f} ms, "
                f"{row['speedup']:.2f}x [{row['repeats']} repeats]"
            )


def flashrnn_peer(run: Session) -> None:
    """FlashRNN where it imports and runs; otherwise one line that says why not."""
    args, budget = run.args, run.budget
    flash = run.results["flashrnn"]
    fn, gates, reason = (None, {}, "--no-flashrnn") if args.no_flashrnn else load_flashrnn()
    if fn is not None and run.device.type != "cuda":
        fn, reason = None, f"it runs on CUDA only, the device is {run.device}"
    if fn is None:
        flash["reason"] = reason
        say(f"FlashRNN skipped: {reason}")
        return
    flash["available"] = True
    ours_by = {(r["cell"], r["hidden"]): r for r in run.results["rows"] if "error" not in r}
    needed = 60.0  # its first call at each size compiles CUDA code: it can take minutes
    for hidden in args.hidden:
        for kind in args.cells:
            if budget.left() < needed:
                run.skip(f"FlashRNN {kind} H={hidden}: {budget.left_text()}")
                continue
            if flash["rows"] and all("error" in r for r in flash["rows"]):
                break  # it ran nowhere so far: more tries would only spend the budget
            row = run.attempt(
                "FlashRNN",
                kind,
                hidden,
                flash["rows"],
                lambda kind=kind, hidden=hidden: flashrnn_row(
                    fn, gates, kind, args, hidden, run.device, budget
                ),
            )
            if row is None:
                continue
            needed = max(needed, 1.5 * (row["first_call_s"] + sum(row["flashrnn_times"])))
            ours = ours_by.get((kind, hidden))
            if ours is not None:
                row["ours_s"] = ours["ours_s"]
                row["ratio"] = ours["ours_s"] / row["flashrnn_s"]
                run.save()
            say(
                f"FlashRNN {kind} H={hidden} ({row['backend']}): "
                f"{1e3 * row['flashrnn_s']:.2f} ms (first call {row['first_call_s']:.1f} s)"
            )
    timed_rows = [r for r in flash["rows"] if "error" not in r]
    if flash["rows"] and not timed_rows:
        flash["reason"] = "it ran in no configuration: " + flash["rows"][0]["error"]
        say(f"FlashRNN skipped: {flash['reason']}")
    if timed_rows:
        print_table(
            f"FlashRNN (timing only, its own weights), T={args.length}, B={args.batch}",
            ["cell", "H", "backend", "FlashRNN (ms)", "bptt fast (ms)", "ours / FlashRNN"],
            [
                [
                    r["cell"],
                    str(r["hidden"]),
                    r["backend"],
                    f"{1e3 * r['flashrnn_s']:.2f}",
                    f"{1e3 * r['ours_s']:.2f}" if "ours_s" in r else "-",
                    f"{r['ratio']:.2f}x" if "ratio" in r else "-",
                ]
                for r in timed_rows
            ],
        )


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; return the results (as written to ``--json``)."""
    args = parse(argv)
    device = torch.device(args.device)
    env = environment(device)
    say(
        f"torch {env['torch']} (CUDA {env['torch_cuda']}, cuDNN {env['cudnn']}), "
        f"python {env['python']}, device {device}: {env['device_name']}"
    )
    if device.type == "cuda" and not torch.cuda.is_available():
        say(
            f"CUDA is not available to torch {torch.__version__} (built for CUDA "
            f"{torch.version.cuda}); nothing timed. On a CPU: --device cpu --smoke"
        )
        raise SystemExit(2)
    run = Session(args, device, env)
    run.results["tf32"] = tf32 = disable_tf32()
    say(
        f"training step (forward + backward, loss at the last step), float32, "
        f"T={args.length}, B={args.batch}, F={args.features}, H={args.hidden}, "
        f"median of {args.repeats} after a warm-up; budget {args.budget_s:.0f} s"
    )
    say(
        "TF32 off for the checks and the timings ("
        + ", ".join(f"{k}={v}" for k, v in tf32.items())
        + ")"
    )
    if device.type == "cpu":
        say(f"{torch.get_num_threads()} CPU threads")
    run.save()
    against_torch(run)
    graphed_loop(run)
    triton_engine(run)
    stacked_runs(run)
    generic_engine(run)
    flashrnn_peer(run)
    results = run.results
    every = results["rows"] + results["generic"] + results["triton"]["rows"]
    every += results["stacked"] + results["graphs"]
    checked = [r for r in every if "error" not in r]
    results["all_agree"] = bool(checked) and all(r["check"]["agree"] for r in checked)
    results["errors"] = sum("error" in r for r in every)
    run.save()
    say(
        f"done in {run.budget.used():.0f} s; checks: "
        + (
            "all agree"
            if results["all_agree"]
            else "NOT ALL AGREE (see above)"
            if checked
            else "none ran"
        )
        + (f"; {results['errors']} row(s) failed" if results["errors"] else "")
        + (f"; JSON: {args.json}" if args.json else "")
    )
    return results


if __name__ == "__main__":
    outcome = main()
    raise SystemExit(0 if outcome["all_agree"] and not outcome["errors"] else 1)
