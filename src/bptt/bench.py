"""``bptt bench``: a matrix of cells x tasks x lengths x seeds, trained and tabulated.

The default is the quick matrix of the README's main job: the tanh RNN against the
LSTM on the adding problem at two lengths. Runs go one after another in this
process; each writes its own run directory under the bench directory.
"""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from bptt._io import atomic_write_text
from bptt.config import TrainConfig
from bptt.train import make_progress, train

__all__ = ["BenchSpec", "results_table", "run_bench"]

ROW_FIELDS = (
    "task",
    "length",
    "cell",
    "seed",
    "steps",
    "final_loss",
    "baseline_loss",
    "solved",
    "solved_step",
    "wall_s",
)


@dataclass
class BenchSpec:
    """The matrix to run.

    Attributes:
        cells: cell names.
        tasks: task names.
        lengths: task lengths.
        seeds: seeds; each (cell, task, length) runs once per seed.
        base: other config fields shared by every run (e.g. steps, hidden, lr).
    """

    cells: tuple[str, ...] = ("rnn", "lstm")
    tasks: tuple[str, ...] = ("adding",)
    lengths: tuple[int, ...] = (10, 50)
    seeds: tuple[int, ...] = (0,)
    base: dict[str, Any] = field(default_factory=lambda: {"steps": 1500})

    def configs(self, out_dir: Path | None) -> list[TrainConfig]:
        """One validated config per cell of the matrix (errors before anything runs)."""
        configs = []
        for task, length, cell, seed in itertools.product(
            self.tasks, self.lengths, self.cells, self.seeds
        ):
            name = f"{task}-T{length}-{cell}-s{seed}"
            out = None if out_dir is None else str(out_dir / name)
            values = {**self.base, "task": task, "length": length, "cell": cell, "seed": seed}
            configs.append(TrainConfig.from_dict({**values, "out": out}))
        return configs


def run_bench(
    spec: BenchSpec, out_dir: str | Path | None, *, progress: bool = True, overwrite: bool = False
) -> list[dict[str, Any]]:
    """Train every run of the matrix; write ``bench.csv`` and ``bench.json`` to out_dir.

    Returns:
        One row per run with the keys of ``ROW_FIELDS``.
    """
    out_path = None if out_dir is None else Path(out_dir)
    configs = spec.configs(out_path)
    rows = []
    display = make_progress() if progress else None
    if display is not None:
        display.start()
    try:
        for config in configs:
            result = train(config, progress=display or False, overwrite=overwrite)
            rows.append({k: result.summary.get(k) for k in ROW_FIELDS})
    finally:
        if display is not None:
            display.stop()
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_path / "bench.json", json.dumps(rows, indent=2) + "\n")
        with open(out_path / "bench.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=ROW_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    return rows


_HEADERS = {"length": "T", "final_loss": "final", "baseline_loss": "baseline", "solved_step": "at"}


def results_table(rows: list[dict[str, Any]]) -> Table:
    """A rich table of bench rows (``at``: the first evaluated step that was solved)."""
    table = Table(title="bptt bench")
    for name in ROW_FIELDS:
        justify = "left" if name in ("task", "cell") else "right"
        table.add_column(_HEADERS.get(name, name), justify=justify, no_wrap=True)
    for row in rows:
        table.add_row(*(_cell_text(row[name]) for name in ROW_FIELDS))
    return table


def _cell_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
