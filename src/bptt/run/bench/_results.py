"""A bench's results: one row per run (``results.csv``) and the leaderboard.

Every row is read from the run's own ``summary.json``, so a run that was skipped
because it had finished gives the same row as when it ran.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from bptt.run.bench._plan import PlannedRun
from bptt.run.training import (
    RECORD_BYTES,
    ConfigError,
    RunSummary,
    atomic_write_text,
    read_bounded_text,
)

__all__ = [
    "RESULT_FIELDS",
    "aggregate",
    "entry_texts",
    "leaderboard",
    "read_results",
    "result_row",
    "typed_row",
    "write_results",
]

_INTEGER_FIELDS = ("length", "seed", "solved_at_step", "steps_done", "nonfinite_steps", "horizon")
# the columns without which a row names no run (older tables may lack later columns)
_NAMING_FIELDS = ("group", "task", "length", "method", "seed", "outcome", "run_dir")
RESULT_FIELDS = (
    "group",
    "task",
    "length",
    "method",
    "seed",
    "solved",
    "solved_at_step",
    "outcome",
    "metric",
    "final_metric",
    "baseline",
    "accuracy",
    "steps_done",
    "nonfinite_steps",
    "verdict",
    "horizon",
    "wall_seconds",
    "run_dir",
)
"""Columns of ``results.csv``: ``solved_at_step`` is the first evaluated step at which
the task was solved (blank if never); ``outcome`` says what the run did in words
(``solved``, ``solved, then diverged``, ``solved, then lost it`` (its final test
metric no longer solves it), ``solved on validation, not on test`` (a model chosen on
a validation split), ``diverged``, ``not solved``, ``stopped by its time
limit``, ``fitted`` for an echo state network); ``final_metric`` is the test
metric named by ``metric`` at the end, ``baseline`` the trivial predictor's;
``horizon`` is the distance at which the final model's gradient fell below 1e-3 of
its value at the loss (blank: it never did within T); ``wall_seconds`` the run's
training time; ``run_dir`` the run directory relative to the bench's."""


def is_finished(run: PlannedRun, summary: RunSummary | None) -> bool:
    """Whether a run's summary is its last: a trained run writes one before and one
    after diagnosing its final model; a run stopped by its time limit is finished."""
    if summary is None:
        return False
    return run.kind == "esn" or summary.diagnose_s is not None


def result_row(run: PlannedRun, summary: RunSummary) -> dict[str, Any]:
    """The results row of a finished run, from its summary."""
    row: dict[str, Any] = dict.fromkeys(RESULT_FIELDS)
    row.update(group=run.group, task=run.task, length=run.length, method=run.method)
    row.update(seed=run.seed, run_dir=run.name, wall_seconds=summary.wall_s)
    row["published"] = run.published  # for the leaderboard, not a column
    if run.kind == "esn" and summary.metric is None:  # Mackey-Glass
        row.update(metric="nrmse", final_metric=summary.nrmse, baseline=1.0)
        row.update(outcome="fitted", steps_done=1)
        return row
    if run.kind == "esn":  # a long-range task: the readout's test score
        solved = bool(summary.solved)
        row.update(solved=solved, outcome="solved" if solved else "not solved", steps_done=1)
        row.update(metric=summary.metric, final_metric=summary.final_loss)
        row.update(baseline=summary.baseline_loss, accuracy=summary.accuracy)
        return row
    evidence = {} if summary.diagnosis is None else summary.diagnosis.evidence
    row.update(
        solved=bool(summary.solved),
        solved_at_step=summary.solved_step,
        outcome=_outcome(summary),
        metric=summary.metric,
        final_metric=summary.final_loss,
        baseline=summary.baseline_loss,
        accuracy=summary.accuracy,
        steps_done=summary.steps_done,
        nonfinite_steps=summary.nonfinite_steps,
        verdict=None if summary.verdict is None else str(summary.verdict),
        horizon=evidence.get("probe/horizon"),
    )
    return row


def _outcome(summary: RunSummary) -> str:
    """What a trained run did, in words (``outcome`` in :data:`RESULT_FIELDS`)."""
    solved_step, diverged = summary.solved_step, bool(summary.diverged)
    if solved_step is not None and diverged:
        return "solved, then diverged"
    if summary.solved:
        return "solved"
    if solved_step is not None and summary.validation_share:
        return "solved on validation, not on test"
    if solved_step is not None:
        return "solved, then lost it"
    if diverged:
        return "diverged"
    if summary.time_limited:
        return "stopped by its time limit"
    return "not solved"


def write_results(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """``results.csv`` at path (atomically: a crash leaves the old file or the new)."""
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=RESULT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv(row.get(k)) for k in RESULT_FIELDS})
    atomic_write_text(path, table.getvalue())


