"""Checkpoints a run can resume from: atomic, checksummed, the last K kept.

Each checkpoint is ``checkpoints/step-NNNNNNNNN.pt`` (``torch.save`` of a dict of
state dicts) with ``step-NNNNNNNNN.pt.sha256`` beside it. Both are written to a
temporary file, fsynced and renamed, the checksum last: a checkpoint without a
matching checksum is incomplete or corrupt and is skipped, with a warning, in favour
of the one before; when none is intact, :meth:`Checkpoints.latest` says so instead of
pretending there was none. Loading uses ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, cast

import torch

from bptt.run.training._errors import load_failure
from bptt.run.training._io import (
    atomic_write_bytes,
    atomic_write_text,
    read_bounded,
    read_bounded_text,
    tensor_bytes,
)

__all__ = ["CheckpointError", "Checkpoints"]

# where torch.load puts the tensors it reads (None: where they were saved)
MapLocation = str | torch.device | None

_NAME = re.compile(r"^step-(\d{9})\.pt$")
_ROLLBACK = "rollback_point"  # in a checkpoint that is not one: the point in effect


def _step_of(path: Path) -> int:
    """The step in a checkpoint's name (one of :meth:`Checkpoints.paths`, which match)."""
    match = _NAME.match(path.name)
    assert match is not None
    return int(match.group(1))


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, or none that is intact could be read."""


class Checkpoints:
    """The checkpoints of one run.

    Args:
        directory: where they live (created on first save); None keeps the latest one
            in memory only (for roll-backs in a run without a run directory).
        keep: how many to keep on disk, newest first (>= 1); the roll-back point in
            effect (:meth:`save`) is kept beside them.
    """

    def __init__(self, directory: str | Path | None, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = None if directory is None else Path(directory)
        self.keep = keep
        self.last: tuple[int, bytes] | None = None  # (step, payload) of the newest save

    def save(self, step: int, state: dict[str, Any], *, rollback_point: bool = True) -> Path | None:
        """Write a checkpoint for ``step``; returns its path (None in memory only).

        A ``rollback_point``'s payload is also kept in memory, so a roll-back needs no
        disk. Any other checkpoint carries the roll-back point in effect (none, or the
        last one's payload) inside it, so a run resumed from it rolls back where the
        uninterrupted run would.

        Raises:
            CheckpointError: the write failed (disk full, read-only, ...); the checkpoints
                already written are untouched.
        """
        if not rollback_point:
            point = None if self.last is None else {"step": self.last[0], "payload": self.last[1]}
            state = {**state, _ROLLBACK: point}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
        if rollback_point:
            self.last = (step, payload)
        if self.directory is None:
            return None
        path = self.directory / f"step-{step:09d}.pt"
        try:
            self._refuse_link()
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, payload)
            digest = hashlib.sha256(payload).hexdigest()
            atomic_write_text(path.with_name(path.name + ".sha256"), digest + "\n")
        except OSError as err:
            for partial in (path, path.with_name(path.name + ".sha256")):  # no orphan halves
                with contextlib.suppress(OSError):
                    partial.unlink(missing_ok=True)
            raise CheckpointError(
                f"could not write checkpoint {path}: {err.strerror or err}; the earlier "
                "checkpoints are intact"
            ) from err
        self._prune()
        return path

    def _refuse_link(self) -> None:
        """Never write or delete through a link planted where the directory should be."""
        if self.directory is not None and self.directory.is_symlink():
            raise OSError(errno.ELOOP, "it is a symbolic link", str(self.directory))

    def paths(self) -> list[Path]:
        """Checkpoint files on disk, newest first (none behind a link)."""
        if self.directory is None or not self.directory.is_dir() or self.directory.is_symlink():
            return []
        found = [p for p in self.directory.iterdir() if _NAME.match(p.name)]
        return sorted(found, key=lambda p: p.name, reverse=True)

    def latest(self, map_location: str | torch.device | None = None) -> dict[str, Any] | None:
        """The newest intact checkpoint's state, or None if there is no checkpoint.

        A checkpoint whose checksum is missing or wrong, or that does not load, is
        passed over for the one before, with a warning naming it.

        Raises:
            CheckpointError: there are checkpoints, and none of them is intact.
        """
        problems: list[str] = []
        for path in self.paths():
            try:
                payload = _read_verified(path)
                state = _load(path, payload, map_location)
            except CheckpointError as err:
                problems.append(str(err))
                continue
            self.last = (_step_of(path), payload)  # for roll-backs
            if _ROLLBACK in state:  # a checkpoint of the clock: its roll-back point
                point = state.pop(_ROLLBACK)
                self.last = None if point is None else (int(point["step"]), point["payload"])
            for problem in problems:
                warnings.warn(f"{problem}; using {path.name}", stacklevel=2)
            return state
        if problems:
            raise CheckpointError(
                f"no intact checkpoint in {self.directory}: {'; '.join(problems)}"
            )
        return None

    def newest_intact_step(self) -> int | None:
        """The step of the newest checkpoint whose checksum matches (not loaded), or None."""
        for path in self.paths():
            try:
                _read_verified(path)
            except CheckpointError:
                continue
            return _step_of(path)
        return None

    def drop_after(self, step: int) -> None:
        """Remove the checkpoints on disk of steps after ``step`` (a future a roll-back
        to ``step`` abandoned: a resumed run must not continue it)."""
        for path in self.paths():
            if _step_of(path) > step:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
                    path.with_name(path.name + ".sha256").unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove every checkpoint on disk and in memory."""
        try:
            for path in self.paths():
                path.unlink(missing_ok=True)
                path.with_name(path.name + ".sha256").unlink(missing_ok=True)
        except OSError as err:
            raise CheckpointError(f"cannot remove {err.filename}: {err.strerror}") from err
        self.last = None

    def latest_in_memory(self, map_location: MapLocation = None) -> dict[str, Any] | None:
        """The newest saved state, from memory (the same as on disk)."""
        if self.last is None:
            return None
        state = torch.load(io.BytesIO(self.last[1]), map_location=map_location, weights_only=True)
        return cast(dict[str, Any], state)

    def _prune(self) -> None:
        """Keep the newest ``keep`` checkpoints, and the roll-back point in effect: clock
        checkpoints may outnumber the scheduled ones, and a roll-back drops every
        checkpoint after its point, which must then still be on disk to resume from."""
        point = None if self.last is None else self.last[0]
        for old in self.paths()[self.keep :]:
            if _step_of(old) == point:
                continue
            with contextlib.suppress(OSError):  # an old checkpoint left behind harms nothing
                old.unlink(missing_ok=True)
                old.with_name(old.name + ".sha256").unlink(missing_ok=True)


def load_checkpoint(path: str | Path, map_location: MapLocation = None) -> dict[str, Any]:
    """Load one checkpoint after checking its checksum.

    Raises:
        CheckpointError: the checksum is missing or does not match (truncated or
            corrupt file), or the file does not load with ``weights_only=True``.
    """
    path = Path(path)
    return _load(path, _read_verified(path), map_location)


def _load(path: Path, payload: bytes, map_location: MapLocation) -> dict[str, Any]:
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
        return cast(dict[str, Any], state)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} does not load: {load_failure(err)}") from err


def _read_verified(path: Path) -> bytes:
    """The checkpoint's bytes, after checking them against the checksum beside them."""
    sidecar = path.with_name(path.name + ".sha256")
    try:
        payload = read_bounded(path, tensor_bytes())
        expected = read_bounded_text(sidecar, 1024).strip()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise CheckpointError(f"checkpoint {path} is incomplete: {reason}") from err
    if hashlib.sha256(payload).hexdigest() != expected:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated (checksum mismatch)")
    return payload
