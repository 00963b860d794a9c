"""Spike detection: a robust z-score against a trailing window."""

from __future__ import annotations

import collections
import math
import statistics
import sys
from typing import Any

from bptt import _checks

__all__ = ["SpikeDetector"]

_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its sigma


class SpikeDetector:
    """Flags values far above the recent ones: loss spikes, gradient-norm spikes.

    Each value is compared with the trailing window of earlier values in log space
    (the quantities are positive and their noise multiplicative):
    z = (log x - median) / scale, scale = max(1.4826 * MAD, ``floor``). The value is
    a spike when z > ``z``. Values only join the window after the test, and
    non-finite ones never do.

    Args:
        window: earlier values kept.
        z: the robust z-score above which a value is a spike.
        min_history: values needed in the window before anything is flagged.
        floor: the smallest scale, in log units (0.05: a 5% wiggle is never a spike).

    Example:
        >>> detector = SpikeDetector(window=20, min_history=5)
        >>> [detector.update(v)[0] for v in [1.0, 1.1, 0.9, 1.0, 1.05, 1.0, 30.0, 1.0]]
        [False, False, False, False, False, False, True, False]
    """

    def __init__(
        self, window: int = 50, z: float = 6.0, min_history: int = 10, floor: float = 0.05
    ) -> None:
        window = _checks.integer("window", window, 2, sys.maxsize)  # a deque's bound
        z = _checks.real("z", z, 0.0, open_low=True)
        min_history = _checks.integer("min_history", min_history, 1, window)
        floor = _checks.real("floor", floor, 0.0, open_low=True)
        self.window, self.z, self.min_history, self.floor = window, z, min_history, floor
        self._values: collections.deque[float] = collections.deque(maxlen=window)

    def update(self, value: float) -> tuple[bool, float]:
        """Test a value, then remember it; returns (is_spike, z). NaN z while warming up."""
        if not math.isfinite(value) or value <= 0:
            return False, math.nan
        log_value = math.log(value)
        z = math.nan
        if len(self._values) >= self.min_history:
            median = statistics.median(self._values)
            mad = statistics.median(abs(v - median) for v in self._values)
            z = (log_value - median) / max(_MAD_TO_SIGMA * mad, self.floor)
        self._values.append(log_value)
        return (not math.isnan(z) and z > self.z), z

    def state_dict(self) -> dict[str, Any]:
        """The window of (log) values."""
        return {"values": list(self._values)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the window."""
        self._values = collections.deque(state["values"], maxlen=self.window)
