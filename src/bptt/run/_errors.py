"""Turning a library's exception into the one line a person reads."""

from __future__ import annotations

__all__ = ["first_line", "load_failure"]


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


def load_failure(err: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused a file, in one line.

    Torch's message opens with paragraphs about the ``weights_only`` default; the
    reason itself follows "WeightsUnpickler error:".
    """
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        detail = first_line(RuntimeError(text.split(marker, 1)[1]))
        return f"not a file of tensors that loads with weights_only=True ({detail})"
    return first_line(err)
