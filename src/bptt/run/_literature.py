"""The literature's long-range results, and the recipe meant to reach each.

One row per task and length: the recipe (:data:`bptt.run.RECIPES`) with the settings
of the paper's released code, and the published result (the anchor) with its source.
``benchmarks/reproduce.py`` and ``bptt bench --profile full`` train these rows, and
the bench's leaderboard prints the anchor beside the measured row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["LITERATURE_ROWS", "LiteratureRow", "published_result"]


@dataclass(frozen=True)
class LiteratureRow:
    """One task at one length, the recipe that is to reach it, and its anchor.

    Attributes:
        task, length: the task and its length T.
        method: the recipe's name in :data:`bptt.run.RECIPES`.
        anchor: the published result and its source, or the goal where none exists.
        settings: config fields beside the recipe's (hidden size, batch, steps).
    """

    task: str
    length: int
    method: str
    anchor: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``task:length``, as ``--rows`` names it."""
        return f"{self.task}:{self.length}"


# expRNN's copy-task code (lezcano/expRNN, 1_copying.py): hidden 190, batch 128, 4,000 steps.
EXPRNN = {"hidden": 190, "batch_size": 128, "steps": 4000}
CHRONO = {"hidden": 128, "batch_size": 128, "steps": 4000}

LITERATURE_ROWS: tuple[LiteratureRow, ...] = (
    LiteratureRow("copy", 200, "exprnn", "solved (nnRNN release: expRNN, H=128)", EXPRNN),
    LiteratureRow("copy", 500, "exprnn", "solved (Arjovsky et al. 2016, uRNN)", EXPRNN),
    LiteratureRow(
        "copy", 1000, "exprnn", "0% error within 4,000 steps (expRNN code; geotorch)", EXPRNN
    ),
    LiteratureRow("copy", 2000, "exprnn", "- (beyond the papers' lengths)", EXPRNN),
    LiteratureRow("adding", 200, "lstm-chrono", "solved (Arjovsky et al. 2016, uRNN)", CHRONO),
    LiteratureRow("adding", 400, "lstm-chrono", "solved (Le et al. 2015, IRNN)", CHRONO),
    LiteratureRow("adding", 750, "lstm-chrono", "solved (Arjovsky et al. 2016, uRNN)", CHRONO),
    LiteratureRow("adding", 1000, "lstm-chrono", "goal: MSE < 1e-3 (ten times 'solved')", CHRONO),
    LiteratureRow("order3", 200, "lstm-chrono", "solved (Hochreiter & Schmidhuber 1997)", CHRONO),
    LiteratureRow("order3", 500, "lstm-chrono", "goal: 3 of 3 seeds", CHRONO),
)


def published_result(task: str, length: int) -> str | None:
    """The anchor of the literature row for this task and length, or None."""
    for row in LITERATURE_ROWS:
        if row.task == task and row.length == length:
            return row.anchor
    return None
