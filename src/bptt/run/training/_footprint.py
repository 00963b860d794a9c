"""The memory a run will need, estimated before anything is allocated, so that sizes
each within its bounds whose product is not (``--hidden 65536``, ``--length 1000000
--batch-size 1000000``, ``bptt esn --units 20000 --density 1``) are refused in one line
naming the fields, instead of ending in the allocator's error with a half-made run
directory.

For training the estimate counts only the largest arrays a run certainly makes (a
lower bound: a run refused could not have fit in the memory available when it
started, the system's ``MemAvailable``); for an echo state network it is the measured
peak's size, within about a fifth. A run that passes may still need more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from bptt._checks import machine_memory
from bptt.run.training._fields import ConfigError

if TYPE_CHECKING:  # the config imports this module
    from bptt.run.training._config import TrainConfig

__all__ = ["MemoryNeed", "available_memory", "esn_memory", "refuse_oversized", "train_memory"]

# gate blocks of a cell's weights (W_ih and W_hh are (g H, F) and (g H, H)), and the
# (B, T, H) tensors a step keeps for backward beside its states; the minimal cells have
# no W_hh but keep log coefficients, states and the scan's padded copies
_GATES = {"lstm": 4, "gru": 3, "mingru": 4, "minlstm": 5}
# tensors of the parameters' size an optimizer holds beside them and their gradients
_EVAL_CHUNK = 1000  # test sequences per forward pass (bptt.run.training._build)


@dataclass(frozen=True)
class MemoryNeed:
    """What a run will hold at once, by the fields each part grows with.

    Attributes:
        parts: ``(what, fields, bytes)`` for each large allocation.
        bound: how the total reads: "at least" (a lower bound) or "about".
    """

    parts: tuple[tuple[str, str, int], ...]
    bound: str = "at least"  # or "about", for an estimate that is not a lower bound

    @property
    def total(self) -> int:
        """The bytes of all parts together."""
        return sum(size for _, _, size in self.parts)

    def largest(self) -> tuple[str, str, int]:
        """The part that needs most."""
        return max(self.parts, key=lambda part: part[2])


def _gib(size: float) -> str:
    return f"{size / 2**30:,.1f} GiB"


def available_memory(device: str | torch.device = "cpu") -> int:
    """Bytes a new allocation can count on: for a CUDA device its free memory, else
    the system's available memory (``MemAvailable``), or all of it where that is not
    known."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return machine_memory() or 1 << 62  # nothing known: refuse nothing


def train_memory(
    config: TrainConfig, input_size: int, output_size: int, runs: int = 1
) -> MemoryNeed:
    """The largest allocations of training ``config`` (a validated
    :class:`~bptt.run.TrainConfig`) on a task of ``input_size`` features and
    ``output_size`` outputs; ``runs`` stacked runs hold ``runs`` times the model and
    batch."""
    size = torch.tensor([], dtype=config.torch_dtype).element_size()
    hidden, batch, gates = config.hidden, config.batch_size, _GATES.get(config.cell, 1)
    length = config.length
    assert length is not None  # validation derives it from the task
    steps = config.tbptt_k2 if config.tbptt_k2 else length  # what backward keeps
    directions = 2 if getattr(config, "bidirectional", False) else 1
    units = directions * getattr(config, "layers", 1)  # unrolls: each keeps its states
    below = directions * hidden  # what layers 2 .. L read
    weights = directions * gates * hidden * (input_size + hidden + 2)
    weights += (units - directions) * gates * hidden * (below + hidden + 2)
    weights += output_size * (directions * hidden + 1)
    tensors = 2 + config.optimizer.state_tensors  # weights, gradients, the optimizer's
    tested = min(config.test_size, _EVAL_CHUNK)
    parts = (
        ("weights, gradients and optimizer state", "hidden", runs * weights * tensors * size),
        (
            "the states a training batch keeps for backward",
            "batch_size, length and hidden",
            runs * units * batch * steps * hidden * (gates + 1) * size,
        ),
        (
            "the test set",
            "test_size and length",
            config.test_size * length * input_size * size,
        ),
        (
            "the test set's states",
            "length and hidden",
            units * tested * length * hidden * size,
        ),
    )
    return MemoryNeed(parts)


def esn_memory(config: Any) -> MemoryNeed:
    """About the peak memory of building and fitting the reservoir of ``config`` (a
    validated :class:`~bptt.run.ESNConfig`): W drawn dense in float64 (uniforms, mask,
    values, then scaled copies and compressed rows) and the readout's normal equations,
    about 42 N^2 bytes in all; the states of the fit and their copy. Measured peaks
    (resident memory above the imports, Mackey-Glass): N = 3000 at density 1, 617 MB
    against 738 estimated; at density 0.1, 763 against 738; N = 5000 at 0.1, 1,570
    against 1,650."""
    units = config.units
    state_size = 8 if config.dtype == "float64" else 4
    reservoir = ("W, its draws and the readout's equations", "units", 42 * units * units)
    if getattr(config, "length", None) is not None:  # a long-range task: one state a sequence
        sequences = config.train_size + config.test_size
        features = ("the sequences and their last states", "train_size, test_size and length")
        size = sequences * (units * state_size + config.length * 8 * 8)  # <= 8 input features
        return MemoryNeed((reservoir, (*features, size)), "about")
    steps = config.steps if config.task == "mackey-glass" else 10_000  # Vowels: ~10k states
    fit = ("the states of the fit", "units and steps", 3 * steps * units * state_size // 2)
    return MemoryNeed((reservoir, fit), "about")


def refuse_oversized(need: MemoryNeed, device: str | torch.device = "cpu") -> None:
    """Refuse a run whose estimated need exceeds the memory available.

    Raises:
        ConfigError: naming the fields of the largest part, the estimate and the memory
            available.
    """
    available = available_memory(device)
    if need.total <= available:
        return
    what, fields, size = need.largest()
    where = "this GPU has" if torch.device(device).type == "cuda" else "this machine has"
    message = (
        f"the run needs {need.bound} {_gib(need.total)} ({what}: {_gib(size)}) and {where} "
        f"{_gib(available)} available; lower {fields}"
    )
    raise ConfigError(fields.split(",")[0].split(" and ")[0], message)
