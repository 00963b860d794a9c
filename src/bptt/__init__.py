"""bptt: train recurrent networks on long-range dependencies, and see why they fail.

The public face: :func:`unroll` runs a one-step cell over time with hidden-gradient
taps (:mod:`bptt.taps`), :mod:`bptt.cells` holds the cells, :class:`SequenceModel`
adds a readout, :mod:`bptt.tasks` generates the benchmark tasks. The application,
:mod:`bptt.run`, is named here too: :func:`train` runs one configured training into a
run directory (:func:`resume` continues a killed one).
"""

from bptt import cells, taps, tasks
from bptt.engine import unroll
from bptt.model import SequenceModel
from bptt.tbptt import TBPTT

_APPLICATION = {"run", "TrainConfig", "TrainResult", "resume", "train"}


def __getattr__(name: str):
    """The application's names, loaded on first use: ``import bptt`` (and the library
    under it) does not load :mod:`bptt.run` and its dependencies."""
    if name not in _APPLICATION:
        raise AttributeError(f"module 'bptt' has no attribute {name!r}")
    import importlib

    run = importlib.import_module("bptt.run")
    return run if name == "run" else getattr(run, name)


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
