"""File writes that leave no half-written file: atomic replacement, whole-row appends,
and the OS lock a run directory's writer holds."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import tempfile
from pathlib import Path

import torch


def _default_mode() -> int:
    """The permissions a plain open() would give a new file (0o666 less the umask)."""
    umask = os.umask(0)  # reading the umask sets it: done once, at import
    os.umask(umask)
    return 0o666 & ~umask


_MODE = _default_mode()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write data to path through a temporary file in the same directory, fsync, rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _MODE)  # mkstemp makes 0600; readers expect the usual
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """``torch.save`` made atomic."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def append_text(path: str | Path, text: str, *, truncate: bool = False) -> None:
    """Append text to a file (created if missing; emptied first if ``truncate``), all
    or nothing: if the write fails part-way (a full disk), the file is cut back to its
    length before, so it never ends in half a line. The text reaches the OS before
    this returns (it survives the process being killed, not a power cut).

    Raises:
        OSError: the file could not be opened or written; it is as it was.
    """
    data = text.encode("utf-8")
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
    fd = os.open(path, flags, 0o666)
    try:
        before = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, before)
            raise
    finally:
        os.close(fd)


def lock_file(path: str | Path) -> int | None:
    """Take an exclusive OS lock (``flock``) on ``path``, created if missing.

    Returns the open descriptor that holds the lock (close it to release; the OS
    releases it when the process dies), or None when another process holds it. The
    holder's process id is written into the file for people to read.

    Raises:
        OSError: the file cannot be created or opened.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    with contextlib.suppress(OSError):  # informative only; a full disk must not stop it
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return fd
