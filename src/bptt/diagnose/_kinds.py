"""What a diagnosis can say, as data: the :class:`Verdict` of a model or a run, and a
:class:`Remedy` (what to change, and why).

A verdict is a string enum, so it compares equal to its name (``Verdict.EXPLODING ==
"exploding"``), hashes as it, and writes to JSON as the plain string: files written
before it existed read the same. A remedy names the change by a stable key and says
why in the library's terms; turning it into a command (``bptt train ...``) is the
application's part, which knows its flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = ["Remedy", "Verdict"]


class Verdict(str, Enum):
    """A verdict: ``EXPLODING``, ``VANISHING`` and ``HEALTHY`` judge a model's gradient
    (:func:`bptt.diagnose.diagnose`), all of them a training run
    (:func:`bptt.diagnose.judge_run`), listed worst first.

    >>> Verdict("vanishing") is Verdict.VANISHING, f"{Verdict.HEALTHY_NOT_LEARNED}"
    (True, 'healthy but not learned')
    """

    EXPLODING = "exploding"
    DEAD_UNITS = "dead units"
    SATURATED = "saturated"
    VANISHING = "vanishing"
    TRUNCATED = "truncated"  # truncated BPTT backpropagates fewer steps than the dependency
    OVERFITTING = "overfitting"  # a fixed training set learned, the held-out set not
    HEALTHY_NOT_LEARNED = "healthy but not learned"
    NOT_LEARNED = "not learned"  # and the model's gradient not measured (monitor off)
    HEALTHY = "healthy"

    # as the plain string everywhere: printed, formatted, and as a key of a dict of names
    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass(frozen=True)
class Remedy:
    """One thing to change, and why.

    Attributes:
        change: a stable key naming the change (``clip_norm``, ``clip_step``,
            ``truncate``, ``lower_lr``, ``gated_cell``, ``chrono_init``,
            ``orthogonal_init``, ``skip_connections``, ``reservoir``, ``inspect_head``).
        why: what to change and why, in a sentence.
        layer: in a network of several recurrent layers, the one it applies to (its
            name in the diagnosis); None for the whole model.

    >>> str(Remedy("lower_lr", "lower the learning rate", layer="lstm layer 1"))
    'lstm layer 1: lower the learning rate'
    """

    change: str
    why: str
    layer: str | None = None

    def __str__(self) -> str:
        return self.why if self.layer is None else f"{self.layer}: {self.why}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``change``, ``why`` and (where it applies to one) ``layer``."""
        found: dict[str, Any] = {"change": self.change, "why": self.why}
        if self.layer is not None:
            found["layer"] = self.layer
        return found
