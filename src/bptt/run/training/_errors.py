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
    r"""Why ``torch.load(..., weights_only=True)`` refused a file, in one line.

    Torch's message opens with a paragraph about the ``weights_only`` default (and a
    suggestion to turn it off, which bptt never takes), then gives the reason: after
    "WeightsUnpickler error:", or (a blocked global such as ``posix.system``) as a
    paragraph of its own, followed by a pointer to the documentation.

    >>> torch_says = "Weights only load failed. Re-run with weights_only=False ..."
    >>> torch_says += "\n\nTrying to load unsupported GLOBAL posix.system\n\nCheck the ..."
    >>> load_failure(RuntimeError(torch_says))[-48:]
    '(Trying to load unsupported GLOBAL posix.system)'
    """
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        detail = first_line(RuntimeError(text.split(marker, 1)[1]))
        return f"not a file of tensors that loads with weights_only=True ({detail})"
    if text.startswith("Weights only load failed"):
        paragraphs = [" ".join(p.split()) for p in text.split("\n\n")[1:]]
        reasons = [p for p in paragraphs if p and not _torch_advice(p)]
        detail = f" ({reasons[0]})" if reasons else ""
        return f"not a file of tensors that loads with weights_only=True{detail}"
    return first_line(err)


def _torch_advice(paragraph: str) -> bool:
    """A paragraph of torch's that advises, rather than says what failed."""
    return paragraph.startswith(("Check the documentation", "Please file an issue")) or (
        "weights_only" in paragraph and "GLOBAL" not in paragraph
    )
