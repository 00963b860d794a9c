"""The run directory every training leaves: config, metrics, summary and model.

Layout::

    RUN_DIR/config.toml        the validated configuration, enough to rerun the run
    RUN_DIR/metrics.csv        one row per logged step, flushed as it is written
    RUN_DIR/diagnostics.jsonl  diagnoses during training (``diagnose_every``)
    RUN_DIR/summary.json       the outcome (written at the end)
    RUN_DIR/model.pt           the final model's state_dict (load with weights_only=True)
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from torch import nn

from bptt._io import atomic_torch_save, atomic_write_text
from bptt.config import TrainConfig

__all__ = ["METRIC_FIELDS", "RUN_FILES", "RunDirectory"]

METRIC_FIELDS = (
    "step",
    "loss",
    "grad_norm",
    "clip_threshold",
    "clipped",
    "nonfinite",
    "lr",
    "test_loss",
    "wall_s",
    "rollbacks",
)
RUN_FILES = ("config.toml", "metrics.csv", "diagnostics.jsonl", "summary.json", "model.pt")


class RunDirectory:
    """Writes one run's files.

    Args:
        path: the directory; created if missing.
        overwrite: allow a directory that already holds a run's files; they are
            removed first, so no file of the earlier run is left beside the new ones.
        resume: open a run's directory to continue it (see :meth:`rewind`).

    Raises:
        FileExistsError: the directory already holds a run and overwrite is False.
        OSError: the directory cannot be created or written.
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False, resume: bool = False) -> None:
        self.path = Path(path)
        self._metrics_file = None
        self._writer: csv.DictWriter | None = None
        if resume:
            return
        existing = [self.path / name for name in RUN_FILES if (self.path / name).exists()]
        if self.path.joinpath("checkpoints").is_dir():
            existing += sorted(self.path.joinpath("checkpoints").iterdir())
        if existing and not overwrite:
            raise FileExistsError(
                f"{self.path} already holds a run ({existing[0].name}); choose another "
                "directory or overwrite it"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in existing:
            stale.unlink()

    def rewind(self, step: int, metrics_before: int | None = None) -> None:
        """Forget what was logged after ``step`` (a resumed run logs it again).

        Keeps the rows of ``metrics.csv`` and the lines of ``diagnostics.jsonl`` up to
        ``step`` (metrics rows only below ``metrics_before`` if given), appends after
        them from now on, and removes the outcome files of the interrupted attempt.
        """
        last_row = step if metrics_before is None else min(step, metrics_before - 1)
        metrics = self.path / "metrics.csv"
        if metrics.exists():
            with open(metrics, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                fields = list(reader.fieldnames or [])
                rows = [row for row in reader if row.get("step") and int(row["step"]) <= last_row]
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
            atomic_write_text(metrics, text.getvalue())
            if fields:
                self._metrics_file = open(metrics, "a", newline="", encoding="utf-8")
                self._writer = csv.DictWriter(self._metrics_file, fieldnames=fields)
        diagnostics = self.path / "diagnostics.jsonl"
        if diagnostics.exists():
            kept = [
                line
                for line in diagnostics.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step
            ]
            atomic_write_text(diagnostics, "".join(line + "\n" for line in kept))
        for outcome in ("summary.json", "model.pt"):
            (self.path / outcome).unlink(missing_ok=True)

    def write_config(self, config: TrainConfig) -> None:
        """Save ``config.toml``."""
        atomic_write_text(self.path / "config.toml", config.to_toml())

    def log(self, row: dict[str, Any]) -> None:
        """Append one row to ``metrics.csv`` and flush it.

        The columns are fixed by the first row: :data:`METRIC_FIELDS`, then the row's
        other keys in their order (the monitor's). Later rows fill the same columns.
        """
        if self._writer is None:
            fields = [*METRIC_FIELDS, *(k for k in row if k not in METRIC_FIELDS)]
            path = self.path / "metrics.csv"
            self._metrics_file = open(path, "w", newline="", encoding="utf-8")
            self._writer = csv.DictWriter(self._metrics_file, fieldnames=fields)
            self._writer.writeheader()
        self._writer.writerow({k: _csv_value(row.get(k)) for k in self._writer.fieldnames})
        self._metrics_file.flush()

    def append_json(self, name: str, record: dict[str, Any]) -> None:
        """Append one JSON line to ``name`` (e.g. ``diagnostics.jsonl``) and flush it."""
        with open(self.path / name, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Save ``summary.json``."""
        atomic_write_text(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")

    def save_model(self, model: nn.Module) -> None:
        """Save the model's state_dict as ``model.pt``."""
        atomic_torch_save(model.state_dict(), self.path / "model.pt")

    def close(self) -> None:
        """Close the metrics file."""
        if self._metrics_file is not None:
            self._metrics_file.close()
            self._metrics_file = None
            self._writer = None


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return repr(value)
    return value
