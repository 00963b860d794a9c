"""``bptt bench``: groups of training runs, trained one after another and tabulated.

The default is the quick benchmark of the README's main job:

* ``cells``: the tanh RNN against the LSTM on the adding problem at two lengths;
* ``clipping``: the same seed trained three ways, without clipping, with the global
  norm clipped at 1 and with AutoClip, in a configuration that diverges without
  clipping (an LSTM under Nesterov SGD at learning rate 0.5: the gradient explodes
  within the first steps and the weights become NaN); clipped, it learns the task
  (test MSE near 0.01 against the baseline 0.167).

Each run writes its own run directory under the bench directory.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from bptt.run._config import TrainConfig
from bptt.run._fields import ConfigError
from bptt.run._io import atomic_write_text
from bptt.run._train import json_safe, make_progress, train

__all__ = ["CLIP_DEMO", "BenchSpec", "results_table", "run_bench"]

ROW_FIELDS = (
    "group",
    "task",
    "length",
    "method",
    "cell",
    "clip",
    "seed",
    "steps",
    "final_loss",
    "baseline_loss",
    "solved",
    "solved_step",
    "nonfinite_steps",
    "diverged",
    "wall_s",
)

# Diverges without clipping on seed 0 (NaN by step 15), learns with it (measured).
CLIP_DEMO = {
    "task": "adding",
    "length": 10,
    "cell": "lstm",
    "optimizer": "sgd",
    "lr": 0.5,
    "momentum": 0.9,
    "steps": 1000,
}
CLIP_DEMO_VARIANTS = ({"clip": "none"}, {"clip": "norm", "clip_norm": 1.0}, {"clip": "percentile"})


@dataclass
class BenchSpec:
    """The runs to make.

    Attributes:
        cells, tasks, lengths, seeds: the ``cells`` group is their product.
        methods: recipes of :mod:`bptt.run._recipes`; the ``methods`` group is their
            product with the tasks, lengths and seeds.
        base: config fields shared by the ``cells`` group (e.g. steps, hidden).
        clip_demo: whether to add the ``clipping`` group (on the first seed).
    """

    cells: tuple[str, ...] = ("rnn", "lstm")
    tasks: tuple[str, ...] = ("adding",)
    lengths: tuple[int, ...] = (10, 50)
    seeds: tuple[int, ...] = (0,)
    base: dict[str, Any] = field(default_factory=lambda: {"steps": 1500})
    clip_demo: bool = True
    methods: tuple[str, ...] = ()

    def runs(self) -> list[tuple[str, dict[str, Any]]]:
        """(group, config fields) for every run, in order."""
        runs = [
            ("cells", {**self.base, "task": task, "length": length, "cell": cell, "seed": seed})
            for task, length, cell, seed in itertools.product(
                self.tasks, self.lengths, self.cells, self.seeds
            )
        ]
        runs += [
            ("methods", {**self.base, "task": task, "length": length, "method": m, "seed": seed})
            for task, length, m, seed in itertools.product(
                self.tasks, self.lengths, self.methods, self.seeds
            )
        ]
        if self.clip_demo:
            runs += [
                ("clipping", {**CLIP_DEMO, **variant, "seed": self.seeds[0]})
                for variant in CLIP_DEMO_VARIANTS
            ]
        return runs

    def configs(self, out_dir: Path | None) -> list[tuple[str, TrainConfig]]:
        """Validated configs (every error before anything runs), with run directories."""
        configs, names = [], set()
        for group, values in self.runs():
            config = TrainConfig.from_dict(values)
            recipe = config.method or f"{config.cell}-{config.clip}"
            name = f"{group}-{config.task}-T{config.length}-{recipe}-s{config.seed}"
            if name in names:
                raise ConfigError("bench", f"the run {name} is listed twice")
            names.add(name)
            out = None if out_dir is None else str(out_dir / name)
            configs.append((group, config.replace(out=out)))
        return configs


def run_bench(
    spec: BenchSpec, out_dir: str | Path | None, *, progress: bool = True, overwrite: bool = False
) -> list[dict[str, Any]]:
    """Train every run; write ``bench.csv`` and ``bench.json`` to out_dir.

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
        for group, config in configs:
            result = train(config, progress=display or False, overwrite=overwrite)
            rows.append({"group": group, **{k: result.summary.get(k) for k in ROW_FIELDS[1:]}})
    finally:
        if display is not None:
            display.stop()
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
        safe = [json_safe(row) for row in rows]
        atomic_write_text(out_path / "bench.json", json.dumps(safe, indent=2) + "\n")
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=ROW_FIELDS)
        writer.writeheader()
        writer.writerows(safe)
        atomic_write_text(out_path / "bench.csv", table.getvalue())
    return rows


_HEADERS = {
    "length": "T",
    "final_loss": "final",
    "baseline_loss": "baseline",
    "solved_step": "at",
    "nonfinite_steps": "NaN steps",
}
_TABLE_FIELDS = tuple(f for f in ROW_FIELDS if f not in ("steps", "diverged"))


def results_table(rows: list[dict[str, Any]]) -> Table:
    """A rich table of bench rows (``at``: the first evaluated step that was solved)."""
    table = Table(title="bptt bench")
    for name in _TABLE_FIELDS:
        justify = "left" if name in ("group", "task", "cell", "clip") else "right"
        table.add_column(_HEADERS.get(name, name), justify=justify, no_wrap=True)
    for row in rows:
        table.add_row(*(_cell_text(row[name]) for name in _TABLE_FIELDS))
    return table


def _cell_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
