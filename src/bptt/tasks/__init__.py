"""Tasks: generators of long-range problems, each with its loss, baseline and success rule.

Generators take the length first and a keyword ``seed`` (or a ``generator`` to
continue a stream) and return ``(x, y)`` with x of shape (B, T, F). The shipped and
generated series of the echo-state literature are here too: :func:`mackey_glass`
and :func:`japanese_vowels`. ``echo`` and
``text`` are streams (:class:`StreamTask`), trained with :class:`bptt.TBPTT`.
"""

from __future__ import annotations

from bptt.tasks._adding import AddingTask, adding_problem
from bptt.tasks._base import Task
from bptt.tasks._basins import BasinsTask, two_basins
from bptt.tasks._copy import CopyTask, copy_memory
from bptt.tasks._digits import DigitsTask, PermutedDigitsTask, load_digits
from bptt.tasks._pathological import (
    MemorizationTask,
    MultiplicationTask,
    PermutationTask,
    TemporalOrder3Task,
    TemporalOrderTask,
    XorTask,
    memorization,
    multiplication,
    random_permutation,
    temporal_order,
    xor_problem,
)
from bptt.tasks._series import japanese_vowels, mackey_glass
from bptt.tasks._streams import EchoTask, Stream, StreamTask, TextTask, delayed_echo, stdlib_text
from bptt.tasks._vowels import VowelsTask

__all__ = [
    "TASKS",
    "AddingTask",
    "BasinsTask",
    "CopyTask",
    "DigitsTask",
    "EchoTask",
    "MemorizationTask",
    "MultiplicationTask",
    "PermutationTask",
    "PermutedDigitsTask",
    "Stream",
    "StreamTask",
    "Task",
    "TemporalOrder3Task",
    "TemporalOrderTask",
    "TextTask",
    "VowelsTask",
    "XorTask",
    "adding_problem",
    "copy_memory",
    "delayed_echo",
    "japanese_vowels",
    "load_digits",
    "mackey_glass",
    "make_task",
    "memorization",
    "multiplication",
    "random_permutation",
    "stdlib_text",
    "temporal_order",
    "two_basins",
    "xor_problem",
]

TASKS: dict[str, type[Task]] = {
    "adding": AddingTask,
    "copy": CopyTask,
    "basins": BasinsTask,
    "order": TemporalOrderTask,
    "order3": TemporalOrder3Task,
    "multiplication": MultiplicationTask,
    "xor": XorTask,
    "permutation": PermutationTask,
    "memorization": MemorizationTask,
    "digits": DigitsTask,
    "pdigits": PermutedDigitsTask,
    "vowels": VowelsTask,
    "echo": EchoTask,
    "text": TextTask,
}


def make_task(name: str, length: int) -> Task:
    """The task called ``name`` (a key of :data:`TASKS`) at the given length.

    Raises:
        ValueError: unknown name or bad length.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name](length)
