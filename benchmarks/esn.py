"""Echo state networks: ReservoirPy and bptt side by side in one process.

1. Mackey-Glass, the same configuration for both (1000 units, spectral radius 1.25,
   leak 0.3, density 0.1, ridge 1e-6; 10,000 steps, the first 7,000 for training,
   one-step-ahead prediction), 5 seeds: time to build the reservoir (draw W and W_in,
   scale W to its spectral radius), time to run and fit, and test NRMSE. Each library
   draws its own weights from the configuration.
2. Japanese Vowels, identical weights (ours copied from ReservoirPy's reservoir), so the
   predicted speakers must agree: time to run all 270 + 370 utterances and fit the
   readout on their mean states (building the reservoirs is not timed). ReservoirPy
   runs the list of series; bptt runs them as one batch, with float64 states and again
   with float32 states (the readout is solved in float64 either way). The
   hyperparameters are the ones chosen on a validation split by
   ``benchmarks/esn_vowels.py``.

bptt uses both cores (numba's and torch's threads); ReservoirPy's loop runs on one
(NumPy's BLAS threads only in its readout).

Each seed's run + fit is timed ``--repeats`` times on each side, the two sides taking
turns, and the fastest of each side is reported (as ``timeit`` advises: the slower
repeats measure what else the host was doing; on this 2-core VM the same call varied
by 2x). Every repeat starts from a zero state, on the weights its side was built with.

    python benchmarks/esn.py [--seeds 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from bptt.reservoir import Reservoir, Ridge, japanese_vowels, mackey_glass
from bptt.run import ESN_TASK_DEFAULTS

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from reservoirpy.nodes import Reservoir as RpyReservoir
    from reservoirpy.nodes import Ridge as RpyRidge

_CHOSEN = ESN_TASK_DEFAULTS["japanese-vowels"]  # bptt esn's defaults, from esn_vowels.py
VOWELS = {
    "units": _CHOSEN["units"],
    "sr": _CHOSEN["spectral_radius"],
    "lr": _CHOSEN["leak_rate"],
    "input_scaling": _CHOSEN["input_scaling"],
    "ridge": _CHOSEN["ridge"],
}


def _settled_clock() -> float:
    """perf_counter after a short idle: NumPy's OpenBLAS workers spin for a while after
    each call and were measured to slow whatever runs next on this 2-core machine by
    2-3x, so each side is timed from a quiet start, not in the other's wake."""
    time.sleep(0.3)
    return time.perf_counter()


def nrmse(prediction: np.ndarray, target: np.ndarray) -> float:
    return float(np.sqrt(np.mean((prediction - target) ** 2)) / target.std())


