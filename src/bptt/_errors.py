"""Turning a library's exception into the one line a person reads."""

from __future__ import annotations

__all__ = ["first_line"]


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message (torch's and MKL's run to
    many lines), or its type's name when it has no message.

    >>> first_line(RuntimeError("Weights only load failed.\\nPlease file an issue"))
    'Weights only load failed.'
    >>> first_line(EOFError())
    'EOFError'
    """
    for line in str(err).splitlines():
        if line.strip():
            return line.strip()
    return type(err).__name__
