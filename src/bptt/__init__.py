"""bptt: train recurrent networks on long-range dependencies, and see why they fail.

The public face: :func:`unroll` runs a one-step cell over time with hidden-gradient
taps (:mod:`bptt.taps`), :mod:`bptt.cells` holds the cells, :class:`SequenceModel`
adds a readout, :mod:`bptt.tasks` generates the benchmark tasks. The application,
:mod:`bptt.run`, is named here too: :func:`train` runs one configured training into a
run directory (:func:`resume` continues a killed one).
"""

from bptt import cells, run, taps, tasks
from bptt.engine import unroll
from bptt.model import SequenceModel
from bptt.run import TrainConfig, TrainResult, resume, train
from bptt.tbptt import TBPTT

__all__ = [
    "TBPTT",
    "SequenceModel",
    "TrainConfig",
    "TrainResult",
    "cells",
    "resume",
    "run",
    "taps",
    "tasks",
    "train",
    "unroll",
]
__version__ = "0.1.0"
