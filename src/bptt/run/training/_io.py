"""File writes that leave no half-written file: atomic replacement, whole-row appends,
and the OS lock a run directory's writer holds; reads of bounded size.

Nothing here writes through a symbolic link: a replaced file is renamed over the
name (the link itself is replaced, never its target), and a file opened to append
or lock is opened with ``O_NOFOLLOW``, so a link planted in a run directory makes
the write fail (``ELOOP``) instead of changing the file it points to. A read
measures the file first: only a regular file of at most the given size is read
(a link to ``/dev/zero`` or a multi-gigabyte file is refused, not read forever).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import stat
import tempfile
from pathlib import Path

import torch

from bptt._checks import machine_memory

# The most this package reads of each kind of file (a bound, not an expectation): a
# configuration; a record that grows with the run (metrics.csv, diagnostics.jsonl,
# results.csv, summary.json); tensors (model.pt, checkpoints), which must fit in memory.
CONFIG_BYTES = 1 << 20
RECORD_BYTES = 1 << 30


def tensor_bytes() -> int:
    """The bound on a file of tensors: the machine's physical memory (64 GiB where the
    system does not say)."""
    return machine_memory() or 1 << 36


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
    fd = _open_regular(path, flags)
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
        OSError: the file cannot be created or opened, or it is a symbolic link or not
            a regular file (nothing is written to it).
    """
    fd = _open_regular(path, os.O_RDWR | os.O_CREAT)
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


def _open_regular(path: str | Path, flags: int) -> int:
    """``os.open`` that refuses a symbolic link (not followed) and anything but a
    regular file, before a byte is written.

    Raises:
        OSError: ``ELOOP`` for a link, ``EINVAL`` for a directory, device or pipe.
    """
    with contextlib.suppress(FileNotFoundError):  # for the message; fstat below decides
        mode = os.lstat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            raise OSError(errno.EINVAL, "it is not a regular file", str(path))
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise OSError(
                errno.ELOOP, "it is a symbolic link; refusing to follow it", str(path)
            ) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "it is not a regular file", str(path))
    return fd


class FileTooLarge(OSError):
    """A file to read is larger than the bound its reader sets (or not a regular file)."""


def read_bounded(path: str | Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    The size is measured before the file is read (and the read stops at the bound, in
    case it grows meanwhile), so a link to ``/dev/zero`` or a huge file costs nothing.

    Raises:
        FileTooLarge: the file is larger than ``limit``, or it is not a regular file.
        OSError: it cannot be opened or read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileTooLarge(errno.EINVAL, "it is not a regular file", str(path))
        if info.st_size > limit:
            reason = f"it holds {info.st_size:,} bytes, more than the {limit:,} read here"
            raise FileTooLarge(errno.EFBIG, reason, str(path))
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                reason = f"it grew past the {limit:,} bytes read here"
                raise FileTooLarge(errno.EFBIG, reason, str(path))
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_bounded_text(path: str | Path, limit: int) -> str:
    """:func:`read_bounded` decoded as UTF-8.

    Raises:
        FileTooLarge, OSError: as :func:`read_bounded`.
        UnicodeDecodeError: the file is not UTF-8 text.
    """
    return read_bounded(path, limit).decode("utf-8")
