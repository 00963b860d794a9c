"""Echo state networks: ReservoirPy and bptt side by side in one process.

1. Mackey-Glass, the same configuration for both (1000 units, spectral radius 1.25,
   leak 0.3, density 0.1, ridge 1e-6; 10,000 steps, the first 7,000 for training,
   one-step-ahead prediction), 5 seeds: time to build, run and fit, and test NRMSE.
   Each library draws its own weights from the configuration.
2. Japanese Vowels, identical weights (ours copied from ReservoirPy's reservoir), so the
   predicted speakers must agree: time to run all 270 + 370 utterances and fit the
   readout on their mean states. ReservoirPy runs the list of series; bptt runs them
   as one batch. The hyperparameters are the ones chosen on a validation split by
   ``benchmarks/esn_vowels.py``.

    python benchmarks/esn.py
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from bptt.reservoir import Reservoir, Ridge, japanese_vowels, mackey_glass

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from reservoirpy.nodes import Reservoir as RpyReservoir
    from reservoirpy.nodes import Ridge as RpyRidge

VOWELS = {"units": 500, "sr": 0.5, "lr": 0.3, "input_scaling": 0.3, "ridge": 1e-4}


def _settled_clock() -> float:
    """perf_counter after a short idle: NumPy's OpenBLAS workers spin for a while after
    each call and were measured to slow whatever runs next on this 2-core machine by
    2-3x, so each side is timed from a quiet start, not in the other's wake."""
    time.sleep(0.3)
    return time.perf_counter()


def nrmse(prediction: np.ndarray, target: np.ndarray) -> float:
    return float(np.sqrt(np.mean((prediction - target) ** 2)) / target.std())


def mackey_glass_pair(seed: int) -> dict[str, float]:
    series = mackey_glass(10_000, seed=seed).numpy()
    x, y, cut = series[:-1], series[1:], 7000
    start = _settled_clock()
    theirs = RpyReservoir(1000, lr=0.3, sr=1.25, rc_connectivity=0.1, seed=seed)
    readout = RpyRidge(ridge=1e-6)
    states = theirs.run(x)
    readout.fit(states[:cut], y[:cut], warmup=100)
    predicted = readout.run(states[cut:])
    their_time = time.perf_counter() - start
    their_error = nrmse(predicted, y[cut:])

    start = _settled_clock()
    ours = Reservoir(1000, spectral_radius=1.25, leak_rate=0.3, density=0.1, seed=seed)
    states = ours.run(torch.from_numpy(x)[None], reset=True)
    our_readout = Ridge(1e-6).fit(states[:, :cut], torch.from_numpy(y[:cut])[None], washout=100)
    predicted = our_readout.predict(states[0, cut:]).numpy()
    our_time = time.perf_counter() - start
    return {
        "theirs_s": their_time,
        "ours_s": our_time,
        "theirs_nrmse": their_error,
        "ours_nrmse": nrmse(predicted, y[cut:]),
    }


def vowels_pair(seed: int) -> dict[str, float]:
    data = japanese_vowels()
    x_train, l_train, y_train = data["train"]
    x_test, l_test, y_test = data["test"]
    as_list = lambda x, lengths: [x[i, : int(n)].numpy() for i, n in enumerate(lengths)]  # noqa: E731
    train_list, test_list = as_list(x_train, l_train), as_list(x_test, l_test)
    onehot = np.eye(9)[y_train.numpy()]

    start = _settled_clock()
    theirs = RpyReservoir(
        VOWELS["units"],
        lr=VOWELS["lr"],
        sr=VOWELS["sr"],
        input_scaling=VOWELS["input_scaling"],
        seed=seed,
    )
    theirs.initialize(train_list[0])  # weights drawn; the state stays at zero
    features = np.stack([s.mean(0) for s in theirs.run(train_list)])
    readout = RpyRidge(ridge=VOWELS["ridge"])
    readout.fit(features, onehot)
    theirs.reset()  # each test series from zero, as ours (run carries the state over)
    test_features = np.stack([s.mean(0) for s in theirs.run(test_list)])
    their_labels = readout.run(test_features).argmax(-1)
    their_time = time.perf_counter() - start

    start = _settled_clock()
    ours = Reservoir(
        VOWELS["units"],
        leak_rate=VOWELS["lr"],
        W=theirs.W.toarray(),
        W_in=theirs.Win.toarray(),
        bias=theirs.bias,
    )
    # the mean states straight from the loop (Reservoir.features): no (B, T, N) states
    our_readout = Ridge(VOWELS["ridge"]).fit(
        ours.features(x_train, l_train), torch.from_numpy(onehot)
    )
    our_labels = our_readout.predict(ours.features(x_test, l_test)).argmax(-1).numpy()
    our_time = time.perf_counter() - start
    return {
        "theirs_s": their_time,
        "ours_s": our_time,
        "theirs_errors": int((their_labels != y_test.numpy()).sum()),
        "ours_errors": int((our_labels != y_test.numpy()).sum()),
        "agree": int((their_labels == our_labels).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    console = Console(width=130)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mackey_glass_pair(100)  # warm-up (imports, caches)
        mg = [mackey_glass_pair(seed) for seed in range(args.seeds)]
        vowels = [vowels_pair(seed) for seed in range(args.seeds)]
    mg_title = "Mackey-Glass, 1000 units, sr 1.25, leak 0.3, density 0.1, ridge 1e-6"
    console.print(
        _speed_table(
            mg_title,
            mg,
            {
                "ReservoirPy NRMSE": lambda row: f"{row['theirs_nrmse']:.2e}",
                "bptt NRMSE": lambda row: f"{row['ours_nrmse']:.2e}",
            },
        )
    )
    vowels_title = (
        f"Japanese Vowels, identical weights, {VOWELS['units']} units, run 640 utterances and fit"
    )
    console.print(
        _speed_table(
            vowels_title,
            vowels,
            {
                "errors (RPy / bptt)": lambda row: f"{row['theirs_errors']} / {row['ours_errors']}",
                "same label": lambda row: f"{row['agree']}/370",
            },
        )
    )


def _speed_table(title: str, rows: list[dict], extra: dict) -> Table:
    """Per seed: both times, the speed-up, then the ``extra`` columns (name -> cell)."""
    table = Table(title=title)
    for column in ("seed", "ReservoirPy s", "bptt s", "speed-up", *extra):
        table.add_column(column, justify="right")
    for seed, row in enumerate(rows):
        table.add_row(
            str(seed),
            f"{row['theirs_s']:.3f}",
            f"{row['ours_s']:.3f}",
            f"{row['theirs_s'] / row['ours_s']:.1f}x",
            *(cell(row) for cell in extra.values()),
        )
    return table


if __name__ == "__main__":
    main()
