"""The run directory every training leaves: config, metrics, summary and model.

Layout::

    RUN_DIR/config.toml        the validated configuration, enough to rerun the run
    RUN_DIR/metrics.csv        one row per logged step, flushed as it is written
    RUN_DIR/diagnostics.jsonl  diagnoses during training (``diagnose_every``)
    RUN_DIR/summary.json       the outcome (written at the end)
    RUN_DIR/model.pt           the final model's state_dict (load with weights_only=True)
    RUN_DIR/checkpoints/       step-NNNNNNNNN.pt and its .sha256 (:mod:`._checkpoint`)
    RUN_DIR/tensorboard/       events.out.tfevents.* (``tensorboard = true``)
    RUN_DIR/report.html        the run's page (``bptt report``)
    RUN_DIR/.lock              held (an OS file lock) by the process writing the run

One process writes a run directory at a time: the lock is taken when the directory is
opened and released when it is closed or the process dies, and a second writer is
refused with :class:`RunDirectoryBusy`. A write that fails (a full disk, a read-only
directory) raises :class:`RunDirectoryError` naming the file; an appended row that
failed half-way is cut off again, so the file holds whole rows only.

Nothing is written or deleted through a symbolic link: a directory where one of these
names is a link is refused when it is opened. ``overwrite`` removes an earlier run's
files by these names only, and only when the new run writes its first file, so a new
run that cannot start leaves the earlier one whole.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import stat
import warnings
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from torch import nn

from bptt.run.training._fields import ConfigModel
from bptt.run.training._io import (
    RECORD_BYTES,
    append_text,
    atomic_torch_save,
    atomic_write_text,
    lock_file,
    read_bounded_text,
)
from bptt.run.training._summary import RunSummary, summary_problem

__all__ = [
    "LOCK_FILE",
    "METRIC_FIELDS",
    "REPORT_FILE",
    "RUN_FILES",
    "RunDirectory",
    "RunDirectoryBusy",
    "RunDirectoryError",
    "read_summary",
]

LOCK_FILE = ".lock"
REPORT_FILE = "report.html"
# the folders a run writes into, and the names of the files it writes there
_WRITTEN_IN = {
    "checkpoints": re.compile(r"^step-\d{9}\.pt(\.sha256)?$"),
    "tensorboard": re.compile(r"^events\.out\.tfevents\."),
}

METRIC_FIELDS = (
    "step",
    "loss",
    "grad_norm",
    "clip_threshold",
    "clipped",
    "nonfinite",
    "lr",
    "test_loss",
    "test_accuracy",
    "wall_s",
    "rollbacks",
)
RUN_FILES = (
    "config.toml",
    "metrics.csv",
    "diagnostics.jsonl",
    "summary.json",
    "model.pt",
    "free_run.csv",  # an echo state network's free run on Mackey-Glass
)


class RunDirectoryError(OSError):
    """A file of the run directory could not be written (disk full, read-only, ...).

    Attributes:
        filename: the file that failed, as ``OSError.filename``.
        strerror: the system's reason.
    """

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


class RunDirectoryBusy(RuntimeError):
    """Another process is writing the run directory (it holds the directory's lock)."""


def _write_error(path: Path, err: OSError) -> RunDirectoryError:
    return RunDirectoryError(err.errno or errno.EIO, err.strerror or str(err), str(path))


class RunDirectory:
    """Writes one run's files, holding the directory's lock while it is open.

    Args:
        path: the directory; created if missing.
        overwrite: allow a directory that already holds a run's files; they are
            removed (by name, see :func:`written_files`) when the new run writes its
            first file, so none is left beside the new ones, and a run that fails
            before that leaves them whole.
        resume: open a run's directory to continue it (see :meth:`rewind`).

    Raises:
        RunDirectoryBusy: another process has the directory open (a run writing it).
        FileExistsError: the directory already holds a run and overwrite is False.
        NotADirectoryError: path is an existing file.
        RunDirectoryError: a name the run writes is a symbolic link, or of another kind
            (a directory named ``metrics.csv``).
        OSError: the directory cannot be created or written.
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False, resume: bool = False) -> None:
        self.path = Path(path)
        self._fields: list[str] | None = None  # metrics.csv's columns, once known
        self._lock: int | None = None
        self._earlier: list[Path] = []  # an earlier run's files, removed when this one starts
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a directory", str(path))
        if not resume:
            self.path.mkdir(parents=True, exist_ok=True)
        _refuse_links(self.path)
        self._lock = lock_file(self.path / LOCK_FILE)
        if self._lock is None:
            raise RunDirectoryBusy(
                f"{self.path} is being written by another run (it holds {LOCK_FILE}); wait "
                "for it to end, or choose another directory"
            )
        try:
            if not resume:
                self._earlier = self._earlier_run(overwrite)
        except BaseException:
            self.close()
            raise

    def _earlier_run(self, overwrite: bool) -> list[Path]:
        """The files of an earlier run here, by the names a run writes; refused unless
        ``overwrite``. Nothing is removed yet: see :meth:`start`."""
        existing = written_files(self.path)
        if existing and not overwrite:
            raise FileExistsError(
                f"{self.path} already holds a run ({existing[0].name}); choose another "
                "directory or overwrite it"
            )
        return existing

    def start(self) -> None:
        """Remove the earlier run's files (``overwrite``), the first time the new run
        writes: a run that fails before it starts leaves the earlier one whole.

        Only the files found when the directory was opened, by the names a run writes,
        are removed (never through a link, never a name bptt does not write).

        Raises:
            RunDirectoryError: one of them could not be removed.
        """
        while self._earlier:
            stale = self._earlier[-1]
            try:
                stale.unlink(missing_ok=True)
            except OSError as err:
                reason = err.strerror or str(err)
                raise RunDirectoryError(err.errno or errno.EIO, reason, str(stale)) from err
            self._earlier.pop()

    def rewind(self, step: int, metrics_before: int | None = None) -> None:
        """Forget what was logged after ``step`` (a resumed run logs it again).

        Keeps the rows of ``metrics.csv`` and the lines of ``diagnostics.jsonl`` up to
        ``step`` (metrics rows only below ``metrics_before`` if given), appends after
        them from now on, and removes the outcome files of the interrupted attempt. A
        row cut short (by a crash or a full disk) is dropped.

        Raises:
            RunDirectoryError: a file could not be read within its bound, or rewritten.
        """
        last_row = step if metrics_before is None else min(step, metrics_before - 1)
        metrics = self.path / "metrics.csv"
        if metrics.exists():
            reader = csv.DictReader(io.StringIO(self._read(metrics), newline=""))
            fields = list(reader.fieldnames or [])
            rows = [row for row in reader if _whole(row) and int(row["step"]) <= last_row]
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
            self._write(metrics, text.getvalue())
            self._fields = fields or None
        diagnostics = self.path / "diagnostics.jsonl"
        if diagnostics.exists():
            kept = [
                line
                for line in self._read(diagnostics).splitlines()
                if (found := _json_step(line)) is not None and found <= step
            ]
            self._write(diagnostics, "".join(line + "\n" for line in kept))
        for outcome in ("summary.json", "model.pt"):
            (self.path / outcome).unlink(missing_ok=True)

    def write_config(self, config: ConfigModel) -> None:
        """Save ``config.toml``.

        Raises:
            RunDirectoryError: it could not be written.
        """
        self._write(self.path / "config.toml", config.to_toml())

    def log(self, row: dict[str, Any]) -> None:
        """Append one row to ``metrics.csv``, written through to the OS.

        The columns are fixed by the first row: :data:`METRIC_FIELDS`, then the row's
        other keys in their order (the monitor's). Later rows fill the same columns.

        Raises:
            RunDirectoryError: the row could not be written (the file is left whole).
        """
        fresh = self._fields is None
        fields = self._fields or [*METRIC_FIELDS, *(k for k in row if k not in METRIC_FIELDS)]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=fields)
        if fresh:
            writer.writeheader()
        writer.writerow({k: _csv_value(row.get(k, row.get(_renamed(k)))) for k in fields})
        self._append(self.path / "metrics.csv", text.getvalue(), truncate=fresh)
        self._fields = fields

    def append_json(self, name: str, record: dict[str, Any]) -> None:
        """Append one JSON line to ``name`` (e.g. ``diagnostics.jsonl``).

        Raises:
            RunDirectoryError: the line could not be written (the file is left whole).
        """
        self._append(self.path / name, json.dumps(record) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Save ``summary.json``, checked as a :class:`RunSummary` first: one that is
        not valid (a bug) is written all the same, nothing of the run lost, with a
        warning naming the key (the tests turn it into an error).

        Raises:
            RunDirectoryError: it could not be written.
        """
        problem = summary_problem(summary)
        if problem is not None:
            warnings.warn(f"summary.json is not a valid run summary: {problem}", stacklevel=2)
        self._write(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")

    def write_table(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Save ``rows`` (dicts with the same keys) as the CSV file ``name`` at once
        (atomically: a crash leaves the old file or the new).

        Raises:
            ValueError: ``name`` is not one of the run's CSV files (:data:`RUN_FILES`),
                or the rows do not share their keys.
            RunDirectoryError: it could not be written.
        """
        tables = [n for n in RUN_FILES if n.endswith(".csv") and n != "metrics.csv"]
        if name not in tables:
            raise ValueError(f"name must be one of {tables}, got {name!r}")
        if any(row.keys() != rows[0].keys() for row in rows):
            raise ValueError(f"the rows of {name} must share their keys")
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
        self._write(self.path / name, table.getvalue())

    def save_model(self, model: nn.Module) -> None:
        """Save the model's state_dict as ``model.pt``.

        Raises:
            RunDirectoryError: it could not be written.
        """
        self.save_state(model.state_dict())

    def save_state(self, state: dict[str, Any]) -> None:
        """Save a dict of tensors as ``model.pt`` (loads with ``weights_only=True``).

        Raises:
            RunDirectoryError: it could not be written.
        """
        self.start()
        try:
            atomic_torch_save(state, self.path / "model.pt")
        except OSError as err:
            raise _write_error(self.path / "model.pt", err) from err

    def close(self) -> None:
        """Release the directory's lock (idempotent)."""
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the lock
            self._lock = None

    def _read(self, path: Path) -> str:
        """A record of the run (metrics.csv, diagnostics.jsonl), read within its bound.

        Raises:
            RunDirectoryError: it is larger than :data:`~bptt.run.training._io.RECORD_BYTES`, not
                a regular file, not UTF-8, or unreadable.
        """
        try:
            return read_bounded_text(path, RECORD_BYTES)
        except OSError as err:
            reason = err.strerror or str(err)
            raise RunDirectoryError(err.errno or errno.EIO, reason, str(path)) from err
        except UnicodeDecodeError as err:
            raise RunDirectoryError(
                errno.EILSEQ, f"not UTF-8 text ({err.reason})", str(path)
            ) from err

    def _write(self, path: Path, text: str) -> None:
        self.start()
        try:
            atomic_write_text(path, text)
        except OSError as err:
            raise _write_error(path, err) from err

    def _append(self, path: Path, text: str, truncate: bool = False) -> None:
        self.start()
        try:
            append_text(path, text, truncate=truncate)
        except OSError as err:
            raise _write_error(path, err) from err


def written_files(path: Path) -> list[Path]:
    """The files in the run directory ``path`` that a run writes, by name: its
    :data:`RUN_FILES` and run page, its checkpoints and TensorBoard events. A name bptt
    does not write, a subdirectory or a link into another directory is not among them."""
    found = [path / name for name in (*RUN_FILES, REPORT_FILE) if (path / name).is_file()]
    for folder, pattern in _WRITTEN_IN.items():
        where = path / folder
        if where.is_dir() and not where.is_symlink():
            found += sorted(p for p in where.iterdir() if pattern.match(p.name) and p.is_file())
    return found


def _refuse_links(path: Path) -> None:
    """Refuse a run directory where a name bptt writes is a symbolic link (or of the
    wrong kind): a run never writes or deletes through a link.

    Raises:
        RunDirectoryError: naming the link.
    """
    kinds = {name: stat.S_ISREG for name in (*RUN_FILES, REPORT_FILE, LOCK_FILE)}
    kinds.update({name: stat.S_ISDIR for name in _WRITTEN_IN})
    for name, is_kind in kinds.items():
        try:
            mode = os.lstat(path / name).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(mode):
            reason = (
                "it is a symbolic link, and a run never writes or deletes through one: "
                "remove the link, or choose another directory"
            )
            raise RunDirectoryError(errno.ELOOP, reason, str(path / name))
        if not is_kind(mode):
            wanted = "regular file" if is_kind is stat.S_ISREG else "directory"
            reason = f"it is not a {wanted}: remove it, or choose another directory"
            raise RunDirectoryError(errno.EINVAL, reason, str(path / name))


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return repr(value)
    return value


def _renamed(column: str) -> str:
    """A column of a run begun before models held layers (``grad_norm/cell.weight_hh``)
    under the name it has since (``grad_norm/cells.0.weight_hh``), so that such a run
    resumed goes on filling it."""
    old = "grad_norm/cell."
    return "grad_norm/cells.0." + column[len(old) :] if column.startswith(old) else column


def _whole(row: dict[str, Any]) -> bool:
    """A metrics row with every column present (not cut short) and a step number."""
    return None not in row.values() and None not in row and row.get("step", "").isdigit()


def _json_step(line: str) -> int | None:
    """The step of one diagnostics line; None for a line cut short or without a step."""
    try:
        step = json.loads(line).get("step", 0)
    except (ValueError, AttributeError):
        return None
    return step if isinstance(step, int) else None


def read_summary(path: Path) -> RunSummary | None:
    """The run's ``summary.json`` as a :class:`RunSummary` (a key an older version did
    not write at its default, a later version's kept as an extra), or None if it has
    none (or a partial one, one that is not a valid :class:`RunSummary`, or a file that
    is not a regular file of bounded size)."""
    try:
        summary = json.loads(read_bounded_text(path / "summary.json", RECORD_BYTES))
    except (OSError, ValueError):
        return None
    try:
        return RunSummary.model_validate(summary)
    except ValidationError:
        return None
