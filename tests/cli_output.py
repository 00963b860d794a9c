"""What the command line must print on a user's error: one ``error:`` line, no traceback."""

from __future__ import annotations

from typing import Any


def one_error_line(stderr: str) -> str:
    """The CLI's error in ``stderr``: exactly one line starting with 'error:', and no
    traceback; returns it."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def exit_2_in_one_line(result: Any) -> str:
    """A click ``CliRunner`` result that printed nothing but one error line and exited
    with 2 (bad input); returns the line."""
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert len(result.output.strip().splitlines()) == 1, result.output
    return line