def _fastest(sides: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple]:
    """Each side's fastest time over ``repeats`` calls, the sides taking turns, and
    what its first call returned: {name: (seconds, result)}."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    results = {}
    for _ in range(repeats):
        for name, call in sides.items():
            start = _settled_clock()
            result = call()
            times[name].append(time.perf_counter() - start)
            results.setdefault(name, result)
    return {name: (min(times[name]), results[name]) for name in sides}


def mackey_glass_pair(seed: int, repeats: int) -> dict[str, float]:
    series = mackey_glass(10_000, seed=seed).numpy()
    x, y, cut = series[:-1], series[1:], 7000
    start = _settled_clock()
    theirs = RpyReservoir(1000, lr=0.3, sr=1.25, rc_connectivity=0.1, seed=seed)
    theirs.initialize(x[:1])  # draws W and W_in (else the first run would)
    their_build = time.perf_counter() - start
    start = _settled_clock()
    ours = Reservoir(
        1000, spectral_radius=1.25, leak_rate=0.3, density=0.1, seed=seed, input_size=1
    )
    our_build = time.perf_counter() - start

    def their_run_and_fit() -> np.ndarray:
        theirs.reset()
        readout = RpyRidge(ridge=1e-6)
        states = theirs.run(x)
        readout.fit(states[:cut], y[:cut], warmup=100)
        return readout.run(states[cut:])

    def our_run_and_fit() -> np.ndarray:
        states = ours.run(torch.from_numpy(x)[None], reset=True)
        target = torch.from_numpy(y[:cut])[None]
        readout = Ridge(1e-6).fit(states[:, :cut], target, washout=100)
        return readout.predict(states[0, cut:]).numpy()

    timed = _fastest({"theirs": their_run_and_fit, "ours": our_run_and_fit}, repeats)
    return {
        "theirs_build_s": their_build,
        "ours_build_s": our_build,
        "theirs_s": timed["theirs"][0],
        "ours_s": timed["ours"][0],
        "theirs_nrmse": nrmse(timed["theirs"][1], y[cut:]),
        "ours_nrmse": nrmse(timed["ours"][1], y[cut:]),
    }


def vowels_pair(seed: int, repeats: int) -> dict[str, float]:
    data = japanese_vowels()
    x_train, l_train, y_train = data["train"]
    x_test, l_test, y_test = data["test"]
    as_list = lambda x, lengths: [x[i, : int(n)].numpy() for i, n in enumerate(lengths)]  # noqa: E731
    train_list, test_list = as_list(x_train, l_train), as_list(x_test, l_test)
    onehot = np.eye(9)[y_train.numpy()]

    theirs = RpyReservoir(
        VOWELS["units"],
        lr=VOWELS["lr"],
        sr=VOWELS["sr"],
        input_scaling=VOWELS["input_scaling"],
        seed=seed,
    )
    theirs.initialize(train_list[0])  # weights drawn (not timed); the state stays at zero

    def their_run_and_fit() -> np.ndarray:
        theirs.reset()
        features = np.stack([s.mean(0) for s in theirs.run(train_list)])
        readout = RpyRidge(ridge=VOWELS["ridge"])
        readout.fit(features, onehot)
        theirs.reset()  # each test series from zero, as ours (run carries the state over)
        test_features = np.stack([s.mean(0) for s in theirs.run(test_list)])
        return readout.run(test_features).argmax(-1)

    def our_run_and_fit(ours: Reservoir) -> np.ndarray:
        # the mean states straight from the loop (Reservoir.features): no (B, T, N) states
        readout = Ridge(VOWELS["ridge"]).fit(
            ours.features(x_train, l_train), torch.from_numpy(onehot)
        )
        return readout.predict(ours.features(x_test, l_test)).argmax(-1).numpy()

    sides = {"theirs": their_run_and_fit}
    for name, dtype in (("ours", torch.float64), ("ours32", torch.float32)):
        ours = Reservoir(
            VOWELS["units"],
            leak_rate=VOWELS["lr"],
            W=theirs.W.toarray(),
            W_in=theirs.Win.toarray(),
            bias=theirs.bias,
            dtype=dtype,
        )  # given the weights (not timed, as theirs)
        sides[name] = lambda ours=ours: our_run_and_fit(ours)
    timed = _fastest(sides, repeats)
    their_labels = timed["theirs"][1]
    row = {}
    for name, (seconds, labels) in timed.items():
        row[f"{name}_s"] = seconds
        row[f"{name}_errors"] = int((labels != y_test.numpy()).sum())
        row[f"{name}_agree"] = int((their_labels == labels).sum())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per side and seed")
    args = parser.parse_args()
    if args.seeds < 1 or args.repeats < 1:
        parser.error("--seeds and --repeats must be at least 1")
    console = Console(width=150)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mackey_glass_pair(100, 1)  # warm-up (imports, compilation, caches)
        mg = [mackey_glass_pair(seed, args.repeats) for seed in range(args.seeds)]
        vowels_pair(100, 1)
        vowels = [vowels_pair(seed, args.repeats) for seed in range(args.seeds)]
    console.print(
        _table(
            "Mackey-Glass, 1000 units, sr 1.25, leak 0.3, density 0.1, ridge 1e-6 "
            f"(each its own draw; run+fit fastest of {args.repeats})",
            mg,
            {
                "build s (RPy / bptt)": lambda r: (
                    f"{r['theirs_build_s']:.3f} / {r['ours_build_s']:.3f}"
                ),
                "run+fit s (RPy / bptt)": lambda r: f"{r['theirs_s']:.3f} / {r['ours_s']:.3f}",
                "speed-up run+fit": lambda r: f"{r['theirs_s'] / r['ours_s']:.1f}x",
                "speed-up with build": lambda r: _ratio(r, "theirs_build_s", "ours_build_s"),
                "NRMSE (RPy / bptt)": lambda r: f"{r['theirs_nrmse']:.2e} / {r['ours_nrmse']:.2e}",
            },
        )
    )
    console.print(
        _table(
            f"Japanese Vowels, identical weights, {VOWELS['units']} units, "
            f"run 640 utterances and fit (the fastest of {args.repeats})",
            vowels,
            {
                "RPy s": lambda r: f"{r['theirs_s']:.3f}",
                "bptt s (f64 / f32)": lambda r: f"{r['ours_s']:.3f} / {r['ours32_s']:.3f}",
                "speed-up f64": lambda r: f"{r['theirs_s'] / r['ours_s']:.1f}x",
                "speed-up f32": lambda r: f"{r['theirs_s'] / r['ours32_s']:.1f}x",
                "errors (RPy / f64 / f32)": lambda r: (
                    f"{r['theirs_errors']:.3g} / {r['ours_errors']:.3g} / {r['ours32_errors']:.3g}"
                ),
                "same label (f64 / f32)": lambda r: (
                    f"{r['ours_agree']:.4g} / {r['ours32_agree']:.4g}"
                ),
            },
        )
    )


def _ratio(row: dict, their_build: str, our_build: str) -> str:
    total = lambda side, build: row[f"{side}_s"] + row[build]  # noqa: E731
    return f"{total('theirs', their_build) / total('ours', our_build):.1f}x"


def _table(title: str, rows: list[dict], columns: dict) -> Table:
    """One row per seed and a last row of means; ``columns`` maps a header to the
    function that formats a row's cell."""
    table = Table(title=title)
    for header in ("seed", *columns):
        table.add_column(header, justify="right")
    for seed, row in enumerate(rows):
        table.add_row(str(seed), *(cell(row) for cell in columns.values()))
    mean = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
    table.add_row("mean", *(cell(mean) for cell in columns.values()))
    return table


if __name__ == "__main__":
    main()