def read_results(path: Path) -> list[dict[str, str]]:
    """The rows of a bench's ``results.csv`` as strings (blank for none).

    Raises:
        ConfigError: the file cannot be read, is not a table with the columns that
            name a run (group, task, length, method, seed, outcome, run_dir), or
            names a run directory outside the bench's (an absolute path, or one
            climbing out with ``..``).
    """
    try:
        text = read_bounded_text(path, RECORD_BYTES)
    except OSError as err:
        raise ConfigError("results", f"cannot read {path}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError("results", f"{path} is not UTF-8 text: {err.reason}") from err
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
    except csv.Error as err:
        raise ConfigError("results", f"{path} is not a CSV table: {err}") from err
    missing = [f for f in _NAMING_FIELDS if f not in (reader.fieldnames or [])]
    if missing:
        message = f"{path} is not a bench's results table: it lacks the column {missing[0]!r}"
        raise ConfigError("results", message)
    for number, row in enumerate(rows, start=2):
        if None in row or None in row.values():
            raise ConfigError("results", f"{path}, line {number}: not as many cells as columns")
        where = Path(row["run_dir"])
        if not row["run_dir"] or where.is_absolute() or ".." in where.parts:
            message = (
                f"{path}, line {number}: run_dir {row['run_dir']!r} is not a directory "
                "inside the bench's"
            )
            raise ConfigError("results", message)
    return rows


def _csv(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def aggregate(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per group, task, length and method, in the rows' order: ``runs``,
    ``solved`` (None where the task has no rule: an echo state network), the medians
    over solved runs of ``steps_to_solve`` and ``seconds_to_solve``, the medians over
    all runs of ``final_over_baseline`` and ``accuracy`` (None where there are none),
    ``verdicts`` (each once, in order) and ``published``."""
    entries = []
    for (group, task, length, method), members in _grouped(rows):
        solved = [r for r in members if r.get("solved")]
        ratios = [
            r["final_metric"] / r["baseline"]
            for r in members
            if _number(r.get("final_metric")) and _number(r.get("baseline")) and r["baseline"]
        ]
        entries.append(
            {
                "group": group,
                "task": task,
                "length": length,
                "method": method,
                "runs": len(members),
                "solved": None if members[0].get("solved") is None else len(solved),
                "steps_to_solve": _median([r.get("solved_at_step") for r in solved]),
                "seconds_to_solve": _median([r.get("wall_seconds") for r in solved]),
                "final_over_baseline": _median(ratios),
                "accuracy": _median([r.get("accuracy") for r in members]),
                "verdicts": list(
                    dict.fromkeys(str(r.get("verdict") or r["outcome"]) for r in members)
                ),
                "published": members[0].get("published"),
            }
        )
    return entries


def typed_row(row: dict[str, str]) -> dict[str, Any]:
    """A row of ``results.csv`` with its values typed again (None for blank).

    Raises:
        ConfigError: a number column holds something else.
    """
    typed: dict[str, Any] = dict(row)
    numbers: dict[str, type] = dict.fromkeys(_INTEGER_FIELDS, int)
    numbers.update(dict.fromkeys(("final_metric", "baseline", "accuracy", "wall_seconds"), float))
    for name, kind in numbers.items():
        try:
            typed[name] = kind(row[name]) if row.get(name) else None
        except ValueError:
            message = f"{name} {row[name]!r} of run {row.get('run_dir')!r} is not a number"
            raise ConfigError("results", message) from None
    typed["solved"] = {"True": True, "False": False}.get(row.get("solved", ""))
    typed["verdict"] = row.get("verdict") or None
    return typed


def leaderboard(rows: Sequence[dict[str, Any]], title: str = "bptt bench: leaderboard") -> Table:
    """Per group, task and length, each method's success rate, median steps and
    seconds to solve, final metric over the baseline, accuracy and verdicts, with the
    published result beside it where one exists; ``title`` over it."""
    entries = aggregate(rows)
    published = any(entry["published"] for entry in entries)
    table = Table(title=title)
    columns = [
        ("group", "left"),
        ("task", "left"),
        ("T", "right"),
        ("method", "left"),
        ("solved", "right"),
        ("steps to solve", "right"),
        ("s to solve", "right"),
        ("final / baseline", "right"),
        ("accuracy", "right"),
        ("verdict", "left"),
    ]
    if published:
        columns.append(("published", "left"))
    for name, justify in columns:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for entry in entries:
        cells = [
            entry["group"],
            entry["task"],
            "" if entry["length"] is None else str(entry["length"]),
            entry["method"],
            *entry_texts(entry),
            ", ".join(entry["verdicts"]),
        ]
        if published:
            cells.append(entry["published"] or "")
        table.add_row(*cells)
    if any(entry["group"] == "reservoir" for entry in entries):
        table.caption = "esn: final / baseline is the NRMSE (the baseline predicts the mean)"
    return table


def entry_texts(entry: dict[str, Any]) -> list[str]:
    """An aggregated entry's solved, steps, seconds, final/baseline and accuracy as
    the leaderboards print them."""
    solved = entry["solved"]
    return [
        "-" if solved is None else f"{solved}/{entry['runs']}",
        "-" if entry["steps_to_solve"] is None else f"{entry['steps_to_solve']:,.0f}",
        "-" if entry["seconds_to_solve"] is None else f"{entry['seconds_to_solve']:,.1f}",
        "-" if entry["final_over_baseline"] is None else f"{entry['final_over_baseline']:.3g}",
        "-" if entry["accuracy"] is None else f"{entry['accuracy']:.1%}",
    ]


def _median(values: Sequence[Any]) -> float | None:
    numbers = [v for v in values if _number(v)]
    return statistics.median(numbers) if numbers else None


def _grouped(
    rows: Sequence[dict[str, Any]],
) -> list[tuple[tuple[Any, ...], list[dict[str, Any]]]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["group"], row["task"], row["length"], row["method"])
        groups.setdefault(key, []).append(row)
    return list(groups.items())


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
