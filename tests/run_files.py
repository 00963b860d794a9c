"""Reading a run directory back in tests: its parameters and its logged rows."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

ROW_COLUMNS = ("step", "loss", "grad_norm", "clip_threshold", "test_loss")


def params(run_dir: Path) -> dict[str, torch.Tensor]:
    """The final model's state_dict (``model.pt``)."""
    return torch.load(run_dir / "model.pt", weights_only=True)


def rows(run_dir: Path, columns: tuple[str, ...] = ROW_COLUMNS) -> list[tuple[str, ...]]:
    """The given columns of every row of ``metrics.csv``, as written."""
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [tuple(row[c] for c in columns) for row in csv.DictReader(handle)]


def assert_same_run(ours: Path, theirs: Path) -> None:
    """Bit for bit the same final parameters and the same logged rows, each once."""
    mine, reference = params(ours), params(theirs)
    assert mine.keys() == reference.keys()
    for name in reference:
        assert torch.equal(mine[name], reference[name]), name
    assert rows(ours) == rows(theirs)
